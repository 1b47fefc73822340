"""The shipped generator: it loads by name, generates what it is asked for, and every command that takes a model
falls back to it."""

import json

import pytest
import torch
import yaml

import condgen
from condgen.cli import main
from condgen.data.iclevr import load_label_file
from condgen.diffusion.sampling import SampleConfig
from condgen.errors import CondgenError
from condgen.evaluate.evaluator import load_evaluator
from condgen.evaluate.ranker import RANKER_COUNTER_FILE, RANKER_FILE, SHARED_RANKERS_FILE, own_ranker_files
from condgen.pretrained import ICLEVR_LABELS, PRETRAINED, SHIPPED, model_path, shipped_models
from condgen.tensorfile import BYTE_PLANES, CHANNEL_CODES, read_tensors


def test_every_listed_model_ships_as_a_model_folder_with_its_card_and_weights_of_the_precision_it_names():
    assert shipped_models() == list(SHIPPED)
    for name in SHIPPED:
        folder = PRETRAINED / name
        meta = json.loads((folder / "run.json").read_text())
        assert meta["format"] == 1 and len(meta["objects"]) == 24
        # the model's and its autoencoder's, a GAN's critic where it ranks candidates, an image ranker (and its
        # object counter) where it ranks them and a noisy classifier where it guides or ranks without an image ranker
        files = sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*.safetensors"))
        config = yaml.safe_load((folder / "config.yaml").read_text())
        sample = SampleConfig(**config.get("sample", {}))
        # a ranker and counter are the folder's own or, where rankers.json names another folder, that one's
        ranker_file, counter_file = own_ranker_files(folder)
        own_ranker, shared = ranker_file is not None, (folder / SHARED_RANKERS_FILE).is_file()
        assert not own_ranker or max(sample.candidates, config.get("candidates", 1)) > 1
        ranker = ["best/critic.safetensors"] if config.get("candidates", 1) > 1 else []
        ranker += [RANKER_FILE] if own_ranker and not shared else []
        ranker += [RANKER_COUNTER_FILE] if counter_file is not None and not shared else []
        guides = bool(sample.classifier_scale or sample.classifier_absent_scale)
        ranker += ["classifier/best/model.safetensors"] if guides or (sample.uses_classifier and not own_ranker) else []
        assert files == sorted(["autoencoder/best/model.safetensors", *ranker, "best/ema.safetensors"])
        places = {file: folder / file for file in files} | {RANKER_FILE: ranker_file, RANKER_COUNTER_FILE: counter_file}
        dtypes, metadata_of = {}, {}
        for file, place in places.items():
            if place is None:
                continue
            weights, metadata = read_tensors(place)
            metadata_of[file] = metadata
            (dtype,) = {t.dtype for t in weights.values() if t.is_floating_point()}
            assert dtype in (torch.float16, torch.float32)
            assert (BYTE_PLANES in metadata) == (dtype == torch.float16)  # byte planes keep the wheel small
            dtypes[file] = dtype
        # one precision for the generator; an image ranker (and its counter) may ship in float16 beside float32 weights
        generator = {dtype for file, dtype in dtypes.items() if file not in (RANKER_FILE, RANKER_COUNTER_FILE)}
        assert len(generator) == 1 and dtypes.get(RANKER_FILE, torch.float16) in generator | {torch.float16}
        card = (folder / "README.md").read_text()
        assert f"the weights ship in {str(generator.pop()).removeprefix('torch.')}" in card.lower()
        codes = metadata_of.get(RANKER_FILE, {}).get(CHANNEL_CODES)
        if codes:  # lossy codes for the convolution and linear weights of a ranker, which only chooses
            bits = json.loads(codes)["bits"]
            assert f"the ranker's convolution and linear weights in {bits}-bit codes per output channel" in card
            assert f"The image ranker's {bits}-bit copy" in card  # the check that kept them sampled with them
        elif own_ranker:
            ranker_dtype = str(dtypes[RANKER_FILE]).removeprefix("torch.")
            with_counter = " and its counter ship" if RANKER_COUNTER_FILE in dtypes else " ships"
            assert f"the ranker{with_counter} in {ranker_dtype}" in card
        assert "## How it was trained" in card and "## Scores" in card
        assert not yaml.safe_load((folder / "config.yaml").read_text())["autoencoder"].startswith("/")


def test_the_package_data_holds_every_file_of_the_shipped_model_folders():
    """A file the wheel leaves out (a model folder's ranker, say) breaks the model only for those who pip install."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    pyproject = tomllib.loads((PRETRAINED.parents[1] / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["condgen.pretrained"]
    packaged = {path for pattern in patterns for path in PRETRAINED.glob(pattern) if path.is_file()}
    present = {path for path in PRETRAINED.rglob("*") if path.is_file() and path.suffix not in (".py", ".pyc")}
    assert sorted(p.relative_to(PRETRAINED).as_posix() for p in present - packaged) == []


@pytest.mark.parametrize("name", SHIPPED)
def test_each_shipped_model_draws_the_requested_objects(name):
    """A broken or mismatched shipped model scores near chance (about 0.1); the shipped ones about 0.9."""
    evaluator = load_evaluator()
    labels = load_label_file(ICLEVR_LABELS["test"], evaluator.codec)[:16]
    requests = [", ".join(evaluator.codec.decode(row)) for row in labels]
    model = condgen.load(name)
    images = model.generate(requests, seed=0)
    assert images.shape == (16, 3, 64, 64) and torch.isfinite(images).all()
    assert evaluator.measure(images, labels)["accuracy"] >= 0.75
    pair = model.generate(requests[:2], seed=1)
    assert torch.equal(pair, model.generate(requests[:2], seed=1))  # the same seed, the same images


def test_sample_and_denoise_without_a_model_use_the_default_shipped_one(tmp_path, capsys):
    out = tmp_path / "one"
    assert main(["sample", "--objects", "red sphere, cyan cube", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"using the shipped model {SHIPPED[0]}" in printed and (out / "0.png").is_file()
    assert "accuracy" in json.loads((out / "scores.json").read_text())
    # denoise pictures a diffusion process, so it takes the first shipped diffusion model
    diffusion = next(
        name for name in SHIPPED if json.loads((PRETRAINED / name / "run.json").read_text())["kind"] == "ldm"
    )
    assert main(["denoise", "--steps", "2", "--out", str(tmp_path / "d.png")]) == 0
    assert f"using the shipped model {diffusion}" in capsys.readouterr().out and (tmp_path / "d.png").is_file()
    assert (
        main(["sample", "--model", diffusion, "--objects", "gray cube", "--steps", "2", "--out", str(tmp_path / "2")])
        == 0
    )
    assert "using the shipped model" not in capsys.readouterr().out  # named, so nothing to say
    gan = next(name for name in SHIPPED if name != diffusion)  # a GAN has no denoising process: say what pictures it
    assert main(["denoise", "--model", gan, "--out", str(tmp_path / "g.png")]) == 2
    err = capsys.readouterr().err
    assert "has no denoising process" in err and "condgen interpolate" in err and not (tmp_path / "g.png").exists()


def test_a_name_that_is_neither_a_folder_nor_a_shipped_model_is_one_line(tmp_path, capsys):
    assert main(["sample", "--model", "iclevr-gan9", "--objects", "gray cube", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "iclevr-gan9: no such run or model folder, nor a shipped model" in err
    assert not (tmp_path / "o").exists()
    with pytest.raises(CondgenError, match="nor a shipped model"):
        condgen.load("iclevr-gan9")
    assert model_path(tmp_path) == tmp_path  # a folder is taken as it is, shipped name or not
