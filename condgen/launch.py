"""``condgen train KIND``: start or resume a run of any kind in the table of kinds."""

from __future__ import annotations

from pathlib import Path

from condgen.data.iclevr import load_dataset
from condgen.data.jsonio import write_json
from condgen.data.labels import LabelCodec
from condgen.device import describe, enable_tf32, resolve_device
from condgen.errors import CondgenError
from condgen.evaluate.evaluator import load_evaluator
from condgen.kinds import KINDS
from condgen.train.config import dump_config, load_config
from condgen.train.loop import fit


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
    """A new run from defaults + YAML + overrides, or ``resume`` from the run's own config.yaml (overrides still
    apply, e.g. a larger loop.steps). Returns :func:`condgen.train.loop.fit`'s summary."""
    entry = KINDS[kind]
    if resume:
        if config_file is not None:
            raise CondgenError("--resume continues with the run's own config.yaml; drop --config")
        config = load_config(entry.config_class(), run / "config.yaml", overrides)
    else:
        if (run / "run.json").exists():
            raise CondgenError(f"{run}: already holds a run; pass --resume to continue it or choose another --out")
        config = load_config(entry.config_class(), config_file, overrides)
    device = resolve_device(config.device)
    data = load_dataset(data_root, progress=progress)
    if getattr(config.model, "num_labels", len(data.codec)) != len(data.codec):
        raise CondgenError(f"{data_root}: {len(data.codec)} objects but model.num_labels is {config.model.num_labels}")
    evaluator = None
    if entry.scored and (evaluator_path or data.codec == LabelCodec.iclevr()):
        evaluator = load_evaluator(evaluator_path, device)
        if evaluator.codec != data.codec:
            raise CondgenError(f"{evaluator_path}: the evaluator's objects differ from {data_root}/objects.json")
    enable_tf32(device)
    task = entry.make_task(config, data, data_root, evaluator)
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
    return fit(task, config.loop, run, dump_config(config), resume=resume, progress=progress, note=describe(device))
