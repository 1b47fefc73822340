"""``condgen train KIND``: start or resume a run of any kind in the table of kinds, in this process or, with
``--nproc N``, on N processes that this one launches and watches over."""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import signal
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from condgen.data.iclevr import LabeledImages, load_dataset
from condgen.data.jsonio import read_json, write_json
from condgen.data.labels import LabelCodec
from condgen.device import describe, enable_tf32, resolve_device
from condgen.errors import CondgenError
from condgen.evaluate.evaluator import load_evaluator
from condgen.kinds import KINDS, Kind
from condgen.train import distributed
from condgen.train.acceleration import resolve_bf16
from condgen.train.checkpoint import checkpoints_newest_first
from condgen.train.config import dump_config, load_config
from condgen.train.loop import fit

if TYPE_CHECKING:
    from torch.distributed.elastic.multiprocessing.errors import ProcessFailure


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
    one model together; rank 0 writes the run folder. A resumed distributed run reads ``run`` on every rank. A rank
    stops when its launcher is gone (:func:`condgen.train.distributed.stop_with_launcher`)."""
    distributed.stop_with_launcher()
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


EXIT_FAILED = 1  # a rank died or crashed
EXIT_USER_ERROR = 2  # as the CLI exits on a CondgenError, which the rank has reported itself
EXIT_INTERRUPTED = 130  # as a single process stopped by SIGINT or SIGTERM
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)  # those torch's launcher passes on


def train_on_processes(nproc: int, argv: list[str], run: Path, resume_command: str) -> int:
    """``condgen train ... --nproc N``: the command ``argv`` (without ``--nproc``) on N processes of this machine,
    as ``torchrun --standalone --nproc_per_node N -m condgen ARGV`` starts them, with this process as their launcher
    (torch's elastic agent). Returns the exit status once every rank has ended: 0, 130 after a stop signal, 2 when a
    rank stopped on a user mistake (its one-line error is then the last line on stderr), 1 when a rank died or crashed.

    Stop means stop: SIGTERM or SIGINT to this process (``timeout``, ``kill``, a job scheduler, Ctrl-C) goes on to
    every rank, which saves its current step and ends; a rank still running :data:`distributed.STOP_GRACE` seconds
    later is killed. The ranks end with this process even when it is killed (:func:`distributed.stop_with_launcher`),
    so no rank writes to ``run`` after it. The last line on stderr says why the run stopped and how ``resume_command``
    continues it."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import elastic_launch
    from torch.distributed.run import config_from_args, parse_args

    # --standalone as torchrun spells it out: a rendezvous of this machine alone, on a free port
    rendezvous = ["--rdzv_backend=c10d", "--rdzv_endpoint=localhost:0", f"--rdzv_id={uuid.uuid4()}"]
    launcher = [*rendezvous, f"--nproc_per_node={nproc}", "-m", "condgen", *argv]
    with _launcher_environment(), _kept_signal_handlers(), _quiet_torch_logs():
        config, _, args = config_from_args(parse_args(launcher))
        config.shutdown_timeout = distributed.STOP_GRACE
        try:
            # this Python, not torchrun's PYTHON_EXEC: each rank must be a child of this process, whose end it watches
            elastic_launch(config, sys.executable)(*args)
        except SignalException as stop:
            _report(f"stopped by {stop.sigval.name}; {_resume_hint(run, resume_command)}")
            return EXIT_INTERRUPTED
        except ChildFailedError as failure:
            return _report_failed_rank(*failure.get_first_failure(), run, resume_command)
    return 0


def _report_failed_rank(rank: int, failure: ProcessFailure, run: Path, resume_command: str) -> int:
    """The last line for the first rank that ended before the others; returns the exit status of the launch."""
    if failure.exitcode == EXIT_USER_ERROR:
        return EXIT_USER_ERROR  # the rank has said what is wrong, in one line
    if failure.exitcode == EXIT_INTERRUPTED:  # a stop signal sent to a rank rather than to the launcher
        cause, status = f"rank {rank} (pid {failure.pid}) was stopped by a signal", EXIT_INTERRUPTED
    elif failure.exitcode < 0:
        cause, status = f"rank {rank} (pid {failure.pid}) was killed by {failure.signal_name()}", EXIT_FAILED
    else:
        cause, status = f"rank {rank} (pid {failure.pid}) failed with exit status {failure.exitcode}", EXIT_FAILED
    _report(f"{cause}, which stopped the run; {_resume_hint(run, resume_command)}")
    return status


def _resume_hint(run: Path, resume_command: str) -> str:
    """How the stopped run continues: from its newest checkpoint, with ``resume_command``."""
    newest = checkpoints_newest_first(run)
    if not newest:
        return "no checkpoint was written yet, so there is nothing to resume"
    return f"it continues from {newest[0].name} with: {resume_command}"


def _report(message: str) -> None:
    print(f"condgen: {message}", file=sys.stderr, flush=True)


@contextmanager
def _launcher_environment() -> Iterator[None]:
    """Names this process to the ranks as their launcher (:data:`distributed.LAUNCHER_PID`) during the launch, and
    puts back afterwards the environment it shares with torch's launcher, which sets OMP_NUM_THREADS for the ranks."""
    saved = dict(os.environ)
    os.environ[distributed.LAUNCHER_PID] = str(os.getpid())
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextmanager
def _kept_signal_handlers() -> Iterator[None]:
    """Puts back this process's handlers of the stop signals after the launch: torch's launcher replaces them with
    its own (which pass a signal on to the ranks) and leaves those behind."""
    saved = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        if threading.current_thread() is threading.main_thread():  # the only thread that may set handlers
            for sig, handler in saved.items():
                if handler is not None:  # None: a handler installed outside Python, which stays
                    signal.signal(sig, handler)


@contextmanager
def _quiet_torch_logs() -> Iterator[None]:
    """Keeps torch's launcher logs (each signal it passes on, each rank that failed) off stderr during the launch:
    the ranks' own lines and the launcher's last line say what happened, and that line must stay the last one."""
    previous = logging.root.manager.disable
    logging.disable(logging.ERROR)
    try:
        yield
    finally:
        logging.disable(previous)


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
    speed = resolve_bf16(getattr(config, "optim", None), device)  # before the config is compared and saved
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
    if speed and main:
        print(f"condgen: {speed}", file=sys.stderr)
    note = describe(device) + (f"; {speed}" if speed else "")
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
