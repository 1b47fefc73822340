"""The object counter: the composites it learns from, its training run, its weights and its place in the evaluator."""

import shutil

import pytest
import torch
from safetensors.torch import load_file

from condgen.cli import main
from condgen.data.composites import cut_out, paste_objects
from condgen.data.iclevr import load_dataset
from condgen.data.labels import LabelCodec
from condgen.errors import CondgenError
from condgen.evaluate.counter import DensityCounter, load_counter, save_counter
from condgen.evaluate.evaluator import Evaluator, build_resnet18_evaluator, load_evaluator
from condgen.train.counter import CounterOptimConfig, composites

TINY_RUN = [
    "optim.epochs=0",
    "loop.steps=4",
    "loop.eval_every=2",
    "loop.checkpoint_every=2",
    "optim.batch_size=8",
    "val_composites=8",
    "val_rendered=8",
    "optim.rendered_scenes=16",
    "width=4",
    "device=cpu",
]


@pytest.fixture(scope="module")
def triples(synth_template):
    """The rendered set: ten scenes, each drawn with one, two and three objects like i-CLEVR."""
    return load_dataset(synth_template, progress=False)


def test_every_scene_gives_its_second_and_third_object_as_a_sprite(triples):
    cut = cut_out(triples, torch.arange(len(triples)))
    assert len(cut.sprites) == 20 and len(cut.views) == 30
    index = {name: i for i, name in enumerate(triples.files)}
    second = triples.labels[index["scene_000000_1.png"]] - triples.labels[index["scene_000000_0.png"]]
    assert int(cut.sprite_classes[0]) == int(second.argmax())
    # the sprite's coverage lies where its view differs from the view before it, and nowhere else
    difference = triples.images[index["scene_000000_1.png"]].float() - triples.images[index["scene_000000_0.png"]]
    assert ((cut.coverage[0] > 0) == (difference.abs().amax(0) > 4)).all()
    assert cut.coverage[0].max() == 1 and cut.occupied[0].any()


def test_a_pasted_object_lands_where_nothing_stands_and_one_that_cannot_is_left_out(triples):
    cut = cut_out(triples, torch.arange(len(triples)))
    view, sprite = 0, 5
    image = triples.images[int(cut.views[view])]
    pasted, classes = paste_objects(image, cut.occupied[view], cut, [sprite], torch.Generator().manual_seed(0))
    assert classes == [int(cut.sprite_classes[sprite])]
    changed = (pasted.int() - image.int()).abs().amax(0) > 0
    assert changed.any() and not (changed & cut.occupied[view]).any()
    full = torch.ones_like(cut.occupied[view])
    unchanged, none = paste_objects(image, full, cut, [sprite], torch.Generator().manual_seed(0))
    assert none == [] and torch.equal(unchanged, image)


def test_composites_count_every_pasted_copy(triples):
    cut = cut_out(triples, torch.arange(len(triples)))
    config = CounterOptimConfig(max_pasted=3, repeat_share=1.0)
    made = composites(triples, cut, 12, config, torch.Generator().manual_seed(0))
    assert made.images.dtype == torch.uint8 and made.images.shape == (12, 3, 64, 64)
    assert (made.counts.sum(1) >= 2).all() and (made.counts.max(1).values >= 2).any()  # repeats of held objects


def train(dataset, out, *extra):
    main(["train", "counter", "--data", str(dataset), "--out", str(out), *TINY_RUN, *extra])


def test_a_counter_run_resumes_exactly_and_exports_weights_that_load(dataset, tmp_path):
    """Resumed from its step-2 checkpoint, a 4-step run ends with the weights of one never stopped: the composites
    and augmentations are drawn from the checkpointed generator, the rendered pool is the same every start."""
    runs = {name: tmp_path / name for name in ("whole", "resumed")}
    for run in runs.values():
        train(dataset, run, "loop.keep_checkpoints=10")
    checkpoints = runs["resumed"] / "checkpoints"
    shutil.rmtree(checkpoints / "step-0000004")
    (checkpoints / "latest").write_text("step-0000002\n")
    main(["train", "counter", "--data", str(dataset), "--out", str(runs["resumed"]), "--resume"])
    whole, resumed = (load_file(r / "checkpoints" / "step-0000004" / "model.safetensors") for r in runs.values())
    assert all(torch.equal(whole[name], resumed[name]) for name in whole)
    counter = load_counter(runs["whole"] / "counter.safetensors")
    assert counter.codec == LabelCodec.iclevr()
    assert counter.instances(torch.zeros(3, 3, 64, 64)).shape == (3, 24)


def test_a_file_that_is_no_counter_is_refused_in_one_line(evaluator_file, tmp_path):
    with pytest.raises(CondgenError, match="not a condgen object counter"):
        load_counter(evaluator_file)
    with pytest.raises(CondgenError, match="not found"):
        load_counter(tmp_path / "missing.safetensors")


def test_the_evaluator_reports_counts_with_the_shipped_counter_and_not_for_other_objects(tmp_path):
    evaluator = load_evaluator()
    assert evaluator.counter is not None
    measured = evaluator.measure(torch.zeros(2, 3, 64, 64), LabelCodec.iclevr().encode_many([["red cube"]] * 2))
    assert {"count_exact", "exact_scene", "extra_objects"} <= measured.keys()
    other = Evaluator(build_resnet18_evaluator(2), LabelCodec(["a", "b"]))
    assert "exact_scene" not in other.measure(torch.zeros(1, 3, 64, 64), torch.tensor([[1.0, 0.0]]))
    path = tmp_path / "other.safetensors"
    save_counter(DensityCounter(2, width=4), LabelCodec(["a", "b"]), path)
    with pytest.raises(CondgenError, match="differ from the evaluator's vocabulary"):
        load_evaluator(counter=path)
