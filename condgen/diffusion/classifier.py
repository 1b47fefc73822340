"""A multi-label classifier of noisy images x_t, trained for classifier guidance (Dhariwal & Nichol 2021)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from condgen.data.iclevr import LabeledImages, random_batch
from condgen.data.imageio import to_signed
from condgen.data.splits import split_by_scene
from condgen.device import resolve_device
from condgen.diffusion.trainer import DiffusionConfig, OptimConfig
from condgen.diffusion.unet import NoisyClassifier, UNetConfig
from condgen.errors import CondgenError
from condgen.evaluate.evaluator import Evaluator
from condgen.evaluate.metrics import set_scores, top_k_accuracy
from condgen.train import distributed
from condgen.train.acceleration import autocast, compile_in_place
from condgen.train.loop import LoopConfig, optimise


@dataclass
class ClassifierRunConfig:
    """A noisy-image classifier for classifier guidance; its ``diffusion`` must match the guided model's."""

    model: UNetConfig = field(default_factory=lambda: UNetConfig(channels=32, channel_mults=(1, 2, 4)))
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(label_dropout=0.0))  # ema/label_dropout unused
    loop: LoopConfig = field(default_factory=LoopConfig)
    val_fraction: float = 0.05  # scenes held out to report accuracy at several noise levels
    # noise levels drawn as t = floor(T u^p), u uniform: p = 1 draws every t alike, p > 1 favours the low-noise
    # end, where a classifier that also ranks finished samples (at t = 0) must be sharpest
    t_power: float = 1.0
    device: str = "auto"

    def __post_init__(self):
        if not self.t_power > 0:
            raise CondgenError(f"t_power: a power > 0 (1 draws every noise level alike), got {self.t_power}")


class ClassifierTask:
    """Trains :class:`NoisyClassifier` with BCE-with-logits on x_t at random t (:func:`noise_levels`)."""

    kind = "noisy_classifier"

    def __init__(self, config: ClassifierRunConfig, data: LabeledImages):
        self.config = config
        self.data = data
        torch.manual_seed(config.optim.seed)
        self.device = resolve_device(config.device)
        self.model = NoisyClassifier(config.model).to(self.device)
        self.diffusion = config.diffusion.build()
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=config.optim.lr, weight_decay=config.optim.weight_decay
        )
        self.generator = torch.Generator().manual_seed(config.optim.seed)
        self.modules = {"model": self.model}
        self.optimizers = {"optimizer": self.optimizer}
        self.random_streams = {"data": self.generator}
        self.train_index, self.val_index = split_by_scene(data.files, config.val_fraction, config.optim.seed)
        self.train_index = distributed.shard(self.train_index)  # this rank's training images
        compile_in_place([self.model], config.optim.compile)
        self.train_model = distributed.wrap(self.model)  # what the training steps call (DDP under torchrun)

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """A random training batch of clean images x_0 on the device and their labels."""
        o = self.config.optim
        return random_batch(self.data, self.train_index, o.batch_size, o.hflip, self.generator, self.device)

    def held_out(self, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``count`` held-out images x_0 on the device and their labels."""
        index = self.val_index[:count]
        return to_signed(self.data.images[index]).to(self.device), self.data.labels[index]

    def train_step(self, step: int) -> dict[str, float]:
        o = self.config.optim
        self.model.train()
        x0, labels = self.batch()
        t = noise_levels(len(x0), self.diffusion.num_steps, self.config.t_power, self.generator).to(self.device)
        noise = torch.randn(x0.shape, generator=self.generator).to(x0)
        with autocast(self.device, o.bf16):
            logits = self.train_model(self.diffusion.q_sample(x0, t, noise), t)
            loss = F.binary_cross_entropy_with_logits(logits, labels.to(self.device))
        optimise(self.optimizer, self.model, loss, o, step)
        return {"loss": loss.item()}

    @torch.no_grad()
    def evaluate(self, step: int, run: Path) -> dict[str, float]:
        """Top-k accuracy and the exact-set rate (sigmoid of the logits above 0.5) on held-out scenes noised to 0%,
        25% and 50% of the way to pure noise, and their means over the three levels."""
        self.model.eval()
        generator = torch.Generator().manual_seed(0)
        x0, labels = self.held_out(512)
        scores = {}
        for fraction in (0.0, 0.25, 0.5):
            t = torch.full((len(x0),), int(fraction * (self.diffusion.num_steps - 1)), device=self.device)
            noise = torch.randn(x0.shape, generator=generator).to(x0)
            logits = self.model(self.diffusion.q_sample(x0, t, noise), t)
            scores[f"accuracy_t{int(fraction * 100)}"] = top_k_accuracy(logits.cpu(), labels)
            scores[f"exact_set_t{int(fraction * 100)}"] = set_scores(logits.sigmoid().cpu(), labels)["exact_set"]
        for key in ("accuracy", "exact_set"):
            levels = [value for name, value in scores.items() if name.startswith(f"{key}_t")]
            scores[key] = sum(levels) / len(levels)
        return scores


def noise_levels(count: int, num_steps: int, power: float, generator: torch.Generator) -> torch.Tensor:
    """``count`` time steps floor(T u^power) for u uniform on [0, 1): uniform over 0..T-1 at power 1 (the draw is
    then torch.randint's, as before the option existed), denser near 0 above it."""
    if power == 1.0:
        return torch.randint(0, num_steps, (count,), generator=generator)
    u = torch.rand(count, generator=generator)
    return (u**power * num_steps).long().clamp(max=num_steps - 1)


def make_classifier_task(
    config: ClassifierRunConfig, data: LabeledImages, data_root: Path, evaluator: Evaluator | None
) -> ClassifierTask:
    """The ``noisy_classifier`` task; it scores itself on held-out scenes, so it needs no label files or
    evaluator."""
    return ClassifierTask(config, data)
