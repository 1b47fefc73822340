"""The course's multi-label evaluator: a torchvision ResNet18 whose head is ``Sequential(Linear(512, C), Sigmoid())``.

Inputs are images normalised with mean = std = 0.5, i.e. float images in [-1, 1], the convention of every model here.
Two weight formats load: our safetensors files (the object vocabulary in the header metadata) and the course's
``checkpoint.pth`` (a dict whose ``model`` key holds the state dict), read with ``weights_only=True``.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import torch
import torchvision
from torchvision.models.resnet import BasicBlock, conv1x1

from condgen.data.labels import LabelCodec
from condgen.errors import CondgenError
from condgen.evaluate.counter import ObjectCounter, load_counter, shipped_counter_exists
from condgen.evaluate.metrics import count_scores, exact_sets, set_scores, top_k_accuracy
from condgen.tensorfile import read_tensors, save_tensors

SHIPPED_WEIGHTS = "iclevr_evaluator.safetensors"
RESNET18_WIDTH = 64  # torchvision's ResNet18: 64, 128, 256, 512 channels in its four stages


def build_resnet18_evaluator(num_classes: int = 24, width: int = RESNET18_WIDTH) -> torch.nn.Module:
    """ResNet18 (random init) with the course's sigmoid head. ``width`` is the first stage's channels, doubled at
    each of the four stages: 64 is torchvision's ResNet18 (the evaluator's); 32 has a quarter of its parameters (an
    image ranker that ships inside the package)."""
    model = torchvision.models.resnet18(weights=None)
    if width != RESNET18_WIDTH:
        _narrow(model, width)
    model.fc = torch.nn.Sequential(torch.nn.Linear(8 * width, num_classes), torch.nn.Sigmoid())
    return model


def _narrow(model: torchvision.models.ResNet, width: int) -> None:
    """Rebuilds ``model``'s stem and four stages of two basic blocks at ``width`` channels, initialised as
    torchvision initialises a ResNet (He-normal convolutions, batch norms at scale 1 and shift 0)."""
    model.conv1 = torch.nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
    model.bn1 = torch.nn.BatchNorm2d(width)
    inplanes = width
    for stage in range(4):
        planes, stride = width * 2**stage, 1 if stage == 0 else 2
        downsample = None
        if stride != 1 or inplanes != planes:
            downsample = torch.nn.Sequential(conv1x1(inplanes, planes, stride), torch.nn.BatchNorm2d(planes))
        blocks = torch.nn.Sequential(BasicBlock(inplanes, planes, stride, downsample), BasicBlock(planes, planes))
        setattr(model, f"layer{stage + 1}", blocks)
        inplanes = planes
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, torch.nn.BatchNorm2d):
            torch.nn.init.ones_(module.weight)
            torch.nn.init.zeros_(module.bias)


def resnet18_width(model: torch.nn.Module) -> int:
    """The first-stage width of a model :func:`build_resnet18_evaluator` built."""
    return model.conv1.out_channels


class Evaluator:
    """A trained evaluator and its vocabulary: scores, logits, 512-d features and the course's accuracy; with an
    object ``counter`` (:mod:`condgen.evaluate.counter`), also the count-aware rates."""

    def __init__(
        self, model: torch.nn.Module, codec: LabelCodec, batch_size: int = 256, counter: ObjectCounter | None = None
    ):
        self.model = model.eval()
        self.codec = codec
        self.batch_size = batch_size
        self.counter = counter

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, 64, 64) images in [-1, 1] -> (N, 512) pooled ResNet features (the Fréchet-distance space)."""
        return self._batched(images, lambda x: resnet_features(self.model, x))

    def scores(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, 64, 64) images in [-1, 1] -> (N, C) per-object probabilities."""
        return self._batched(images, self.model)

    def accuracy(self, images: torch.Tensor, multi_hot: torch.Tensor) -> float:
        """The course's top-k accuracy of ``images`` against the requested objects ``multi_hot``."""
        if len(images) != len(multi_hot):
            raise CondgenError(f"{len(images)} images but {len(multi_hot)} label lists: they must match one to one")
        return top_k_accuracy(self.scores(images), multi_hot)

    def measure(self, images: torch.Tensor, multi_hot: torch.Tensor, threshold: float = 0.5) -> dict[str, float]:
        """Top-k ``accuracy`` beside the exact-set rate and per-object precision and recall at ``threshold``
        (:func:`condgen.evaluate.metrics.set_scores`), from one pass of the evaluator; with a counter, also
        ``count_exact``, ``exact_scene`` and ``extra_objects`` (:func:`condgen.evaluate.metrics.count_scores`)."""
        if len(images) != len(multi_hot):
            raise CondgenError(f"{len(images)} images but {len(multi_hot)} label lists: they must match one to one")
        scores = self.scores(images)
        measured = {"accuracy": top_k_accuracy(scores, multi_hot), **set_scores(scores, multi_hot, threshold)}
        if self.counter is not None:
            exact = exact_sets(scores, multi_hot, threshold)
            measured |= count_scores(self.counter.totals(images), multi_hot, exact)
        return measured

    @torch.no_grad()
    def _batched(self, images: torch.Tensor, fn) -> torch.Tensor:
        device = next(self.model.parameters()).device
        outputs = [
            fn(images[i : i + self.batch_size].to(device, torch.float32)).float().cpu()
            for i in range(0, len(images), self.batch_size)
        ]
        return torch.cat(outputs)


