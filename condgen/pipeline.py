"""The Python API: ``condgen.load(folder)`` opens a training run or an exported model folder and generates from
object names, with the same settings and defaults as ``condgen sample``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from condgen.data.labels import LabelCodec
from condgen.diffusion.sampling import SampleOverrides, generate
from condgen.errors import CondgenError
from condgen.gan.run import GANModel
from condgen.generate import check_gan_options, interpolation_images, load_generator, sample_settings
from condgen.pretrained import model_path
from condgen.train.runs import request_labels


class Pipeline:
    """A loaded generator. ``generate`` takes object names and returns images in [-1, 1]."""

    def __init__(self, folder: str | Path, checkpoint: str = "best"):
        self.folder = model_path(folder)
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
        callback: Callable[[dict], None] | None = None,
        candidates: int | None = None,
    ) -> torch.Tensor:
        """One image per request, each a comma-separated list of objects ("red sphere, cyan cube"): a (N, 3, 64, 64)
        tensor in [-1, 1]. Options left at None take the model's own settings; a ``sampler`` other than the model's
        own comes with its preset steps, eta and spacing (:data:`condgen.diffusion.presets.PRESETS`) where those are
        left at None. The same seed gives the same images.
        ``candidates`` K keeps the best of K images per request, ranked by a GAN's critic's auxiliary head or by a
        diffusion model folder's image ranker (``ranker.safetensors``), else its noisy classifier (``classifier/``);
        a GAN takes it and ``seed`` alone. ``callback`` (diffusion only) sees the sampler's state ``info["x"]``
        before the first step and after each; ``decode`` turns such states into images."""
        requests = [requests] if isinstance(requests, str) else list(requests)
        labels = self.labels(requests)
        overrides = SampleOverrides(
            sampler=sampler,
            steps=steps,
            guidance=guidance,
            guidance_min_t=guidance_min_t,
            eta=eta,
            spacing=spacing,
            seed=seed,
            candidates=candidates,
        )
        if isinstance(self.loaded, GANModel):
            check_gan_options(overrides, self.folder)
            if callback is not None:
                raise CondgenError(f"callback: diffusion models only; {self.folder} is a gan, made in one pass")
            return self.loaded.sample(labels, self.loaded.config.eval_seed if seed is None else seed, candidates)
        sample = sample_settings(self.loaded.config.sample, overrides, self.loaded.diffusion.num_steps)
        loaded = self.loaded
        x = generate(
            loaded.model,
            loaded.diffusion,
            labels,
            sample,
            callback,
            classifier=loaded.classifier,
            ranker=loaded.ranking(),
        )
        return loaded.decode(x)

    def decode(self, states: torch.Tensor) -> torch.Tensor:
        """Sampler states seen by a ``callback`` (a latent model's latents, a pixel model's noisy images) -> images
        clamped to [-1, 1]."""
        if isinstance(self.loaded, GANModel):
            raise CondgenError(f"decode: diffusion models only; {self.folder} is a gan, whose output is an image")
        return self.loaded.decode(states).clamp(-1, 1)

    def interpolate(self, request: str, seed: int | None = None, frames: int = 8) -> torch.Tensor:
        """A GAN's ``frames`` images of one request whose noise walks between two random vectors drawn from
        ``seed``: a (frames, 3, 64, 64) tensor in [-1, 1]."""
        if not isinstance(self.loaded, GANModel):
            raise CondgenError(f"interpolate: gan models only; {self.folder} is a {self.kind} model")
        seed = self.loaded.config.eval_seed if seed is None else seed
        return interpolation_images(self.loaded, self.labels([request]), seed, frames)

    def labels(self, requests: list[str]) -> torch.Tensor:
        """Requests ("red sphere, cyan cube") -> (N, C) multi-hot rows, checked against the model's vocabulary and
        the most objects it was trained on."""
        return torch.cat([request_labels(self.loaded.meta, None, request) for request in requests])


def load(folder: str | Path, checkpoint: str = "best") -> Pipeline:
    """Opens a training run, a model folder written by ``condgen export`` or a shipped model by name
    (``condgen.load("iclevr-ldm")``)."""
    return Pipeline(folder, checkpoint)
