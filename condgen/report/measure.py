"""What `condgen report` measures of one model and one sampler, the same way for every kind: quality over noise
seeds (top-k accuracy, exact-set rate, per-object precision and recall; with an object counter the count-exact and
exact-scene rates and the share with extra objects), cost (network evaluations, seconds per image, images/s,
memory), spread between seeds of one request, the evaluator-feature Fréchet distance to real images, and the
training record a run keeps."""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from condgen.diffusion.options import Sampler
from condgen.diffusion.presets import sampler_settings
from condgen.diffusion.sampling import SampleConfig, is_few_step, network_evaluations
from condgen.evaluate.evaluator import Evaluator
from condgen.evaluate.metrics import frechet_distance
from condgen.gan.run import GANModel
from condgen.gan.sampling import network_passes
from condgen.pipeline import Pipeline
from condgen.train.runs import elapsed_by_step, read_metrics

GAN_PASS = "gan"  # the one sampler of a GAN: a single pass G(z, y)
SAMPLERS = (Sampler.DDPM.value, Sampler.DDIM.value, Sampler.DPMPP.value, GAN_PASS)
SPEED_REQUEST = "red sphere, cyan cylinder, cyan cube"
QUALITY_KEYS = ("accuracy", "exact_set", "precision", "recall")


@dataclass
class Model:
    """A run or model folder under the name the report gives it."""

    name: str
    folder: Path
    pipeline: Pipeline

    @property
    def is_gan(self) -> bool:
        return isinstance(self.pipeline.loaded, GANModel)

    def samplers(self, wanted: list[str]) -> list[str]:
        """The samplers of ``wanted`` that this model has: a GAN its single pass, a few-step model ddim (its jumps,
        as many as its own settings take), another diffusion model the others."""
        if not self.is_gan and is_few_step(self.network.config):
            return [s for s in wanted if s == Sampler.DDIM.value]
        return [s for s in wanted if (s == GAN_PASS) == self.is_gan]

    def settings(self, sampler: str) -> SampleConfig:
        """A diffusion model's settings under ``sampler``, as everywhere else
        (:func:`condgen.diffusion.presets.sampler_settings`: its own where it uses that sampler, else the preset), at
        most its T steps: a model of fewer noise levels than a preset's steps visits them all."""
        loaded = self.pipeline.loaded
        levels = loaded.diffusion.num_steps
        sample = sampler_settings(loaded.config.sample, sampler, levels)
        if sample.sampler != Sampler.DDPM and sample.sampler_steps() > levels:
            sample = sample.changed(steps=levels)
        return sample

    def generate(self, requests: list[str], seed: int, sampler: str) -> torch.Tensor:
        if sampler == GAN_PASS:
            return self.pipeline.generate(requests, seed=seed)
        sample = self.settings(sampler)
        return self.pipeline.generate(
            requests, seed=seed, sampler=sample.sampler, steps=sample.steps, eta=sample.eta, spacing=sample.spacing
        )

    def network_evaluations(self, sampler: str, steps: int | None = None, candidates: int | None = None) -> int:
        """Network passes per image under ``sampler`` (and ``steps`` and ``candidates``, where given): each
        candidate's generator passes (two at a guided diffusion step) and, where K > 1 candidates are ranked, one
        pass per candidate of each network that reads them (an image ranker and its counter, else a GAN's critic or
        a diffusion model's noisy classifier)."""
        loaded = self.pipeline.loaded
        readers = 1 + (loaded.ranker_counter is not None) if loaded.ranker is not None else 1
        if sampler == GAN_PASS:
            return network_passes(candidates or loaded.config.candidates, readers)
        sample = self.settings(sampler).changed(steps=steps, candidates=candidates)
        k = sample.candidates
        return network_evaluations(sample, loaded.diffusion.num_steps) + (k * readers if k > 1 else 0)

    @property
    def network(self) -> torch.nn.Module:
        """The network that generates: a GAN's generator, a diffusion model's denoiser."""
        return self.pipeline.loaded.generator if self.is_gan else self.pipeline.loaded.model

    def parameters(self) -> int:
        return sum(p.numel() for p in self.network.parameters())


def requests_of(labels: torch.Tensor, evaluator: Evaluator) -> list[str]:
    return [", ".join(evaluator.codec.decode(row)) for row in labels]


@dataclass
class Scored:
    """One label file scored over noise seeds 0..seeds-1."""

    figures: dict[str, dict]  # QUALITY_KEYS (and metrics.COUNT_KEYS) -> {"mean", "by_seed", "spread"} (:func:`summary`)
    first: torch.Tensor  # seed 0's images
    features: torch.Tensor  # the evaluator's features of every seed's images
    seconds_per_image: float  # generation time, mean over the seeds


