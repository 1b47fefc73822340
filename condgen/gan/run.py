"""Loading what a GAN run holds, for sampling."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from condgen.device import resolve_device
from condgen.gan.networks import FoldGenerator, Generator, build_generator
from condgen.gan.trainer import GANRunConfig
from condgen.train.checkpoint import load_module
from condgen.train.config import load_config
from condgen.train.runs import checkpoint_folder


@dataclass
class GANModel:
    """A trained GAN run, ready to sample: its EMA generator, run config and run.json."""

    generator: Generator | FoldGenerator
    config: GANRunConfig
    meta: dict


def load_gan(run: Path, checkpoint: str = "best") -> GANModel:
    """The EMA generator of a gan run's ``best`` (or ``latest``) checkpoint, its config and run.json."""
    folder, meta = checkpoint_folder(run, "gan", checkpoint)
    config = load_config(GANRunConfig, run / "config.yaml")
    generator = build_generator(config.model)
    load_module(generator, folder / "ema.safetensors")
    return GANModel(generator.eval().to(resolve_device(config.device)), config, meta)
