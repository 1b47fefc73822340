"""The evaluator's training recipe, free of any training loop: the label-keeping augmentation and the
one-cycle schedule. The loop task that uses them is :mod:`condgen.train.evaluator`."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from condgen.data.imageio import to_signed


def augment(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal flip and translation (edge-replicated) of a uint8 batch; returns floats in [-1, 1]."""
    return flip_and_shift(to_signed(images), max_shift, generator)


def flip_and_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Each image of a float batch mirrored at even odds and moved by up to ``max_shift`` pixels each way (edges
    repeated): the objects a scene holds stay the same. Differentiable in ``x``."""
    flip = torch.rand(len(x), generator=generator) < 0.5
    x = torch.where(flip.view(-1, 1, 1, 1).to(x.device), x.flip(-1), x)
    if max_shift > 0:
        size = x.shape[-1]
        padded = F.pad(x, [max_shift] * 4, mode="replicate")
        offsets = torch.randint(0, 2 * max_shift + 1, (len(x), 2), generator=generator).tolist()
        x = torch.stack([padded[i, :, dy : dy + size, dx : dx + size] for i, (dy, dx) in enumerate(offsets)])
    return x


def follow_one_cycle(optimizer: torch.optim.Optimizer, step: int, total: int, peak: float, pct_start: float) -> None:
    """Sets every parameter group's learning rate and Adam beta1 to :func:`one_cycle`'s values at ``step``."""
    lr, beta1 = one_cycle(step, total, peak, pct_start)
    for group in optimizer.param_groups:
        group["lr"], group["betas"] = lr, (beta1, group["betas"][1])


def one_cycle(step: int, total: int, peak: float, pct_start: float = 0.15) -> tuple[float, float]:
    """The learning rate and Adam's beta1 for optimiser step ``step`` of ``total`` under the one-cycle policy (Smith
    & Topin 2017) as torch's ``OneCycleLR`` computes it with its defaults: the rate rises from peak / 25 to ``peak``
    over the first ``pct_start`` of the steps and falls to peak / 25e4, each by half a cosine, while beta1 falls from
    0.95 to 0.85 and rises back. A function of the step alone, so a resumed run needs no scheduler state."""
    warm_end, last = pct_start * total - 1, total - 1
    start_lr, floor = peak / 25, peak / 25 / 1e4
    if step <= warm_end:
        fraction, lrs, betas = step / warm_end if warm_end > 0 else 1.0, (start_lr, peak), (0.95, 0.85)
    else:
        fraction, lrs, betas = (step - warm_end) / (last - warm_end), (peak, floor), (0.85, 0.95)

    def anneal(begin: float, end: float) -> float:
        return end + (begin - end) / 2 * (1 + math.cos(math.pi * fraction))

    return anneal(*lrs), anneal(*betas)
