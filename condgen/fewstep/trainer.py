"""Training few-step latent generators: ``distill`` (from a trained ldm teacher) and ``shortcut`` (from scratch).

Both train one UNet that is told how far each prediction jumps (``model.interval_embedding``) to predict, for every
jump of a grid of ``jumps.grid`` steps and of each coarser grid (grid / 2, ..., 1 jumps), the x_0 whose DDIM step
lands where two of its own half-length jumps land (the bootstrap rows, a ``jumps.bootstrap_fraction`` of each batch;
shortcut models, Frans et al. 2025, section 3, written in the DDIM form of progressive distillation, Salimans & Ho
2022, eq. 8). The finest jumps (the base rows) learn:

- ``distill``: the teacher's guided x_0 prediction (guidance distillation, Meng et al. 2023, stage one), so the
  student holds the teacher's classifier-free guidance and samples without it, one pass per jump; it starts from the
  teacher's weights.
- ``shortcut``: the data, as a diffusion model does (with label dropout for guidance); the guidance
  (``jumps.guidance``) enters the bootstrap targets of the jumps one level up (Frans et al. 2025, section 3.2).

The network predicts v (Salimans & Ho 2022, section 4), whose x_0 stays well defined at t = T - 1, where one jump
starts; the loss is the squared error in v, which weights an x_0 error by 1 + SNR (close to progressive
distillation's truncated-SNR weighting, Salimans & Ho 2022, section 4). Weighting it by how far it moves the jump's
landing instead made every sample the same blur (benchmarks/README.md).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from condgen.data.iclevr import LabeledImages
from condgen.diffusion.guidance import guided_eps_fn
from condgen.diffusion.options import Sampler
from condgen.diffusion.process import Prediction
from condgen.diffusion.run import DiffusionModel
from condgen.diffusion.samplers import bound
from condgen.diffusion.sampling import SampleConfig
from condgen.diffusion.trainer import DiffusionConfig, OptimConfig
from condgen.diffusion.unet import UNetConfig
from condgen.errors import CondgenError
from condgen.evaluate.evaluator import Evaluator
from condgen.evaluate.ranker import reward_loss
from condgen.fewstep.jumps import grid_steps, jump, landing_x0, velocity
from condgen.latent.ldm import LatentDiffusionTask, LDMRunConfig, latent_unet, load_latent_unet
from condgen.latent.run import frozen_autoencoder
from condgen.train.acceleration import autocast
from condgen.train.loop import LoopConfig, optimise
from condgen.train.runs import read_run

FEW_STEP_KINDS = ("distill", "shortcut")


@dataclass
class JumpConfig:
    grid: int = 32  # the finest jumps: T / grid steps each; the model is trained for 1, 2, 4, ..., grid jumps
    bootstrap_fraction: float = 0.25  # share of each batch that learns a jump from two half-length ones
    # classifier-free guidance in the targets: the teacher's x_0 predictions (distill) or the finest of the model's
    # own half-jumps (shortcut) are guided at steps t >= guidance_min_t (the shipped iclevr-ldm samples so)
    guidance: float = 3.0
    guidance_min_t: int = 100
    # distill: > 0 adds this weight times a reward loss on reward_rows samples of reward_jumps jumps from pure noise:
    # the score best-of-K ranks by, from the teacher folder's image ranker and its counter (-log p(exactly the
    # requested objects), plus 4 per object counted off the requested number); never the shipped evaluator or counter
    reward_weight: float = 0.0
    reward_rows: int = 8
    reward_jumps: int = 4

    def __post_init__(self):
        if self.grid < 1 or self.grid & (self.grid - 1):
            raise CondgenError(f"jumps.grid: a power of two (1, 2, 4, ...), got {self.grid}")
        if not 0 <= self.bootstrap_fraction < 1:
            raise CondgenError(f"jumps.bootstrap_fraction: in [0, 1), got {self.bootstrap_fraction}")
        if not self.guidance >= 0:
            raise CondgenError(f"jumps.guidance: a scale >= 0 (1 = none), got {self.guidance}")
        if not self.reward_weight >= 0:
            raise CondgenError(f"jumps.reward_weight: a weight >= 0 (0 for none), got {self.reward_weight}")
        if self.reward_rows < 1 or self.reward_jumps < 1:
            raise CondgenError("jumps.reward_rows and jumps.reward_jumps: at least 1")


def _few_step_sample() -> SampleConfig:
    # four jumps of DDIM, no guidance at sampling (it is in the jumps), latents bounded as configs/ldm_cpu.yaml's
    return SampleConfig(sampler=Sampler.DDIM, steps=4, guidance=1.0, eta=0.0, clip_x0=4.0)


@dataclass
class FewStepRunConfig:
    teacher: str = ""  # distill: the ldm run or model folder it learns from (`train distill --teacher RUN|MODEL`)
    autoencoder: str = ""  # shortcut: `--autoencoder RUN`; distill: the teacher's
    scale_factor: float = 0.0  # as an ldm's; distill: the teacher's
    model: UNetConfig = field(default_factory=lambda: dataclasses.replace(latent_unet(), interval_embedding=True))
    diffusion: DiffusionConfig = field(default_factory=lambda: DiffusionConfig(prediction=Prediction.V))
    jumps: JumpConfig = field(default_factory=JumpConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)  # label_dropout: shortcut's base rows only
    loop: LoopConfig = field(default_factory=LoopConfig)
    sample: SampleConfig = field(default_factory=_few_step_sample)
    device: str = "auto"


class FewStepTask(LatentDiffusionTask):
    """A :class:`condgen.train.loop.Task` for ``distill`` and ``shortcut`` runs."""

    def __init__(
        self,
        kind: str,
        config: FewStepRunConfig,
        data: LabeledImages,
        data_root: Path,
        evaluator: Evaluator | None,
        teacher: DiffusionModel | None = None,
    ):
        self.kind = kind
        self.teacher = teacher
        if teacher is not None:
            _take_from_teacher(config, teacher)
        if config.jumps.reward_weight > 0 and (teacher is None or teacher.ranker is None):
            raise CondgenError(
                "jumps.reward_weight: needs a teacher model folder with an image ranker (ranker.safetensors)"
            )
        config.model = dataclasses.replace(config.model, interval_embedding=True)
        config.diffusion.prediction = Prediction.V
        if config.jumps.grid > config.diffusion.num_steps:
            raise CondgenError(
                f"jumps.grid: at most the {config.diffusion.num_steps} noise steps, got {config.jumps.grid}"
            )
        super().__init__(config, data, data_root, evaluator, frozen_autoencoder(config))
        if teacher is not None:  # the student starts as its teacher: its interval layers start at zero
            for network in (self.model, self.ema.model):
                network.load_state_dict(teacher.model.state_dict(), strict=False)
        levels = int(math.log2(config.jumps.grid))
        # level k: grid / 2^k jumps; each grid as (starts, ends, midpoints of the next finer grid)
        self.grids = []
        for level in range(levels + 1):
            jumps = config.jumps.grid >> level
            coarse = grid_steps(config.diffusion.num_steps, jumps)
            # the midpoints are the finer grid's; the finest jumps have none (their ends stand in)
            middle = grid_steps(config.diffusion.num_steps, 2 * jumps)[1::2] if level > 0 else coarse[1:]
            self.grids.append(tuple(torch.tensor(points) for points in (coarse[:-1], coarse[1:], middle)))

    def _draw_jumps(self, rows: int) -> tuple[torch.Tensor, ...]:
        """Per row: its level (0 = the finest jumps), start t, end t' and midpoint: the last
        :meth:`bootstrap_rows` rows take a coarser level, each coarser level as likely."""
        coarser = len(self.grids) - 1
        level = torch.zeros(rows, dtype=torch.long)
        boot = self.bootstrap_rows(rows)
        if boot:
            level[rows - boot :] = torch.randint(1, coarser + 1, (boot,), generator=self.generator)
        t, t_next, t_mid = (torch.empty(rows, dtype=torch.long) for _ in range(3))
        for k, (starts, ends, middles) in enumerate(self.grids):
            rows_k = (level == k).nonzero().flatten()
            pick = torch.randint(0, len(starts), (len(rows_k),), generator=self.generator)
            t[rows_k], t_next[rows_k], t_mid[rows_k] = starts[pick], ends[pick], middles[pick]
        return level, t, t_next, t_mid

    def bootstrap_rows(self, rows: int) -> int:
        """How many of a batch's ``rows`` learn a coarser jump (none where the grid is one jump)."""
        return round(rows * self.config.jumps.bootstrap_fraction) if len(self.grids) > 1 else 0

    def _own_x0(
        self, x: torch.Tensor, t: torch.Tensor, t_to: torch.Tensor, labels: torch.Tensor, guided: torch.Tensor
    ) -> torch.Tensor:
        """The model's x_0 for jumps from t to ``t_to``; rows where ``guided`` (and t >= jumps.guidance_min_t) are
        guided (Ho & Salimans 2022, eq. 6, in v: an affine map of eps at the same x_t)."""
        j = self.config.jumps
        out = self.model(x, t, labels, interval=t - t_to)
        guided = guided & (t >= j.guidance_min_t)
        if j.guidance != 1 and bool(guided.any()):
            g = guided.nonzero().flatten()
            unconditional = self.model(x[g], t[g], torch.zeros_like(labels[g]), interval=(t - t_to)[g])
            out[g] = unconditional + j.guidance * (out[g] - unconditional)
        return self.diffusion.predict_x0(x, t, out)

    def _bootstrap_x0(
        self, x: torch.Tensor, t: torch.Tensor, t_mid: torch.Tensor, t_next: torch.Tensor, labels, level
    ) -> torch.Tensor:
        """The x_0 whose one jump from t to t' lands where two half-length jumps of the model land."""
        clip = self.config.sample.clip_x0
        guided = (level == 1) & (self.teacher is None)  # a teacher's targets are guided already
        middle = jump(self.diffusion, x, t, t_mid, self._own_x0(x, t, t_mid, labels, guided), clip)
        landing = jump(self.diffusion, middle, t_mid, t_next, self._own_x0(middle, t_mid, t_next, labels, guided), clip)
        return landing_x0(self.diffusion, x, t, t_next, landing)

    def _base_x0(self, x: torch.Tensor, t: torch.Tensor, x0: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The target of the finest jumps: the data (shortcut) or the teacher's guided x_0 prediction (distill)."""
        if self.teacher is None:
            return x0
        j, teacher = self.config.jumps, self.teacher
        eps = guided_eps_fn(teacher.model, teacher.diffusion, labels, j.guidance, guidance_min_t=j.guidance_min_t)(x, t)
        return bound(teacher.diffusion.predict_x0(x, t, eps), self.config.sample.clip_x0)

    def train_step(self, step: int) -> dict[str, float]:
        o = self.config.optim
        self.model.train()
        x0, labels = self.batch()
        level, t, t_next, t_mid = self._draw_jumps(len(x0))
        base = level == 0
        if self.teacher is None:  # label dropout on the base rows: the unconditional model guidance needs
            labels[base & (torch.rand(len(labels), generator=self.generator) < o.label_dropout)] = 0.0
        noise = torch.randn(x0.shape, generator=self.generator).to(x0)
        level, t, t_next, t_mid, base, labels = (v.to(self.device) for v in (level, t, t_next, t_mid, base, labels))
        x = self.diffusion.q_sample(x0, t, noise)
        with torch.no_grad(), autocast(self.device, o.bf16):
            target = torch.empty_like(x0)
            if bool(base.any()):
                target[base] = self._base_x0(x[base], t[base], x0[base], labels[base]).to(target)
            boot = ~base
            if bool(boot.any()):
                target[boot] = self._bootstrap_x0(
                    x[boot], t[boot], t_mid[boot], t_next[boot], labels[boot], level[boot]
                ).to(target)
        with autocast(self.device, o.bf16):
            out = self.train_model(x, t, labels, interval=t - t_next)
        target_v = velocity(self.diffusion, x, t, target)
        per_row = (out.float() - target_v).square().flatten(1).mean(dim=1)
        loss = per_row.mean()
        losses = {"base": per_row[base].mean().item() if bool(base.any()) else 0.0}
        losses["bootstrap"] = per_row[~base].mean().item() if bool((~base).any()) else 0.0
        if self.config.jumps.reward_weight > 0:
            reward = self._reward_loss(labels[: self.config.jumps.reward_rows])
            loss = loss + self.config.jumps.reward_weight * reward
            losses["reward"] = reward.item()
        optimise(self.optimizer, self.model, loss, o, step)
        self.ema.update(self.model)
        return {"loss": loss.item(), **losses}

    def _reward_loss(self, labels: torch.Tensor) -> torch.Tensor:
        """Samples for ``labels`` in ``jumps.reward_jumps`` jumps from pure noise, decoded, read by the teacher
        folder's image ranker and its counter: :func:`condgen.evaluate.ranker.reward_loss`, the score best-of-K
        keeps candidates by. The gradient runs through the jumps, the decoder and both readers (frozen)."""
        j, o, teacher = self.config.jumps, self.config.optim, self.teacher
        latent = (
            len(labels),
            self.config.model.in_channels,
            self.config.model.image_size,
            self.config.model.image_size,
        )
        x = torch.randn(latent, generator=self.generator).to(self.device)
        grid = grid_steps(self.config.diffusion.num_steps, j.reward_jumps)
        for start, end in zip(grid, grid[1:]):
            t, t_next = (torch.full((len(x),), step, device=self.device) for step in (start, end))
            with autocast(self.device, o.bf16):
                out = self.model(x, t, labels, interval=t - t_next)
            x0 = self.diffusion.predict_x0(x, t, out.float())
            x = jump(self.diffusion, x, t, t_next, x0, self.config.sample.clip_x0)
        decoded = self.autoencoder.decode(x / self.config.scale_factor).clamp(-1, 1)
        return reward_loss(teacher.ranker, decoded, labels, self.generator, teacher.ranker_counter).mean()


def _take_from_teacher(config: FewStepRunConfig, teacher: DiffusionModel) -> None:
    """A distilled student shares its teacher's network, noise schedule, autoencoder and latent scale."""
    taught = teacher.config
    config.model = taught.model
    config.diffusion = dataclasses.replace(taught.diffusion, prediction=Prediction.V, min_snr_gamma=0.0)
    config.autoencoder = str((Path(config.teacher) / taught.autoencoder).resolve())
    config.scale_factor = taught.scale_factor
    config.sample.clip_x0 = taught.sample.clip_x0


def load_teacher(path: str) -> DiffusionModel:
    """The ldm run or model folder ``path`` names, frozen, to distil."""
    if not path:
        raise CondgenError("--teacher: required for a new distill run (an ldm run or model folder)")
    teacher = Path(path)
    kind = read_run(teacher).get("kind")
    if kind != "ldm":
        raise CondgenError(f"--teacher: {teacher} is a {kind} run; distill learns from an ldm run or model folder")
    loaded = load_latent_unet(teacher, "ldm", LDMRunConfig, "best")
    loaded.model.requires_grad_(False)
    return loaded


def make_distill_task(
    config: FewStepRunConfig, data: LabeledImages, data_root: Path, evaluator: Evaluator | None
) -> FewStepTask:
    """The ``distill`` task on the teacher ``config.teacher`` names."""
    config.teacher = str(Path(config.teacher).resolve()) if config.teacher else ""
    return FewStepTask("distill", config, data, data_root, evaluator, load_teacher(config.teacher))


def make_shortcut_task(
    config: FewStepRunConfig, data: LabeledImages, data_root: Path, evaluator: Evaluator | None
) -> FewStepTask:
    """The ``shortcut`` task on the autoencoder run ``config.autoencoder`` names."""
    if config.teacher:
        raise CondgenError("teacher: shortcut trains from scratch; `condgen train distill --teacher` learns from one")
    return FewStepTask("shortcut", config, data, data_root, evaluator)


def load_few_step(run: Path, checkpoint: str = "best") -> DiffusionModel:
    """The EMA UNet of a ``distill`` or ``shortcut`` run or model folder, sampled by DDIM jumps."""
    kind = read_run(run).get("kind")
    return load_latent_unet(run, kind if kind in FEW_STEP_KINDS else "distill", FewStepRunConfig, checkpoint)
