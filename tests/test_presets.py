"""The sampler presets: one table, and one rule (a model's own settings where it uses the sampler, else the preset)
that `condgen sample`, ``Pipeline.generate``, `condgen report`, `condgen serve` and the benchmarks all follow, so a
benchmark and `condgen report` score one model alike. The model is a tiny run trained once for the module."""

import dataclasses
import functools
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from conftest import train_tiny_runs

from condgen.cli import main
from condgen.data.iclevr import load_label_file
from condgen.data.labels import LabelCodec
from condgen.diffusion.options import Sampler, Spacing
from condgen.diffusion.presets import PRESETS, sampler_settings
from condgen.diffusion.sampling import SampleConfig, SampleOverrides, network_evaluations
from condgen.errors import CondgenError
from condgen.evaluate.evaluator import build_resnet18_evaluator, load_evaluator, save_evaluator
from condgen.generate import load_generator, sample_ranking, sample_settings
from condgen.pipeline import Pipeline
from condgen.report import measure
from condgen.serve.models import ServedModel
from condgen.serve.requests import Limits, Request
from condgen.train.config import config_to_dict

ROOT = Path(__file__).resolve().parents[1]
T = 20  # the tiny run's noise levels: enough for dpmpp's preset of 20 steps
# the run samples with ddim of its own (3 deterministic steps, leading): ddim keeps them, dpmpp and ddpm take presets
TINY = {
    "ddpm": ["model.channels=16", "model.channel_mults=[1,2]", "model.attention_resolutions=[16]", "model.heads=2",
             f"diffusion.num_steps={T}", "sample.sampler=ddim", "sample.steps=3", "sample.eta=0",
             "sample.spacing=leading"],
}  # fmt: skip
OWN = SampleConfig(sampler="dpmpp", steps=7, eta=0.5, spacing="linspace", guidance=3.0, seed=4, candidates=2)


