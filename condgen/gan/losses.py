"""What GAN training adds to the adversarial losses (``condgen.nn.adversarial``): the one table from ``optim.loss``
to what it trains with, the gradient penalty, weight clipping, ACGAN's auxiliary classification loss, the R1 penalty
and the matching-aware negatives."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from condgen.gan.options import Loss
from condgen.nn.adversarial import BCE, HINGE, WASSERSTEIN, AdversarialLoss


@dataclass(frozen=True)
class GANLoss:
    """What one ``optim.loss`` trains with: the adversarial loss pair and the critic's Lipschitz constraint."""

    adversarial: AdversarialLoss
    clip: bool = False  # weight clipping after every critic update (Arjovsky et al. 2017)
    penalty: bool = False  # gradient penalty (Gulrajani et al. 2017)


LOSSES: dict[Loss, GANLoss] = {
    Loss.BCE: GANLoss(BCE),  # non-saturating; with conditioning=auxiliary this is ACGAN
    Loss.HINGE: GANLoss(HINGE),
    Loss.WGAN_CLIP: GANLoss(WASSERSTEIN, clip=True),
    Loss.WGAN_GP: GANLoss(WASSERSTEIN, penalty=True),
}


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
def clip_weights(module: torch.nn.Module, clip_value: float, keep: Iterable[torch.nn.Parameter] = ()) -> None:
    """WGAN's Lipschitz constraint by brute force (Arjovsky et al. 2017, Algorithm 1): every weight into
    [-c, c], except the parameters in ``keep``."""
    kept = {id(parameter) for parameter in keep}
    for parameter in module.parameters():
        if id(parameter) not in kept:
            parameter.clamp_(-clip_value, clip_value)


def r1_penalty(scores: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Mescheder et al. 2018, eq. 9 without the factor gamma / 2: E[||grad_x D(x)||^2] on real images. ``real`` must
    have had ``requires_grad_`` set before ``scores`` were computed from it; multiply by gamma / 2 outside."""
    (gradient,) = torch.autograd.grad(scores.sum(), real, create_graph=True)
    return gradient.flatten(1).square().sum(dim=1).mean()


def d_mismatched(scores: torch.Tensor, loss: Loss) -> torch.Tensor:
    """The fake side of ``loss``'s discriminator loss for real images paired with labels that are not theirs: the
    matching-aware negatives of Reed et al. 2016 (section 4.2), which make the critic check the label. bce:
    E[-log(1 - sigmoid(D(x, y')))]; hinge: E[max(0, 1 + D(x, y'))]; wgan_clip and wgan_gp: E[D(x, y')]."""
    return LOSSES[loss].adversarial.fake(scores)
