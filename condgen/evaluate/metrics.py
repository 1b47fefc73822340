"""The course's top-k accuracy, the exact-set rate with per-object precision and recall, the count-aware rates (as
many objects as requested; exactly the requested ones, each once) and a Fréchet distance between two sets of feature
vectors."""

from __future__ import annotations

import torch


def top_k_accuracy(scores: torch.Tensor, multi_hot: torch.Tensor) -> float:
    """The course's metric: for an image with k requested objects, take its k highest scores;
    accuracy = (top-k classes that were requested) / (requested objects), summed over all images.

    Vectorised: rank every score once, then an image's top-k are the classes of rank < k. Ties go to the lower
    class index, so the result is reproducible (``torch.topk``, used by the course, leaves tie order unspecified).
    """
    if scores.shape != multi_hot.shape or scores.dim() != 2:
        raise ValueError(f"scores {tuple(scores.shape)} and labels {tuple(multi_hot.shape)} must be equal (N, C)")
    truth = multi_hot > 0.5
    k = truth.sum(dim=1, keepdim=True)
    total = int(k.sum())
    if total == 0:
        raise ValueError("the label vectors request no objects")
    order = torch.sort(scores.float(), dim=1, descending=True, stable=True).indices
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(scores.shape[1]).expand_as(order))
    hits = (truth & (rank < k)).sum()
    return float(hits) / total


def exact_sets(scores: torch.Tensor, multi_hot: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Per image, whether its detected objects (scores above ``threshold``) are exactly the requested ones."""
    if scores.shape != multi_hot.shape or scores.dim() != 2:
        raise ValueError(f"scores {tuple(scores.shape)} and labels {tuple(multi_hot.shape)} must be equal (N, C)")
    return ((scores.float() > threshold) == (multi_hot > 0.5)).all(dim=1)


def set_scores(scores: torch.Tensor, multi_hot: torch.Tensor, threshold: float = 0.5) -> dict[str, float]:
    """What a user asking for exactly these objects sees. An object is detected when its score exceeds
    ``threshold``; then

    - ``exact_set``: the share of images whose detected objects are exactly the requested set (an extra, a missing
      or a substituted object each fail the image, where top-k accuracy forgives an extra one);
    - ``precision``: detected objects that were requested / detected objects (over every image);
    - ``recall``: requested objects that were detected / requested objects.

    ``precision`` is 1 when nothing at all is detected (no wrong detection was made).
    """
    exact = exact_sets(scores, multi_hot, threshold)  # checks the shapes first
    detected, truth = scores.float() > threshold, multi_hot > 0.5
    hits = int((detected & truth).sum())
    return {
        "exact_set": int(exact.sum()) / len(scores),
        "precision": hits / max(1, int(detected.sum())) if detected.any() else 1.0,
        "recall": hits / max(1, int(truth.sum())),
    }


COUNT_KEYS = ("count_exact", "exact_scene", "extra_objects")  # what count_scores gives


def count_scores(totals: torch.Tensor, multi_hot: torch.Tensor, exact: torch.Tensor) -> dict[str, float]:
    """What a set measure forgives: an object drawn twice. From each image's object count ``totals`` (N,) and its
    exact-set outcome ``exact`` (N,) bool (:func:`exact_sets`):

    - ``count_exact``: the share of images that hold as many objects as were requested;
    - ``exact_scene``: the share whose detected objects are exactly the requested set *and* that hold as many objects
      as requested, i.e. every requested object once and nothing else (as every real i-CLEVR image);
    - ``extra_objects``: the share that hold more objects than requested (a duplicate or an extra object).
    """
    if totals.shape != exact.shape or totals.shape[0] != multi_hot.shape[0]:
        raise ValueError(f"totals {tuple(totals.shape)}, exact {tuple(exact.shape)} and labels must share N")
    requested = (multi_hot > 0.5).sum(dim=1)
    right = totals == requested
    return {
        "count_exact": float(right.float().mean()),
        "exact_scene": float((right & exact).float().mean()),
        "extra_objects": float((totals > requested).float().mean()),
    }


def frechet_distance(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (Heusel et al. 2017, eq. 6):

        d^2 = |mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)).

    Tr((S_a S_b)^(1/2)) is computed as the sum of square roots of the eigenvalues of S_a^(1/2) S_b S_a^(1/2), a
    symmetric PSD matrix with the same spectrum, which avoids a general matrix square root. Float64 throughout.
    """
    a, b = features_a.double(), features_b.double()
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[1]:
        raise ValueError("feature sets must be (N, D) matrices with the same D")
    if len(a) < 2 or len(b) < 2:
        raise ValueError("a Fréchet distance needs at least 2 samples per set")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    evals_a, evecs_a = torch.linalg.eigh(cov_a)
    sqrt_a = evecs_a @ torch.diag(evals_a.clamp(min=0).sqrt()) @ evecs_a.T
    middle = sqrt_a @ cov_b @ sqrt_a
    trace_sqrt = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    distance = (mu_a - mu_b).square().sum() + torch.trace(cov_a) + torch.trace(cov_b) - 2 * trace_sqrt
    return float(distance.clamp(min=0))
