"""Loading what a GAN run holds, for sampling."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from condgen.device import resolve_device
from condgen.gan.networks import FoldGenerator, Generator, build_generator
from condgen.gan.trainer import GANRunConfig, sample_images
from condgen.train.checkpoint import load_module
from condgen.train.config import load_config
from condgen.train.runs import checkpoint_folder


@dataclass
class GANModel:
    """A trained GAN run, ready to sample: its EMA generator, run config and run.json, and what turns the
    generator's output into images (nothing for a pixel GAN; the autoencoder's decoder for a latent GAN)."""

    generator: Generator | FoldGenerator
    config: GANRunConfig
    meta: dict
    decode: Callable[[torch.Tensor], torch.Tensor] = lambda x: x

    def sample(self, labels: torch.Tensor, seed: int) -> torch.Tensor:
        """Images in [-1, 1] for every row of ``labels``, with the noise of ``seed``."""
        return self.decode(sample_images(self.generator, labels, seed))


def load_gan(run: Path, checkpoint: str = "best", kind: str = "gan", config_class: type = GANRunConfig) -> GANModel:
    """The EMA generator of a gan run's ``best`` (or ``latest``) checkpoint, its config and run.json."""
    folder, meta = checkpoint_folder(run, kind, checkpoint)
    config = load_config(config_class, run / "config.yaml")
    generator = build_generator(config.model)
    load_module(generator, folder / "ema.safetensors")
    return GANModel(generator.eval().to(resolve_device(config.device)), config, meta)
