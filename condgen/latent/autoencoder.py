"""Autoencoders that compress 64x64x3 images to a small latent for latent diffusion (Rombach et al. 2022).

Two regularisers of the same encoder/decoder:

* ``vq = False``: a KL-regularised VAE (Kingma & Welling 2014). The encoder outputs a diagonal Gaussian; diffusion
  sees its mean.
* ``vq = True``: a VQ-VAE (van den Oord et al. 2017). The encoder's output is snapped to the nearest of K codebook
  vectors. As in Rombach et al. (section 3), diffusion sees the encoder output before quantisation and the
  quantiser is part of decoding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from condgen.errors import require_positive
from condgen.nn.blocks import ConvResBlock, group_norm


@dataclass
class AutoencoderConfig:
    image_size: int = 64
    in_channels: int = 3
    channels: int = 32  # width of the first level
    channel_mults: tuple[int, ...] = (1, 2, 2)  # one level each; the resolution halves between levels
    latent_channels: int = 4
    vq: bool = False  # set by the command: `train vae` or `train vqvae`
    codebook_size: int = 256
    codebook_ema: bool = True  # EMA codebook updates (van den Oord et al. appendix A.1); else a codebook loss
    codebook_decay: float = 0.99
    commitment: float = 0.25  # beta of the commitment loss
    dead_code_threshold: float = 0.5  # codes picked by fewer vectors per batch than this (EMA) are restarted

    def __post_init__(self):
        require_positive(
            "model",
            image_size=self.image_size,
            in_channels=self.in_channels,
            channels=self.channels,
            channel_mults=tuple(self.channel_mults),
            latent_channels=self.latent_channels,
            codebook_size=self.codebook_size,
        )

    @property
    def latent_size(self) -> int:
        return self.image_size // 2 ** (len(self.channel_mults) - 1)


class Encoder(nn.Module):
    def __init__(self, config: AutoencoderConfig, out_channels: int):
        super().__init__()
        widths = [config.channels * m for m in config.channel_mults]
        layers: list[nn.Module] = [nn.Conv2d(config.in_channels, widths[0], 3, padding=1)]
        previous = widths[0]
        for level, width in enumerate(widths):
            layers.append(ConvResBlock(previous, width))
            previous = width
            if level < len(widths) - 1:
                layers.append(nn.Conv2d(width, width, 3, stride=2, padding=1))
        layers += [ConvResBlock(previous, previous), group_norm(previous), nn.SiLU()]
        layers.append(nn.Conv2d(previous, out_channels, 3, padding=1))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class Decoder(nn.Module):
    def __init__(self, config: AutoencoderConfig):
        super().__init__()
        widths = [config.channels * m for m in reversed(config.channel_mults)]
        layers: list[nn.Module] = [nn.Conv2d(config.latent_channels, widths[0], 3, padding=1)]
        layers.append(ConvResBlock(widths[0], widths[0]))
        for level, width in enumerate(widths):
            layers.append(ConvResBlock(width, width))
            if level < len(widths) - 1:  # the upsampling conv already narrows to the next level's width
                layers += [
                    nn.Upsample(scale_factor=2, mode="nearest"),
                    nn.Conv2d(width, widths[level + 1], 3, padding=1),
                ]
        layers += [group_norm(widths[-1]), nn.SiLU(), nn.Conv2d(widths[-1], config.in_channels, 3, padding=1)]
        self.layers = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.layers(z)


class VectorQuantizer(nn.Module):
    """Nearest-neighbour quantisation to a codebook of K vectors with the straight-through gradient
    (van den Oord et al. 2017, eq. 3): the decoder's gradient is copied to the encoder output unchanged.

    The codebook follows the vectors assigned to it either by exponential moving averages of their counts and sums
    (appendix A.1) or by the codebook loss ||sg[z_e] - e||^2; either way the encoder pays the commitment loss
    beta * ||z_e - sg[e]||^2. Codes that fall out of use are restarted on random encoder outputs of the current
    batch (Dhariwal et al. 2020, Jukebox), so the codebook does not collapse to a few entries."""

    def __init__(self, config: AutoencoderConfig):
        super().__init__()
        self.config = config
        k, d = config.codebook_size, config.latent_channels
        codebook = torch.randn(k, d)
        if config.codebook_ema:
            self.register_buffer("codebook", codebook)
            self.register_buffer("cluster_size", torch.ones(k))
            self.register_buffer("code_sum", codebook.clone())
        else:
            self.codebook = nn.Parameter(codebook)
            self.register_buffer("cluster_size", torch.ones(k))  # usage EMA, for the dead-code restart

    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code for each row of ``flat`` (N, D)."""
        distances = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ self.codebook.t() + self.codebook.pow(2).sum(1)
        return distances.argmin(dim=1)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """z (B, D, H, W) -> (quantised z with the straight-through gradient, loss, code indices (B, H, W))."""
        b, d, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)
        index = self.nearest(flat.detach())
        if self.training:
            self._update(flat.detach(), index)
        quantised = self.codebook[index]
        loss = self.config.commitment * F.mse_loss(flat, quantised.detach())
        if not self.config.codebook_ema:
            loss = loss + F.mse_loss(quantised, flat.detach())
        straight_through = flat + (quantised - flat).detach()
        return straight_through.view(b, h, w, d).permute(0, 3, 1, 2), loss, index.view(b, h, w)

    @torch.no_grad()
    def _update(self, flat: torch.Tensor, index: torch.Tensor) -> None:
        decay = self.config.codebook_decay
        counts = torch.bincount(index, minlength=self.config.codebook_size).to(flat.dtype)
        self.cluster_size.mul_(decay).add_(counts, alpha=1 - decay)
        if self.config.codebook_ema:
            sums = torch.zeros_like(self.code_sum).index_add_(0, index, flat)
            self.code_sum.mul_(decay).add_(sums, alpha=1 - decay)
            n = self.cluster_size.sum()
            smoothed = (self.cluster_size + 1e-5) / (n + self.config.codebook_size * 1e-5) * n  # Laplace smoothing
            self.codebook.copy_(self.code_sum / smoothed[:, None])
        self.restart_dead_codes(flat)

    @torch.no_grad()
    def restart_dead_codes(self, flat: torch.Tensor) -> int:
        """Moves every code whose usage EMA is below the threshold onto a random row of ``flat``; returns how many."""
        dead = torch.nonzero(self.cluster_size < self.config.dead_code_threshold).squeeze(1)
        if len(dead) == 0:
            return 0
        picks = flat[torch.randint(0, len(flat), (len(dead),), device=flat.device)]
        self.codebook.data[dead] = picks
        self.cluster_size[dead] = 1.0
        if self.config.codebook_ema:
            self.code_sum[dead] = picks
        return len(dead)


