"""The training loop every model shares: steps, logging, periodic checkpoints and evaluation, best-by-accuracy,
a wall-clock budget, and exact resume.

A model plugs in as a :class:`Task`: it owns its modules, optimisers and random generators, and knows how to take
one training step and how to score itself. The loop owns everything else.

Under torchrun (:mod:`condgen.train.distributed`) every rank runs this loop: the losses are averaged over the ranks,
rank 0 alone writes the run folder and evaluates, and rank 0 decides when everyone stops.
"""

from __future__ import annotations

import copy
import datetime
import functools
import json
import math
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from condgen.errors import CondgenError, InterruptedTrainingError, SharedError
from condgen.files import staged_folder, write_atomic
from condgen.progress import progress_bar
from condgen.train import distributed
from condgen.train.checkpoint import (
    checkpoints_newest_first,
    latest_checkpoint,
    load_checkpoint,
    load_rank_rng,
    rng_states,
    save_checkpoint,
)

BEST_BY = ("accuracy", "exact_set")


@dataclass
class LoopConfig:
    steps: int = 2000  # optimisation steps in total
    max_minutes: float = 0.0  # wall-clock budget for this invocation; 0 = none
    log_every: int = 50
    checkpoint_every: int = 500
    eval_every: int = 1000  # 0 = only at the end
    keep_checkpoints: int = 2  # older step-N folders are removed; best/ is kept apart
    best_by: str = "accuracy"  # the evaluation score best/ is chosen by: accuracy (top-k) | exact_set

    def __post_init__(self):
        if self.best_by not in BEST_BY:
            raise CondgenError(f"loop.best_by: {self.best_by!r} is not one of {', '.join(BEST_BY)}")


class Task(Protocol):
    kind: str
    modules: dict[str, torch.nn.Module]  # plain modules: a task trains DistributedDataParallel wrappers of them
    optimizers: dict[str, torch.optim.Optimizer]
    generators: dict[str, torch.Generator]

    def train_step(self, step: int) -> dict[str, float]: ...

    def evaluate(self, step: int, run: Path) -> dict[str, float]:
        """Scores the current model; must return ``accuracy`` and ``exact_set`` (``loop.best_by`` picks which one
        the best checkpoint is chosen by)."""
        ...


