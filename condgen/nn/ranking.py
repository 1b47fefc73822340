"""Best-of-K sampling: of K images made for one request, keep the one a multi-label classifier finds closest to
holding exactly the requested objects. Shared by the GANs (ranked by the critic's auxiliary head) and latent
diffusion (ranked by a noisy classifier at t = 0); neither ranker is the evaluator."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def set_log_likelihood(
    logits: torch.Tensor, labels: torch.Tensor, requested: float = 1.0, absent: float = 1.0
) -> torch.Tensor:
    """log p(the detected set is exactly the requested one | x) under independent per-object sigmoids:
    sum over requested i of log sigmoid(logit_i) + sum over the others j of log(1 - sigmoid(logit_j)), per row.
    Unlike the requested terms alone, it also counts an extra object against the image. ``requested`` and
    ``absent`` weight the two sums (classifier guidance gives each its own scale)."""
    return (requested * F.logsigmoid(logits) * labels + absent * F.logsigmoid(-logits) * (1 - labels)).sum(dim=1)


def keep_best(candidates: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """``candidates`` (N k, ...) made for ``labels`` (N k, C; each request repeated k times in a row) -> (N, ...):
    per request, the candidate whose ``logits`` have the highest :func:`set_log_likelihood`."""
    n = len(candidates) // k
    best = best_candidates(logits, labels, k)
    return candidates.view(n, k, *candidates.shape[1:])[torch.arange(n), best.to(candidates.device)]


def best_candidates(logits: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """Per request (``labels`` (N k, C), each request repeated k times in a row), the index among its ``k``
    candidates whose ``logits`` have the highest :func:`set_log_likelihood`: the one :func:`keep_best` keeps."""
    return set_log_likelihood(logits.float(), labels.float()).view(-1, k).argmax(dim=1)
