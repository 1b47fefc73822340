"""Noise schedules: functions of T that return the betas beta_1..beta_T as a float64 tensor."""

from __future__ import annotations

import math
from enum import Enum

import torch


class Schedule(str, Enum):
    LINEAR = "linear"  # Ho et al. 2020, section 4
    COSINE = "cosine"  # Nichol & Dhariwal 2021, eq. 17
    COSINE_BETA = "cosine_beta"  # a cosine interpolation between beta_1 and beta_T


def linear_betas(steps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """beta_t rising linearly from ``beta_start`` to ``beta_end`` (Ho et al. 2020, section 4)."""
    return torch.linspace(beta_start, beta_end, steps, dtype=torch.float64)


def cosine_alpha_bar_betas(steps: int, offset: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Nichol & Dhariwal 2021, eq. 17: alpha_bar(t) = f(t) / f(0), f(t) = cos^2(((t / T + s) / (1 + s)) * pi / 2),
    and beta_t = 1 - alpha_bar(t) / alpha_bar(t - 1), clipped at ``max_beta`` to avoid a singularity at t = T."""

    def f(t: float) -> float:
        return math.cos((t / steps + offset) / (1 + offset) * math.pi / 2) ** 2

    betas = [min(1 - f(t + 1) / f(t), max_beta) for t in range(steps)]
    return torch.tensor(betas, dtype=torch.float64)


def cosine_interpolated_betas(steps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """beta_t = beta_1 + (1 - cos(pi t / T)) / 2 * (beta_T - beta_1), t = 1..T: slow at both ends, fast in between."""
    t = torch.arange(1, steps + 1, dtype=torch.float64)
    return beta_start + (1 - torch.cos(math.pi * t / steps)) / 2 * (beta_end - beta_start)


def make_betas(schedule: Schedule | str, steps: int) -> torch.Tensor:
    schedule = Schedule(schedule)
    if schedule is Schedule.LINEAR:
        return linear_betas(steps)
    if schedule is Schedule.COSINE:
        return cosine_alpha_bar_betas(steps)
    return cosine_interpolated_betas(steps)
