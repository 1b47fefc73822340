"""Training a conditional diffusion model (pixel space) with the shared loop: its run config and its task."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from condgen.data.iclevr import LabeledImages, load_label_files, random_batch, selection_labels
from condgen.device import resolve_device
from condgen.diffusion.process import GaussianDiffusion, PosteriorVariance, Prediction
from condgen.diffusion.sampling import SampleConfig, generate
from condgen.diffusion.schedules import Schedule, make_betas
from condgen.diffusion.unet import UNet, UNetConfig
from condgen.evaluate.evaluator import Evaluator
from condgen.train import distributed
from condgen.train.acceleration import Bf16, autocast, compile_in_place
from condgen.train.loop import EMA, LoopConfig, optimise
from condgen.train.scoring import score_label_files


@dataclass
class DiffusionConfig:
    schedule: Schedule = Schedule.COSINE  # linear | cosine | cosine_beta
    num_steps: int = 1000  # T
    prediction: Prediction = Prediction.EPSILON  # epsilon | v
    variance: PosteriorVariance = PosteriorVariance.BETA  # beta | beta_tilde (DDPM sampling only)
    min_snr_gamma: float = 0.0  # Min-SNR loss weighting (Hang et al. 2023), e.g. 5; 0 = the plain simple loss

    def build(self) -> GaussianDiffusion:
        betas = make_betas(self.schedule, self.num_steps)
        return GaussianDiffusion(betas, self.prediction, self.variance, self.min_snr_gamma)


@dataclass
class OptimConfig:
    batch_size: int = 32
    lr: float = 3e-4
    warmup_steps: int = 200
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    label_dropout: float = 0.1  # probability of training on the zero vector (classifier-free guidance)
    hflip: bool = True  # mirror images: the objects stay the same
    seed: int = 0
    bf16: Bf16 = False  # bfloat16 autocast of the forward passes: true, false or auto (condgen.train.acceleration)
    compile: str = ""  # torch.compile backend for the trained network: "" = none, inductor (acceleration)


@dataclass
class DDPMRunConfig:
    model: UNetConfig = field(default_factory=UNetConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)  # used by periodic evaluation and as defaults
    device: str = "auto"  # auto (cuda when available) | cpu | cuda | cuda:N


class DiffusionTask:
    """A :class:`condgen.train.loop.Task` for the pixel-space conditional DDPM."""

    kind = "ddpm"

    def __init__(self, config: DDPMRunConfig, data: LabeledImages, data_root: Path, evaluator: Evaluator | None):
        self.config = config
        self.data = data
        self.evaluator = evaluator
        torch.manual_seed(config.optim.seed)
        self.device = resolve_device(config.device)
        self.model = UNet(config.model).to(self.device)
        self.ema = EMA(self.model, config.optim.ema_decay)
        self.diffusion = config.diffusion.build()
        config.sample.check(self.diffusion.num_steps)  # before training, not at its first evaluation
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=config.optim.lr, weight_decay=config.optim.weight_decay
        )
        self.generator = torch.Generator().manual_seed(config.optim.seed)
        compile_in_place([self.model], config.optim.compile)
        self.train_model = distributed.wrap(self.model)  # what the training steps call (DDP under torchrun)
        self.modules = {"model": self.model, "ema": self.ema.model}
        self.optimizers = {"optimizer": self.optimizer}
        self.random_streams = {"data": self.generator}
        self.all_index = distributed.shard(torch.arange(len(data)))  # this rank's training images
        self.label_files = load_label_files(data_root, data.codec)
        self.selection = selection_labels(data.labels)

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Clean training samples x_0 on the device and their labels (CPU)."""
        o = self.config.optim
        return random_batch(self.data, self.all_index, o.batch_size, o.hflip, self.generator, self.device)

    def sample(self, labels: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] from the EMA model with the run's sampling settings."""
        return generate(self.ema.model, self.diffusion, labels, self.config.sample)

    def train_step(self, step: int) -> dict[str, float]:
        o = self.config.optim
        self.model.train()
        x0, labels = self.batch()
        labels[torch.rand(len(labels), generator=self.generator) < o.label_dropout] = 0.0
        labels = labels.to(self.device)
        with autocast(self.device, o.bf16):
            loss = self.diffusion.training_loss(self.train_model, x0, labels, generator=self.generator)
        optimise(self.optimizer, self.model, loss, o, step)
        self.ema.update(self.model)
        return {"loss": loss.item()}

    def evaluate(self, step: int, run: Path) -> dict[str, float]:
        """Samples the selection requests and every label file with the EMA model, saves the grids, and scores them."""
        return score_label_files(self.selection, self.label_files, self.sample, self.evaluator, step, run)
