"""Model folders: `condgen export` writes what sampling needs, `--model` and `condgen.load` open it, and sampling
it gives the same images as sampling the run."""

import json

import pytest
import torch

import condgen
from condgen.cli import main
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
    assert (model / "README.md").read_text().startswith(f"# condgen {kind.replace('-', '_')} model")
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
    model = tmp_path / "gan-model"
    assert main(["export", "--run", str(tmp_path / "gan"), "--out", str(model), "--half"]) == 0
    assert main(["export", "--run", str(tmp_path / "gan"), "--out", str(model)]) == 2  # never over an export
    assert condgen.load(model).generate("red cube").shape == (1, 3, 64, 64)  # float16 weights load into the model
    with pytest.raises(condgen.errors.CondgenError, match="diffusion runs only"):
        condgen.load(model).generate("red cube", steps=5)
    meta = json.loads((model / "run.json").read_text())
    (model / "run.json").write_text(json.dumps(meta | {"format": 2}))
    capsys.readouterr()
    assert main(["sample", "--model", str(model), "--objects", "red cube", "--out", str(tmp_path / "o")]) == 2
    assert "a model folder of format 2, from a newer condgen; this one reads up to 1" in capsys.readouterr().err
    (model / "run.json").write_text(json.dumps(meta))
    weights = model / "best" / "ema.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    assert main(["sample", "--model", str(model), "--objects", "red cube", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "ema.safetensors: truncated or corrupt" in err and err.count("\n") == 1
