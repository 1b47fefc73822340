"""Training on several processes or machines with torch.distributed, as ``torchrun`` starts them.

One process per rank joins the process group that torchrun describes in its environment variables (``env://``):
``gloo`` on CPUs, ``nccl`` on GPUs (one per process, the one of its ``LOCAL_RANK``). The trained modules are wrapped
in :class:`~torch.nn.parallel.DistributedDataParallel`, which averages the gradients of the ranks' batches, so one
step sees the global batch (per-rank batch x world size). Each rank draws its batches from its own shard of the
training set with its own random streams; rank 0 alone writes the run folder (logs, metrics, evaluations, EMA,
checkpoints) and decides when everyone stops.

Without torchrun's variables every helper here is the identity or a no-op: a single process trains as it always did.
"""

from __future__ import annotations

import datetime
import inspect
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from condgen.errors import CondgenError, SharedError

T = TypeVar("T")

RANK_STRIDE = 1_000_003  # rank r's random streams start from seed + r * RANK_STRIDE
# how long a rank waits for the others in one collective call: rank 0 evaluates alone while the rest wait, and an
# evaluation (sampling every label file) can outlast torch's default of 10 to 30 minutes
WAIT = datetime.timedelta(hours=2)
LAUNCHER_PID = "CONDGEN_LAUNCHER_PID"  # where `condgen train --nproc` names itself to the ranks it starts
STOP_GRACE = 30  # seconds a stopping rank has to save its step before it is killed (as long as torchrun gives it)
PARENT_POLL = 0.5  # seconds between two looks at whether the launcher is still there
_watching: list[threading.Thread] = []  # the thread of stop_with_launcher, once started


def requested() -> bool:
    """Whether torchrun (or another launcher setting the same variables) started this process as one rank."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def stop_with_launcher() -> None:
    """Ends this rank when its launcher is gone, so that no rank trains on alone after ``condgen train --nproc`` or
    torchrun was killed (by SIGKILL, say, which a launcher cannot pass on). A daemon thread watches the launcher: the
    process :data:`LAUNCHER_PID` names, else this process's parent when it is called. Once this process has another
    parent, the thread sends it SIGTERM, on which the training loop saves the current step and stops (before the loop,
    SIGTERM ends the process at once), then SIGKILL if the rank still runs :data:`STOP_GRACE` seconds later (waiting
    for a rank that is already gone, say). Nothing outside a launcher; one thread per process, however often called.

    A watching thread rather than Linux's ``PR_SET_PDEATHSIG``: it works on any POSIX system, it follows the graceful
    stop with SIGKILL when that hangs, and it watches the launcher's process, where that death signal comes when the
    one thread of the launcher that started the rank ends."""
    if not requested() or _watching:
        return
    named = os.environ.get(LAUNCHER_PID, "")
    # the launcher's own pid closes the gap between this process's start and this call: had the launcher died in it,
    # the parent seen now would already be the process that adopted this one
    launcher = int(named) if named.isdigit() else os.getppid()
    watcher = threading.Thread(target=_stop_when_orphaned, args=(launcher,), name="condgen-launcher-watch", daemon=True)
    _watching.append(watcher)
    watcher.start()


def _stop_when_orphaned(launcher: int) -> None:
    """:func:`stop_with_launcher`'s thread: waits until ``launcher`` is no longer this process's parent, then stops
    this process, gracefully first."""
    while os.getppid() == launcher:
        time.sleep(PARENT_POLL)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(STOP_GRACE)
    os.kill(os.getpid(), signal.SIGKILL)


def active() -> bool:
    """Whether this process belongs to an initialised process group."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main_process() -> bool:
    """Rank 0, the one that writes the run folder; also true in a single process."""
    return rank() == 0


@contextmanager
def session(device: torch.device) -> Iterator[None]:
    """Joins the process group torchrun describes (``env://``) for the duration of the block and leaves it after;
    outside torchrun, or when the group is already initialised by the caller, does nothing."""
    if not requested() or active():
        yield
        return
    backend = "gloo"
    if device.type == "cuda":
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if device.index is not None and device.index != local_rank:
            raise CondgenError(
                f"device={device}: under torchrun each process trains on the GPU of its LOCAL_RANK; use device=cuda"
            )
        torch.cuda.set_device(local_rank)  # so that torch.device("cuda") is this rank's GPU
        backend = "nccl"
    dist.init_process_group(backend, init_method="env://", timeout=WAIT)
    try:
        yield
    finally:
        dist.destroy_process_group()


def describe() -> str:
    """A few words for the run's log: the number of processes and the backend; "" in a single process."""
    return f"{world_size()} processes ({dist.get_backend()})" if world_size() > 1 else ""


