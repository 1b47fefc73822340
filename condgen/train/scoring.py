"""Periodic scoring of a generator during training, shared by every generative task."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from condgen.evaluate.evaluator import Evaluator
from condgen.viz.grid import save_grid


def score_label_files(
    label_files: dict[str, torch.Tensor],
    generate: Callable[[torch.Tensor], torch.Tensor],
    evaluator: Evaluator | None,
    step: int,
    run: Path,
) -> dict[str, float]:
    """Generates every label file's conditions, saves each grid under ``run/samples/``, and scores them: per file,
    top-k accuracy, the exact-set rate and per-object precision and recall (``accuracy_test``, ``exact_set_test``,
    ...); ``accuracy`` and ``exact_set`` (what the best checkpoint can be chosen by, ``loop.best_by``) are the means
    over the files, 0 without an evaluator."""
    scores: dict[str, float] = {}
    for name, labels in label_files.items():
        images = generate(labels)
        stem = Path(name).stem
        save_grid(images, run / "samples" / f"step-{step:07d}-{stem}.png")
        if evaluator is not None:
            scores |= {f"{key}_{stem}": value for key, value in evaluator.measure(images, labels).items()}
    for key in ("accuracy", "exact_set"):
        per_file = [scores[f"{key}_{Path(name).stem}"] for name in label_files if evaluator is not None]
        scores[key] = sum(per_file) / len(per_file) if per_file else 0.0
    return scores
