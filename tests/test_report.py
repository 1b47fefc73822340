"""`condgen report`: its figures against a hand computation, its cache, its HTML in a headless browser, and one-line
errors for bad input. The models are tiny runs trained once for the module."""

import json
import shutil

import pytest
from conftest import headless_chromium, no_browser, train_tiny_runs

import condgen
from condgen.cli import main
from condgen.data.iclevr import load_dataset, load_label_file
from condgen.data.labels import LabelCodec
from condgen.evaluate.evaluator import build_resnet18_evaluator, load_evaluator, save_evaluator
from condgen.evaluate.metrics import COUNT_KEYS
from condgen.report import command, measure, render

TINY = {
    "ddpm": ["model.channels=16", "model.channel_mults=[1,2]", "model.attention_resolutions=[16]", "model.heads=2",
             "diffusion.num_steps=10", "sample.steps=3"],
    "gan": ["model.g_channels=8", "model.d_channels=8", "model.noise_dim=16", "model.label_dim=16"],
}  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory, synth_template):
    """A ddpm run and a gan run, two training steps each, and a known (random, saved) evaluator."""
    root = tmp_path_factory.mktemp("report")
    scorer = train_tiny_runs(root, synth_template, TINY)
    return {"root": root, "evaluator": scorer, "data": synth_template, **{kind: root / kind for kind in TINY}}


def report(runs, out, *models, extra=()):
    argv = ["report", "--runs", *map(str, models), "--out", str(out), "--data", str(runs["data"])]
    return main([*argv, "--evaluator", str(runs["evaluator"]), "--seeds", "2", *extra])


def test_the_figures_are_the_evaluators_on_the_models_own_images(runs, tmp_path):
    assert report(runs, tmp_path / "r", runs["gan"], extra=["--samplers", "gan"]) == 0
    (result,) = json.loads((tmp_path / "r" / "report.json").read_text())["results"]
    evaluator = load_evaluator(runs["evaluator"])
    labels = load_label_file(runs["data"] / "test.json", evaluator.codec)
    requests = [", ".join(evaluator.codec.decode(row)) for row in labels]
    model = condgen.load(runs["gan"])
    by_seed = [evaluator.measure(model.generate(requests, seed=seed), labels) for seed in (0, 1)]
    assert evaluator.counter is not None  # i-CLEVR's objects: the shipped counter counts beside the evaluator
    for key in measure.QUALITY_KEYS + COUNT_KEYS:
        values = [round(scores[key], 4) for scores in by_seed]
        assert result["test"][key]["by_seed"] == values
        assert result["test"][key]["mean"] == pytest.approx(sum(values) / 2, abs=1e-4)
    assert result["network_evaluations"] == 1 and result["parameters"] == sum(
        p.numel() for p in model.loaded.generator.parameters()
    )
    markdown = (tmp_path / "r" / "report.md").read_text()
    assert f"| gan / gan | 1 | {result['test']['accuracy']['mean']:.3f} ± " in markdown
    assert "| exact set test | exact set new_test | exact scene test | exact scene new_test |" in markdown
    test = result["test"]
    counted = f"| gan / gan | {test['count_exact']['mean']:.3f} / {test['extra_objects']['mean']:.3f} |"
    assert "## Objects counted: count-exact rate / share with extra objects" in markdown and counted in markdown
    assert "real images (held out)" not in markdown  # judged by another evaluator: the shipped one's ceiling is not its
    header = json.loads((tmp_path / "r" / "report.json").read_text())
    assert header["counter"].startswith("shipped i-CLEVR counter (sha256 ") and header["real_image_ceiling"] is None
    for picture in ["nfe.png", "time.png", "training.png", "images/gan-gan-test.png", "images/gan-interpolation.png"]:
        assert (tmp_path / "r" / picture).is_file(), picture


def test_the_frechet_distance_compares_images_generated_for_the_datas_labels_with_its_real_images(
    runs, tmp_path, monkeypatch, capsys
):
    assert report(runs, tmp_path / "none", runs["gan"], extra=["--samplers", "gan"]) == 0
    assert "no Fréchet distance: --data holds 30 images" in capsys.readouterr().out  # too few for 512-d features
    monkeypatch.setattr(command, "FEATURES", 8)  # what 30 images can estimate
    assert report(runs, tmp_path / "r", runs["gan"], extra=["--samplers", "gan", "--frechet-images", "40"]) == 0
    (result,) = json.loads((tmp_path / "r" / "report.json").read_text())["results"]
    evaluator = load_evaluator(runs["evaluator"])
    real, labels = command.frechet_reference(load_dataset(runs["data"], progress=False), 40, evaluator)
    assert len(real) == 30 and len(labels) == 40
    generated = condgen.load(runs["gan"]).generate(measure.requests_of(labels, evaluator), seed=0)
    assert result["frechet_distance"] == measure.fid_to_real(evaluator.features(generated), real)


def test_a_second_report_with_one_more_model_measures_only_that_one(runs, tmp_path, monkeypatch):
    assert report(runs, tmp_path / "one", runs["gan"], extra=["--samplers", "gan,dpmpp"]) == 0
    measured = []
    real_quality = measure.quality
    monkeypatch.setattr(measure, "quality", lambda model, sampler, *a, **k: measured.append((model.name, sampler))
                        or real_quality(model, sampler, *a, **k))  # fmt: skip
    assert report(runs, tmp_path / "two", runs["gan"], runs["ddpm"], extra=["--samplers", "gan,dpmpp"]) == 0
    assert set(measured) == {("ddpm", "dpmpp")}
    first = json.loads((tmp_path / "one" / "report.json").read_text())["results"][0]
    assert json.loads((tmp_path / "two" / "report.json").read_text())["results"][0] == first


