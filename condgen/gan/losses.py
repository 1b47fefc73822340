"""GAN losses as small named functions. ``real`` and ``fake`` are the critic's raw scores (logits), shape (B,)."""

from __future__ import annotations

from collections.abc import Callable

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


def gradient_penalty(
    critic: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    real: torch.Tensor,
    fake: torch.Tensor,
    labels: torch.Tensor,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Gulrajani et al. 2017, eq. 3: E[(||grad_x D(x_hat)||_2 - 1)^2] at x_hat = e x + (1 - e) G(z), e ~ U[0, 1]
    per sample. Multiply by lambda (10 in the paper) outside."""
    epsilon = torch.rand(len(real), 1, 1, 1, generator=generator).to(real)
    mixed = (epsilon * real.detach() + (1 - epsilon) * fake.detach()).requires_grad_(True)
    scores = critic(mixed, labels)
    (gradient,) = torch.autograd.grad(scores.sum(), mixed, create_graph=True)
    return (gradient.flatten(1).norm(dim=1) - 1).square().mean()


def auxiliary_classification(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """ACGAN's auxiliary loss for several labels at once: BCE with logits over every class (Odena et al. 2017 with a
    sigmoid per object instead of one softmax, since a scene holds several objects)."""
    return F.binary_cross_entropy_with_logits(logits, labels)


@torch.no_grad()
def clip_weights(module: torch.nn.Module, clip_value: float) -> None:
    """WGAN's Lipschitz constraint by brute force (Arjovsky et al. 2017, Algorithm 1): every weight into
    [-c, c]."""
    for parameter in module.parameters():
        parameter.clamp_(-clip_value, clip_value)


DISCRIMINATOR_LOSSES = {"bce": d_bce, "hinge": d_hinge, "wasserstein": d_wasserstein}
GENERATOR_LOSSES = {"bce": g_bce, "hinge": g_hinge, "wasserstein": g_wasserstein}


def r1_penalty(scores: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Mescheder et al. 2018, eq. 9 without the factor gamma / 2: E[||grad_x D(x)||^2] on real images. ``real`` must
    have had ``requires_grad_`` set before ``scores`` were computed from it; multiply by gamma / 2 outside."""
    (gradient,) = torch.autograd.grad(scores.sum(), real, create_graph=True)
    return gradient.flatten(1).square().sum(dim=1).mean()


def d_hinge_mismatched(scores: torch.Tensor) -> torch.Tensor:
    """The hinge loss's fake side, E[max(0, 1 + D(x, y'))], for real images paired with labels that are not theirs:
    the matching-aware negatives of Reed et al. 2016 (section 4.2), which push a projection term to check the label."""
    return F.relu(1 + scores).mean()
