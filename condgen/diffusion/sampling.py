"""How a trained diffusion model is sampled: the sample settings, their one validation, the overrides asked of a
model's own settings, and :func:`generate`, which every command, the training loop's evaluation and the benchmarks go
through."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, fields

import torch

from condgen.diffusion.guidance import guided_eps_fn
from condgen.diffusion.options import Sampler, Spacing
from condgen.diffusion.presets import PRESETS, sampler_settings
from condgen.diffusion.process import GaussianDiffusion
from condgen.diffusion.samplers import SAMPLERS, Callback, bound, timesteps
from condgen.errors import CondgenError
from condgen.nn.ranking import Reading, keep_best


@dataclass
class SampleConfig:
    sampler: Sampler = Sampler.DPMPP  # ddpm | ddim | dpmpp
    steps: int = 20  # ignored by ddpm, which always takes T steps; 0 = the sampler's preset (PRESETS)
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
        """These settings with ``changes`` (None values left out). Another sampler's steps, eta and spacing come
        with it through :func:`condgen.diffusion.presets.sampler_settings` (:meth:`SampleOverrides.apply`)."""
        return dataclasses.replace(self, **{key: value for key, value in changes.items() if value is not None})

    @property
    def uses_classifier(self) -> bool:
        """Whether these settings guide by a noisy classifier or rank candidates by it."""
        return bool(self.classifier_scale or self.classifier_absent_scale) or self.candidates > 1

    def sampler_steps(self) -> int:
        """The step count of ddim and dpmpp: ``steps``, or the sampler's preset when 0."""
        return self.steps or PRESETS[self.sampler].steps


@dataclass(frozen=True)
class SampleOverrides:
    """Sampling settings asked for in place of a model's own (:class:`SampleConfig`); None keeps the model's. A
    sampler brings its steps, eta and spacing (:func:`condgen.diffusion.presets.sampler_settings`) unless they are
    given too."""

    sampler: Sampler | None = None
    steps: int | None = None
    guidance: float | None = None
    guidance_min_t: int | None = None
    eta: float | None = None
    spacing: Spacing | None = None
    seed: int | None = None
    classifier_scale: float | None = None
    classifier_absent_scale: float | None = None
    candidates: int | None = None

    def __post_init__(self):
        # names given in Python ("ddim") become the enums; a wrong one is the caller's mistake, said in one line
        for key, kind in (("sampler", Sampler), ("spacing", Spacing)):
            value = getattr(self, key)
            try:
                object.__setattr__(self, key, None if value is None else kind(value))
            except ValueError:
                names = ", ".join(choice.value for choice in kind)
                raise CondgenError(f"{key}: unknown {key} {value!r}; choose one of {names}") from None

    def given(self) -> list[str]:
        """The names of the settings these overrides set, in field order."""
        return [field.name for field in fields(self) if getattr(self, field.name) is not None]

    def apply(self, sample: SampleConfig, num_steps: int) -> SampleConfig:
        """``sample`` (a model's own settings, for a model with ``num_steps`` noise levels) with these overrides: the
        sampler's settings first, then every other setting given. Not checked: :meth:`SampleConfig.check` is."""
        if self.sampler is not None:
            sample = sampler_settings(sample, self.sampler, num_steps)
        return sample.changed(**{key: getattr(self, key) for key in self.given() if key != "sampler"})


def generate(
    model: torch.nn.Module,
    diffusion: GaussianDiffusion,
    labels: torch.Tensor,
    sample: SampleConfig,
    callback: Callback = None,
    batch_size: int = 64,
    classifier: torch.nn.Module | None = None,
    ranker: Callable[[torch.Tensor], Reading] | None = None,
) -> torch.Tensor:
    """Samples for every row of ``labels``, within [-sample.clip_x0, sample.clip_x0] (images in [-1, 1] by default);
    the same seed gives the same samples. ``callback`` sees the starting noise (``i = -1``), then every sampler step.

    ``classifier`` (a noisy classifier of the model's x_t) serves classifier guidance and, with ``sample.candidates``
    K > 1, ranking: each request is sampled K times in one batch and keeps the sample whose per-object logits have
    the highest :func:`condgen.nn.ranking.set_log_likelihood` (closest to holding exactly the requested objects).
    The logits are ``ranker``'s of the finished samples where one is given (an image classifier reading the decoded
    samples; one that also counts their objects ranks down a candidate holding more or fewer than requested), else
    the classifier's at t = 0."""
    sample.check(diffusion.num_steps)
    model = jumping_network(model, sample, diffusion.num_steps)
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
                    read = ranker(x)
                else:
                    read = classifier(x, torch.zeros(len(x), dtype=torch.long, device=device), batch)
            x = keep_best(x, read, batch, k)
        outputs.append(x.cpu())
    return torch.cat(outputs)


def is_few_step(config: object) -> bool:
    """Whether a network of this config is a few-step model: a UNet told each jump's length (``interval_embedding``,
    :mod:`condgen.fewstep`)."""
    return getattr(config, "interval_embedding", False)


def check_jumps(config: object, sample: SampleConfig) -> None:
    """Refuses a sampler other than ddim for a few-step model (:func:`is_few_step`): its network predicts the
    landing of each DDIM jump, which other samplers would misread."""
    if is_few_step(config) and sample.sampler != Sampler.DDIM:
        raise CondgenError(
            f"sample.sampler (--sampler): a few-step model samples with ddim (its jumps); got {sample.sampler.value}"
        )


class JumpingNetwork(torch.nn.Module):
    """A few-step model as the samplers call it, ``(x_t, t, labels)``: each step is told how many steps its jump
    covers (``lengths``, by the step it starts from)."""

    def __init__(self, model: torch.nn.Module, lengths: dict[int, int]):
        super().__init__()
        self.model, self.lengths, self.config = model, lengths, model.config

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        interval = torch.tensor([self.lengths[int(step)] for step in t.tolist()], device=t.device)
        return self.model(x, t, labels, interval=interval)


def jumping_network(model: torch.nn.Module, sample: SampleConfig, num_steps: int) -> torch.nn.Module:
    """``model`` itself, or for a few-step model the :class:`JumpingNetwork` that tells it each jump's length."""
    check_jumps(model.config, sample)
    if not is_few_step(model.config):
        return model
    steps = [*timesteps(num_steps, sample.sampler_steps(), sample.spacing), -1]  # -1: the clean image
    return JumpingNetwork(model, {t: t - t_next for t, t_next in zip(steps, steps[1:])})


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
