"""Image grids for people to look at."""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.utils import make_grid

from condgen.data.imageio import save_png, to_signed


def save_grid(images: torch.Tensor, path: str | Path, nrow: int = 8, padding: int = 2) -> None:
    """Saves a batch (uint8 or float in [-1, 1]) as one PNG grid, ``nrow`` images per row, on a white background."""
    if images.dtype == torch.uint8:
        images = to_signed(images)
    grid = make_grid(images.float(), nrow=nrow, padding=padding, pad_value=1.0)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_png(grid, path)
