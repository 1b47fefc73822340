import json

import pytest
import torch
from safetensors.torch import load_file

import condgen
from condgen.cli import main
from condgen.diffusion.guidance import guided_eps_fn
from condgen.diffusion.process import Prediction
from condgen.diffusion.samplers import bound
from condgen.diffusion.sampling import SampleConfig, generate, jumping_network
from condgen.diffusion.trainer import DiffusionConfig
from condgen.diffusion.unet import UNet, UNetConfig
from condgen.errors import CondgenError
from condgen.fewstep.jumps import END, grid_steps, jump, landing_gain, landing_x0, velocity
from condgen.fewstep.trainer import load_few_step
from condgen.latent.ldm import load_ldm

TINY_UNET = ["model.channels=16", "model.channel_mults=[1,2]", "model.attention_resolutions=[8]", "model.heads=2"]
TINY_FEW_STEP = ["optim.batch_size=4", "jumps.grid=4", "sample.steps=2", "loop.log_every=1", "device=cpu"]


def records(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def train(kind, data, run, evaluator, *overrides, **options):
    argv = ["train", kind, "--data", str(data), "--out", str(run), "--evaluator", str(evaluator)]
    for option, value in options.items():
        argv += [f"--{option}"] if value is True else [f"--{option}", str(value)]
    return main(argv + list(overrides))


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, synth_template):
    """A tiny vae and a tiny ldm on it (T = 20), trained once for the module's tests, and a random evaluator."""
    from tests.conftest import train_tiny_runs

    root = tmp_path_factory.mktemp("fewstep")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CONDGEN_CACHE_DIR", str(root / "cache"))
        scorer = train_tiny_runs(root, synth_template, {"vae": ["model.channels=8", "model.channel_mults=[1,2,2]"]})
        ldm = [*TINY_UNET, "diffusion.num_steps=20", "sample.steps=4", "loop.steps=40", "optim.lr=2e-3"]
        assert (
            train("ldm", synth_template, root / "ldm", scorer, *ldm, "optim.batch_size=4", autoencoder=root / "vae")
            == 0
        )
    return root


def test_one_jump_lands_where_its_landing_x0_says():
    diffusion = DiffusionConfig(num_steps=50, prediction=Prediction.V).build()
    torch.manual_seed(0)
    x, x0 = torch.randn(4, 4, 8, 8), torch.randn(4, 4, 8, 8)
    t, t_next = torch.tensor([49, 30, 12, 3]), torch.tensor([30, 12, END, END])
    landing = jump(diffusion, x, t, t_next, x0, clip_x0=None)
    assert torch.allclose(landing_x0(diffusion, x, t, t_next, landing), x0, atol=1e-4)
    assert torch.equal(landing[2:], x0[2:])  # a jump to END lands on its x_0
    # the landing moves by the gain times a change of x_0
    moved = jump(diffusion, x, t, t_next, x0 + 0.5, clip_x0=None)
    assert torch.allclose(moved - landing, 0.5 * landing_gain(diffusion, t, t_next, x).expand_as(x), atol=1e-5)
    # v is what a v-predicting network outputs for that x_0
    assert torch.allclose(diffusion.predict_x0(x, t, velocity(diffusion, x, t, x0)), x0, atol=1e-4)


def test_grids_of_n_and_2n_jumps_nest():
    for jumps in (1, 2, 4, 16):
        coarse, fine = grid_steps(1000, jumps), grid_steps(1000, 2 * jumps)
        assert fine[::2] == coarse and coarse[0] == 999 and coarse[-1] == END


