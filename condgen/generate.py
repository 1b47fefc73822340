"""``condgen sample``, ``denoise`` and ``interpolate``: images, grids and process pictures from any run whose kind
can generate (the table in :mod:`condgen.kinds` says how)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from condgen.data.imageio import save_png
from condgen.data.jsonio import write_json
from condgen.device import enable_tf32
from condgen.diffusion.run import DiffusionModel, load_classifier
from condgen.diffusion.sampling import SampleConfig, generate
from condgen.diffusion.unet import NoisyClassifier
from condgen.errors import CondgenError
from condgen.evaluate.ranker import load_ranker, ranker_weights
from condgen.gan.run import GANModel
from condgen.kinds import KINDS, Generation, kind_of
from condgen.latent.classifier import load_latent_classifier
from condgen.train.config import config_to_dict
from condgen.train.runs import read_run, request_labels, run_evaluator
from condgen.viz.grid import save_grid

SAMPLING_OPTIONS = ("sampler", "steps", "guidance", "guidance_min_t", "eta", "spacing", "seed")


def load_generator(run: Path, checkpoint: str, *allowed: Generation) -> Any:
    """The trained model of a run whose kind generates in one of the ``allowed`` ways (any way when none is
    given): a :class:`DiffusionModel` or a :class:`GANModel`."""
    kind = kind_of(read_run(run), run)
    if kind.generation is None or (allowed and kind.generation not in allowed):
        able = [k.name for k in KINDS.values() if k.generation is not None and (not allowed or k.generation in allowed)]
        others = f" (or {', '.join(able[1:])})" if len(able) > 1 else ""
        raise CondgenError(f"{run}: a {kind.name} run; this needs a {able[0]} run{others}")
    loaded = kind.load_model(run, checkpoint)
    model = loaded.model if isinstance(loaded, DiffusionModel) else loaded.generator
    enable_tf32(next(model.parameters()).device)
    return loaded


CLASSIFIER_OPTIONS = ("classifier", "classifier_scale", "classifier_absent_scale")


def sample_settings(config_sample: SampleConfig, args: argparse.Namespace, num_steps: int) -> SampleConfig:
    """The run's sample settings with the command line's --sampler, --steps, --guidance, --guidance-min-t, --eta,
    --spacing, --seed and, where the command has them, --classifier-scale, --classifier-absent-scale and
    --candidates, checked against the model's T. --classifier given alone guides at scale 1."""
    changes = {key: getattr(args, key, None) for key in (*SAMPLING_OPTIONS, *CLASSIFIER_OPTIONS[1:], "candidates")}
    sample = config_sample.changed(**changes)
    if getattr(args, "classifier", None) is not None and not sample.uses_classifier:
        sample = sample.changed(classifier_scale=1.0)
    sample.check(num_steps)
    return sample


def guiding_classifier(loaded: DiffusionModel, run: Path | None) -> NoisyClassifier | None:
    """The noisy classifier that guides and ranks ``loaded``'s samples: the ``run`` given (--classifier; a
    ``classifier`` run for a ddpm model, a ``latent-classifier`` run for an ldm model), else the model folder's own."""
    if run is None:
        return loaded.classifier
    if loaded.meta["kind"] == "ldm":
        return load_latent_classifier(run, loaded.config)
    return load_classifier(run, loaded.config.diffusion)[0]


def check_gan_options(args: argparse.Namespace, run: Path) -> None:
    """A GAN takes a seed and candidates alone: refuses the diffusion sampling and classifier options that ``args``
    sets."""
    given = [
        key
        for key in (*SAMPLING_OPTIONS, *CLASSIFIER_OPTIONS, "ranker")
        if key != "seed" and getattr(args, key, None) is not None
    ]
    if given:
        options = ", ".join("--" + key.replace("_", "-") for key in given)
        raise CondgenError(f"{options}: diffusion runs only; {run} is a gan run, which takes --seed alone")


