"""The training loop every model shares: steps, logging, periodic checkpoints and evaluation, the best checkpoint
by accuracy or exact-set rate, a wall-clock budget, and exact resume.

A model plugs in as a :class:`Task`: it owns its modules, optimisers and random streams, and knows how to take one
training step and how to score itself. The loop owns everything else, and :class:`LoopState` is where it stands.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn, Protocol

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
        if self.steps < 1:  # a run that would train nothing and say it stopped
            raise CondgenError(f"loop.steps: {self.steps}; a run takes at least 1 step")
        if self.max_minutes < 0:  # a spent budget must not read as "no limit" (0)
            raise CondgenError(f"loop.max_minutes: {self.max_minutes} is negative (0 = no limit)")


def set_epochs(loop: LoopConfig, epochs: int, train_images: int, batch_size: int) -> None:
    """Sets ``loop``'s steps to ``epochs`` epochs and evaluates and checkpoints once an epoch: one epoch is the
    training split once at the global batch (``batch_size`` per process)."""
    per_epoch = math.ceil(train_images / (batch_size * distributed.world_size()))
    loop.steps = epochs * per_epoch
    loop.eval_every = loop.checkpoint_every = per_epoch


class Task(Protocol):
    kind: str
    modules: dict[str, torch.nn.Module]  # plain modules: a task trains DistributedDataParallel wrappers of them
    optimizers: dict[str, torch.optim.Optimizer]
    random_streams: dict[str, torch.Generator]  # what it draws data order and noise from; checkpoints keep their states

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


@dataclass
class LoopState:
    """Where a training stands between two steps. ``best_score`` is the best evaluation score so far (None before
    the first evaluation) and ``best_by`` names which score it is, ``accuracy`` or ``exact_set``; ``started`` is when
    this invocation began to train (the wall-clock budget and the logged seconds count from it); the losses are
    summed over the steps since the last metrics line."""

    best_by: str
    step: int = 0
    best_score: float | None = None
    started: float = field(default_factory=time.perf_counter)
    loss_sums: dict[str, float] = field(default_factory=dict)
    loss_count: int = 0
    budget_hit: bool = False

    def restore(self, saved: dict) -> None:
        """Continues from a checkpoint's state.json. Checkpoints written before ``best_score`` existed keep it as
        ``best_accuracy``, those written before ``best_by`` existed were chosen by accuracy."""
        self.step = saved["step"]
        best = saved.get("best_score", saved.get("best_accuracy"))
        # a score of another kind cannot be compared: the next evaluation sets the best anew
        self.best_score = best if saved.get("best_by", "accuracy") == self.best_by else None

    def checkpoint_fields(self) -> dict:
        return {"best_score": self.best_score, "best_by": self.best_by}

    def seconds(self) -> float:
        return time.perf_counter() - self.started

    def add_losses(self, losses: dict[str, float]) -> None:
        self.loss_count += 1
        for key, value in losses.items():
            self.loss_sums[key] = self.loss_sums.get(key, 0.0) + value

    def take_mean_losses(self) -> dict[str, float]:
        """The mean of each loss since the last call; the sums start again."""
        means = {key: value / self.loss_count for key, value in self.loss_sums.items()}
        self.loss_sums, self.loss_count = {}, 0
        return means

    def record_score(self, score: float) -> bool:
        """Keeps ``score`` when it beats the best so far (the first score always does); True when it did."""
        if self.best_score is None or score > self.best_score:
            self.best_score = score
            return True
        return False

    def summary(self) -> dict:
        return {
            "step": self.step,
            "best_score": self.best_score,
            "best_by": self.best_by,
            "seconds": self.seconds(),
            "budget_hit": self.budget_hit,
        }


def fit(
    task: Task, loop: LoopConfig, run: Path, config_yaml: str, resume: bool, progress: bool = True, note: str = ""
) -> dict:
    """Trains ``task`` to ``loop.steps``; returns a summary: ``step``, ``best_score`` (of the kind ``best_by``
    names; None without an evaluation), ``best_by``, ``seconds`` and ``budget_hit``. ``run`` receives config.yaml,
    metrics.jsonl, checkpoints/, best/ and log.txt, one line per start or resume followed by ``note`` (the device,
    say).

    Nothing broken is ever saved: a non-finite loss, or weights that are no longer finite when a checkpoint is due,
    stop training with :class:`CondgenError` before anything is written from that state. SIGINT and SIGTERM finish
    the current step, save it and raise :class:`InterruptedTrainingError` (a second signal stops at once). A resume
    starts from the newest intact checkpoint and drops the metrics records of the steps after it."""
    training = _Training(task, loop, run, LoopState(best_by=loop.best_by))
    training.resume_or_start(config_yaml, resume, note)
    return training.train(progress)


@dataclass
class _Training:
    """One call of :func:`fit`: the task, the loop's settings, the run folder and where the training stands. Every
    rank runs each step; rank 0 (``main``) alone writes the run folder and evaluates."""

    task: Task
    loop: LoopConfig
    run: Path
    state: LoopState
    main: bool = field(default_factory=distributed.is_main_process)

    def resume_or_start(self, config_yaml: str, resume: bool, note: str) -> None:
        if self.main:
            self.run.mkdir(parents=True, exist_ok=True)
        if resume:
            note = self._resume(note)
        elif self.main:
            self._start(config_yaml)
        if self.main:
            started = f"{'resumed' if resume else 'started'} at step {self.state.step}"
            _log(self.run, started + (f"; {note}" if note else ""))

    def _start(self, config_yaml: str) -> None:
        if latest_checkpoint(self.run) is not None or (self.run / "config.yaml").exists():
            raise CondgenError(f"{self.run}: already holds a run; pass --resume to continue it or choose another --out")
        write_atomic(self.run / "config.yaml", config_yaml.encode())

    def _resume(self, note: str) -> str:
        """Restores the newest intact checkpoint on every rank; returns ``note`` with a word on redrawn streams."""
        checkpoint, saved = _resume_state(self.run, self.task)
        self.state.restore(saved)
        if hasattr(self.task, "ema"):
            self.task.ema.updates = saved.get("ema_updates", self.state.step)
        redrawn = _restore_rank_streams(checkpoint, saved, self.task)
        if self.main:
            _keep_metrics_until(self.run, self.state.step)
        if redrawn:
            note = f"{note}; {redrawn}" if note else redrawn
        return note

    def train(self, progress: bool) -> dict:
        """Steps until ``loop.steps``, the wall-clock budget or a stop signal; returns the summary."""
        self.state.started = time.perf_counter()  # the budget counts training, not the resume before it
        shown = progress and self.main
        bar = progress_bar(
            total=self.loop.steps,
            initial=self.state.step,
            desc=self.task.kind,
            unit="step",
            enabled=shown,
            seconds_limit=60 * self.loop.max_minutes,  # the time left counts down to the budget, not to loop.steps
        )
        with bar, _stop_signals() as stop_requested:
            while self.state.step < self.loop.steps:
                out_of_time, stop_signal = self._step(bar, stop_requested)
                if stop_signal is not None:
                    self._stop_for(stop_signal)
                new_best = self._evaluate_if_due(out_of_time)
                self._checkpoint_if_due(new_best, out_of_time)
                if out_of_time:
                    self.state.budget_hit = True
                    break
        return self.state.summary()

    def _step(self, bar, stop_requested: list[str]) -> tuple[bool, str | None]:
        """One training step on every rank and its metrics line when one is due; returns rank 0's word on stopping:
        whether the budget is spent, and the stop signal's name or None."""
        losses = distributed.mean_over_ranks(self.task.train_step(self.state.step))
        self.state.step += 1
        _check_finite_losses(losses, self.state.step, self.run)
        self.state.add_losses(losses)
        bar.update(1)
        out_of_time = self.loop.max_minutes > 0 and self.state.seconds() > 60 * self.loop.max_minutes
        out_of_time, stop_signal = distributed.stop_decision(out_of_time, stop_requested[0] if stop_requested else None)
        stopping = out_of_time or stop_signal is not None
        if self.state.step % self.loop.log_every == 0 or self.state.step == self.loop.steps or stopping:
            self._log_losses(bar)  # the last step is always logged
        return out_of_time, stop_signal

    def _log_losses(self, bar) -> None:
        means = self.state.take_mean_losses()
        bar.set_postfix({key: f"{value:.4f}" for key, value in means.items()})
        if self.main:
            _append_metrics(self.run, {"step": self.state.step, **means, "seconds": round(self.state.seconds(), 2)})

    def _stop_for(self, stop_signal: str) -> NoReturn:
        path = self._checkpoint()
        if self.main:
            _log(self.run, f"{stop_signal} after step {self.state.step}; saved {path.name}")
        raise InterruptedTrainingError(self.state.step, str(path))

    def _evaluate_if_due(self, out_of_time: bool) -> bool:
        """Evaluates at the last step, when the budget is spent and every ``loop.eval_every`` steps; rank 0 scores,
        records and judges the scores. Returns, on every rank, whether they set a new best."""
        step, loop = self.state.step, self.loop
        if not (step == loop.steps or out_of_time or (loop.eval_every and step % loop.eval_every == 0)):
            return False
        scores = distributed.on_main(functools.partial(self.task.evaluate, step, self.run))
        new_best = False
        if self.main:
            _append_metrics(self.run, {"step": step, **scores})
            new_best = self.state.record_score(scores[loop.best_by])
        return distributed.from_main(new_best)

    def _checkpoint_if_due(self, new_best: bool, out_of_time: bool) -> None:
        """Checkpoints a new best (copied to best/ as well), every ``loop.checkpoint_every`` steps, the last step
        and the step the budget ran out at; once when a step is several of these."""
        step, loop = self.state.step, self.loop
        if not (new_best or step % loop.checkpoint_every == 0 or step == loop.steps or out_of_time):
            return
        path = self._checkpoint()
        if new_best and self.main:
            with staged_folder(self.run / "best") as staging:
                shutil.copytree(path, staging, dirs_exist_ok=True)

    def _checkpoint(self) -> Path:
        """Saves the current step with every rank's random streams (rank 0 writes) and prunes the older ones;
        returns the checkpoint's folder on every rank."""
        _check_finite_weights(self.task, self.state.step, self.run)  # on every rank: their weights are the same
        extra = {
            "kind": self.task.kind,
            **self.state.checkpoint_fields(),
            "ema_updates": getattr(getattr(self.task, "ema", None), "updates", 0),
        }
        if distributed.world_size() > 1:
            extra["world_size"] = distributed.world_size()
        every_rng = distributed.gather_to_main(rng_states(self.task.random_streams))
        saved = distributed.on_main(functools.partial(self._save, extra, every_rng))
        return saved or self.run / "checkpoints" / f"step-{self.state.step:07d}"

    def _save(self, extra: dict, every_rng: list[dict[str, torch.Tensor]]) -> Path:
        """Rank 0's part of :meth:`_checkpoint`."""
        run, step, task = self.run, self.state.step, self.task
        try:
            path = save_checkpoint(
                run, step, task.modules, task.optimizers, task.random_streams, extra, every_rng[1:] or None
            )
        except OSError as exc:  # a full disk, say: the previous checkpoint and latest are untouched
            raise CondgenError(
                f"{run}: cannot write the checkpoint of step {step} ({exc.strerror or exc}); {_last_good(run)}"
            ) from None
        _prune(run, self.loop.keep_checkpoints)
        return path


def _resume_state(run: Path, task: Task) -> tuple[Path, dict]:
    """Loads the newest checkpoint that reads whole into ``task``; an unreadable newer one is passed over, and
    said so on stderr and in log.txt."""
    failures = []
    for checkpoint in checkpoints_newest_first(run):
        try:
            state = load_checkpoint(checkpoint, task.modules, task.optimizers, task.random_streams)
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
            load_rank_rng(checkpoint, distributed.rank(), task.random_streams)
        return ""
    if count > 1:
        distributed.redraw_random_streams(task.random_streams)  # one process goes on with rank 0's streams
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
