"""The object counter: how many objects an image holds, and how many instances of each object.

A small fully convolutional network maps an image to one non-negative density map per object class on an 8x8 grid;
a map's sum is that object's instance count and the sum of all maps the image's object count (density counting,
Lempitsky & Zisserman 2010, trained from counts alone as in Cholakkal et al. 2019). Summing keeps counts additive,
so a network that saw scenes of one to six objects counts each of them where it stands. It is a judge beside the
evaluator (:mod:`condgen.evaluate.evaluator`): no generator or ranker is trained through it or chooses by it.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import torch
from torch import nn

from condgen.data.labels import LabelCodec
from condgen.errors import CondgenError
from condgen.tensorfile import read_tensors, save_tensors

SHIPPED_COUNTER = "iclevr_counter.safetensors"
CEILING_RECORD = "iclevr_counter.json"  # the counter's training record, with the real-image ceiling
COUNTER_WIDTH = 32  # channels after the stem; 2x and 4x of it at the 16x16 and 8x8 stages


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.SiLU())


class DensityCounter(nn.Module):
    """(N, 3, 64, 64) images in [-1, 1] -> (N, C, 8, 8) non-negative densities (softplus), one map per object."""

    def __init__(self, num_classes: int, width: int = COUNTER_WIDTH):
        super().__init__()
        self.body = nn.Sequential(
            _conv(3, width, stride=2),  # 32x32
            _conv(width, width),
            _conv(width, 2 * width, stride=2),  # 16x16
            _conv(2 * width, 2 * width),
            _conv(2 * width, 4 * width, stride=2),  # 8x8
            _conv(4 * width, 4 * width),
            _conv(4 * width, 4 * width),
        )
        self.density = nn.Conv2d(4 * width, num_classes, 1)
        # start near zero objects (softplus(-6) = 0.0025 per cell), not ~0.7 in each of the C x 64 cells
        nn.init.constant_(self.density.bias, -6.0)
        nn.init.normal_(self.density.weight, std=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.softplus(self.density(self.body(x)))


def instance_counts(densities: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) densities -> (N, C) real-valued instance counts per object."""
    return densities.float().sum(dim=(2, 3))


class ObjectCounter:
    """A trained :class:`DensityCounter` and its vocabulary."""

    def __init__(self, model: DensityCounter, codec: LabelCodec, batch_size: int = 256):
        self.model = model.eval()
        self.codec = codec
        self.batch_size = batch_size

    @torch.no_grad()
    def instances(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, 64, 64) images in [-1, 1] -> (N, C) real-valued instance counts of every object."""
        device = next(self.model.parameters()).device
        parts = [
            instance_counts(self.model(images[i : i + self.batch_size].to(device, torch.float32))).cpu()
            for i in range(0, len(images), self.batch_size)
        ]
        return torch.cat(parts) if parts else torch.zeros(0, len(self.codec))

    def totals(self, images: torch.Tensor) -> torch.Tensor:
        """(N,) whole numbers of objects: the rounded sum of every object's instances."""
        return self.instances(images).sum(dim=1).round().long()


def save_counter(model: DensityCounter, codec: LabelCodec, path: str | Path, half: bool = False) -> None:
    """Writes the weights as safetensors with the vocabulary and width in the header, atomically."""
    width = model.body[0][0].out_channels
    metadata = {"format": "condgen-counter", "width": str(width), "objects": json.dumps(list(codec.names))}
    save_tensors(model.state_dict(), Path(path), metadata, half)


def load_counter(path: str | Path | None = None, device: str | torch.device = "cpu") -> ObjectCounter:
    """Loads a counter: ``None`` for the shipped i-CLEVR one, or a ``.safetensors`` file ``condgen train counter``
    wrote."""
    if path is None:
        with resources.as_file(resources.files("condgen.evaluate") / "weights" / SHIPPED_COUNTER) as shipped:
            return load_counter(shipped, device)
    path = Path(path)
    if not path.is_file():
        raise CondgenError(f"{path}: counter weights not found")
    state, metadata = read_tensors(path)
    if metadata.get("format") != "condgen-counter" or "objects" not in metadata:
        raise CondgenError(f"{path}: not a condgen object counter (no counter header)")
    codec = LabelCodec(json.loads(metadata["objects"]))
    model = DensityCounter(len(codec), int(metadata.get("width", COUNTER_WIDTH)))
    try:
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CondgenError(f"{path}: not a counter for {len(codec)} objects ({first})") from None
    return ObjectCounter(model.to(device), codec)


def shipped_counter_exists() -> bool:
    return (resources.files("condgen.evaluate") / "weights" / SHIPPED_COUNTER).is_file()


def real_image_ceiling() -> dict[str, float] | None:
    """The shipped evaluator's and counter's figures on held-out real i-CLEVR images (``accuracy``, ``exact_set``,
    ``count_exact``, ``exact_scene``, ``extra_objects``): the most a generated image can score on them. ``None``
    when no counter is shipped."""
    record = resources.files("condgen.evaluate") / "weights" / CEILING_RECORD
    if not record.is_file():
        return None
    return json.loads(record.read_text())["real_images"]
