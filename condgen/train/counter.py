"""Training the object counter in the shared loop (`condgen train counter`). It learns from real i-CLEVR images, whose
objects each stand once, from real images with objects of other scenes pasted in (:mod:`condgen.data.composites`):
scenes of up to six objects, many with an object two or three times, and from rendered scenes of one to six objects
(:mod:`condgen.data.synth`), which look otherwise and crowd and hide their objects more. At the end the best
weights become RUN/counter.safetensors with its record RUN/counter.json (:func:`export_counter`)."""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torchvision.transforms.functional import gaussian_blur

from condgen.data.composites import SceneCutouts, cut_out, paste_objects
from condgen.data.iclevr import LabeledImages
from condgen.data.imageio import to_signed
from condgen.data.jsonio import read_json, write_json
from condgen.data.labels import LabelCodec
from condgen.data.splits import split_by_scene
from condgen.data.synth import render_counting_scene
from condgen.device import resolve_device
from condgen.errors import CondgenError
from condgen.evaluate.counter import COUNTER_WIDTH, DensityCounter, instance_counts, save_counter
from condgen.evaluate.training import augment, follow_one_cycle
from condgen.train import distributed
from condgen.train.acceleration import Bf16, autocast
from condgen.train.config import load_config
from condgen.train.loop import LoopConfig, set_epochs
from condgen.train.runs import elapsed_by_step, read_metrics

RENDERED_MAX_OBJECTS, RENDERED_REPEATS = 6, 0.5
TRAIN_RENDER_STREAM, VAL_RENDER_STREAM = 1000, 2000  # renderer seeds (plus optim.seed); benchmarks/counter.py uses 1


@dataclass
class CounterOptimConfig:
    epochs: int = 28  # sets loop.steps, eval_every and checkpoint_every in epochs of the training split; 0 = keep them
    batch_size: int = 128  # per process
    lr: float = 3e-3  # peak of the one-cycle schedule, with AdamW
    weight_decay: float = 5e-4
    pct_start: float = 0.15
    composite_share: float = 0.6  # of each batch: real images with 1 to max_pasted objects of other scenes pasted in
    max_pasted: int = 3
    repeat_share: float = 0.5  # of the pasted objects: another instance of an object the image already holds
    rendered_share: float = 0.2  # of each batch: rendered scenes of 1 to 6 objects, half repeating one
    rendered_scenes: int = 12000  # rendered once at the start (about 1.5 ms each) and drawn from
    max_blur: float = 1.2  # Gaussian blur of sigma up to this on half the batch: generated images are softer
    seed: int = 0
    bf16: Bf16 = False


