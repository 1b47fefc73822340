"""The models a server holds, and how one answers a request: the image, its strip (a diffusion model's denoising,
a GAN's interpolation), the evaluator's verdict on it and the time it took."""

from __future__ import annotations

import base64
import io
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torchvision.utils import make_grid

from condgen.data.imageio import to_uint8
from condgen.diffusion.options import Sampler
from condgen.diffusion.sampling import SampleConfig, SampleOverrides, check_jumps, is_few_step
from condgen.errors import CondgenError
from condgen.evaluate.evaluator import Evaluator
from condgen.kinds import KINDS, Generation
from condgen.pipeline import Pipeline
from condgen.pretrained import model_path
from condgen.serve.requests import Limits, Request

STRIP = 8  # images in a denoising or interpolation strip
THRESHOLD = 0.5  # an object counts as detected when the evaluator's probability exceeds this
DIFFUSION_SETTINGS = ("sampler", "steps", "guidance")  # request fields a GAN, drawing in one pass, has no use for


class HungUpError(Exception):
    """The client of a request hung up, so its generation stopped at the next step: nobody would read the image."""


@dataclass
class ServedModel:
    """A loaded model under the name the page shows."""

    name: str
    pipeline: Pipeline

    @property
    def generation(self) -> Generation:
        return KINDS[self.pipeline.kind].generation

    def describe(self) -> dict:
        """What the page needs to know about the model: its kind, objects and default sampling settings."""
        meta = self.pipeline.loaded.meta
        info = {
            "name": self.name,
            "kind": self.pipeline.kind,
            "generation": self.generation.value,
            "objects": list(self.pipeline.codec.names),
            "max_objects": meta["max_objects"],
        }
        if self.generation == Generation.DIFFUSION:
            sample = self.pipeline.loaded.config.sample
            info |= {
                "noise_steps": self.pipeline.loaded.diffusion.num_steps,
                "sampler": Sampler(sample.sampler).value,
                "samplers": self.samplers(),
                "steps": self.steps(sample),
                "guidance": sample.guidance,
            }
        return info

    def samplers(self) -> list[str]:
        """The samplers a diffusion model takes: ddim alone for a few-step model (its jumps), else every one."""
        if is_few_step(self.pipeline.loaded.model.config):
            return [Sampler.DDIM.value]
        return [sampler.value for sampler in Sampler]

    def check(self, request: Request, limits: Limits) -> None:
        """Refuses a request this model cannot serve within ``limits``, naming the model."""
        try:
            self.pipeline.codec.check_names(list(request.objects), "objects")
            most = self.pipeline.loaded.meta["max_objects"]
            if len(request.objects) > most:
                raise CondgenError(f"objects: {len(request.objects)} asked for; the model takes at most {most}")
            if self.generation == Generation.DIFFUSION:
                self.settings(request, limits)
        except CondgenError as exc:
            raise CondgenError(f"{self.name}: {exc}") from None

    def settings(self, request: Request, limits: Limits) -> SampleConfig:
        """A diffusion model's sampling settings for ``request``, as ``Pipeline.generate`` makes them (a sampler
        other than the model's comes with its preset), refused when they take more steps than the model has noise
        levels or than ``limits.max_steps`` (ddpm always takes all T)."""
        levels = self.pipeline.loaded.diffusion.num_steps
        sample = request_overrides(request).apply(self.pipeline.loaded.config.sample, levels)
        sampler = Sampler(sample.sampler).value
        if sample.sampler != Sampler.DDPM and sample.sampler_steps() > levels:
            steps = sample.sampler_steps()
            raise CondgenError(f"steps: sampler {sampler} would take {steps}; the model has only {levels} noise levels")
        if self.steps(sample) > limits.max_steps:
            raise CondgenError(
                f"sampler {sampler} takes {self.steps(sample)} steps here; this server allows at most "
                f"{limits.max_steps} (--max-steps)"
            )
        sample.check(levels)
        check_jumps(self.pipeline.loaded.model.config, sample)
        return sample

    def steps(self, sample: SampleConfig) -> int:
        """The sampler steps ``sample`` takes: ddpm all T, ddim and dpmpp their ``steps``."""
        return self.pipeline.loaded.diffusion.num_steps if sample.sampler == Sampler.DDPM else sample.sampler_steps()

    def ignored(self, request: Request) -> list[str]:
        """The request's settings this model makes no use of: a GAN's, the diffusion settings it sets."""
        if self.generation == Generation.DIFFUSION:
            return []
        return [field for field in DIFFUSION_SETTINGS if getattr(request, field) is not None]

    @torch.no_grad()
    def answer(
        self, request: Request, evaluator: Evaluator | None, limits: Limits, cancel: threading.Event | None = None
    ) -> dict:
        """Generates the request's image and strip and judges the image: a JSON-ready dict. Once ``cancel`` is set,
        raises :class:`HungUpError` at the next sampler step (a GAN's next pass) instead."""
        stop_if(cancel)
        names = ", ".join(request.objects)
        started = time.perf_counter()
        if self.generation == Generation.DIFFUSION:
            sample = self.settings(request, limits)
            states: list[torch.Tensor] = []  # x_T, then the state after every sampler step

            def record(info: dict) -> None:
                stop_if(cancel)  # the sampler calls back after every step: the soonest it can stop
                states.append(info["x"][0].cpu())

            image = self.pipeline.generate(
                names,
                seed=request.seed,
                sampler=request.sampler,
                steps=request.steps,
                guidance=request.guidance,
                callback=record,
            )[0]
            seconds = time.perf_counter() - started
            picks = torch.linspace(0, len(states) - 1, min(STRIP, len(states))).round().long().tolist()
            strip = self.pipeline.decode(torch.stack([states[i] for i in picks]))
            settings = {"sampler": Sampler(sample.sampler).value, "steps": self.steps(sample)}
            settings |= {"guidance": sample.guidance, "seed": request.seed}
            strip_kind = "denoising"
        else:
            image = self.pipeline.generate(names, seed=request.seed)[0]
            seconds = time.perf_counter() - started
            stop_if(cancel)
            strip = self.pipeline.interpolate(names, seed=request.seed, frames=STRIP)
            settings, strip_kind = {"seed": request.seed}, "interpolation"
        if not torch.isfinite(image).all():
            raise CondgenError(f"{self.name}: the model made a non-finite image; its weights are broken")
        return {
            "model": self.name,
            "kind": self.pipeline.kind,
            "settings": settings,
            "ignored": self.ignored(request),
            "image": png_data_url(image[None]),
            "strip": png_data_url(strip),
            "strip_kind": strip_kind,
            "verdict": verdict(evaluator, image, request.objects),
            "seconds": round(seconds, 4),
        }


