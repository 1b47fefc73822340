"""Conditional generators and discriminators for 64x64 images, DCGAN-style or residual.

The generator takes noise and the multi-hot label vector (embedded by a Linear and concatenated with the noise;
optionally also modulating every batch norm). The discriminator is conditioned by projection (Miyato & Koyama
2018: <embed(y), phi(x)> added to the unconditional score) or carries an auxiliary multi-label head (ACGAN).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm


@dataclass
class GANModelConfig:
    architecture: str = "resnet"  # dcgan | resnet
    noise_dim: int = 128
    num_labels: int = 24
    label_dim: int = 128  # width of the generator's label embedding
    g_channels: int = 64
    d_channels: int = 64
    conditional_bn: bool = False  # generator: labels also set every batch norm's scale and shift
    conditioning: str = "projection"  # discriminator: projection | auxiliary
    spectral_norm: bool = False  # on every discriminator layer
    d_batch_norm: bool = False  # never together with a gradient penalty (it couples the samples of a batch)


class ConditionalBatchNorm(nn.Module):
    """Batch norm whose scale and shift come from the label embedding (de Vries et al. 2017), or plain BN."""

    def __init__(self, channels: int, label_dim: int | None):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, affine=label_dim is None)
        self.affine = nn.Linear(label_dim, 2 * channels) if label_dim else None
        if self.affine is not None:
            nn.init.zeros_(self.affine.weight)
            nn.init.zeros_(self.affine.bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        if self.affine is None:
            return x
        scale, shift = self.affine(emb)[:, :, None, None].chunk(2, dim=1)
        return x * (1 + scale) + shift


class GeneratorBlock(nn.Module):
    """Doubles the resolution: DCGAN's transposed convolution, or a residual up block (Miyato et al. 2018)."""

    def __init__(self, in_channels: int, out_channels: int, residual: bool, label_dim: int | None):
        super().__init__()
        self.residual = residual
        self.norm1 = ConditionalBatchNorm(in_channels, label_dim)
        if residual:
            self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
            self.norm2 = ConditionalBatchNorm(out_channels, label_dim)
            self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
            self.skip = nn.Conv2d(in_channels, out_channels, 1)
        else:
            self.conv1 = nn.ConvTranspose2d(in_channels, out_channels, 4, stride=2, padding=1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if not self.residual:
            return self.conv1(F.relu(self.norm1(x, emb)))
        h = F.interpolate(F.relu(self.norm1(x, emb)), scale_factor=2)
        h = self.conv2(F.relu(self.norm2(self.conv1(h), emb)))
        return h + self.skip(F.interpolate(x, scale_factor=2))


class Generator(nn.Module):
    """(z, y) -> image in [-1, 1]: a 4x4 seed map, four doubling blocks to 64x64, then BN-ReLU-conv-tanh."""

    def __init__(self, config: GANModelConfig):
        super().__init__()
        self.config = config
        c = config.g_channels
        self.widths = [8 * c, 8 * c, 4 * c, 2 * c, c]
        self.label_emb = nn.Linear(config.num_labels, config.label_dim)
        self.seed = nn.Linear(config.noise_dim + config.label_dim, self.widths[0] * 16)
        label_dim = config.label_dim if config.conditional_bn else None
        residual = config.architecture == "resnet"
        self.blocks = nn.ModuleList(
            GeneratorBlock(a, b, residual, label_dim) for a, b in zip(self.widths, self.widths[1:])
        )
        self.out_norm = nn.BatchNorm2d(c)
        self.out = nn.Conv2d(c, 3, 3, padding=1)

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        emb = self.label_emb(labels)
        h = self.seed(torch.cat([z, emb], dim=1)).view(len(z), self.widths[0], 4, 4)
        for block in self.blocks:
            h = block(h, emb)
        return torch.tanh(self.out(F.relu(self.out_norm(h))))


class Discriminator(nn.Module):
    """x -> features phi(x) through four halving layers; score = w . phi + [projection] <V y, phi>; optionally
    auxiliary logits A phi for every object."""

    def __init__(self, config: GANModelConfig):
        super().__init__()
        self.config = config
        c = config.d_channels
        widths = [3, c, 2 * c, 4 * c, 8 * c]
        wrap = spectral_norm if config.spectral_norm else (lambda m: m)
        self.layers = nn.ModuleList()
        self.norms = nn.ModuleList()
        for i, (a, b) in enumerate(zip(widths, widths[1:])):
            if config.architecture == "resnet":
                self.layers.append(DiscriminatorBlock(a, b, wrap, first=i == 0))
            else:
                self.layers.append(wrap(nn.Conv2d(a, b, 4, stride=2, padding=1)))
            use_norm = config.d_batch_norm and i > 0
            self.norms.append(nn.BatchNorm2d(b) if use_norm else nn.Identity())
        self.score = wrap(nn.Linear(8 * c, 1))
        self.projection = (
            wrap(nn.Linear(config.num_labels, 8 * c, bias=False)) if config.conditioning == "projection" else None
        )
        self.auxiliary = wrap(nn.Linear(8 * c, config.num_labels)) if config.conditioning == "auxiliary" else None

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for layer, norm in zip(self.layers, self.norms):
            h = norm(layer(h))
            if self.config.architecture == "dcgan":
                h = F.leaky_relu(h, 0.2)
        if self.config.architecture == "resnet":
            h = F.relu(h)
        return h.sum(dim=(2, 3))  # global sum pooling, as in the projection discriminator

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Returns the adversarial score (B,) and the auxiliary logits (B, num_labels) or None."""
        phi = self.features(x)
        score = self.score(phi).squeeze(1)
        if self.projection is not None:
            score = score + (self.projection(labels) * phi).sum(dim=1)
        return score, (self.auxiliary(phi) if self.auxiliary is not None else None)


class DiscriminatorBlock(nn.Module):
    """Residual down block: (ReLU)-conv-ReLU-conv-avgpool plus a 1x1-conv-avgpool shortcut."""

    def __init__(self, in_channels: int, out_channels: int, wrap, first: bool):
        super().__init__()
        self.first = first
        self.conv1 = wrap(nn.Conv2d(in_channels, out_channels, 3, padding=1))
        self.conv2 = wrap(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip = wrap(nn.Conv2d(in_channels, out_channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x if self.first else F.relu(x)
        h = F.avg_pool2d(self.conv2(F.relu(self.conv1(h))), 2)
        return h + F.avg_pool2d(self.skip(x), 2)