def wrap(module: torch.nn.Module, broadcast_buffers: bool = True, sync_batch_norm: bool = False) -> torch.nn.Module:
    """``module`` in DistributedDataParallel for its training steps (``module`` itself in a single process). The
    wrapper shares the module's parameters, so optimisers, EMA and checkpoints keep using the plain module.

    ``sync_batch_norm`` turns its batch norm layers into SyncBatchNorm (in place) on GPUs, so their statistics are
    those of the global batch; torch implements SyncBatchNorm for GPUs only, so on CPUs each rank normalises over its
    own batch (as one process with the per-rank batch would). ``broadcast_buffers`` copies rank 0's buffers (running
    statistics, codebooks) to every rank before each forward pass: a collective call, so leave it off for a module
    that ranks may call a different number of times per step."""
    if world_size() == 1:
        return module
    device = next(module.parameters()).device
    if sync_batch_norm and device.type == "cuda":
        converted = torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
        assert converted is module, "a module whose top level is a batch norm layer cannot be converted in place"
    device_ids = None
    if device.type == "cuda":
        device_ids = [device.index if device.index is not None else torch.cuda.current_device()]
    # newer torch names the per-forward buffer broadcast forward_sync_buffers (both still sync buffers at the start)
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters:
        sync = {"forward_sync_buffers": broadcast_buffers}
    else:
        sync = {"broadcast_buffers": broadcast_buffers}
    return DistributedDataParallel(module, device_ids=device_ids, **sync)


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The plain module inside a DistributedDataParallel wrapper (or ``module`` itself)."""
    return module.module if isinstance(module, DistributedDataParallel) else module


def shard(pool: torch.Tensor) -> torch.Tensor:
    """This rank's share of the training indices ``pool``: every world_size-th one from position ``rank``, so the
    shards never overlap and together hold the whole pool."""
    count = world_size()
    if count == 1:
        return pool
    if len(pool) < count:
        raise SharedError(f"{len(pool)} training images cannot be shared among {count} processes")
    return pool[rank() :: count]


def spread_random_streams(generators: dict[str, torch.Generator]) -> None:
    """Gives every rank random streams of its own: rank r reseeds the task's generators and torch's global one with
    their seed + r * RANK_STRIDE (rank 0 keeps the single-process streams). Deterministic for a given world size."""
    if rank() == 0:
        return
    for generator in generators.values():
        generator.manual_seed(generator.initial_seed() + rank() * RANK_STRIDE)
    torch.manual_seed(torch.initial_seed() + rank() * RANK_STRIDE)


def redraw_random_streams(generators: dict[str, torch.Generator]) -> None:
    """After resuming a checkpoint written by another number of processes (whose rank-0 streams every rank has just
    restored): new streams for every rank, drawn from the restored ones and the rank, so the data order is redrawn
    but stays deterministic."""
    for generator in generators.values():
        base = int(torch.randint(0, 2**40, (1,), generator=generator))
        generator.manual_seed(base + rank() * RANK_STRIDE)
    torch.manual_seed(int(torch.randint(0, 2**40, (1,))) + rank() * RANK_STRIDE)


def _collective_device() -> torch.device:
    """Where tensors for collectives live: nccl only moves GPU tensors."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def mean_over_ranks(values: dict[str, float]) -> dict[str, float]:
    """The mean of each value over the ranks (the losses of the global batch); ``values`` in a single process."""
    count = world_size()
    if count == 1:
        return values
    tensor = torch.tensor(list(values.values()), dtype=torch.float64, device=_collective_device())
    dist.all_reduce(tensor)
    return dict(zip(values, (tensor / count).tolist()))


def from_main(value: T) -> T:
    """Rank 0's ``value`` on every rank (a picklable object): how rank 0's decisions reach the others."""
    if world_size() == 1:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def stop_decision(out_of_time: bool, signal_name: str | None) -> tuple[bool, str | None]:
    """Rank 0's answer to "stop now?" on every rank: its wall-clock budget and the SIGINT/SIGTERM it received
    (torchrun passes a signal on to every rank, but they may get it at different steps)."""
    if world_size() == 1:
        return out_of_time, signal_name
    code = signal.Signals[signal_name].value if signal_name else 0
    decision = torch.tensor([int(out_of_time), code], device=_collective_device())
    dist.broadcast(decision, src=0)
    late, code = decision.tolist()
    return bool(late), signal.Signals(code).name if code else None


def gather_to_main(value: T) -> list[T] | None:
    """Every rank's ``value`` (picklable), in rank order, on rank 0; None on the others."""
    if world_size() == 1:
        return [value]
    gathered: list[T] | None = [None] * world_size() if is_main_process() else None  # type: ignore[list-item]
    dist.gather_object(value, gathered, dst=0)
    return gathered


def on_main(action: Callable[[], T]) -> T | None:
    """Runs ``action`` on rank 0 only while the other ranks wait for it (None there). A :class:`CondgenError` it
    raises is raised on every rank, so none is left waiting for the others; rank 0 alone reports it."""
    if world_size() == 1:
        return action()
    result, error = None, None
    if is_main_process():
        try:
            result = action()
        except CondgenError as exc:
            error = exc
    message = from_main(str(error) if error is not None else None)
    if error is not None:
        raise error
    if message is not None:
        raise SharedError(message)
    return result


def check_agreement(fingerprint: dict[str, str], error: str | None = None) -> None:
    """Stops every rank with one clear error when they are not about to train the same thing: each rank brings a
    small ``fingerprint`` (a hash of its config, of its data, ...) and any ``error`` it met getting ready (rank 0
    checks the run folder, say). In a single process only ``error`` counts."""
    if world_size() == 1:
        if error is not None:
            raise CondgenError(error)
        return
    everyone: list[tuple[dict[str, str], str | None]] = [None] * world_size()  # type: ignore[list-item]
    dist.all_gather_object(everyone, (fingerprint, error))
    for other, (_, problem) in enumerate(everyone):
        if problem is not None:
            raise SharedError(problem if other == 0 else f"rank {other}: {problem}")
    reference = everyone[0][0]
    for other, (theirs, _) in enumerate(everyone):
        differing = [key for key in reference.keys() | theirs.keys() if reference.get(key) != theirs.get(key)]
        if differing:
            raise SharedError(
                f"rank {other} of {len(everyone)} has another {' and '.join(sorted(differing))} than rank 0; start "
                "every process with the same command, config and data"
            )
