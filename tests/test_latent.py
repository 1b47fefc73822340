import json
from importlib import resources

import pytest
import torch
import yaml
from conftest import tiny_counter, tiny_ranker
from PIL import Image
from safetensors.torch import load_file

import condgen
from condgen.cli import main
from condgen.diffusion.sampling import generate
from condgen.evaluate.evaluator import SHIPPED_WEIGHTS, evaluator_logits, load_evaluator, save_evaluator
from condgen.evaluate.ranker import load_ranker
from condgen.latent.autoencoder import Autoencoder, AutoencoderConfig, VectorQuantizer, kl_divergence
from condgen.latent.trainer import psnr, random_crop
from condgen.nn.ranking import set_log_likelihood

TINY_AE = ["model.channels=8", "model.channel_mults=[1,2,2]", "model.codebook_size=16", "optim.batch_size=4"]
TINY_LATENT_GAN = [
    "model.architecture=s2d",
    "model.g_channels=8",
    "model.d_channels=8",
    "model.noise_dim=16",
    "model.label_dim=16",
    "optim.batch_size=4",
]
TINY_LDM = [
    "model.channels=16",
    "model.channel_mults=[1,2]",
    "model.attention_resolutions=[8]",
    "model.heads=2",
    "diffusion.num_steps=20",
    "optim.batch_size=4",
    "sample.steps=3",
]


def records(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def train(kind, dataset, run, evaluator_file, *overrides, resume=False, autoencoder=None):
    argv = ["train", kind, "--data", str(dataset), "--out", str(run), "--evaluator", str(evaluator_file)]
    argv += ["--resume"] if resume else []
    argv += ["--autoencoder", str(autoencoder)] if autoencoder else []
    tiny = {"ldm": TINY_LDM, "latent-gan": TINY_LATENT_GAN}.get(kind, TINY_AE)
    return main(argv + tiny + ["loop.log_every=1", *overrides])


@pytest.mark.parametrize("vq", [False, True])
def test_autoencoder_shapes(vq):
    config = AutoencoderConfig(channels=8, vq=vq, codebook_size=16)
    model = Autoencoder(config).eval()
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    assert config.latent_size == 16
    latent = model.latent(x)
    assert latent.shape == (2, 4, 16, 16)
    assert model.decode(latent).shape == x.shape
    reconstruction, loss, codes = model(x)
    assert reconstruction.shape == x.shape and loss.ndim == 0
    assert (codes is None) != vq and (codes is None or codes.shape == (2, 16, 16))
    assert AutoencoderConfig(channel_mults=(1, 2, 2, 2)).latent_size == 8


def test_kl_divergence_is_zero_for_the_prior_and_positive_otherwise():
    zeros = torch.zeros(3, 4)
    assert kl_divergence(zeros, zeros).item() == 0
    mean, log_var = torch.full((3, 4), 1.0), torch.full((3, 4), 0.5)
    expected = 0.5 * (1 + torch.exp(torch.tensor(0.5)) - 1 - 0.5)  # closed form per element
    assert kl_divergence(mean, log_var).item() == pytest.approx(expected.item())


@pytest.mark.parametrize("ema", [True, False])
def test_quantizer_snaps_to_codes_and_passes_gradients_straight_through(ema):
    quantizer = VectorQuantizer(AutoencoderConfig(latent_channels=2, codebook_size=3, codebook_ema=ema)).eval()
    with torch.no_grad():
        quantizer.codebook.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0], [-1.0, 2.0]]))
    z = torch.tensor([[0.9, 1.2], [-0.8, 1.7], [0.1, -0.1]]).t().reshape(1, 2, 3, 1).requires_grad_(True)
    quantised, loss, index = quantizer(z)
    assert index.flatten().tolist() == [1, 2, 0]
    assert torch.equal(quantised.detach().reshape(2, 3).t(), quantizer.codebook[[1, 2, 0]])
    weights = torch.randn_like(quantised)
    (quantised * weights).sum().backward()
    assert torch.equal(z.grad, weights)  # d quantised / d z is the identity
    expected_commitment = 0.25 * (z.detach().reshape(2, 3).t() - quantizer.codebook[[1, 2, 0]]).pow(2).mean()
    assert loss.item() == pytest.approx(expected_commitment.item() * (1 if ema else 5))  # beta + codebook term