def stop_if(cancel: threading.Event | None) -> None:
    """Raises :class:`HungUpError` once ``cancel`` is set."""
    if cancel is not None and cancel.is_set():
        raise HungUpError


def check_request(models: list[ServedModel], request: Request, limits: Limits) -> None:
    """Refuses a request that any of ``models`` cannot serve within ``limits``, or one that sets a diffusion setting
    (sampler, steps, guidance) when every model is a GAN and none would use it. Beside a diffusion model the page
    sends them for it, and a GAN's answer lists them as ignored."""
    for model in models:
        model.check(request, limits)
    given = [field for field in DIFFUSION_SETTINGS if getattr(request, field) is not None]
    gans = [model.name for model in models if model.generation == Generation.GAN]
    if given and len(gans) == len(models):
        if len(gans) == 1:
            raise CondgenError(
                f"{given[0]}: {gans[0]} is a GAN: it draws in one pass and takes no sampler, steps or guidance"
            )
        raise CondgenError(
            f"{given[0]}: {', '.join(gans)} are GANs: they draw in one pass and take no sampler, steps or guidance"
        )


def request_overrides(request: Request) -> SampleOverrides:
    """The sampling settings a request asks for in place of the model's own."""
    return SampleOverrides(sampler=request.sampler, steps=request.steps, guidance=request.guidance, seed=request.seed)


def load_models(folders: list[Path | str], checkpoint: str = "best") -> list[ServedModel]:
    """Opens every training run, model folder or shipped model (by name); each is shown under its folder's name,
    made unique."""
    models: list[ServedModel] = []
    for given in folders:
        folder = model_path(given)
        base, taken, copy = folder.resolve().name, {model.name for model in models}, 1
        name = base
        while name in taken:  # the same folder twice, or two runs both called "run"
            copy += 1
            name = f"{base} ({copy})"
        models.append(ServedModel(name, Pipeline(folder, checkpoint)))
    return models


def verdict(evaluator: Evaluator | None, image: torch.Tensor, requested: tuple[str, ...]) -> dict | None:
    """The evaluator's probability for each requested object and whether it counts as detected, and the objects it
    detects that were not asked for; None without an evaluator that knows the requested objects.

    With the evaluator's object counter, also the number of objects it counts in the image (``counted``) beside the
    number ``requested``, each requested object's ``instances`` and ``exact_scene``: every requested object detected,
    nothing else detected and as many objects counted as requested. Without one these three are None."""
    if evaluator is None or not set(requested) <= set(evaluator.codec.names):
        return None
    scores = evaluator.scores(image[None].float())[0].tolist()
    probability = dict(zip(evaluator.codec.names, scores))
    counts = object_counts(evaluator, image)
    objects = [{"name": name, "probability": round(probability[name], 4)} for name in requested]
    for entry in objects:
        entry["detected"] = entry["probability"] > THRESHOLD
        entry["instances"] = None if counts is None else counts[0][entry["name"]]
    extra = [
        {"name": name, "probability": round(p, 4)}
        for name, p in sorted(probability.items(), key=lambda item: -item[1])
        if p > THRESHOLD and name not in requested
    ]
    exact = all(entry["detected"] for entry in objects) and not extra
    return {
        "threshold": THRESHOLD,
        "objects": objects,
        "unrequested": extra,
        "exact": exact,
        "counted": None if counts is None else counts[1],
        "requested": len(requested),
        "exact_scene": None if counts is None else exact and counts[1] == len(requested),
    }


def object_counts(evaluator: Evaluator, image: torch.Tensor) -> tuple[dict[str, int], int] | None:
    """The evaluator's object counter on one image: each object's rounded instance count and the number of objects
    (the rounded sum, as :meth:`condgen.evaluate.counter.ObjectCounter.totals` counts); None without a counter."""
    if evaluator.counter is None:
        return None
    instances = evaluator.counter.instances(image[None].float())[0]
    return dict(zip(evaluator.counter.codec.names, instances.round().long().tolist())), int(instances.sum().round())


def png_data_url(images: torch.Tensor) -> str:
    """A row of (N, 3, H, W) images in [-1, 1] as one PNG ``data:`` URL (white 2-pixel gaps between images)."""
    row = images[0] if len(images) == 1 else make_grid(images.float(), nrow=len(images), padding=2, pad_value=1.0)
    buffer = io.BytesIO()
    Image.fromarray(to_uint8(row).permute(1, 2, 0).numpy()).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
