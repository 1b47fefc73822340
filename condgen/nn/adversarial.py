"""Adversarial loss pairs as small named functions, shared by the GANs and the autoencoders' patch discriminator.
``real`` and ``fake`` are the discriminator's raw scores (logits), any shape."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def d_bce(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Goodfellow et al. 2014, eq. 1, discriminator side: -log D(x) - log(1 - D(G(z)))."""
    return F.binary_cross_entropy_with_logits(real, torch.ones_like(real)) + F.binary_cross_entropy_with_logits(
        fake, torch.zeros_like(fake)
    )


def g_bce(fake: torch.Tensor) -> torch.Tensor:
    """The non-saturating generator loss, -log D(G(z)) (Goodfellow et al. 2014, section 3)."""
    return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))


def d_hinge(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Hinge loss (Lim & Ye 2017; Miyato et al. 2018): E[max(0, 1 - D(x))] + E[max(0, 1 + D(G(z)))]."""
    return F.relu(1 - real).mean() + F.relu(1 + fake).mean()


def g_hinge(fake: torch.Tensor) -> torch.Tensor:
    return -fake.mean()


def d_wasserstein(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """The critic's side of the Kantorovich-Rubinstein dual (Arjovsky et al. 2017, eq. 3): E[D(G(z))] - E[D(x)]."""
    return fake.mean() - real.mean()


def g_wasserstein(fake: torch.Tensor) -> torch.Tensor:
    return -fake.mean()


DISCRIMINATOR_LOSSES = {"bce": d_bce, "hinge": d_hinge, "wasserstein": d_wasserstein}
GENERATOR_LOSSES = {"bce": g_bce, "hinge": g_hinge, "wasserstein": g_wasserstein}
