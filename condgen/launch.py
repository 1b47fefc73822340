"""``condgen train KIND``: start or resume a run of any kind in the table of kinds."""

from __future__ import annotations

import fcntl
import hashlib
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch

from condgen.data.iclevr import LabeledImages, load_dataset
from condgen.data.jsonio import read_json, write_json
from condgen.data.labels import LabelCodec
from condgen.device import describe, enable_tf32, resolve_device
from condgen.errors import CondgenError
from condgen.evaluate.evaluator import load_evaluator
from condgen.kinds import KINDS, Kind
from condgen.train import distributed
from condgen.train.acceleration import bf16_warning
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
    written, and the run folder is locked for as long as training writes to it.

    Started by torchrun, every process runs this as one rank of a distributed run
    (:mod:`condgen.train.distributed`): the ranks first check that they agree on the config and the data, then train
    one model together; rank 0 writes the run folder. A resumed distributed run reads ``run`` on every rank."""
    entry = KINDS[kind]
    if resume:
        if config_file is not None:
            raise CondgenError("--resume continues with the run's own config.yaml; drop --config")
        meta = _existing_run(run, kind)
        config = load_config(entry.config_class(), run / "config.yaml", overrides)
    else:
        if not distributed.requested():  # distributed ranks check it together, once they have met
            _check_new_run_folder(run)
        meta = None
        config = load_config(entry.config_class(), config_file, overrides)
    device = resolve_device(config.device)
    with distributed.session(device):
        return _train(entry, config, device, data_root, run, meta, resume, evaluator_path, progress)


def _train(
    entry: Kind,
    config: Any,
    device: torch.device,
    data_root: Path,
    run: Path,
    meta: dict | None,
    resume: bool,
    evaluator_path: Path | None,
    progress: bool,
) -> dict:
    """:func:`start_training` once the process has joined its process group (if any)."""
    data = load_dataset(data_root, progress=progress and distributed.is_main_process(), strict=True)
    if getattr(getattr(config, "model", None), "num_labels", len(data.codec)) != len(data.codec):
        raise CondgenError(f"{data_root}: {len(data.codec)} objects but model.num_labels is {config.model.num_labels}")
    if meta is not None and tuple(meta["objects"]) != data.codec.names:
        raise CondgenError(f"{data_root}/objects.json: differs from the objects the run {run} was trained on")
    evaluator = None
    if entry.scored and (evaluator_path or data.codec == LabelCodec.iclevr()):
        evaluator = load_evaluator(evaluator_path, device)
        if evaluator.codec != data.codec:
            raise CondgenError(f"{evaluator_path}: the evaluator's objects differ from {data_root}/objects.json")
    enable_tf32(device)
    main = distributed.is_main_process()
    problem = None
    if main and not resume:
        try:
            _check_new_run_folder(run)  # again, in case another training started meanwhile
        except CondgenError as exc:
            problem = str(exc)
    distributed.check_agreement(_fingerprint(entry.name, dump_config(config), data, resume), problem)
    task = entry.make_task(config, data, data_root, evaluator)
    distributed.spread_random_streams(task.random_streams)
    warning = bf16_warning(device, getattr(getattr(config, "optim", None), "bf16", False))
    if warning and main:
        print(f"condgen: {warning}", file=sys.stderr)
    note = describe(device)
    if distributed.world_size() > 1:
        note += f"; {distributed.describe()}{_global_batch(config)}"
        if main:
            print(f"condgen: {note}", file=sys.stderr)
    with claimed(run) if main else nullcontext():
        if main and not resume:
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
        summary = fit(task, config.loop, run, config_yaml, resume=resume, progress=progress, note=note)
        if main and entry.export:
            summary["wrote"] = entry.export_run(run, task)
        return summary


def _global_batch(config: Any) -> str:
    """ ", global batch G = B per process x N" for the log, when the kind has a batch size."""
    per_rank = getattr(getattr(config, "optim", None), "batch_size", None)
    if per_rank is None:
        return ""
    count = distributed.world_size()
    return f", global batch {per_rank * count} = {per_rank} per process x {count}"


def _fingerprint(kind: str, config_yaml: str, data: LabeledImages, resume: bool) -> dict[str, str]:
    """What the ranks of a distributed run must agree on, as short hashes: the kind and whether it resumes, the
    config, and the data (its size, file names, labels and every 97th image)."""
    digest = hashlib.sha256()
    digest.update(f"{len(data)}\n{chr(10).join(data.files)}\n".encode())
    digest.update(data.labels.numpy().tobytes())
    digest.update(data.images[::97].contiguous().numpy().tobytes())
    return {
        "command": f"{kind}{' --resume' if resume else ''}",
        "config": hashlib.sha256(config_yaml.encode()).hexdigest()[:16],
        "dataset": f"{len(data)} images {digest.hexdigest()[:16]}",
    }


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
