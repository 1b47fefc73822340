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

from condgen.data.jsonio import read_json
from condgen.errors import CondgenError
from condgen.evaluate.counter import SHIPPED_COUNTER, ObjectCounter, instance_counts, load_counter
from condgen.evaluate.evaluator import SHIPPED_WEIGHTS, evaluator_logits, load_evaluator
from condgen.evaluate.training import flip_and_shift
from condgen.nn.ranking import Reading, candidate_scores

RANKER_FILE = "ranker.safetensors"  # a model folder's own ranker (`condgen export --ranker RUN`)
RANKER_COUNTER_FILE = "ranker_counter.safetensors"  # its object counter (`condgen export --ranker-counter RUN`)
# {"folder": "../iclevr-ldm"}: a model folder that ranks with another's ranker and counter, which are stored once;
# with "counter": false, with that folder's ranker alone
SHARED_RANKERS_FILE = "rankers.json"


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


def ranker_counter_weights(path: Path) -> Path:
    """The weights file of ``path``: a `train counter` run folder (its ``counter.safetensors``) or the file."""
    weights = path / "counter.safetensors" if path.is_dir() else path
    if not weights.is_file() or weights.suffix != ".safetensors":
        raise CondgenError(f"{path}: no counter weights; give a `condgen train counter` run or its .safetensors file")
    return weights


def load_ranker_counter(path: Path, objects: list[str], device: torch.device | str = "cpu") -> ObjectCounter:
    """A ranker's own object counter at ``path`` (see :func:`ranker_counter_weights`), checked to know exactly
    ``objects`` and refused when it is the shipped counter, which judges images and never ranks them."""
    counter = load_counter(ranker_counter_weights(path), device)
    if list(counter.codec.names) != list(objects):
        raise CondgenError(f"{path}: the counter's objects differ from the generator's")
    if shipped_counter_matches(counter):
        raise CondgenError(f"{path}: this is the shipped counter, which scores images and never ranks them")
    return counter


def own_ranker_files(folder: Path) -> tuple[Path | None, Path | None]:
    """A model folder's image ranker and object counter files, each None where it has none: its own, or those of
    the model folder that its ``rankers.json`` names by a path relative to it (the shipped models share one ranker,
    stored once in the package), the counter only unless it says ``"counter": false``."""
    pointer, with_counter = folder / SHARED_RANKERS_FILE, True
    if pointer.is_file():
        shared = read_json(pointer)
        if (
            not isinstance(shared, dict)
            or not isinstance(shared.get("folder"), str)
            or not isinstance(shared.get("counter", True), bool)
        ):
            raise CondgenError(
                f'{pointer}: expected {{"folder": "PATH"}}, the model folder whose rankers it uses, and optionally '
                '"counter": false (its ranker alone)'
            )
        folder, with_counter = folder / shared["folder"], shared.get("counter", True)
        if not (folder / RANKER_FILE).is_file():
            raise CondgenError(f"{pointer}: {folder} holds no {RANKER_FILE}")
    ranker, counter = folder / RANKER_FILE, folder / RANKER_COUNTER_FILE
    return (ranker if ranker.is_file() else None), (counter if with_counter and counter.is_file() else None)


def load_own_rankers(
    folder: Path, objects: list[str], device: torch.device | str = "cpu"
) -> tuple[torch.nn.Module | None, ObjectCounter | None]:
    """A model folder's image ranker and its object counter (:func:`own_ranker_files`), each None where the folder
    has none."""
    ranker_file, counter_file = own_ranker_files(folder)
    ranker = load_ranker(ranker_file, objects, device) if ranker_file else None
    counter = load_ranker_counter(counter_file, objects, device) if counter_file else None
    return ranker, counter


def shipped_counter_matches(counter: ObjectCounter) -> bool:
    """Whether ``counter`` holds the shipped counter's weights (in any precision)."""
    with resources.as_file(resources.files("condgen.evaluate") / "weights" / SHIPPED_COUNTER) as shipped:
        if not shipped.is_file():
            return False
        judge = load_counter(shipped).model.state_dict()
    mine = counter.model.state_dict()
    return mine.keys() == judge.keys() and all(
        mine[name].shape == tensor.shape and torch.equal(mine[name].cpu().half(), tensor.half())
        for name, tensor in judge.items()
    )


@functools.cache
def _shipped_evaluator_in_half() -> dict[str, torch.Tensor]:
    """The shipped evaluator's weights rounded to float16, so that a float16 copy of it is recognised too."""
    with resources.as_file(resources.files("condgen.evaluate") / "weights" / SHIPPED_WEIGHTS) as shipped:
        return {name: tensor.half() for name, tensor in load_evaluator(shipped).model.state_dict().items()}


def image_ranking(
    ranker: torch.nn.Module,
    decode: Callable[[torch.Tensor], torch.Tensor],
    batch_size: int = 256,
    counter: ObjectCounter | None = None,
    mirror: bool = False,
) -> Callable[[torch.Tensor], Reading]:
    """Finished samples -> the ranker's per-object logits of their images (``decode`` turns latents into images)
    and, with the ranker's own object ``counter``, how many objects each image holds. With ``mirror`` both read
    each image and its mirror image and the two readings are averaged (a scene's objects are those of its mirror)."""
    device = next(ranker.parameters()).device

    @torch.no_grad()
    def read(samples: torch.Tensor) -> Reading:
        logits, objects = [], []
        for part in samples.split(batch_size):
            images = decode(part).clamp(-1, 1).to(device)
            views = (images, images.flip(-1)) if mirror else (images,)
            readings = [read_images(ranker, view, counter) for view in views]
            logits.append(sum(reading.logits for reading in readings) / len(readings))
            if counter is not None:
                objects.append(sum(reading.objects for reading in readings) / len(readings))
        return Reading(torch.cat(logits).to(samples.device), torch.cat(objects).to(samples.device) if counter else None)

    return read


def reward_loss(
    ranker: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    random: torch.Generator,
    counter: ObjectCounter | None = None,
    max_shift: int = 4,
) -> torch.Tensor:
    """The score best-of-K keeps candidates by, as a loss for a generator of ``images`` (N, 3, 64, 64) in [-1, 1],
    one per image (N,): -:func:`candidate_scores`, that is -log p(exactly the requested objects) under the ranker's
    per-object sigmoids plus ``COUNT_WEIGHT`` per object the counter finds off the requested number. Each image is
    read mirrored at even odds and shifted by up to ``max_shift`` pixels: the readers judge a scene, not one exact
    placement of its pixels, which a generator could learn to exploit. The gradient flows to ``images`` through
    both frozen readers."""
    reading = read_images(ranker, flip_and_shift(images, max_shift, random), counter)
    return -candidate_scores(reading, labels)


def read_images(ranker: torch.nn.Module, images: torch.Tensor, counter: ObjectCounter | None = None) -> Reading:
    """The ranker's per-object logits of ``images`` (N, 3, 64, 64) in [-1, 1] and, with its ``counter``, how many
    objects each holds, in float32. Differentiable in ``images``: a generator can learn from it
    (:mod:`condgen.gan.reward`)."""
    logits = evaluator_logits(ranker, images).float()
    objects = instance_counts(counter.model(images)).sum(dim=1) if counter is not None else None
    return Reading(logits, objects)
