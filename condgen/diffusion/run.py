"""Starting, continuing and loading diffusion runs: the glue between the CLI, the trainer and the run folder."""

from __future__ import annotations

from pathlib import Path

import torch

from condgen.data.iclevr import load_dataset
from condgen.data.jsonio import read_json, write_json
from condgen.data.labels import LabelCodec
from condgen.diffusion.process import GaussianDiffusion
from condgen.diffusion.trainer import DDPMRunConfig, DiffusionTask, resolve_device
from condgen.diffusion.unet import UNet
from condgen.errors import CondgenError
from condgen.evaluate.evaluator import Evaluator, load_evaluator
from condgen.train.checkpoint import latest_checkpoint, load_module, read_state
from condgen.train.config import dump_config, load_config
from condgen.train.loop import fit


def train_ddpm(
    data_root: Path,
    run: Path,
    config_file: Path | None,
    overrides: list[str],
    resume: bool,
    evaluator_path: Path | None,
    progress: bool = True,
) -> dict:
    """``condgen train ddpm``: a new run from defaults + YAML + overrides, or ``resume`` from the run's own config."""
    if resume:
        if config_file is not None:
            raise CondgenError("--resume continues with the run's own config.yaml; drop --config")
        config = load_config(DDPMRunConfig, run / "config.yaml", overrides)
    else:
        config = load_config(DDPMRunConfig, config_file, overrides)
    data = load_dataset(data_root, size=config.model.image_size, progress=progress)
    if config.model.num_labels != len(data.codec):
        raise CondgenError(f"{data_root}: {len(data.codec)} objects but model.num_labels is {config.model.num_labels}")
    device = resolve_device(config.device)
    evaluator = None
    if evaluator_path or data.codec == LabelCodec.iclevr():
        evaluator = load_evaluator(evaluator_path, device)
    if evaluator is not None and evaluator.codec != data.codec:
        raise CondgenError(f"{evaluator_path}: the evaluator's objects differ from {data_root / 'objects.json'}")
    task = DiffusionTask(config, data, data_root, evaluator)
    run.mkdir(parents=True, exist_ok=True)
    if not resume and (run / "run.json").exists():
        raise CondgenError(f"{run}: already holds a run; pass --resume to continue it or choose another --out")
    write_json(
        run / "run.json",
        {
            "kind": task.kind,
            "objects": list(data.codec.names),
            "max_objects": int(data.labels.sum(dim=1).max()),
            "data": str(data_root),
            "evaluator": str(evaluator_path) if evaluator_path else ("shipped" if evaluator else None),
        },
    )
    summary = fit(task, config.loop, run, dump_config(config), resume=resume, progress=progress)
    return summary


def load_run(run: Path, checkpoint: str = "best") -> tuple[UNet, GaussianDiffusion, DDPMRunConfig, dict]:
    """The EMA model of ``run``'s ``best`` (or ``latest``) checkpoint, its process, config and run metadata."""
    if not (run / "config.yaml").exists():
        raise CondgenError(f"{run}: not a run folder (no config.yaml)")
    meta = read_json(run / "run.json") if (run / "run.json").exists() else None
    if meta is None:
        raise CondgenError(f"{run}: the run has not finished a training invocation yet (no run.json)")
    if meta.get("kind") != "ddpm":
        raise CondgenError(f"{run}: a {meta.get('kind')} run; this command needs a ddpm run")
    config = load_config(DDPMRunConfig, run / "config.yaml")
    if checkpoint == "latest" or not (run / "best").is_dir():
        folder = latest_checkpoint(run)
        if folder is None:
            raise CondgenError(f"{run}: no checkpoint")
    else:
        folder = run / "best"
    state = read_state(folder)
    if state.get("kind") != "ddpm":
        raise CondgenError(f"{folder}: a {state.get('kind')} checkpoint, not ddpm")
    model = UNet(config.model)
    load_module(model, folder / "ema.safetensors")
    return model.eval(), config.diffusion.build(), config, meta


def run_evaluator(meta: dict, override: Path | None) -> Evaluator | None:
    """The evaluator a run was trained with, unless ``override`` names another."""
    if override is not None:
        return load_evaluator(override)
    if meta.get("evaluator") == "shipped":
        return load_evaluator()
    if meta.get("evaluator"):
        path = Path(meta["evaluator"])
        return load_evaluator(path) if path.exists() else None
    return None


def request_labels(meta: dict, labels_file: Path | None, objects: str | None) -> torch.Tensor:
    """The label rows to generate, validated against the run's vocabulary and its largest training scene."""
    codec = LabelCodec(meta["objects"])
    if labels_file is not None:
        from condgen.data.iclevr import load_label_file

        rows, where = load_label_file(labels_file, codec), str(labels_file)
    else:
        rows, where = codec.parse(objects or "", "--objects")[None], "--objects"
    too_many = rows.sum(dim=1) > meta["max_objects"]
    if too_many.any():
        first = int(torch.nonzero(too_many)[0])
        raise CondgenError(
            f"{where}: entry {first} asks for {int(rows[first].sum())} objects; "
            f"the model was trained on at most {meta['max_objects']}"
        )
    return rows
