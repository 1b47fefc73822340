"""Loading what a GAN run holds, for sampling."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from condgen.device import resolve_device
from condgen.gan.networks import ConditionedCritic, FoldGenerator, Generator, build_discriminator, build_generator
from condgen.gan.sampling import sample_images
from condgen.gan.trainer import GANRunConfig
from condgen.train.checkpoint import load_module
from condgen.train.config import load_config
from condgen.train.runs import checkpoint_folder

CRITIC_FILE = "critic.safetensors"


@dataclass
class GANModel:
    """A trained GAN run, ready to sample: its EMA generator, run config and run.json, what turns the generator's
    output into images (nothing for a pixel GAN; the autoencoder's decoder for a latent GAN), and the critic when
    it has an auxiliary head to rank candidates with (``candidates`` > 1)."""

    generator: Generator | FoldGenerator
    config: GANRunConfig
    meta: dict
    decode: Callable[[torch.Tensor], torch.Tensor] = lambda x: x
    critic: ConditionedCritic | None = None

    def sample(self, labels: torch.Tensor, seed: int, candidates: int | None = None) -> torch.Tensor:
        """Images in [-1, 1] for every row of ``labels``, with the noise of ``seed``, each the best of
        ``candidates`` (default: the run's ``candidates``)."""
        candidates = self.config.candidates if candidates is None else candidates
        return self.decode(sample_images(self.generator, labels, seed, critic=self.critic, candidates=candidates))


def load_gan(run: Path, checkpoint: str = "best", kind: str = "gan", config_class: type = GANRunConfig) -> GANModel:
    """The EMA generator of a gan run's ``best`` (or ``latest``) checkpoint, its config and run.json, and its
    critic where the checkpoint holds one with an auxiliary head."""
    folder, meta = checkpoint_folder(run, kind, checkpoint)
    config = load_config(config_class, run / "config.yaml")
    device = resolve_device(config.device)
    generator = build_generator(config.model)
    load_module(generator, folder / "ema.safetensors")
    critic = None
    if config.model.auxiliary_head and (folder / CRITIC_FILE).is_file():
        critic = build_discriminator(config.model)
        load_module(critic, folder / CRITIC_FILE)
        critic = critic.eval().to(device)
    return GANModel(generator.eval().to(device), config, meta, critic=critic)
