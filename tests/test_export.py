"""Model folders: `condgen export` writes what sampling needs, `--model` and `condgen.load` open it, and sampling
it gives the same images as sampling the run."""

import json
import sys
from importlib import resources
from pathlib import Path

import pytest
import torch
from conftest import tiny_counter, tiny_ranker

import condgen
from condgen.cli import main
from condgen.data.labels import LabelCodec
from condgen.evaluate.counter import SHIPPED_COUNTER
from condgen.evaluate.evaluator import build_resnet18_evaluator, save_evaluator
from condgen.evaluate.ranker import RANKER_COUNTER_FILE, RANKER_FILE, SHARED_RANKERS_FILE
from condgen.export.card import score_table
from condgen.export.half import pipeline_images, ranked_both_ways
from condgen.export.policy import update_config
from condgen.export.record import BenchmarkRecord
from condgen.nn.ranking import Reading
from condgen.pretrained import PRETRAINED
from condgen.report.measure import GAN_PASS, Model
from condgen.tensorfile import read_tensors

TINY = {
    "ddpm": ["model.channels=16", "model.channel_mults=[1,2]", "model.attention_resolutions=[16]", "model.heads=2",
             "diffusion.num_steps=20", "sample.steps=3"],
    "gan": ["model.g_channels=8", "model.d_channels=8", "model.noise_dim=16", "model.label_dim=16",
            "model.conditioning=both"],
    "vae": ["model.channels=8", "model.channel_mults=[1,2,2]"],
    "ldm": ["model.channels=16", "model.channel_mults=[1,2]", "model.attention_resolutions=[8]", "model.heads=2",
            "diffusion.num_steps=20", "sample.steps=3"],
    "latent-gan": ["model.architecture=s2d", "model.g_channels=8", "model.d_channels=8", "model.noise_dim=16",
                   "model.label_dim=16", "model.conditioning=both"],
}  # fmt: skip


def train(kind, dataset, run, evaluator_file, *extra):
    argv = ["train", kind, "--data", str(dataset), "--out", str(run), "--evaluator", str(evaluator_file), *extra]
    assert main([*argv, *TINY[kind], "optim.batch_size=4", "loop.steps=2", "device=cpu"]) == 0


def sample(folder, out, *options):
    argv = ["sample", "--model", str(folder), "--objects", "red cube, blue sphere", "--out", str(out), *options]
    assert main([*argv, "--seed", "1"]) == 0
    return (out / "0.png").read_bytes()


@pytest.mark.parametrize("kind", ["ddpm", "gan", "ldm", "latent-gan"])
def test_a_model_folder_samples_as_its_run_does(kind, dataset, evaluator_file, tmp_path):
    run = tmp_path / "run"
    latent = kind in ("ldm", "latent-gan")
    if latent:
        train("vae", dataset, tmp_path / "vae", evaluator_file)
        train(kind, dataset, run, evaluator_file, "--autoencoder", str(tmp_path / "vae"))
    else:
        train(kind, dataset, run, evaluator_file)
    model = tmp_path / "exported" / "model"
    assert main(["export", "--run", str(run), "--out", str(model)]) == 0
    card = (model / "README.md").read_text()
    assert card.startswith(f"# {model}\n") and f"condgen export --run {run} --out {model}" in card
    assert json.loads((model / "run.json").read_text())["format"] == 1
    assert not list(model.rglob("*optimizer*")) and not list(model.rglob("*.pt*"))  # inference only, no pickles
    from_run = sample(run, tmp_path / "b")
    gan = kind in ("gan", "latent-gan")
    if gan:  # the critic comes along to rank candidates with its auxiliary head
        assert (model / "best" / "critic.safetensors").exists()
        ranked = sample(run, tmp_path / "ranked", "--candidates", "3")
    run.rename(tmp_path / "moved")  # the model folder stands alone, a latent model's autoencoder included
    if latent:
        (tmp_path / "vae").rename(tmp_path / "vae-moved")
    assert sample(model, tmp_path / "a") == from_run
    half = tmp_path / "half"  # a model folder exports again, here into float16, with its autoencoder and critic
    assert main(["export", "--run", str(model), "--out", str(half), "--half"]) == 0
    full_weights, half_weights = (read_tensors(f / "best" / "ema.safetensors")[0] for f in (model, half))
    assert all(torch.equal(half_weights[k], v.half() if v.is_floating_point() else v) for k, v in full_weights.items())
    sample(half, tmp_path / "h", *(["--candidates", "3"] if gan else []))
    if gan:
        assert sample(model, tmp_path / "ranked-model", "--candidates", "3") == ranked
    pipeline = condgen.load(model)
    images = pipeline.generate(["red cube, blue sphere", "gray cylinder"], seed=1)
    assert images.shape == (2, 3, 64, 64) and images.min() >= -1 and images.max() <= 1
    assert torch.equal(images, pipeline.generate(["red cube, blue sphere", "gray cylinder"], seed=1))


