"""Loading what a GAN run holds, for sampling."""

from __future__ import annotations

from pathlib import Path

from condgen.gan.networks import FoldGenerator, Generator, build_generator
from condgen.gan.trainer import GANRunConfig
from condgen.runs import checkpoint_folder
from condgen.train.checkpoint import load_module
from condgen.train.config import load_config
from condgen.train.loop import resolve_device


def load_gan(run: Path, checkpoint: str = "best") -> tuple[Generator | FoldGenerator, GANRunConfig, dict]:
    """The EMA generator of a gan run's ``best`` (or ``latest``) checkpoint, its config and metadata."""
    folder, meta = checkpoint_folder(run, "gan", checkpoint)
    config = load_config(GANRunConfig, run / "config.yaml")
    generator = build_generator(config.model)
    load_module(generator, folder / "ema.safetensors")
    return generator.eval().to(resolve_device(config.device)), config, meta
