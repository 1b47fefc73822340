"""A conditional GAN in a frozen autoencoder's latent space: the generator makes 16x16 latents, the discriminator
judges latents, and images are the autoencoder's decoding of the generator's output.

Everything but the data is the pixel GAN's (losses, conditioning, augmentation, the EMA, the loop); the s2d nets
run on the latent as it is, where they would otherwise fold 64x64 images to and from 16x16. The decoder already
knows how an object looks, so the adversarial game is played over where objects go and which ones they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from condgen.data.iclevr import LabeledImages
from condgen.errors import CondgenError
from condgen.evaluate.evaluator import Evaluator
from condgen.gan import warm_start
from condgen.gan.options import Architecture
from condgen.gan.run import GANModel, load_gan
from condgen.gan.trainer import GANRunConfig, GANTask
from condgen.latent.autoencoder import Autoencoder
from condgen.latent.latents import decode_latents, mirrored_batch, scaled_latents
from condgen.latent.run import decoding_autoencoder, frozen_autoencoder

LATENT_SIZE = 16  # the s2d nets' working resolution


@dataclass
class LatentGANRunConfig(GANRunConfig):
    autoencoder: str = ""  # the vae or vqvae run whose latents are generated (`train latent-gan --autoencoder RUN`)
    scale_factor: float = 0.0  # latents are multiplied by it; 0 = 1 / (their standard deviation), set at the start

    def validate(self) -> None:
        super().validate()
        if self.model.architecture != Architecture.S2D:
            raise CondgenError(
                f"model.architecture: a latent GAN uses {Architecture.S2D.value}, not {self.model.architecture.value!r}"
            )


class LatentGANTask(GANTask):
    """A :class:`condgen.train.loop.Task` for ``latent_gan`` runs: the dataset is encoded once at the start."""

    kind = "latent_gan"

    def __init__(
        self,
        config: LatentGANRunConfig,
        data: LabeledImages,
        data_root: Path,
        evaluator: Evaluator | None,
        autoencoder: Autoencoder,
    ):
        if autoencoder.config.latent_size != LATENT_SIZE:
            raise CondgenError(
                f"--autoencoder: its latents are {autoencoder.config.latent_size}x{autoencoder.config.latent_size}; "
                f"a latent GAN needs {LATENT_SIZE}x{LATENT_SIZE} (an autoencoder with two halvings)"
            )
        config.model.latent_channels = autoencoder.config.latent_channels
        self.latents, config.scale_factor = scaled_latents(autoencoder, data.images, config.scale_factor)
        self.autoencoder = autoencoder
        super().__init__(config, data, data_root, evaluator)

    def _real_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        o = self.config.optim
        latents, labels = mirrored_batch(
            self.latents, self.data.labels, self.all_index, o.batch_size, o.hflip, self.random
        )
        return latents.to(self.device), labels.to(self.device)

    def sample(self, labels: torch.Tensor) -> torch.Tensor:
        return decode_latents(self.autoencoder, super().sample(labels), self.config.scale_factor)

    def images(self, fake: torch.Tensor) -> torch.Tensor:
        return self.autoencoder.decode(fake / self.config.scale_factor).clamp(-1, 1)


def make_latent_gan_task(
    config: LatentGANRunConfig, data: LabeledImages, data_root: Path, evaluator: Evaluator | None
) -> LatentGANTask:
    """The ``latent_gan`` task on the autoencoder run that ``config.autoencoder`` names (or, for a run started from
    another, ``init``, that run's)."""
    if config.init:
        warm_start.take_settings(config, LatentGANTask.kind)
    return LatentGANTask(config, data, data_root, evaluator, frozen_autoencoder(config))


def load_latent_gan(run: Path, checkpoint: str = "best") -> GANModel:
    """The EMA generator of a ``latent_gan`` run, decoding through its autoencoder."""
    loaded = load_gan(run, checkpoint, "latent_gan", LatentGANRunConfig)
    config = loaded.config
    autoencoder = decoding_autoencoder(run, config)
    loaded.decode = lambda latents: decode_latents(autoencoder, latents, config.scale_factor)
    return loaded
