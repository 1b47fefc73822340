"""How a trained diffusion model is sampled: the sample settings, their one validation, the default step count, and
:func:`generate`, which every command, the training loop's evaluation and the benchmarks go through."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch

from condgen.diffusion.guidance import guided_eps_fn
from condgen.diffusion.options import DEFAULT_STEPS, Sampler, Spacing
from condgen.diffusion.process import GaussianDiffusion
from condgen.diffusion.samplers import SAMPLERS, Callback, bound, timesteps
from condgen.errors import CondgenError
from condgen.nn.ranking import keep_best


@dataclass
class SampleConfig:
    sampler: Sampler = Sampler.DPMPP  # ddpm | ddim | dpmpp
    steps: int = 20  # ignored by ddpm, which always takes T steps; 0 = the sampler's default (DEFAULT_STEPS)
    guidance: float = 2.0  # classifier-free guidance scale s; 1 = none
    guidance_min_t: int = 0  # guidance (both kinds) only at steps t >= this; 0 = at every step
    eta: float = 0.0  # ddim and dpmpp: 0 = deterministic (the ODE), 1 = full noise (DDPM-like / the SDE)
    spacing: Spacing = Spacing.TRAILING  # leading | trailing | linspace | quadratic (ddim, dpmpp)
    seed: int = 0
    # classifier guidance towards the requested objects and away from the others; needs a noisy classifier
    classifier_scale: float = 0.0
    classifier_absent_scale: float = 0.0
    candidates: int = 1  # best of K samples per request, ranked by the noisy classifier at t = 0; 1 = no ranking
    clip_x0: float = 1.0  # every x_0 prediction (and the result) is clamped to [-clip_x0, clip_x0]; 0 = never

    def __post_init__(self):
        self.sampler, self.spacing = Sampler(self.sampler), Spacing(self.spacing)  # names given in Python

    def check(self, num_steps: int) -> None:
        """Rejects settings that a model with ``num_steps`` (T) noise levels cannot follow, naming the key."""
        if self.clip_x0 < 0:
            raise CondgenError(f"sample.clip_x0: a bound >= 0 (0 for none), got {self.clip_x0}")
        if not self.eta >= 0:
            raise CondgenError(f"sample.eta: a noise amount >= 0 (0 for none), got {self.eta}")
        if self.candidates < 1:
            raise CondgenError(f"sample.candidates (--candidates): at least 1, got {self.candidates}")
        if self.guidance_min_t < 0:
            raise CondgenError(f"sample.guidance_min_t: a step >= 0 (0 for every step), got {self.guidance_min_t}")
        if self.sampler != Sampler.DDPM and self.steps > num_steps:
            raise CondgenError(f"sample.steps (--steps): at most {num_steps}, the model's T; got {self.steps}")
        if self.guidance_min_t >= num_steps:
            raise CondgenError(
                f"sample.guidance_min_t (--guidance-min-t): below {num_steps}, the model's T; got {self.guidance_min_t}"
            )

    def changed(self, **changes) -> SampleConfig:
        """These settings with ``changes`` (None values left out); a new sampler given without ``steps`` takes
        that sampler's default step count rather than the old sampler's."""
        changes = {key: value for key, value in changes.items() if value is not None}
        if "sampler" in changes and "steps" not in changes:
            changes["steps"] = DEFAULT_STEPS[Sampler(changes["sampler"])] or 0
        return dataclasses.replace(self, **changes)

    @property
    def uses_classifier(self) -> bool:
        """Whether these settings guide by a noisy classifier or rank candidates by it."""
        return bool(self.classifier_scale or self.classifier_absent_scale) or self.candidates > 1

    def sampler_steps(self) -> int:
        """The step count of ddim and dpmpp: ``steps``, or the sampler's default when 0."""
        return self.steps or DEFAULT_STEPS[self.sampler]


def generate(
    model: torch.nn.Module,
    diffusion: GaussianDiffusion,
    labels: torch.Tensor,
    sample: SampleConfig,
    callback: Callback = None,
    batch_size: int = 64,
    classifier: torch.nn.Module | None = None,
    ranker: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Samples for every row of ``labels``, within [-sample.clip_x0, sample.clip_x0] (images in [-1, 1] by default);
    the same seed gives the same samples. ``callback`` sees the starting noise (``i = -1``), then every sampler step.

    ``classifier`` (a noisy classifier of the model's x_t) serves classifier guidance and, with ``sample.candidates``
    K > 1, ranking: each request is sampled K times in one batch and keeps the sample whose per-object logits have
    the highest :func:`condgen.nn.ranking.set_log_likelihood` (closest to holding exactly the requested objects).
    The logits are ``ranker``'s of the finished samples where one is given (an image classifier reading the decoded
    samples), else the classifier's at t = 0."""
    sample.check(diffusion.num_steps)
    k = sample.candidates
    if k > 1 and classifier is None and ranker is None:
        raise CondgenError(
            f"sample.candidates (--candidates): ranking {k} samples per request needs --ranker RUN or --classifier RUN"
        )
    generator = torch.Generator().manual_seed(sample.seed)
    device = next(model.parameters()).device
    size = model.config.image_size
    outputs = []
    per_batch = max(1, batch_size // k)  # requests per sampler batch of about batch_size samples
    for start in range(0, len(labels), per_batch):
        batch = labels[start : start + per_batch].to(device).repeat_interleave(k, dim=0)
        x = torch.randn((len(batch), model.config.in_channels, size, size), generator=generator).to(device)
        if callback is not None:
            callback({"i": -1, "t": diffusion.num_steps, "x": x, "x0": None})  # the starting noise x_T
        eps_fn = guided_eps_fn(
            model,
            diffusion,
            batch,
            sample.guidance,
            classifier,
            sample.classifier_scale,
            sample.guidance_min_t,
            sample.classifier_absent_scale,
        )
        kwargs: dict = {"generator": generator, "callback": callback, "clip_x0": sample.clip_x0}
        if sample.sampler != Sampler.DDPM:
            kwargs |= {"steps": sample.sampler_steps(), "spacing": sample.spacing, "eta": sample.eta}
        x = bound(SAMPLERS[sample.sampler](eps_fn, diffusion, x, **kwargs), sample.clip_x0)
        if k > 1:
            with torch.no_grad():
                if ranker is not None:
                    logits = ranker(x)
                else:
                    logits = classifier(x, torch.zeros(len(x), dtype=torch.long, device=device), batch)
            x = keep_best(x, logits, batch, k)
        outputs.append(x.cpu())
    return torch.cat(outputs)


def network_evaluations(sample: SampleConfig, num_steps: int) -> int:
    """Network calls per image of ``sample`` on a model with ``num_steps`` (T) noise levels: two at the steps where
    classifier-free guidance acts (t >= ``guidance_min_t``, a scale other than 1), one at the others, times the
    ``candidates`` made per image (a noisy classifier's calls are not counted)."""
    steps = (
        range(num_steps)
        if sample.sampler == Sampler.DDPM
        else timesteps(num_steps, sample.sampler_steps(), sample.spacing)
    )
    guided = sample.guidance != 1
    return sample.candidates * sum(2 if guided and t >= sample.guidance_min_t else 1 for t in steps)
