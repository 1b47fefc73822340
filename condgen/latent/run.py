"""Loading an autoencoder run, and a latent-diffusion run with the autoencoder it was trained on."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from condgen.diffusion.process import GaussianDiffusion
from condgen.diffusion.run import load_ema_unet
from condgen.diffusion.unet import UNet
from condgen.errors import CondgenError
from condgen.latent.autoencoder import Autoencoder
from condgen.latent.ldm import LDMRunConfig, decode_latents
from condgen.latent.trainer import AutoencoderRunConfig
from condgen.runs import checkpoint_folder, read_run
from condgen.train.checkpoint import load_module
from condgen.train.config import load_config
from condgen.train.loop import resolve_device


def load_autoencoder(run: Path, checkpoint: str = "best") -> Autoencoder:
    """The trained VAE or VQ-VAE of a ``vae``/``vqvae`` run, frozen, in eval mode."""
    kind = read_run(run).get("kind")
    if kind not in ("vae", "vqvae"):
        raise CondgenError(f"{run}: a {kind} run; --autoencoder needs a vae or vqvae run")
    folder, _ = checkpoint_folder(run, kind, checkpoint)
    config = load_config(AutoencoderRunConfig, run / "config.yaml")
    model = Autoencoder(config.model)
    load_module(model, folder / "model.safetensors")
    return model.eval().requires_grad_(False).to(resolve_device(config.device))


def load_ldm(
    run: Path, checkpoint: str = "best"
) -> tuple[UNet, GaussianDiffusion, LDMRunConfig, dict, Callable[[torch.Tensor], torch.Tensor]]:
    """The EMA UNet of an ``ldm`` run, its process, config, run.json and the function that decodes its latents."""
    model, diffusion, config, meta = load_ema_unet(run, "ldm", LDMRunConfig, checkpoint)
    autoencoder = load_autoencoder(Path(config.autoencoder)).to(resolve_device(config.device))
    return model, diffusion, config, meta, lambda latents: decode_latents(autoencoder, latents, config.scale_factor)