def test_ema_codebook_moves_towards_its_vectors_and_dead_codes_restart():
    config = AutoencoderConfig(latent_channels=2, codebook_size=2, codebook_decay=0.5, dead_code_threshold=0.3)
    quantizer = VectorQuantizer(config).train()
    with torch.no_grad():
        quantizer.codebook.copy_(torch.tensor([[0.0, 0.0], [100.0, 100.0]]))
        quantizer.code_sum.copy_(quantizer.codebook)
    vectors = torch.tensor([[1.0, 1.0], [1.2, 0.8]])
    z = vectors.t().reshape(1, 2, 2, 1)
    torch.manual_seed(0)
    quantizer(z)  # both vectors pick code 0; code 1's usage falls to 0.5, still alive
    assert 0 < quantizer.codebook[0, 0] < 1.1  # moved from 0 towards the mean 1.1 of its vectors
    assert torch.allclose(quantizer.codebook[1], torch.tensor([100.0, 100.0]), atol=0.01)  # unused: unmoved
    quantizer(z)  # usage 0.25 < 0.3: code 1 is restarted on one of the batch's vectors
    assert any(torch.equal(quantizer.codebook[1], v) for v in vectors)
    assert quantizer.restart_dead_codes(vectors) == 0  # nothing dead right after a restart


def test_random_crops_are_windows_of_their_images():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    crops = random_crop(x, 4, torch.Generator().manual_seed(0))
    assert crops.shape == (2, 3, 4, 4)
    for image, crop in zip(x, crops):
        top, left = divmod(int(crop[0, 0, 0].item()) % 64, 8)
        assert torch.equal(crop, image[:, top : top + 4, left : left + 4])


def test_psnr():
    x = torch.zeros(1, 3, 4, 4)
    assert psnr(x + 0.2, x) == pytest.approx(20.0)  # error 0.1 on the [0, 1] scale


