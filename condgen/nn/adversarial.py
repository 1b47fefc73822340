"""Adversarial loss pairs as small named functions, shared by the GANs and the autoencoders' patch discriminator.
``real`` and ``fake`` are the discriminator's raw scores (logits), any shape.

Every discriminator loss is the sum of a real side and a fake side, each its own function, so that other negatives
than generated images (the GANs' mismatched labels) are scored by exactly the fake side of the loss in use."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def d_bce_real(real: torch.Tensor) -> torch.Tensor:
    """-log D(x): the real side of Goodfellow et al. 2014, eq. 1."""
    return F.binary_cross_entropy_with_logits(real, torch.ones_like(real))


def d_bce_fake(fake: torch.Tensor) -> torch.Tensor:
    """-log(1 - D(G(z))): the fake side of Goodfellow et al. 2014, eq. 1."""
    return F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))


def d_bce(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Goodfellow et al. 2014, eq. 1, discriminator side: -log D(x) - log(1 - D(G(z)))."""
    return d_bce_real(real) + d_bce_fake(fake)


def g_bce(fake: torch.Tensor) -> torch.Tensor:
    """The non-saturating generator loss, -log D(G(z)) (Goodfellow et al. 2014, section 3)."""
    return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))


def d_hinge_real(real: torch.Tensor) -> torch.Tensor:
    """E[max(0, 1 - D(x))]."""
    return F.relu(1 - real).mean()


def d_hinge_fake(fake: torch.Tensor) -> torch.Tensor:
    """E[max(0, 1 + D(G(z)))]."""
    return F.relu(1 + fake).mean()


def d_hinge(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Hinge loss (Lim & Ye 2017; Miyato et al. 2018): E[max(0, 1 - D(x))] + E[max(0, 1 + D(G(z)))]."""
    return d_hinge_real(real) + d_hinge_fake(fake)


def g_hinge(fake: torch.Tensor) -> torch.Tensor:
    return -fake.mean()


def d_wasserstein_real(real: torch.Tensor) -> torch.Tensor:
    """-E[D(x)]."""
    return -real.mean()


def d_wasserstein_fake(fake: torch.Tensor) -> torch.Tensor:
    """E[D(G(z))]."""
    return fake.mean()


def d_wasserstein(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """The critic's side of the Kantorovich-Rubinstein dual (Arjovsky et al. 2017, eq. 3): E[D(G(z))] - E[D(x)]."""
    return d_wasserstein_fake(fake) + d_wasserstein_real(real)  # a + (-b) rounds exactly as a - b


def g_wasserstein(fake: torch.Tensor) -> torch.Tensor:
    return -fake.mean()


@dataclass(frozen=True)
class AdversarialLoss:
    """One loss pair: the discriminator's loss on real and fake scores, its fake side alone, the generator's loss."""

    discriminator: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    fake: Callable[[torch.Tensor], torch.Tensor]
    generator: Callable[[torch.Tensor], torch.Tensor]


BCE = AdversarialLoss(d_bce, d_bce_fake, g_bce)
HINGE = AdversarialLoss(d_hinge, d_hinge_fake, g_hinge)
WASSERSTEIN = AdversarialLoss(d_wasserstein, d_wasserstein_fake, g_wasserstein)
