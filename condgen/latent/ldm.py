"""Latent diffusion (Rombach et al. 2022): the pixel-space diffusion task run on a frozen autoencoder's latents.

Everything but the data is shared with pixel diffusion: the noise process, the UNet (here with cross-attention over
per-object label tokens, the paper's spatial transformer conditioning, on top of the pooled label embedding), the
samplers, guidance and the training loop. Latents are scaled to unit variance, as the noise schedules assume
(:mod:`condgen.latent.latents`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from condgen.data.iclevr import LabeledImages
from condgen.diffusion.run import CLASSIFIER_FOLDER, DiffusionModel, load_ema_unet
from condgen.diffusion.sampling import SampleConfig
from condgen.diffusion.trainer import DiffusionConfig, DiffusionTask, OptimConfig
from condgen.diffusion.unet import UNetConfig
from condgen.evaluate.evaluator import Evaluator
from condgen.latent.autoencoder import Autoencoder
from condgen.latent.classifier import load_latent_classifier
from condgen.latent.latents import decode_latents, mirrored_batch, scaled_latents
from condgen.latent.run import decoding_autoencoder, frozen_autoencoder
from condgen.train.loop import LoopConfig


def latent_unet() -> UNetConfig:
    # in_channels and image_size are set from the autoencoder when training starts
    return UNetConfig(
        in_channels=4,
        image_size=16,
        channels=64,
        channel_mults=(1, 2),
        attention_resolutions=(8,),
        cross_attention=True,
        patch_size=1,
    )


@dataclass
class LDMRunConfig:
    autoencoder: str = ""  # the vae or vqvae run whose latents are modelled (`train ldm --autoencoder RUN`)
    scale_factor: float = 0.0  # latents are multiplied by it; 0 = 1 / (their standard deviation), set at the start
    model: UNetConfig = field(default_factory=latent_unet)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    device: str = "auto"


class LatentDiffusionTask(DiffusionTask):
    """A :class:`condgen.train.loop.Task` for ``ldm`` runs: the dataset is encoded once at the start."""

    kind = "ldm"

    def __init__(
        self,
        config: LDMRunConfig,
        data: LabeledImages,
        data_root: Path,
        evaluator: Evaluator | None,
        autoencoder: Autoencoder,
    ):
        # replace() checks the model anew (condgen.diffusion.unet.UNetConfig) at the latent's size and channels
        config.model = replace(
            config.model, in_channels=autoencoder.config.latent_channels, image_size=autoencoder.config.latent_size
        )
        self.latents, config.scale_factor = scaled_latents(autoencoder, data.images, config.scale_factor)
        self.autoencoder = autoencoder
        super().__init__(config, data, data_root, evaluator)

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        o = self.config.optim
        latents, labels = mirrored_batch(
            self.latents, self.data.labels, self.all_index, o.batch_size, o.hflip, self.generator
        )
        return latents.to(self.device), labels

    def sample(self, labels: torch.Tensor) -> torch.Tensor:
        return decode_latents(self.autoencoder, super().sample(labels), self.config.scale_factor)


def make_ldm_task(
    config: LDMRunConfig, data: LabeledImages, data_root: Path, evaluator: Evaluator | None
) -> LatentDiffusionTask:
    """The ``ldm`` task on the autoencoder run that ``config.autoencoder`` names."""
    return LatentDiffusionTask(config, data, data_root, evaluator, frozen_autoencoder(config))


def load_ldm(run: Path, checkpoint: str = "best") -> DiffusionModel:
    """The EMA UNet of an ``ldm`` run, its process, config and run.json, decoding through its autoencoder, with the
    noisy classifier and image ranker of a model folder that holds them."""
    return load_latent_unet(run, "ldm", LDMRunConfig, checkpoint)


def load_latent_unet(run: Path, kind: str, config_class: type, checkpoint: str) -> DiffusionModel:
    """:func:`load_ldm` for a latent UNet run of ``kind`` whose config is a ``config_class``."""
    loaded = load_ema_unet(run, kind, config_class, checkpoint)
    config = loaded.config
    autoencoder = decoding_autoencoder(run, config)
    loaded.decode = lambda latents: decode_latents(autoencoder, latents, config.scale_factor)
    if (run / CLASSIFIER_FOLDER).is_dir():
        loaded.classifier = load_latent_classifier(run / CLASSIFIER_FOLDER, config)
    loaded.load_own_ranker(run)
    return loaded
