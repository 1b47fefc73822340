"""Conditional generators and discriminators for 64x64 images, DCGAN-style, residual, or residual at 16x16 and 8x8
folded to and from 64x64 by pixel shuffle (``s2d``, sized for a CPU).

The generator takes noise and the multi-hot label vector (embedded by a Linear and concatenated with the noise;
optionally also modulating every batch norm). The discriminator is conditioned by projection (Miyato & Koyama
2018: <embed(y), phi(x)> added to the unconditional score), carries an auxiliary multi-label head (ACGAN), or reads
the labels as constant input planes beside the image (Mirza & Osindero 2014).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm

from condgen.errors import require_positive
from condgen.gan.options import Architecture, Conditioning, choose


@dataclass
class GANModelConfig:
    architecture: Architecture = Architecture.RESNET
    noise_dim: int = 128
    num_labels: int = 24
    label_dim: int = 128  # width of the generator's label embedding
    g_channels: int = 64
    d_channels: int = 64
    conditional_bn: bool = False  # generator: labels also set every batch norm's scale and shift
    conditioning: Conditioning = Conditioning.PROJECTION  # how the discriminator reads the labels
    spectral_norm: bool = False  # on every discriminator layer
    # discriminator batch norm; never together with a gradient penalty (it couples the samples of a batch). In s2d
    # it has no learned scale and shift, which weight clipping would clamp to c (see FoldDiscriminator)
    d_batch_norm: bool = False
    g_blocks: int = 2  # s2d: generator residual blocks at 16x16 (one more runs at 8x8 before them)
    d_blocks: int = 1  # s2d: discriminator residual blocks at 16x16 before the two that halve to 8x8 and 4x4
    latent_channels: int = 0  # s2d: > 0 = the nets make and read 16x16 latents of this many channels, not images

    def __post_init__(self) -> None:
        self.choose_options()
        require_positive(
            "model",
            noise_dim=self.noise_dim,
            num_labels=self.num_labels,
            label_dim=self.label_dim,
            g_channels=self.g_channels,
            d_channels=self.d_channels,
        )

    def choose_options(self) -> None:
        """The options given by name (in Python, or assigned after construction) as their Enum members; an unknown
        name raises a CondgenError naming the key."""
        self.architecture = choose(Architecture, self.architecture, "model.architecture")
        self.conditioning = choose(Conditioning, self.conditioning, "model.conditioning")

    @property
    def auxiliary_head(self) -> bool:
        """Whether the discriminator has ACGAN's auxiliary head, which best-of-K sampling ranks candidates by."""
        return self.conditioning in (Conditioning.AUXILIARY, Conditioning.BOTH)

    @property
    def projection(self) -> bool:
        """Whether the discriminator adds the projection term <V y, phi(x)> (Miyato & Koyama 2018) to its score."""
        return self.conditioning in (Conditioning.PROJECTION, Conditioning.BOTH)

    @property
    def input_labels(self) -> int:
        """Label planes the discriminator's first layer reads beside the image (0 unless conditioning = input)."""
        return self.num_labels if self.conditioning == Conditioning.INPUT else 0


class ConditionalBatchNorm(nn.Module):
    """Batch norm whose scale and shift come from the label embedding (de Vries et al. 2017), or plain BN (with a
    learned scale and shift unless ``affine`` is false)."""

    def __init__(self, channels: int, label_dim: int | None, affine: bool = True):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, affine=affine and label_dim is None)
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
        residual = config.architecture == Architecture.RESNET
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


