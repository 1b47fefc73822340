"""Loading what a diffusion run or a noisy-classifier run holds, for sampling."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from condgen.diffusion.process import GaussianDiffusion
from condgen.diffusion.trainer import ClassifierRunConfig, DDPMRunConfig
from condgen.diffusion.unet import NoisyClassifier, UNet
from condgen.errors import CondgenError
from condgen.runs import checkpoint_folder
from condgen.train.checkpoint import load_module
from condgen.train.config import load_config
from condgen.train.loop import resolve_device


def load_run(run: Path, checkpoint: str = "best") -> tuple[UNet, GaussianDiffusion, DDPMRunConfig, dict]:
    """The EMA model of a ddpm run's ``best`` (or ``latest``) checkpoint, its process, config and metadata."""
    return load_ema_unet(run, "ddpm", DDPMRunConfig, checkpoint)


def load_ema_unet(
    run: Path, kind: str, config_class: type, checkpoint: str
) -> tuple[UNet, GaussianDiffusion, Any, dict]:
    """The EMA UNet of a run of ``kind`` (ddpm or ldm), its process, config (a ``config_class``) and run.json."""
    folder, meta = checkpoint_folder(run, kind, checkpoint)
    config = load_config(config_class, run / "config.yaml")
    model = UNet(config.model)
    load_module(model, folder / "ema.safetensors")
    return model.eval().to(resolve_device(config.device)), config.diffusion.build(), config, meta


def load_classifier(run: Path, diffusion_config) -> NoisyClassifier:
    """A trained noisy classifier, checked to share the guided model's noise schedule."""
    folder, _ = checkpoint_folder(run, "noisy_classifier", "best")
    config = load_config(ClassifierRunConfig, run / "config.yaml")
    same_noise = (config.diffusion.schedule, config.diffusion.num_steps) == (
        diffusion_config.schedule,
        diffusion_config.num_steps,
    )
    if not same_noise:
        raise CondgenError(f"{run}: the classifier was trained on another noise schedule than the diffusion run")
    model = NoisyClassifier(config.model)
    load_module(model, folder / "model.safetensors")
    return model.eval().to(resolve_device(config.device))
