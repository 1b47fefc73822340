"""Loading what a GAN run holds, for sampling."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from condgen.device import resolve_device
from condgen.evaluate.counter import ObjectCounter
from condgen.evaluate.ranker import image_ranking, load_own_rankers
from condgen.gan.networks import ConditionedCritic, FoldGenerator, Generator, build_discriminator, build_generator
from condgen.gan.sampling import sample_images
from condgen.gan.trainer import GANRunConfig
from condgen.nn.ranking import Reading
from condgen.train.checkpoint import load_module
from condgen.train.config import load_config
from condgen.train.runs import checkpoint_folder

CRITIC_FILE = "critic.safetensors"


@dataclass
class GANModel:
    """A trained GAN run, ready to sample: its EMA generator, run config and run.json, what turns the generator's
    output into images (nothing for a pixel GAN; the autoencoder's decoder for a latent GAN), and what ranks
    candidates (``candidates`` > 1): a model folder's image ranker and its counter where it holds them, else the
    critic when it has an auxiliary head."""

    generator: Generator | FoldGenerator
    config: GANRunConfig
    meta: dict
    decode: Callable[[torch.Tensor], torch.Tensor] = lambda x: x
    critic: ConditionedCritic | None = None
    ranker: torch.nn.Module | None = None  # a model folder's own image ranker (``ranker.safetensors``)
    ranker_counter: ObjectCounter | None = None  # ... and its object counter (``ranker_counter.safetensors``)

    def sample(self, labels: torch.Tensor, seed: int, candidates: int | None = None) -> torch.Tensor:
        """Images in [-1, 1] for every row of ``labels``, with the noise of ``seed``, each the best of
        ``candidates`` (default: the run's ``candidates``)."""
        candidates = self.config.candidates if candidates is None else candidates
        ranking = self.ranking()
        return self.decode(
            sample_images(self.generator, labels, seed, critic=self.critic, candidates=candidates, ranking=ranking)
        )

    def ranking(self) -> Callable[[torch.Tensor], Reading] | None:
        """The image ranker's reading of generator outputs (decoded first), or None without a ranker."""
        if self.ranker is None:
            return None
        return image_ranking(self.ranker, self.decode, counter=self.ranker_counter)

    def load_own_ranker(self, folder: Path) -> None:
        """A model folder's image ranker and its counter, when it holds them."""
        device = next(self.generator.parameters()).device
        self.ranker, self.ranker_counter = load_own_rankers(folder, self.meta["objects"], device)


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
    loaded = GANModel(generator.eval().to(device), config, meta, critic=critic)
    loaded.load_own_ranker(run)
    return loaded
