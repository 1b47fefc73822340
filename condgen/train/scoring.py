"""Periodic scoring of a generator during training, shared by every generative task."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from condgen.evaluate.evaluator import Evaluator
from condgen.viz.grid import save_grid

SELECTION = "train_lists"  # the name of the selection requests' scores (``accuracy_train_lists``) and grids


def score_label_files(
    selection: torch.Tensor,
    label_files: dict[str, torch.Tensor],
    generate: Callable[[torch.Tensor], torch.Tensor],
    evaluator: Evaluator | None,
    step: int,
    run: Path,
) -> dict[str, float]:
    """Generates the selection requests (label sets of training images: :func:`condgen.data.iclevr.selection_labels`)
    and every label file's, saves each grid under ``run/samples/``, and scores them: per set, top-k accuracy, the
    exact-set rate and per-object precision and recall (``accuracy_train_lists``, ``exact_set_test``, ...).
    ``accuracy`` and ``exact_set``, what ``best/`` is chosen by (``loop.best_by``), are the selection requests' alone,
    0 without an evaluator: the test files are scored for the record, never to choose a checkpoint."""
    scores: dict[str, float] = {}
    requests = {SELECTION: selection} | {Path(name).stem: labels for name, labels in label_files.items()}
    for stem, labels in requests.items():
        images = generate(labels)
        save_grid(images, run / "samples" / f"step-{step:07d}-{stem}.png")
        if evaluator is not None:
            scores |= {f"{key}_{stem}": value for key, value in evaluator.measure(images, labels).items()}
    for key in ("accuracy", "exact_set"):
        scores[key] = scores.get(f"{key}_{SELECTION}", 0.0)
    return scores
