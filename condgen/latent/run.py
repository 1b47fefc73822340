"""Loading a trained autoencoder run (vae or vqvae), frozen, for the latent models."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from condgen.device import resolve_device
from condgen.errors import CondgenError
from condgen.latent.autoencoder import Autoencoder
from condgen.latent.trainer import AutoencoderRunConfig
from condgen.train.checkpoint import load_module
from condgen.train.config import load_config
from condgen.train.runs import checkpoint_folder, read_run


class LatentModelConfig(Protocol):
    autoencoder: str  # the autoencoder run
    device: str


def frozen_autoencoder(config: LatentModelConfig) -> Autoencoder:
    """The autoencoder run that a latent model's new ``config.autoencoder`` names, frozen, on ``config.device``; the
    path is made absolute, so the run folder keeps working from another directory."""
    if not config.autoencoder:
        raise CondgenError("--autoencoder: required (a `condgen train vae` or `condgen train vqvae` run)")
    config.autoencoder = str(Path(config.autoencoder).resolve())
    return load_autoencoder(Path(config.autoencoder)).to(resolve_device(config.device))


def decoding_autoencoder(model: Path, config: LatentModelConfig) -> Autoencoder:
    """The autoencoder a trained latent model decodes through, on the model's device: ``config.autoencoder`` is
    relative to ``model`` in a folder written by `condgen export`, absolute in a training run."""
    return load_autoencoder(model / config.autoencoder).to(resolve_device(config.device))


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
