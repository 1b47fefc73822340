import json

import pytest
import torch
from PIL import Image

from condgen.cli import build_parser, main
from condgen.data.labels import LabelCodec
from condgen.diffusion.classifier import ClassifierRunConfig, noise_levels
from condgen.diffusion.guidance import classifier_gradient, guided_eps_fn
from condgen.diffusion.process import GaussianDiffusion
from condgen.diffusion.samplers import SAMPLERS, Spacing, sample_ddim, timesteps
from condgen.diffusion.sampling import network_evaluations
from condgen.diffusion.schedules import cosine_alpha_bar_betas, linear_betas
from condgen.diffusion.trainer import SampleConfig, generate
from condgen.diffusion.unet import UNet, UNetConfig
from condgen.errors import CondgenError
from condgen.nn.ranking import set_log_likelihood

TINY = UNetConfig(channels=16, channel_mults=(1, 2), attention_resolutions=(16,), heads=2)
TINY_OVERRIDES = [
    "model.channels=16",
    "model.channel_mults=[1,2]",
    "model.attention_resolutions=[16]",
    "model.heads=2",
    "diffusion.num_steps=20",
    "optim.batch_size=4",
    "sample.steps=3",
    "loop.log_every=1",
]


def randomise(model: torch.nn.Module) -> torch.nn.Module:
    """Zero-initialised output layers make a fresh UNet output 0; perturb them so outputs depend on inputs."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.05)
    return model.eval()


@pytest.mark.parametrize("patch_size", [1, 2])
@pytest.mark.parametrize("cross_attention", [False, True])
def test_unet_shapes_and_conditioning(patch_size, cross_attention):
    config = UNetConfig(**{**TINY.__dict__, "patch_size": patch_size, "cross_attention": cross_attention})
    model = randomise(UNet(config))
    x, t = torch.randn(2, 3, 64, 64), torch.tensor([3, 900])
    labels = LabelCodec.iclevr().encode_many([["red sphere"], ["red sphere", "cyan cube", "cyan cylinder"]])
    with torch.no_grad():
        out = model(x, t, labels)
        other = model(x, t, labels.flip(0))
        none = model(x, t, torch.zeros_like(labels))
    assert out.shape == x.shape
    assert not torch.allclose(out, other) and not torch.allclose(out, none)


def test_x0_and_eps_predictions_invert_the_forward_process():
    for prediction in ["epsilon", "v"]:
        diffusion = GaussianDiffusion(cosine_alpha_bar_betas(100), prediction)
        x0 = torch.rand(3, 3, 4, 4, dtype=torch.float64) * 2 - 1  # float64: the algebra, not rounding, is tested
        noise, t = torch.randn(3, 3, 4, 4, dtype=torch.float64), torch.tensor([0, 50, 99])
        xt = diffusion.q_sample(x0, t, noise)
        target = diffusion.training_target(x0, noise, t)  # what a perfect network outputs
        assert torch.allclose(diffusion.predict_x0(xt, t, target), x0, atol=1e-9)
        assert torch.allclose(diffusion.predict_eps(xt, t, target), noise, atol=1e-9)


def test_posterior_mean_is_the_textbook_formula():
    diffusion = GaussianDiffusion(linear_betas(10, 0.01, 0.2))
    x0, xt, t = torch.randn(1, 1, 2, 2), torch.randn(1, 1, 2, 2), torch.tensor([4])
    a, ab, ab_prev, b = diffusion.alphas[4], diffusion.alpha_bar[4], diffusion.alpha_bar[3], diffusion.betas[4]
    expected = (ab_prev.sqrt() * b / (1 - ab)) * x0 + (a.sqrt() * (1 - ab_prev) / (1 - ab)) * xt
    mean, variance = diffusion.q_posterior(x0, xt, t)
    assert torch.allclose(mean, expected.float(), atol=1e-6)
    assert variance.item() == pytest.approx(b.item())


@pytest.mark.parametrize("spacing", list(Spacing))
@pytest.mark.parametrize("steps", [1, 7, 50, 100, 1000])
def test_timestep_spacings_are_distinct_decreasing_and_in_range(spacing, steps):
    ts = timesteps(1000, steps, spacing)
    assert len(ts) == steps and ts == sorted(set(ts), reverse=True) and ts[-1] >= 0 and ts[0] <= 999
    if spacing in ("trailing", "quadratic"):
        assert ts[0] == 999  # starts from pure noise


def test_quadratic_spacing_follows_the_parabola_and_is_denser_near_the_end():
    ts = timesteps(1000, 20, "quadratic")
    assert ts[::-1] == [round(999 * (j / 20) ** 2) for j in range(1, 21)]  # no collisions at 20 steps
    gaps = [a - b for a, b in zip(ts, ts[1:])]
    assert gaps == sorted(gaps, reverse=True)


@pytest.mark.parametrize("spacing", list(Spacing))
def test_the_command_line_offers_every_spacing(spacing):
    argv = ["sample", "--run", "run", "--objects", "red cube", "--out", "out", "--spacing", spacing.value]
    assert build_parser().parse_args(argv).spacing == spacing.value


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_sampler_reports_every_step_and_is_reproducible(name):
    diffusion = GaussianDiffusion(cosine_alpha_bar_betas(30))
    seen = []

    def run():
        kwargs = {} if name == "ddpm" else {"steps": 6}
        return SAMPLERS[name](
            lambda x, t: 0.1 * x,
            diffusion,
            torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(0)),
            generator=torch.Generator().manual_seed(1),
            callback=seen.append,
            **kwargs,
        )

    first = run()
    assert len(seen) == (30 if name == "ddpm" else 6)
    assert {"i", "t", "x", "x0"} <= set(seen[0]) and torch.equal(seen[-1]["x"], first)
    assert torch.equal(run(), first)


def test_classifier_free_guidance_combines_conditional_and_unconditional():
    diffusion = GaussianDiffusion(cosine_alpha_bar_betas(10))
    model = lambda x, t, y: x * 0 + y.sum(dim=1)[:, None, None, None]  # noqa: E731 - eps = number of objects
    labels = torch.tensor([[1.0, 1.0, 0.0]])
    x, t = torch.randn(1, 3, 2, 2), torch.tensor([5])
    for scale, expected in [(1.0, 2.0), (0.0, 0.0), (3.0, 6.0)]:
        assert torch.allclose(guided_eps_fn(model, diffusion, labels, scale)(x, t), torch.full_like(x, expected))


def test_guidance_acts_only_from_guidance_min_t_and_saves_the_unconditional_pass_below_it():
    diffusion = GaussianDiffusion(cosine_alpha_bar_betas(10))
    batch_sizes = []

    def model(x, t, y):
        batch_sizes.append(len(x))
        return x * 0 + y.sum(dim=1)[:, None, None, None]  # eps = number of objects

    labels = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    eps_fn = guided_eps_fn(model, diffusion, labels, 3.0, guidance_min_t=4)
    x = torch.randn(2, 3, 2, 2)
    assert torch.equal(eps_fn(x, torch.tensor([4, 4]))[:, 0, 0, 0], torch.tensor([6.0, 3.0]))  # guided
    assert torch.equal(eps_fn(x, torch.tensor([3, 3]))[:, 0, 0, 0], torch.tensor([2.0, 1.0]))  # conditional only
    assert batch_sizes == [4, 2]
    assert torch.equal(eps_fn(x, torch.tensor([9, 0]))[:, 0, 0, 0], torch.tensor([6.0, 1.0]))  # per sample

    def classifier(x, t, y):
        return x.flatten(1)[:, :3]

    plain = guided_eps_fn(model, diffusion, labels, 1.0)
    with_classifier = guided_eps_fn(model, diffusion, labels, 1.0, classifier, 2.0, guidance_min_t=4)
    t = torch.tensor([5, 3])
    moved = (with_classifier(x, t) - plain(x, t)).flatten(1).abs().sum(dim=1)
    assert moved[0] > 0 and moved[1] == 0  # classifier guidance obeys the same bound


def test_classifier_gradient_sums_log_sigmoid_of_requested_and_absent_labels():
    weights = torch.randn(3, 12)  # a linear classifier on flattened 3x2x2 images

    def classifier(x, t, y):
        return x.flatten(1) @ weights.T

    x, labels = torch.randn(2, 3, 2, 2), torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    t = torch.tensor([1, 1])
    probability = torch.sigmoid(x.flatten(1) @ weights.T)
    # d/dx log sigmoid(w_i . x) = (1 - sigmoid(w_i . x)) w_i, summed over the requested i;
    # d/dx log(1 - sigmoid(w_j . x)) = -sigmoid(w_j . x) w_j, summed over the others j
    towards = ((1 - probability) * labels) @ weights
    away = (-probability * (1 - labels)) @ weights
    assert torch.allclose(classifier_gradient(classifier, x, t, labels).flatten(1), towards, atol=1e-6)
    both = classifier_gradient(classifier, x, t, labels, scale=2.0, absent_scale=0.5).flatten(1)
    assert torch.allclose(both, 2.0 * towards + 0.5 * away, atol=1e-6)
    assert torch.allclose(classifier_gradient(classifier, x, t, labels, 0.0, 1.0).flatten(1), away, atol=1e-6)


def test_classifier_noise_levels_are_uniform_at_power_1_and_favour_low_noise_above():
    uniform = noise_levels(20000, 1000, 1.0, torch.Generator().manual_seed(0))
    assert torch.equal(uniform, torch.randint(0, 1000, (20000,), generator=torch.Generator().manual_seed(0)))
    low = noise_levels(20000, 1000, 2.0, torch.Generator().manual_seed(0))
    assert low.min() >= 0 and low.max() <= 999 and low.dtype == torch.long
    assert (low < 250).float().mean().item() == pytest.approx(0.5, abs=0.02)  # P(u^2 < 1/4) = 1/2
    with pytest.raises(CondgenError, match="t_power"):
        ClassifierRunConfig(t_power=0)


def test_best_of_k_keeps_the_sample_the_classifier_ranks_first_and_k_1_is_plain_sampling():
    torch.manual_seed(0)
    config = UNetConfig(channels=8, channel_mults=(1,), attention_resolutions=(), image_size=8, num_labels=6)
    model, diffusion = randomise(UNet(config)).eval(), GaussianDiffusion(cosine_alpha_bar_betas(10))
    weights = torch.randn(6, 3 * 8 * 8)

    def classifier(x, t, y):  # a fixed linear ranker of the final sample
        return x.flatten(1) @ weights.T

    labels = torch.eye(6)[:4]
    sample = SampleConfig(sampler="ddim", steps=3, eta=1.0, guidance=2.0, seed=5)
    plain = generate(model, diffusion, labels, sample, batch_size=12)
    assert torch.equal(generate(model, diffusion, labels, sample, batch_size=12, classifier=classifier), plain)
    repeated = labels.repeat_interleave(3, dim=0)
    every = generate(model, diffusion, repeated, sample, batch_size=12)  # the same 12 noise draws as K = 3 makes
    best = set_log_likelihood(classifier(every, None, None), repeated).view(4, 3).argmax(dim=1)
    ranked = generate(model, diffusion, labels, sample.changed(candidates=3), batch_size=12, classifier=classifier)
    assert torch.equal(ranked, every.view(4, 3, *every.shape[1:])[torch.arange(4), best])
    assert len(set(best.tolist())) > 1  # not always the first candidate
    with pytest.raises(CondgenError, match="needs --ranker RUN or --classifier RUN"):
        generate(model, diffusion, labels, sample.changed(candidates=3))
    with pytest.raises(CondgenError, match="sample.candidates"):
        sample.changed(candidates=0).check(10)
    assert network_evaluations(sample.changed(candidates=3), 10) == 3 * network_evaluations(sample, 10)


def test_ddim_with_eta_one_is_stochastic_and_eta_zero_is_not():
    diffusion = GaussianDiffusion(cosine_alpha_bar_betas(50))
    x = torch.randn(1, 3, 4, 4)
    eps = lambda x, t: 0.1 * x  # noqa: E731
    a = sample_ddim(eps, diffusion, x, steps=10, eta=0.0, generator=torch.Generator().manual_seed(0))
    b = sample_ddim(eps, diffusion, x, steps=10, eta=0.0, generator=torch.Generator().manual_seed(1))
    c = sample_ddim(eps, diffusion, x, steps=10, eta=1.0, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.allclose(a, c)


class ConstantDataModel(torch.nn.Module):
    """An exact denoiser of data that is ``value`` everywhere: eps = (x_t - sqrt(a) value) / sqrt(1 - a)."""

    def __init__(self, diffusion: GaussianDiffusion, value: float):
        super().__init__()
        self.config = UNetConfig(image_size=4, in_channels=2, channel_mults=(1,), patch_size=1)
        self.alpha_bar = diffusion.alpha_bar.float()
        self.value = torch.nn.Parameter(torch.tensor(value))

    def forward(self, x, t, labels):
        a = self.alpha_bar[t][:, None, None, None]
        return (x - a.sqrt() * self.value) / (1 - a).sqrt()


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_clip_x0_bounds_every_sampler(sampler):
    diffusion = GaussianDiffusion(cosine_alpha_bar_betas(20))
    model, labels = ConstantDataModel(diffusion, 3.0), torch.zeros(2, 24)
    for clip, expected in [(1.0, 1.0), (2.0, 2.0), (0.0, 3.0)]:
        sample = SampleConfig(sampler=sampler, steps=5, guidance=1.0, clip_x0=clip)
        assert torch.allclose(generate(model, diffusion, labels, sample), torch.full((2, 2, 4, 4), expected), atol=1e-3)


def train(dataset, run, evaluator_file, *overrides, resume=False):
    argv = ["train", "ddpm", "--data", str(dataset), "--out", str(run), "--evaluator", str(evaluator_file)]
    return main(argv + (["--resume"] if resume else []) + TINY_OVERRIDES + list(overrides))


def losses(run):
    return [r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


def test_resume_continues_exactly(dataset, evaluator_file, tmp_path):
    assert train(dataset, tmp_path / "straight", evaluator_file, "loop.steps=6") == 0
    assert train(dataset, tmp_path / "split", evaluator_file, "loop.steps=3") == 0
    assert train(dataset, tmp_path / "split", evaluator_file, "loop.steps=6", resume=True) == 0
    assert losses(tmp_path / "split") == losses(tmp_path / "straight")
    from safetensors.torch import load_file

    for name in ["model", "ema", "optimizer"]:
        a = load_file(tmp_path / "straight" / "checkpoints" / "step-0000006" / f"{name}.safetensors")
        b = load_file(tmp_path / "split" / "checkpoints" / "step-0000006" / f"{name}.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


def test_training_writes_a_complete_run_and_sampling_works(dataset, evaluator_file, tmp_path, capsys):
    run = tmp_path / "run"
    assert train(dataset, run, evaluator_file, "loop.steps=2") == 0
    for path in [
        "config.yaml",
        "run.json",
        "metrics.jsonl",
        "checkpoints/latest",
        "best/ema.safetensors",
        "samples/step-0000002-test.png",
    ]:
        assert (run / path).exists(), path
    assert train(dataset, run, evaluator_file, "loop.steps=2") == 2  # no silent overwrite of a run
    capsys.readouterr()

    def sample(out, *options):
        argv = ["sample", "--run", str(run), "--labels", str(dataset / "test.json"), "--out", str(out)]
        return main([*argv, "--seed", "4", "--sampler", "ddim", "--steps", "4", *options])

    out = tmp_path / "samples"
    assert sample(out) == 0
    assert {f"{i}.png" for i in range(32)} <= {p.name for p in out.iterdir()} and (out / "grid.png").exists()
    scores = json.loads((out / "scores.json").read_text())
    assert 0 <= scores["accuracy"] <= 1
    assert sample(tmp_path / "again") == 0
    assert (out / "5.png").read_bytes() == (tmp_path / "again" / "5.png").read_bytes()  # same seed, same image
    assert sample(out) == 2  # an existing folder of images is never overwritten
    assert json.loads((out / "scores.json").read_text())["sample"]["eta"] == 1.0  # ddim's preset: noise at every step
    assert sample(tmp_path / "ode", "--eta", "0") == 0  # deterministic steps: other images, same seed
    assert json.loads((tmp_path / "ode" / "scores.json").read_text())["sample"]["eta"] == 0.0
    assert (out / "5.png").read_bytes() != (tmp_path / "ode" / "5.png").read_bytes()
    assert sample(tmp_path / "quadratic", "--spacing", "quadratic") == 0
    assert json.loads((tmp_path / "quadratic" / "scores.json").read_text())["sample"]["spacing"] == "quadratic"
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:  # argparse's own usage error
        sample(tmp_path / "negative", "--eta", "-1")
    assert exit_info.value.code == 2 and "--eta: must be a number >= 0" in capsys.readouterr().err
    assert not (tmp_path / "negative").exists()
    too_many = ["sample", "--run", str(run), "--objects", "red cube", "--out", str(tmp_path / "x"), "--steps", "21"]
    assert main([*too_many, "--sampler", "ddim"]) == 2  # T is 20 in the tiny config
    assert sample(tmp_path / "interval", "--guidance-min-t", "10") == 0
    assert json.loads((tmp_path / "interval" / "scores.json").read_text())["sample"]["guidance_min_t"] == 10
    capsys.readouterr()
    assert sample(tmp_path / "beyond", "--guidance-min-t", "20") == 2
    assert "sample.guidance_min_t (--guidance-min-t): below 20" in capsys.readouterr().err
    assert not (tmp_path / "beyond").exists()
    assert train(dataset, tmp_path / "never", evaluator_file, "sample.guidance_min_t=20") == 2  # before training
    assert not (tmp_path / "never").exists()

    picture = tmp_path / "denoise.png"
    assert main(["denoise", "--run", str(run), "--out", str(picture), "--sampler", "ddpm"]) == 0
    width, height = Image.open(picture).size
    assert height == 64 + 4 and width == 10 * (64 + 2) + 2  # one row of 10 snapshots


@pytest.mark.parametrize(
    ("request_args", "message"),
    [
        (["--objects", "red sphre"], 'unknown object "red sphre" (did you mean "red sphere"?)'),
        (["--objects", " , "], "empty label list"),
        (["--objects", "red cube, blue cube, green cube, cyan cube"], "trained on at most 3"),
    ],
)
def test_sample_rejects_bad_requests(dataset, evaluator_file, tmp_path, capsys, request_args, message):
    run = tmp_path / "run"
    assert train(dataset, run, evaluator_file, "loop.steps=1") == 0
    capsys.readouterr()
    assert main(["sample", "--run", str(run), "--out", str(tmp_path / "o"), *request_args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_sample_rejects_foreign_and_truncated_checkpoints(dataset, evaluator_file, tmp_path, capsys):
    run = tmp_path / "run"
    assert train(dataset, run, evaluator_file, "loop.steps=1") == 0
    argv = ["sample", "--run", str(run), "--objects", "red cube", "--out", str(tmp_path / "o")]
    ema = run / "best" / "ema.safetensors"
    ema.write_bytes(ema.read_bytes()[:500])
    capsys.readouterr()
    assert main(argv) == 2 and "truncated or corrupt" in capsys.readouterr().err
    meta = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**meta, "kind": "noisy_classifier"}))
    assert main(argv) == 2 and "a noisy_classifier run; this needs a ddpm run" in capsys.readouterr().err
    (run / "run.json").write_text(json.dumps({**meta, "kind": "gan"}))  # a run folder whose checkpoint disagrees
    assert main(argv) == 2 and "a ddpm checkpoint, not gan" in capsys.readouterr().err


def test_config_errors_name_the_key(dataset, evaluator_file, tmp_path, capsys):
    assert train(dataset, tmp_path / "r", evaluator_file, "optim.lr=fast") == 2
    assert "override 'optim.lr=fast': expected float" in capsys.readouterr().err
    assert train(dataset, tmp_path / "r2", evaluator_file, "optim.learning_rate=1") == 2
    assert "unknown key 'learning_rate'" in capsys.readouterr().err
    assert train(dataset, tmp_path / "r3", evaluator_file, "sample.clip_x0=-1") == 2
    assert "sample.clip_x0: a bound >= 0" in capsys.readouterr().err and not (tmp_path / "r3").exists()
    assert train(dataset, tmp_path / "r5", evaluator_file, "sample.eta=-0.5") == 2
    assert "sample.eta: a noise amount >= 0" in capsys.readouterr().err and not (tmp_path / "r5").exists()
    assert train(dataset, tmp_path / "r4", evaluator_file, "model.patch_size=3") == 2  # 64 is no multiple of 3 * 2
    assert "model.patch_size: 64-pixel images do not fold" in capsys.readouterr().err and not (tmp_path / "r4").exists()


def test_classifier_guidance_end_to_end(dataset, evaluator_file, tmp_path, capsys):
    run, classifier = tmp_path / "run", tmp_path / "classifier"
    assert train(dataset, run, evaluator_file, "loop.steps=1") == 0
    model_and_schedule = TINY_OVERRIDES[:6]  # the classifier has no sample section
    argv = ["train", "classifier", "--data", str(dataset), "--out", str(classifier), *model_and_schedule]
    argv += ["loop.steps=2", "val_fraction=0.2"]
    assert main(argv) == 0
    metrics = [json.loads(line) for line in (classifier / "metrics.jsonl").read_text().splitlines()]
    assert {"accuracy_t0", "accuracy_t50", "accuracy"} <= set(metrics[-1])

    def sample(out, scale):
        return main(
            [
                "sample",
                "--run",
                str(run),
                "--objects",
                "red cube, blue sphere",
                "--out",
                str(out),
                "--classifier",
                str(classifier),
                "--classifier-scale",
                str(scale),
                "--sampler",
                "ddim",
                "--steps",
                "3",
            ]
        )

    assert sample(tmp_path / "a", 0.0) == 0 and sample(tmp_path / "b", 50.0) == 0
    assert (tmp_path / "a" / "0.png").read_bytes() != (tmp_path / "b" / "0.png").read_bytes()

    assert main(argv[:5] + [str(tmp_path / "other")] + argv[6:] + ["diffusion.num_steps=30"]) == 0
    capsys.readouterr()
    assert sample(tmp_path / "c", 1.0) == 0  # the matching classifier still works
    assert (
        main(
            [
                "sample",
                "--run",
                str(run),
                "--objects",
                "red cube",
                "--out",
                str(tmp_path / "d"),
                "--classifier",
                str(tmp_path / "other"),
            ]
        )
        == 2
    )
    assert "another noise schedule" in capsys.readouterr().err


def test_min_snr_weights():
    plain = GaussianDiffusion(cosine_alpha_bar_betas(100))
    assert torch.equal(plain.loss_weights(torch.tensor([0, 99])), torch.ones(2, dtype=torch.float64))
    weighted = GaussianDiffusion(cosine_alpha_bar_betas(100), "epsilon", min_snr_gamma=5.0)
    snr = weighted.alpha_bar / (1 - weighted.alpha_bar)
    low, high = int(torch.nonzero(snr > 5)[-1]), int(torch.nonzero(snr < 5)[0])
    w = weighted.loss_weights(torch.tensor([low, high]))
    assert w[0].item() == pytest.approx(5 / snr[low].item()) and w[1].item() == pytest.approx(1.0)
    v = GaussianDiffusion(cosine_alpha_bar_betas(100), "v", min_snr_gamma=5.0).loss_weights(torch.tensor([high]))
    assert v.item() == pytest.approx((snr[high] / (snr[high] + 1)).item())


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_a_run_asking_for_an_absent_gpu_is_refused_in_one_line(dataset, evaluator_file, tmp_path, capsys):
    assert train(dataset, tmp_path / "gpu", evaluator_file, "loop.steps=1", "device=cuda") == 2
    run = tmp_path / "run"
    assert train(dataset, run, evaluator_file, "loop.steps=1") == 0
    config = run / "config.yaml"
    config.write_text(config.read_text().replace("device: auto", "device: cuda"))  # as if trained on a GPU
    capsys.readouterr()
    assert main(["sample", "--run", str(run), "--objects", "red cube", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "device=cuda: this machine has no CUDA GPU" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_periodic_evaluation_reports_the_exact_set_rate_and_best_can_be_chosen_by_it(
    dataset, evaluator_file, tmp_path, capsys
):
    run = tmp_path / "run"
    assert train(dataset, run, evaluator_file, "loop.steps=4", "loop.eval_every=2", "loop.best_by=exact_set") == 0
    evaluations = [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "exact_set" in r]
    assert [r["step"] for r in evaluations] == [2, 4]
    for record in evaluations:
        assert 0 <= record["exact_set_test"] <= 1 and 0 <= record["recall_new_test"] <= 1
        assert record["exact_set"] == record["exact_set_train_lists"]  # chosen on train.json's labels alone
        assert (run / "samples" / f"step-{record['step']:07d}-train_lists.png").exists()
    chosen = max(evaluations, key=lambda r: r["exact_set"])  # the first of equals, as best/ keeps the first
    best = json.loads((run / "best" / "state.json").read_text())
    assert best["step"] == chosen["step"] and best["best_by"] == "exact_set"
    capsys.readouterr()
    assert train(dataset, tmp_path / "bad", evaluator_file, "loop.best_by=fid") == 2
    assert "loop.best_by: 'fid' is not one of accuracy, exact_set" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
