"""Jumps along the diffusion ODE: the deterministic DDIM step from step t to an earlier step t', and the x_0
prediction that makes one such step land on a given point. A few-step model is trained to predict, for each jump of
its grid, the x_0 whose single DDIM step lands where two half-length jumps would (or where its teacher's step does),
so that 1, 2, 4, ... of its jumps cross the whole chain (shortcut models, Frans et al. 2025; progressive distillation,
Salimans & Ho 2022, eq. 8).

Steps follow :mod:`condgen.diffusion.process`: 0 .. T-1, and ``END = -1`` stands for the clean image (alpha_bar = 1).
"""

from __future__ import annotations

import torch

from condgen.diffusion.process import GaussianDiffusion
from condgen.diffusion.samplers import bound, timesteps

END = -1  # the step after the last one: the clean image


def _alpha_sigma(diffusion: GaussianDiffusion, t: torch.Tensor, like: torch.Tensor):
    """sqrt(alpha_bar_t) and sqrt(1 - alpha_bar_t) per row, shaped like ``like``; END has alpha_bar = 1."""
    alpha_bar = torch.cat([diffusion.alpha_bar, torch.ones(1, dtype=torch.float64)])  # index -1 is END
    values = alpha_bar[t.cpu()].to(like.device)
    shape = (-1, *([1] * (like.dim() - 1)))
    return values.sqrt().to(like.dtype).view(shape), (1 - values).sqrt().to(like.dtype).view(shape)


def jump(
    diffusion: GaussianDiffusion,
    x: torch.Tensor,
    t: torch.Tensor,
    t_next: torch.Tensor,
    x0: torch.Tensor,
    clip_x0: float | None,
) -> torch.Tensor:
    """One DDIM step with eta = 0 (Song et al. 2021, eq. 12) from x_t to x_{t'}, given the x_0 prediction:
    x_{t'} = sqrt(a_{t'}) x0 + sqrt(1 - a_{t'}) eps, eps = (x_t - sqrt(a_t) x0) / sqrt(1 - a_t), with x0 clamped to
    [-clip_x0, clip_x0] first as :func:`condgen.diffusion.samplers.sample_ddim` does."""
    x0 = bound(x0, clip_x0)
    alpha, sigma = _alpha_sigma(diffusion, t, x)
    alpha_next, sigma_next = _alpha_sigma(diffusion, t_next, x)
    eps = (x - alpha * x0) / sigma
    return alpha_next * x0 + sigma_next * eps


def landing_x0(
    diffusion: GaussianDiffusion, x: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor, landing: torch.Tensor
) -> torch.Tensor:
    """The x_0 whose single DDIM step from x_t lands on ``landing`` at t' (Salimans & Ho 2022, eq. 8 written for any
    t'): x0 = (x_{t'} - (sigma_{t'} / sigma_t) x_t) / (alpha_{t'} - (sigma_{t'} / sigma_t) alpha_t). At t' = END it
    is the landing itself."""
    _, sigma = _alpha_sigma(diffusion, t, x)
    _, sigma_next = _alpha_sigma(diffusion, t_next, x)
    return (landing - sigma_next / sigma * x) / landing_gain(diffusion, t, t_next, x)


def velocity(diffusion: GaussianDiffusion, x: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """The v a network with v prediction outputs for this x_0 at x_t: v = (sqrt(a_t) x_t - x0) / sqrt(1 - a_t), the
    inverse of x0 = sqrt(a_t) x_t - sqrt(1 - a_t) v (Salimans & Ho 2022, section 4)."""
    alpha, sigma = _alpha_sigma(diffusion, t, x)
    return (alpha * x - x0) / sigma


def landing_gain(diffusion: GaussianDiffusion, t: torch.Tensor, t_next: torch.Tensor, like: torch.Tensor):
    """How far a jump's landing moves per unit change of its x_0: c = alpha_{t'} - (sigma_{t'} / sigma_t) alpha_t
    (a jump lands on c x0 + (sigma_{t'} / sigma_t) x_t). Near t = T - 1, where x_0 is barely determined, c is close to
    alpha_{t'}; a jump to the clean image has c = 1."""
    alpha, sigma = _alpha_sigma(diffusion, t, like)
    alpha_next, sigma_next = _alpha_sigma(diffusion, t_next, like)
    return alpha_next - sigma_next / sigma * alpha


def grid_steps(num_steps: int, jumps: int) -> list[int]:
    """The steps a sampler with ``jumps`` trailing DDIM steps visits, then END: the starts and ends of its jumps.
    Grids of n and 2n jumps nest (every second point of the finer one is a point of the coarser one)."""
    return [*timesteps(num_steps, jumps), END]
