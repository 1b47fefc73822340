import argparse
import importlib
import json
import math

import numpy as np
import pytest
import torch

from condgen.cli import build_parser, main
from condgen.data.iclevr import load_dataset
from condgen.data.imageio import save_png, to_signed
from condgen.data.labels import LabelCodec
from condgen.evaluate.counter import DensityCounter, real_image_ceiling, save_counter
from condgen.evaluate.evaluator import build_resnet18_evaluator, load_evaluator, save_evaluator
from condgen.evaluate.metrics import exact_sets
from condgen.pretrained import SHIPPED


@pytest.fixture
def scored_batch(dataset, tmp_path):
    """The small dataset's first 12 images as generated output, their labels, and an evaluator file."""
    data = load_dataset(dataset, progress=False)
    images, labels = data.images[:12], [data.codec.decode(v) for v in data.labels[:12]]
    (tmp_path / "labels.json").write_text(json.dumps(labels))
    torch.manual_seed(0)
    save_evaluator(build_resnet18_evaluator(24), LabelCodec.iclevr(), tmp_path / "e.safetensors")
    expected = load_evaluator(tmp_path / "e.safetensors").accuracy(to_signed(images), data.labels[:12])
    return tmp_path, images, expected


def evaluate_json(capsys, images, folder):
    code = main(
        [
            "evaluate",
            "--images",
            str(images),
            "--labels",
            str(folder / "labels.json"),
            "--evaluator",
            str(folder / "e.safetensors"),
            "--json",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    return json.loads(out)


def test_evaluate_gives_the_same_accuracy_for_every_input_format(scored_batch, capsys):
    folder, images, expected = scored_batch
    (folder / "pngs").mkdir()
    for i, image in enumerate(images):
        save_png(image, folder / "pngs" / f"{i}.png")
    torch.save(to_signed(images), folder / "batch.pt")
    np.save(folder / "batch.npy", images.numpy())
    for source in ["pngs", "batch.pt", "batch.npy"]:
        result = evaluate_json(capsys, folder / source, folder)
        assert result["accuracy"] == pytest.approx(expected, abs=1e-6)
        assert result["images"] == 12


def test_evaluate_resizes_larger_batches(scored_batch, capsys):
    folder, images, expected = scored_batch
    torch.save(torch.nn.functional.interpolate(to_signed(images), scale_factor=2, mode="nearest"), folder / "b.pt")
    assert evaluate_json(capsys, folder / "b.pt", folder)["accuracy"] == pytest.approx(expected, abs=0.1)


@pytest.mark.parametrize(
    ("batch", "message"),
    [
        (torch.zeros(5, 3, 64, 64), "holds 5 images but the label file has 12 label lists"),
        (torch.full((12, 3, 64, 64), 3.0), "float images must lie in [-1, 1]"),
        (torch.zeros(12, 64, 64), "expected a tensor of shape (N, 3, H, W)"),
    ],
)
def test_evaluate_rejects_bad_batches(scored_batch, capsys, batch, message):
    folder, _, _ = scored_batch
    torch.save(batch, folder / "bad.pt")
    code = main(
        [
            "evaluate",
            "--images",
            str(folder / "bad.pt"),
            "--labels",
            str(folder / "labels.json"),
            "--evaluator",
            str(folder / "e.safetensors"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1


def test_evaluate_names_a_missing_png(scored_batch, capsys):
    folder, _, _ = scored_batch
    (folder / "few").mkdir()
    code = main(
        [
            "evaluate",
            "--images",
            str(folder / "few"),
            "--labels",
            str(folder / "labels.json"),
            "--evaluator",
            str(folder / "e.safetensors"),
        ]
    )
    assert code == 2 and "0.png: image not found" in capsys.readouterr().err


def test_evaluate_a_dataset_folder_with_reference(dataset, scored_batch, capsys):
    folder, _, _ = scored_batch
    code = main(
        [
            "evaluate",
            "--data",
            str(dataset),
            "--evaluator",
            str(folder / "e.safetensors"),
            "--reference",
            str(dataset),
            "--json",
        ]
    )
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["images"] == 30 and 0 <= result["accuracy"] <= 1
    assert result["frechet_distance"] == pytest.approx(0, abs=1e-3)  # a set against itself


def commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """Every runnable command, as (its words, its parser)."""
    nested = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    if not nested:
        yield path, parser
        return
    for name, child in nested[0].choices.items():
        yield from commands(child, (*path, name))


COMMANDS = dict(commands(build_parser()))


@pytest.mark.parametrize("argv", [[], ["data"], ["train"], *map(list, COMMANDS)], ids=" ".join)
def test_every_command_has_help(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([*argv, "--help"])
    assert exit_info.value.code == 0 and "usage: condgen" in capsys.readouterr().out


def test_every_command_sets_a_handler_that_imports():
    assert {"sample", "export", "serve", "gradnorm", "demo"} <= {path[0] for path in COMMANDS}
    assert ("train", "evaluator") in COMMANDS and ("data", "check") in COMMANDS
    for path, parser in COMMANDS.items():
        module, _, function = parser.get_default("handler").args[0].partition(":")
        assert callable(getattr(importlib.import_module(module), function)), path


def test_the_evaluator_trains_through_train_evaluator_only(capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["evaluator", "train", "--data", "d", "--out", "o"])
    assert exit_info.value.code == 2 and "invalid choice: 'evaluator'" in capsys.readouterr().err


def test_the_handler_runs_the_command(dataset, capsys):
    from condgen.data.check import check_dataset, format_report

    args = build_parser().parse_args(["data", "check", str(dataset)])
    assert args.handler(args) == 0
    printed = capsys.readouterr().out
    assert printed == format_report(check_dataset(dataset)) + "\n"


def test_demo_smoke_run(tmp_path, capsys, monkeypatch):
    import condgen.demo
    from condgen.diffusion.sampling import SampleOverrides

    tiny = ["model.channels=16", "model.channel_mults=[1,2]", "model.attention_resolutions=[8]", "sample.steps=2"]
    monkeypatch.setattr(condgen.demo, "DEMO_LDM", condgen.demo.DEMO_LDM + tiny)  # the plumbing, not the CPU
    monkeypatch.setattr(condgen.demo, "SHIPPED_SAMPLING", SampleOverrides(steps=2))
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--n", "30", "--epochs", "1", "--train-minutes", "0.02"]) == 0
    printed = capsys.readouterr().out
    assert "evaluator accuracy on unseen rendered scenes" in printed and "generated test.json: accuracy" in printed
    assert "exact-set rate: the share of images" in printed
    for name in SHIPPED:
        assert f"The shipped model {name}" in printed
        for file in ("test/grid.png", "new_test/31.png", "new_test/scores.json"):
            assert (out / "pretrained" / name / file).is_file(), file
        assert len(list((out / "pretrained" / name).glob("*.png"))) == 1  # its denoising or interpolation picture
    for path in [
        "data/train.json",
        "evaluator/evaluator.safetensors",
        "evaluator/evaluator.json",
        "heldout/train.json",
        "ldm/checkpoints/latest",
        "samples/grid.png",
        "samples/31.png",
        "samples/scores.json",
        "denoise.png",
    ]:
        assert (out / path).is_file(), path
    assert main(["demo", "--out", str(out)]) == 2  # a second run must not overwrite the first


def test_evaluate_reports_the_exact_set_rate_at_the_threshold_it_is_given(scored_batch, capsys):
    from condgen.evaluate.metrics import set_scores

    folder, images, _ = scored_batch
    torch.save(to_signed(images), folder / "batch.pt")
    labels = load_dataset(folder / "data", progress=False).labels[:12]
    probabilities = load_evaluator(folder / "e.safetensors").scores(to_signed(images))
    threshold = float(probabilities.median())  # a random evaluator's outputs sit near 0.5: use their median
    code = main(
        ["evaluate", "--images", str(folder / "batch.pt"), "--labels", str(folder / "labels.json")]
        + ["--evaluator", str(folder / "e.safetensors"), "--threshold", str(threshold), "--json"]
    )
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["threshold"] == threshold
    expected = set_scores(probabilities, labels, threshold)
    assert {key: result[key] for key in expected} == pytest.approx(expected)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["evaluate", "--images", "b.pt", "--labels", "l.json", "--threshold", "1.5"])


def test_a_seed_torch_cannot_take_is_refused_before_anything_is_written(tmp_path, capsys):
    """Seeds stop at 2^32 - 1, as on the page: torch overflows on 2^64 and above."""
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        main(["sample", "--model", "iclevr-gan", "--objects", "red cube", "--seed", str(2**70), "--out", str(out)])
    assert exit_info.value.code == 2 and not out.exists()
    assert "--seed: must be a whole number from 0 to 4294967295" in capsys.readouterr().err


def steady_counter(path, counts: dict[int, float]):
    """A counter that sees the same objects in every image: ``counts`` maps an object's index to its instances."""
    counter = DensityCounter(24, width=4)
    torch.nn.init.zeros_(counter.density.weight)  # the image plays no part
    bias = torch.full((24,), -40.0)  # softplus(-40) per cell: no instance
    for index, instances in counts.items():
        bias[index] = math.log(math.expm1(instances / 64))  # softplus of it, summed over the 8x8 cells
    counter.density.bias.data = bias
    save_counter(counter, LabelCodec.iclevr(), path)
    return path


def test_evaluate_counts_objects_with_the_counter_it_is_given(scored_batch, capsys):
    folder, images, _ = scored_batch
    torch.save(to_signed(images), folder / "batch.pt")
    counter = steady_counter(folder / "two.safetensors", {0: 2.0})  # two gray cubes in every image
    argv = ["evaluate", "--images", str(folder / "batch.pt"), "--labels", str(folder / "labels.json")]
    argv += ["--evaluator", str(folder / "e.safetensors"), "--counter", str(counter)]
    assert main([*argv, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    labels = load_dataset(folder / "data", progress=False).labels[:12]
    requested = labels.sum(dim=1)
    assert 0 < int((requested == 2).sum()) < 12  # the images ask for one to three objects
    exact = exact_sets(load_evaluator(folder / "e.safetensors").scores(to_signed(images)), labels)
    assert result["count_exact"] == pytest.approx(float((requested == 2).float().mean()))
    assert result["exact_scene"] == pytest.approx(float(((requested == 2) & exact).float().mean()))
    assert result["extra_objects"] == pytest.approx(float((requested < 2).float().mean()))
    assert result["counter"] == str(counter) and "real_images" not in result  # no ceiling for other judges
    assert main(argv) == 0
    printed = capsys.readouterr().out.splitlines()
    assert f"count-exact rate: {result['count_exact']:.4f} (as many objects counted as requested)" in printed
    assert f"exact-scene rate: {result['exact_scene']:.4f} (every requested object once, nothing else)" in printed
    assert f"extra objects: {result['extra_objects']:.4f} (images holding more objects than requested)" in printed


def test_evaluate_with_the_shipped_judges_shows_their_figures_on_real_images(scored_batch, capsys):
    folder, images, _ = scored_batch
    torch.save(to_signed(images), folder / "batch.pt")
    argv = ["evaluate", "--images", str(folder / "batch.pt"), "--labels", str(folder / "labels.json")]
    assert main([*argv, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    ceiling = real_image_ceiling()
    assert result["real_images"] == ceiling and result["counter"] == "shipped i-CLEVR counter"
    assert {"count_exact", "exact_scene", "extra_objects"} <= result.keys()
    assert main(argv) == 0
    printed = capsys.readouterr().out
    scene = f"exact-scene rate: {result['exact_scene']:.4f} (every requested object once, nothing else; real images"
    assert f"{scene} {ceiling['exact_scene']:.4f})" in printed
    assert f"accuracy: {result['accuracy']:.4f} (12 images, {result['objects']} objects; real images " in printed


def test_evaluate_without_a_counter_for_the_objects_says_so(tmp_path, capsys):
    save_evaluator(build_resnet18_evaluator(2), LabelCodec(["red dot", "blue dot"]), tmp_path / "dots.safetensors")
    (tmp_path / "labels.json").write_text(json.dumps([["red dot"], ["blue dot", "red dot"]]))
    torch.save(torch.zeros(2, 3, 64, 64), tmp_path / "batch.pt")
    argv = ["evaluate", "--images", str(tmp_path / "batch.pt"), "--labels", str(tmp_path / "labels.json")]
    argv += ["--evaluator", str(tmp_path / "dots.safetensors")]
    assert main([*argv, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert not {"count_exact", "exact_scene", "extra_objects", "counter", "real_images"} & result.keys()
    assert main(argv) == 0
    assert "no object counter knows these objects: no count-aware rates" in capsys.readouterr().out
    counter = steady_counter(tmp_path / "counter.safetensors", {0: 1.0})  # of i-CLEVR's 24 objects
    assert main([*argv, "--counter", str(counter)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "counter.safetensors: its objects differ from the evaluator's vocabulary" in err


@pytest.mark.parametrize("counted", [True, False])
def test_sample_prints_the_count_aware_rates_beside_top_k_and_the_exact_set(tmp_path, capsys, monkeypatch, counted):
    import condgen.generate

    scores = {"images": 4, "accuracy": 0.875, "exact_set": 0.75, "precision": 0.9, "recall": 0.8}
    scores |= {"count_exact": 0.5, "exact_scene": 0.25, "extra_objects": 0.5} if counted else {}
    monkeypatch.setattr(condgen.generate, "sample_command", lambda args: scores)
    assert main(["sample", "--model", "iclevr-gan", "--objects", "red cube", "--out", str(tmp_path / "o")]) == 0
    printed = capsys.readouterr().out
    assert "accuracy 0.8750, exact-set rate 0.7500" in printed
    counts = "count-exact rate 0.5000, exact-scene rate 0.2500, extra objects 0.5000"
    assert (counts in printed) == counted