def figures(*values):
    return {"mean": sum(values) / len(values), "by_seed": list(values), "spread": max(values) - min(values)}


def hand_result(name, counted):
    """A measured model-and-sampler result, written by hand: with the counter's figures where ``counted``."""
    scored = {"accuracy": figures(0.9, 0.8), "exact_set": figures(0.7, 0.5)}
    scored |= {"precision": figures(0.95), "recall": figures(0.85)}
    if counted:
        scored |= {"count_exact": figures(0.6), "exact_scene": figures(0.4, 0.2), "extra_objects": figures(0.3)}
    cost = {"seconds_per_image_batch_1": 0.1, "images_per_second_best": 40, "best_batch": 8, "peak_memory_mb": 9}
    cost |= {"network_evaluations": 1, "parameters": 2e6, "diversity": 1.5}
    return {"model": name, "sampler": "gan", "test": scored, **cost}


CEILING = {"accuracy": 0.99, "exact_set": 0.98, "precision": 0.97, "recall": 0.96, "count_exact": 1.0,
           "exact_scene": 0.95, "extra_objects": 0.0}  # fmt: skip


def test_the_tables_show_the_count_aware_rates_and_end_with_the_real_image_ceiling():
    header = {"files": {"test": 2}, "real_image_ceiling": CEILING}
    quality, objects, counts, seeds, *_ = render.tables(header, [hand_result("a", True)], {})
    assert quality[0].startswith("Quality: top-k accuracy, exact-set rate and exact-scene rate")
    assert quality[1][2:] == ["accuracy test", "exact set test", "exact scene test"]
    assert quality[2] == [["a / gan", 1, "0.850 ± 0.050", "0.600 ± 0.100", "0.300 ± 0.100"],
                          ["real images (held out)", "-", "0.990", "0.980", "0.950"]]  # fmt: skip
    assert objects[2][-1] == ["real images (held out)", "0.970 / 0.960"]
    assert counts[2] == [["a / gan", "0.600 / 0.300"], ["real images (held out)", "1.000 / 0.000"]]
    assert seeds[1][-1] == "exact scene by seed" and seeds[2] == [["a / gan", "test", "0.900, 0.800", "0.700, 0.500",
                                                                  "0.400, 0.200"]]  # fmt: skip


def test_without_a_counter_the_tables_keep_their_set_measures_alone():
    header = {"files": {"test": 2}}
    titles = [title for title, _, _ in render.tables(header, [hand_result("a", False)], {})]
    assert titles[0] == "Quality: top-k accuracy and exact-set rate (mean ± half the spread over seeds)"
    assert not any("counted" in title for title in titles)
    quality = render.tables(header, [hand_result("a", False)], {})[0]
    assert quality[1][-1] == "exact set test" and len(quality[2]) == 1  # no ceiling row without one
    mixed = render.tables(header, [hand_result("a", False), hand_result("b", True)], {})
    assert mixed[0][2][0][-1] == "-" and mixed[2][2][0] == ["a / gan", "-"]  # a result measured without a counter


@pytest.mark.skipif(bool(no_browser()), reason=no_browser() or "-")
def test_the_html_is_one_self_contained_page_that_a_browser_opens_without_errors(runs, tmp_path):
    assert report(runs, tmp_path / "r", runs["gan"], extra=["--samplers", "gan"]) == 0
    shutil.rmtree(tmp_path / "r" / "images")  # inlined: the page needs no file beside it
    driver = headless_chromium()
    try:
        driver.get((tmp_path / "r" / "report.html").as_uri())
        assert driver.title == "condgen report"
        widths = driver.execute_script("return [...document.images].map(i => i.naturalWidth)")
        assert len(widths) >= 4 and all(width > 0 for width in widths)
        assert "gan / gan" in driver.find_element("tag name", "table").text
        errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        assert not errors
    finally:
        driver.quit()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda runs, tmp: ["--runs", str(runs["data"])], "not a training run or model folder (no run.json)"),
        (lambda runs, tmp: ["--runs", str(runs["gan"]), "--samplers", "euler"], "--samplers: unknown euler"),
        (lambda runs, tmp: ["--runs", str(runs["gan"]), "--samplers", "ddim"], "none of them applies"),
        (lambda runs, tmp: ["--runs", str(runs["gan"]), "--evaluator", str(other_evaluator(tmp))], "objects differ"),
        (lambda runs, tmp: ["--runs", str(runs["gan"]), "--frechet-images", "100"], "below the 512 feature dim"),
        (lambda runs, tmp: ["--runs", str(runs["gan"]), "--out", str(a_file(tmp))], "a file, not a folder"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(runs, tmp_path, capsys, change, message):
    argv = ["report", "--out", str(tmp_path / "r"), "--data", str(runs["data"]), "--seeds", "1"]
    argv += ["--evaluator", str(runs["evaluator"])]
    try:
        status = main(argv + change(runs, tmp_path))
    except SystemExit as refused:  # the parser's own refusal: its usage, then the one line that says why
        status = refused.code
    err = capsys.readouterr().err
    assert status == 2 and message in err.splitlines()[-1]
    assert err.count("\n") == 1 or err.startswith("usage: condgen report")
    assert not (tmp_path / "r").exists()


def a_file(folder):
    (folder / "notes.txt").write_text("kept")
    return folder / "notes.txt"


def other_evaluator(folder):
    """An evaluator of 2 objects other than i-CLEVR's."""
    path = folder / "other.safetensors"
    save_evaluator(build_resnet18_evaluator(2), LabelCodec(["red dot", "blue dot"]), path)
    return path
