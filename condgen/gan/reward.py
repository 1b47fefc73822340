"""A reward for the generator from an image ranker and its object counter: the score best-of-K sampling keeps
candidates by (:func:`condgen.nn.ranking.candidate_scores`), made a loss. A generator that maximises it draws in one
pass the image best-of-K would have kept, where best-of-K draws K and ranks them.

This is reward fine-tuning by backpropagation through a frozen differentiable reader, as ReFL (Xu et al. 2023) and
DRaFT (Clark et al. 2024) tune diffusion models on a reward model; the adversarial loss it is added to keeps the
images on the data, where a reward alone is soon gamed. The readers are condgen-trained on the training images
(`condgen train evaluator`, `condgen train counter`), never the shipped evaluator or counter, which only judge.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from condgen.errors import CondgenError
from condgen.evaluate.ranker import RANKER_FILE, load_ranker, load_ranker_counter, own_ranker_files, reward_loss
from condgen.pretrained import PRETRAINED, shipped_models


@dataclass
class RewardConfig:
    # > 0: the generator's loss adds weight x -(the best-of-K score of its images) (condgen.gan.reward); 0 = off
    weight: float = 0.0
    # the image ranker: a `train evaluator` run or its .safetensors file, or a model folder or shipped model's name
    # (iclevr-ldm) whose own ranker, and counter unless `counter` names one, it takes
    ranker: str = ""
    counter: str = ""  # its object counter (a `train counter` run or file); "" = the ranker's set score alone
    max_shift: int = 4  # each image is read mirrored at even odds and moved by up to this many pixels
    # the share of each generator batch whose requests are redrawn from the latest ``hard_pool`` ones, at odds in
    # proportion to the reward loss each last had (HardRequests); 0 = every request drawn from the data
    hard_fraction: float = 0.0
    hard_pool: int = 1024
    # the share of each generator batch whose requests are redrawn from the training label sets that ask for two
    # objects of one colour (condgen.data.labels.share_a_first_word), which one pass most often gets wrong; the
    # critic's batches keep the data's own label sets; 0 = every request drawn from the data
    look_alike_fraction: float = 0.0

    def validate(self) -> None:
        if not self.weight >= 0:
            raise CondgenError(f"reward.weight: a weight >= 0 (0 for none), got {self.weight}")
        if self.weight > 0 and not self.ranker:
            raise CondgenError("reward.ranker: reward.weight > 0 needs an image ranker (a `train evaluator` run)")
        if self.counter and not self.ranker:
            raise CondgenError("reward.counter: the counter adds to an image ranker's score; set reward.ranker too")
        if self.max_shift < 0:
            raise CondgenError(f"reward.max_shift: {self.max_shift} is negative")
        if not 0 <= self.hard_fraction < 1:
            raise CondgenError(f"reward.hard_fraction: {self.hard_fraction} is not in [0, 1)")
        if not 0 <= self.look_alike_fraction < 1 or self.hard_fraction + self.look_alike_fraction > 1:
            raise CondgenError(
                f"reward.look_alike_fraction: {self.look_alike_fraction} is not in [0, 1), or with "
                f"reward.hard_fraction ({self.hard_fraction}) redraws more than the whole batch"
            )
        if self.hard_pool < 1:
            raise CondgenError(f"reward.hard_pool: {self.hard_pool}; the pool needs at least one request")

    def name_files(self) -> None:
        """Sets ``ranker`` and ``counter`` to the absolute paths of the files they name, so that the run's
        config.yaml says which files taught it, wherever it is resumed from."""
        ranker, counter = Path(self.ranker), Path(self.counter) if self.counter else None
        if not ranker.exists() and self.ranker in shipped_models():
            ranker = PRETRAINED / self.ranker
        if ranker.is_dir() and not (ranker / "evaluator.safetensors").is_file():  # not a `train evaluator` run
            ranker_file, counter_file = own_ranker_files(ranker)
            if ranker_file is None:
                raise CondgenError(f"reward.ranker: {ranker} holds no image ranker ({RANKER_FILE})")
            ranker, counter = ranker_file, counter or counter_file
        self.ranker = str(ranker.resolve())
        self.counter = str(counter.resolve()) if counter else ""


class RankerReward:
    """The frozen ranker and counter a :class:`RewardConfig` names, as a loss on generated images."""

    def __init__(self, config: RewardConfig, objects: list[str], device: torch.device):
        self.ranker = load_ranker(Path(config.ranker), objects, device)
        self.counter = load_ranker_counter(Path(config.counter), objects, device) if config.counter else None
        if self.counter is not None:
            self.counter.model.requires_grad_(False)
        self.max_shift = config.max_shift

    def loss(self, images: torch.Tensor, labels: torch.Tensor, random: torch.Generator) -> torch.Tensor:
        """:func:`condgen.evaluate.ranker.reward_loss` of ``images`` (N, 3, 64, 64) in [-1, 1] made for
        ``labels``, one per image (N,)."""
        return reward_loss(self.ranker, images, labels, random, self.counter, self.max_shift)


class HardRequests(torch.nn.Module):
    """The latest requests (label lists) the generator drew for, each with the reward loss its image last had, from
    which a share of every batch is drawn again at odds in proportion to that loss: the requests the ranker finds
    the generator failing on come back until it stops failing on them. This is prioritised replay (Schaul et al.
    2016, P(i) = p_i / sum_k p_k with p_i the loss, alpha = 1) of requests rather than transitions; a request's loss
    is updated each time it is drawn again. Buffers, so that a checkpoint keeps the pool and a run resumes exactly
    (under torchrun each process keeps a pool of its own, and a resumed run gives every process the first one's)."""

    def __init__(self, size: int, classes: int):
        super().__init__()
        self.register_buffer("labels", torch.zeros(size, classes))
        self.register_buffer("losses", torch.zeros(size))
        self.register_buffer("added", torch.zeros((), dtype=torch.long))  # requests added since the start

    def ready(self, count: int) -> bool:
        """Whether the pool is full, and so holds more requests than ``count`` to draw from."""
        return int(self.added) >= len(self.losses) > count

    def draw(self, count: int, random: torch.Generator) -> torch.Tensor:
        """Indices of ``count`` pooled requests, drawn with replacement at odds in proportion to their losses."""
        odds = self.losses.clamp(min=0).cpu() + 1e-6  # no request's odds fall to zero
        return torch.multinomial(odds, count, replacement=True, generator=random).to(self.losses.device)

    @torch.no_grad()
    def add(self, labels: torch.Tensor, losses: torch.Tensor) -> None:
        """Puts new requests and their losses in the place of the oldest."""
        at = (int(self.added) + torch.arange(len(labels), device=self.losses.device)) % len(self.losses)
        self.labels[at] = labels.float()
        self.losses[at] = losses.float()
        self.added += len(labels)

    @torch.no_grad()
    def update(self, index: torch.Tensor, losses: torch.Tensor) -> None:
        """Sets the losses of the pooled requests ``index``, drawn again, to those their new images had."""
        self.losses[index] = losses.float()
