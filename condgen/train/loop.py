"""The training loop every model shares: steps, logging, periodic checkpoints and evaluation, best-by-accuracy,
a wall-clock budget, and exact resume.

A model plugs in as a :class:`Task`: it owns its modules, optimisers and random generators, and knows how to take
one training step and how to score itself. The loop owns everything else.
"""

from __future__ import annotations

import copy
import datetime
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from condgen.errors import CondgenError
from condgen.files import staged_folder, write_atomic
from condgen.progress import progress_bar
from condgen.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint

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
    modules: dict[str, torch.nn.Module]
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
    the random initialisation."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.updates = 0

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
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
    checkpoints/, best/ and log.txt, one line per start or resume followed by ``note`` (the device, say)."""
    run.mkdir(parents=True, exist_ok=True)
    step, best = 0, None
    checkpoint = latest_checkpoint(run)
    if resume:
        if checkpoint is None:
            raise CondgenError(f"{run}: nothing to resume (no checkpoints/latest)")
        state = load_checkpoint(checkpoint, task.modules, task.optimizers, task.generators)
        if state.get("kind") != task.kind:
            raise CondgenError(f"{checkpoint}: a {state.get('kind')} checkpoint, not {task.kind}")
        step, best = state["step"], state.get("best_accuracy")
        if state.get("best_by", "accuracy") != loop.best_by:
            best = None  # a score of another kind; the next evaluation sets the best anew
        if hasattr(task, "ema"):
            task.ema.updates = state.get("ema_updates", step)
    else:
        if checkpoint is not None or (run / "config.yaml").exists():
            raise CondgenError(f"{run}: already holds a run; pass --resume to continue it or choose another --out")
        write_atomic(run / "config.yaml", config_yaml.encode())
    _log(run, f"{'resumed' if resume else 'started'} at step {step}" + (f"; {note}" if note else ""))

    def checkpoint_now() -> Path:
        extra = {
            "kind": task.kind,
            "best_accuracy": best,
            "best_by": loop.best_by,
            "ema_updates": getattr(getattr(task, "ema", None), "updates", 0),
        }
        path = save_checkpoint(run, step, task.modules, task.optimizers, task.generators, extra)
        _prune(run, loop.keep_checkpoints)
        return path

    start = time.perf_counter()
    sums: dict[str, float] = {}
    count = 0
    stopped_by_budget = False
    with progress_bar(total=loop.steps, initial=step, desc=task.kind, unit="step", enabled=progress) as bar:
        while step < loop.steps:
            losses = task.train_step(step)
            step += 1
            count += 1
            for key, value in losses.items():
                sums[key] = sums.get(key, 0.0) + value
            bar.update(1)
            out_of_time = loop.max_minutes > 0 and time.perf_counter() - start > 60 * loop.max_minutes
            if step % loop.log_every == 0 or step == loop.steps or out_of_time:  # the last step is always logged
                means = {k: v / count for k, v in sums.items()}
                bar.set_postfix({k: f"{v:.4f}" for k, v in means.items()})
                _append_metrics(run, {"step": step, **means, "seconds": round(time.perf_counter() - start, 2)})
                sums, count = {}, 0
            evaluate = step == loop.steps or out_of_time or (loop.eval_every and step % loop.eval_every == 0)
            new_best = False
            if evaluate:
                scores = task.evaluate(step, run)
                _append_metrics(run, {"step": step, **scores})
                new_best = best is None or scores[loop.best_by] > best
                if new_best:
                    best = scores[loop.best_by]
            if new_best or step % loop.checkpoint_every == 0 or step == loop.steps or out_of_time:
                path = checkpoint_now()
                if new_best:
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


def _append_metrics(run: Path, record: dict) -> None:
    with open(run / "metrics.jsonl", "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


def _log(run: Path, line: str) -> None:
    stamp = datetime.datetime.now().isoformat(timespec="seconds")
    with open(run / "log.txt", "a", encoding="utf-8") as handle:
        handle.write(f"{stamp} {line}\n")


def _prune(run: Path, keep: int) -> None:
    folders = sorted((run / "checkpoints").glob("step-*"))
    for old in folders[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
