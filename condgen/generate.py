"""``condgen sample``, ``denoise`` and ``interpolate``: images, grids and process pictures from any run whose kind
can generate (the table in :mod:`condgen.kinds` says how)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from condgen.data.imageio import save_png
from condgen.data.jsonio import write_json
from condgen.data.vocabulary import DEFAULT_OBJECTS
from condgen.device import enable_tf32
from condgen.diffusion.run import DiffusionModel, load_classifier
from condgen.diffusion.sampling import SampleConfig, SampleOverrides, generate
from condgen.diffusion.unet import NoisyClassifier
from condgen.errors import CondgenError
from condgen.evaluate.evaluator import Evaluator
from condgen.evaluate.ranker import image_ranking, load_ranker, load_ranker_counter, ranker_weights
from condgen.gan.run import GANModel
from condgen.kinds import KINDS, Generation, Kind, kind_of
from condgen.latent.classifier import load_latent_classifier
from condgen.nn.ranking import Reading
from condgen.train.config import config_to_dict, load_config
from condgen.train.runs import checkpoint_folder, read_run, request_labels, run_evaluator
from condgen.viz.grid import save_grid


def load_generator(run: Path, checkpoint: str, *allowed: Generation) -> Any:
    """The trained model of a run whose kind generates in one of the ``allowed`` ways (any way when none is
    given): a :class:`DiffusionModel` or a :class:`GANModel`."""
    kind = kind_of(read_run(run), run)
    if kind.generation is None or (allowed and kind.generation not in allowed):
        able = [k.name for k in KINDS.values() if k.generation is not None and (not allowed or k.generation in allowed)]
        others = f" (or {', '.join(able[1:])})" if len(able) > 1 else ""
        raise CondgenError(f"{run}: a {kind.name} run; this needs a {able[0]} run{others}")
    _check_model_sizes(kind, run, checkpoint)
    loaded = _load_model(kind, run, checkpoint)
    built_for, objects = getattr(loaded.config.model, "num_labels", None), loaded.meta.get("objects")
    if built_for is not None and (not isinstance(objects, list) or len(objects) != built_for):
        listed = f"lists {len(objects)} objects" if isinstance(objects, list) else "lists no objects"
        raise CondgenError(f"{run / 'run.json'}: {listed}, but the model was built for {built_for} (model.num_labels)")
    model = loaded.model if isinstance(loaded, DiffusionModel) else loaded.generator
    enable_tf32(next(model.parameters()).device)
    return loaded


# what torch raises when a folder's config.yaml describes no model it can build: sizes too large to allocate
# (RuntimeError, MemoryError, OverflowError), out of a layer's range (ValueError: a dropout of -1), of no use
# (TypeError, IndexError)
BUILD_ERRORS = (RuntimeError, MemoryError, OverflowError, ValueError, TypeError, IndexError)


def _check_model_sizes(kind: Kind, run: Path, checkpoint: str) -> None:
    """Refuses a config.yaml whose model section holds a size (channels, blocks, a width) larger than the number of
    weights the checkpoint stores, which every such size multiplies into: a damaged or hand-edited config would
    otherwise build, for minutes or out of memory, a model that cannot take those weights."""
    folder, _ = checkpoint_folder(run, kind.name, checkpoint)
    stored = _stored_weights(folder)
    model = getattr(load_config(kind.config_class(), run / "config.yaml"), "model", None)
    if stored is None or not is_dataclass(model):
        return  # a file the kind's loader reports better
    for field in fields(model):
        value = getattr(model, field.name)
        for size in value if isinstance(value, tuple) else (value,):
            if isinstance(size, int) and not isinstance(size, bool) and size > stored:
                raise CondgenError(
                    f"{run / 'config.yaml'}: model.{field.name} is {value}, more than the {stored:,} weights of "
                    f"{folder} can hold"
                )


def _stored_weights(folder: Path) -> int | None:
    """How many numbers the safetensors files of a checkpoint ``folder`` store, read from their headers alone;
    None where one cannot be read."""
    total = 0
    for path in folder.glob("*.safetensors"):
        try:
            with safe_open(path, framework="pt") as handle:
                total += sum(math.prod(handle.get_slice(name).get_shape()) for name in handle.keys())  # noqa: SIM118
        except (SafetensorError, OSError, ValueError, TypeError):
            return None
    return total


def _load_model(kind: Kind, run: Path, checkpoint: str) -> Any:
    """``kind``'s model of ``run``: every file is read and checked by the kind's loader, and a model its config
    cannot build (a damaged or hand-edited config.yaml) is a one-line error too."""
    try:
        return kind.load_model(run, checkpoint)
    except BUILD_ERRORS as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        raise CondgenError(
            f"{run / 'config.yaml'}: the model it describes cannot be built here ({type(exc).__name__}: {first})"
        ) from None


def sample_overrides(args: argparse.Namespace) -> SampleOverrides:
    """The command line's --sampler, --steps, --guidance, --guidance-min-t, --eta, --spacing, --seed and, where the
    command has them, --classifier-scale, --classifier-absent-scale and --candidates."""
    return SampleOverrides(**{field.name: getattr(args, field.name, None) for field in fields(SampleOverrides)})


def sample_settings(
    config_sample: SampleConfig, overrides: SampleOverrides, num_steps: int, classifier_given: bool = False
) -> SampleConfig:
    """The run's sample settings with ``overrides``, checked against the model's T (``num_steps``). A noisy
    classifier given alone (``classifier_given``, --classifier) guides at scale 1."""
    sample = overrides.apply(config_sample, num_steps)
    if classifier_given and not sample.uses_classifier:
        sample = sample.changed(classifier_scale=1.0)
    sample.check(num_steps)
    return sample


def guiding_classifier(loaded: DiffusionModel, run: Path | None) -> NoisyClassifier | None:
    """The noisy classifier that guides and ranks ``loaded``'s samples: the ``run`` given (--classifier; a
    ``classifier`` run for a ddpm model, a ``latent-classifier`` run for an ldm model), else the model folder's own."""
    if run is None:
        return loaded.classifier
    if hasattr(loaded.config, "autoencoder"):  # a latent model: a latent-classifier run
        return load_latent_classifier(run, loaded.config)
    return load_classifier(run, loaded.config.diffusion)[0]


