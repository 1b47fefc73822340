import json
import math
from importlib import resources

import pytest
import torch
from conftest import tiny_counter, tiny_ranker
from PIL import Image
from safetensors.torch import load_file

from condgen.cli import main
from condgen.data.iclevr import load_dataset, load_label_file
from condgen.data.labels import LabelCodec, share_a_first_word
from condgen.errors import CondgenError
from condgen.evaluate.evaluator import SHIPPED_WEIGHTS
from condgen.evaluate.ranker import RANKER_COUNTER_FILE, RANKER_FILE, read_images
from condgen.gan import losses, sampling
from condgen.gan.augment import augment, cutout, translate
from condgen.gan.networks import Discriminator, GANModelConfig, Generator, build_discriminator, build_generator
from condgen.gan.options import Architecture, Augment, Conditioning, Loss, Optimizer
from condgen.gan.reward import HardRequests, RankerReward, RewardConfig
from condgen.gan.run import load_gan
from condgen.gan.trainer import GANOptimConfig, GANRunConfig, GANTask, make_gan_task
from condgen.nn import adversarial
from condgen.nn.ranking import candidate_scores, set_log_likelihood
from condgen.pretrained import PRETRAINED
from condgen.train.checkpoint import latest_checkpoint
from condgen.train.config import dump_config, load_config

TINY = [
    "model.g_channels=8",
    "model.d_channels=8",
    "model.noise_dim=16",
    "model.label_dim=16",
    "optim.batch_size=4",
    "optim.n_critic=2",
    "loop.log_every=1",
]


def test_loss_signs_and_values():
    real, fake = torch.tensor([2.0, 3.0]), torch.tensor([-1.0, 0.0])
    assert adversarial.d_wasserstein(real, fake).item() == pytest.approx(-0.5 - 2.5)  # E[fake] - E[real]
    assert adversarial.g_wasserstein(fake).item() == pytest.approx(0.5)
    assert adversarial.d_hinge(real, fake).item() == pytest.approx(0 + (0 + 1) / 2)  # relu(1-real), relu(1+fake)
    assert adversarial.g_hinge(fake).item() == pytest.approx(0.5)
    # a confident, correct discriminator has a small BCE loss; the generator then has a large one
    assert adversarial.d_bce(torch.tensor([9.0]), torch.tensor([-9.0])) < 1e-3
    assert adversarial.g_bce(torch.tensor([-9.0])) > 8.9


def test_auxiliary_loss_is_bce_with_logits_per_object():
    logits = torch.tensor([[4.0, -4.0, 0.0]])
    labels = torch.tensor([[1.0, 0.0, 1.0]])
    expected = -(torch.log(torch.sigmoid(torch.tensor(4.0))) * 2 + torch.log(torch.tensor(0.5))) / 3
    assert losses.auxiliary_classification(logits, labels).item() == pytest.approx(expected.item(), rel=1e-5)


def test_gradient_penalty_of_a_linear_critic():
    """D(x) = w . x has gradient w everywhere, so the penalty is (|w| - 1)^2 whatever the interpolates."""
    w = torch.zeros(3, 2, 2)
    w[0, 0, 0], w[1, 1, 1] = 2.0, -torch.sqrt(torch.tensor(5.0))  # |w| = 3

    def critic(x, y):
        return (x * w).flatten(1).sum(1)

    real, fake = torch.randn(5, 3, 2, 2), torch.randn(5, 3, 2, 2)
    penalty = losses.gradient_penalty(critic, real, fake, torch.zeros(5, 24), torch.Generator().manual_seed(0))
    assert penalty.item() == pytest.approx(4.0, rel=1e-5)


def test_clipping_bounds_every_critic_weight():
    critic = Discriminator(GANModelConfig(d_channels=8))
    with torch.no_grad():
        for p in critic.parameters():
            p.normal_(0, 1)
    losses.clip_weights(critic, 0.01)
    assert all(p.abs().max() <= 0.01 for p in critic.parameters())


