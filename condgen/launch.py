"""``condgen train KIND``: start or resume a run of any kind in the table of kinds."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from condgen.data.iclevr import load_dataset
from condgen.data.jsonio import read_json, write_json
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
    apply, e.g. a larger loop.steps). Returns :func:`condgen.train.loop.fit`'s summary.

    Every check (the folder, the config, the data, the evaluator, the model) passes before anything in ``run`` is
    written, and the run folder is locked for as long as training writes to it."""
    entry = KINDS[kind]
    if resume:
        if config_file is not None:
            raise CondgenError("--resume continues with the run's own config.yaml; drop --config")
        meta = _existing_run(run, kind)
        config = load_config(entry.config_class(), run / "config.yaml", overrides)
    else:
        _check_new_run_folder(run)
        meta = None
        config = load_config(entry.config_class(), config_file, overrides)
    device = resolve_device(config.device)
    data = load_dataset(data_root, progress=progress, strict=True)
    if getattr(config.model, "num_labels", len(data.codec)) != len(data.codec):
        raise CondgenError(f"{data_root}: {len(data.codec)} objects but model.num_labels is {config.model.num_labels}")
    if meta is not None and tuple(meta["objects"]) != data.codec.names:
        raise CondgenError(f"{data_root}/objects.json: differs from the objects the run {run} was trained on")
    evaluator = None
    if entry.scored and (evaluator_path or data.codec == LabelCodec.iclevr()):
        evaluator = load_evaluator(evaluator_path, device)
        if evaluator.codec != data.codec:
            raise CondgenError(f"{evaluator_path}: the evaluator's objects differ from {data_root}/objects.json")
    enable_tf32(device)
    task = entry.make_task(config, data, data_root, evaluator)
    with claimed(run):
        if not resume:
            _check_new_run_folder(run)  # again, now that no other process can write here
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
        config_yaml = dump_config(config)
        return fit(task, config.loop, run, config_yaml, resume=resume, progress=progress, note=describe(device))


def _existing_run(run: Path, kind: str) -> dict:
    """The run.json of a run to resume, which must be of ``kind``."""
    if not (run / "run.json").is_file():
        raise CondgenError(f"{run}: nothing to resume (no run.json)")
    meta = read_json(run / "run.json")
    if meta.get("kind") != kind:
        command = next((k.command for k in KINDS.values() if k.name == meta.get("kind")), meta.get("kind"))
        raise CondgenError(f"{run}: a {meta.get('kind')} run; resume it with `condgen train {command} --resume`")
    return meta


def _check_new_run_folder(run: Path) -> None:
    """A new run goes into a folder that does not exist yet or is empty (a lock file left by a crash aside)."""
    if (run / "run.json").exists():
        raise CondgenError(f"{run}: already holds a run; pass --resume to continue it or choose another --out")
    if run.exists() and (not run.is_dir() or any(p.name != LOCK for p in run.iterdir())):
        raise CondgenError(f"{run}: exists and is not an empty folder or a run; choose another --out")


LOCK = ".lock"


@contextmanager
def claimed(run: Path) -> Iterator[None]:
    """Holds an exclusive lock on ``run`` (an advisory lock on ``run/.lock``, released by the system when the
    process ends, a crash included): a second training of the same folder stops with a clear error instead of
    writing over the first."""
    run.mkdir(parents=True, exist_ok=True)
    fd = os.open(run / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CondgenError(f"{run}: another training is writing to this run right now") from None
        yield
    finally:
        os.close(fd)
