"""The Python API: ``condgen.load(folder)`` opens a training run or an exported model folder and generates from
object names, with the same settings and defaults as ``condgen sample``."""

from __future__ import annotations

from argparse import Namespace
from pathlib import Path

import torch

from condgen.data.labels import LabelCodec
from condgen.diffusion.sampling import generate
from condgen.gan.run import GANModel
from condgen.generate import check_gan_options, load_generator, sample_settings
from condgen.train.runs import request_labels


class Pipeline:
    """A loaded generator. ``generate`` takes object names and returns images in [-1, 1]."""

    def __init__(self, folder: str | Path, checkpoint: str = "best"):
        self.folder = Path(folder)
        self.loaded = load_generator(self.folder, checkpoint)
        self.kind = self.loaded.meta["kind"]
        self.codec = LabelCodec(self.loaded.meta["objects"])

    def generate(
        self,
        requests: str | list[str],
        seed: int | None = None,
        sampler: str | None = None,
        steps: int | None = None,
        guidance: float | None = None,
        guidance_min_t: int | None = None,
        eta: float | None = None,
        spacing: str | None = None,
    ) -> torch.Tensor:
        """One image per request, each a comma-separated list of objects ("red sphere, cyan cube"): a (N, 3, 64, 64)
        tensor in [-1, 1]. Options left at None take the model's own settings; the same seed gives the same images.
        A GAN takes ``seed`` alone."""
        requests = [requests] if isinstance(requests, str) else list(requests)
        labels = torch.cat([request_labels(self.loaded.meta, None, request) for request in requests])
        options = Namespace(sampler=sampler, steps=steps, guidance=guidance, guidance_min_t=guidance_min_t, eta=eta)
        options.spacing, options.seed = spacing, seed
        if isinstance(self.loaded, GANModel):
            check_gan_options(options, self.folder)
            return self.loaded.sample(labels, self.loaded.config.eval_seed if seed is None else seed)
        sample = sample_settings(self.loaded.config.sample, options, self.loaded.diffusion.num_steps)
        return self.loaded.decode(generate(self.loaded.model, self.loaded.diffusion, labels, sample))


def load(folder: str | Path, checkpoint: str = "best") -> Pipeline:
    """Opens a training run or a model folder written by ``condgen export``."""
    return Pipeline(folder, checkpoint)