@pytest.mark.parametrize("architecture", ["dcgan", "resnet"])
@pytest.mark.parametrize("conditioning", ["projection", "auxiliary", "input"])
def test_networks_shapes_and_label_dependence(architecture, conditioning):
    config = GANModelConfig(
        architecture=architecture,
        conditioning=conditioning,
        g_channels=8,
        d_channels=8,
        conditional_bn=True,
        spectral_norm=True,
    )
    generator, critic = Generator(config).eval(), Discriminator(config)
    labels = LabelCodec.iclevr().encode_many([["red cube"], ["blue sphere", "cyan cube"]])
    z = torch.randn(2, config.noise_dim)
    images = generator(z, labels)
    assert images.shape == (2, 3, 64, 64) and images.abs().max() <= 1
    assert not torch.allclose(images, generator(z, labels.flip(0)))
    score, aux = critic(images, labels)
    assert score.shape == (2,)
    assert (aux is None) == (conditioning != "auxiliary")
    if conditioning != "auxiliary":
        assert not torch.allclose(score, critic(images, labels.flip(0))[0])


def test_config_rejects_batch_norm_in_a_penalised_critic():
    config = GANRunConfig()
    config.model.d_batch_norm = True
    with pytest.raises(CondgenError, match="gradient penalty must not use batch norm"):
        config.validate()


def train(dataset, run, evaluator_file, *overrides, resume=False):
    argv = ["train", "gan", "--data", str(dataset), "--out", str(run), "--evaluator", str(evaluator_file)]
    return main(argv + (["--resume"] if resume else []) + TINY + list(overrides))


@pytest.mark.parametrize(
    "setting",
    [
        ["optim.loss=bce", "model.conditioning=auxiliary", "optim.aux_weight=100", "model.architecture=dcgan"],
        ["optim.loss=hinge", "model.spectral_norm=true"],
        ["optim.loss=wgan_clip", "optim.optimizer=rmsprop", "optim.lr_d=5e-5", "model.architecture=dcgan"],
        ["optim.loss=wgan_gp", "model.conditional_bn=true"],
    ],
)
def test_one_training_step_per_loss(dataset, evaluator_file, tmp_path, setting):
    run = tmp_path / "run"
    assert train(dataset, run, evaluator_file, "loop.steps=1", *setting) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {"d_loss", "g_loss"} <= set(records[0]) and all(
        map(torch.isfinite, map(torch.tensor, [records[0]["d_loss"], records[0]["g_loss"]]))
    )
    assert "accuracy" in records[-1] and (run / "best" / "ema.safetensors").exists()


def test_gan_resume_continues_exactly(dataset, evaluator_file, tmp_path):
    assert train(dataset, tmp_path / "straight", evaluator_file, "loop.steps=4") == 0
    assert train(dataset, tmp_path / "split", evaluator_file, "loop.steps=2") == 0
    assert train(dataset, tmp_path / "split", evaluator_file, "loop.steps=4", resume=True) == 0

    def read(run):
        return [
            (r["d_loss"], r["g_loss"])
            for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
            if "d_loss" in r
        ]

    assert read(tmp_path / "split") == read(tmp_path / "straight")


def test_gan_sampling_and_interpolation(dataset, evaluator_file, tmp_path, capsys):
    run = tmp_path / "run"
    assert train(dataset, run, evaluator_file, "loop.steps=1") == 0
    out = tmp_path / "samples"
    argv = ["sample", "--run", str(run), "--labels", str(dataset / "new_test.json"), "--seed", "2"]
    assert main([*argv, "--out", str(out)]) == 0 and main([*argv, "--out", str(tmp_path / "again")]) == 0
    assert (out / "31.png").exists() and (out / "grid.png").exists()
    assert (out / "7.png").read_bytes() == (tmp_path / "again" / "7.png").read_bytes()
    assert 0 <= json.loads((out / "scores.json").read_text())["accuracy"] <= 1
    strip = tmp_path / "strip.png"
    assert main(["interpolate", "--run", str(run), "--out", str(strip), "--frames", "8"]) == 0
    assert Image.open(strip).size == (8 * 66 + 2, 68)
    # a projection-only critic has no auxiliary head to rank candidates with
    assert main([*argv, "--out", str(tmp_path / "ranked"), "--candidates", "4"]) == 2
    assert "candidates: ranking 4 images per request needs the critic's auxiliary head" in capsys.readouterr().err


