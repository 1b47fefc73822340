"""Training a conditional GAN with the shared loop. One loop step = ``n_critic`` critic updates + one generator
update."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from condgen.data.iclevr import LabeledImages, load_label_files, random_batch, selection_labels
from condgen.data.labels import share_a_first_word
from condgen.device import resolve_device
from condgen.errors import CondgenError
from condgen.evaluate.evaluator import Evaluator
from condgen.gan import warm_start
from condgen.gan.augment import augment
from condgen.gan.losses import (
    LOSSES,
    auxiliary_classification,
    clip_weights,
    d_mismatched,
    gradient_penalty,
    r1_penalty,
)
from condgen.gan.networks import GANModelConfig, build_discriminator, build_generator
from condgen.gan.options import Augment, Loss, Optimizer, choose
from condgen.gan.reward import HardRequests, RankerReward, RewardConfig
from condgen.gan.sampling import sample_images
from condgen.train import distributed
from condgen.train.acceleration import Bf16, autocast, compile_in_place
from condgen.train.loop import EMA, LoopConfig
from condgen.train.scoring import score_label_files


@dataclass
class GANOptimConfig:
    loss: Loss = Loss.WGAN_GP
    batch_size: int = 64
    n_critic: int = 5  # critic updates per generator update
    optimizer: Optimizer = Optimizer.ADAM
    lr_g: float = 1e-4
    lr_d: float = 1e-4
    betas: tuple[float, ...] = (0.0, 0.9)  # Adam only
    clip_value: float = 0.01  # wgan_clip
    gp_lambda: float = 10.0  # wgan_gp
    aux_weight: float = 1.0  # weight of the auxiliary classification loss (conditioning = auxiliary or both)
    augment: Augment = Augment.NONE  # DiffAugment before every critic call
    translate_fraction: float = 0.125  # largest shift, as a fraction of the image side (augment = translation...)
    r1_gamma: float = 0.0  # R1 penalty gamma / 2 * E||grad D(x_real)||^2 on the critic; 0 = off
    mismatch_weight: float = 0.0  # real images with shuffled labels as extra negatives; 0 = off
    ema_decay: float = 0.999
    hflip: bool = True
    seed: int = 0
    bf16: Bf16 = False  # bfloat16 autocast of the forward passes: true, false or auto (condgen.train.acceleration)
    # torch.compile backend: "" = none, inductor (acceleration); with a gradient penalty or R1 only the generator is
    # compiled, since compiled code has no double backward, and with spectral norm too (inductor fails on the
    # in-place power-iteration update of its hooks)
    compile: str = ""

    def __post_init__(self) -> None:
        self.choose_options()

    def choose_options(self) -> None:
        """The options given by name (in Python, or assigned after construction) as their Enum members; an unknown
        name raises a CondgenError naming the key."""
        self.loss = choose(Loss, self.loss, "optim.loss")
        self.optimizer = choose(Optimizer, self.optimizer, "optim.optimizer")
        self.augment = choose(Augment, self.augment, "optim.augment")


@dataclass
class GANRunConfig:
    model: GANModelConfig = field(default_factory=GANModelConfig)
    optim: GANOptimConfig = field(default_factory=GANOptimConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    eval_seed: int = 0  # fixed noise for periodic evaluation and sampling
    # noise vectors per request in evaluation and sampling; the image kept is the one whose critic's auxiliary head
    # finds closest to exactly the requested objects (condgen.gan.sampling); 1 = plain sampling
    candidates: int = 1
    # a trained run or model folder of the same kind whose settings and best weights this run starts from
    # (`train gan --init RUN|MODEL`; condgen.gan.warm_start)
    init: str = ""
    reward: RewardConfig = field(default_factory=RewardConfig)
    device: str = "auto"

    def validate(self) -> None:
        """Rejects unknown options and combinations that cannot work, naming the keys."""
        self.model.choose_options()
        self.optim.choose_options()
        self.reward.validate()
        if self.model.g_blocks < 1 or self.model.d_blocks < 0:
            raise CondgenError("model.g_blocks / model.d_blocks: need g_blocks >= 1 and d_blocks >= 0")
        if not 0 <= self.optim.translate_fraction < 0.5:
            raise CondgenError(f"optim.translate_fraction: {self.optim.translate_fraction} is not in [0, 0.5)")
        if self.optim.r1_gamma < 0:
            raise CondgenError(f"optim.r1_gamma: {self.optim.r1_gamma} is negative")
        if self.optim.mismatch_weight < 0:
            raise CondgenError(f"optim.mismatch_weight: {self.optim.mismatch_weight} is negative")
        if self.candidates < 1 or (self.candidates > 1 and not self.model.auxiliary_head):
            raise CondgenError(
                f"candidates: {self.candidates}; must be >= 1, and above 1 only with the critic's auxiliary head "
                "(model.conditioning auxiliary or both)"
            )
        if LOSSES[self.optim.loss].penalty and self.model.d_batch_norm:
            raise CondgenError("model.d_batch_norm: a critic trained with a gradient penalty must not use batch norm")


class GANTask:
    """A :class:`condgen.train.loop.Task` for conditional GANs."""

    kind = "gan"

    def __init__(self, config: GANRunConfig, data: LabeledImages, data_root: Path, evaluator: Evaluator | None):
        config.validate()
        self.config = config
        self.data = data
        self.evaluator = evaluator
        o = config.optim
        torch.manual_seed(o.seed)
        self.device = resolve_device(config.device)
        self.generator_net = build_generator(config.model).to(self.device)
        self.critic = build_discriminator(config.model).to(self.device)
        self.ema = EMA(self.generator_net, o.ema_decay)
        self.opt_g, self.opt_d = (
            self._optimizer(net, lr) for net, lr in ((self.generator_net, o.lr_g), (self.critic, o.lr_d))
        )
        self.random = torch.Generator().manual_seed(o.seed)
        self.modules = {"generator": self.generator_net, "critic": self.critic, "ema": self.ema.model}
        self.optimizers = {"opt_g": self.opt_g, "opt_d": self.opt_d}
        if config.init:
            warm_start.load_weights(Path(config.init), self.kind, self.modules, self.optimizers)
        self.reward, self.hard = None, None
        if config.reward.weight:
            config.reward.name_files()
            self.reward = RankerReward(config.reward, list(data.codec.names), self.device)
            if config.reward.hard_fraction:  # after the warm start: the run started from keeps no pool
                self.hard = HardRequests(config.reward.hard_pool, len(data.codec)).to(self.device)
                self.modules["hard_requests"] = self.hard
        self.random_streams = {"data": self.random}
        self.objective = LOSSES[o.loss]  # the loss pair, weight clipping, the gradient penalty
        # Clipping spares the auxiliary head: it classifies the critic's features and is no part of the Wasserstein
        # critic whose Lipschitz constant clipping bounds; clipped to c its logits stay near 0 and its loss near
        # log 2, so it would teach the generator nothing.
        auxiliary = self.critic.auxiliary
        self.unclipped = list(auxiliary.parameters()) if auxiliary is not None else []
        self.all_index = distributed.shard(torch.arange(len(data)))  # this rank's training images
        if config.reward.look_alike_fraction:  # this rank's training images that ask for two objects of one colour
            alike = share_a_first_word(data.labels[self.all_index], data.codec.names)
            self.look_alike_index = self.all_index[alike]
            if not len(self.look_alike_index):
                raise CondgenError(
                    "reward.look_alike_fraction: no training label set asks for two objects whose names share a "
                    "first word (colour); set it to 0"
                )
        eager_critic = self.objective.penalty or o.r1_gamma > 0 or config.model.spectral_norm
        compile_in_place([self.generator_net] + ([] if eager_critic else [self.critic]), o.compile)
        # From here on the steps call DDP wrappers under torchrun; modules, the optimisers and the EMA keep the plain
        # networks. The generator's batch norm sees the global batch (on GPUs); the critic broadcasts no buffers, as
        # the matching-aware negatives call it a number of times that differs between ranks.
        self.generator_net = distributed.wrap(self.generator_net, sync_batch_norm=True)
        self.critic = distributed.wrap(self.critic, broadcast_buffers=False)
        self.label_files = load_label_files(data_root, data.codec)
        self.selection = selection_labels(data.labels)

    def _optimizer(self, net: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
        if self.config.optim.optimizer == Optimizer.RMSPROP:
            return torch.optim.RMSprop(net.parameters(), lr=lr)
        return torch.optim.Adam(net.parameters(), lr=lr, betas=tuple(self.config.optim.betas))

    def _real_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        o = self.config.optim
        x, labels = random_batch(self.data, self.all_index, o.batch_size, o.hflip, self.random, self.device)
        return x, labels.to(self.device)

    def _noise(self, count: int) -> torch.Tensor:
        return torch.randn(count, self.config.model.noise_dim, generator=self.random).to(self.device)

    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        o = self.config.optim
        return augment(x, o.augment, self.random, o.translate_fraction)

    def critic_loss(self, real: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        o = self.config.optim
        with torch.no_grad():
            fake = self.generator_net(self._noise(len(real)), labels)
        real = self._augment(real).requires_grad_(o.r1_gamma > 0)
        fake = self._augment(fake)
        real_score, real_aux = self.critic(real, labels)
        fake_score, _ = self.critic(fake, labels)
        loss = self.objective.adversarial.discriminator(real_score, fake_score)
        if o.r1_gamma > 0:
            loss = loss + o.r1_gamma / 2 * r1_penalty(real_score, real)
        if o.mismatch_weight > 0:
            shuffled = labels[torch.randperm(len(labels), generator=self.random).to(labels.device)]
            differs = (shuffled != labels).any(dim=1)
            if differs.any():
                mismatched_score, _ = self.critic(real[differs], shuffled[differs])
                loss = loss + o.mismatch_weight * d_mismatched(mismatched_score, o.loss)
        if self.objective.penalty:
            critic_score = lambda x, y: self.critic(x, y)[0]  # noqa: E731
            loss = loss + o.gp_lambda * gradient_penalty(critic_score, real, fake, labels, self.random)
        if real_aux is not None:
            loss = loss + o.aux_weight * auxiliary_classification(real_aux, labels)
        return loss

    def train_step(self, step: int) -> dict[str, float]:
        o = self.config.optim
        self.generator_net.train()
        self.critic.train()
        for _ in range(o.n_critic):
            real, labels = self._real_batch()
            with autocast(self.device, o.bf16):
                d_loss = self.critic_loss(real, labels)
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            self.opt_d.step()
            if self.objective.clip:
                clip_weights(self.critic, o.clip_value, keep=self.unclipped)
        _, labels = self._real_batch()  # conditions drawn from the data's own label distribution
        labels = self._redraw_look_alike(labels)
        labels, replayed = self._redraw_hard(labels)
        losses = {}
        with autocast(self.device, o.bf16):
            fake = self.generator_net(self._noise(len(labels)), labels)
            fake_score, fake_aux = self.critic(self._augment(fake), labels)
            g_loss = self.objective.adversarial.generator(fake_score)
            if fake_aux is not None:
                g_loss = g_loss + o.aux_weight * auxiliary_classification(fake_aux, labels)
            if self.reward is not None:
                each = self.reward.loss(self.images(fake), labels, self.random)
                reward = each.mean()
                g_loss = g_loss + self.config.reward.weight * reward
                losses["reward"] = reward.item()
        if self.hard is not None:
            self.hard.update(replayed, each[: len(replayed)].detach())
            self.hard.add(labels[len(replayed) :], each[len(replayed) :].detach())
        self.opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        self.opt_g.step()
        self.ema.update(self.generator_net)
        return {"d_loss": d_loss.item(), "g_loss": g_loss.item(), **losses}

    def _redraw_look_alike(self, labels: torch.Tensor) -> torch.Tensor:
        """``labels`` with their last ``reward.look_alike_fraction`` redrawn from the training label sets that ask
        for two objects of one colour (the first rows are the ones ``_redraw_hard`` may redraw)."""
        count = round(self.config.reward.look_alike_fraction * len(labels))
        if not count:
            return labels
        pick = torch.randint(len(self.look_alike_index), (count,), generator=self.random)
        drawn = self.data.labels[self.look_alike_index[pick]].to(labels.device, labels.dtype)
        return torch.cat([labels[: len(labels) - count], drawn])

    def _redraw_hard(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``labels`` with their first ``reward.hard_fraction`` redrawn from the pool of hard requests once it is
        full, and the pool indices of those redrawn."""
        count = round(self.config.reward.hard_fraction * len(labels))
        if self.hard is None or not self.hard.ready(count):
            return labels, torch.zeros(0, dtype=torch.long, device=labels.device)
        replayed = self.hard.draw(count, self.random)
        return torch.cat([self.hard.labels[replayed].to(labels.dtype), labels[count:]]), replayed

    def images(self, fake: torch.Tensor) -> torch.Tensor:
        """The generator's output as images in [-1, 1], differentiably (a latent GAN decodes it)."""
        return fake

    def sample(self, labels: torch.Tensor) -> torch.Tensor:
        """Images from the EMA generator with the fixed evaluation noise (ranked by the current critic when
        ``candidates`` > 1; ``train_step`` puts it back in training mode)."""
        generator, critic = self.ema.model.eval(), self.modules["critic"].eval()
        return sample_images(generator, labels, self.config.eval_seed, critic=critic, candidates=self.config.candidates)

    def evaluate(self, step: int, run: Path) -> dict[str, float]:
        return score_label_files(self.selection, self.label_files, self.sample, self.evaluator, step, run)


def make_gan_task(config: GANRunConfig, data: LabeledImages, data_root: Path, evaluator: Evaluator | None) -> GANTask:
    """The ``gan`` task; a run started from another (``init``) takes its settings first."""
    if config.init:
        warm_start.take_settings(config, GANTask.kind)
    return GANTask(config, data, data_root, evaluator)
