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
    """Generates every label file's conditions, saves each grid under ``run/samples/``, and scores them;
    ``accuracy`` (what the best checkpoint is chosen by) is the mean over the files, 0 without an evaluator."""
    scores = {}
    for name, labels in label_files.items():
        images = generate(labels)
        save_grid(images, run / "samples" / f"step-{step:07d}-{Path(name).stem}.png")
        if evaluator is not None:
            scores[f"accuracy_{Path(name).stem}"] = evaluator.accuracy(images, labels)
    per_file = list(scores.values())
    scores["accuracy"] = sum(per_file) / len(per_file) if per_file else 0.0
    return scores