@dataclass
class CounterRunConfig:
    optim: CounterOptimConfig = field(default_factory=CounterOptimConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    val_fraction: float = 0.1  # of scenes
    val_composites: int = 2000  # held-out composites, from held-out scenes only
    val_rendered: int = 1000  # rendered scenes from a stream the training pool never draws from
    width: int = COUNTER_WIDTH
    half: bool = True  # store RUN/counter.safetensors in float16
    device: str = "auto"

    def validate(self) -> None:
        if not 0 < self.val_fraction < 1:
            raise CondgenError(f"val_fraction: {self.val_fraction} is not between 0 and 1")
        if self.width < 1 or self.optim.max_pasted < 1 or self.val_composites < 0:
            raise CondgenError("width and optim.max_pasted must be positive, val_composites not negative")
        for name in ("composite_share", "repeat_share", "rendered_share"):
            if not 0 <= getattr(self.optim, name) <= 1:
                raise CondgenError(f"optim.{name}: {getattr(self.optim, name)} is not between 0 and 1")
        if self.optim.composite_share + self.optim.rendered_share > 1:
            raise CondgenError("optim.composite_share + optim.rendered_share: more than the whole batch")


@dataclass
class CountedImages:
    """uint8 images (N, 3, S, S) and their instance counts per object (N, C)."""

    images: torch.Tensor
    counts: torch.Tensor


def composites(
    data: LabeledImages, cutouts: SceneCutouts, count: int, config: CounterOptimConfig, generator: torch.Generator
) -> CountedImages:
    """``count`` views of ``cutouts``' scenes, each with 1 to ``max_pasted`` sprites pasted in; a pasted sprite is,
    with probability ``repeat_share``, of an object the image already holds."""
    by_class = [torch.nonzero(cutouts.sprite_classes == c).flatten() for c in range(data.labels.shape[1])]
    images, counts = [], []
    for _ in range(count):
        view = int(torch.randint(len(cutouts.views), (), generator=generator))
        index = int(cutouts.views[view])
        held = data.labels[index].clone()
        picks = []
        for _ in range(int(torch.randint(1, config.max_pasted + 1, (), generator=generator))):
            present = [c for c in torch.nonzero(held).flatten().tolist() if len(by_class[c])]
            if present and float(torch.rand((), generator=generator)) < config.repeat_share:
                pool = by_class[present[int(torch.randint(len(present), (), generator=generator))]]
            else:
                pool = torch.arange(len(cutouts.sprite_classes))
            picks.append(int(pool[int(torch.randint(len(pool), (), generator=generator))]))
        image, pasted = paste_objects(data.images[index], cutouts.occupied[view], cutouts, picks, generator)
        for c in pasted:
            held[c] += 1
        images.append(image)
        counts.append(held)
    return CountedImages(torch.stack(images), torch.stack(counts))


def rendered(codec: LabelCodec, count: int, seed: int, size: int) -> CountedImages:
    """``count`` rendered scenes (:func:`condgen.data.synth.render_counting_scene`) of 1 to 6 objects, half of them
    repeating an object, from the renderer's stream ``seed``."""
    images, counts = [], torch.zeros(count, len(codec))
    for scene in range(count):
        objects, image = render_counting_scene(seed, scene, size, RENDERED_MAX_OBJECTS, RENDERED_REPEATS)
        images.append(torch.from_numpy(image).permute(2, 0, 1))
        for obj in objects:
            counts[scene, codec.index[obj.name]] += 1
    return CountedImages(torch.stack(images) if images else torch.zeros(0, 3, size, size, dtype=torch.uint8), counts)


def count_scores(predicted: torch.Tensor, counts: torch.Tensor) -> dict[str, float]:
    """``count_accuracy``: images whose rounded total equals the true one; ``instances_exact``: images whose every
    object's rounded count is right; ``over_count`` / ``under_count``: images counted too high / too low."""
    total, truth = predicted.sum(1).round(), counts.sum(1)
    return {
        "count_accuracy": float((total == truth).float().mean()),
        "instances_exact": float((predicted.round() == counts).all(1).float().mean()),
        "over_count": float((total > truth).float().mean()),
        "under_count": float((total < truth).float().mean()),
    }


class CounterTask:
    """A :class:`condgen.train.loop.Task`: squared error of every object's summed density against its instance
    count, plus that of the total, under AdamW and the one-cycle schedule. Each evaluation counts the held-out
    scenes' real images and composites; ``accuracy`` is the share of them counted right, ``exact_set`` the share
    with every object's count right."""

    kind = "counter"

    def __init__(self, config: CounterRunConfig, data: LabeledImages, data_root: Path, evaluator: None = None):
        config.validate()
        self.config, self.data = config, data
        o = config.optim
        torch.manual_seed(o.seed)
        self.device = resolve_device(config.device)
        train_index, val_index = split_by_scene(data.files, config.val_fraction, o.seed)
        self.cutouts = cut_out(data, train_index)
        if len(self.cutouts.sprites) == 0:
            raise CondgenError("counter training needs i-CLEVR scenes rendered one object at a time (X_0, X_1, X_2)")
        self.train_index = distributed.shard(train_index)
        size = data.images.shape[-1]
        pool = o.rendered_scenes if o.rendered_share > 0 else 0
        self.rendered = rendered(data.codec, pool, TRAIN_RENDER_STREAM + o.seed, size)
        self.validation = self._validation_set(val_index)
        self.split = {
            "train_images": len(train_index),
            "val_images": len(val_index),
            "sprites": len(self.cutouts.sprites),
        }
        if o.epochs:
            set_epochs(config.loop, o.epochs, len(train_index), o.batch_size)
        self.model = DensityCounter(len(data.codec), config.width).to(self.device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=o.lr, weight_decay=o.weight_decay)
        self.generator = torch.Generator().manual_seed(o.seed)
        self.modules = {"model": self.model}
        self.optimizers = {"optimizer": self.optimizer}
        self.random_streams = {"data": self.generator}
        self.train_model = distributed.wrap(self.model, sync_batch_norm=True)
        self.losses: list[float] = []

    def _validation_set(self, val_index: torch.Tensor) -> dict[str, CountedImages]:
        real = CountedImages(self.data.images[val_index], self.data.labels[val_index])
        cutouts = cut_out(self.data, val_index)
        generator = torch.Generator().manual_seed(self.config.optim.seed + 1)
        pasted = composites(self.data, cutouts, self.config.val_composites, self.config.optim, generator)
        size = self.data.images.shape[-1]
        scenes = rendered(self.data.codec, self.config.val_rendered, VAL_RENDER_STREAM + self.config.optim.seed, size)
        return {"real": real, "composite": pasted, "rendered": scenes}

    def train_step(self, step: int) -> dict[str, float]:
        o = self.config.optim
        follow_one_cycle(self.optimizer, step, self.config.loop.steps, o.lr, o.pct_start)
        self.model.train()
        x, counts = self._batch()
        with autocast(self.device, o.bf16):
            predicted = instance_counts(self.train_model(x))
        loss = F.mse_loss(predicted, counts) * counts.shape[1] + F.mse_loss(predicted.sum(1), counts.sum(1))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.losses.append(loss.item())
        return {"loss": self.losses[-1]}

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Real images, composites and rendered scenes in the configured shares (each image draws its source)."""
        o, g = self.config.optim, self.generator
        source = torch.rand(o.batch_size, generator=g)
        pasted = int((source < o.composite_share).sum())
        drawn = int((source >= 1 - o.rendered_share).sum()) if len(self.rendered.images) else 0
        index = self.train_index[torch.randint(0, len(self.train_index), (o.batch_size - pasted - drawn,), generator=g)]
        made = composites(self.data, self.cutouts, pasted, o, g)
        scenes = torch.randint(0, max(1, len(self.rendered.images)), (drawn,), generator=g)
        images = torch.cat([self.data.images[index], made.images, self.rendered.images[scenes]])
        counts = torch.cat([self.data.labels[index], made.counts, self.rendered.counts[scenes]])
        return _augment(images, o.max_blur, g).to(self.device), counts.to(self.device)

    @torch.no_grad()
    def evaluate(self, step: int, run: Path) -> dict[str, float]:
        self.model.eval()
        scores: dict[str, float] = {}
        right = exact = total = 0
        for name, part in self.validation.items():
            predicted = instance_counts(self.model(to_signed(part.images).to(self.device))).cpu()
            measured = count_scores(predicted, part.counts)
            scores |= {f"{name}_{key}": value for key, value in measured.items()}
            right += measured["count_accuracy"] * len(part.counts)
            exact += measured["instances_exact"] * len(part.counts)
            total += len(part.counts)
        self.model.train()
        train_loss = sum(self.losses) / len(self.losses) if self.losses else float("nan")
        self.losses = []
        return {"accuracy": right / total, "exact_set": exact / total, **scores, "train_loss": train_loss}


def _augment(images: torch.Tensor, max_blur: float, generator: torch.Generator) -> torch.Tensor:
    """Horizontal flips, and a Gaussian blur of random strength on half the images; floats in [-1, 1]."""
    x = augment(images, 0, generator)
    if max_blur > 0:
        for i in torch.nonzero(torch.rand(len(x), generator=generator) < 0.5).flatten().tolist():
            sigma = 0.3 + float(torch.rand((), generator=generator)) * (max_blur - 0.3)
            x[i] = gaussian_blur(x[i], kernel_size=5, sigma=sigma)
    return x


def export_counter(run: Path, task: CounterTask) -> Path:
    """Writes the run's best weights as RUN/counter.safetensors and RUN/counter.json: the recipe, the split, every
    evaluation and the training time. Returns the weights' path."""
    config = load_config(CounterRunConfig, run / "config.yaml")
    codec = LabelCodec(read_json(run / "run.json")["objects"])
    model = DensityCounter(len(codec), config.width)
    model.load_state_dict(load_file(run / "best" / "model.safetensors"))
    save_counter(model, codec, run / "counter.safetensors", half=config.half)
    records = read_metrics(run)
    evaluations = [r for r in records if "accuracy" in r]
    chosen = read_json(run / "best" / "state.json")["step"]
    report = {
        "architecture": f"density counter, {config.width}-{4 * config.width} channels, 8x8 maps per object",
        "config": {**asdict(config.optim), "val_fraction": config.val_fraction, "width": config.width},
        "objects": list(codec.names),
        **task.split,
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "processes": distributed.world_size(),
        "torch": torch.__version__,
        "evaluations": evaluations,
        "best_step": chosen,
        "best": next(r for r in evaluations if r["step"] == chosen),
        "train_seconds": round(max(elapsed_by_step(records).values(), default=0.0), 1),
    }
    write_json(run / "counter.json", report)
    return run / "counter.safetensors"
