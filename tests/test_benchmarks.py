"""Every script in benchmarks/ answers --help as `python benchmarks/X.py --help` from the repository root, and
finishes a tiny run: tiny models trained for two steps on the small rendered set, the results written to a temporary
folder (never benchmarks/results/), and the record each script writes holding what its docstring promises."""

import importlib
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import tiny_counter, train_tiny_runs

from condgen.cli import main
from condgen.errors import CondgenError, InterruptedTrainingError
from condgen.gan.trainer import GANRunConfig
from condgen.report import command
from condgen.train.config import load_config

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
SCRIPTS = sorted(path.stem for path in BENCHMARKS.glob("*.py") if path.stem not in ("common", "ship"))

TINY_UNET = {"channels": 8, "channel_mults": [1, 2], "attention_resolutions": [8], "heads": 1, "patch_size": 4}
UNET_OVERRIDES = [f"model.{key}={json.dumps(value, separators=(',', ':'))}" for key, value in TINY_UNET.items()]
TINY = {
    # T = 50: DDIM-50, the benchmarks' DDIM, needs 50 noise levels
    "ddpm": [*UNET_OVERRIDES, "diffusion.num_steps=50", "sample.steps=3"],
    "gan": ["model.architecture=s2d", "model.g_channels=8", "model.d_channels=8", "model.noise_dim=16",
            "model.label_dim=16", "model.conditioning=both", "optim.loss=hinge", "optim.n_critic=1"],
}  # fmt: skip
TINY_GAN = [*TINY["gan"], "optim.batch_size=4", "loop.steps=2", "device=cpu"]

# One fresh interpreter runs every script's --help as `python benchmarks/X.py --help` would (the script's folder
# first on sys.path, run as __main__); an interpreter per script would spend most of a minute importing torch.
HELP = """
import contextlib, io, json, runpy, sys
answers = {}
for path in sys.argv[1:]:
    sys.argv, sys.path[0], out = [path, "--help"], path.rsplit("/", 1)[0], io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            runpy.run_path(path, run_name="__main__")
        answers[path] = [None, out.getvalue()]
    except SystemExit as exit:
        answers[path] = [exit.code, out.getvalue()]
print(json.dumps(answers))
"""


