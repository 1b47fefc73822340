"""An image ranker for best-of-K sampling: a multi-label classifier of finished images, trained by condgen on the
training images with the evaluator's recipe (`condgen train evaluator --config configs/ranker_cpu.yaml`), never the
shipped evaluator itself, which only scores. It reads what the evaluator reads (decoded 64x64 images), where a
diffusion model's noisy classifier reads its x_t."""

from __future__ import annotations

import functools
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import torch

from condgen.errors import CondgenError
from condgen.evaluate.evaluator import SHIPPED_WEIGHTS, evaluator_logits, load_evaluator

RANKER_FILE = "ranker.safetensors"  # a model folder's own ranker (`condgen export --ranker RUN`)


def ranker_weights(path: Path) -> Path:
    """The weights file of ``path``: a `train evaluator` run folder (its ``evaluator.safetensors``) or the file."""
    weights = path / "evaluator.safetensors" if path.is_dir() else path
    if not weights.is_file() or weights.suffix != ".safetensors":
        raise CondgenError(f"{path}: no ranker weights; give a `condgen train evaluator` run or its .safetensors file")
    return weights


def load_ranker(path: Path, objects: list[str], device: torch.device | str = "cpu") -> torch.nn.Module:
    """The ranker at ``path`` (see :func:`ranker_weights`), checked to know exactly ``objects`` (the generator's
    vocabulary, in order) and refused when it is the shipped evaluator: the judge must not choose what it judges."""
    weights = ranker_weights(path)
    ranker = load_evaluator(weights, device)
    if list(ranker.codec.names) != list(objects):
        raise CondgenError(f"{path}: the ranker's objects differ from the generator's")
    mine = ranker.model.state_dict()
    if all(torch.equal(mine[name].cpu().half(), tensor) for name, tensor in _shipped_evaluator_in_half().items()):
        raise CondgenError(f"{path}: this is the shipped evaluator, which scores images and never ranks them")
    return ranker.model.eval().requires_grad_(False)


@functools.cache
def _shipped_evaluator_in_half() -> dict[str, torch.Tensor]:
    """The shipped evaluator's weights rounded to float16, so that a float16 copy of it is recognised too."""
    with resources.as_file(resources.files("condgen.evaluate") / "weights" / SHIPPED_WEIGHTS) as shipped:
        return {name: tensor.half() for name, tensor in load_evaluator(shipped).model.state_dict().items()}


def image_ranking(
    ranker: torch.nn.Module, decode: Callable[[torch.Tensor], torch.Tensor], batch_size: int = 256
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Finished samples -> the ranker's per-object logits of their images (``decode`` turns latents into images)."""
    device = next(ranker.parameters()).device

    @torch.no_grad()
    def logits(samples: torch.Tensor) -> torch.Tensor:
        parts = [
            evaluator_logits(ranker, decode(part).clamp(-1, 1).to(device)).float() for part in samples.split(batch_size)
        ]
        return torch.cat(parts).to(samples.device)

    return logits
