"""Training a VAE or VQ-VAE with the shared loop, scored by what latent diffusion needs from it: that the objects
survive the round trip through the latent."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from condgen.data.iclevr import LabeledImages, random_batch
from condgen.data.imageio import to_signed
from condgen.data.splits import split_by_scene
from condgen.device import resolve_device
from condgen.errors import CondgenError
from condgen.evaluate.evaluator import Evaluator
from condgen.latent.autoencoder import Autoencoder, AutoencoderConfig, PatchDiscriminator
from condgen.nn.adversarial import d_hinge, g_hinge
from condgen.train import distributed
from condgen.train.acceleration import Bf16, autocast, compile_in_place
from condgen.train.loop import LoopConfig, optimise
from condgen.viz.grid import save_grid


@dataclass
class AutoencoderOptimConfig:
    batch_size: int = 32
    lr: float = 5e-4
    warmup_steps: int = 100
    grad_clip: float = 1.0
    reconstruction: str = "l1"  # l1 | l2
    kl_weight: float = 1e-5  # VAE only: weight of the per-element KL term
    adversarial_weight: float = 0.0  # > 0 adds a PatchGAN hinge loss on reconstructions (VQGAN-style)
    adversarial_start: int = 2000  # step at which the adversarial loss switches on
    hflip: bool = True
    crop_size: int = 0  # > 0: train on random square crops of this side (the networks are fully convolutional)
    seed: int = 0
    bf16: Bf16 = False  # bfloat16 autocast of the forward passes: true, false or auto (condgen.train.acceleration)
    compile: str = ""  # torch.compile backend for the trained networks: "" = none, inductor (acceleration)


@dataclass
class AutoencoderRunConfig:
    model: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    optim: AutoencoderOptimConfig = field(default_factory=AutoencoderOptimConfig)
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(eval_every=500))
    val_fraction: float = 0.05  # whole scenes held out to measure reconstructions
    val_images: int = 512  # how many of them each evaluation reconstructs
    device: str = "auto"


RECONSTRUCTION_LOSSES = {"l1": F.l1_loss, "l2": F.mse_loss}


def psnr(reconstruction: torch.Tensor, original: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB of images in [-1, 1], on the [0, 1] scale: 10 log10(1 / MSE)."""
    mse = ((reconstruction.clamp(-1, 1) - original) / 2).pow(2).mean().item()
    return 10 * math.log10(1.0 / max(mse, 1e-12))