def test_a_new_interval_embedding_leaves_the_network_as_it_was():
    torch.manual_seed(0)
    config = UNetConfig(image_size=16, in_channels=4, channels=16, channel_mults=(1, 2), heads=2)
    plain = UNet(config).eval()
    for p in plain.parameters():  # the head starts at zero: give every weight a value
        torch.nn.init.normal_(p, std=0.1)
    student = UNet(UNetConfig(**{**vars(config), "interval_embedding": True})).eval()
    missing = student.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert missing and all(key.startswith("interval_mlp.") for key in missing)
    x, t, y = torch.randn(2, 4, 16, 16), torch.tensor([5, 900]), torch.eye(24)[:2]
    for interval in (torch.tensor([1, 1]), torch.tensor([250, 1000])):
        assert torch.allclose(student(x, t, y, interval=interval), plain(x, t, y), atol=1e-6)
    with pytest.raises(ValueError, match="interval"):
        student(x, t, y)


def test_a_few_step_model_is_told_each_jump_and_samples_with_ddim_alone():
    config = UNetConfig(image_size=16, in_channels=4, channels=16, channel_mults=(1, 2), heads=2)
    model = UNet(UNetConfig(**{**vars(config), "interval_embedding": True})).eval()
    network = jumping_network(model, SampleConfig(sampler="ddim", steps=4, guidance=1.0), 1000)
    assert network.lengths == {999: 250, 749: 250, 499: 250, 249: 250}
    assert jumping_network(UNet(config), SampleConfig(sampler="dpmpp"), 1000).__class__ is UNet
    diffusion = DiffusionConfig(prediction=Prediction.V).build()
    with pytest.raises(CondgenError, match="ddim"):
        generate(model, diffusion, torch.eye(24)[:1], SampleConfig(sampler="dpmpp", steps=4))


def test_a_distilled_student_learns_its_teachers_jumps_on_the_teachers_own_paths(teacher, synth_template, tmp_path):
    """The finest jumps learn the teacher's guided x_0: along the teacher's own DDIM path (4 jumps, guidance 3), the
    student's x_0 is closer to the teacher's after 150 steps than after one, by a quarter summed over the jumps and at
    the first jump, from pure noise, where it starts furthest (a tiny student: it approaches the teacher, it does not
    reach it in seconds)."""
    loaded = load_ldm(teacher / "ldm")
    labels = torch.eye(24)[[0, 5, 9, 20]] + torch.eye(24)[[1, 12, 13, 3]]
    clip = loaded.config.sample.clip_x0
    grid = grid_steps(loaded.diffusion.num_steps, 4)
    guided = guided_eps_fn(loaded.model, loaded.diffusion, labels, 3.0)

    @torch.no_grad()
    def errors(run):
        student = load_few_step(run, "latest")
        x, found = torch.randn(4, 4, 16, 16, generator=torch.Generator().manual_seed(0)), []
        for start, end in zip(grid, grid[1:]):
            t, t_next = torch.full((4,), start), torch.full((4,), end)
            taught = bound(loaded.diffusion.predict_x0(x, t, guided(x, t)), clip)
            own = bound(student.diffusion.predict_x0(x, t, student.model(x, t, labels, interval=t - t_next)), clip)
            found.append(((own - taught).square().mean() / taught.square().mean()).sqrt().item())
            x = jump(loaded.diffusion, x, t, t_next, taught, None)
        return found

    settings = [*TINY_FEW_STEP, "jumps.bootstrap_fraction=0", "jumps.guidance_min_t=0", "optim.lr=2e-3"]
    settings += ["optim.warmup_steps=10", "optim.ema_decay=0.9"]
    scorer = teacher / "evaluator.safetensors"
    for name, steps in (("early", 1), ("late", 150)):
        run = tmp_path / name
        assert (
            train("distill", synth_template, run, scorer, *settings, f"loop.steps={steps}", teacher=teacher / "ldm")
            == 0
        )
    early, late = errors(tmp_path / "early"), errors(tmp_path / "late")
    assert sum(late) < 0.75 * sum(early) and late[0] < early[0], (early, late)


