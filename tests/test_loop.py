"""The shared training loop: stopping on its wall-clock budget leaves a complete log and a resumable checkpoint."""

import json
import time

import pytest
import torch

import condgen.train.loop as loop_module
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
        self.generators = {"data": torch.Generator().manual_seed(0)}

    def train_step(self, step: int) -> dict[str, float]:
        time.sleep(self.seconds_per_step)
        x = torch.randn(8, 1, generator=self.generators["data"])
        loss = (self.model(x) - 3 * x).pow(2).mean()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.item()}

    def evaluate(self, step: int, run) -> dict[str, float]:
        return {"accuracy": -abs(self.model.weight.item() - 3)}


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
