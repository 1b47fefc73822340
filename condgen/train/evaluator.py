"""Training the ResNet18 evaluator in the shared loop (`condgen train evaluator`): so it runs under torchrun, with
bfloat16 autocast or torch.compile, and resumes exactly, like every generator. At the end the best weights become
RUN/evaluator.safetensors with its record RUN/evaluator.json (:func:`export_evaluator`)."""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from condgen.data.iclevr import LabeledImages
from condgen.data.imageio import to_signed
from condgen.data.jsonio import read_json, write_json
from condgen.data.labels import LabelCodec
from condgen.data.splits import split_by_scene
from condgen.device import resolve_device
from condgen.errors import CondgenError
from condgen.evaluate.evaluator import (
    RESNET18_WIDTH,
    Evaluator,
    build_resnet18_evaluator,
    evaluator_logits,
    save_evaluator,
)
from condgen.evaluate.training import augment, follow_one_cycle
from condgen.train import distributed
from condgen.train.acceleration import Bf16, autocast, compile_in_place
from condgen.train.config import load_config
from condgen.train.loop import LoopConfig, set_epochs
from condgen.train.runs import elapsed_by_step, read_metrics


def architecture(width: int) -> str:
    """The record's description of the network :func:`build_resnet18_evaluator` builds at ``width``."""
    if width == RESNET18_WIDTH:
        return "torchvision resnet18, fc = Sequential(Linear(512, C), Sigmoid())"
    return f"resnet18 at {width}-{8 * width} channels, fc = Sequential(Linear({8 * width}, C), Sigmoid())"


@dataclass
class EvaluatorOptimConfig:
    epochs: int = 15  # sets loop.steps, eval_every and checkpoint_every in epochs of the training split; 0 = keep them
    batch_size: int = 128  # per process
    lr: float = 2e-3  # peak of the one-cycle schedule, with AdamW
    weight_decay: float = 5e-4
    pct_start: float = 0.15  # share of the steps spent warming up to the peak
    max_shift: int = 4  # random translation in pixels; horizontal flips too (both keep the labels)
    seed: int = 0
    bf16: Bf16 = False  # bfloat16 autocast of the forward passes: true, false or auto (condgen.train.acceleration)
    compile: str = ""  # torch.compile backend for the trained ResNet (its logits): "" = none, inductor