@pytest.mark.parametrize("kind", ["vae", "vqvae"])
def test_autoencoder_training_improves_reconstructions_and_resumes_exactly(kind, dataset, evaluator_file, tmp_path):
    def mse(run):
        from condgen.latent.run import load_autoencoder

        model = load_autoencoder(run, "latest")
        from condgen.data.iclevr import load_dataset
        from condgen.data.imageio import to_signed

        x = to_signed(load_dataset(dataset, progress=False).images[:8])
        with torch.no_grad():
            return (model(x)[0] - x).pow(2).mean().item()

    assert train(kind, dataset, tmp_path / "short", evaluator_file, "loop.steps=1") == 0
    assert train(kind, dataset, tmp_path / "straight", evaluator_file, "loop.steps=30", "loop.eval_every=15") == 0
    assert mse(tmp_path / "straight") < 0.7 * mse(tmp_path / "short")
    scores = [r for r in records(tmp_path / "straight") if "psnr" in r][-1]
    assert 0 <= scores["accuracy_reconstructions"] <= 1 and scores["psnr"] > 0
    assert ("codebook_usage" in scores) == (kind == "vqvae")
    assert (tmp_path / "straight" / "samples" / "step-0000030-recon.png").exists()

    assert train(kind, dataset, tmp_path / "split", evaluator_file, "loop.steps=4") == 0
    assert train(kind, dataset, tmp_path / "split", evaluator_file, "loop.steps=8", resume=True) == 0
    assert train(kind, dataset, tmp_path / "whole", evaluator_file, "loop.steps=8") == 0
    losses = [
        [r["reconstruction"] for r in records(tmp_path / run) if "reconstruction" in r] for run in ("split", "whole")
    ]
    assert losses[0] == losses[1]
    a = load_file(tmp_path / "split" / "checkpoints" / "step-0000008" / "model.safetensors")
    b = load_file(tmp_path / "whole" / "checkpoints" / "step-0000008" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_adversarial_patch_loss_on_crops_trains_a_discriminator(dataset, evaluator_file, tmp_path):
    run = tmp_path / "run"
    overrides = ["loop.steps=3", "optim.adversarial_weight=0.1", "optim.adversarial_start=1", "optim.crop_size=32"]
    assert train("vqvae", dataset, run, evaluator_file, *overrides) == 0
    logged = [r for r in records(run) if "reconstruction" in r]
    assert "d_loss" not in logged[0] and "d_loss" in logged[1]
    assert (run / "checkpoints" / "step-0000003" / "discriminator.safetensors").exists()
    assert train("vae", dataset, tmp_path / "odd", evaluator_file, "optim.crop_size=30") == 2  # not a multiple of 4


def test_latent_diffusion_end_to_end(dataset, evaluator_file, tmp_path, capsys):
    autoencoder = tmp_path / "vae"
    assert train("vae", dataset, autoencoder, evaluator_file, "loop.steps=2") == 0
    run = tmp_path / "ldm"
    assert train("ldm", dataset, run, evaluator_file, "loop.steps=2") == 2  # --autoencoder is required
    assert "--autoencoder: required" in capsys.readouterr().err
    assert train("ldm", dataset, run, evaluator_file, "loop.steps=2", autoencoder=dataset) == 2
    assert train("ldm", dataset, run, evaluator_file, "loop.steps=2", autoencoder=autoencoder) == 0
    config = (run / "config.yaml").read_text()
    assert "in_channels: 4" in config and "image_size: 16" in config and "scale_factor: 0.0\n" not in config

    # resume continues exactly, with the scale factor and latents of the first start
    assert train("ldm", dataset, tmp_path / "whole", evaluator_file, "loop.steps=4", autoencoder=autoencoder) == 0
    assert train("ldm", dataset, run, evaluator_file, "loop.steps=4", resume=True, autoencoder=autoencoder) == 2
    assert train("ldm", dataset, run, evaluator_file, "loop.steps=4", resume=True) == 0
    losses = [[r["loss"] for r in records(tmp_path / name) if "loss" in r] for name in ("ldm", "whole")]
    assert losses[0] == losses[1]

    out = tmp_path / "samples"
    argv = ["sample", "--run", str(run), "--labels", str(dataset / "test.json"), "--out", str(out), "--steps", "2"]
    assert main(argv) == 0
    assert Image.open(out / "0.png").size == (64, 64) and (out / "grid.png").exists()
    assert 0 <= json.loads((out / "scores.json").read_text())["accuracy"] <= 1
    picture = tmp_path / "denoise.png"
    assert main(["denoise", "--run", str(run), "--out", str(picture), "--snapshots", "3", "--steps", "4"]) == 0
    assert Image.open(picture).size == (3 * (64 + 2) + 2, 64 + 4)  # decoded snapshots, not 16x16 latents
    guided = ["sample", "--run", str(run), "--objects", "red cube", "--out", str(tmp_path / "g")]
    assert main([*guided, "--classifier", str(autoencoder)]) == 2
    assert "a vae run; this needs a latent_classifier run" in capsys.readouterr().err


TINY_CLASSIFIER = [*TINY_LDM[:5], "optim.batch_size=4", "val_fraction=0.2", "loop.steps=2", "loop.log_every=1"]


def test_a_latent_classifier_guides_and_ranks_an_ldm_and_travels_with_its_model_folder(
    dataset, evaluator_file, tmp_path, capsys
):
    autoencoder, run, classifier = tmp_path / "vae", tmp_path / "ldm", tmp_path / "classifier"
    assert train("vae", dataset, autoencoder, evaluator_file, "loop.steps=2") == 0
    assert train("ldm", dataset, run, evaluator_file, "loop.steps=2", autoencoder=autoencoder) == 0
    argv = ["train", "latent-classifier", "--data", str(dataset), "--autoencoder", str(autoencoder), "--out"]
    assert main([*argv, str(classifier), *TINY_CLASSIFIER]) == 0
    assert {"accuracy_t0", "exact_set_t50", "exact_set"} <= set(records(classifier)[-1])
    assert yaml.safe_load((classifier / "config.yaml").read_text())["scale_factor"] == pytest.approx(
        yaml.safe_load((run / "config.yaml").read_text())["scale_factor"]
    )

    def sample(source, out, *options):
        argv = ["sample", "--run", str(source), "--objects", "red cube, blue sphere", "--out", str(out), "--seed", "1"]
        code = main([*argv, *options])
        return (out / "0.png").read_bytes() if code == 0 else code

    plain = sample(run, tmp_path / "plain")
    ranked = sample(run, tmp_path / "ranked", "--classifier", str(classifier), "--candidates", "3")
    assert json.loads((tmp_path / "ranked" / "scores.json").read_text())["sample"]["candidates"] == 3
    pushed = sample(run, tmp_path / "pushed", "--classifier", str(classifier), "--classifier-absent-scale", "50")
    assert plain != pushed and sample(run, tmp_path / "r", "--candidates", "3") == 2
    assert (
        "--candidates: ranking 3 samples per request needs --ranker RUN or --classifier RUN" in capsys.readouterr().err
    )

    # a classifier of other latents, or of another noise schedule, is refused with the reason
    assert main([*argv, str(tmp_path / "rescaled"), *TINY_CLASSIFIER, "scale_factor=0.5"]) == 0
    assert sample(run, tmp_path / "x", "--classifier", str(tmp_path / "rescaled")) == 2
    assert "scaled by 0.5" in capsys.readouterr().err and not (tmp_path / "x").exists()
    assert main([*argv, str(tmp_path / "t30"), *TINY_CLASSIFIER, "diffusion.num_steps=30"]) == 0
    assert sample(run, tmp_path / "y", "--classifier", str(tmp_path / "t30")) == 2
    assert "another noise schedule" in capsys.readouterr().err
    assert main(["export", "--run", str(run), "--out", str(tmp_path / "z"), "--classifier", str(tmp_path / "t30")]) == 2
    assert not (tmp_path / "z").exists()

    model = tmp_path / "model"
    assert main(["export", "--run", str(run), "--out", str(model), "--classifier", str(classifier)]) == 0
    assert (model / "classifier" / "best" / "model.safetensors").exists()
    for moved in (run, classifier, autoencoder):  # the folder stands alone
        moved.rename(tmp_path / f"{moved.name}-moved")
    assert sample(model, tmp_path / "from-model", "--candidates", "3") == ranked
    assert sample(model, tmp_path / "plain-model") == plain
    images = condgen.load(model).generate(["red cube", "blue sphere"], seed=1, candidates=2)
    assert images.shape == (2, 3, 64, 64)


def test_an_image_ranker_keeps_the_decoded_candidate_it_finds_exact_and_travels_with_its_model_folder(
    dataset, evaluator_file, tmp_path, capsys
):
    autoencoder, run, ranker = tmp_path / "vae", tmp_path / "ldm", tmp_path / "ranker"
    assert train("vae", dataset, autoencoder, evaluator_file, "loop.steps=2") == 0
    assert train("ldm", dataset, run, evaluator_file, "loop.steps=2", autoencoder=autoencoder) == 0
    tiny = ["optim.epochs=0", "loop.steps=2", "optim.batch_size=4", "device=cpu"]
    assert main(["train", "evaluator", "--data", str(dataset), "--out", str(ranker), *tiny]) == 0

    # best of 3 keeps, of the 3 samples made from the same noise, the one whose decoded image the ranker scores
    # closest to exactly the request
    loaded = condgen.load(run).loaded
    loaded.ranker = load_ranker(ranker, loaded.meta["objects"])
    labels = torch.zeros(2, 24)
    labels[0, [0, 9]], labels[1, 17] = 1, 1
    sample = loaded.config.sample.changed(steps=2, seed=3)
    candidates = generate(loaded.model, loaded.diffusion, labels.repeat_interleave(3, 0), sample)
    logits = evaluator_logits(loaded.ranker, loaded.decode(candidates).clamp(-1, 1))
    picks = set_log_likelihood(logits, labels.repeat_interleave(3, 0)).view(2, 3).argmax(dim=1)
    kept = generate(loaded.model, loaded.diffusion, labels, sample.changed(candidates=3), ranker=loaded.ranking())
    assert torch.equal(kept, candidates.view(2, 3, *candidates.shape[1:])[torch.arange(2), picks])

    def sample_png(source, out, *options):
        argv = ["sample", "--run", str(source), "--objects", "red cube, blue sphere", "--out", str(out), "--seed", "1"]
        code = main([*argv, "--steps", "2", *options])
        return (out / "0.png").read_bytes() if code == 0 else code

    ranked = sample_png(run, tmp_path / "ranked", "--ranker", str(ranker), "--candidates", "3")
    shipped = resources.files("condgen.evaluate") / "weights" / SHIPPED_WEIGHTS
    with resources.as_file(shipped) as judge:
        assert sample_png(run, tmp_path / "judged", "--ranker", str(judge), "--candidates", "3") == 2
    assert "the shipped evaluator, which scores images and never ranks them" in capsys.readouterr().err
    assert not (tmp_path / "judged").exists()
    judge = load_evaluator()
    save_evaluator(judge.model, judge.codec, tmp_path / "judge16.safetensors", half=True)  # a float16 copy
    assert (
        sample_png(run, tmp_path / "judged", "--ranker", str(tmp_path / "judge16.safetensors"), "--candidates", "3")
        == 2
    )
    assert "the shipped evaluator, which scores images and never ranks them" in capsys.readouterr().err
    weights = str(ranker / "evaluator.safetensors")
    assert sample_png(run, tmp_path / "self", "--ranker", weights, "--evaluator", weights, "--candidates", "3") == 2
    assert "the --evaluator scores the images; it cannot rank them" in capsys.readouterr().err

    model = tmp_path / "model"
    assert main(["export", "--run", str(run), "--out", str(model), "--ranker", str(ranker)]) == 0
    for moved in (run, ranker, autoencoder):  # the folder stands alone
        moved.rename(tmp_path / f"{moved.name}-moved")
    assert sample_png(model, tmp_path / "from-model", "--candidates", "3") == ranked


def test_latent_gan_end_to_end(dataset, evaluator_file, tmp_path, capsys):
    autoencoder = tmp_path / "vae"
    assert train("vae", dataset, autoencoder, evaluator_file, "loop.steps=2") == 0
    run = tmp_path / "lgan"
    assert train("latent-gan", dataset, run, evaluator_file, "loop.steps=2") == 2  # --autoencoder is required
    assert "--autoencoder: required" in capsys.readouterr().err
    pixel_nets = ["model.architecture=resnet"]
    assert train("latent-gan", dataset, run, evaluator_file, *pixel_nets, autoencoder=autoencoder) == 2
    assert "a latent GAN uses s2d" in capsys.readouterr().err
    assert train("latent-gan", dataset, run, evaluator_file, "loop.steps=2", autoencoder=autoencoder) == 0
    config = (run / "config.yaml").read_text()
    assert "latent_channels: 4" in config and "scale_factor: 0.0\n" not in config
    generator = load_file(run / "best" / "ema.safetensors")
    assert generator["out.weight"].shape[0] == 4  # the generator makes 4-channel latents, not 48 folded channels

    # resume continues exactly, with the scale factor and latents of the first start
    whole = tmp_path / "whole"
    assert train("latent-gan", dataset, whole, evaluator_file, "loop.steps=4", autoencoder=autoencoder) == 0
    assert train("latent-gan", dataset, run, evaluator_file, "loop.steps=4", resume=True) == 0
    losses = [[(r["d_loss"], r["g_loss"]) for r in records(path) if "d_loss" in r] for path in (run, whole)]
    assert losses[0] == losses[1]

    out = tmp_path / "samples"
    assert main(["sample", "--run", str(run), "--labels", str(dataset / "test.json"), "--out", str(out)]) == 0
    assert Image.open(out / "0.png").size == (64, 64)  # decoded images, not 16x16 latents
    assert 0 <= json.loads((out / "scores.json").read_text())["accuracy"] <= 1
    strip = tmp_path / "strip.png"
    assert main(["interpolate", "--run", str(run), "--objects", "red cube", "--out", str(strip), "--frames", "3"]) == 0
    assert Image.open(strip).size == (3 * (64 + 2) + 2, 64 + 4)
    assert main(["denoise", "--run", str(run), "--objects", "red cube", "--out", str(tmp_path / "d.png")]) == 2


def test_a_latent_gan_started_from_another_keeps_its_autoencoder_and_decodes_for_the_reward(
    dataset, evaluator_file, tmp_path, capsys
):
    autoencoder, run, tuned = tmp_path / "vae", tmp_path / "lgan", tmp_path / "tuned"
    assert train("vae", dataset, autoencoder, evaluator_file, "loop.steps=2") == 0
    assert train("latent-gan", dataset, run, evaluator_file, "loop.steps=2", autoencoder=autoencoder) == 0
    ranker, counter = tiny_ranker(tmp_path / "ranker.safetensors"), tiny_counter(tmp_path / "counter.safetensors")
    reward = [f"reward.ranker={ranker}", f"reward.counter={counter}", "reward.weight=1"]
    assert train("latent-gan", dataset, tuned, evaluator_file, "loop.steps=2", *reward, "--init", str(run)) == 0
    started, trained = (yaml.safe_load((folder / "config.yaml").read_text()) for folder in (tuned, run))
    assert started["autoencoder"] == str(autoencoder.resolve()) and started["scale_factor"] == trained["scale_factor"]
    assert [r["reward"] for r in records(tuned) if "reward" in r]  # the decoded images were read

    capsys.readouterr()
    other = tmp_path / "other_vae"
    assert train("latent-gan", dataset, tmp_path / "x", evaluator_file, "--init", str(run), autoencoder=other) == 2
    err = capsys.readouterr().err
    assert "--autoencoder: a run started from --init" in err and err.count("\n") == 1