def _fresh_folder(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CondgenError(f"{out}: already exists and is not empty; choose a new --out")
    out.mkdir(parents=True, exist_ok=True)


def sample_command(args: argparse.Namespace) -> dict:
    """Images for label lists from a generating run: N.png, grid.png and scores.json under ``args.out``."""
    loaded = load_generator(args.run, args.checkpoint)
    labels = request_labels(loaded.meta, args.labels, args.objects)
    if isinstance(loaded, GANModel):
        check_gan_options(args, args.run)
        seed = loaded.config.eval_seed if args.seed is None else args.seed
        evaluator = run_evaluator(loaded.meta, args.evaluator)
        _fresh_folder(args.out)
        candidates = loaded.config.candidates if args.candidates is None else args.candidates
        images = loaded.sample(labels, seed, candidates)
        result = {"images": len(images), "seed": seed, "candidates": candidates}
    else:
        sample = sample_settings(loaded.config.sample, args, loaded.diffusion.num_steps)
        classifier = guiding_classifier(loaded, args.classifier)
        if args.ranker is not None:
            if args.evaluator is not None and ranker_weights(args.ranker).resolve() == args.evaluator.resolve():
                raise CondgenError(f"--ranker {args.ranker}: the --evaluator scores the images; it cannot rank them")
            loaded.ranker = load_ranker(args.ranker, loaded.meta["objects"], next(loaded.model.parameters()).device)
        ranker = loaded.ranking()
        if sample.candidates > 1 and classifier is None and ranker is None:
            raise CondgenError(
                f"--candidates: ranking {sample.candidates} samples per request needs --ranker RUN or --classifier RUN"
            )
        evaluator = run_evaluator(loaded.meta, args.evaluator)
        _fresh_folder(args.out)
        x = generate(loaded.model, loaded.diffusion, labels, sample, classifier=classifier, ranker=ranker)
        images = loaded.decode(x)
        result = {"images": len(images), "sample": config_to_dict(sample)}
    if not torch.isfinite(images).all():
        args.out.rmdir()  # still empty: nothing is written from a broken model
        raise CondgenError(f"{args.run}: the model made non-finite images; its weights are broken (a diverged run?)")
    for i, image in enumerate(images):
        save_png(image, args.out / f"{i}.png")
    save_grid(images, args.out / "grid.png", nrow=8)
    if evaluator is not None and evaluator.codec.names == tuple(loaded.meta["objects"]):
        result |= evaluator.measure(images, labels)
    write_json(args.out / "scores.json", result)
    return result


def interpolate_command(args: argparse.Namespace) -> Path:
    """A GAN's images along the straight line between two noise vectors, for one fixed request."""
    loaded = load_generator(args.run, args.checkpoint, Generation.GAN)
    labels = request_labels(loaded.meta, None, args.objects)
    if args.out.exists():
        raise CondgenError(f"{args.out}: already exists; choose a new --out")
    images = interpolation_images(
        loaded, labels, loaded.config.eval_seed if args.seed is None else args.seed, args.frames
    )
    save_grid(images, args.out, nrow=args.frames)
    return args.out


def interpolation_images(loaded: GANModel, labels: torch.Tensor, seed: int, frames: int) -> torch.Tensor:
    """``frames`` images of one request (a (1, C) label row) whose noise moves in a straight line between two
    random vectors drawn from ``seed``: (frames, 3, H, W) in [-1, 1]."""
    source = torch.Generator().manual_seed(seed)
    start, end = torch.randn(2, loaded.config.model.noise_dim, generator=source)
    weights = torch.linspace(0, 1, frames)[:, None]
    z = (1 - weights) * start + weights * end
    device = next(loaded.generator.parameters()).device
    with torch.no_grad():
        return loaded.decode(loaded.generator(z.to(device), labels.expand(frames, -1).to(device)).cpu())


def denoise_command(args: argparse.Namespace) -> Path:
    """One row of the sampler's states, from pure noise to the final image, decoded to images."""
    loaded = load_generator(args.run, args.checkpoint, Generation.DIFFUSION)
    labels = request_labels(loaded.meta, None, args.objects)
    # one process pictured: the model's own settings, without ranking several samples
    sample = sample_settings(loaded.config.sample, args, loaded.diffusion.num_steps).changed(candidates=1)
    if args.out.exists():
        raise CondgenError(f"{args.out}: already exists; choose a new --out")
    states: list[torch.Tensor] = []  # x_T first (generate() reports it), then every sampler step
    record = lambda info: states.append(info["x"][0].cpu())  # noqa: E731
    generate(loaded.model, loaded.diffusion, labels, sample, callback=record, classifier=loaded.classifier)
    picks = torch.linspace(0, len(states) - 1, min(args.snapshots, len(states))).round().long().tolist()
    save_grid(loaded.decode(torch.stack([states[i] for i in picks])).clamp(-1, 1), args.out, nrow=len(picks))
    return args.out
