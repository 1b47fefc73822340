"""Training a conditional diffusion model with the shared loop, and generating from a trained run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from condgen.data.iclevr import LABEL_FILES, LabeledImages, load_label_file
from condgen.data.imageio import to_signed
from condgen.diffusion.guidance import guided_eps_fn
from condgen.diffusion.process import GaussianDiffusion, PosteriorVariance, Prediction
from condgen.diffusion.samplers import DEFAULT_STEPS, SAMPLERS, Callback, Spacing
from condgen.diffusion.schedules import Schedule, make_betas
from condgen.diffusion.unet import UNet, UNetConfig
from condgen.evaluate.evaluator import Evaluator
from condgen.train.loop import EMA, LoopConfig
from condgen.viz.grid import save_grid


@dataclass
class DiffusionConfig:
    schedule: Schedule = Schedule.COSINE  # linear | cosine | cosine_beta
    num_steps: int = 1000  # T
    prediction: Prediction = Prediction.EPSILON  # epsilon | v
    variance: PosteriorVariance = PosteriorVariance.BETA  # beta | beta_tilde (DDPM sampling only)

    def build(self) -> GaussianDiffusion:
        return GaussianDiffusion(make_betas(self.schedule, self.num_steps), self.prediction, self.variance)


@dataclass
class SampleConfig:
    sampler: str = "dpmpp"  # ddpm | ddim | dpmpp
    steps: int = 20  # ignored by ddpm, which always takes T steps
    guidance: float = 2.0  # classifier-free guidance scale s; 1 = none
    eta: float = 0.0  # ddim only
    spacing: Spacing = Spacing.TRAILING  # leading | trailing | linspace
    seed: int = 0


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


@dataclass
class DDPMRunConfig:
    model: UNetConfig = field(default_factory=UNetConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)  # used by periodic evaluation and as defaults
    device: str = "auto"  # auto (cuda when available) | cpu | cuda | cuda:N


def resolve_device(name: str) -> torch.device:
    return torch.device("cuda" if name == "auto" and torch.cuda.is_available() else "cpu" if name == "auto" else name)


def generate(
    model: torch.nn.Module,
    diffusion: GaussianDiffusion,
    labels: torch.Tensor,
    sample: SampleConfig,
    callback: Callback = None,
    batch_size: int = 64,
) -> torch.Tensor:
    """Images in [-1, 1] for every row of ``labels``; the same seed gives the same images. ``callback`` sees the
    starting noise (``i = -1``) and then every sampler step."""
    if sample.sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sample.sampler!r}")
    generator = torch.Generator().manual_seed(sample.seed)
    device = next(model.parameters()).device
    size = model.config.image_size
    outputs = []
    for start in range(0, len(labels), batch_size):
        batch = labels[start : start + batch_size].to(device)
        x = torch.randn((len(batch), model.config.in_channels, size, size), generator=generator).to(device)
        if callback is not None:
            callback({"i": -1, "t": diffusion.num_steps, "x": x, "x0": None})  # the starting noise x_T
        eps_fn = guided_eps_fn(model, diffusion, batch, guidance_scale=sample.guidance)
        kwargs: dict = {"generator": generator, "callback": callback}
        if sample.sampler != "ddpm":
            kwargs |= {"steps": sample.steps or DEFAULT_STEPS[sample.sampler], "spacing": sample.spacing}
        if sample.sampler == "ddim":
            kwargs["eta"] = sample.eta
        outputs.append(SAMPLERS[sample.sampler](eps_fn, diffusion, x, **kwargs).clamp(-1, 1).cpu())
    return torch.cat(outputs)


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
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=config.optim.lr, weight_decay=config.optim.weight_decay
        )
        self.generator = torch.Generator().manual_seed(config.optim.seed)
        self.modules = {"model": self.model, "ema": self.ema.model}
        self.optimizers = {"optimizer": self.optimizer}
        self.generators = {"data": self.generator}
        self.label_files = {
            name: load_label_file(data_root / name, data.codec) for name in LABEL_FILES if (data_root / name).exists()
        }

    def train_step(self, step: int) -> dict[str, float]:
        o = self.config.optim
        self.model.train()
        index = torch.randint(0, len(self.data), (o.batch_size,), generator=self.generator)
        x0 = to_signed(self.data.images[index]).to(self.device)
        if o.hflip:
            flip = torch.rand(len(x0), generator=self.generator) < 0.5
            x0 = torch.where(flip[:, None, None, None].to(self.device), x0.flip(-1), x0)
        labels = self.data.labels[index].clone()
        labels[torch.rand(len(labels), generator=self.generator) < o.label_dropout] = 0.0
        labels = labels.to(self.device)
        for group in self.optimizer.param_groups:  # linear warm-up, then constant
            group["lr"] = o.lr * min(1.0, (step + 1) / max(1, o.warmup_steps))
        loss = self.diffusion.training_loss(self.model, x0, labels, generator=self.generator)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if o.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), o.grad_clip)
        self.optimizer.step()
        self.ema.update(self.model)
        return {"loss": loss.item()}

    def evaluate(self, step: int, run: Path) -> dict[str, float]:
        """Samples every label file with the EMA model, saves the grids, and scores them with the evaluator."""
        scores = {}
        for name, labels in self.label_files.items():
            images = generate(self.ema.model, self.diffusion, labels, self.config.sample)
            save_grid(images, run / "samples" / f"step-{step:07d}-{Path(name).stem}.png")
            if self.evaluator is not None:
                scores[f"accuracy_{Path(name).stem}"] = self.evaluator.accuracy(images, labels)
        per_file = [v for k, v in scores.items() if k.startswith("accuracy_")]
        scores["accuracy"] = sum(per_file) / len(per_file) if per_file else 0.0
        return scores