def test_gradnorm_writes_a_plot_and_one_csv_row_per_layer(dataset, tmp_path, capsys):
    out = tmp_path / "gradnorm"
    assert main(["gradnorm", "--data", str(dataset), "--out", str(out), "--steps", "2", "--batch-size", "4"]) == 0
    rows = (out / "gradnorm.csv").read_text().splitlines()
    assert rows[0] == "layer_index,layer,weight_clipping,gradient_penalty"
    assert [r.split(",")[1] for r in rows[1:]] == ["conv1", "conv2", "conv3", "conv4", "score"]
    assert all(float(v) > 0 for r in rows[1:] for v in r.split(",")[2:])
    assert Image.open(out / "gradnorm.png").size[0] > 300
    assert main(["gradnorm", "--data", str(tmp_path / "gradnorm"), "--out", str(out)]) == 2  # no overwrite


@pytest.mark.parametrize("conditioning", ["projection", "auxiliary", "both", "input"])
def test_s2d_networks_shapes_and_label_dependence(conditioning):
    config = GANModelConfig(
        architecture="s2d",
        conditioning=conditioning,
        g_channels=8,
        d_channels=8,
        noise_dim=16,
        label_dim=16,
        conditional_bn=True,
        spectral_norm=True,
        g_blocks=2,
        d_blocks=1,
    )
    generator, critic = build_generator(config).eval(), build_discriminator(config)
    labels = LabelCodec.iclevr().encode_many([["red cube"], ["blue sphere", "cyan cube"]])
    z = torch.randn(2, config.noise_dim)
    images = generator(z, labels)
    assert images.shape == (2, 3, 64, 64) and images.abs().max() <= 1
    assert not torch.allclose(images, generator(z, labels.flip(0)))
    score, aux = critic(images, labels)
    assert score.shape == (2,)
    assert (aux is None) == (conditioning in ("projection", "input"))
    if aux is not None:
        assert aux.shape == (2, 24)
    if conditioning != "auxiliary":
        assert not torch.allclose(score, critic(images, labels.flip(0))[0])


def test_both_conditioning_on_the_dcgan_discriminator():
    critic = Discriminator(GANModelConfig(architecture="dcgan", d_channels=8, conditioning="both"))
    score, aux = critic(torch.zeros(3, 3, 64, 64), torch.zeros(3, 24))
    assert score.shape == (3,) and aux.shape == (3, 24)


def test_input_conditioning_feeds_label_planes_to_the_first_layer_through_clipping():
    config = GANModelConfig(architecture="s2d", d_channels=8, conditioning="input", latent_channels=4)
    critic = build_discriminator(config)
    assert critic.stem.in_channels == 4 + 24 and critic.projection is None and critic.auxiliary is None
    losses.clip_weights(critic, 0.01)
    latents = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    labels = LabelCodec.iclevr().encode_many([["red cube"], ["blue sphere", "cyan cube"]])
    assert not torch.allclose(critic(latents, labels)[0], critic(latents, labels.flip(0))[0])


