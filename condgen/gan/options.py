"""The names of a conditional GAN's choices: the adversarial loss, the networks, how the critic reads the labels, the
optimiser and the augmentation. Plain enums with no torch, so the command line's help lists exactly these choices
without loading a model library. The configs hold the members; YAML files, ``key=value`` overrides and a run's
config.yaml spell them by their values."""

from __future__ import annotations

from enum import Enum
from typing import TypeVar

from condgen.errors import CondgenError


class Loss(str, Enum):
    """``optim.loss``; ``condgen.gan.losses.LOSSES`` holds what each one trains with."""

    BCE = "bce"  # non-saturating (Goodfellow et al. 2014); with conditioning=auxiliary this is ACGAN
    HINGE = "hinge"  # Lim & Ye 2017; Miyato et al. 2018
    WGAN_CLIP = "wgan_clip"  # Wasserstein critic under weight clipping (Arjovsky et al. 2017)
    WGAN_GP = "wgan_gp"  # Wasserstein critic with a gradient penalty (Gulrajani et al. 2017)


class Architecture(str, Enum):
    """``model.architecture``: the generator and discriminator pair (``condgen.gan.networks``)."""

    DCGAN = "dcgan"  # strided (transposed) convolutions
    RESNET = "resnet"  # residual up and down blocks (Miyato et al. 2018)
    S2D = "s2d"  # residual nets at 16x16 and 8x8, folded to and from 64x64 by pixel (un)shuffle by 4


class Conditioning(str, Enum):
    """``model.conditioning``: how the discriminator reads the labels."""

    PROJECTION = "projection"  # <embed(y), phi(x)> added to the score (Miyato & Koyama 2018)
    AUXILIARY = "auxiliary"  # ACGAN's auxiliary multi-label head (Odena et al. 2017), weighted by optim.aux_weight
    BOTH = "both"  # projection and the auxiliary head
    INPUT = "input"  # the labels as constant planes beside the first layer's input (Mirza & Osindero 2014)


class Optimizer(str, Enum):
    """``optim.optimizer``."""

    ADAM = "adam"
    RMSPROP = "rmsprop"  # the WGAN paper's choice with weight clipping (Arjovsky et al. 2017)


class Augment(str, Enum):
    """``optim.augment``: DiffAugment before every critic call (``condgen.gan.augment``)."""

    NONE = "none"
    TRANSLATION = "translation"
    TRANSLATION_CUTOUT = "translation_cutout"


Option = TypeVar("Option", bound=Enum)


def choices(options: type[Enum], separator: str = " | ") -> str:
    """Every value of ``options``, for help texts and error messages: ``"dcgan | resnet | s2d"``."""
    return separator.join(member.value for member in options)


def choose(options: type[Option], value: object, key: str) -> Option:
    """``value`` (a member or its value) as a member of ``options``; any other value is a user's mistake, reported
    with ``key`` (``"optim.loss"``) and every choice."""
    try:
        return options(value)
    except ValueError:
        raise CondgenError(f"{key}: {value!r} is not one of {choices(options, ', ')}") from None
