"""The named sampler presets: the steps, eta and spacing each sampler runs with, and :func:`sampler_settings`, the
one way a sampler's settings are chosen for a model (by `condgen sample` and `denoise` --sampler,
``Pipeline.generate(sampler=...)``, `condgen report`, `condgen serve` and every benchmark). No torch, so the command
line can name the presets in its help."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

from condgen.diffusion.options import Sampler, Spacing

if TYPE_CHECKING:
    from condgen.diffusion.sampling import SampleConfig


@dataclass(frozen=True)
class Preset:
    """A sampler's settings where a model's own use another sampler."""

    steps: int | None  # None: all of the model's T steps (ddpm)
    eta: float | None = None  # None: the sampler takes none (ddpm's noise is its posterior variance)
    spacing: Spacing | None = None  # None: the sampler visits every step


# The slowest last. DDIM runs with eta 1 (fresh noise at every step, as DDPM): on the guidance-selection label lists it
# scored 0.936 against 0.896 with eta 0. DPM-Solver++ visits quadratically spaced steps: 0.8855 against 0.8652 with
# trailing ones on 512 other train.json label lists (benchmarks/sampling.py --spacing trailing,quadratic --guidance 5
# --lists 512 --list-seed 1).
PRESETS: dict[Sampler, Preset] = {
    Sampler.DPMPP: Preset(steps=20, eta=0.0, spacing=Spacing.QUADRATIC),
    Sampler.DDIM: Preset(steps=50, eta=1.0, spacing=Spacing.TRAILING),
    Sampler.DDPM: Preset(steps=None),
}


def sampler_settings(sample: SampleConfig, sampler: Sampler | str, num_steps: int) -> SampleConfig:
    """The settings a model whose own are ``sample`` samples with under ``sampler``: its own steps, eta and spacing
    where ``sample`` already uses that sampler (a model folder's defaults win), else the sampler's preset
    (:data:`PRESETS`), ddpm's steps being the model's T (``num_steps``). Every other setting (guidance, seed,
    classifier guidance, candidates, clip_x0) stays the model's. Not checked against T: :meth:`SampleConfig.check`
    is."""
    sampler = Sampler(sampler)
    if sample.sampler == sampler:
        return sample
    preset = PRESETS[sampler]
    changes = {"steps": preset.steps or num_steps, "eta": preset.eta, "spacing": preset.spacing}
    changes = {key: value for key, value in changes.items() if value is not None}  # ddpm has no eta or spacing
    return dataclasses.replace(sample, sampler=sampler, **changes)