class ConditionedCritic(nn.Module):
    """What every discriminator shares once its ``features`` give phi(x): score = w . phi + [projection] <V y, phi>
    (Miyato & Koyama 2018), and optionally auxiliary logits A phi for every object (ACGAN)."""

    def add_heads(self, width: int, config: GANModelConfig, wrap) -> None:
        """The score, projection and auxiliary layers on ``width``-wide features, as ``config.conditioning`` asks."""
        self.score = wrap(nn.Linear(width, 1))
        self.projection = wrap(nn.Linear(config.num_labels, width, bias=False)) if config.projection else None
        self.auxiliary = wrap(nn.Linear(width, config.num_labels)) if config.auxiliary_head else None

    def features(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def with_label_planes(self, h: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``h`` with the multi-hot labels appended as constant planes when ``conditioning`` is input: a first layer
        that sees both can relate the objects it finds to the requested ones, under any Lipschitz constraint."""
        if not self.config.input_labels:
            return h
        planes = labels.to(h.dtype)[:, :, None, None].expand(-1, -1, *h.shape[2:])
        return torch.cat([h, planes], dim=1)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Returns the adversarial score (B,) and the auxiliary logits (B, num_labels) or None."""
        phi = self.features(x, labels)
        score = self.score(phi).squeeze(1)
        if self.projection is not None:
            score = score + (self.projection(labels) * phi).sum(dim=1)
        return score, (self.auxiliary(phi) if self.auxiliary is not None else None)


class Discriminator(ConditionedCritic):
    """x -> features phi(x) through four halving layers; score = w . phi + [projection] <V y, phi>; optionally
    auxiliary logits A phi for every object."""

    def __init__(self, config: GANModelConfig):
        super().__init__()
        self.config = config
        c = config.d_channels
        widths = [3 + config.input_labels, c, 2 * c, 4 * c, 8 * c]
        wrap = spectral_norm if config.spectral_norm else (lambda m: m)
        self.layers = nn.ModuleList()
        self.norms = nn.ModuleList()
        for i, (a, b) in enumerate(zip(widths, widths[1:])):
            if config.architecture == Architecture.RESNET:
                self.layers.append(DiscriminatorBlock(a, b, wrap, first=i == 0))
            else:
                self.layers.append(wrap(nn.Conv2d(a, b, 4, stride=2, padding=1)))
            use_norm = config.d_batch_norm and i > 0
            self.norms.append(nn.BatchNorm2d(b) if use_norm else nn.Identity())
        self.add_heads(8 * c, config, wrap)

    def features(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        h = self.with_label_planes(x, labels)
        for layer, norm in zip(self.layers, self.norms):
            h = norm(layer(h))
            if self.config.architecture == Architecture.DCGAN:
                h = F.leaky_relu(h, 0.2)
        if self.config.architecture == Architecture.RESNET:
            h = F.relu(h)
        return h.sum(dim=(2, 3))  # global sum pooling, as in the projection discriminator


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


class ResidualBlock(nn.Module):
    """Pre-activation residual block (He et al. 2016) at one resolution, or doubling it first by nearest upsampling,
    or halving it by average pooling between its two convolutions (the second conv and the 1x1 shortcut then run
    at the lower resolution, a quarter of the cost); (conditional) batch norm for a generator, spectral norm
    through ``wrap`` and optionally batch norm without scale and shift (``norm_affine`` false) for a
    discriminator."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        label_dim: int | None = None,
        norm: bool = True,
        upsample: bool = False,
        downsample: bool = False,
        wrap=lambda m: m,
        norm_affine: bool = True,
    ):
        super().__init__()
        self.upsample, self.downsample, self.use_norm = upsample, downsample, norm
        self.norm1 = ConditionalBatchNorm(in_channels, label_dim, norm_affine) if norm else None
        self.conv1 = wrap(nn.Conv2d(in_channels, out_channels, 3, padding=1))
        self.norm2 = ConditionalBatchNorm(out_channels, label_dim, norm_affine) if norm else None
        self.conv2 = wrap(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        changes = in_channels != out_channels or upsample or downsample
        self.skip = wrap(nn.Conv2d(in_channels, out_channels, 1)) if changes else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        h = F.relu(self.norm1(x, emb) if self.use_norm else x)
        skip = x
        if self.upsample:
            h, skip = F.interpolate(h, scale_factor=2), F.interpolate(skip, scale_factor=2)
        h = self.conv1(h)
        if self.downsample:
            h, skip = F.avg_pool2d(h, 2), F.avg_pool2d(skip, 2)
        h = self.conv2(F.relu(self.norm2(h, emb) if self.use_norm else h))
        return h + self.skip(skip)


class FoldGenerator(nn.Module):
    """(z, y) -> 64x64 image with the compute at 8x8 and 16x16: an 8x8 seed map of 2c channels, one residual block
    there, nearest upsampling to 16x16, ``g_blocks`` residual blocks of c channels, then BN-ReLU-conv to 48 channels
    folded into 3x64x64 by pixel shuffle (Shi et al. 2016, sub-pixel convolution with r = 4) and tanh.

    With ``latent_channels`` the last conv makes a 16x16 latent of that many channels instead, unbounded (scaled
    autoencoder latents are not confined to [-1, 1])."""

    def __init__(self, config: GANModelConfig):
        super().__init__()
        self.config = config
        c = config.g_channels
        label_dim = config.label_dim if config.conditional_bn else None
        self.label_emb = nn.Linear(config.num_labels, config.label_dim)
        self.seed = nn.Linear(config.noise_dim + config.label_dim, 2 * c * 64)
        blocks = [ResidualBlock(2 * c, 2 * c, label_dim), ResidualBlock(2 * c, c, label_dim, upsample=True)]
        blocks += [ResidualBlock(c, c, label_dim) for _ in range(config.g_blocks - 1)]
        self.blocks = nn.ModuleList(blocks)
        self.out_norm = nn.BatchNorm2d(c)
        self.out = nn.Conv2d(c, config.latent_channels or 3 * 16, 3, padding=1)

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        emb = self.label_emb(labels)
        h = self.seed(torch.cat([z, emb], dim=1)).view(len(z), -1, 8, 8)
        for block in self.blocks:
            h = block(h, emb)
        out = self.out(F.relu(self.out_norm(h)))
        return out if self.config.latent_channels else torch.tanh(F.pixel_shuffle(out, 4))


class FoldDiscriminator(ConditionedCritic):
    """x -> phi(x) with a 4x4 space-to-depth stem (pixel unshuffle: 3x64x64 -> 48x16x16) and a 3x3 conv, ``d_blocks``
    residual blocks at 16x16, then residual blocks halving to 8x8 (2c) and 4x4 (4c), ReLU and global sum pooling;
    the score, projection term and auxiliary head are those of :class:`Discriminator`. With ``latent_channels`` it
    reads 16x16 latents as they are, without the stem's unfolding.

    ``d_batch_norm`` normalises the input of both convolutions of every block, without a learned scale and shift.
    Under weight clipping that is what lets the residual branches count: each clamped convolution shrinks its input
    (gain about c * sqrt(fan-in) ~ 0.17 at c = 0.01), so without a norm, or with a norm whose scale is clamped to c
    too, every branch adds a vanishing term to its identity shortcut and the critic stays close to linear. The WGAN
    paper's critic (Arjovsky et al. 2017) normalises every layer for the same reason."""

    def __init__(self, config: GANModelConfig):
        super().__init__()
        self.config = config
        c = config.d_channels
        wrap = spectral_norm if config.spectral_norm else (lambda m: m)
        self.stem = wrap(nn.Conv2d((config.latent_channels or 3 * 16) + config.input_labels, c, 3, padding=1))
        norm = dict(norm=config.d_batch_norm, norm_affine=False, wrap=wrap)
        blocks = [ResidualBlock(c, c, **norm) for _ in range(config.d_blocks)]
        blocks += [
            ResidualBlock(c, 2 * c, downsample=True, **norm),
            ResidualBlock(2 * c, 4 * c, downsample=True, **norm),
        ]
        self.blocks = nn.Sequential(*blocks)
        self.add_heads(4 * c, config, wrap)

    def features(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        h = x if self.config.latent_channels else F.pixel_unshuffle(x, 4)
        h = self.blocks(self.stem(self.with_label_planes(h, labels)))
        return F.relu(h).sum(dim=(2, 3))


def build_generator(config: GANModelConfig) -> Generator | FoldGenerator:
    """The generator that ``config.architecture`` names."""
    return FoldGenerator(config) if config.architecture == Architecture.S2D else Generator(config)


def build_discriminator(config: GANModelConfig) -> Discriminator | FoldDiscriminator:
    """The discriminator that ``config.architecture`` names."""
    return FoldDiscriminator(config) if config.architecture == Architecture.S2D else Discriminator(config)
