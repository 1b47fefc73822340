"""The shared training loop: stopping on its wall-clock budget leaves a complete log and a resumable checkpoint, and
its progress shows on a terminal and, now and then, as a plain line anywhere else."""

import io
import json
import time

import pytest
import torch

import condgen.train.loop as loop_module
from condgen import progress
from condgen.cli import main
from condgen.device import resolve_device
from condgen.files import staged_folder
from condgen.train.checkpoint import latest_checkpoint
from condgen.train.loop import LoopConfig, fit


class SlowRegression:
    """A one-weight least-squares task whose steps take a known minimum time."""

    kind = "regression"

    def __init__(self, seconds_per_step: float):
        self.seconds_per_step = seconds_per_step
        self.model = torch.nn.Linear(1, 1)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1)
        self.modules = {"model": self.model}
        self.optimizers = {"optimizer": self.optimizer}
        self.random_streams = {"data": torch.Generator().manual_seed(0)}

    def train_step(self, step: int) -> dict[str, float]:
        time.sleep(self.seconds_per_step)
        x = torch.randn(8, 1, generator=self.random_streams["data"])
        loss = (self.model(x) - 3 * x).pow(2).mean()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.item()}

    def evaluate(self, step: int, run) -> dict[str, float]:
        return {"accuracy": -abs(self.model.weight.item() - 3)}


class ScriptedScores(SlowRegression):
    """The regression task whose evaluations give the scores listed, one dict per evaluation."""

    def __init__(self, scores: list[dict[str, float]]):
        super().__init__(seconds_per_step=0)
        self.scores = iter(scores)

    def evaluate(self, step: int, run) -> dict[str, float]:
        return next(self.scores)


def test_budget_stop_logs_evaluates_and_checkpoints_the_last_step(tmp_path):
    loop = LoopConfig(steps=10_000, max_minutes=0.2 / 60, log_every=1000, checkpoint_every=1000, eval_every=0)
    summary = fit(SlowRegression(seconds_per_step=0.02), loop, tmp_path, "{}", resume=False, progress=False)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in records if "loss" in r]
    assert summary["budget_hit"] and 5 <= summary["step"] < 1000
    assert logged[-1]["step"] == summary["step"]  # not only multiples of log_every
    assert logged[-1]["seconds"] >= 0.2
    assert [r["step"] for r in records if "accuracy" in r] == [summary["step"]]
    assert latest_checkpoint(tmp_path).name == f"step-{summary['step']:07d}"
    assert (tmp_path / "best").is_dir()


def test_a_step_that_is_both_a_new_best_and_a_checkpoint_step_is_saved_once(tmp_path, monkeypatch):
    saved = []
    real_save = loop_module.save_checkpoint
    monkeypatch.setattr(
        loop_module, "save_checkpoint", lambda run, step, *a: saved.append(step) or real_save(run, step, *a)
    )
    loop = LoopConfig(steps=4, log_every=1, checkpoint_every=2, eval_every=2)
    fit(SlowRegression(seconds_per_step=0), loop, tmp_path, "{}", resume=False, progress=False, note="device cpu")
    assert saved == [2, 4]  # each an evaluation and a checkpoint step
    assert json.loads((tmp_path / "best" / "state.json").read_text())["step"] in (2, 4)
    assert (tmp_path / "log.txt").read_text().strip().endswith("started at step 0; device cpu")


def test_a_failed_folder_write_leaves_the_previous_folder_whole(tmp_path):
    target = tmp_path / "best"
    with staged_folder(target) as staging:
        (staging / "weights").write_text("good")
    with pytest.raises(OSError), staged_folder(target) as staging:
        (staging / "weights").write_text("half")
        raise OSError("disk full")
    assert (target / "weights").read_text() == "good"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]  # no staging folder left behind


def test_looking_a_device_up_changes_no_global_setting():
    before = torch.backends.cuda.matmul.allow_tf32
    assert resolve_device("cpu") == torch.device("cpu")
    resolve_device("auto")
    assert torch.backends.cuda.matmul.allow_tf32 == before


@pytest.mark.parametrize(("best_by", "best_score", "best_step"), [("accuracy", 0.9, 2), ("exact_set", 0.4, 4)])
def test_the_best_score_is_of_the_kind_best_by_names(tmp_path, capsys, monkeypatch, best_by, best_score, best_step):
    task = ScriptedScores([{"accuracy": 0.9, "exact_set": 0.1}, {"accuracy": 0.5, "exact_set": 0.4}])
    loop = LoopConfig(steps=4, log_every=1, checkpoint_every=100, eval_every=2, best_by=best_by)
    summary = fit(task, loop, tmp_path / "run", "{}", resume=False, progress=False)
    assert (summary["best_score"], summary["best_by"]) == (best_score, best_by)
    assert "best_accuracy" not in summary
    best = json.loads((tmp_path / "run" / "best" / "state.json").read_text())
    assert (best["step"], best["best_score"], best["best_by"]) == (best_step, best_score, best_by)

    monkeypatch.setattr("condgen.launch.start_training", lambda *args: summary)
    assert main(["train", "gan", "--data", str(tmp_path), "--out", str(tmp_path / "run")]) == 0
    said = {"accuracy": "best accuracy 0.9;", "exact_set": "best exact-set rate 0.4;"}[best_by]
    assert said in capsys.readouterr().out