@pytest.mark.parametrize("batch_norm", [False, True])
def test_s2d_critic_batch_norm_keeps_residual_branches_alive_under_clipping(batch_norm):
    """Every critic weight at the clipping bound's scale: a residual branch adds about a tenth of its shortcut
    without batch norm and more than the shortcut itself with it; the norm has no weight for clipping to clamp."""
    torch.manual_seed(0)
    config = GANModelConfig(
        architecture="s2d", d_channels=32, conditioning="input", latent_channels=4, d_batch_norm=batch_norm
    )
    critic = build_discriminator(config).train()
    with torch.no_grad():
        for parameter in critic.parameters():
            parameter.uniform_(-0.01, 0.01)
    norms = [m for m in critic.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(norms) == (6 if batch_norm else 0) and not any(m.affine for m in norms)
    labels = (torch.rand(32, 24) < 0.1).float()
    shortcut = critic.stem(critic.with_label_planes(torch.randn(32, 4, 16, 16), labels))
    branch = critic.blocks[0](shortcut) - shortcut
    ratio = (branch.std() / shortcut.std()).item()
    assert (ratio > 1) if batch_norm else (ratio < 0.2)


def test_translation_moves_pixels_without_changing_colours():
    x = torch.zeros(1, 3, 16, 16)
    x[0, :, 6:10, 6:10] = torch.tensor([0.9, -0.3, 0.1])[:, None, None]  # one coloured square on grey
    shifted = translate(x.expand(64, -1, -1, -1), 0.125, torch.Generator().manual_seed(0))
    assert shifted.shape == (64, 3, 16, 16)
    # every pixel is either the background or the square's exact colour: no new colours, nothing blended
    colours = shifted.permute(0, 2, 3, 1).reshape(-1, 3).unique(dim=0)
    assert {tuple(round(v, 4) for v in c.tolist()) for c in colours} == {(0.0, 0.0, 0.0), (0.9, -0.3, 0.1)}
    # shifts are at most 2 pixels (0.125 * 16), so the square stays whole, and some images did move
    assert torch.allclose(shifted.abs().sum(dim=(1, 2, 3)), x.abs().sum().expand(64))
    assert not torch.all(shifted == x)


def test_translation_is_differentiable_and_cutout_hides_one_square():
    x = torch.randn(4, 3, 16, 16, requires_grad=True)
    translate(x, 0.25, torch.Generator().manual_seed(1)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    ones = torch.ones(8, 3, 16, 16)
    hidden = cutout(ones, 0.25, torch.Generator().manual_seed(0))
    assert torch.all((hidden == 0).sum(dim=(1, 2, 3)) == 3 * 4 * 4)
    assert torch.equal(augment(ones, "none", torch.Generator()), ones)


def test_r1_penalty_of_a_linear_critic():
    w = torch.full((3, 2, 2), 0.5)  # |w|^2 = 3
    real = torch.randn(5, 3, 2, 2, requires_grad=True)
    assert losses.r1_penalty((real * w).flatten(1).sum(1), real).item() == pytest.approx(3.0)


def test_mismatched_negatives_take_the_fake_side_of_each_loss():
    scores = torch.tensor([-2.0, 0.0])
    assert losses.d_mismatched(scores, Loss.HINGE).item() == pytest.approx(0.5)
    assert losses.d_mismatched(scores, Loss.WGAN_CLIP).item() == pytest.approx(-1.0)
    assert losses.d_mismatched(scores, Loss.WGAN_GP).item() == pytest.approx(-1.0)
    assert losses.d_mismatched(scores, Loss.BCE).item() == pytest.approx((math.log1p(math.exp(-2)) + math.log(2)) / 2)


@pytest.mark.parametrize("loss", list(Loss))
def test_the_fake_side_is_what_the_discriminator_loss_adds_for_fake_scores(loss):
    """Swapping the fake scores changes the critic's loss by exactly the change of the fake side that the mismatched
    negatives are scored with."""
    real, fake, other = torch.tensor([0.5, 2.0]), torch.tensor([-1.5, 0.25]), torch.tensor([3.0, -0.5])
    critic_loss = losses.LOSSES[loss].adversarial.discriminator
    change = critic_loss(real, fake) - critic_loss(real, other)
    assert change.item() == pytest.approx((losses.d_mismatched(fake, loss) - losses.d_mismatched(other, loss)).item())


def test_loss_table_constraints():
    assert [loss for loss in Loss if losses.LOSSES[loss].clip] == [Loss.WGAN_CLIP]
    assert [loss for loss in Loss if losses.LOSSES[loss].penalty] == [Loss.WGAN_GP]


def test_options_load_from_names_and_are_written_as_names(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("model:\n  architecture: s2d\n  conditioning: both\noptim:\n  loss: hinge\n")
    config = load_config(GANRunConfig, path, ["optim.optimizer=rmsprop", "optim.augment=translation_cutout"])
    assert (config.model.architecture, config.model.conditioning) == (Architecture.S2D, Conditioning.BOTH)
    assert (config.optim.loss, config.optim.optimizer) == (Loss.HINGE, Optimizer.RMSPROP)
    assert config.optim.augment is Augment.TRANSLATION_CUTOUT
    written = dump_config(config)
    lines = {line.strip() for line in written.splitlines()}
    assert {"architecture: s2d", "loss: hinge", "optimizer: rmsprop", "augment: translation_cutout"} <= lines
    path.write_text(written)
    assert load_config(GANRunConfig, path) == config
    with pytest.raises(CondgenError, match="optim.loss=lsgan': 'lsgan' is not one of .*'bce', 'hinge', 'wgan_clip'"):
        load_config(GANRunConfig, overrides=["optim.loss=lsgan"])


def test_option_names_given_in_python_become_members_and_unknown_names_are_refused():
    config = GANModelConfig(architecture="dcgan", conditioning="input")
    assert config.architecture is Architecture.DCGAN and config.conditioning is Conditioning.INPUT
    with pytest.raises(CondgenError, match="model.architecture: 'vit' is not one of dcgan, resnet, s2d"):
        GANModelConfig(architecture="vit")
    with pytest.raises(CondgenError, match="optim.loss: 'lsgan' is not one of bce, hinge, wgan_clip, wgan_gp"):
        GANOptimConfig(loss="lsgan")


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("model.architecture", "vit", "model.architecture"),
        ("model.conditioning", "concat", "model.conditioning"),
        ("optim.augment", "colour", "optim.augment"),
        ("optim.translate_fraction", 0.5, "optim.translate_fraction"),
        ("optim.r1_gamma", -1.0, "optim.r1_gamma"),
        ("optim.mismatch_weight", -1.0, "optim.mismatch_weight"),
        ("model.g_blocks", 0, "model.g_blocks"),
    ],
)
def test_config_rejects_bad_new_settings(key, value, message):
    config = GANRunConfig()
    section, name = key.split(".")
    setattr(getattr(config, section), name, value)
    with pytest.raises(CondgenError, match=message):
        config.validate()


S2D = [
    "model.architecture=s2d",
    "model.conditioning=both",
    "optim.loss=hinge",
    "model.spectral_norm=true",
    "model.conditional_bn=true",
    "optim.augment=translation_cutout",
    "optim.mismatch_weight=1",
    "optim.r1_gamma=1",
    "candidates=2",  # the periodic evaluation ranks two images per request by the critic's auxiliary head
]


def test_s2d_trains_and_resumes_exactly(dataset, evaluator_file, tmp_path):
    assert train(dataset, tmp_path / "straight", evaluator_file, "loop.steps=4", *S2D) == 0
    assert train(dataset, tmp_path / "split", evaluator_file, "loop.steps=2", *S2D) == 0
    assert train(dataset, tmp_path / "split", evaluator_file, "loop.steps=4", *S2D, resume=True) == 0

    def read(run):
        return [
            (r["d_loss"], r["g_loss"])
            for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
            if "d_loss" in r
        ]

    losses_straight = read(tmp_path / "straight")
    assert len(losses_straight) == 4 and read(tmp_path / "split") == losses_straight
    out = tmp_path / "samples"
    argv = ["sample", "--run", str(tmp_path / "straight"), "--labels", str(dataset / "test.json"), "--out", str(out)]
    assert main(argv) == 0 and (out / "grid.png").exists()
    assert json.loads((out / "scores.json").read_text())["candidates"] == 2
    assert main([*argv[:-1], str(tmp_path / "best_of_3"), "--candidates", "3"]) == 0
    assert json.loads((tmp_path / "best_of_3" / "scores.json").read_text())["candidates"] == 3


def test_best_of_k_keeps_the_candidate_the_auxiliary_head_ranks_first():
    torch.manual_seed(0)
    config = GANModelConfig(architecture="s2d", g_channels=8, d_channels=8, noise_dim=16, label_dim=16)
    generator, critic = build_generator(config).eval(), build_discriminator(config).eval()
    both = GANModelConfig(**{**config.__dict__, "conditioning": "both"})
    ranker = build_discriminator(both).eval()
    labels = torch.zeros(6, 24)
    labels[torch.arange(6), torch.arange(6)] = 1
    plain = sampling.sample_images(generator, labels, seed=3)
    with torch.no_grad():  # K = 1 is plain sampling: one N(0, I) draw per request, as before ranking existed
        z = torch.randn(6, 16, generator=torch.Generator().manual_seed(3))
        assert torch.equal(plain, generator(z, labels))
        z = torch.randn(6 * 4, 16, generator=torch.Generator().manual_seed(3))
        repeated = labels.repeat_interleave(4, dim=0)
        every = generator(z, repeated)
        best = set_log_likelihood(ranker(every, repeated)[1], repeated).view(6, 4).argmax(dim=1)
    ranked = sampling.sample_images(generator, labels, seed=3, batch_size=8, critic=ranker, candidates=4)
    assert torch.allclose(ranked, every.view(6, 4, *every.shape[1:])[torch.arange(6), best], atol=1e-6)
    assert len(set(best.tolist())) > 1  # not always the first candidate
    with pytest.raises(CondgenError, match="auxiliary head"):
        sampling.sample_images(generator, labels, seed=3, critic=critic, candidates=4)


@pytest.mark.parametrize("candidates, conditioning", [(0, "both"), (2, "projection")])
def test_config_rejects_candidates_without_a_ranking_head(candidates, conditioning):
    config = GANRunConfig(candidates=candidates)
    config.model.conditioning = conditioning
    with pytest.raises(CondgenError, match="candidates"):
        config.validate()


def test_a_run_started_from_another_takes_its_settings_and_best_weights(
    dataset, evaluator_file, tmp_path, capsys, monkeypatch
):
    trained = tmp_path / "trained"
    assert (
        train(dataset, trained, evaluator_file, "loop.steps=2", "model.g_channels=12", "model.conditioning=both") == 0
    )
    tuned = tmp_path / "tuned"
    # the model settings are the trained run's (TINY asks for 8 channels); the optimiser settings are the new run's
    assert train(dataset, tuned, evaluator_file, "loop.steps=1", "optim.lr_g=1e-5", "--init", str(trained)) == 0
    config = load_config(GANRunConfig, tuned / "config.yaml")
    assert config.model.g_channels == 12 and config.init == str(trained)
    monkeypatch.chdir(tmp_path)  # a model folder records the run it started from relative to where it was exported
    assert main(["export", "--run", str(tuned), "--out", str(tmp_path / "tuned_model")]) == 0
    assert load_config(GANRunConfig, tmp_path / "tuned_model" / "config.yaml").init == "trained"

    data = load_dataset(dataset, progress=False)
    config = load_config(GANRunConfig, None, [*TINY, f"init={trained}", "optim.lr_g=1e-5", "device=cpu"])
    task = make_gan_task(config, data, dataset, None)
    for name in ("generator", "critic", "ema"):
        saved = load_file(trained / "best" / f"{name}.safetensors")
        assert all(torch.equal(saved[key], value) for key, value in task.modules[name].state_dict().items())
    assert task.opt_g.state and task.opt_g.param_groups[0]["lr"] == 1e-5  # Adam's moments, the new rate

    model = tmp_path / "model"  # a model folder keeps the EMA generator alone, which starts both generators (and
    # its critic, which ranks by its auxiliary head)
    assert main(["export", "--run", str(trained), "--out", str(model)]) == 0
    task = make_gan_task(load_config(GANRunConfig, None, [*TINY, f"init={model}", "device=cpu"]), data, dataset, None)
    ema = task.modules["ema"].state_dict()
    assert all(torch.equal(ema[key], value) for key, value in task.modules["generator"].state_dict().items())
    assert not task.opt_g.state

    capsys.readouterr()
    assert train(dataset, tuned, evaluator_file, "loop.steps=2", "--init", str(trained), resume=True) == 2
    assert "--init: a resumed run keeps the init it started with" in capsys.readouterr().err
    assert train(dataset, tmp_path / "x", evaluator_file, "--init", str(dataset)) == 2
    assert capsys.readouterr().err.count("\n") == 1 and not (tmp_path / "x").exists()


def reward_settings(tmp_path, weight):
    ranker, counter = tiny_ranker(tmp_path / "ranker.safetensors"), tiny_counter(tmp_path / "counter.safetensors")
    return [f"reward.ranker={ranker}", f"reward.counter={counter}", f"reward.weight={weight}"]


def test_a_ranker_reward_moves_the_generator_toward_what_best_of_k_keeps(dataset, evaluator_file, tmp_path):
    """The reward is the score best-of-K ranks candidates by; the generator trained with it makes images that
    score higher, by the same ranker and counter, than the one trained without; the run resumes exactly."""
    fast = ["optim.ema_decay=0", "optim.lr_g=1e-3"]  # the EMA is the generator, which moves fast
    for name, weight in (("plain", 0), ("rewarded", 5)):
        settings = ["loop.steps=12", *fast, *reward_settings(tmp_path, weight)]
        assert train(dataset, tmp_path / name, evaluator_file, *settings) == 0
    assert len(records_of(tmp_path / "rewarded", "reward")) == 12 and not records_of(tmp_path / "plain", "reward")

    config = RewardConfig(
        weight=1, ranker=str(tmp_path / "ranker.safetensors"), counter=str(tmp_path / "counter.safetensors")
    )
    reward = RankerReward(config, list(LabelCodec.iclevr().names), torch.device("cpu"))
    labels = load_label_file(dataset / "test.json", LabelCodec.iclevr())
    scores = {}
    for name in ("plain", "rewarded"):
        images = load_gan(tmp_path / name, "latest").sample(labels, seed=0, candidates=1)
        with torch.no_grad():
            scores[name] = candidate_scores(read_images(reward.ranker, images, reward.counter), labels).mean().item()
    assert scores["rewarded"] > scores["plain"] + 0.5, scores

    split, keys = tmp_path / "split", ("d_loss", "g_loss", "reward")
    assert train(dataset, split, evaluator_file, "loop.steps=6", *fast, *reward_settings(tmp_path, 5)) == 0
    assert train(dataset, split, evaluator_file, "loop.steps=12", resume=True) == 0
    assert records_of(split, *keys) == records_of(tmp_path / "rewarded", *keys)


def test_hard_requests_come_back_in_proportion_to_their_loss():
    pool = HardRequests(size=4, classes=3)
    labels = torch.eye(3)[[0, 1, 2, 0]]
    pool.add(labels[:2], torch.tensor([0.0, 1.0]))
    assert not pool.ready(1)  # half full
    pool.add(labels[2:], torch.tensor([3.0, 0.0]))
    assert pool.ready(1) and not pool.ready(4)
    drawn = pool.draw(4000, torch.Generator().manual_seed(0))
    shares = torch.bincount(drawn, minlength=4) / len(drawn)
    assert torch.allclose(shares, torch.tensor([0.0, 0.25, 0.75, 0.0]), atol=0.03), shares
    pool.update(torch.tensor([2]), torch.tensor([0.0]))  # drawn again, it no longer fails
    pool.add(torch.eye(3)[[1]], torch.tensor([2.0]))  # the oldest request makes way
    assert torch.equal(pool.losses, torch.tensor([2.0, 1.0, 0.0, 0.0]))
    assert torch.equal(pool.labels[0], torch.eye(3)[1]) and int(pool.added) == 5


def test_a_reward_with_hard_and_look_alike_requests_redraws_them_and_resumes_exactly(
    dataset, evaluator_file, tmp_path, monkeypatch
):
    requests, redraw_hard = [], GANTask._redraw_hard

    def seen(task, labels):  # each generator batch's requests, as the hard ones are redrawn from them
        requests.append(labels)
        return redraw_hard(task, labels)

    monkeypatch.setattr(GANTask, "_redraw_hard", seen)
    hard = ["reward.hard_fraction=0.5", "reward.hard_pool=8", "reward.look_alike_fraction=0.25"]
    hard += reward_settings(tmp_path, 1)
    keys = ("d_loss", "g_loss", "reward")
    assert train(dataset, tmp_path / "whole", evaluator_file, "loop.steps=6", *hard) == 0
    assert train(dataset, tmp_path / "split", evaluator_file, "loop.steps=3", *hard) == 0
    assert train(dataset, tmp_path / "split", evaluator_file, "loop.steps=6", resume=True) == 0
    assert records_of(tmp_path / "split", *keys) == records_of(tmp_path / "whole", *keys)
    pool = load_file(latest_checkpoint(tmp_path / "whole") / "hard_requests.safetensors")
    assert int(pool["added"]) == 6 * 4 - 4 * 2  # 2 of each batch of 4 redrawn once the 8 places are full
    assert torch.equal(pool["labels"].sum(dim=1) > 0, torch.ones(8, dtype=torch.bool)) and (pool["losses"] > 0).all()
    # the last request of each batch of 4 is a training label set asking for two objects of one colour
    training = {tuple(row.tolist()) for row in load_dataset(dataset).labels}
    last = torch.stack([batch[-1] for batch in requests])
    assert share_a_first_word(last, load_dataset(dataset).codec.names).all()
    assert all(tuple(row.tolist()) in training for row in last)


def records(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def records_of(run, *keys):
    return [tuple(r[key] for key in keys) for r in records(run) if keys[0] in r]


@pytest.mark.parametrize(
    "setting, message",
    [
        (["reward.weight=1"], "reward.ranker: reward.weight > 0 needs an image ranker"),
        (["reward.weight=-1"], "reward.weight: a weight >= 0"),
        (["reward.counter=c.safetensors"], "reward.counter: the counter adds to an image ranker's score"),
        (["reward.look_alike_fraction=1"], "reward.look_alike_fraction: 1.0 is not in [0, 1)"),
        (
            ["reward.weight=1", "reward.ranker=SHIPPED"],
            "this is the shipped evaluator, which scores images and never ranks",
        ),
    ],
)
def test_a_reward_needs_a_ranker_of_condgens_own(dataset, evaluator_file, tmp_path, capsys, setting, message):
    with resources.as_file(resources.files("condgen.evaluate") / "weights" / SHIPPED_WEIGHTS) as shipped:
        setting = [value.replace("SHIPPED", str(shipped)) for value in setting]
        assert train(dataset, tmp_path / "run", evaluator_file, *setting) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and not (tmp_path / "run").exists()


def test_a_reward_names_the_files_it_reads_a_model_folders_own_included(dataset, evaluator_file, tmp_path):
    ranker, counter = tiny_ranker(tmp_path / "ranker.safetensors"), tiny_counter(tmp_path / "counter.safetensors")
    assert train(dataset, tmp_path / "run", evaluator_file, "loop.steps=1") == 0
    folder = tmp_path / "model"
    argv = ["export", "--run", str(tmp_path / "run"), "--out", str(folder), "--ranker", str(ranker)]
    assert main([*argv, "--ranker-counter", str(counter)]) == 0
    named = RewardConfig(weight=1, ranker=str(folder))
    named.name_files()
    assert (named.ranker, named.counter) == (str(folder / RANKER_FILE), str(folder / RANKER_COUNTER_FILE))
    named = RewardConfig(weight=1, ranker=str(folder), counter=str(counter))  # a counter named wins
    named.name_files()
    assert named.counter == str(counter)
    named = RewardConfig(weight=1, ranker="iclevr-ldm")  # a shipped model's name
    named.name_files()
    assert named.ranker == str(PRETRAINED / "iclevr-ldm" / RANKER_FILE)
