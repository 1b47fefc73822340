"""The evaluator's training recipe, free of any training loop: the held-out split by whole scenes, the label-keeping
augmentation and the one-cycle schedule. The loop task that uses them is :mod:`condgen.train.evaluator`."""

from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F

from condgen.data.imageio import to_signed
from condgen.errors import CondgenError

# CLEVR_train_000123_2.png -> scene "CLEVR_train_000123": images of one scene share objects and must not be split.
_SCENE_PATTERN = re.compile(r"^(.*)_\d+\.[^.]+$")


def scene_of(file_name: str) -> str:
    match = _SCENE_PATTERN.match(file_name)
    return match.group(1) if match else file_name


def split_by_scene(files: list[str], val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of training and validation images, with every scene entirely on one side."""
    scenes = sorted({scene_of(f) for f in files})
    if len(scenes) < 2:
        raise CondgenError("evaluator training needs at least 2 scenes to hold one out for validation")
    n_val = min(max(1, round(len(scenes) * val_fraction)), len(scenes) - 1)
    order = torch.randperm(len(scenes), generator=torch.Generator().manual_seed(seed)).tolist()
    val_scenes = {scenes[i] for i in order[:n_val]}
    is_val = torch.tensor([scene_of(f) in val_scenes for f in files])
    return torch.nonzero(~is_val).flatten(), torch.nonzero(is_val).flatten()


def augment(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal flip and translation (edge-replicated) of a uint8 batch; returns floats in [-1, 1]."""
    x = to_signed(images)
    flip = torch.rand(len(x), generator=generator) < 0.5
    x[flip] = x[flip].flip(-1)
    if max_shift > 0:
        size = x.shape[-1]
        padded = F.pad(x, [max_shift] * 4, mode="replicate")
        offsets = torch.randint(0, 2 * max_shift + 1, (len(x), 2), generator=generator).tolist()
        x = torch.stack([padded[i, :, dy : dy + size, dx : dx + size] for i, (dy, dx) in enumerate(offsets)])
    return x


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
