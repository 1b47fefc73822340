"""Samplers: pure functions with one calling convention,

    sample_x(eps_fn, diffusion, x_T, *, steps, generator, callback, ...) -> x_0

``eps_fn(x_t, t)`` returns the noise prediction at integer step ``t`` (guidance is already folded in, see
``guidance.py``); ``callback`` is called after every step with a dict holding ``i`` (step number), ``t``, ``x`` (the
new state) and ``x0`` (the current prediction of the clean image), which is what a denoising-process picture needs.
``clip_x0`` clamps every x_0 prediction to [-clip_x0, clip_x0] before it is used (None or 0: no bound).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from condgen.diffusion.options import Sampler, Spacing
from condgen.diffusion.process import GaussianDiffusion

EpsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Callback = Callable[[dict], None] | None


def bound(x: torch.Tensor, clip_x0: float | None) -> torch.Tensor:
    """``x`` clamped to [-clip_x0, clip_x0], or unchanged when ``clip_x0`` is None or 0."""
    return x.clamp(-clip_x0, clip_x0) if clip_x0 else x


def timesteps(num_train_steps: int, steps: int, spacing: Spacing | str = Spacing.TRAILING) -> list[int]:
    """``steps`` distinct integer steps in decreasing order."""
    if not 1 <= steps <= num_train_steps:
        raise ValueError(f"steps must be between 1 and {num_train_steps}, got {steps}")
    spacing = Spacing(spacing)
    if spacing is Spacing.LEADING:
        ratio = num_train_steps // steps
        values = [i * ratio for i in range(steps)]
    elif spacing is Spacing.TRAILING:
        ratio = num_train_steps / steps
        values = [round(num_train_steps - i * ratio) - 1 for i in range(steps)][::-1]
    elif spacing is Spacing.QUADRATIC:
        values = []
        for j in range(1, steps + 1):  # where the parabola is flatter than one step per value, take the next integer
            values.append(max(round((num_train_steps - 1) * (j / steps) ** 2), values[-1] + 1 if values else 0))
    else:
        values = torch.linspace(0, num_train_steps - 1, steps).round().long().tolist()
    return sorted(set(values), reverse=True)


def _step_tensor(t: int, x: torch.Tensor) -> torch.Tensor:
    return torch.full((len(x),), t, device=x.device, dtype=torch.long)


def _noise(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)


@torch.no_grad()
def sample_ddpm(
    eps_fn: EpsFn,
    diffusion: GaussianDiffusion,
    x: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    callback: Callback = None,
    clip_x0: float | None = 1.0,
) -> torch.Tensor:
    """Ho et al. 2020, Algorithm 2 (ancestral sampling over all T steps), written through the x_0 prediction:
    x_{t-1} = mu~_t(x_0_hat, x_t) + sigma_t z (eq. 7), with sigma_t^2 = beta_t or beta~_t, and no noise at t = 0."""
    for i, t in enumerate(range(diffusion.num_steps - 1, -1, -1)):
        step = _step_tensor(t, x)
        x0 = diffusion.predict_x0(x, step, eps_fn(x, step))
        x0 = bound(x0, clip_x0)
        mean, variance = diffusion.q_posterior(x0, x, step)
        x = mean + variance.sqrt() * _noise(x, generator) if t > 0 else mean
        if callback is not None:
            callback({"i": i, "t": t, "x": x, "x0": x0})
    return x


@torch.no_grad()
def sample_ddim(
    eps_fn: EpsFn,
    diffusion: GaussianDiffusion,
    x: torch.Tensor,
    *,
    steps: int = 50,
    eta: float = 0.0,
    spacing: Spacing | str = Spacing.TRAILING,
    generator: torch.Generator | None = None,
    callback: Callback = None,
    clip_x0: float | None = 1.0,
) -> torch.Tensor:
    """Song et al. 2021, eq. 12: x_{t'} = sqrt(a_{t'}) x0_hat + sqrt(1 - a_{t'} - sigma^2) eps_hat + sigma z, with
    sigma = eta sqrt((1 - a_{t'}) / (1 - a_t)) sqrt(1 - a_t / a_{t'}) (eq. 16), a = alpha_bar, t' the next step.
    eta = 0 is deterministic DDIM; eta = 1 matches DDPM's variance."""
    ts = timesteps(diffusion.num_steps, steps, spacing)
    alpha_bar = diffusion.alpha_bar
    for i, t in enumerate(ts):
        step = _step_tensor(t, x)
        eps = eps_fn(x, step)
        x0 = diffusion.predict_x0(x, step, eps)
        if clip_x0:
            x0 = bound(x0, clip_x0)
            eps = (x - alpha_bar[t].sqrt().to(x) * x0) / (1 - alpha_bar[t]).sqrt().to(x)  # consistent with x0
        a_t = alpha_bar[t]
        a_next = alpha_bar[ts[i + 1]] if i + 1 < len(ts) else torch.tensor(1.0, dtype=torch.float64)
        sigma = eta * ((1 - a_next) / (1 - a_t) * (1 - a_t / a_next)).sqrt()
        x = a_next.sqrt().to(x) * x0 + (1 - a_next - sigma**2).clamp(min=0).sqrt().to(x) * eps
        if eta > 0 and i + 1 < len(ts):
            x = x + sigma.to(x) * _noise(x, generator)
        if callback is not None:
            callback({"i": i, "t": t, "x": x, "x0": x0})
    return x


@torch.no_grad()
def sample_dpmpp_2m(
    eps_fn: EpsFn,
    diffusion: GaussianDiffusion,
    x: torch.Tensor,
    *,
    steps: int = 20,
    eta: float = 0.0,
    spacing: Spacing | str = Spacing.TRAILING,
    generator: torch.Generator | None = None,
    callback: Callback = None,
    clip_x0: float | None = 1.0,
) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2): a second-order multistep solver of the diffusion ODE in the
    data-prediction form. With alpha_t = sqrt(alpha_bar), sigma_t = sqrt(1 - alpha_bar), lambda = log(alpha / sigma),
    h_i = lambda_i - lambda_{i-1} and r = h_{i-1} / h_i:

        D_i = (1 + 1 / (2r)) x0_{i-1} - 1 / (2r) x0_{i-2}     (first step: D = x0_{i-1})
        x_i = (sigma_i / sigma_{i-1}) x_{i-1} - alpha_i (exp(-h_i) - 1) D_i

    ``eta`` > 0 turns it into SDE-DPM-Solver++(2M), the solver of the reverse diffusion SDE in the same exponential-
    integrator form (diffusers' "sde-dpmsolver++", k-diffusion's sample_dpmpp_2m_sde), with fresh noise at every step:

        x_i = (sigma_i / sigma_{i-1}) exp(-eta h_i) x_{i-1} + alpha_i (1 - exp(-(1 + eta) h_i)) D_i
              + sigma_i sqrt(1 - exp(-2 eta h_i)) z

    eta = 0 is the ODE solver above, eta = 1 the full SDE, whose fresh noise corrects errors the ODE carries along
    (Karras et al. 2022, section 4), at the price of a larger discretisation error per step. The last step goes to
    sigma = 0, where the update is x_0 = D (first order, as "lower order final")."""
    ts = timesteps(diffusion.num_steps, steps, spacing)
    alpha = diffusion.alpha_bar.sqrt()
    sigma = (1 - diffusion.alpha_bar).sqrt()
    lam = (alpha / sigma).log()
    previous_x0, previous_h = None, None
    for i, t in enumerate(ts):
        step = _step_tensor(t, x)
        x0 = diffusion.predict_x0(x, step, eps_fn(x, step))
        x0 = bound(x0, clip_x0)
        if i + 1 == len(ts):
            x = x0  # sigma_next = 0: the exponential integrator's step lands on the data prediction
        else:
            t_next = ts[i + 1]
            h = lam[t_next] - lam[t]
            d = x0
            if previous_x0 is not None:
                r = previous_h / h
                d = (1 + 1 / (2 * r)).to(x) * x0 - (1 / (2 * r)).to(x) * previous_x0
            decay = (sigma[t_next] / sigma[t] * torch.exp(-eta * h)).to(x)
            x = decay * x - (alpha[t_next] * torch.expm1(-(1 + eta) * h)).to(x) * d
            if eta > 0:
                x = x + (sigma[t_next] * (-torch.expm1(-2 * eta * h)).sqrt()).to(x) * _noise(x, generator)
            previous_x0, previous_h = x0, h
        if callback is not None:
            callback({"i": i, "t": t, "x": x, "x0": x0})
    return x


SAMPLERS = {Sampler.DDPM: sample_ddpm, Sampler.DDIM: sample_ddim, Sampler.DPMPP: sample_dpmpp_2m}
