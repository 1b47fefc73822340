"""``condgen sample``, ``denoise`` and ``interpolate``: images, grids and process pictures from any run."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from condgen.data.imageio import save_png
from condgen.data.jsonio import write_json
from condgen.diffusion.run import load_classifier, load_run
from condgen.diffusion.samplers import DEFAULT_STEPS, Spacing
from condgen.diffusion.trainer import check_sample_config, generate
from condgen.errors import CondgenError
from condgen.gan.run import load_gan
from condgen.gan.trainer import sample_images
from condgen.runs import read_run, request_labels, run_evaluator
from condgen.viz.grid import save_grid


def _sample_config(config, args):
    """The run's sample settings with the command line's --sampler, --steps, --guidance, --guidance-min-t, --eta,
    --spacing and --seed."""
    keys = ["sampler", "steps", "guidance", "guidance_min_t", "eta", "spacing", "seed"]
    given = {key: getattr(args, key) for key in keys}
    changes = {key: value for key, value in given.items() if value is not None}
    if "spacing" in changes:
        changes["spacing"] = Spacing(changes["spacing"])
    if args.sampler is not None and args.steps is None:
        changes["steps"] = DEFAULT_STEPS[args.sampler] or 0
    sample = dataclasses.replace(config.sample, **changes)
    check_sample_config(sample, config.diffusion.num_steps)
    return sample


def load_diffusion(run: Path, checkpoint: str):
    """A ddpm or ldm run: (model, process, config, run.json, decode), where decode turns what the sampler makes
    into images (the autoencoder's decoder for an ldm run, nothing for pixel diffusion)."""
    if read_run(run).get("kind") == "ldm":
        from condgen.latent.run import load_ldm

        return load_ldm(run, checkpoint)
    return (*load_run(run, checkpoint), lambda images: images)


def _fresh_folder(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CondgenError(f"{out}: already exists and is not empty; choose a new --out")
    out.mkdir(parents=True, exist_ok=True)


def sample_command(args) -> dict:
    """Images for label lists from a ddpm, ldm or gan run: N.png, grid.png and scores.json under ``args.out``."""
    if read_run(args.run).get("kind") == "gan":
        generator, config, meta = load_gan(args.run, args.checkpoint)
        labels = request_labels(meta, args.labels, args.objects)
        seed = config.eval_seed if args.seed is None else args.seed
        evaluator = run_evaluator(meta, args.evaluator)
        _fresh_folder(args.out)
        images = sample_images(generator, labels, seed)
        result = {"images": len(images), "seed": seed}
    else:
        model, diffusion, config, meta, decode = load_diffusion(args.run, args.checkpoint)
        labels = request_labels(meta, args.labels, args.objects)
        sample = _sample_config(config, args)
        evaluator = run_evaluator(meta, args.evaluator)
        classifier = None
        if getattr(args, "classifier", None) is not None:
            if meta["kind"] != "ddpm":
                raise CondgenError("--classifier: classifier guidance works on pixel-space (ddpm) runs only")
            classifier = load_classifier(args.classifier, config.diffusion)
            sample = dataclasses.replace(sample, classifier_scale=args.classifier_scale)
        _fresh_folder(args.out)
        images = decode(generate(model, diffusion, labels, sample, classifier=classifier))
        result = {"images": len(images), "sample": dataclasses.asdict(sample) | {"spacing": sample.spacing.value}}
    for i, image in enumerate(images):
        save_png(image, args.out / f"{i}.png")
    save_grid(images, args.out / "grid.png", nrow=8)
    if evaluator is not None and evaluator.codec.names == tuple(meta["objects"]):
        result["accuracy"] = evaluator.accuracy(images, labels)
    write_json(args.out / "scores.json", result)
    return result


def interpolate_command(args) -> Path:
    """A GAN's images along the straight line between two noise vectors, for one fixed request."""
    generator, config, meta = load_gan(args.run, args.checkpoint)
    labels = request_labels(meta, None, args.objects)
    if args.out.exists():
        raise CondgenError(f"{args.out}: already exists; choose a new --out")
    source = torch.Generator().manual_seed(config.eval_seed if args.seed is None else args.seed)
    start, end = torch.randn(2, config.model.noise_dim, generator=source)
    weights = torch.linspace(0, 1, args.frames)[:, None]
    z = (1 - weights) * start + weights * end
    device = next(generator.parameters()).device
    with torch.no_grad():
        images = generator(z.to(device), labels.expand(args.frames, -1).to(device)).cpu()
    save_grid(images, args.out, nrow=args.frames)
    return args.out


def denoise_command(args) -> Path:
    model, diffusion, config, meta, decode = load_diffusion(args.run, args.checkpoint)
    labels = request_labels(meta, None, args.objects)
    sample = _sample_config(config, args)
    if args.out.exists():
        raise CondgenError(f"{args.out}: already exists; choose a new --out")
    states: list[torch.Tensor] = []  # x_T first (generate() reports it), then every sampler step
    generate(model, diffusion, labels, sample, callback=lambda info: states.append(info["x"][0].cpu()))
    picks = torch.linspace(0, len(states) - 1, min(args.snapshots, len(states))).round().long().tolist()
    save_grid(decode(torch.stack([states[i] for i in picks])).clamp(-1, 1), args.out, nrow=len(picks))
    return args.out
