"""A noisy classifier of an autoencoder's latents z_t: classifier guidance for latent diffusion, and the ranker that
keeps the best of several samples (``sample.candidates``). It is trained by condgen on the training images' latents,
never on the evaluator's outputs."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from condgen.data.iclevr import LabeledImages
from condgen.diffusion.classifier import ClassifierRunConfig, ClassifierTask
from condgen.diffusion.run import load_classifier
from condgen.diffusion.unet import NoisyClassifier, UNetConfig
from condgen.errors import CondgenError
from condgen.evaluate.evaluator import Evaluator
from condgen.latent.autoencoder import Autoencoder
from condgen.latent.latents import mirrored_batch, scaled_latents
from condgen.latent.run import frozen_autoencoder


def _latent_classifier_unet() -> UNetConfig:
    # in_channels and image_size are set from the autoencoder when training starts
    return UNetConfig(
        in_channels=4, image_size=16, channels=32, channel_mults=(1, 2), attention_resolutions=(8,), patch_size=1
    )


@dataclass
class LatentClassifierRunConfig(ClassifierRunConfig):
    """A noisy classifier of scaled latents. ``autoencoder`` and ``diffusion`` must be the guided ldm run's; the
    scale factor, computed the same way from the same autoencoder, then matches too (checked when it is used)."""

    autoencoder: str = ""  # the vae or vqvae run (`train latent-classifier --autoencoder RUN`)
    scale_factor: float = 0.0  # 0 = 1 / (the latents' standard deviation), set at the start, as an ldm run does
    model: UNetConfig = field(default_factory=_latent_classifier_unet)


class LatentClassifierTask(ClassifierTask):
    """:class:`ClassifierTask` on the training set's latents (and their mirror images'), encoded once at the start."""

    kind = "latent_classifier"

    def __init__(self, config: LatentClassifierRunConfig, data: LabeledImages, autoencoder: Autoencoder):
        # replace() checks the model anew (condgen.diffusion.unet.UNetConfig) at the latent's size and channels
        config.model = replace(
            config.model, in_channels=autoencoder.config.latent_channels, image_size=autoencoder.config.latent_size
        )
        self.latents, config.scale_factor = scaled_latents(autoencoder, data.images, config.scale_factor)
        super().__init__(config, data)

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        o = self.config.optim
        latents, labels = mirrored_batch(
            self.latents, self.data.labels, self.train_index, o.batch_size, o.hflip, self.generator
        )
        return latents.to(self.device), labels

    def held_out(self, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = self.val_index[:count]
        return self.latents[index, 0].to(self.device), self.data.labels[index]


def make_latent_classifier_task(
    config: LatentClassifierRunConfig, data: LabeledImages, data_root: Path, evaluator: Evaluator | None
) -> LatentClassifierTask:
    """The ``latent_classifier`` task on the autoencoder run that ``config.autoencoder`` names."""
    return LatentClassifierTask(config, data, frozen_autoencoder(config))


def load_latent_classifier(run: Path, ldm_config: Any) -> NoisyClassifier:
    """A trained ``latent_classifier`` run, checked to read the latents of the ldm run whose config
    (:class:`condgen.latent.ldm.LDMRunConfig`) is ``ldm_config``: the same noise schedule, latent shape and scale
    factor (so, in practice, the same autoencoder)."""
    model, config = load_classifier(run, ldm_config.diffusion, "latent_classifier", LatentClassifierRunConfig)
    theirs = (config.model.in_channels, config.model.image_size, config.scale_factor)
    ours = (ldm_config.model.in_channels, ldm_config.model.image_size, ldm_config.scale_factor)
    if theirs != ours:
        raise CondgenError(
            f"{run}: the classifier reads latents of {theirs[0]}x{theirs[1]}x{theirs[1]} scaled by {theirs[2]}, the "
            f"ldm run makes {ours[0]}x{ours[1]}x{ours[1]} scaled by {ours[2]}: train it on the ldm's --autoencoder"
        )
    return model
