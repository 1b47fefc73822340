"""Best-of-K sampling: of K images made for one request, keep the one a multi-label classifier finds closest to
holding exactly the requested objects, and, where the ranker also counts objects, each of them once. Shared by the
GANs (ranked by the critic's auxiliary head or an image ranker) and diffusion (ranked by a noisy classifier at t = 0
or an image ranker); no ranker is the evaluator or the shipped counter."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

# per object counted off the requested number: a candidate one object off loses to an exact one unless its set is
# e^4 (about 55) times likelier
COUNT_WEIGHT = 4.0


def set_log_likelihood(
    logits: torch.Tensor, labels: torch.Tensor, requested: float = 1.0, absent: float = 1.0
) -> torch.Tensor:
    """log p(the detected set is exactly the requested one | x) under independent per-object sigmoids:
    sum over requested i of log sigmoid(logit_i) + sum over the others j of log(1 - sigmoid(logit_j)), per row.
    Unlike the requested terms alone, it also counts an extra object against the image. ``requested`` and
    ``absent`` weight the two sums (classifier guidance gives each its own scale)."""
    return (requested * F.logsigmoid(logits) * labels + absent * F.logsigmoid(-logits) * (1 - labels)).sum(dim=1)


@dataclass
class Reading:
    """What a ranker reads in finished candidates: per-object ``logits`` (N, C) and, for a ranker that counts,
    ``objects`` (N,), how many objects each holds (real-valued)."""

    logits: torch.Tensor
    objects: torch.Tensor | None = None


def as_reading(read: torch.Tensor | Reading) -> Reading:
    """A ranker's output as a :class:`Reading` (a bare tensor is per-object logits)."""
    return read if isinstance(read, Reading) else Reading(read)


def candidate_scores(reading: Reading, labels: torch.Tensor) -> torch.Tensor:
    """How close each candidate is to holding exactly the requested objects, each once: the
    :func:`set_log_likelihood` of its logits, less ``COUNT_WEIGHT`` per object it holds more or fewer than requested
    when the ranker counts. A set measure alone cannot tell an image that paints a requested object twice from one
    that paints it once; the count term can."""
    scores = set_log_likelihood(reading.logits.float(), labels.float())
    if reading.objects is not None:
        scores = scores - COUNT_WEIGHT * (reading.objects.float() - labels.float().sum(dim=1)).abs()
    return scores


def keep_best(candidates: torch.Tensor, read: torch.Tensor | Reading, labels: torch.Tensor, k: int) -> torch.Tensor:
    """``candidates`` (N k, ...) made for ``labels`` (N k, C; each request repeated k times in a row) -> (N, ...):
    per request, the candidate with the highest :func:`candidate_scores` of the ranker's reading ``read`` (its
    logits, or a :class:`Reading`)."""
    n = len(candidates) // k
    best = best_candidates(read, labels, k)
    return candidates.view(n, k, *candidates.shape[1:])[torch.arange(n), best.to(candidates.device)]


def best_candidates(read: torch.Tensor | Reading, labels: torch.Tensor, k: int) -> torch.Tensor:
    """Per request (``labels`` (N k, C), each request repeated k times in a row), the index among its ``k``
    candidates with the highest :func:`candidate_scores`: the one :func:`keep_best` keeps."""
    return candidate_scores(as_reading(read), labels).view(-1, k).argmax(dim=1)