def resnet_features(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The globally pooled features of a torchvision ResNet (512-d for ResNet18), i.e. everything before ``fc``."""
    x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    x = model.layer4(model.layer3(model.layer2(model.layer1(x))))
    return torch.flatten(model.avgpool(x), 1)


def evaluator_logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Pre-sigmoid outputs, for a numerically stable BCE-with-logits loss in training."""
    return model.fc[0](resnet_features(model, x))


def save_evaluator(
    model: torch.nn.Module, codec: LabelCodec, path: str | Path, half: bool = False, bits: int | None = None
) -> None:
    """Writes the weights as safetensors (float16 in byte planes if ``half``; with ``bits``, the convolution and
    linear weights as codes of that many bits per channel, for an image ranker: :mod:`condgen.tensorfile`) with the
    vocabulary in the header, atomically."""
    width = resnet18_width(model)
    architecture = "resnet18" if width == RESNET18_WIDTH else f"resnet18-width{width}"
    metadata = {"format": "condgen-evaluator", "architecture": architecture, "objects": json.dumps(list(codec.names))}
    save_tensors(model.state_dict(), Path(path), metadata, half, bits)


def load_evaluator(
    path: str | Path | None = None, device: str | torch.device = "cpu", counter: str | Path | None = None
) -> Evaluator:
    """Loads an evaluator: ``None`` for the shipped i-CLEVR one, a ``.safetensors`` file, or the course's ``.pth``;
    with the object counter ``counter`` (a file), or else the shipped one where the vocabulary is i-CLEVR's."""
    if path is None:
        with resources.as_file(resources.files("condgen.evaluate") / "weights" / SHIPPED_WEIGHTS) as shipped:
            return load_evaluator(shipped, device, counter)
    path = Path(path)
    if not path.is_file():
        raise CondgenError(f"{path}: evaluator checkpoint not found")
    if path.suffix == ".safetensors":
        state, codec = _read_safetensors(path)
    else:
        state, codec = _read_course_checkpoint(path), LabelCodec.iclevr()
    width = state["conv1.weight"].shape[0] if "conv1.weight" in state else RESNET18_WIDTH
    model = build_resnet18_evaluator(len(codec), width)
    try:
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CondgenError(f"{path}: not a ResNet18 evaluator for {len(codec)} objects ({first})") from None
    return Evaluator(model.to(device), codec, counter=_counter_for(codec, device, counter))


def _counter_for(codec: LabelCodec, device: str | torch.device, path: str | Path | None) -> ObjectCounter | None:
    """The counter given, or the shipped one for i-CLEVR's vocabulary; a counter must know the same objects."""
    if path is None and not (codec.names == LabelCodec.iclevr().names and shipped_counter_exists()):
        return None
    counter = load_counter(path, device)
    if counter.codec.names != codec.names:
        raise CondgenError(f"{path or 'the shipped counter'}: its objects differ from the evaluator's vocabulary")
    return counter


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], LabelCodec]:
    state, metadata = read_tensors(path)
    if "objects" not in metadata:
        raise CondgenError(f"{path}: no object vocabulary in the metadata; not a condgen evaluator")
    return state, LabelCodec(json.loads(metadata["objects"]))


def _read_course_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated, foreign or unsafe pickles
        raise CondgenError(f"{path}: cannot load checkpoint ({exc.__class__.__name__})") from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("model"), dict):
        raise CondgenError(f"{path}: expected the course format, a dict whose 'model' key holds the state dict")
    return checkpoint["model"]