@pytest.mark.parametrize(("saved_by", "kept"), [(None, 0.5), ("accuracy", 0.5), ("exact_set", None)])
def test_a_checkpoint_that_names_its_best_score_best_accuracy_resumes_with_it(tmp_path, saved_by, kept):
    """Checkpoints store the best score as ``best_accuracy`` before ``best_score``, and without ``best_by`` before
    that; a best chosen by another score than the resumed run's ``loop.best_by`` is dropped."""
    loop = LoopConfig(steps=2, log_every=1, checkpoint_every=100, eval_every=2)
    fit(ScriptedScores([{"accuracy": 0.2, "exact_set": 0.0}]), loop, tmp_path, "{}", resume=False, progress=False)
    state_file = latest_checkpoint(tmp_path) / "state.json"
    state = json.loads(state_file.read_text())
    del state["best_score"], state["best_by"]
    state_file.write_text(json.dumps({**state, "best_accuracy": 0.5} | ({"best_by": saved_by} if saved_by else {})))

    loop.steps = 4
    task = ScriptedScores([{"accuracy": 0.3, "exact_set": 0.0}])  # below the saved 0.5: not a new best
    summary = fit(task, loop, tmp_path, "{}", resume=True, progress=False)
    assert summary["best_score"] == (0.3 if kept is None else kept)
    written = json.loads((latest_checkpoint(tmp_path) / "state.json").read_text())
    assert written["best_score"] == summary["best_score"] and "best_accuracy" not in written
    assert json.loads((tmp_path / "best" / "state.json").read_text())["step"] == (4 if kept is None else 2)


@pytest.mark.parametrize(
    ("setting", "message"),
    [("loop.steps=-1", "loop.steps: -1; a run takes at least 1 step"), ("loop.max_minutes=-2", "is negative")],
)
def test_a_loop_that_would_train_nothing_or_forever_is_refused_before_anything_is_written(
    dataset, tmp_path, capsys, setting, message
):
    argv = ["train", "gan", "--data", str(dataset), "--out", str(tmp_path / "run"), setting, "device=cpu"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and not (tmp_path / "run").exists()


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_off_a_terminal_is_a_plain_line_now_and_then_with_counts_and_time_left():
    clock, stream = FakeClock(), io.StringIO()
    with progress.PlainProgress(file=stream, total=1000, desc="encoding", unit="img", clock=clock) as bar:
        for _ in range(1000):
            clock.now += 1  # a 1000-second job: a line once 30 s have passed and a tenth more is done
            bar.update(1)
            bar.set_postfix({"loss": "0.1234"})
    lines = stream.getvalue().splitlines()
    assert 9 <= len(lines) <= 11, lines  # one a tenth, and the last
    assert lines[0] == "condgen: encoding: 100/1,000 img, 1:40 elapsed, about 15:00 left, loss=0.1234"
    assert lines[-1] == "condgen: encoding: 1,000/1,000 img, 16:40 elapsed, loss=0.1234; done"

    quick = io.StringIO()  # work of seconds says nothing
    for _ in progress.PlainProgress(range(50), file=quick, desc="decoding", clock=clock):
        clock.now += 0.1
    assert quick.getvalue() == ""


def test_progress_of_a_budgeted_training_counts_down_to_its_budget():
    clock, stream = FakeClock(), io.StringIO()
    bar = progress.PlainProgress(file=stream, total=1_000_000, desc="ldm", unit="step", seconds_limit=600, clock=clock)
    for _ in range(60):  # 60 steps of 1.5 s in a 10-minute budget: a line every tenth of the budget, 60 s
        clock.now += 1.5
        bar.update(1)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert lines[0] == "condgen: ldm: 40/1,000,000 step, 1:00 elapsed, about 9:00 left"  # not 17 days
    assert len(lines) == 2 and lines[-1].endswith("; stopped")


def test_progress_bar_draws_on_a_terminal_writes_lines_elsewhere_and_nothing_when_disabled():
    assert isinstance(progress.progress_bar(total=3, file=io.StringIO()), progress.PlainProgress)
    terminal = Terminal()
    with progress.progress_bar(total=3, file=terminal, desc="t") as bar:
        assert not isinstance(bar, progress.PlainProgress)
        bar.update(3)
    assert "3/3" in terminal.getvalue()
    silent = io.StringIO()
    with progress.progress_bar(total=3, file=silent, enabled=False) as bar:
        bar.update(3)
    assert silent.getvalue() == ""


def test_a_training_whose_stderr_is_no_terminal_says_how_far_it_is(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(progress, "LINE_EVERY_S", 0.05)
    loop = LoopConfig(steps=10_000, max_minutes=0.3 / 60, log_every=1, checkpoint_every=1000, eval_every=0)
    summary = fit(SlowRegression(seconds_per_step=0.01), loop, tmp_path, "{}", resume=False, progress=True)
    lines = capsys.readouterr().err.splitlines()
    assert summary["budget_hit"] and 2 <= len(lines) <= 12, lines  # a tenth of the budget each, and the last
    assert all(line.startswith("condgen: regression: ") and "/10,000 step" in line for line in lines)
    assert "left, loss=" in lines[0] and lines[-1].endswith("; stopped")