class EMA:
    """Exponential moving average of a module's parameters and buffers (Polyak averaging); the averaged copy is
    what gets sampled. The decay ramps up as min(decay, (1 + n) / (10 + n)) so early averages are not stuck at
    the random initialisation. In a distributed run only rank 0 keeps it up to date (the weights are the same on
    every rank)."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.updates = 0

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        if not distributed.is_main_process():
            return
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        model = distributed.unwrap(model)
        for average, current in zip(self.model.state_dict().values(), model.state_dict().values()):
            if average.is_floating_point():
                average.lerp_(current, 1 - decay)
            else:
                average.copy_(current)


def optimise(optimizer: torch.optim.Optimizer, model: torch.nn.Module, loss: torch.Tensor, o, step: int) -> None:
    """One update: the learning rate ``o.lr`` after a linear warm-up over ``o.warmup_steps``, the gradient norm
    clipped to ``o.grad_clip`` (0 = no clipping), then the optimiser step."""
    for group in optimizer.param_groups:
        group["lr"] = o.lr * min(1.0, (step + 1) / max(1, o.warmup_steps))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if o.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip)
    optimizer.step()


def fit(
    task: Task, loop: LoopConfig, run: Path, config_yaml: str, resume: bool, progress: bool = True, note: str = ""
) -> dict:
    """Trains ``task`` to ``loop.steps``; returns a summary. ``run`` receives config.yaml, metrics.jsonl,
    checkpoints/, best/ and log.txt, one line per start or resume followed by ``note`` (the device, say).

    Nothing broken is ever saved: a non-finite loss, or weights that are no longer finite when a checkpoint is due,
    stop training with :class:`CondgenError` before anything is written from that state. SIGINT and SIGTERM finish
    the current step, save it and raise :class:`InterruptedTrainingError` (a second signal stops at once). A resume
    starts from the newest intact checkpoint and drops the metrics records of the steps after it."""
    main = distributed.is_main_process()
    if main:
        run.mkdir(parents=True, exist_ok=True)
    step, best = 0, None
    if resume:
        checkpoint, state = _resume_state(run, task)
        step, best = state["step"], state.get("best_accuracy")
        if state.get("best_by", "accuracy") != loop.best_by:
            best = None  # a score of another kind; the next evaluation sets the best anew
        if hasattr(task, "ema"):
            task.ema.updates = state.get("ema_updates", step)
        redrawn = _restore_rank_streams(checkpoint, state, task)
        if main:
            _keep_metrics_until(run, step)
            if redrawn:
                note = f"{note}; {redrawn}" if note else redrawn
    elif main:
        if latest_checkpoint(run) is not None or (run / "config.yaml").exists():
            raise CondgenError(f"{run}: already holds a run; pass --resume to continue it or choose another --out")
        write_atomic(run / "config.yaml", config_yaml.encode())
    if main:
        _log(run, f"{'resumed' if resume else 'started'} at step {step}" + (f"; {note}" if note else ""))

    def checkpoint_now() -> Path:
        _check_finite_weights(task, step, run)  # on every rank: their weights are the same, so they stop alike
        extra = {
            "kind": task.kind,
            "best_accuracy": best,
            "best_by": loop.best_by,
            "ema_updates": getattr(getattr(task, "ema", None), "updates", 0),
        }
        if distributed.world_size() > 1:
            extra["world_size"] = distributed.world_size()
        every_rng = distributed.gather_to_main(rng_states(task.generators))

        def save() -> Path:
            try:
                path = save_checkpoint(
                    run, step, task.modules, task.optimizers, task.generators, extra, every_rng[1:] or None
                )
            except OSError as exc:  # a full disk, say: the previous checkpoint and latest are untouched
                raise CondgenError(
                    f"{run}: cannot write the checkpoint of step {step} ({exc.strerror or exc}); {_last_good(run)}"
                ) from None
            _prune(run, loop.keep_checkpoints)
            return path

        return distributed.on_main(save) or run / "checkpoints" / f"step-{step:07d}"

    start = time.perf_counter()
    sums: dict[str, float] = {}
    count = 0
    stopped_by_budget = False
    bar = progress_bar(total=loop.steps, initial=step, desc=task.kind, unit="step", enabled=progress and main)
    with bar, _stop_signals() as stop_requested:
        while step < loop.steps:
            losses = distributed.mean_over_ranks(task.train_step(step))
            step += 1
            _check_finite_losses(losses, step, run)
            count += 1
            for key, value in losses.items():
                sums[key] = sums.get(key, 0.0) + value
            bar.update(1)
            out_of_time = loop.max_minutes > 0 and time.perf_counter() - start > 60 * loop.max_minutes
            out_of_time, stop_signal = distributed.stop_decision(
                out_of_time, stop_requested[0] if stop_requested else None
            )
            stopping = out_of_time or stop_signal is not None
            if step % loop.log_every == 0 or step == loop.steps or stopping:  # the last step is always logged
                means = {k: v / count for k, v in sums.items()}
                bar.set_postfix({k: f"{v:.4f}" for k, v in means.items()})
                if main:
                    _append_metrics(run, {"step": step, **means, "seconds": round(time.perf_counter() - start, 2)})
                sums, count = {}, 0
            if stop_signal is not None:
                path = checkpoint_now()
                if main:
                    _log(run, f"{stop_signal} after step {step}; saved {path.name}")
                raise InterruptedTrainingError(step, str(path))
            evaluate = step == loop.steps or out_of_time or (loop.eval_every and step % loop.eval_every == 0)
            new_best = False
            if evaluate:
                scores = distributed.on_main(functools.partial(task.evaluate, step, run))
                if main:
                    _append_metrics(run, {"step": step, **scores})
                    new_best = best is None or scores[loop.best_by] > best
                    if new_best:
                        best = scores[loop.best_by]
                new_best = distributed.from_main(new_best)
            if new_best or step % loop.checkpoint_every == 0 or step == loop.steps or out_of_time:
                path = checkpoint_now()
                if new_best and main:
                    with staged_folder(run / "best") as staging:
                        shutil.copytree(path, staging, dirs_exist_ok=True)
            if out_of_time:
                stopped_by_budget = True
                break
    return {
        "step": step,
        "best_accuracy": best,
        "seconds": time.perf_counter() - start,
        "budget_hit": stopped_by_budget,
    }


def _resume_state(run: Path, task: Task) -> tuple[Path, dict]:
    """Loads the newest checkpoint that reads whole into ``task``; an unreadable newer one is passed over, and
    said so on stderr and in log.txt."""
    failures = []
    for checkpoint in checkpoints_newest_first(run):
        try:
            state = load_checkpoint(checkpoint, task.modules, task.optimizers, task.generators)
        except CondgenError as exc:
            failures.append(str(exc))
            continue
        if state.get("kind") != task.kind:
            raise CondgenError(f"{checkpoint}: a {state.get('kind')} checkpoint, not {task.kind}")
        if failures and distributed.is_main_process():
            message = (
                f"resuming from {checkpoint.name}, the newest intact checkpoint; passed over: {'; '.join(failures)}"
            )
            print(f"condgen: {message}", file=sys.stderr)
            _log(run, message)
        return checkpoint, state
    if failures:
        raise CondgenError(f"{run}: no intact checkpoint to resume from ({'; '.join(failures)})")
    raise CondgenError(f"{run}: nothing to resume (no checkpoints)")


def _restore_rank_streams(checkpoint: Path, state: dict, task: Task) -> str:
    """Every rank has restored rank 0's random streams; with as many processes as wrote the checkpoint, ranks 1, 2,
    ... take back their own (an exact continuation), with another number every rank draws new ones. Returns a few
    words for the log when the number changed, else ""."""
    written_by, count = state.get("world_size", 1), distributed.world_size()
    if written_by == count:
        if distributed.rank() > 0:
            load_rank_rng(checkpoint, distributed.rank(), task.generators)
        return ""
    if count > 1:
        distributed.redraw_random_streams(task.generators)  # one process goes on with rank 0's streams
    processes = f"{written_by} process{'es' if written_by > 1 else ''}"
    return f"the checkpoint was written by {processes}, so the data order is redrawn"


def _check_finite_losses(losses: dict[str, float], step: int, run: Path) -> None:
    bad = {key: value for key, value in losses.items() if not math.isfinite(value)}
    if bad:
        name, value = next(iter(bad.items()))
        raise SharedError(  # the losses are averaged over the ranks, so every rank stops here alike
            f"step {step}: {name} = {value}; training stopped and nothing was saved from this state "
            f"(lower the learning rate or look at the data; {_last_good(run)})"
        )


def _check_finite_weights(task: Task, step: int, run: Path) -> None:
    for name, module in task.modules.items():
        if not all(bool(torch.isfinite(p).all()) for p in module.parameters()):
            raise SharedError(
                f"step {step}: the {name} weights are no longer finite (a non-finite gradient); training stopped "
                f"and nothing was saved from this state ({_last_good(run)})"
            )


def _last_good(run: Path) -> str:
    newest = checkpoints_newest_first(run)
    return f"the last good checkpoint is {newest[0]}" if newest else "no checkpoint was written yet"


@contextmanager
def _stop_signals() -> Iterator[list[str]]:
    """Yields a list that SIGINT or SIGTERM fill with the signal's name, for the loop to stop after the current
    step; a second signal raises KeyboardInterrupt at once. Outside the main thread (where Python allows no signal
    handlers) the list stays empty."""
    requested: list[str] = []
    if threading.current_thread() is not threading.main_thread():
        yield requested
        return

    def handler(signum, frame):
        if requested:
            raise KeyboardInterrupt
        requested.append(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield requested
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _keep_metrics_until(run: Path, step: int) -> None:
    """Drops the metrics records of steps after ``step`` (written after the checkpoint being resumed from), so
    that the resumed run writes each step's records once."""
    path = run / "metrics.jsonl"
    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = [line for line in lines if line.strip() and json.loads(line).get("step", 0) <= step]
    if len(kept) != len(lines):
        write_atomic(path, "".join(f"{line}\n" for line in kept).encode())


def _append_metrics(run: Path, record: dict) -> None:
    """One JSON line; a non-finite number is written as null, so every line stays valid JSON."""
    plain = {key: None if isinstance(v, float) and not math.isfinite(v) else v for key, v in record.items()}
    with open(run / "metrics.jsonl", "a", encoding="utf-8") as handle:
        handle.write(json.dumps(plain) + "\n")


def _log(run: Path, line: str) -> None:
    stamp = datetime.datetime.now().isoformat(timespec="seconds")
    with open(run / "log.txt", "a", encoding="utf-8") as handle:
        handle.write(f"{stamp} {line}\n")


def _prune(run: Path, keep: int) -> None:
    folders = sorted((run / "checkpoints").glob("step-*"))
    for old in folders[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
