"""Training a conditional diffusion model with the shared loop, and generating from a trained run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from condgen.data.iclevr import LabeledImages, load_label_files, random_batch
from condgen.data.imageio import to_signed
from condgen.diffusion.guidance import guided_eps_fn
from condgen.diffusion.process import GaussianDiffusion, PosteriorVariance, Prediction
from condgen.diffusion.samplers import DEFAULT_STEPS, SAMPLERS, Callback, Spacing, bound
from condgen.diffusion.schedules import Schedule, make_betas
from condgen.diffusion.unet import NoisyClassifier, UNet, UNetConfig
from condgen.errors import CondgenError
from condgen.evaluate.evaluator import Evaluator
from condgen.evaluate.metrics import top_k_accuracy
from condgen.evaluate.training import split_by_scene
from condgen.train.loop import EMA, LoopConfig, optimise, resolve_device
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
class SampleConfig:
    sampler: str = "dpmpp"  # ddpm | ddim | dpmpp
    steps: int = 20  # ignored by ddpm, which always takes T steps
    guidance: float = 2.0  # classifier-free guidance scale s; 1 = none
    guidance_min_t: int = 0  # guidance (both kinds) only at steps t >= this; 0 = at every step
    eta: float = 0.0  # ddim and dpmpp: 0 = deterministic (the ODE), 1 = full noise (DDPM-like / the SDE)
    spacing: Spacing = Spacing.TRAILING  # leading | trailing | linspace | quadratic (ddim, dpmpp)
    seed: int = 0
    classifier_scale: float = 0.0  # classifier guidance strength; needs a noisy-classifier run at sampling time
    clip_x0: float = 1.0  # every x_0 prediction (and the result) is clamped to [-clip_x0, clip_x0]; 0 = never

    def __post_init__(self):
        if self.clip_x0 < 0:
            raise CondgenError(f"sample.clip_x0: a bound >= 0 (0 for none), got {self.clip_x0}")
        if not self.eta >= 0:
            raise CondgenError(f"sample.eta: a noise amount >= 0 (0 for none), got {self.eta}")
        if self.guidance_min_t < 0:
            raise CondgenError(f"sample.guidance_min_t: a step >= 0 (0 for every step), got {self.guidance_min_t}")


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
    bf16: bool = False  # forward and backward passes under bfloat16 autocast (GPU); weights and optimiser stay float32


@dataclass
class DDPMRunConfig:
    model: UNetConfig = field(default_factory=UNetConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)  # used by periodic evaluation and as defaults
    device: str = "auto"  # auto (cuda when available) | cpu | cuda | cuda:N


def check_sample_config(sample: SampleConfig, num_steps: int) -> None:
    """Rejects sample settings that a model with ``num_steps`` (T) noise levels cannot follow."""
    if sample.sampler != "ddpm" and sample.steps > num_steps:
        raise CondgenError(f"sample.steps (--steps): at most {num_steps}, the model's T; got {sample.steps}")
    if sample.guidance_min_t >= num_steps:
        raise CondgenError(
            f"sample.guidance_min_t (--guidance-min-t): below {num_steps}, the model's T; got {sample.guidance_min_t}"
        )


def generate(
    model: torch.nn.Module,
    diffusion: GaussianDiffusion,
    labels: torch.Tensor,
    sample: SampleConfig,
    callback: Callback = None,
    batch_size: int = 64,
    classifier: torch.nn.Module | None = None,
) -> torch.Tensor:
    """Samples for every row of ``labels``, within [-sample.clip_x0, sample.clip_x0] (images in [-1, 1] by default);
    the same seed gives the same samples. ``callback`` sees the starting noise (``i = -1``), then every sampler step."""
    if sample.sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sample.sampler!r}")
    check_sample_config(sample, diffusion.num_steps)
    generator = torch.Generator().manual_seed(sample.seed)
    device = next(model.parameters()).device
    size = model.config.image_size
    outputs = []
    for start in range(0, len(labels), batch_size):
        batch = labels[start : start + batch_size].to(device)
        x = torch.randn((len(batch), model.config.in_channels, size, size), generator=generator).to(device)
        if callback is not None:
            callback({"i": -1, "t": diffusion.num_steps, "x": x, "x0": None})  # the starting noise x_T
        eps_fn = guided_eps_fn(
            model, diffusion, batch, sample.guidance, classifier, sample.classifier_scale, sample.guidance_min_t
        )
        kwargs: dict = {"generator": generator, "callback": callback, "clip_x0": sample.clip_x0}
        if sample.sampler != "ddpm":
            steps = sample.steps or DEFAULT_STEPS[sample.sampler]
            kwargs |= {"steps": steps, "spacing": sample.spacing, "eta": sample.eta}
        x = SAMPLERS[sample.sampler](eps_fn, diffusion, x, **kwargs)
        outputs.append(bound(x, sample.clip_x0).cpu())
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
        check_sample_config(config.sample, self.diffusion.num_steps)  # before training, not at its first evaluation
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=config.optim.lr, weight_decay=config.optim.weight_decay
        )
        self.generator = torch.Generator().manual_seed(config.optim.seed)
        self.modules = {"model": self.model, "ema": self.ema.model}
        self.optimizers = {"optimizer": self.optimizer}
        self.generators = {"data": self.generator}
        self.all_index = torch.arange(len(data))
        self.label_files = load_label_files(data_root, data.codec)

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
        with torch.autocast(self.device.type, torch.bfloat16, enabled=o.bf16):
            loss = self.diffusion.training_loss(self.model, x0, labels, generator=self.generator)
        optimise(self.optimizer, self.model, loss, o, step)
        self.ema.update(self.model)
        return {"loss": loss.item()}

    def evaluate(self, step: int, run: Path) -> dict[str, float]:
        """Samples every label file with the EMA model, saves the grids, and scores them with the evaluator."""
        return score_label_files(
            self.label_files,
            self.sample,
            self.evaluator,
            step,
            run,
        )


@dataclass
class ClassifierRunConfig:
    """A noisy-image classifier for classifier guidance; its ``diffusion`` must match the guided model's."""

    model: UNetConfig = field(default_factory=lambda: UNetConfig(channels=32, channel_mults=(1, 2, 4)))
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(label_dropout=0.0))  # ema/label_dropout unused
    loop: LoopConfig = field(default_factory=LoopConfig)
    val_fraction: float = 0.05  # scenes held out to report accuracy at several noise levels
    device: str = "auto"


