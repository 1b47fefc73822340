"""Run folders for every model: starting and resuming training, and loading what a run holds for sampling.

A run folder holds ``run.json`` (kind, vocabulary, largest scene, data and evaluator), ``config.yaml``,
``metrics.jsonl``, ``checkpoints/`` (the latest two, plus a ``latest`` pointer) and ``best/``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from condgen.data.iclevr import load_dataset, load_label_file
from condgen.data.jsonio import read_json, write_json
from condgen.data.labels import LabelCodec
from condgen.diffusion.trainer import ClassifierRunConfig, ClassifierTask, DDPMRunConfig, DiffusionTask
from condgen.errors import CondgenError
from condgen.evaluate.evaluator import Evaluator, load_evaluator
from condgen.gan.trainer import GANRunConfig, GANTask
from condgen.latent.ldm import LatentDiffusionTask, LDMRunConfig
from condgen.latent.trainer import AutoencoderRunConfig, AutoencoderTask
from condgen.train.checkpoint import latest_checkpoint, read_state
from condgen.train.config import dump_config, load_config
from condgen.train.loop import fit, resolve_device

CONFIGS = {
    "ddpm": DDPMRunConfig,
    "noisy_classifier": ClassifierRunConfig,
    "gan": GANRunConfig,
    "vae": AutoencoderRunConfig,
    "vqvae": AutoencoderRunConfig,
    "ldm": LDMRunConfig,
}
SCORED = {"ddpm", "gan", "vae", "vqvae", "ldm"}  # kinds an evaluator scores during training


def start_training(
    kind: str,
    data_root: Path,
    run: Path,
    config_file: Path | None,
    overrides: list[str],
    resume: bool,
    evaluator_path: Path | None = None,
    progress: bool = True,
) -> dict:
    """``condgen train KIND``: a new run from defaults + YAML + overrides, or ``resume`` from the run's own
    config.yaml (overrides still apply, e.g. a larger loop.steps)."""
    if resume:
        if config_file is not None:
            raise CondgenError("--resume continues with the run's own config.yaml; drop --config")
        config = load_config(CONFIGS[kind], run / "config.yaml", overrides)
    else:
        if (run / "run.json").exists():
            raise CondgenError(f"{run}: already holds a run; pass --resume to continue it or choose another --out")
        config = load_config(CONFIGS[kind], config_file, overrides)
    autoencoder = None
    if kind == "ldm":
        from condgen.latent.run import load_autoencoder  # imported here: condgen.latent.run needs this module

        if not config.autoencoder:
            raise CondgenError("--autoencoder: required (a `condgen train vae` or `condgen train vqvae` run)")
        config.autoencoder = str(Path(config.autoencoder).resolve())
        autoencoder = load_autoencoder(Path(config.autoencoder)).to(resolve_device(config.device))
    data = load_dataset(data_root, progress=progress)
    if getattr(config.model, "num_labels", len(data.codec)) != len(data.codec):
        raise CondgenError(f"{data_root}: {len(data.codec)} objects but model.num_labels is {config.model.num_labels}")
    evaluator = None
    if kind in SCORED and (evaluator_path or data.codec == LabelCodec.iclevr()):
        evaluator = load_evaluator(evaluator_path, resolve_device(config.device))
        if evaluator.codec != data.codec:
            raise CondgenError(f"{evaluator_path}: the evaluator's objects differ from {data_root}/objects.json")
    if kind == "ddpm":
        task = DiffusionTask(config, data, data_root, evaluator)
    elif kind == "gan":
        task = GANTask(config, data, data_root, evaluator)
    elif kind in ("vae", "vqvae"):
        task = AutoencoderTask(kind, config, data, evaluator)
    elif kind == "ldm":
        task = LatentDiffusionTask(config, data, data_root, evaluator, autoencoder)
    else:
        task = ClassifierTask(config, data)
    run.mkdir(parents=True, exist_ok=True)
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
    return fit(task, config.loop, run, dump_config(config), resume=resume, progress=progress)


def read_run(run: Path) -> dict:
    if not (run / "run.json").exists():
        raise CondgenError(f"{run}: not a training run folder (no run.json)")
    return read_json(run / "run.json")


def checkpoint_folder(run: Path, kind: str, which: str) -> tuple[Path, dict]:
    """The ``best`` (falling back to ``latest``) or ``latest`` checkpoint of a run of ``kind``, and its run.json."""
    meta = read_run(run)
    if meta.get("kind") != kind:
        raise CondgenError(f"{run}: a {meta.get('kind')} run; this needs a {kind} run")
    folder = run / "best" if which == "best" and (run / "best").is_dir() else latest_checkpoint(run)
    if folder is None:
        raise CondgenError(f"{run}: no checkpoint yet")
    state = read_state(folder)
    if state.get("kind") != kind:
        raise CondgenError(f"{folder}: a {state.get('kind')} checkpoint, not {kind}")
    return folder, meta


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