class Autoencoder(nn.Module):
    """Encoder, regulariser (diagonal Gaussian or vector quantiser) and decoder."""

    def __init__(self, config: AutoencoderConfig):
        super().__init__()
        self.config = config
        z = config.latent_channels
        self.encoder = Encoder(config, z if config.vq else 2 * z)
        self.quantizer = VectorQuantizer(config) if config.vq else None
        self.decoder = Decoder(config)

    def latent(self, x: torch.Tensor) -> torch.Tensor:
        """What latent diffusion models: the posterior mean (VAE) or the unquantised encoder output (VQ-VAE)."""
        h = self.encoder(x)
        return h if self.quantizer is not None else h.chunk(2, dim=1)[0]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """A latent (quantised first for a VQ-VAE) -> an image, roughly in [-1, 1]."""
        if self.quantizer is not None:
            z = self.quantizer(z)[0]
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """x -> (reconstruction, regulariser loss, code indices or None). In training the VAE decodes a sample
        z = mu + sigma * eps (the reparameterisation trick, Kingma & Welling 2014, eq. 10); in eval, the mean."""
        h = self.encoder(x)
        if self.quantizer is not None:
            z, loss, index = self.quantizer(h)
            return self.decoder(z), loss, index
        mean, log_var = h.chunk(2, dim=1)
        log_var = log_var.clamp(-30.0, 20.0)
        z = mean + torch.exp(0.5 * log_var) * torch.randn_like(mean) if self.training else mean
        return self.decoder(z), kl_divergence(mean, log_var), None


def kl_divergence(mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(log_var)) || N(0, I)) per latent element, averaged (Kingma & Welling 2014, appendix B)."""
    return 0.5 * (mean.pow(2) + log_var.exp() - 1.0 - log_var).mean()


class PatchDiscriminator(nn.Module):
    """A PatchGAN critic (Isola et al. 2017) for the optional adversarial loss on reconstructions (Esser et al.
    2021, VQGAN): one real/fake logit per overlapping patch."""

    def __init__(self, in_channels: int = 3, channels: int = 32):
        super().__init__()
        c = channels
        self.layers = nn.Sequential(
            nn.Conv2d(in_channels, c, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(c, 2 * c, 4, stride=2, padding=1),
            group_norm(2 * c),
            nn.LeakyReLU(0.2),
            nn.Conv2d(2 * c, 4 * c, 4, padding=1),
            group_norm(4 * c),
            nn.LeakyReLU(0.2),
            nn.Conv2d(4 * c, 1, 4, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
