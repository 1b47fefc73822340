"""Loading a trained autoencoder run (vae or vqvae), frozen, for latent diffusion."""

from __future__ import annotations

from pathlib import Path

from condgen.device import resolve_device
from condgen.errors import CondgenError
from condgen.latent.autoencoder import Autoencoder
from condgen.latent.trainer import AutoencoderRunConfig
from condgen.train.checkpoint import load_module
from condgen.train.config import load_config
from condgen.train.runs import checkpoint_folder, read_run


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