def benchmarks_common():
    """benchmarks/common.py, the module every benchmark script imports as ``common``."""
    spec = importlib.util.spec_from_file_location("common", ROOT / "benchmarks" / "common.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def kept(make_images, made: list):
    """``make_images(labels, seed)`` that also keeps what it makes in ``made``."""

    def make(labels, seed):
        made.append(make_images(labels, seed))
        return made[-1]

    return make


@pytest.fixture(scope="module")
def runs(tmp_path_factory, synth_template):
    root = tmp_path_factory.mktemp("presets")
    scorer = train_tiny_runs(root, synth_template, TINY)
    return {"root": root, "evaluator": scorer, "data": synth_template, "ddpm": root / "ddpm"}


def test_a_model_keeps_its_own_settings_for_its_own_sampler_and_takes_the_preset_for_another():
    assert sampler_settings(OWN, "dpmpp", 100) == OWN
    ddim = sampler_settings(OWN, "ddim", 100)
    assert (ddim.sampler, ddim.steps, ddim.eta, ddim.spacing) == (Sampler.DDIM, 50, 1.0, Spacing.TRAILING)
    ddpm = sampler_settings(OWN, Sampler.DDPM, 100)
    assert ddpm.sampler == Sampler.DDPM and ddpm.steps == 100  # all T steps; ddpm has no eta or spacing to set
    assert (ddpm.eta, ddpm.spacing) == (OWN.eta, OWN.spacing)
    fast = sampler_settings(dataclasses.replace(OWN, sampler="ddim"), "dpmpp", 100)
    assert (fast.steps, fast.eta, fast.spacing) == (20, 0.0, Spacing.QUADRATIC)
    for picked in (ddim, ddpm, fast):  # the rest is the model's
        assert (picked.guidance, picked.seed, picked.candidates, picked.clip_x0) == (3.0, 4, 2, OWN.clip_x0)
    assert set(PRESETS) == set(Sampler)


def test_overrides_bring_a_samplers_preset_and_win_over_it():
    assert SampleOverrides().apply(OWN, 100) == OWN
    asked = SampleOverrides(sampler="ddim", eta=0.0, seed=9).apply(OWN, 100)
    assert (asked.sampler, asked.steps, asked.eta, asked.spacing, asked.seed) == ("ddim", 50, 0.0, "trailing", 9)
    assert SampleOverrides(spacing="quadratic").spacing is Spacing.QUADRATIC
    with pytest.raises(dataclasses.FrozenInstanceError):
        SampleOverrides().steps = 3
    with pytest.raises(CondgenError, match="sampler: unknown sampler 'euler'; choose one of ddpm, ddim, dpmpp"):
        SampleOverrides(sampler="euler")
    assert sample_settings(OWN, SampleOverrides(candidates=1), 100, classifier_given=True).classifier_scale == 1.0
    with pytest.raises(CondgenError, match=r"sample.steps \(--steps\): at most 30"):
        sample_settings(OWN, SampleOverrides(sampler="ddim"), 30)  # ddim's 50 preset steps on a model of T = 30


def test_every_way_of_picking_a_sampler_gives_the_same_settings(runs, tmp_path):
    pipeline = Pipeline(runs["ddpm"])
    own = pipeline.loaded.config.sample
    assert (own.sampler, own.steps, own.spacing) == (Sampler.DDIM, 3, Spacing.LEADING)
    model = measure.Model("ddpm", runs["ddpm"], pipeline)
    served = ServedModel("ddpm", pipeline)
    common = benchmarks_common()
    assert list(common.SAMPLERS) == ["dpmpp", "ddim", "ddpm"]
    for sampler in common.SAMPLERS:
        expected = sampler_settings(own, sampler, T)
        assert common.sampler_config(own, sampler, T) == expected
        assert model.settings(sampler) == expected
        assert sample_settings(own, SampleOverrides(sampler=sampler), T) == expected  # sample, denoise, Pipeline
        request = Request(objects=("red cube",), sampler=sampler, seed=5)
        assert served.settings(request, Limits(max_steps=T)) == dataclasses.replace(expected, seed=5)
    out = tmp_path / "dpmpp"
    argv = ["sample", "--run", str(runs["ddpm"]), "--objects", "red cube", "--out", str(out), "--sampler", "dpmpp"]
    assert main(argv) == 0
    assert json.loads((out / "scores.json").read_text())["sample"] == config_to_dict(model.settings("dpmpp"))


def test_a_benchmark_and_condgen_report_score_a_model_alike_with_every_sampler(runs, tmp_path):
    evaluator = load_evaluator(runs["evaluator"])
    label_file = tmp_path / "few.json"
    label_file.write_text(json.dumps(json.loads((runs["data"] / "test.json").read_text())[:2]))
    labels = load_label_file(label_file, evaluator.codec)
    model = measure.Model("ddpm", runs["ddpm"], Pipeline(runs["ddpm"]))
    loaded = model.pipeline.loaded
    common = benchmarks_common()
    for sampler in common.SAMPLERS:
        reported = measure.quality(model, sampler, labels, evaluator, seeds=2)
        sample = common.sampler_config(loaded.config.sample, sampler, loaded.diffusion.num_steps)
        seeded = functools.partial(common.seeded_images, common.image_maker(loaded), sample)
        made: list[torch.Tensor] = []  # the benchmark's images, seed by seed
        folder = tmp_path / sampler
        benchmarked = common.score_label_file(kept(seeded, made), evaluator, label_file, 2, folder, folder / "grid.png")
        assert torch.equal(made[0], reported.first), sampler
        for key in ("accuracy", "exact_set"):
            assert benchmarked[f"{key}_few"] == reported.figures[key]["mean"], (sampler, key)
            assert benchmarked[f"{key}_few_by_seed"] == reported.figures[key]["by_seed"], (sampler, key)
        assert model.network_evaluations(sampler) == network_evaluations(sample, loaded.diffusion.num_steps)


def test_a_ranker_given_for_one_sampling_leaves_the_loaded_model_as_it_was(runs, tmp_path):
    torch.manual_seed(1)
    ranker = tmp_path / "ranker.safetensors"
    save_evaluator(build_resnet18_evaluator(24), LabelCodec.iclevr(), ranker)
    loaded = load_generator(runs["ddpm"], "best")
    assert loaded.ranker is None
    ranking = sample_ranking(loaded, ranker, None)
    assert ranking is not None and loaded.ranker is None and loaded.ranking() is None
    with pytest.raises(CondgenError, match="the --evaluator scores the images; it cannot rank them"):
        sample_ranking(loaded, ranker, ranker)
