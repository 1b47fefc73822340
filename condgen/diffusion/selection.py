"""Choosing on label lists that are never the test files: the classifier-free guidance scale with the best evaluator
accuracy on lists drawn from train.json, and, among finished samples, those a noisy classifier finds closest to
holding exactly the requested objects. The test files stay held out, so the figures reported on them stay honest."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import torch

from condgen.data.splits import train_label_lists
from condgen.diffusion.run import DiffusionModel
from condgen.diffusion.sampling import SampleConfig, generate
from condgen.errors import CondgenError
from condgen.evaluate.evaluator import Evaluator
from condgen.nn.ranking import set_log_likelihood

SELECTION_LABELS = 128  # label lists drawn from train.json to choose the guidance scale on

MakeImages = Callable[[torch.Tensor, SampleConfig], torch.Tensor]  # (labels, settings) -> images in [-1, 1]


def image_maker(loaded: DiffusionModel) -> MakeImages:
    """``make_images(labels, sample)``: samples a loaded diffusion run with the settings ``sample`` (guided by
    ``loaded.classifier``, ranked by ``loaded.ranker``, else the classifier, where they ask for it) and decodes the
    result."""

    def make_images(labels: torch.Tensor, sample: SampleConfig) -> torch.Tensor:
        x = generate(
            loaded.model, loaded.diffusion, labels, sample, classifier=loaded.classifier, ranker=loaded.ranking()
        )
        return loaded.decode(x)

    return make_images


def choose_guidance(
    make_images: MakeImages,
    sample_config: SampleConfig,
    evaluator: Evaluator,
    data: str | Path,
    scales: list[float],
    lists: int = SELECTION_LABELS,
    list_seed: int = 0,
    objects: int | None = None,
) -> dict:
    """The classifier-free guidance scale among ``scales`` with the best evaluator accuracy (the first on ties) on
    ``lists`` label lists drawn from ``data``'s train.json (:func:`condgen.data.splits.train_label_lists`), each
    scale sampled with ``sample_config``'s other settings. Returns ``{"label_lists", "sampler"}`` (what it was
    chosen on and with), ``accuracy_by_scale`` and the ``chosen`` scale."""
    if not scales:
        raise CondgenError("guidance scales: give at least one to choose from")
    labels = train_label_lists(data, evaluator.codec, lists, list_seed, objects)
    accuracy = {}
    for scale in scales:
        sample = dataclasses.replace(sample_config, guidance=scale)
        accuracy[scale] = round(evaluator.accuracy(make_images(labels, sample), labels), 4)
        print(f"guidance {scale}: accuracy {accuracy[scale]} on {len(labels)} train.json label lists", flush=True)
    return {
        "label_lists": f"{len(labels)} drawn from train.json (seed {list_seed}"
        + (f", {objects} objects each)" if objects is not None else ")"),
        "sampler": f"{sample_config.sampler.value}-{sample_config.steps}, eta {sample_config.eta}, "
        f"{sample_config.spacing.value} spacing, guidance from t = {sample_config.guidance_min_t}",
        "accuracy_by_scale": accuracy,
        "chosen": max(accuracy, key=accuracy.get),
    }


@torch.no_grad()
def classifier_likelihood(classifier: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """A noisy classifier's :func:`condgen.nn.ranking.set_log_likelihood` of each finished sample in ``x`` (read at
    t = 0, in batches of 256) for its row of ``labels``: the higher, the closer to exactly the requested objects."""
    device = next(classifier.parameters()).device
    logits = [
        classifier(xs.to(device), torch.zeros(len(xs), dtype=torch.long, device=device)).float().cpu()
        for xs in x.split(256)
    ]
    return set_log_likelihood(torch.cat(logits), labels.float())
