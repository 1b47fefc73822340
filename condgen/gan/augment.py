"""Differentiable augmentation for GAN training (DiffAugment, Zhao et al. 2020): the same kind of random transform
is applied to real and generated images before every discriminator call, in both players' updates, so the
discriminator cannot overfit a small training set and the generator still receives gradients through the transform.

Only transforms that keep every label are offered: translation and cutout move or hide pixels, never change a
colour (colour is part of every object's class, so colour jitter would teach wrong labels).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from condgen.gan.options import Augment


def translate(x: torch.Tensor, fraction: float, generator: torch.Generator) -> torch.Tensor:
    """Shifts each image by its own random whole number of pixels in [-s, s] along each axis, s = round(fraction *
    size), filling with zeros (mid-grey in [-1, 1]); DiffAugment's ``rand_translation``. Gradients pass to ``x``."""
    batch, _, height, width = x.shape
    sx, sy = round(fraction * height), round(fraction * width)
    shift_x = torch.randint(-sx, sx + 1, (batch, 1, 1), generator=generator).to(x.device)
    shift_y = torch.randint(-sy, sy + 1, (batch, 1, 1), generator=generator).to(x.device)
    index_b, index_x, index_y = torch.meshgrid(
        torch.arange(batch, device=x.device),
        torch.arange(height, device=x.device),
        torch.arange(width, device=x.device),
        indexing="ij",
    )
    index_x = (index_x + shift_x + 1).clamp(0, height + 1)
    index_y = (index_y + shift_y + 1).clamp(0, width + 1)
    padded = F.pad(x, [1, 1, 1, 1])  # a ring of zeros; indices that leave the image land on it
    return padded.permute(0, 2, 3, 1)[index_b, index_x, index_y].permute(0, 3, 1, 2)


def cutout(x: torch.Tensor, fraction: float, generator: torch.Generator) -> torch.Tensor:
    """Sets one random square of side round(fraction * size) per image to zero (DeVries & Taylor 2017;
    DiffAugment's ``rand_cutout``, which uses fraction 0.5)."""
    batch, _, height, width = x.shape
    side = round(fraction * height)
    top = torch.randint(0, height - side + 1, (batch, 1, 1), generator=generator).to(x.device)
    left = torch.randint(0, width - side + 1, (batch, 1, 1), generator=generator).to(x.device)
    rows = torch.arange(height, device=x.device)[None, :, None]
    cols = torch.arange(width, device=x.device)[None, None, :]
    inside = (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)
    return x * (~inside)[:, None].to(x.dtype)


def augment(
    x: torch.Tensor,
    kind: Augment | str,
    generator: torch.Generator,
    translate_fraction: float = 0.125,
    cutout_fraction: float = 0.25,
) -> torch.Tensor:
    """``x`` under the transforms that ``kind`` names (an :class:`Augment` or its value); ``none`` returns ``x``
    itself."""
    kind = Augment(kind)
    if kind is Augment.NONE:
        return x
    x = translate(x, translate_fraction, generator)
    if kind is Augment.TRANSLATION_CUTOUT:
        x = cutout(x, cutout_fraction, generator)
    return x
