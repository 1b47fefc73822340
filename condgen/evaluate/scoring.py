"""``condgen evaluate``: read a batch of images from disk and score it against label lists."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from condgen.data.iclevr import IMAGE_SIZE, load_dataset, load_label_file
from condgen.data.imageio import decode_image, to_signed
from condgen.errors import CondgenError
from condgen.evaluate.counter import real_image_ceiling
from condgen.evaluate.evaluator import Evaluator, load_evaluator
from condgen.evaluate.metrics import frechet_distance


def read_image_batch(path: str | Path, count: int, size: int = IMAGE_SIZE) -> torch.Tensor:
    """Reads ``count`` images as float (N, 3, size, size) in [-1, 1].

    ``path`` is a folder of ``0.png .. {count-1}.png`` or a ``.pt`` / ``.npy`` tensor (N, 3, H, W), either uint8 in
    [0, 255] or float in [-1, 1] (the range every generator here outputs).
    """
    path = Path(path)
    if path.is_dir():
        return to_signed(torch.from_numpy(np.stack([decode_image(path / f"{i}.png", size) for i in range(count)])))
    batch = _load_tensor_file(path)
    _check_batch_shape(batch, count, path)
    batch = _signed_float(batch, path)
    if batch.shape[-2:] != (size, size):
        batch = F.interpolate(batch, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return batch


def _load_tensor_file(path: Path) -> object:
    """What a ``.pt`` or ``.npy`` file holds (a tensor, if it is what it should be), without unpickling code."""
    if not path.is_file():
        raise CondgenError(f"{path}: no such folder or file")
    if path.suffix == ".pt":
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # truncated or foreign files raise many types
            raise CondgenError(f"{path}: cannot load tensor ({exc.__class__.__name__})") from None
    if path.suffix == ".npy":
        try:
            return torch.from_numpy(np.load(path, allow_pickle=False))
        except (OSError, ValueError) as exc:
            raise CondgenError(f"{path}: cannot load array ({exc})") from None
    raise CondgenError(f"{path}: expected a folder of PNGs, a .pt or a .npy file")


def _check_batch_shape(batch: object, count: int, path: Path) -> None:
    """A batch is a tensor (N, 3, H, W) with one image per label list."""
    if not isinstance(batch, torch.Tensor) or batch.dim() != 4 or batch.shape[1] != 3:
        shape = tuple(batch.shape) if isinstance(batch, torch.Tensor) else type(batch).__name__
        raise CondgenError(f"{path}: expected a tensor of shape (N, 3, H, W), got {shape}")
    if len(batch) != count:
        raise CondgenError(f"{path}: holds {len(batch)} images but the label file has {count} label lists")


def _signed_float(batch: torch.Tensor, path: Path) -> torch.Tensor:
    """uint8 images in [0, 255] or float images in [-1, 1] (a little slack for rounding) as float in [-1, 1]."""
    if batch.dtype == torch.uint8:
        return to_signed(batch)
    if not batch.is_floating_point():
        raise CondgenError(f"{path}: images must be uint8 or float, got {batch.dtype}")
    batch = batch.float()
    if not torch.isfinite(batch).all():
        raise CondgenError(f"{path}: holds non-finite values (NaN or infinity); images must lie in [-1, 1]")
    low, high = float(batch.min()), float(batch.max())
    if low < -1.01 or high > 1.01:
        raise CondgenError(f"{path}: float images must lie in [-1, 1], found values in [{low:.3g}, {high:.3g}]")
    return batch


def evaluate_images(
    images: Path | None = None,
    labels: Path | None = None,
    data: Path | None = None,
    evaluator: Path | None = None,
    reference: Path | None = None,
    threshold: float = 0.5,
    counter: Path | None = None,
) -> dict:
    """Scores ``images`` against ``labels`` (or a dataset folder ``data`` against its train.json): top-k accuracy,
    and the exact-set rate, precision and recall of the objects detected above ``threshold``; with an object counter
    (``counter``, else the shipped one for i-CLEVR's objects) the count-exact, exact-scene and extra-object rates.
    Judged by the shipped evaluator and counter, the result holds their figures on real images as ``real_images``."""
    model = load_evaluator(evaluator, counter=counter)
    if data is not None:
        dataset = load_dataset(data)
        _check_vocabulary(model, dataset.codec.names, data / "objects.json")
        batch, multi_hot = to_signed(dataset.images), dataset.labels
    else:
        multi_hot = load_label_file(labels, model.codec)
        batch = read_image_batch(images, len(multi_hot))
    result = {
        **model.measure(batch, multi_hot, threshold),
        "threshold": threshold,
        "images": len(batch),
        "objects": int(multi_hot.sum()),
        "evaluator": str(evaluator) if evaluator else "shipped i-CLEVR evaluator",
    }
    if model.counter is not None:
        result["counter"] = str(counter) if counter else "shipped i-CLEVR counter"
    ceiling = real_image_ceiling() if evaluator is None and counter is None else None
    if ceiling is not None:  # the most a generated image can score, by the same two judges
        result["real_images"] = ceiling
    if reference is not None:
        real = load_dataset(reference)
        _check_vocabulary(model, real.codec.names, reference / "objects.json")
        result["frechet_distance"] = frechet_distance(model.features(batch), model.features(to_signed(real.images)))
        result["frechet_space"] = "evaluator ResNet18 512-d pooled features (not Inception FID)"
    return result


def _check_vocabulary(model: Evaluator, names: tuple[str, ...], where: Path) -> None:
    if names != model.codec.names:
        raise CondgenError(f"{where}: its objects differ from the evaluator's vocabulary of {len(model.codec)} objects")
