"""The shared training loop: stopping on its wall-clock budget leaves a complete log and a resumable checkpoint."""

import json
import time

import torch

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
