"""Fault injection: whatever stops a training run (kill -9, Ctrl-C, a diverging loss, a damaged checkpoint, a full
disk), no good state is lost and a resumed run ends exactly where the uninterrupted one does."""

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import condgen.train.checkpoint as checkpoint_module
from condgen.cli import main

TINY = {
    "ddpm": [
        "model.channels=16",
        "model.channel_mults=[1,2]",
        "model.attention_resolutions=[16]",
        "model.heads=2",
        "diffusion.num_steps=20",
        "sample.steps=2",
    ],
    "gan": ["model.g_channels=8", "model.d_channels=8", "model.noise_dim=16", "model.label_dim=16", "optim.n_critic=2"],
    "vae": ["model.channels=8", "model.channel_mults=[1,2,2]"],
}
STEPS = 8
LOOP = ["optim.batch_size=4", "loop.log_every=1", "loop.checkpoint_every=2", "loop.eval_every=0", "device=cpu"]


def argv(kind, dataset, run, evaluator_file, *extra, resume=False):
    command = ["train", kind, "--data", str(dataset), "--out", str(run), "--evaluator", str(evaluator_file)]
    return command + (["--resume"] if resume else []) + TINY[kind] + LOOP + list(extra)


def weights(run: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the run's latest checkpoint (weights, EMA, optimiser state)."""
    folder = run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()
    return {f"{f.name}/{k}": v for f in sorted(folder.glob("*.safetensors")) for k, v in load_file(f).items()}


def assert_same_run(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa), [k for k in wa if not torch.equal(wa[k], wb[k])][:3]
    # the same records, step by step: none lost, none written twice by the steps replayed after a resume
    shape = [
        [(r["step"], sorted(r)) for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]
        for run in (a, b)
    ]
    assert shape[0] == shape[1]


@pytest.fixture
def reference(dataset, evaluator_file, tmp_path):
    """The uninterrupted run of each kind, trained on first use."""
    runs = {}

    def get(kind: str) -> Path:
        if kind not in runs:
            runs[kind] = tmp_path / f"reference-{kind}"
            assert main(argv(kind, dataset, runs[kind], evaluator_file, f"loop.steps={STEPS}")) == 0
        return runs[kind]

    return get


def start(kind, dataset, run, evaluator_file) -> subprocess.Popen:
    code = "import sys; from condgen.cli import main; sys.exit(main(sys.argv[1:]))"
    command = [sys.executable, "-c", code, *argv(kind, dataset, run, evaluator_file, "loop.steps=1000")]
    threads = str(torch.get_num_threads())  # as many as this process uses, so that both compute alike
    return subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": threads})


def wait_for_step(process: subprocess.Popen, run: Path, step: int) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        metrics = run / "metrics.jsonl"
        if metrics.exists() and any(json.loads(line)["step"] >= step for line in metrics.read_text().splitlines()):
            return
        assert process.poll() is None, process.stderr.read()
        time.sleep(0.05)
    raise AssertionError(f"step {step} not reached")


@pytest.mark.parametrize(("kind", "kill_after"), [("ddpm", 3), ("gan", 5), ("vae", 3)])
def test_kill_9_then_resume_equals_the_uninterrupted_run(
    kind, kill_after, dataset, evaluator_file, tmp_path, reference
):
    run = tmp_path / "killed"
    process = start(kind, dataset, run, evaluator_file)
    wait_for_step(process, run, kill_after)
    process.kill()
    process.wait()
    assert main(argv(kind, dataset, run, evaluator_file, f"loop.steps={STEPS}", resume=True)) == 0
    assert_same_run(reference(kind), run)


def test_sigint_saves_the_current_step_and_prints_the_exact_resume_command(
    dataset, evaluator_file, tmp_path, reference
):
    run = tmp_path / "interrupted"
    process = start("ddpm", dataset, run, evaluator_file)
    wait_for_step(process, run, 3)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    line = err.strip().splitlines()[-1]
    saved = int(line.split("interrupted after step ")[1].split(";")[0])
    assert saved >= 3 and (run / "checkpoints" / f"step-{saved:07d}").is_dir()  # the current step, not only step 2
    command = line.split("continue exactly with: condgen ")[1].split()
    assert command[:2] == ["train", "ddpm"] and "--resume" in command
    assert main([*command, f"loop.steps={STEPS}"]) == 0
    assert_same_run(reference("ddpm"), run)


@pytest.mark.parametrize("poison_after", [4, 5])  # a checkpoint step and the step after one
def test_a_non_finite_state_stops_training_and_saves_nothing_of_it(
    poison_after, dataset, evaluator_file, tmp_path, capsys, monkeypatch
):
    from condgen.diffusion.trainer import DiffusionTask

    original = DiffusionTask.train_step

    def poisoned(self, step):
        losses = original(self, step)
        if step + 1 == poison_after:
            with torch.no_grad():
                next(self.model.parameters()).fill_(float("nan"))  # as a non-finite gradient step would leave it
        return losses

    monkeypatch.setattr(DiffusionTask, "train_step", poisoned)
    run = tmp_path / "diverged"
    assert main(argv("ddpm", dataset, run, evaluator_file, f"loop.steps={STEPS}")) == 2
    err = capsys.readouterr().err.strip()
    caught_at, last_good = (4, 2) if poison_after == 4 else (6, 4)  # its weights check, or the next step's loss
    assert err.count("\n") == 0 and err.startswith(f"condgen: error: step {caught_at}: ")
    assert err.endswith(f"the last good checkpoint is {run / 'checkpoints' / f'step-{last_good:07d}'})")
    saved = sorted(p.name for p in (run / "checkpoints").glob("step-*"))
    assert saved == [f"step-{s:07d}" for s in range(2, poison_after, 2)][-2:]
    for folder in (run / "checkpoints").glob("step-*"):
        assert all(torch.isfinite(t).all() for f in folder.glob("*.safetensors") for t in load_file(f).values())
    best = run / "best"
    assert not best.exists() or all(torch.isfinite(t).all() for t in load_file(best / "ema.safetensors").values())


def test_a_diverging_learning_rate_is_caught_with_the_step_and_the_loss(dataset, evaluator_file, tmp_path, capsys):
    run = tmp_path / "lr"
    assert main(argv("gan", dataset, run, evaluator_file, "loop.steps=40", "optim.lr_g=1e30", "optim.lr_d=1e30")) == 2
    err = capsys.readouterr().err
    assert "step 1: d_loss = nan; training stopped and nothing was saved from this state" in err
    assert not (run / "checkpoints").exists()  # diverged before the first checkpoint: nothing to keep
    records = (run / "metrics.jsonl").read_text() if (run / "metrics.jsonl").exists() else ""
    assert "NaN" not in records and "Infinity" not in records


@pytest.mark.parametrize("cut", ["header", "middle", "last byte"])
def test_a_truncated_latest_checkpoint_resumes_from_the_previous_one(
    cut, dataset, evaluator_file, tmp_path, capsys, reference
):
    run = tmp_path / "truncated"
    assert main(argv("ddpm", dataset, run, evaluator_file, "loop.steps=6")) == 0
    damaged = run / "checkpoints" / "step-0000006" / "model.safetensors"
    data = damaged.read_bytes()
    damaged.write_bytes(data[: {"header": 4, "middle": len(data) // 2, "last byte": len(data) - 1}[cut]])
    capsys.readouterr()
    assert main(argv("ddpm", dataset, run, evaluator_file, f"loop.steps={STEPS}", resume=True)) == 0
    assert "resuming from step-0000004, the newest intact checkpoint" in capsys.readouterr().err
    assert_same_run(reference("ddpm"), run)


def test_a_full_disk_keeps_the_previous_checkpoint(dataset, evaluator_file, tmp_path, capsys, monkeypatch, reference):
    run = tmp_path / "full"
    real_save = checkpoint_module.save_file
    calls = {"n": 0}

    def failing_save(tensors, path):
        if "step-0000004" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        calls["n"] += 1
        real_save(tensors, path)

    monkeypatch.setattr(checkpoint_module, "save_file", failing_save)
    assert main(argv("ddpm", dataset, run, evaluator_file, f"loop.steps={STEPS}")) == 2
    err = capsys.readouterr().err
    assert "cannot write the checkpoint of step 4 (No space left on device)" in err and "step-0000002" in err
    assert (run / "checkpoints" / "latest").read_text().strip() == "step-0000002"
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]  # no half-written folder
    monkeypatch.setattr(checkpoint_module, "save_file", real_save)
    assert main(argv("ddpm", dataset, run, evaluator_file, f"loop.steps={STEPS}", resume=True)) == 0
    assert_same_run(reference("ddpm"), run)


def test_a_refused_command_changes_nothing_in_the_run_folder(dataset, evaluator_file, tmp_path, capsys):
    from condgen.launch import claimed

    run = tmp_path / "vae"
    assert main(argv("vae", dataset, run, evaluator_file, "loop.steps=2")) == 0
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    capsys.readouterr()
    wrong_kind = ["train", "vqvae", "--data", str(dataset), "--out", str(run), "--resume"]
    assert main(wrong_kind) == 2
    assert "a vae run; resume it with `condgen train vae --resume`" in capsys.readouterr().err
    with claimed(run):  # as if another training were writing to it right now
        assert main(argv("vae", dataset, run, evaluator_file, "loop.steps=4", resume=True)) == 2
        assert "another training is writing to this run right now" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    stranger = tmp_path / "notes"
    stranger.mkdir()
    (stranger / "todo.txt").write_text("mine")
    assert main(argv("vae", dataset, stranger, evaluator_file, "loop.steps=2")) == 2
    assert "exists and is not an empty folder or a run" in capsys.readouterr().err
    assert sorted(p.name for p in stranger.iterdir()) == ["todo.txt"]


def test_non_finite_inputs_are_refused(dataset, evaluator_file, tmp_path, capsys):
    from condgen.parser import build_parser

    for value in ("nan", "inf", "-1"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(
                ["sample", "--run", "r", "--objects", "red cube", "--out", "o", "--guidance", value]
            )
    (tmp_path / "labels.json").write_text(json.dumps([["red cube"]] * 2))
    torch.save(torch.full((2, 3, 64, 64), float("nan")), tmp_path / "nan.pt")
    capsys.readouterr()
    assert main(["evaluate", "--images", str(tmp_path / "nan.pt"), "--labels", str(tmp_path / "labels.json")]) == 2
    assert "holds non-finite values" in capsys.readouterr().err


def test_a_gan_run_refuses_the_diffusion_sampling_options(dataset, evaluator_file, tmp_path, capsys):
    run = tmp_path / "gan"
    assert main(argv("gan", dataset, run, evaluator_file, "loop.steps=1")) == 0
    capsys.readouterr()
    out = tmp_path / "o"
    request = ["sample", "--run", str(run), "--objects", "red cube", "--out", str(out)]
    assert main([*request, "--sampler", "ddim", "--guidance", "3"]) == 2
    assert "--sampler, --guidance: diffusion runs only" in capsys.readouterr().err and not out.exists()
    assert main([*request, "--seed", "3"]) == 0


@pytest.mark.parametrize(
    ("command", "out", "said"),
    [
        (["sample", "--model", "iclevr-gan", "--objects", "red cube"], "notes.txt/x", "notes.txt is a file, so"),
        (["data", "synth", "--n", "4"], "notes.txt", "notes.txt is a file, not a folder"),
        (["interpolate", "--model", "iclevr-gan", "--objects", "red cube"], "notes.txt/i.png", "notes.txt is a file"),
        (["interpolate", "--model", "iclevr-gan", "--objects", "red cube"], ".", "is a folder; name the file to write"),
    ],
)
def test_an_out_that_a_file_stands_in_the_way_of_is_refused_before_anything_is_made(
    command, out, said, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(SystemExit) as stop:
        main([*command, "--out", out])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and said in err and "Traceback" not in err
    assert (
        sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
        and (tmp_path / "notes.txt").read_text() == "keep me"
    )


def test_a_yaml_tag_in_an_override_is_a_one_line_error_and_never_runs(dataset, evaluator_file, tmp_path, capsys):
    marker = tmp_path / "ran"
    tagged = f'model.g_channels=!!python/object/apply:os.system ["touch {marker}"]'
    assert main(argv("gan", dataset, tmp_path / "run", evaluator_file, tagged)) == 2
    err = capsys.readouterr().err
    assert "override 'model.g_channels=!!python/object/apply:os.system" in err and "not a YAML value" in err
    assert err.count("\n") == 1 and not marker.exists() and not (tmp_path / "run").exists()
