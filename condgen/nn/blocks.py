"""Reusable blocks: sinusoidal time embedding, label embeddings, residual blocks, self- and cross-attention."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Transformer sinusoidal embedding of (B,) timesteps -> (B, dim) (Vaswani et al. 2017, section 3.5)."""
    half = dim // 2
    frequencies = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[:, None] * frequencies[None]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(32, channels // 4), channels)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-Conv twice, with the embedding applied as a per-channel scale and shift (FiLM) in between
    (Dhariwal & Nichol 2021, "adaptive group normalisation")."""

    def __init__(self, in_channels: int, out_channels: int, emb_dim: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * out_channels)
        self.norm2 = group_norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class ConvResBlock(nn.Module):
    """GroupNorm-SiLU-Conv twice plus a skip, with no conditioning: the autoencoders' building block."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.body = nn.Sequential(
            group_norm(in_channels),
            nn.SiLU(),
            nn.Conv2d(in_channels, out_channels, 3, padding=1),
            group_norm(out_channels),
            nn.SiLU(),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
        )
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.body(x)


class Attention(nn.Module):
    """Multi-head attention of image positions over themselves (self) or over a token sequence (cross)."""

    def __init__(self, channels: int, heads: int, context_dim: int | None = None):
        super().__init__()
        self.heads = heads
        self.norm = group_norm(channels)
        self.q = nn.Linear(channels, channels)
        self.kv = nn.Linear(context_dim or channels, 2 * channels)
        self.out = nn.Linear(channels, channels)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None, context_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        b, c, height, width = x.shape
        h = self.norm(x).flatten(2).transpose(1, 2)  # (B, HW, C)
        source = h if context is None else context
        q = self.q(h)
        k, v = self.kv(source).chunk(2, dim=-1)

        def split(z: torch.Tensor) -> torch.Tensor:
            return z.view(b, -1, self.heads, c // self.heads).transpose(1, 2)

        mask = None if context_mask is None else context_mask[:, None, None, :]
        attended = F.scaled_dot_product_attention(split(q), split(k), split(v), attn_mask=mask)
        attended = attended.transpose(1, 2).reshape(b, height * width, c)
        return x + self.out(attended).transpose(1, 2).reshape(b, c, height, width)


class LabelTokens(nn.Module):
    """Per-object tokens for cross-attention: one learned vector per requested object, plus an always-present
    "null" token so that an empty request (the zero vector) still has something to attend to."""

    def __init__(self, num_labels: int, dim: int):
        super().__init__()
        self.tokens = nn.Parameter(torch.randn(num_labels + 1, dim) * 0.02)

    def forward(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C) multi-hot -> tokens (B, C + 1, dim) and a mask (B, C + 1) that is True where a token is present."""
        present = torch.cat([torch.ones_like(labels[:, :1]), labels], dim=1) > 0.5
        tokens = self.tokens[None].expand(len(labels), -1, -1)
        return tokens, present
