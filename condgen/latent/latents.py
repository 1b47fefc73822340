"""A dataset as a frozen autoencoder's latents, and back: what every latent-space generator (latent diffusion, the
latent GAN) shares. Latents are multiplied by a scale factor computed from the data so that they have unit variance
(Rombach et al. 2022, section 4.3.2 and appendix G)."""

from __future__ import annotations

import torch

from condgen.data.imageio import to_signed
from condgen.latent.autoencoder import Autoencoder
from condgen.progress import progress_bar


@torch.no_grad()
def encode_images(autoencoder: Autoencoder, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """uint8 images (N, 3, S, S) -> latents (N, 2, C, s, s) of each image and of its mirror image, on the CPU."""
    device = next(autoencoder.parameters()).device
    out = []
    with progress_bar(total=len(images), desc="encoding", unit="img") as bar:
        for start in range(0, len(images), batch_size):
            x = to_signed(images[start : start + batch_size]).to(device)
            out.append(torch.stack([autoencoder.latent(x), autoencoder.latent(x.flip(-1))], dim=1).cpu())
            bar.update(len(x))
    return torch.cat(out)


def scaled_latents(autoencoder: Autoencoder, images: torch.Tensor, scale_factor: float) -> tuple[torch.Tensor, float]:
    """:func:`encode_images` times ``scale_factor``, and the factor; a factor of 0 asks for the one that gives the
    latents unit standard deviation (rounded, so that config.yaml shows it whole), as a new run does."""
    latents = encode_images(autoencoder, images)
    if scale_factor == 0:
        scale_factor = round(1.0 / latents.std().item(), 6)
    return latents * scale_factor, scale_factor


@torch.no_grad()
def decode_latents(autoencoder: Autoencoder, latents: torch.Tensor, scale_factor: float) -> torch.Tensor:
    """Scaled latents -> images in [-1, 1] on the CPU."""
    device = next(autoencoder.parameters()).device
    images = [autoencoder.decode(z.to(device) / scale_factor).clamp(-1, 1).cpu() for z in latents.split(128)]
    return torch.cat(images)


def mirrored_batch(
    latents: torch.Tensor,
    labels: torch.Tensor,
    pool: torch.Tensor,
    batch_size: int,
    hflip: bool,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A random batch of (latent, labels) from :func:`encode_images`' output, drawn from the indices ``pool`` (this
    rank's shard of the training set), each latent its image's or, with ``hflip``, its mirror image's at even odds
    (mirroring keeps every label)."""
    index = pool[torch.randint(0, len(pool), (batch_size,), generator=generator)]
    mirrored = (torch.rand(batch_size, generator=generator) < 0.5).long() if hflip else 0
    return latents[index, mirrored], labels[index].clone()
