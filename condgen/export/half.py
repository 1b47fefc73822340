"""The float16 check of `condgen export --half auto`: sample i-CLEVR's test.json and new_test.json with several noise
seeds from a float32 and a float16 copy of one model folder and compare the shipped evaluator's scores.

A sampler that integrates over many steps turns float16's rounding into other images for some seeds, so scores can
move either way: float16 ships unless its mean over the seeds is lower for some file and measure. A folder's image
ranker is checked on the same candidates: on how many requests its float16 copy (reading with the float16 copy of its
object counter, where it has one) keeps another candidate than the float32 one.
"""

from __future__ import annotations

from pathlib import Path

import torch

from condgen.data.iclevr import load_label_file
from condgen.diffusion.run import DiffusionModel
from condgen.diffusion.sampling import generate
from condgen.evaluate.evaluator import Evaluator, load_evaluator
from condgen.evaluate.ranker import RANKER_COUNTER_FILE, RANKER_FILE, image_ranking, load_ranker, load_ranker_counter
from condgen.gan.run import GANModel
from condgen.gan.sampling import sample_images
from condgen.nn.ranking import Reading, best_candidates
from condgen.pipeline import Pipeline, load
from condgen.pretrained import ICLEVR_LABELS

MEASURES = ("accuracy", "exact_set")


def half_precision_check(float32: Path, float16: Path, seeds: int) -> dict:
    """Both folders' scores on test.json and new_test.json for seeds 0..seeds-1: ``scores[precision][file][measure]``
    per seed, whether they are the same, whether float16's means are no lower, the largest pixel difference and, with
    an image ranker, ``ranker_choices_changed``."""
    evaluator = load_evaluator()
    pipelines = {"float32": load(float32), "float16": load(float16)}
    half_ranker, half_counter = float16 / RANKER_FILE, float16 / RANKER_COUNTER_FILE
    changed = 0 if half_ranker.is_file() else None
    scores: dict[str, dict] = {precision: {} for precision in pipelines}
    largest = 0.0
    for file, path in ICLEVR_LABELS.items():
        labels = load_label_file(path, evaluator.codec)
        for seed in range(seeds):
            if changed is None:
                full = pipeline_images(pipelines["float32"], labels, seed)
            else:  # the same images as pipeline_images, with the float16 ranker's choices counted on the way
                counter = half_counter if half_counter.is_file() else None
                full, moved = ranked_both_ways(pipelines["float32"].loaded, half_ranker, labels, seed, counter)
                changed += moved
            images = {"float32": full, "float16": pipeline_images(pipelines["float16"], labels, seed)}
            largest = max(largest, float((images["float32"] - images["float16"]).abs().max()))
            for precision, batch in images.items():
                record(scores[precision], file, evaluator, batch, labels)
    return {
        "seeds": seeds,
        "scores": scores,
        "same_scores": scores["float32"] == scores["float16"],
        "float16_no_lower": no_lower(scores["float16"], scores["float32"]),
        "largest_pixel_difference": round(largest, 4),  # images in [-1, 1]
    } | ({"ranker_choices_changed": changed} if changed is not None else {})


def pipeline_images(pipeline: Pipeline, labels: torch.Tensor, seed: int) -> torch.Tensor:
    requests = [", ".join(pipeline.codec.decode(row)) for row in labels]
    return pipeline.generate(requests, seed=seed)


def ranked_both_ways(
    loaded: DiffusionModel | GANModel,
    other: Path,
    labels: torch.Tensor,
    seed: int,
    other_counter: Path | None = None,
) -> tuple[torch.Tensor, int]:
    """``loaded``'s own images at ``seed`` (its own sampling, ranker and ranker counter, as ``Pipeline.generate``
    makes them) and on how many requests the ranker stored at ``other`` would have kept another of the same
    candidates, reading with the counter stored at ``other_counter`` (without one: ``loaded``'s own counter, so that
    both readings count objects alike)."""
    own = loaded.ranking()
    objects = loaded.meta["objects"]
    counter = load_ranker_counter(other_counter, objects) if other_counter is not None else loaded.ranker_counter
    rival = image_ranking(load_ranker(other, objects), loaded.decode, counter=counter)
    diffusion = isinstance(loaded, DiffusionModel)
    k = loaded.config.sample.candidates if diffusion else loaded.config.candidates
    done, moved = 0, 0  # requests ranked so far: the sampler ranks them batch by batch, in order

    def both(samples: torch.Tensor) -> Reading:
        nonlocal done, moved
        mine, n = own(samples), len(samples) // k
        rows = labels[done : done + n].repeat_interleave(k, dim=0).to(samples.device)
        moved += different_choices(mine, rival(samples), rows, k)
        done += n
        return mine

    if diffusion:
        sample = loaded.config.sample.changed(seed=seed)
        x = generate(loaded.model, loaded.diffusion, labels, sample, classifier=loaded.classifier, ranker=both)
    else:
        x = sample_images(loaded.generator, labels, seed, critic=loaded.critic, candidates=k, ranking=both)
    return loaded.decode(x), moved


def record(scores: dict, file: str, evaluator: Evaluator, images: torch.Tensor, labels: torch.Tensor) -> None:
    measured = evaluator.measure(images, labels)
    entry = scores.setdefault(file, {measure: [] for measure in MEASURES})
    for measure in MEASURES:
        entry[measure].append(round(measured[measure], 4))


def no_lower(half: dict, full: dict) -> bool:
    """Whether float16's mean over the seeds is at least float32's for every file and measure."""
    return all(
        sum(half[file][m]) / len(half[file][m]) >= sum(values) / len(values)
        for file, entry in full.items()
        for m, values in entry.items()
    )


def different_choices(mine: Reading, theirs: Reading, rows: torch.Tensor, k: int) -> int:
    """On how many requests (``rows``: each request's multi-hot row repeated ``k`` times in a row) two rankers'
    readings keep different candidates (condgen.nn.ranking)."""
    return int((best_candidates(mine, rows, k) != best_candidates(theirs, rows, k)).sum())