def random_crop(x: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """A random size x size window of every image of the batch (B, C, S, S)."""
    corners = torch.randint(0, x.shape[-1] - size + 1, (len(x), 2), generator=generator).tolist()
    return torch.stack([image[:, top : top + size, left : left + size] for image, (top, left) in zip(x, corners)])


class AutoencoderTask:
    """A :class:`condgen.train.loop.Task` for ``vae`` and ``vqvae`` runs."""

    def __init__(self, kind: str, config: AutoencoderRunConfig, data: LabeledImages, evaluator: Evaluator | None):
        factor = 2 ** (len(config.model.channel_mults) - 1)
        if config.optim.crop_size % factor or config.optim.crop_size > data.images.shape[-1]:
            raise CondgenError(f"optim.crop_size: a multiple of {factor} up to the image size, or 0")
        if config.optim.reconstruction not in RECONSTRUCTION_LOSSES:
            raise CondgenError(f"optim.reconstruction: expected l1 or l2, got {config.optim.reconstruction!r}")
        self.kind = kind
        config.model.vq = kind == "vqvae"
        config.model.in_channels = int(data.images.shape[1])
        config.model.image_size = int(data.images.shape[-1])
        self.config = config
        self.data = data
        self.evaluator = evaluator
        torch.manual_seed(config.optim.seed)
        self.device = resolve_device(config.device)
        self.model = Autoencoder(config.model).to(self.device)
        betas = (0.5, 0.9)  # the usual autoencoder/GAN setting (Esser et al. 2021)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.optim.lr, betas=betas)
        self.modules: dict[str, torch.nn.Module] = {"model": self.model}
        self.optimizers: dict[str, torch.optim.Optimizer] = {"optimizer": self.optimizer}
        self.discriminator = None
        if config.optim.adversarial_weight > 0:
            self.discriminator = PatchDiscriminator(config.model.in_channels).to(self.device)
            self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=config.optim.lr, betas=betas)
            self.modules["discriminator"] = self.discriminator
            self.optimizers["discriminator_optimizer"] = self.opt_d
        self.generator = torch.Generator().manual_seed(config.optim.seed)
        self.random_streams = {"data": self.generator}
        self.train_index, self.val_index = split_by_scene(data.files, config.val_fraction, config.optim.seed)
        self.train_index = distributed.shard(self.train_index)  # this rank's training images
        # what the training steps call (DDP under torchrun); the generator side of the adversarial loss calls the
        # plain discriminator, whose weights it does not train
        compile_in_place([m for m in (self.model, self.discriminator) if m is not None], config.optim.compile)
        self.train_model = distributed.wrap(self.model)
        self.train_discriminator = distributed.wrap(self.discriminator) if self.discriminator is not None else None

    def train_step(self, step: int) -> dict[str, float]:
        o = self.config.optim
        self.model.train()
        x, _ = random_batch(self.data, self.train_index, o.batch_size, o.hflip, self.generator, self.device)
        if o.crop_size:
            x = random_crop(x, o.crop_size, self.generator)
        with autocast(self.device, o.bf16):
            reconstruction, regulariser, _ = self.train_model(x)
            rec_loss = RECONSTRUCTION_LOSSES[o.reconstruction](reconstruction, x)
            weight = 1.0 if self.model.quantizer is not None else o.kl_weight  # the VQ loss carries its own beta
            loss = rec_loss + weight * regulariser
        losses = {"reconstruction": rec_loss.item(), "regulariser": regulariser.item()}
        adversarial = self.discriminator is not None and step >= o.adversarial_start
        if adversarial:
            self.discriminator.requires_grad_(False)
            with autocast(self.device, o.bf16):
                loss = loss + o.adversarial_weight * g_hinge(self.discriminator(reconstruction))
            self.discriminator.requires_grad_(True)
        optimise(self.optimizer, self.model, loss, o, step)
        if adversarial:
            with autocast(self.device, o.bf16):
                d_loss = d_hinge(self.train_discriminator(x), self.train_discriminator(reconstruction.detach()))
            optimise(self.opt_d, self.discriminator, d_loss, o, step - o.adversarial_start)
            losses["d_loss"] = d_loss.item()
        return losses

    @torch.no_grad()
    def evaluate(self, step: int, run: Path) -> dict[str, float]:
        """PSNR of held-out reconstructions; with an evaluator, its accuracy on them against its accuracy on the
        originals (top-k and exact-set); for a VQ-VAE, the share of codes in use and the code perplexity. ``accuracy``
        and ``exact_set`` (what best/ can be chosen by) are those of the reconstructions, or the PSNR without an
        evaluator."""
        self.model.eval()
        index = self.val_index[: self.config.val_images]
        x = to_signed(self.data.images[index]).to(self.device)
        reconstructions, codes = [], []
        for start in range(0, len(x), 128):
            reconstruction, _, code = self.model(x[start : start + 128])
            reconstructions.append(reconstruction.clamp(-1, 1))
            if code is not None:
                codes.append(code.flatten())
        reconstruction = torch.cat(reconstructions)
        save_grid(torch.cat([x[:16], reconstruction[:16]]).cpu(), run / "samples" / f"step-{step:07d}-recon.png")
        scores = {"psnr": psnr(reconstruction, x)}
        if codes:
            counts = torch.bincount(torch.cat(codes), minlength=self.config.model.codebook_size).float()
            p = counts / counts.sum()
            scores["codebook_usage"] = (counts > 0).float().mean().item()
            scores["code_perplexity"] = torch.exp(-(p[p > 0] * p[p > 0].log()).sum()).item()
        if self.evaluator is not None:
            labels = self.data.labels[index]
            originals = self.evaluator.measure(x.cpu(), labels)
            reconstructions = self.evaluator.measure(reconstruction.cpu(), labels)
            scores["accuracy_originals"] = originals["accuracy"]
            scores["accuracy_reconstructions"] = reconstructions["accuracy"]
            scores["accuracy_ratio"] = scores["accuracy_reconstructions"] / max(scores["accuracy_originals"], 1e-8)
            scores["exact_set_originals"] = originals["exact_set"]
            scores["exact_set_reconstructions"] = reconstructions["exact_set"]
        scores["accuracy"] = scores.get("accuracy_reconstructions", scores["psnr"])
        scores["exact_set"] = scores.get("exact_set_reconstructions", scores["psnr"])
        return scores


def make_vae_task(
    config: AutoencoderRunConfig, data: LabeledImages, data_root: Path, evaluator: Evaluator | None
) -> AutoencoderTask:
    """The ``vae`` task: a KL-regularised autoencoder."""
    return AutoencoderTask("vae", config, data, evaluator)


def make_vqvae_task(
    config: AutoencoderRunConfig, data: LabeledImages, data_root: Path, evaluator: Evaluator | None
) -> AutoencoderTask:
    """The ``vqvae`` task: a vector-quantised autoencoder."""
    return AutoencoderTask("vqvae", config, data, evaluator)