class ClassifierTask:
    """Trains :class:`NoisyClassifier` with BCE-with-logits on x_t at uniformly random t."""

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
        self.generators = {"data": self.generator}
        self.train_index, self.val_index = split_by_scene(data.files, config.val_fraction, config.optim.seed)

    def train_step(self, step: int) -> dict[str, float]:
        o = self.config.optim
        self.model.train()
        x0, labels = random_batch(self.data, self.train_index, o.batch_size, o.hflip, self.generator, self.device)
        t = torch.randint(0, self.diffusion.num_steps, (len(x0),), generator=self.generator).to(self.device)
        noise = torch.randn(x0.shape, generator=self.generator).to(x0)
        logits = self.model(self.diffusion.q_sample(x0, t, noise), t)
        loss = F.binary_cross_entropy_with_logits(logits, labels.to(self.device))
        optimise(self.optimizer, self.model, loss, o, step)
        return {"loss": loss.item()}

    @torch.no_grad()
    def evaluate(self, step: int, run: Path) -> dict[str, float]:
        """Top-k accuracy on held-out scenes noised to 0%, 25% and 50% of the way to pure noise."""
        self.model.eval()
        generator = torch.Generator().manual_seed(0)
        x0 = to_signed(self.data.images[self.val_index[:512]]).to(self.device)
        labels = self.data.labels[self.val_index[:512]]
        scores = {}
        for fraction in (0.0, 0.25, 0.5):
            t = torch.full((len(x0),), int(fraction * (self.diffusion.num_steps - 1)), device=self.device)
            noise = torch.randn(x0.shape, generator=generator).to(x0)
            logits = self.model(self.diffusion.q_sample(x0, t, noise), t)
            scores[f"accuracy_t{int(fraction * 100)}"] = top_k_accuracy(logits.cpu(), labels)
        scores["accuracy"] = sum(scores.values()) / len(scores)
        return scores