@dataclass
class EvaluatorRunConfig:
    optim: EvaluatorOptimConfig = field(default_factory=EvaluatorOptimConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    val_fraction: float = 0.1  # of scenes, not of images: a scene's images all land on one side
    width: int = RESNET18_WIDTH  # first-stage channels: 64 = ResNet18 (the evaluator's); 32 = a quarter of it
    half: bool = False  # store RUN/evaluator.safetensors in float16
    device: str = "auto"

    def validate(self) -> None:
        if not 0 < self.val_fraction < 1:
            raise CondgenError(f"val_fraction: {self.val_fraction} is not between 0 and 1")
        if self.width < 1:
            raise CondgenError(f"width: {self.width} is not a positive number of channels")
        if self.optim.epochs < 0:
            raise CondgenError(f"optim.epochs: {self.optim.epochs} is negative (0 = train for loop.steps)")
        if not 0 < self.optim.pct_start < 1:
            raise CondgenError(f"optim.pct_start: {self.optim.pct_start} is not between 0 and 1")


class EvaluatorTask:
    """A :class:`condgen.train.loop.Task`: BCE with logits over the objects on augmented real images, AdamW under the
    one-cycle schedule; each evaluation scores the held-out scenes (top-k accuracy and the exact-set rate)."""

    kind = "evaluator"

    def __init__(self, config: EvaluatorRunConfig, data: LabeledImages, data_root: Path, evaluator: None = None):
        config.validate()
        self.config, self.data = config, data
        o = config.optim
        torch.manual_seed(o.seed)
        self.device = resolve_device(config.device)
        train_index, self.val_index = split_by_scene(data.files, config.val_fraction, o.seed)
        self.split = {"train_images": len(train_index), "val_images": len(self.val_index)}
        self.train_index = distributed.shard(train_index)  # this rank's training images
        if o.epochs:
            set_epochs(config.loop, o.epochs, len(train_index), o.batch_size)
        self.model = build_resnet18_evaluator(len(data.codec), config.width).to(
            self.device, memory_format=torch.channels_last
        )
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=o.lr, weight_decay=o.weight_decay)
        self.generator = torch.Generator().manual_seed(o.seed)
        self.modules = {"model": self.model}
        self.optimizers = {"optimizer": self.optimizer}
        self.random_streams = {"data": self.generator}
        logits = Logits(self.model)
        compile_in_place([logits], o.compile)
        self.train_logits = distributed.wrap(logits, sync_batch_norm=True)  # DDP under torchrun
        self.losses: list[float] = []  # since the last evaluation, for its train_loss

    def train_step(self, step: int) -> dict[str, float]:
        o = self.config.optim
        follow_one_cycle(self.optimizer, step, self.config.loop.steps, o.lr, o.pct_start)
        self.model.train()
        x, labels = self._batch()
        with autocast(self.device, o.bf16):
            logits = self.train_logits(x.contiguous(memory_format=torch.channels_last))
            loss = F.binary_cross_entropy_with_logits(logits.float(), labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.losses.append(loss.item())
        return {"loss": self.losses[-1]}

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Augmented training images drawn with replacement from this rank's share, and their labels."""
        o = self.config.optim
        index = self.train_index[torch.randint(0, len(self.train_index), (o.batch_size,), generator=self.generator)]
        x = augment(self.data.images[index], o.max_shift, self.generator)
        return x.to(self.device), self.data.labels[index].to(self.device)

    @torch.no_grad()
    def evaluate(self, step: int, run: Path) -> dict[str, float]:
        """The held-out scenes' top-k accuracy, exact-set rate, per-object precision and recall, and the mean
        training loss since the previous evaluation."""
        images, labels = to_signed(self.data.images[self.val_index]), self.data.labels[self.val_index]
        scores = Evaluator(self.model, self.data.codec).measure(images, labels)
        self.model.train()
        train_loss = sum(self.losses) / len(self.losses) if self.losses else float("nan")
        self.losses = []
        return {**scores, "train_loss": train_loss}


class Logits(torch.nn.Module):
    """The evaluator's pre-sigmoid outputs as a module of its own, for a stable BCE with logits: what DDP wraps and
    torch.compile compiles (both act through ``forward``)."""

    def __init__(self, evaluator: torch.nn.Module):
        super().__init__()
        self.evaluator = evaluator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return evaluator_logits(self.evaluator, x)


def export_evaluator(run: Path, task: EvaluatorTask) -> Path:
    """Writes the run's best weights (the highest held-out score) as RUN/evaluator.safetensors, for `--evaluator`,
    and RUN/evaluator.json: the recipe, the split, every evaluation and the training time. Returns the weights'
    path."""
    config = load_config(EvaluatorRunConfig, run / "config.yaml")
    codec = LabelCodec(read_json(run / "run.json")["objects"])
    best = run / "best"  # the loop writes it at the first evaluation, and every run ends with one
    model = build_resnet18_evaluator(len(codec), config.width)
    model.load_state_dict(load_file(best / "model.safetensors"))
    save_evaluator(model, codec, run / "evaluator.safetensors", half=config.half)
    records = read_metrics(run)
    evaluations = [r for r in records if "accuracy" in r]
    per_epoch = config.loop.eval_every if config.optim.epochs else None
    chosen = read_json(best / "state.json")["step"]
    report = {
        "architecture": architecture(config.width),
        "config": {**asdict(config.optim), "val_fraction": config.val_fraction, "width": config.width},
        "objects": list(codec.names),
        **task.split,
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "processes": distributed.world_size(),
        "torch": torch.__version__,
        "epochs": [
            {
                **({"epoch": r["step"] // per_epoch} if per_epoch else {}),
                "step": r["step"],
                "train_loss": r["train_loss"],
                "val_accuracy": r["accuracy"],
                "val_exact_set": r["exact_set"],
            }
            for r in evaluations
        ],
        "best_step": chosen,
        "val_accuracy": next(r["accuracy"] for r in evaluations if r["step"] == chosen),
        "val_exact_set": next(r["exact_set"] for r in evaluations if r["step"] == chosen),
        "train_seconds": round(max(elapsed_by_step(records).values(), default=0.0), 1),
    }
    write_json(run / "evaluator.json", report)
    return run / "evaluator.safetensors"