def test_distill_resumes_exactly_and_reaches_every_surface(teacher, synth_template, tmp_path, capsys):
    scorer, run = teacher / "evaluator.safetensors", tmp_path / "distill"
    settings = [*TINY_FEW_STEP, "jumps.bootstrap_fraction=0.5", "loop.checkpoint_every=2"]
    assert (
        train("distill", synth_template, tmp_path / "whole", scorer, *settings, "loop.steps=4", teacher=teacher / "ldm")
        == 0
    )
    assert train("distill", synth_template, run, scorer, *settings, "loop.steps=2", teacher=teacher / "ldm") == 0
    assert (
        train("distill", synth_template, run, scorer, *settings, "loop.steps=4", resume=True, teacher=teacher / "ldm")
        == 2
    )
    assert "--teacher: a resumed run keeps" in capsys.readouterr().err
    assert train("distill", synth_template, run, scorer, *settings, "loop.steps=4", resume=True) == 0
    losses = [[r["loss"] for r in records(tmp_path / name) if "loss" in r] for name in ("distill", "whole")]
    assert losses[0] == losses[1] and all(r.get("bootstrap", 0) >= 0 for r in records(run))
    a = load_file(run / "checkpoints" / "step-0000004" / "ema.safetensors")
    b = load_file(tmp_path / "whole" / "checkpoints" / "step-0000004" / "ema.safetensors")
    assert all(torch.equal(a[key], b[key]) for key in a)

    out = tmp_path / "samples"
    argv = [
        "sample",
        "--run",
        str(run),
        "--objects",
        "red sphere, cyan cube",
        "--out",
        str(out),
        "--evaluator",
        str(scorer),
    ]
    assert main(argv + ["--steps", "1"]) == 0 and (out / "0.png").exists()
    assert main(["denoise", "--run", str(run), "--objects", "red sphere", "--out", str(tmp_path / "d.png")]) == 0
    assert main(argv[:-4] + ["--out", str(tmp_path / "s2"), "--sampler", "dpmpp"]) == 2
    assert "a few-step model samples with ddim" in capsys.readouterr().err
    folder = tmp_path / "exported"
    assert main(["export", "--run", str(run), "--out", str(folder)]) == 0
    assert (folder / "autoencoder").is_dir()
    pipeline = condgen.load(folder)
    one, four = pipeline.generate(["red sphere"], seed=1, steps=1), pipeline.generate(["red sphere"], seed=1, steps=4)
    assert one.shape == four.shape == (1, 3, 64, 64) and not torch.equal(one, four)


def test_distill_takes_an_ldm_teacher_alone(teacher, synth_template, tmp_path, capsys):
    scorer = teacher / "evaluator.safetensors"
    assert train("distill", synth_template, tmp_path / "a", scorer, *TINY_FEW_STEP, "loop.steps=1") == 2
    assert "--teacher: required" in capsys.readouterr().err
    assert train("distill", synth_template, tmp_path / "b", scorer, *TINY_FEW_STEP, teacher=teacher / "vae") == 2
    assert "distill learns from an ldm" in capsys.readouterr().err
    assert train("distill", synth_template, tmp_path / "c", scorer, "jumps.grid=3", teacher=teacher / "ldm") == 2
    assert "jumps.grid: a power of two" in capsys.readouterr().err
    whole = [*TINY_FEW_STEP, "jumps.grid=16", "sample.steps=16", "loop.steps=1"]  # 16 jumps of the teacher's T = 20
    assert train("distill", synth_template, tmp_path / "e", scorer, *whole, teacher=teacher / "ldm") == 0
    reward = ["jumps.reward_weight=0.1", "loop.steps=1"]
    assert (
        train("distill", synth_template, tmp_path / "d", scorer, *TINY_FEW_STEP, *reward, teacher=teacher / "ldm") == 2
    )
    assert "jumps.reward_weight: needs a teacher model folder with an image ranker" in capsys.readouterr().err