def check_gan_options(
    overrides: SampleOverrides,
    run: Path,
    classifier: Path | None = None,
    ranker: Path | None = None,
    ranker_counter: Path | None = None,
) -> None:
    """A GAN takes a seed and candidates alone: refuses the diffusion sampling settings that ``overrides`` sets and
    a noisy ``classifier``, an image ``ranker`` or its ``ranker_counter``."""
    given = [key for key in overrides.given() if key not in ("seed", "candidates")]
    named = (("classifier", classifier), ("ranker", ranker), ("ranker_counter", ranker_counter))
    given += [key for key, value in named if value is not None]
    if given:
        options = ", ".join("--" + key.replace("_", "-") for key in given)
        raise CondgenError(f"{options}: diffusion runs only; {run} is a gan run, which takes --seed alone")


def _fresh_folder(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CondgenError(f"{out}: already exists and is not empty; choose a new --out")
    out.mkdir(parents=True, exist_ok=True)


def sample_command(args: argparse.Namespace) -> dict:
    """``condgen sample``: :func:`write_samples` with the command line's options."""
    return write_samples(
        args.run,
        args.out,
        args.labels,
        args.objects,
        sample_overrides(args),
        args.checkpoint,
        args.evaluator,
        args.ranker,
        args.classifier,
        args.ranker_counter,
    )


def write_samples(
    run: Path,
    out: Path,
    labels: Path | None = None,
    objects: str | None = None,
    overrides: SampleOverrides | None = None,
    checkpoint: str = "best",
    evaluator: Path | None = None,
    ranker: Path | None = None,
    classifier: Path | None = None,
    ranker_counter: Path | None = None,
) -> dict:
    """Images for the label lists of the file ``labels`` (or the one request ``objects``) from a generating ``run``:
    N.png, grid.png and scores.json under the new folder ``out``. ``overrides`` change the run's sampling settings;
    ``evaluator`` scores the images in place of the run's own; a diffusion run's samples are ranked by the image
    ``ranker`` (with its object counter ``ranker_counter``) and guided and ranked by the noisy ``classifier`` given,
    else by the model folder's own."""
    overrides = overrides or SampleOverrides()
    loaded = load_generator(run, checkpoint)
    rows = request_labels(loaded.meta, labels, objects)
    if isinstance(loaded, GANModel):
        check_gan_options(overrides, run, classifier, ranker, ranker_counter)
        scorer = run_evaluator(loaded.meta, evaluator)
        _fresh_folder(out)
        images, result = gan_images(loaded, rows, overrides)
    else:
        sample = sample_settings(loaded.config.sample, overrides, loaded.diffusion.num_steps, classifier is not None)
        guide = guiding_classifier(loaded, classifier)
        ranking = sample_ranking(loaded, ranker, evaluator, ranker_counter)
        if sample.candidates > 1 and guide is None and ranking is None:
            raise CondgenError(
                f"--candidates: ranking {sample.candidates} samples per request needs --ranker RUN or --classifier RUN"
            )
        scorer = run_evaluator(loaded.meta, evaluator)
        _fresh_folder(out)
        images = loaded.decode(generate(loaded.model, loaded.diffusion, rows, sample, classifier=guide, ranker=ranking))
        result = {"images": len(images), "sample": config_to_dict(sample)}
    if not torch.isfinite(images).all():
        out.rmdir()  # still empty: nothing is written from a broken model
        raise CondgenError(f"{run}: the model made non-finite images; its weights are broken (a diverged run?)")
    if scorer is not None and scorer.codec.names != tuple(loaded.meta["objects"]):
        scorer = None  # an evaluator of other objects cannot score these images
    return save_samples(images, rows, out, result, scorer)


def gan_images(loaded: GANModel, labels: torch.Tensor, overrides: SampleOverrides) -> tuple[torch.Tensor, dict]:
    """A GAN's images for ``labels`` with the seed and candidates of ``overrides`` (else its own), and their
    record."""
    seed = loaded.config.eval_seed if overrides.seed is None else overrides.seed
    candidates = loaded.config.candidates if overrides.candidates is None else overrides.candidates
    images = loaded.sample(labels, seed, candidates)
    return images, {"images": len(images), "seed": seed, "candidates": candidates}


def sample_ranking(
    loaded: DiffusionModel, ranker: Path | None, evaluator: Path | None, counter: Path | None = None
) -> Callable[[torch.Tensor], Reading] | None:
    """How ``loaded``'s candidates are ranked by their images: by the ``ranker`` given (--ranker), which must not be
    the ``evaluator`` that scores them, else by the model folder's own ranker (None without one). The ranker counts
    objects with the ``counter`` given (--ranker-counter; never the shipped counter), else the folder's own ranker
    with the folder's own counter and a ranker given with none. The loaded model keeps its own ranker and counter."""
    if ranker is None and counter is None:
        return loaded.ranking()
    if ranker is None and loaded.ranker is None:
        raise CondgenError(
            f"--ranker-counter {counter}: the counter ranks beside an image ranker; give --ranker RUN or a model "
            "folder with its own ranker.safetensors"
        )
    if ranker is not None and evaluator is not None and ranker_weights(ranker).resolve() == evaluator.resolve():
        raise CondgenError(f"--ranker {ranker}: the --evaluator scores the images; it cannot rank them")
    device, objects = next(loaded.model.parameters()).device, loaded.meta["objects"]
    model = loaded.ranker if ranker is None else load_ranker(ranker, objects, device)
    counting = load_ranker_counter(counter, objects, device) if counter is not None else None
    return image_ranking(model, loaded.decode, counter=counting)


def save_samples(
    images: torch.Tensor, labels: torch.Tensor, out: Path, result: dict, evaluator: Evaluator | None
) -> dict:
    """Writes ``images`` as ``out``/N.png and an 8-per-row grid.png, and ``result`` with ``evaluator``'s scores of
    the images for ``labels`` (where one is given) as scores.json; returns that record."""
    for i, image in enumerate(images):
        save_png(image, out / f"{i}.png")
    save_grid(images, out / "grid.png", nrow=8)
    if evaluator is not None:
        result |= evaluator.measure(images, labels)
    write_json(out / "scores.json", result)
    return result


def interpolate_command(args: argparse.Namespace) -> Path:
    """``condgen interpolate``: :func:`write_interpolation` with the command line's options."""
    return write_interpolation(args.run, args.out, args.objects, args.seed, args.frames, args.checkpoint)


def write_interpolation(
    run: Path,
    out: Path,
    objects: str = DEFAULT_OBJECTS,
    seed: int | None = None,
    frames: int = 10,
    checkpoint: str = "best",
) -> Path:
    """A GAN run's ``frames`` images of the request ``objects`` along the straight line between two noise vectors
    drawn from ``seed`` (else its eval_seed), written as one strip to the new file ``out``."""
    loaded = load_generator(run, checkpoint, Generation.GAN)
    labels = request_labels(loaded.meta, None, objects)
    if out.exists():
        raise CondgenError(f"{out}: already exists; choose a new --out")
    images = interpolation_images(loaded, labels, loaded.config.eval_seed if seed is None else seed, frames)
    save_grid(images, out, nrow=frames)
    return out


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
    """``condgen denoise``: :func:`write_denoising` with the command line's options."""
    return write_denoising(args.run, args.out, args.objects, sample_overrides(args), args.checkpoint, args.snapshots)


def write_denoising(
    run: Path,
    out: Path,
    objects: str = DEFAULT_OBJECTS,
    overrides: SampleOverrides | None = None,
    checkpoint: str = "best",
    snapshots: int = 10,
) -> Path:
    """One row of ``snapshots`` of a diffusion run's sampler states for the request ``objects``, from pure noise to
    the final image, decoded to images and written to the new file ``out``; ``overrides`` change the run's sampling
    settings."""
    kind = kind_of(read_run(run), run)
    if kind.generation == Generation.GAN:
        raise CondgenError(
            f"{run}: a {kind.name} model draws in one pass, so it has no denoising process to picture; "
            f"`condgen interpolate --model {run}` pictures its noise space"
        )
    loaded = load_generator(run, checkpoint, Generation.DIFFUSION)
    labels = request_labels(loaded.meta, None, objects)
    # one process pictured: the model's own settings, without ranking several samples
    settings = sample_settings(loaded.config.sample, overrides or SampleOverrides(), loaded.diffusion.num_steps)
    sample = settings.changed(candidates=1)
    if out.exists():
        raise CondgenError(f"{out}: already exists; choose a new --out")
    states: list[torch.Tensor] = []  # x_T first (generate() reports it), then every sampler step
    record = lambda info: states.append(info["x"][0].cpu())  # noqa: E731
    generate(loaded.model, loaded.diffusion, labels, sample, callback=record, classifier=loaded.classifier)
    picks = torch.linspace(0, len(states) - 1, min(snapshots, len(states))).round().long().tolist()
    save_grid(loaded.decode(torch.stack([states[i] for i in picks])).clamp(-1, 1), out, nrow=len(picks))
    return out