def test_export_and_load_refuse_what_they_cannot_use(dataset, evaluator_file, tmp_path, capsys):
    train("vae", dataset, tmp_path / "vae", evaluator_file)
    train("gan", dataset, tmp_path / "gan", evaluator_file)
    capsys.readouterr()
    assert main(["export", "--run", str(tmp_path / "vae"), "--out", str(tmp_path / "m")]) == 2
    assert "a vae run generates no images" in capsys.readouterr().err and not (tmp_path / "m").exists()
    counter = str(tiny_counter(tmp_path / "counter.safetensors"))
    argv = ["export", "--run", str(tmp_path / "gan"), "--out", str(tmp_path / "m"), "--ranker-counter", counter]
    assert main(argv) == 2  # a GAN's folder may carry a ranker and its counter, but never a counter alone
    assert "the counter ranks beside an image ranker" in capsys.readouterr().err and not (tmp_path / "m").exists()
    assert main([*argv, "--ranker", str(evaluator_file)]) == 0  # then they rank its candidates, not the critic
    ranked = condgen.load(tmp_path / "m").loaded
    assert ranked.ranker is not None and ranked.ranker_counter is not None
    assert condgen.load(tmp_path / "m").generate("red cube", candidates=2).shape == (1, 3, 64, 64)
    model = tmp_path / "gan-model"
    assert main(["export", "--run", str(tmp_path / "gan"), "--out", str(model), "--half"]) == 0
    argv = ["sample", "--model", str(model), "--objects", "red cube", "--out", str(tmp_path / "o")]
    capsys.readouterr()
    assert main([*argv, "--ranker-counter", counter]) == 2
    assert "--ranker-counter: diffusion runs only" in capsys.readouterr().err and not (tmp_path / "o").exists()
    assert main(["export", "--run", str(tmp_path / "gan"), "--out", str(model)]) == 2  # never over an export
    capsys.readouterr()
    inside = {model / "again": "inside", PRETRAINED / "my-gan": "inside the installed condgen package"}
    for out, message in inside.items():  # never into the folder it copies, nor into the package itself
        assert main(["export", "--run", str(model), "--out", str(out)]) == 2
        assert message in capsys.readouterr().err and not out.exists()
    assert condgen.load(model).generate("red cube").shape == (1, 3, 64, 64)  # float16 weights load into the model
    with pytest.raises(condgen.errors.CondgenError, match="diffusion runs only"):
        condgen.load(model).generate("red cube", steps=5)
    meta = json.loads((model / "run.json").read_text())
    (model / "run.json").write_text(json.dumps(meta | {"format": 2}))
    capsys.readouterr()
    assert main(["sample", "--model", str(model), "--objects", "red cube", "--out", str(tmp_path / "o")]) == 2
    assert "a model folder of format 2, from a newer condgen; this one reads up to 1" in capsys.readouterr().err
    (model / "run.json").write_text(json.dumps(meta | {"format": "1"}))
    assert main(["sample", "--model", str(model), "--objects", "red cube", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "run.json: format '1' is not a whole number" in err and err.count("\n") == 1
    (model / "run.json").write_text(json.dumps(meta | {"objects": meta["objects"][:23]}))
    assert main(["sample", "--model", str(model), "--objects", "red cube", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "lists 23 objects, but the model was built for 24 (model.num_labels)" in err and err.count("\n") == 1
    (model / "run.json").write_text(json.dumps(meta))
    (model / "best").rename(model / "elsewhere")  # a copy that lost its weights is no run waiting to be trained
    assert main(["sample", "--model", str(model), "--objects", "red cube", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "best: missing, so" in err and "incomplete model folder; export it again" in err and err.count("\n") == 1
    (model / "elsewhere").rename(model / "best")
    weights = model / "best" / "ema.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    assert main(["sample", "--model", str(model), "--objects", "red cube", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "ema.safetensors: truncated or corrupt" in err and err.count("\n") == 1


def benchmark_result(path, steps):
    """A diffusion benchmark's result file in the layout benchmarks/latent.py writes, for two samplers."""
    scores = {"accuracy_test_by_seed": [0.5], "seconds_per_image_test": 0.1}
    for key, accuracy in (("test", 0.6), ("new_test", 0.6), ("seen_triples", 0.4)):
        scores |= {f"accuracy_{key}": accuracy, f"exact_set_{key}": accuracy / 2}
    ddim_scores = scores | {"accuracy_seen_triples": 0.7, "accuracy_test": 0.5}  # ddim wins on the seen triples
    result = {
        "date": "2026-01-02",
        "machine": "a test machine, 2 cores",
        "command": "python benchmarks/latent.py --name tiny",
        "budget_minutes": 7.0,
        "diffusion": {
            "train_steps": 2,
            "train_seconds": 30.0,
            "train_images_per_second": 1.5,
            "config": {"optim": {"batch_size": 4}},
        },
        "samplers": {
            "dpmpp": scores | {"steps": steps, "guidance": 2.0, "eta": 0.0, "spacing": "quadratic"},
            "ddim": ddim_scores | {"steps": steps, "guidance": 3.0, "eta": 1.0, "spacing": "trailing"},
        },
        "guidance_min_t": 5,
    }
    path.write_text(json.dumps(result))
    return path


def test_a_benchmark_result_sets_the_folders_sampling_and_writes_its_card(dataset, evaluator_file, tmp_path, capsys):
    import yaml

    train("ddpm", dataset, tmp_path / "run", evaluator_file)
    result = benchmark_result(tmp_path / "result.json", steps=3)
    model = tmp_path / "model"
    assert main(["export", "--run", str(tmp_path / "run"), "--out", str(model), "--result", str(result)]) == 0
    sample = yaml.safe_load((model / "config.yaml").read_text())["sample"]
    # the sampler most accurate on train.json's sets (seen triples), never on the test files, with its settings
    assert (sample["sampler"], sample["guidance"], sample["eta"], sample["guidance_min_t"]) == ("ddim", 3.0, 1.0, 5)
    card = (model / "README.md").read_text()
    assert "within a 7-minute wall-clock budget on a test machine, 2 cores (2026-01-02)" in card
    assert "python benchmarks/latent.py --name tiny" in card and f"--result {result}" in card
    assert "| ddim-3, guidance 3 at t >= 5 | " in card and "0.400 / 0.200" in card  # seen triples, dpmpp's row
    assert json.loads((model / "run.json").read_text())["step"] == 2  # a diffusion benchmark scores the latest
    capsys.readouterr()
    argv = ["export", "--run", str(tmp_path / "run"), "--out", str(tmp_path / "m2"), "--result", str(result)]
    assert main([*argv, "--sampler", "ddpm"]) == 2
    assert "--sampler: " in capsys.readouterr().err and not (tmp_path / "m2").exists()
    assert main(["export", "--run", str(tmp_path / "run"), "--out", str(tmp_path / "m3"), "--entry", "x"]) == 2
    assert "give --result" in capsys.readouterr().err


def test_a_card_shows_the_exact_scene_where_the_record_holds_the_counters_figures(tmp_path, monkeypatch):
    from condgen.export import card
    from condgen.export.record import BenchmarkRecord

    path = benchmark_result(tmp_path / "result.json", steps=3)
    row = "| dpmpp-3, guidance 2 at t >= 5 | 1 | "
    old = card.score_table(BenchmarkRecord.read(path))  # a record of the set measures alone keeps its table
    assert f"{row}0.600 / 0.300 | 0.600 / 0.300 | 0.400 / 0.200 | 0.1 |" in old
    assert not any("exact-scene" in line or "real images" in line for line in old)
    result = json.loads(path.read_text())
    for scores in result["samplers"].values():
        for key in ("test", "new_test", "seen_triples"):
            scores |= {f"count_exact_{key}": 0.9, f"exact_scene_{key}": scores[f"exact_set_{key}"] / 2}
    path.write_text(json.dumps(result))
    ceiling = {"accuracy": 0.99, "exact_set": 0.98, "count_exact": 1.0, "exact_scene": 0.95, "extra_objects": 0.0}
    monkeypatch.setattr(card, "real_image_ceiling", lambda: ceiling)
    table = card.score_table(BenchmarkRecord.read(path))
    assert "/ exact-scene rate (the share whose detected objects are exactly the requested ones" in table[0]
    assert f"{row}0.600 / 0.300 / 0.150 | 0.600 / 0.300 / 0.150 | 0.400 / 0.200 / 0.100 | 0.1 |" in table
    assert table[-1] == "| real images (held out) | - | " + " | ".join(["0.990 / 0.980 / 0.950"] * 3) + " | - |"
    monkeypatch.setattr(card, "real_image_ceiling", lambda: None)  # no counter shipped: no ceiling row
    assert card.score_table(BenchmarkRecord.read(path))[-1].startswith("| ddim-3")


def test_half_auto_keeps_float16_only_where_the_measured_check_allows(dataset, evaluator_file, tmp_path):
    train("ddpm", dataset, tmp_path / "run", evaluator_file)
    model = tmp_path / "model"
    argv = ["export", "--run", str(tmp_path / "run"), "--out", str(model), "--half", "auto", "--check-seeds", "1"]
    assert main(argv) == 0
    card = (model / "README.md").read_text()
    assert "Float16 check: over seeds 0 to 0 on test.json and new_test.json" in card
    no_lower = "float16's mean over the seeds is no lower on any file and measure" in card
    weights, _ = read_tensors(model / "best" / "ema.safetensors")
    dtype = next(t.dtype for t in weights.values() if t.is_floating_point())
    assert dtype == (torch.float16 if no_lower else torch.float32)
    assert f"The weights ship in {'float16' if no_lower else 'float32'}" in card
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no scratch folder left behind


def test_ranker_bits_store_the_ranker_as_channel_codes_and_the_check_samples_with_them(
    dataset, evaluator_file, tmp_path, capsys
):
    run = tmp_path / "run"
    train("ddpm", dataset, run, evaluator_file)
    torch.manual_seed(2)
    ranker = tmp_path / "ranker.safetensors"
    network = build_resnet18_evaluator(24, width=8)
    save_evaluator(network, LabelCodec.iclevr(), ranker)

    def export(out, *options):
        return main(["export", "--run", str(run), "--out", str(out), *options])

    capsys.readouterr()
    assert export(tmp_path / "m", "--ranker-bits", "8") == 2  # nothing to store so
    assert "--ranker-bits: " in capsys.readouterr().err and not (tmp_path / "m").exists()
    assert export(tmp_path / "m", "--ranker", str(ranker), "--ranker-bits", "3") == 2
    assert "--ranker-bits 3: choose 4 to 8" in capsys.readouterr().err and not (tmp_path / "m").exists()

    coded = tmp_path / "coded"
    assert export(coded, "--ranker", str(ranker), "--ranker-bits", "8") == 0
    stored, metadata = read_tensors(coded / RANKER_FILE)
    assert json.loads(metadata["channel_codes"])["bits"] == 8
    full = {name: tensor.half() for name, tensor in network.state_dict().items()}
    assert all(
        torch.allclose(stored[n].float(), full[n].float(), atol=2e-2) for n in full if full[n].is_floating_point()
    )
    weights, _ = read_tensors(coded / "best" / "ema.safetensors")  # the generator stays as --half says: float32
    assert {t.dtype for t in weights.values() if t.is_floating_point()} == {torch.float32}
    card = (coded / "README.md").read_text()
    assert "the ranker's convolution and linear weights in 8-bit codes per output channel" in card
    assert "--ranker-bits 8" in card
    update_config(coded, {"sample": {"candidates": 2}})
    assert condgen.load(coded).loaded.ranker is not None

    checked = tmp_path / "checked"  # the check's float32 reference keeps the full ranker; the kept folder the codes
    assert main(["export", "--run", str(coded), "--out", str(checked), "--half", "auto", "--check-seeds", "1",
                 "--ranker", str(ranker), "--ranker-bits", "6"]) == 0  # fmt: skip
    card = (checked / "README.md").read_text()
    assert "The image ranker's 6-bit copy keeps another candidate than the float32 one on" in card
    kept = read_tensors(checked / RANKER_FILE)[1].get("channel_codes")  # none where the check kept float32
    assert ("in 6-bit codes per output channel" in card) == (kept is not None)
    assert kept is None or json.loads(kept)["bits"] == 6


def test_an_image_rankers_own_counter_travels_with_its_model_folder(dataset, evaluator_file, tmp_path, capsys):
    run = tmp_path / "run"
    train("ddpm", dataset, run, evaluator_file)
    ranker = tiny_ranker(tmp_path / "ranker.safetensors")  # any evaluator-format file ranks
    counter = tiny_counter(tmp_path / "counter.safetensors")

    def export(out, *options):
        return main(["export", "--run", str(run), "--out", str(out), *options])

    capsys.readouterr()
    assert export(tmp_path / "m", "--ranker-counter", str(counter)) == 2  # it ranks beside an image ranker alone
    err = capsys.readouterr().err
    assert "--ranker-counter: the counter ranks beside an image ranker" in err and err.count("\n") == 1
    with resources.as_file(resources.files("condgen.evaluate") / "weights" / SHIPPED_COUNTER) as shipped:
        assert export(tmp_path / "m", "--ranker", str(ranker), "--ranker-counter", str(shipped)) == 2
    err = capsys.readouterr().err
    assert "this is the shipped counter, which scores images and never ranks them" in err and err.count("\n") == 1
    assert not (tmp_path / "m").exists()

    half = tmp_path / "half"  # the counter is stored as the ranker is, here in float16
    assert export(half, "--ranker", str(ranker), "--ranker-counter", str(counter), "--half") == 0
    stored, _ = read_tensors(half / RANKER_COUNTER_FILE)
    assert {t.dtype for t in stored.values() if t.is_floating_point()} == {torch.float16}
    card = (half / "README.md").read_text()
    assert "the ranker and its counter ship in float16" in card
    assert f"--ranker {ranker} --ranker-counter {counter}" in card  # the command that made it
    update_config(half, {"sample": {"candidates": 2}})
    model = tmp_path / "model"  # a model folder exported again keeps its ranker and its counter
    assert main(["export", "--run", str(half), "--out", str(model)]) == 0
    kept, _ = read_tensors(model / RANKER_COUNTER_FILE)
    assert all(torch.equal(kept[name].half(), tensor) for name, tensor in stored.items())
    card = (model / "README.md").read_text()
    assert "best of 2 ranked by the image ranker beside the model" in card
    assert "its own object counter (`ranker_counter.safetensors`, trained with `condgen train counter`" in card
    assert "the ranker and its counter ship in float32" in card
    checked = tmp_path / "checked"  # the float16 check ranks with the counter, and stores it as it stores the ranker
    assert main(["export", "--run", str(half), "--out", str(checked), "--half", "auto", "--check-seeds", "1"]) == 0
    card = (checked / "README.md").read_text()
    assert "The image ranker's float16 copy (with its counter's) keeps another candidate" in card
    dtypes = [
        {t.dtype for t in read_tensors(checked / name)[0].values() if t.is_floating_point()}
        for name in (RANKER_FILE, RANKER_COUNTER_FILE)
    ]
    assert dtypes[0] == dtypes[1] and len(dtypes[0]) == 1

    pipeline = condgen.load(model)
    loaded = pipeline.loaded
    assert loaded.ranker is not None and loaded.ranker_counter is not None
    reading = loaded.ranking()(torch.rand(3, 3, 64, 64) * 2 - 1)
    assert isinstance(reading, Reading) and reading.logits.shape == (3, 24) and reading.objects.shape == (3,)

    # the float16 check's rival ranker reads with a counter too: the same files keep the same candidates, and a
    # counter that counts otherwise keeps others
    codec = LabelCodec.iclevr()
    labels = torch.stack([codec.encode(names) for names in (["red cube"], ["blue sphere", "gray cylinder"])] * 3)
    full, moved = ranked_both_ways(loaded, model / RANKER_FILE, labels, 0, model / RANKER_COUNTER_FILE)
    assert moved == 0 and torch.equal(full, pipeline_images(pipeline, labels, 0))
    assert ranked_both_ways(loaded, model / RANKER_FILE, labels, 0)[1] == 0  # without one: the folder's own
    wild = tiny_counter(tmp_path / "wild.safetensors", seed=1, wild=True)
    assert ranked_both_ways(loaded, model / RANKER_FILE, labels, 0, wild)[1] > 0

    # sample: the folder's ranker with a counter given, refused without a ranker or with the shipped counter
    sample(model, tmp_path / "counted", "--ranker-counter", str(wild))
    capsys.readouterr()
    argv = ["sample", "--model", str(run), "--objects", "red cube", "--out", str(tmp_path / "o"), "--candidates", "2"]
    assert main([*argv, "--ranker-counter", str(counter)]) == 2
    assert "give --ranker RUN or a model folder with its own ranker.safetensors" in capsys.readouterr().err
    with resources.as_file(resources.files("condgen.evaluate") / "weights" / SHIPPED_COUNTER) as shipped:
        assert main([*argv, "--ranker", str(ranker), "--ranker-counter", str(shipped)]) == 2
    assert "this is the shipped counter" in capsys.readouterr().err and not (tmp_path / "o").exists()


def ranked_gan(dataset, evaluator_file, tmp_path, candidates):
    """A tiny gan run sampling the best of ``candidates``, and a random image ranker and counter of its objects."""
    run = tmp_path / "run"
    train("gan", dataset, run, evaluator_file, f"candidates={candidates}")
    return run, tiny_ranker(tmp_path / "ranker.safetensors"), tiny_counter(tmp_path / "counter.safetensors")


def test_a_gan_folder_can_rank_with_the_ranker_and_counter_another_folder_holds(
    dataset, evaluator_file, tmp_path, capsys
):
    run, ranker, counter = ranked_gan(dataset, evaluator_file, tmp_path, candidates=3)
    owner = tmp_path / "owner"
    assert main(["export", "--run", str(run), "--out", str(owner), "--ranker", str(ranker),
                 "--ranker-counter", str(counter)]) == 0  # fmt: skip
    card = (owner / "README.md").read_text()
    assert (
        "Each image is the best of 3 generator evaluations (`config.yaml`, `candidates`), ranked by the image " in card
    )
    assert "and its own object counter (`ranker_counter.safetensors`" in card

    checked = tmp_path / "checked"  # the float16 check ranks the GAN's candidates with both copies of the ranker
    assert main(["export", "--run", str(owner), "--out", str(checked), "--half", "auto", "--check-seeds", "1"]) == 0
    assert (
        "The image ranker's float16 copy (with its counter's) keeps another candidate"
        in (checked / "README.md").read_text()
    )

    sharer = tmp_path / "sharer"
    assert main(["export", "--run", str(run), "--out", str(sharer)]) == 0
    assert condgen.load(sharer).loaded.ranker is None  # ranked by its critic
    # every candidate costs a generator pass and one of each network that ranks it
    passes = [Model(str(f), f, condgen.load(f)).network_evaluations(GAN_PASS) for f in (owner, sharer)]
    assert passes == [3 * 3, 3 * 2]
    (sharer / SHARED_RANKERS_FILE).write_text(json.dumps({"folder": "../owner"}))
    loaded = condgen.load(sharer).loaded
    assert loaded.ranker is not None and loaded.ranker_counter is not None
    assert all(torch.equal(a, b) for a, b in zip(loaded.ranker.state_dict().values(),
                                                  condgen.load(owner).loaded.ranker.state_dict().values()))  # fmt: skip
    assert sample(sharer, tmp_path / "s1") == sample(owner, tmp_path / "s2")  # the same picks, the same images

    copy = tmp_path / "copy"  # exported again, the folder stores the ranker and counter it ranks with itself
    assert main(["export", "--run", str(sharer), "--out", str(copy)]) == 0
    assert (copy / RANKER_FILE).is_file() and (copy / RANKER_COUNTER_FILE).is_file()
    assert not (copy / SHARED_RANKERS_FILE).exists()

    (sharer / SHARED_RANKERS_FILE).write_text(json.dumps({"folder": "../owner", "counter": False}))
    alone = condgen.load(sharer)  # the owner's ranker without its counter: a generator and a ranker pass each
    assert alone.loaded.ranker is not None and alone.loaded.ranker_counter is None
    assert Model(str(sharer), sharer, alone).network_evaluations(GAN_PASS) == 3 * 2

    (sharer / SHARED_RANKERS_FILE).write_text(json.dumps({"folder": "../nowhere"}))
    capsys.readouterr()
    assert main(["sample", "--model", str(sharer), "--objects", "red cube", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"{sharer / SHARED_RANKERS_FILE}: " in err and "holds no ranker.safetensors" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_ship_stores_a_ranker_and_counter_that_another_shipped_folder_holds_once(dataset, evaluator_file, tmp_path):
    sys.path.insert(0, str(PRETRAINED.parents[1] / "benchmarks"))
    from ship import share_rankers

    run, ranker, counter = ranked_gan(dataset, evaluator_file, tmp_path, candidates=2)
    shelf = tmp_path / "shelf"
    owner, sharer = shelf / "owner", shelf / "sharer"
    assert main(["export", "--run", str(run), "--out", str(owner), "--ranker", str(ranker),
                 "--ranker-counter", str(counter), "--ranker-bits", "6"]) == 0  # fmt: skip
    with pytest.raises(SystemExit, match="the exported ranker.safetensors is not byte for byte"):
        share_rankers(owner, "sharer", shelf)  # the sharer has no ranker yet
    # a file already stored as asked is copied, never coded twice; so the copies are byte for byte the owner's
    assert main(["export", "--run", str(run), "--out", str(sharer), "--ranker", str(owner / RANKER_FILE),
                 "--ranker-counter", str(owner / RANKER_COUNTER_FILE), "--ranker-bits", "6"]) == 0  # fmt: skip
    assert (sharer / RANKER_FILE).read_bytes() == (owner / RANKER_FILE).read_bytes()
    assert (sharer / RANKER_COUNTER_FILE).read_bytes() == (owner / RANKER_COUNTER_FILE).read_bytes()
    images = sample(sharer, tmp_path / "before")
    share_rankers(sharer, "owner", shelf)
    assert not (sharer / RANKER_FILE).exists() and not (sharer / RANKER_COUNTER_FILE).exists()
    assert json.loads((sharer / SHARED_RANKERS_FILE).read_text()) == {"folder": "../owner"}
    assert "are stored once in the package, in `owner`'s folder" in (sharer / "README.md").read_text()
    assert sample(sharer, tmp_path / "after") == images

    alone = shelf / "alone"  # ranked by the ranker without its counter: only the ranker is shared
    assert main(["export", "--run", str(run), "--out", str(alone), "--ranker", str(owner / RANKER_FILE),
                 "--ranker-bits", "6"]) == 0  # fmt: skip
    images = sample(alone, tmp_path / "alone_before")
    share_rankers(alone, "owner", shelf)
    assert json.loads((alone / SHARED_RANKERS_FILE).read_text()) == {"folder": "../owner", "counter": False}
    assert "`ranker.safetensors` is stored once in the package" in (alone / "README.md").read_text()
    assert not (alone / RANKER_FILE).exists() and sample(alone, tmp_path / "alone_after") == images


def test_a_gan_cards_network_evaluations_count_each_network_that_ranks():
    """Each candidate costs its generator pass and one of each ranking network: the critic, or the image ranker and,
    where the folder holds one, its counter (whether or not the record holds the shipped counter's figures)."""
    scores = {f"{key}_test": 0.5 for key in ("accuracy", "exact_set", "exact_scene", "count_exact")}
    record = BenchmarkRecord(Path("r.json"), {"candidates": 4, "seconds_per_image_test": 0.1,
                                              "accuracy_test_by_seed": [0.5], **scores}, ("cmd",))  # fmt: skip

    def evaluations(ranked_by_image, counted):
        return score_table(record, ranked_by_image, counted)[4].split(" | ")[1]

    assert [evaluations(False, False), evaluations(True, False), evaluations(True, True)] == ["8", "8", "12"]