@pytest.fixture(scope="module")
def helps() -> dict[str, tuple[int | None, str]]:
    paths = [f"benchmarks/{name}.py" for name in SCRIPTS]
    done = subprocess.run([sys.executable, "-c", HELP, *paths], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    answers = json.loads(done.stdout.splitlines()[-1])
    return {Path(path).stem: tuple(answer) for path, answer in answers.items()}


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_exits_0_and_shows_the_usage(helps, name):
    code, text = helps[name]
    assert code == 0 and text.startswith(f"usage: {name}.py"), text


def run(name: str, *args) -> object:
    """`python benchmarks/<name>.py ARGS` in this process: the script's ``main()`` with its command line, importing
    its sibling modules as a script run from the repository root does."""
    path = BENCHMARKS / f"{name}.py"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", [str(path), *map(str, args)])
        patch.syspath_prepend(str(BENCHMARKS))
        spec = importlib.util.spec_from_file_location(f"benchmark_{name}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.main()


@pytest.fixture(scope="module", autouse=True)
def tiny_run_settings(one_thread):
    """Tiny models on one thread; benchmarks/common.py, which the scripts import under the name ``common``, leaves
    with this module's tests."""
    yield
    sys.modules.pop("common", None)


@pytest.fixture(scope="module")
def tiny(synth_template, tmp_path_factory) -> dict[str, Path]:
    """The small rendered set with four requests per test file, two triples in a label file, and on it a ddpm run
    (T = 50), a noisy classifier for it and a gan run, two training steps each."""
    root = tmp_path_factory.mktemp("benchmarks")
    data = root / "data"
    data.mkdir()
    for file in synth_template.iterdir():
        (data / file.name).symlink_to(file)
    for name in ("test.json", "new_test.json"):
        (data / name).unlink()
        (data / name).write_text(json.dumps(json.loads((synth_template / name).read_text())[:4]))
    triples = root / "triples.json"
    triples.write_text(
        json.dumps([["red cube", "blue sphere", "gray cylinder"], ["cyan cube", "red sphere", "gray cube"]])
    )
    train_tiny_runs(root, data, TINY)
    argv = ["train", "classifier", "--data", str(data), "--out", str(root / "classifier"), *UNET_OVERRIDES]
    assert main([*argv, "diffusion.num_steps=50", "optim.batch_size=4", "loop.steps=2", "device=cpu"]) == 0
    runs = {name: root / name for name in ("ddpm", "classifier", "gan")}
    return {"data": data, "triples": triples, "scorer": root / "evaluator.safetensors", **runs}


def config_file(path: Path, settings: dict) -> Path:
    path.write_text(yaml.safe_dump(settings | {"device": "cpu"}))
    return path


def result(folder: Path, name: str) -> dict:
    return json.loads((folder / f"{name}.json").read_text())


def test_candidates_sweeps_k_on_train_json_lists(tiny, tmp_path):
    run("candidates", "--run", tiny["gan"], "--checkpoint", "latest", "--data", tiny["data"], "--candidates", "1,2",
        "--seeds", "2", "--lists", "4", "--name", "k", "--results", tmp_path)  # fmt: skip
    record = result(tmp_path, "k")
    assert record["command"].startswith("python benchmarks/candidates.py --run ")
    assert record["label_lists"] == "4 drawn from train.json (seed 0)"
    assert [row["candidates"] for row in record["by_candidates"]] == [1, 2]
    assert all(len(row["exact_set"]["by_seed"]) == 2 for row in record["by_candidates"])


def test_compositional_writes_the_split_and_checks_it(tiny, tmp_path):
    assert run("compositional", "--data", tiny["data"], "--out", tmp_path) == 0
    unseen, seen = (json.loads((tmp_path / f"{name}_triples.json").read_text()) for name in ("unseen", "seen"))
    assert len(unseen) + len(seen) == 2024 and len(seen) == 10  # of C(24, 3); the ten scenes' triples are seen
    assert run("compositional", "--data", tiny["data"], "--out", tmp_path, "--check") == 0
    (tmp_path / "seen_triples.json").write_text(json.dumps(seen[1:]) + "\n")
    assert run("compositional", "--data", tiny["data"], "--out", tmp_path, "--check") == 1


def test_counter_counts_real_scenes_composites_rendered_scenes_and_committed_images(tiny, tmp_path):
    counter = tiny_counter(tmp_path / "counter.safetensors")
    run("counter", "--counter", counter, "--data", tiny["data"], "--rendered", "6", "--composites", "4",
        "--name", "c", "--results", tmp_path)  # fmt: skip
    record = result(tmp_path, "c")
    assert set(record["real_images"]["scores"]) >= {"accuracy", "exact_set", "count_exact", "exact_scene"}
    assert record["composites"]["images"] == 4 and record["rendered"]["images"] == 6
    assert sum(row["images"] for row in record["rendered"]["by_count"].values()) == 6
    assert "iclevr-ldm/test" in record["generated"] and (tmp_path / "c" / "iclevr-ldm_test.png").is_file()


def test_data_renders_loads_and_draws_the_grids(tiny, tmp_path):
    run("data", "--real", tiny["data"], "--n", "12", "--results", tmp_path, "--grids", tmp_path / "grids")
    record = result(tmp_path, "data_cpu")
    assert record["render_images"] == 12 and record["real_images"] == 30
    assert {path.name for path in (tmp_path / "grids").iterdir()} == {"synth_samples.png", "iclevr_samples.png"}


def test_diffusion_trains_chooses_guidance_scores_and_a_later_pass_keeps_the_other_samplers(tiny, tmp_path):
    config = config_file(tmp_path / "ddpm.yaml", {
        "model": TINY_UNET, "diffusion": {"num_steps": 50}, "optim": {"batch_size": 4}, "loop": {"steps": 2},
        "sample": {"steps": 3},
    })  # fmt: skip
    common = ["--data", tiny["data"], "--run", tmp_path / "run", "--name", "d", "--results", tmp_path, "--seeds", "1",
              "--labels", tiny["triples"]]  # fmt: skip
    run("diffusion", *common, "--config", config, "--budget-minutes", "0.5", "--samplers", "ddim,ddpm",
        "--guidance", "1,2")  # fmt: skip
    first = result(tmp_path, "d")
    assert first["train_steps"] == 2 and set(first["samplers"]) == {"ddim", "ddpm"}
    selection = first["samplers"]["ddim"]["guidance_selection"]
    assert selection["label_lists"] == "30 drawn from train.json (seed 0)"
    assert list(selection["accuracy_by_scale"]) == ["1.0", "2.0"]
    assert first["samplers"]["ddpm"]["guidance_selection"] == selection  # DDPM takes DDIM's choice
    for stem in ("test", "new_test", "triples"):
        assert len(first["samplers"]["ddim"][f"accuracy_{stem}_by_seed"]) == 1
        assert (tmp_path / "d" / stem / "ddpm" / "0.png").is_file()

    # a scoring pass of one sampler keeps the other's results from the pass before, which scored the same run
    run("diffusion", *common, "--score-only", "--samplers", "ddim", "--guidance", "2")
    second = result(tmp_path, "d")
    assert second["samplers"]["ddim"]["guidance"] == 2.0 and "guidance_selection" not in second["samplers"]["ddim"]
    run("diffusion", *common, "--score-only", "--samplers", "ddpm", "--guidance", "2")
    third = result(tmp_path, "d")
    assert third["samplers"]["ddim"] == second["samplers"]["ddim"] | {"scored_on": second["date"]}
    assert third["samplers"]["ddpm"]["guidance"] == 2.0


def test_duplicates_scores_plain_ranked_and_counted_picks_from_one_pool(tiny, tmp_path):
    model = tmp_path / "model"  # the ddpm run with an image ranker of its own (any evaluator-format file)
    shutil.copytree(tiny["ddpm"], model)
    shutil.copy(tiny["scorer"], model / "ranker.safetensors")
    counter = tiny_counter(tmp_path / "counter.safetensors")
    run("duplicates", "--model", model, "--ranker-counter", counter, "--data", tiny["data"], "--guidance", "1,2",
        "--candidates", "2", "--lists", "2", "--tune", "2", "--name", "d", "--results", tmp_path)  # fmt: skip
    rows = result(tmp_path, "d")["rows"]
    assert [(row["guidance"], row["labels"]) for row in rows] == [
        (g, labels) for g in (1.0, 2.0) for labels in ("train_triples", "unseen_tune")
    ]
    picks = {"plain", "image ranker", "image ranker + counter", "any exact scene", "per candidate"}
    assert all(set(row["rows"]) == picks for row in rows)
    assert (tmp_path / "d" / "unseen_tune_guidance2" / "image_ranker_and_counter.png").is_file()


def test_evaluator_measures_the_shipped_file_on_held_out_scenes(tiny, tmp_path):
    (tmp_path / "evaluator_cpu.json").write_text(json.dumps({"held_out_accuracy_fp32": 0.99}))
    run("evaluator", "--shipped", "--data", tiny["data"], "--results", tmp_path)
    record = result(tmp_path, "evaluator_cpu")
    assert record["held_out_accuracy_fp32"] == 0.99  # the earlier record is added to, not replaced
    assert set(record["held_out_exact_set_by_threshold"]) == {"0.3", "0.5", "0.7"}


def test_frechet_guidance_measures_each_scale(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(command, "FEATURES", 8)  # what 30 real images can estimate
    run("frechet_guidance", "--data", tiny["data"], "--model", tiny["ddpm"], "--guidance", "1,3", "--images", "4",
        "--name", "f", "--results", tmp_path)  # fmt: skip
    record = result(tmp_path, "f")
    assert set(record["by_guidance"]) == {"1.0", "3.0"} and record["generated_images"] == 4


def test_fewstep_scores_each_jump_count_beside_another_model(tiny, tmp_path):
    autoencoder, student = tmp_path / "vae", tmp_path / "shortcut"
    common = ["--data", str(tiny["data"]), "--evaluator", str(tiny["scorer"]), "optim.batch_size=4", "loop.steps=2"]
    assert main(["train", "vae", "--out", str(autoencoder), *common, "model.channels=8", "device=cpu"]) == 0
    tiny_unet = ["model.channels=8", "model.channel_mults=[1,2]", "model.heads=1", "diffusion.num_steps=20"]
    argv = ["train", "shortcut", "--out", str(student), "--autoencoder", str(autoencoder), *common, *tiny_unet]
    assert main([*argv, "jumps.grid=4", "device=cpu"]) == 0
    run("fewstep", "--models", student, tiny["gan"], "--steps", "1,4", "--seeds", "2", "--data", tiny["data"],
        "--labels", tiny["triples"], "--train-lists", "3", "--speed", "2", "--name", "f",
        "--results", tmp_path)  # fmt: skip
    rows = result(tmp_path, "f")["rows"]
    # the GAN ranks no candidates here: one pass
    assert [(row.get("steps"), row["evaluations"]) for row in rows] == [(1, 1), (4, 4), (None, 1)]
    for row in rows:
        assert len(row["accuracy_test_by_seed"]) == 2 and 0 <= row["exact_scene_triples"] <= 1
        assert row["seconds_per_image_batch_2"] > 0 and "accuracy_train_lists" in row
    assert len(list((tmp_path / "f").rglob("test.png"))) == 3


def test_gan_trains_scores_and_plots(tiny, tmp_path):
    run("gan", "--data", tiny["data"], "--models", "hinge_s2d", "--budget-minutes", "0.5", "--seeds", "1",
        "--labels", tiny["triples"], "--runs", tmp_path / "runs", "--results", tmp_path, "--name", "g",
        "--set", *TINY_GAN)  # fmt: skip
    scored = result(tmp_path, "g")["models"]["hinge_s2d"]
    assert scored["train_steps"] == 2 and scored["config"]["model"]["g_channels"] == 8 and scored["curve"]
    assert len(scored["accuracy_triples_by_seed"]) == 1
    assert (tmp_path / "g" / "time_to_quality.png").is_file() and (tmp_path / "runs" / "bench_gan_hinge_s2d").is_dir()


def test_gan_tunes_a_trained_latent_gan_and_counts_the_minutes_it_started_from(tiny, tmp_path):
    autoencoder = config_file(tmp_path / "vae.yaml", {
        "model": {"channels": 8, "channel_mults": [1, 2, 2]}, "optim": {"batch_size": 4}, "loop": {"steps": 2},
    })  # fmt: skip
    common = ["--data", tiny["data"], "--seeds", "1", "--labels", tiny["triples"], "--runs", tmp_path / "runs",
              "--results", tmp_path, "--name", "g", "--set", *TINY_GAN]  # fmt: skip
    with pytest.raises(SystemExit):  # nothing to start from yet
        run("gan", "--models", "latent_hinge_s2d_bf16_third_reward", *common)
    run("gan", "--models", "latent_hinge_s2d_bf16_third", "--budget-minutes", "5", "--autoencoder-config",
        autoencoder, *common)  # fmt: skip
    run("gan", "--models", "latent_hinge_s2d_bf16_third_reward", "--checkpoint", "latest", *common)
    models = result(tmp_path, "g")["models"]
    base, tuned = models["latent_hinge_s2d_bf16_third"], models["latent_hinge_s2d_bf16_third_reward"]
    started = tuned["started"]
    assert started["from"] == "latent_hinge_s2d_bf16_third" and started["encode_minutes"] > 0
    # the base run's minutes until the best checkpoint the fine-tune starts from
    until_best = next(point["minutes"] for point in base["curve"] if point["step"] == base["best_step"])
    assert started["from_minutes"] == until_best <= base["minutes_until_sampling"]
    assert tuned["checkpoint"] == "latest" and base["checkpoint"] == "best"
    total = started["from_minutes"] + started["encode_minutes"] + tuned["train_minutes"]
    assert tuned["minutes_until_sampling"] == pytest.approx(total, abs=0.02)
    assert tuned["config"]["init"] == str(tmp_path / "runs" / "bench_gan_latent_hinge_s2d_bf16_third")
    assert tuned["config"]["reward"]["ranker"].endswith("iclevr-ldm/ranker.safetensors")
    assert tuned["curve"][0]["minutes"] >= started["from_minutes"] + started["encode_minutes"]


def test_latent_trains_an_autoencoder_then_the_diffusion_model_and_scores_it(tiny, tmp_path):
    autoencoder = config_file(tmp_path / "vae.yaml", {
        "model": {"channels": 8, "channel_mults": [1, 2, 2]}, "optim": {"batch_size": 4}, "loop": {"steps": 2},
    })  # fmt: skip
    ldm = config_file(tmp_path / "ldm.yaml", {
        "model": {"channels": 8, "channel_mults": [1, 2], "attention_resolutions": [8], "heads": 1},
        "diffusion": {"num_steps": 20}, "optim": {"batch_size": 4}, "loop": {"steps": 2}, "sample": {"steps": 3},
    })  # fmt: skip
    run("latent", "--data", tiny["data"], "--budget-minutes", "5", "--autoencoder-minutes", "1",
        "--autoencoder-config", autoencoder, "--config", ldm, "--runs", tmp_path / "runs", "--results", tmp_path,
        "--name", "l", "--samplers", "dpmpp", "--guidance", "2", "--seeds", "1", "--labels")  # fmt: skip
    record = result(tmp_path, "l")
    assert record["autoencoder"]["kind"] == "vae" and record["diffusion"]["train_steps"] == 2
    assert set(record["samplers"]) == {"dpmpp"} and "accuracy_new_test" in record["samplers"]["dpmpp"]


def test_loader_measures_both_modes_on_both_sets(tiny, tmp_path):
    run("loader", "--real", tiny["data"], "--n", "12", "--batches", "2", "--results", tmp_path)
    datasets = result(tmp_path, "loader_cpu")["datasets"]
    assert set(datasets) == {"iclevr", "synth_12"}
    for entry in datasets.values():
        assert entry["memory"]["batch_images_per_second"] > 0 and entry["mapped"]["batch_images_per_second"] > 0


def test_object_guidance_gives_a_row_per_variant(tiny, tmp_path):
    run("object_guidance", "--run", tiny["ddpm"], "--classifier", tiny["classifier"], "--checkpoint", "latest",
        "--labels", tiny["triples"], "--variants", "plain", "compose:1", "contrast:0.5", "--candidates", "2",
        "--guidance", "2", "--name", "o", "--results", tmp_path)  # fmt: skip
    record = result(tmp_path, "o")
    assert [(row["variant"], row["weight"]) for row in record["rows"]] == [
        ("plain", 0.0),
        ("compose", 1.0),
        ("contrast", 0.5),
    ]
    assert record["sampler"]["steps"] == 50 and record["labels"].startswith("2 from triples.json, 2 samples each")


def test_ranking_gives_a_row_per_setting(tiny, tmp_path):
    run("ranking", "--run", tiny["ddpm"], "--classifier", tiny["classifier"], "--data", tiny["data"], "--lists", "4",
        "--settings", "none", "classifier_scale=1,candidates=2", "--sampler", "dpmpp", "--name", "r",
        "--results", tmp_path)  # fmt: skip
    record = result(tmp_path, "r")
    assert [row["setting"] for row in record["rows"]] == ["none", {"classifier_scale": 1.0, "candidates": 2}]
    assert record["labels"] == "4 from train.json (permutation seed 0)"


def test_ranking_pool_ranks_one_pool_with_each_classifier_and_their_ensemble(tiny, tmp_path):
    rival = tmp_path / "rival"
    rival.symlink_to(tiny["classifier"])
    run("ranking", "--run", tiny["ddpm"], "--classifier", tiny["classifier"], "--labels", tiny["triples"], "--pool",
        "2", "--rivals", rival, "--sampler", "dpmpp", "--name", "p", "--results", tmp_path)  # fmt: skip
    rows = result(tmp_path, "p")["rows"]
    rankers = [str(tiny["classifier"]), str(rival), "ensemble"]
    assert [(row["ranker"], row["candidates"]) for row in rows] == [(r, k) for r in rankers for k in (1, 2)]
    by_ranker = {(row["ranker"], row["candidates"]): row["ranked_exact_set"] for row in rows}
    assert by_ranker[(str(rival), 2)] == by_ranker[(str(tiny["classifier"]), 2)]  # the same weights pick alike


def test_rankers_ranks_one_pool_with_each_ranker(tiny, tmp_path):
    model = tmp_path / "model"  # the ddpm run, best of 2 by an image ranker of its own (any evaluator-format file)
    shutil.copytree(tiny["ddpm"], model)
    shutil.copy(tiny["scorer"], model / "ranker.safetensors")
    config = yaml.safe_load((model / "config.yaml").read_text())
    config["sample"]["candidates"] = 2
    (model / "config.yaml").write_text(yaml.safe_dump(config))
    run("rankers", "--model", model, "--rankers", tiny["scorer"], "--seeds", "1", "--labels", tiny["triples"],
        "--name", "x", "--results", tmp_path)  # fmt: skip
    files = result(tmp_path, "x")["files"]
    assert set(files) == {"test", "new_test", "triples"}
    assert len(files["triples"]["any_exact_scene"]) == 1 and len(files["test"][str(tiny["scorer"])]) == 1
    assert files["test"]["own_reproduced"] == [0.0]  # its own ranker on the pool keeps what `sample` keeps
    rival = files["test"][str(tiny["scorer"])][0]  # the folder's own ranker file, given again: the same picks
    assert rival["same_picks_as_own"] == 1.0 and {"exact_scene", "extra_objects"} <= set(rival)
    assert (tmp_path / "x" / f"triples_{tiny['scorer'].parent.name}_evaluator.safetensors_grid.png").is_file()
    run("rankers", "--model", model, "--rankers", tiny["scorer"], "--no-test-files", "--train-lists", "3", "--mirror",
        "--data", tiny["data"], "--name", "m", "--results", tmp_path)  # fmt: skip
    files = result(tmp_path, "m")["files"]
    assert set(files) == {"train_lists"}  # chosen on lists from train.json, never the test files
    mirrored = files["train_lists"][f"{tiny['scorer']} mirrored"][0]
    assert len(files["train_lists"]["any_exact_scene"]) == 1 and 0 <= mirrored["same_picks_as_own"] <= 1


def test_sampling_gives_a_row_per_setting_by_guidance_scale(tiny, tmp_path):
    run("sampling", "--run", tiny["ddpm"], "--data", tiny["data"], "--guidance", "1,2", "--sampler", "ddim", "--steps",
        "5", "--eta", "0,1", "--lists", "4", "--objects", "2", "--name", "s", "--results", tmp_path)  # fmt: skip
    record = result(tmp_path, "s")
    assert [row["eta"] for row in record["accuracy"]] == [0.0, 1.0]
    assert all(set(row["accuracy_by_guidance"]) == {"1.0", "2.0"} for row in record["accuracy"])
    assert record["label_lists"] == "4 drawn from train.json (seed 0, 2 objects each)"


def test_serve_times_every_sampler_through_the_api(tiny, tmp_path):
    run("serve", "--model", tiny["ddpm"], "--requests", "1", "--name", "v", "--results", tmp_path)
    samplers = result(tmp_path, "v")["samplers"]
    assert set(samplers) == {"dpmpp", "ddim", "ddpm"} and samplers["ddpm"]["steps"] == 50


def test_speed_times_each_model_in_turns(tiny, tmp_path):
    run("speed", "--models", tiny["ddpm"], tiny["gan"], "--labels", tiny["data"] / "test.json", "--batch", "2",
        "--rounds", "2", "--name", "p", "--results", tmp_path)  # fmt: skip
    measured = result(tmp_path, "p")["seconds_per_image"]
    assert set(measured) == {str(tiny["ddpm"]), str(tiny["gan"])}
    assert all(len(entry["by_round"]) == 2 and entry["median"] > 0 for entry in measured.values())


def test_train_speed_measures_a_kind_in_a_fresh_process(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    run("train_speed", "--kinds", "gan", "--options", "fp32", "--processes", "1", "--data", tiny["data"],
        "--images", "8", "--warmup", "1", "--steps", "1", "--name", "t", "--results", tmp_path)  # fmt: skip
    measured = result(tmp_path, "t")["images_per_second"]["gan"]
    assert isinstance(measured["fp32"]["1 process"], float), measured  # not the error line of a failed worker


def test_every_script_has_a_tiny_run_here():
    """A script added to benchmarks/ comes with its tiny run, a test named test_<script>_..."""
    untested = [name for name in SCRIPTS if not any(test.startswith(f"test_{name}_") for test in globals())]
    assert not untested, f"no tiny run of benchmarks/{untested[0]}.py"


def benchmark_common():
    """benchmarks/common.py as the scripts import it."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(BENCHMARKS))
        return importlib.import_module("common")


def test_a_budget_gives_each_stage_what_is_left_and_names_who_spent_it_when_nothing_is():
    common = benchmark_common()
    assert common.Budget(60, 40.0, ["autoencoder"]).minutes_for("ranker", share=12) == 12  # its own share
    assert common.Budget(60, 55.0, ["autoencoder"]).minutes_for("ranker", share=12) == 5.0  # what is left
    assert common.Budget(60, 40.0, ["autoencoder"]).minutes_for("diffusion model") == 20.0  # no share: all of it
    with pytest.raises(CondgenError) as spent:
        budget = common.Budget(60, 46.0, ["autoencoder", "ranker"])
        budget.minutes_for("diffusion model", upfront=14.0, upfront_for="encoding the training set")
    assert str(spent.value) == (
        "autoencoder and ranker used 46.0 of 60 minutes and encoding the training set takes 14.0 more; nothing left "
        "for the diffusion model"
    )  # not loop.max_minutes=0, which would mean no limit
    with pytest.raises(CondgenError, match=r"^--budget-minutes 0 leaves nothing to spend; nothing left for the auto"):
        common.Budget(0).minutes_for("autoencoder", share=15)
    assert common.configured_minutes("counter", ROOT / "configs" / "ranker_counter_cpu.yaml", []) == 4
    assert common.configured_minutes("evaluator", ROOT / "configs" / "ranker_cpu.yaml", ["loop.max_minutes=3"]) == 3


@pytest.mark.parametrize(
    ("stop", "status", "line"),
    [
        ("interrupted", 130, "latent.py: stopped: interrupted after step 7; saved runs/r/checkpoints/step-0000007"),
        ("sigterm", 130, "latent.py: stopped by SIGTERM"),
        ("ctrl-c", 130, "latent.py: stopped by SIGINT"),
        ("error", 2, "latent.py: error: autoencoder used 61.0 of 60 minutes; nothing left for the diffusion model"),
    ],
)
def test_a_benchmark_stopped_or_refused_ends_in_one_line(monkeypatch, capsys, stop, status, line):
    common = benchmark_common()
    monkeypatch.setattr(sys, "argv", ["benchmarks/latent.py"])

    def main():
        if stop == "interrupted":  # SIGTERM while training: the loop saves the step and raises this
            raise InterruptedTrainingError(7, "runs/r/checkpoints/step-0000007")
        if stop == "sigterm":  # SIGTERM between the trainings (encoding, sampling)
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(10)
        if stop == "ctrl-c":
            raise KeyboardInterrupt
        raise CondgenError("autoencoder used 61.0 of 60 minutes; nothing left for the diffusion model")

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as ended:
        common.run_benchmark(main)
    assert ended.value.code == status and capsys.readouterr().err == line + "\n"
    assert signal.getsignal(signal.SIGTERM) == before


def test_latent_stops_before_a_stage_that_finds_its_budget_spent(tiny, tmp_path):
    autoencoder = config_file(tmp_path / "vae.yaml", {
        "model": {"channels": 8, "channel_mults": [1, 2, 2]}, "optim": {"batch_size": 4}, "loop": {"steps": 10**6},
    })  # fmt: skip
    spent = r"^autoencoder used [\d.]+ of 0.02 minutes( and encoding the training set takes [\d.]+ more)?; nothing left"
    with pytest.raises(CondgenError, match=spent):
        run("latent", "--data", tiny["data"], "--budget-minutes", "0.02", "--autoencoder-minutes", "5",
            "--autoencoder-config", autoencoder, "--runs", tmp_path / "runs", "--results", tmp_path, "--name", "l",
            "--samplers", "dpmpp", "--guidance", "2", "--seeds", "1", "--labels")  # fmt: skip
    assert (tmp_path / "runs" / "bench_vae" / "run.json").is_file()  # it trained for the budget's 1.2 seconds
    assert not (tmp_path / "runs" / "bench_ldm").exists() and not (tmp_path / "l.json").exists()


def test_gan_stops_before_a_stage_that_finds_its_budget_spent(tiny, tmp_path):
    """Run as a script: the autoencoder spends a latent GAN's tiny budget, and the benchmark ends with one line naming
    the stages and minutes and status 2, never a traceback, the GAN untrained."""
    autoencoder = config_file(tmp_path / "vae.yaml", {
        "model": {"channels": 8, "channel_mults": [1, 2, 2]}, "optim": {"batch_size": 4}, "loop": {"steps": 10**6},
    })  # fmt: skip
    command = ["benchmarks/gan.py", "--data", tiny["data"], "--models", "latent_hinge_s2d", "--budget-minutes", "0.02",
               "--autoencoder-minutes", "5", "--autoencoder-config", autoencoder, "--runs", tmp_path / "runs",
               "--results", tmp_path, "--name", "g", "--seeds", "1", "--labels"]  # fmt: skip
    env = os.environ | {"OMP_NUM_THREADS": "1", "CONDGEN_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run(
        [sys.executable, *map(str, command)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    spent = (
        r"gan\.py: error: autoencoder used [\d.]+ of 0\.02 minutes( and encoding the training set takes [\d.]+ "
        r"more)?; nothing left for the latent_hinge_s2d GAN"
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert re.fullmatch(spent, done.stderr.strip().splitlines()[-1]), done.stderr
    assert (tmp_path / "runs" / "bench_gan_latent_hinge_s2d_vae" / "run.json").is_file()  # it trained for 1.2 s
    assert not (tmp_path / "runs" / "bench_gan_latent_hinge_s2d").exists() and not (tmp_path / "g.json").exists()


def test_train_speed_options_settle_bf16_whatever_the_config_says_and_the_record_names_it(tiny, tmp_path, monkeypatch):
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(BENCHMARKS))
        options = importlib.import_module("train_speed").OPTIONS
    sys.modules.pop("train_speed", None)
    for option, overrides in options.items():  # over a config that leaves bfloat16 to the machine
        config = load_config(GANRunConfig, overrides=["optim.bf16=auto", *overrides])
        assert config.optim.bf16 is option.startswith("bf16"), option
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    run("train_speed", "--kinds", "gan", "--options", "bf16", "--processes", "1", "--data", tiny["data"],
        "--images", "8", "--warmup", "1", "--steps", "1", "--name", "t", "--results", tmp_path)  # fmt: skip
    measured = result(tmp_path, "t")["images_per_second"]["gan"]["bf16"]
    assert isinstance(measured["1 process"], float) and measured["optim"] == {"bf16": True, "compile": ""}, measured
