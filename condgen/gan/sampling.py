"""Sampling a conditional GAN: one noise vector per request, or the best of several, ranked by how close each image
is to holding exactly the requested objects: by an image ranker of the decoded images where the model folder holds
one (and its own object counter), else by the critic's own auxiliary head (a multi-label classifier trained on the
training images alongside the critic). Neither is the evaluator."""

from __future__ import annotations

from collections.abc import Callable

import torch

from condgen.errors import CondgenError
from condgen.gan.networks import ConditionedCritic, FoldGenerator, Generator
from condgen.nn.ranking import Reading, keep_best


def sample_images(
    generator: Generator | FoldGenerator,
    labels: torch.Tensor,
    seed: int,
    batch_size: int = 64,
    critic: ConditionedCritic | None = None,
    candidates: int = 1,
    ranking: Callable[[torch.Tensor], Reading] | None = None,
) -> torch.Tensor:
    """G(z, y) for every row of ``labels`` with noise from ``seed``: the same seed gives the same images.

    With ``candidates`` K > 1, request i gets the K noise vectors iK .. iK + K - 1 of one draw and keeps the output
    that ``ranking`` (an image ranker's reading of the generator's outputs) prefers, else whose auxiliary logits from
    ``critic`` have the highest :func:`condgen.nn.ranking.set_log_likelihood` (best-of-K rejection); with K = 1 the
    noise, and so the images, are those of plain sampling."""
    if candidates < 1:
        raise CondgenError(f"candidates: {candidates} is below 1")
    if candidates > 1 and ranking is None and (critic is None or critic.auxiliary is None):
        raise CondgenError(
            f"candidates: ranking {candidates} images per request needs the critic's auxiliary head and its weights "
            "(model.conditioning auxiliary or both, critic.safetensors beside ema.safetensors)"
        )
    noise_source = torch.Generator().manual_seed(seed)
    device = next(generator.parameters()).device
    z = torch.randn(len(labels) * candidates, generator.config.noise_dim, generator=noise_source)
    per_batch = max(1, batch_size // candidates)  # requests per forward pass
    chunks = []
    with torch.no_grad():
        for start in range(0, len(labels), per_batch):
            wanted = labels[start : start + per_batch].to(device)
            repeated = wanted.repeat_interleave(candidates, dim=0)
            out = generator(z[start * candidates : start * candidates + len(repeated)].to(device), repeated)
            if candidates > 1:
                read = ranking(out) if ranking is not None else critic(out, repeated)[1]
                out = keep_best(out, read, repeated, candidates)
            chunks.append(out.cpu())
    return torch.cat(chunks)


def network_passes(candidates: int, readers: int) -> int:
    """Network passes per image of the best of ``candidates``: each candidate's generator pass and, where K > 1
    candidates are ranked, one pass per candidate of each of the ``readers`` networks that rank them (the critic, or
    an image ranker and its counter)."""
    return candidates * (1 + readers) if candidates > 1 else candidates
