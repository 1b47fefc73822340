"""Training the ResNet18 evaluator on any i-CLEVR-format dataset, holding out whole scenes for validation."""

from __future__ import annotations

import math
import platform
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from condgen.data.iclevr import LabeledImages
from condgen.data.imageio import to_signed
from condgen.data.jsonio import write_json
from condgen.errors import CondgenError
from condgen.evaluate.evaluator import Evaluator, build_resnet18_evaluator, evaluator_logits, save_evaluator
from condgen.progress import progress_bar

# CLEVR_train_000123_2.png -> scene "CLEVR_train_000123": images of one scene share objects and must not be split.
_SCENE_PATTERN = re.compile(r"^(.*)_\d+\.[^.]+$")


@dataclass
class EvaluatorTrainConfig:
    epochs: int = 15
    batch_size: int = 128
    lr: float = 2e-3  # peak of a one-cycle schedule with AdamW
    weight_decay: float = 5e-4
    val_fraction: float = 0.1  # of scenes, not of images
    max_shift: int = 4  # random translation in pixels; horizontal flips are used too (both keep the labels)
    seed: int = 0


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


def train_evaluator(
    data: LabeledImages, out: Path, config: EvaluatorTrainConfig, half: bool = False, progress: bool = True
) -> dict:
    """Trains a ResNet18 evaluator; writes ``evaluator.safetensors`` and ``evaluator.json`` under ``out``.

    The weights are rewritten atomically after every epoch, so an interrupted run leaves the last finished epoch.
    Returns the report that is also written as JSON.
    """
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    train_idx, val_idx = split_by_scene(data.files, config.val_fraction, config.seed)
    val_images, val_labels = to_signed(data.images[val_idx]), data.labels[val_idx]
    model = build_resnet18_evaluator(len(data.codec)).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(train_idx) / config.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=config.epochs * steps_per_epoch, pct_start=0.15
    )
    report = {
        "architecture": "torchvision resnet18, fc = Sequential(Linear(512, C), Sigmoid())",
        "config": asdict(config),
        "objects": list(data.codec.names),
        "train_images": len(train_idx),
        "val_images": len(val_idx),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "epochs": [],
    }
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for epoch in range(config.epochs):
        model.train()
        order = train_idx[torch.randperm(len(train_idx), generator=generator)]
        bar = progress_bar(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{config.epochs}", enabled=progress)
        total_loss = 0.0
        for step in bar:
            batch = order[step * config.batch_size : (step + 1) * config.batch_size]
            x = augment(data.images[batch], config.max_shift, generator).contiguous(memory_format=torch.channels_last)
            loss = F.binary_cross_entropy_with_logits(evaluator_logits(model, x), data.labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total_loss += loss.item()
            bar.set_postfix(loss=f"{loss.item():.4f}")
        val_accuracy = Evaluator(model, data.codec).accuracy(val_images, val_labels)
        report["epochs"].append(
            {
                "epoch": epoch + 1,
                "train_loss": total_loss / steps_per_epoch,
                "val_accuracy": val_accuracy,
                "seconds": time.perf_counter() - start,
            }
        )
        if progress:
            tqdm.write(
                f"epoch {epoch + 1}: train loss {total_loss / steps_per_epoch:.4f}, held-out accuracy "
                f"{val_accuracy:.4f}"
            )
        save_evaluator(model, data.codec, out / "evaluator.safetensors", half=half)
        report["val_accuracy"] = val_accuracy
        report["train_seconds"] = time.perf_counter() - start
        write_json(out / "evaluator.json", report)
    return report