def test_a_shortcut_model_learns_a_tiny_set_from_scratch_and_resumes_exactly(teacher, synth_template, tmp_path):
    scorer, autoencoder = teacher / "evaluator.safetensors", teacher / "vae"
    settings = [*TINY_UNET, *TINY_FEW_STEP, "diffusion.num_steps=20", "optim.lr=2e-3", "loop.checkpoint_every=3"]
    assert (
        train(
            "shortcut", synth_template, tmp_path / "long", scorer, *settings, "loop.steps=200", autoencoder=autoencoder
        )
        == 0
    )
    losses = [r["base"] for r in records(tmp_path / "long") if "base" in r]
    first, last = sum(losses[:40]) / 40, sum(losses[-40:]) / 40
    assert last < 0.8 * first, (first, last)
    run = tmp_path / "split"
    assert (
        train(
            "shortcut", synth_template, tmp_path / "whole", scorer, *settings, "loop.steps=6", autoencoder=autoencoder
        )
        == 0
    )
    assert train("shortcut", synth_template, run, scorer, *settings, "loop.steps=3", autoencoder=autoencoder) == 0
    assert train("shortcut", synth_template, run, scorer, *settings, "loop.steps=6", resume=True) == 0
    losses = [[r["loss"] for r in records(tmp_path / name) if "loss" in r] for name in ("split", "whole")]
    assert losses[0] == losses[1]


def test_a_reward_from_the_teachers_own_ranker_and_counter_trains_the_student(teacher, synth_template, tmp_path):
    """With jumps.reward_weight, samples of reward_jumps jumps are read by the teacher folder's image ranker: the
    reward is logged and moves the weights the student would otherwise reach."""
    scorer, folder = teacher / "evaluator.safetensors", tmp_path / "teacher"
    tiny = ["optim.epochs=0", "loop.steps=2", "optim.batch_size=4", "device=cpu"]
    assert main(["train", "evaluator", "--data", str(synth_template), "--out", str(tmp_path / "ranker"), *tiny]) == 0
    assert (
        main(["export", "--run", str(teacher / "ldm"), "--out", str(folder), "--ranker", str(tmp_path / "ranker")]) == 0
    )
    settings = [*TINY_FEW_STEP, "loop.steps=2", "jumps.reward_rows=2", "jumps.reward_jumps=2"]
    for name, weight in (("plain", 0.0), ("rewarded", 1.0)):
        run = tmp_path / name
        assert (
            train("distill", synth_template, run, scorer, *settings, f"jumps.reward_weight={weight}", teacher=folder)
            == 0
        )
    rewards = [r["reward"] for r in records(tmp_path / "rewarded") if "reward" in r]
    assert len(rewards) == 2 and all(r > 0 for r in rewards)
    a, b = (
        load_file(tmp_path / name / "checkpoints" / "step-0000002" / "model.safetensors")
        for name in ("plain", "rewarded")
    )
    assert any(not torch.equal(a[key], b[key]) for key in a)


def test_the_page_and_the_report_offer_a_few_step_model_ddim_alone_and_count_its_passes(
    teacher, synth_template, tmp_path
):
    from condgen.report.measure import Model
    from condgen.serve.models import ServedModel
    from condgen.serve.requests import Limits, parse_request

    run = tmp_path / "distill"
    settings = [*TINY_FEW_STEP, "loop.steps=1"]
    assert (
        train("distill", synth_template, run, teacher / "evaluator.safetensors", *settings, teacher=teacher / "ldm")
        == 0
    )
    pipeline = condgen.load(run)
    served, limits = ServedModel("student", pipeline), Limits()
    assert served.describe()["samplers"] == ["ddim"] and served.describe()["steps"] == 2
    served.check(parse_request({"objects": ["red sphere"], "steps": 1}, limits), limits)
    with pytest.raises(CondgenError, match="student: sample.sampler .* a few-step model samples with ddim"):
        served.check(parse_request({"objects": ["red sphere"], "sampler": "dpmpp"}, limits), limits)
    measured = Model("student", run, pipeline)
    assert measured.samplers(["ddpm", "ddim", "dpmpp"]) == ["ddim"]
    assert measured.network_evaluations("ddim") == 2 and measured.network_evaluations("ddim", steps=1) == 1
    # best of 3 adds a ranking pass per candidate: 3 x 2 jumps + 3
    assert measured.network_evaluations("ddim", candidates=3) == 9
