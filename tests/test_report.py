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
from condgen.report import command, measure

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
    for key in measure.QUALITY_KEYS:
        values = [round(scores[key], 4) for scores in by_seed]
        assert result["test"][key]["by_seed"] == values
        assert result["test"][key]["mean"] == pytest.approx(sum(values) / 2, abs=1e-4)
    assert result["network_evaluations"] == 1 and result["parameters"] == sum(
        p.numel() for p in model.loaded.generator.parameters()
    )
    markdown = (tmp_path / "r" / "report.md").read_text()
    assert f"| gan / gan | 1 | {result['test']['accuracy']['mean']:.3f} ± " in markdown
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
    assert main(argv + change(runs, tmp_path)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not (tmp_path / "r").exists()


def a_file(folder):
    (folder / "notes.txt").write_text("kept")
    return folder / "notes.txt"


def other_evaluator(folder):
    """An evaluator of 2 objects other than i-CLEVR's."""
    path = folder / "other.safetensors"
    save_evaluator(build_resnet18_evaluator(2), LabelCodec(["red dot", "blue dot"]), path)
    return path
