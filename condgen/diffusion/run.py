"""Loading what a diffusion run or a noisy-classifier run holds, for sampling."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from condgen.device import resolve_device
from condgen.diffusion.classifier import ClassifierRunConfig
from condgen.diffusion.process import GaussianDiffusion
from condgen.diffusion.trainer import DDPMRunConfig, DiffusionConfig
from condgen.diffusion.unet import NoisyClassifier, UNet
from condgen.errors import CondgenError
from condgen.evaluate.counter import ObjectCounter
from condgen.evaluate.ranker import image_ranking, load_own_rankers
from condgen.nn.ranking import Reading
from condgen.train.checkpoint import load_module
from condgen.train.config import load_config
from condgen.train.runs import checkpoint_folder


def _images(x: torch.Tensor) -> torch.Tensor:
    return x


@dataclass
class DiffusionModel:
    """A trained diffusion run, ready to sample: its EMA network, noise process, run config and run.json, and
    ``decode``, which turns what the sampler makes into images (the autoencoder's decoder for latent runs)."""

    model: UNet
    diffusion: GaussianDiffusion
    config: Any
    meta: dict
    decode: Callable[[torch.Tensor], torch.Tensor] = _images
    classifier: NoisyClassifier | None = None  # a model folder's own, for guidance and ranking (``classifier/``)
    ranker: torch.nn.Module | None = None  # a model folder's own image ranker (``ranker.safetensors``)
    ranker_counter: ObjectCounter | None = None  # ... and the object counter it ranks with (``ranker_counter...``)

    def ranking(self) -> Callable[[torch.Tensor], Reading] | None:
        """The image ranker's reading of finished samples (decoded first): per-object logits and, with the ranker's
        own counter, object counts; None without a ranker."""
        if self.ranker is None:
            return None
        return image_ranking(self.ranker, self.decode, counter=self.ranker_counter)

    def load_own_ranker(self, folder: Path) -> None:
        """The model folder's ranker and its counter, when it holds them."""
        device = next(self.model.parameters()).device
        self.ranker, self.ranker_counter = load_own_rankers(folder, self.meta["objects"], device)


def load_ema_unet(run: Path, kind: str, config_class: type, checkpoint: str) -> DiffusionModel:
    """The EMA UNet of a run of ``kind`` (ddpm or ldm), its process, config (a ``config_class``) and run.json."""
    folder, meta = checkpoint_folder(run, kind, checkpoint)
    config = load_config(config_class, run / "config.yaml")
    model = UNet(config.model)
    load_module(model, folder / "ema.safetensors")
    return DiffusionModel(model.eval().to(resolve_device(config.device)), config.diffusion.build(), config, meta)


CLASSIFIER_FOLDER = "classifier"  # a model folder's own noisy classifier (`condgen export --classifier RUN`)


def load_ddpm(run: Path, checkpoint: str = "best") -> DiffusionModel:
    """The EMA model of a ddpm run's ``best`` (or ``latest``) checkpoint, with its process, config and run.json,
    and the noisy classifier and image ranker of a model folder that holds them."""
    loaded = load_ema_unet(run, "ddpm", DDPMRunConfig, checkpoint)
    if (run / CLASSIFIER_FOLDER).is_dir():
        loaded.classifier = load_classifier(run / CLASSIFIER_FOLDER, loaded.config.diffusion)[0]
    loaded.load_own_ranker(run)
    return loaded


def load_classifier(
    run: Path,
    diffusion_config: DiffusionConfig,
    kind: str = "noisy_classifier",
    config_class: type = ClassifierRunConfig,
) -> tuple[NoisyClassifier, Any]:
    """A trained noisy classifier of ``kind`` and its config (a ``config_class``), checked to share the guided
    model's noise schedule."""
    folder, _ = checkpoint_folder(run, kind, "best")
    config = load_config(config_class, run / "config.yaml")
    same_noise = (config.diffusion.schedule, config.diffusion.num_steps) == (
        diffusion_config.schedule,
        diffusion_config.num_steps,
    )
    if not same_noise:
        raise CondgenError(f"{run}: the classifier was trained on another noise schedule than the diffusion run")
    model = NoisyClassifier(config.model)
    load_module(model, folder / "model.safetensors")
    return model.eval().requires_grad_(False).to(resolve_device(config.device)), config
