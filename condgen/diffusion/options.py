"""The names of diffusion sampling's choices: which sampler, which of the T steps it visits. Plain enums with no
torch, so the command line offers exactly these choices without loading a model library."""

from __future__ import annotations

from enum import Enum


class Sampler(str, Enum):
    DDPM = "ddpm"  # ancestral sampling over all T steps (Ho et al. 2020)
    DDIM = "ddim"  # any number of steps, with eta (Song et al. 2021)
    DPMPP = "dpmpp"  # DPM-Solver++(2M), SDE-DPM-Solver++(2M) with eta > 0 (Lu et al. 2022)


class Spacing(str, Enum):
    LEADING = "leading"  # 0, k, 2k, ...: DDIM's original choice (Song et al. 2021); never reaches T - 1
    TRAILING = "trailing"  # T - 1, T - 1 - k, ...: starts at pure noise (Lin et al. 2024, table 2)
    LINSPACE = "linspace"  # round(linspace(0, T - 1, steps))
    # T - 1, then denser towards t = 0: the j-th smallest is (T - 1) (j / steps)^2, Song et al. 2021's quadratic
    # sequence (appendix D.2); few-step solvers spend their steps where the image takes its final form
    QUADRATIC = "quadratic"
