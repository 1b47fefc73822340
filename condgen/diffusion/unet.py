"""A conditional UNet for 64x64 images: time and multi-hot labels in, noise (or v) out.

Labels enter the EDM way (Karras et al. 2022): ``Linear(num_labels, emb_dim)`` on the multi-hot vector, added to
the time embedding, so "these three objects" is one vector and the zero vector means "no condition" (what
classifier-free guidance drops to). Optionally, positions also cross-attend to one token per requested object.

For the CPU, ``patch_size = p`` folds p x p pixel blocks into channels first (space-to-depth), so every level runs at
1/p of the resolution: p^2 times fewer positions for the same depth.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from condgen.errors import CondgenError, require_positive
from condgen.nn.blocks import Attention, LabelTokens, ResBlock, group_norm, timestep_embedding


@dataclass
class UNetConfig:
    image_size: int = 64
    in_channels: int = 3
    num_labels: int = 24
    channels: int = 64  # width of the first level
    channel_mults: tuple[int, ...] = (1, 2, 2)  # one level each, halving the resolution between levels
    blocks_per_level: int = 1
    attention_resolutions: tuple[int, ...] = (8,)  # feature-map sizes with self-attention
    cross_attention: bool = False  # per-object label tokens, at the attention resolutions
    heads: int = 4
    dropout: float = 0.0
    patch_size: int = 2  # space-to-depth factor of the stem: 1 (full resolution), 2 or 4
    interval_embedding: bool = False  # few-step models: the jump's length in steps enters beside t (condgen.fewstep)

    def __post_init__(self):
        require_positive(
            "model",
            image_size=self.image_size,
            in_channels=self.in_channels,
            num_labels=self.num_labels,
            channels=self.channels,
            channel_mults=tuple(self.channel_mults),
            blocks_per_level=self.blocks_per_level,
            heads=self.heads,
        )
        smallest = self.patch_size * 2 ** (len(self.channel_mults) - 1)  # the stem, then one halving per level
        if self.patch_size < 1 or self.image_size % smallest:
            raise CondgenError(
                f"model.patch_size: {self.image_size}-pixel images do not fold into patches of {self.patch_size} "
                f"and {len(self.channel_mults)} levels (image_size must be a multiple of {smallest})"
            )
        uneven = [width for width in self.attention_widths() if width % self.heads]
        if uneven:  # each head attends over width / heads channels (condgen.nn.blocks.Attention)
            raise CondgenError(
                f"model.heads: {self.heads} does not divide the {uneven[0]} channels of an attention layer "
                "(model.channels x model.channel_mults)"
            )
        if not 0 <= self.dropout < 1:  # also refuses nan
            raise CondgenError(f"model.dropout: {self.dropout} is not in [0, 1)")

    def attention_widths(self) -> list[int]:
        """The channel widths of the attention layers: the levels whose feature size is among
        ``attention_resolutions``, and the middle, which always attends."""
        size = self.image_size // self.patch_size  # at the first level, halved at each next one
        levels = enumerate(self.channel_mults)
        widths = [self.channels * mult for level, mult in levels if size // 2**level in self.attention_resolutions]
        return [*widths, self.channels * self.channel_mults[-1]]


class UNet(nn.Module):
    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = config
        c = config.channels
        emb_dim = 4 * c
        self.time_mlp = nn.Sequential(nn.Linear(c, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.label_emb = nn.Linear(config.num_labels, emb_dim, bias=False)  # zero vector -> zero embedding
        self.label_tokens = LabelTokens(config.num_labels, emb_dim) if config.cross_attention else None
        self.interval_mlp = None
        if config.interval_embedding:
            self.interval_mlp = nn.Sequential(nn.Linear(c, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
            # zero at the start: a student initialised from a diffusion model first predicts what that model does
            nn.init.zeros_(self.interval_mlp[-1].weight)
            nn.init.zeros_(self.interval_mlp[-1].bias)
        p = config.patch_size
        self.stem = nn.Conv2d(config.in_channels * p * p, c, 3, padding=1)
        self.down, skips, channels, size = self._down_path(emb_dim)
        self.middle = nn.ModuleList(
            [
                ResBlock(channels, channels, emb_dim, config.dropout),
                self._attention(channels, emb_dim),
                ResBlock(channels, channels, emb_dim, config.dropout),
            ]
        )
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(config.channel_mults))):
            for i in range(config.blocks_per_level + 1):
                self.up.append(self._level_block(channels + skips.pop(), mult * c, size, emb_dim))
                channels = mult * c
                if level > 0 and i == config.blocks_per_level:
                    self.up.append(Upsample(channels))
                    size *= 2
        self.head = nn.Sequential(
            group_norm(channels), nn.SiLU(), nn.Conv2d(channels, config.in_channels * p * p, 3, padding=1)
        )
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def _down_path(self, emb_dim: int) -> tuple[nn.ModuleList, list[int], int, int]:
        """The encoder levels; returns them with the skip widths, the final width and the final feature size."""
        config, c = self.config, self.config.channels
        down = nn.ModuleList()
        skips = [c]
        size, channels = config.image_size // config.patch_size, c
        for level, mult in enumerate(config.channel_mults):
            for _ in range(config.blocks_per_level):
                down.append(self._level_block(channels, mult * c, size, emb_dim))
                channels = mult * c
                skips.append(channels)
            if level < len(config.channel_mults) - 1:
                down.append(Downsample(channels))
                size //= 2
                skips.append(channels)
        return down, skips, channels, size

    def embed(
        self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None, interval: torch.Tensor | None = None
    ):
        """The shared front: conditioning embedding, label tokens (or None) and the stem's features."""
        emb = self.time_mlp(timestep_embedding(t, self.config.channels))
        if self.interval_mlp is not None:
            if interval is None:
                raise ValueError("a model with model.interval_embedding needs the interval of each jump")
            emb = emb + self.interval_mlp(timestep_embedding(interval, self.config.channels))
        if self.label_emb is not None:
            emb = emb + self.label_emb(labels)
        context = self.label_tokens(labels) if self.label_tokens is not None else None
        h = F.pixel_unshuffle(x, self.config.patch_size) if self.config.patch_size > 1 else x
        return emb, context, self.stem(h)

    def _attention(self, channels: int, emb_dim: int) -> nn.Module:
        cross = Attention(channels, self.config.heads, context_dim=emb_dim) if self.config.cross_attention else None
        return AttentionBlock(Attention(channels, self.config.heads), cross)

    def _level_block(self, in_channels: int, out_channels: int, size: int, emb_dim: int) -> nn.Module:
        res = ResBlock(in_channels, out_channels, emb_dim, self.config.dropout)
        if size not in self.config.attention_resolutions:
            return res
        return nn.ModuleList([res, self._attention(out_channels, emb_dim)])

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor, interval: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x (B, 3, 64, 64), t (B,) integer steps, labels (B, num_labels) multi-hot -> (B, 3, 64, 64). A few-step
        model (``interval_embedding``) also takes ``interval`` (B,): how many steps its prediction jumps."""
        emb, context, h = self.embed(x, t, labels, interval)
        skips = [h]
        for block in self.down:
            h = _apply(block, h, emb, context)
            skips.append(h)
        for block in self.middle:
            h = _apply(block, h, emb, context)
        for block in self.up:
            if isinstance(block, Upsample):
                h = block(h)
            else:
                h = _apply(block, torch.cat([h, skips.pop()], dim=1), emb, context)
        h = self.head(h)
        return F.pixel_shuffle(h, self.config.patch_size) if self.config.patch_size > 1 else h


class NoisyClassifier(UNet):
    """A multi-label classifier of noisy images x_t for classifier guidance (Dhariwal & Nichol 2021, section 4):
    the UNet's encoder and middle, then GroupNorm-SiLU-average pool-Linear to one logit per object. It sees the
    time step but never the labels (its ``labels`` argument is ignored, for the common calling convention)."""

    def __init__(self, config: UNetConfig):
        nn.Module.__init__(self)
        self.config = dataclasses.replace(config, cross_attention=False, interval_embedding=False)
        c = config.channels
        emb_dim = 4 * c
        self.time_mlp = nn.Sequential(nn.Linear(c, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.label_emb = None  # a classifier must not see the answer
        self.label_tokens = None
        self.interval_mlp = None
        self.stem = nn.Conv2d(config.in_channels * config.patch_size**2, c, 3, padding=1)
        self.down, _, channels, _ = self._down_path(emb_dim)
        self.middle = nn.ModuleList([ResBlock(channels, channels, emb_dim), self._attention(channels, emb_dim)])
        self.head = nn.Sequential(
            group_norm(channels),
            nn.SiLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(channels, config.num_labels),
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        emb, _, h = self.embed(x, t, None)
        for block in [*self.down, *self.middle]:
            h = _apply(block, h, emb, None)
        return self.head(h)


class AttentionBlock(nn.Module):
    def __init__(self, self_attention: Attention, cross_attention: Attention | None):
        super().__init__()
        self.self_attention = self_attention
        self.cross_attention = cross_attention

    def forward(self, x: torch.Tensor, context: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        x = self.self_attention(x)
        if self.cross_attention is not None and context is not None:
            x = self.cross_attention(x, *context)
        return x


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


def _apply(block: nn.Module, h: torch.Tensor, emb: torch.Tensor, context) -> torch.Tensor:
    if isinstance(block, ResBlock):
        return block(h, emb)
    if isinstance(block, AttentionBlock):
        return block(h, context)
    if isinstance(block, nn.ModuleList):  # a residual block followed by attention
        return block[1](block[0](h, emb), context)
    return block(h)