def score_seeds(
    make_images: Callable[[torch.Tensor, int], torch.Tensor],
    labels: torch.Tensor,
    evaluator: Evaluator,
    seeds: int,
    on_image: Callable[[int], object] | None = None,
) -> Scored:
    """Generates ``make_images(labels, seed)`` for seeds 0..seeds-1 and scores each seed's images against
    ``labels``: the one way every figure of quality is measured, by `condgen report` and by the benchmarks alike.
    ``on_image(n)`` is told of progress."""
    by_seed: dict[str, list[float]] = {}  # QUALITY_KEYS, and the count-aware ones with a counter
    first, features, seconds = None, [], 0.0
    for seed in range(seeds):
        start = time.perf_counter()
        images = make_images(labels, seed)
        seconds += time.perf_counter() - start
        first = images if first is None else first
        features.append(evaluator.features(images))
        for key, value in evaluator.measure(images, labels).items():
            by_seed.setdefault(key, []).append(round(value, 4))
        if on_image is not None:
            on_image(len(images))
    figures = {key: summary(values) for key, values in by_seed.items()}
    return Scored(figures, first, torch.cat(features), seconds / (seeds * len(labels)))


def quality(
    model: Model, sampler: str, labels: torch.Tensor, evaluator: Evaluator, seeds: int, on_image=None
) -> Scored:
    """:func:`score_seeds` of ``model`` generating with ``sampler``."""
    requests = requests_of(labels, evaluator)
    return score_seeds(lambda _, seed: model.generate(requests, seed, sampler), labels, evaluator, seeds, on_image)


def summary(values: list[float]) -> dict:
    """Mean, each value and the spread (largest minus smallest) of per-seed figures."""
    mean, spread = sum(values) / len(values), max(values) - min(values)
    return {"mean": round(mean, 4), "by_seed": values, "spread": round(spread, 4)}


def speed(model: Model, sampler: str, batches: tuple[int, ...]) -> dict:
    """Seconds per image at batch 1 and images/s at the best of ``batches`` (after one untimed image), and the
    process's peak memory while sampling: allocated GPU memory on a GPU, resident memory on a CPU (Linux)."""
    device = next(model.network.parameters()).device
    model.generate([SPEED_REQUEST], 0, sampler)  # warm-up: allocations, caches
    reset_peak_memory(device)
    per_batch = {}
    for batch in batches:
        start = time.perf_counter()
        model.generate([SPEED_REQUEST] * batch, 1, sampler)
        if device.type == "cuda":
            torch.cuda.synchronize()
        per_batch[batch] = batch / (time.perf_counter() - start)
    best = max(per_batch, key=per_batch.get)
    return {
        "seconds_per_image_batch_1": round(1 / per_batch[1], 4) if 1 in per_batch else None,
        "images_per_second_best": round(per_batch[best], 2),
        "best_batch": best,
        "peak_memory_mb": peak_memory_mb(device),
    }


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    with contextlib.suppress(OSError):  # "5" resets the peak resident set size (VmHWM) of the process (Linux >= 4)
        Path("/proc/self/clear_refs").write_text("5")


def peak_memory_mb(device: torch.device) -> float | None:
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    try:
        line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM"))
    except (OSError, StopIteration):
        return None
    return round(int(line.split()[1]) / 1024, 1)


def diversity(model: Model, sampler: str, evaluator: Evaluator, seeds: int = 8) -> float:
    """How different the images of one request are from seed to seed: the mean pairwise distance of their
    evaluator features (``SPEED_REQUEST``, seeds 0..seeds-1). A collapsed generator scores near 0."""
    features = torch.cat([evaluator.features(model.generate([SPEED_REQUEST], s, sampler)) for s in range(seeds)])
    pairs = list(itertools.combinations(range(len(features)), 2))
    return round(sum(float((features[i] - features[j]).norm()) for i, j in pairs) / len(pairs), 3)


def fid_to_real(features: torch.Tensor, real_features: torch.Tensor) -> float:
    """The Fréchet distance between generated and real images in the evaluator's 512-d feature space (not
    Inception FID: comparable only between models scored by the same evaluator and the same real images)."""
    return round(frechet_distance(features, real_features), 3)


def training_record(folder: Path, batch_size: int | None) -> dict | None:
    """A run's own record: steps, wall-clock training minutes (summed over resumed invocations), train images/s,
    and its periodic evaluations as ``curve`` [(minutes, accuracy on the training label sets that choose ``best/``)];
    None for a model folder, which keeps no metrics."""
    if not (folder / "metrics.jsonl").is_file():
        return None
    records = read_metrics(folder)
    elapsed_at = elapsed_by_step(records)
    elapsed = max(elapsed_at.values(), default=0.0)
    minutes_at = {step: seconds / 60 for step, seconds in elapsed_at.items()}
    steps = max((r["step"] for r in records), default=0)
    curve = [
        (round(minutes_at.get(r["step"], elapsed / 60), 2), round(r["accuracy"], 4))
        for r in records
        if "accuracy" in r and "seconds" not in r
    ]
    return {
        "steps": steps,
        "train_minutes": round(elapsed / 60, 2),
        "train_images_per_second": round(steps * batch_size / elapsed, 1) if batch_size and elapsed else None,
        "curve": curve,
    }
