"""The main job: generate and score i-CLEVR's test conditions with every shipped model, then show the training path
on embedded data: render a dataset, train an evaluator on it, train a small conditional latent diffusion model in the
shipped model's autoencoder's latent space for a few CPU minutes, generate the rendered set's test conditions and
score them."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from condgen.data.check import check_dataset, format_report
from condgen.data.jsonio import read_json
from condgen.data.synth import synthesize_dataset
from condgen.diffusion.sampling import SampleOverrides
from condgen.errors import CondgenError
from condgen.evaluate.scoring import evaluate_images
from condgen.generate import write_denoising, write_interpolation, write_samples
from condgen.kinds import Generation, kind_of
from condgen.launch import start_training
from condgen.pretrained import ICLEVR_LABELS, PRETRAINED, shipped_folders, shipped_models
from condgen.train.runs import read_run

# configs/ldm_cpu.yaml with a faster start (learning rate, warm-up, EMA) for a run of minutes. In the latent space of
# an autoencoder trained on real scenes it learns in minutes what a pixel-space model does not: 3 minutes gave 0.43
# on the rendered test.json with clean, if rough, scenes, against 0.16 and noisy images from a pixel UNet in 4.
DEMO_LDM = [
    "model.channels=64",
    "model.channel_mults=[1,2]",
    "model.attention_resolutions=[8]",
    "model.cross_attention=true",
    "diffusion.schedule=cosine",
    "diffusion.min_snr_gamma=5",
    "optim.lr=0.001",
    "optim.warmup_steps=50",
    "optim.ema_decay=0.995",
    "loop.steps=1000000",
    "loop.eval_every=0",
    "loop.checkpoint_every=500",
    "sample.sampler=dpmpp",
    "sample.steps=20",
    "sample.guidance=8",
    "sample.clip_x0=4",
]


# a shipped diffusion model samples with its own settings; tests shorten it
SHIPPED_SAMPLING = SampleOverrides()


def run_demo(out: Path, n: int, epochs: int, train_minutes: float, progress: bool = True) -> dict:
    """Writes under ``out``: pretrained/NAME/ for each shipped model (its test.json and new_test.json images, grids
    and scores, and its denoise.png, or a GAN's interpolation.png), then data/ (n rendered images), evaluator/,
    heldout/ (unseen scenes), ldm/ (the run), samples/ (test.json generated, with grid.png and scores.json) and
    denoise.png."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise CondgenError(f"{out}: already exists and is not empty; remove it or pass another --out")
    shipped = shipped_folders()
    say(
        f"[1/6] the shipped models ({', '.join(folder.name for folder in shipped)}): generating i-CLEVR's test.json "
        f"and new_test.json into {out / 'pretrained'}"
    )
    shown = {folder.name: show_shipped_model(folder, out / "pretrained" / folder.name) for folder in shipped}
    # the shipped latent diffusion model's autoencoder hosts the training path's latent diffusion model
    host = next((PRETRAINED / name for name in shipped_models({"ldm"})), shipped[0])

    say(f"[2/6] rendering {n} training images into {out / 'data'}")
    synthesize_dataset(out / "data", n=n, seed=0, progress=progress)
    print(format_report(check_dataset(out / "data", progress=progress)))

    say(f"[3/6] training the ResNet18 evaluator for {epochs} epochs into {out / 'evaluator'}")
    recipe = [f"optim.epochs={epochs}", "optim.batch_size=32", "optim.lr=1e-3"]
    evaluator = start_training("evaluator", out / "data", out / "evaluator", None, recipe, False, progress=progress)[
        "wrote"
    ]
    report = read_json(out / "evaluator" / "evaluator.json")
    held_out = max(30, n // 10)
    say(f"[4/6] scoring the evaluator on {held_out} unseen images (another seed) in {out / 'heldout'}")
    synthesize_dataset(out / "heldout", n=held_out, seed=1, progress=progress)
    evaluator_accuracy = evaluate_images(data=out / "heldout", evaluator=evaluator)["accuracy"]

    say(
        f"[5/6] training a conditional latent diffusion model for {train_minutes:g} minutes into {out / 'ldm'}, in "
        f"the latent space of the shipped model's autoencoder ({host / 'autoencoder'})"
    )
    overrides = [*DEMO_LDM, f"loop.max_minutes={train_minutes}", f"autoencoder={host / 'autoencoder'}"]
    start_training("ldm", out / "data", out / "ldm", None, overrides, False, evaluator, progress=progress)

    say("[6/6] generating the rendered set's test.json conditions and the denoising picture")
    seeded = SampleOverrides(seed=0)
    test_json = out / "data" / "test.json"
    scores = write_samples(
        out / "ldm", out / "samples", test_json, overrides=seeded, checkpoint="latest", evaluator=evaluator
    )
    write_denoising(out / "ldm", out / "denoise.png", overrides=seeded, checkpoint="latest")

    lines = []
    for folder in shipped:
        lines.append(f"\nThe shipped model {folder.name}, trained on real i-CLEVR ({folder / 'README.md'} says how):")
        files, process = shown[folder.name]
        for name, result in files.items():
            scene = f", exact-scene rate {result['exact_scene']:.4f}" if "exact_scene" in result else ""
            lines.append(
                f"  {name + '.json':<14} accuracy {result['accuracy']:.4f}, exact-set rate {result['exact_set']:.4f}"
                f"{scene}  grid: {out / 'pretrained' / folder.name / name / 'grid.png'}"
            )
        lines.append(f"  {'denoising process' if process.stem == 'denoise' else 'interpolation'}: {process}")
    lines += [
        f"Trained here in {train_minutes:g} minutes on rendered scenes, to show the training path (rough images):",
        f"  evaluator accuracy on unseen rendered scenes: {evaluator_accuracy:.4f} "
        f"(held-out scenes during training: {report['val_accuracy']:.4f})",
        f"  generated test.json: accuracy {scores['accuracy']:.4f}, exact-set rate {scores['exact_set']:.4f} "
        "(by that evaluator)",
        f"  grid: {out / 'samples' / 'grid.png'}; denoising process: {out / 'denoise.png'}; runs: {out}",
        "accuracy: the course's top-k score (of an image's k requested objects, the share among the evaluator's k "
        "likeliest); exact-set rate: the share of images in which the evaluator detects (probability > 0.5) exactly "
        "the requested objects; exact-scene rate: the share in which, besides, the shipped object counter counts as "
        "many objects as requested (each requested object once).",
    ]
    print("\n".join(lines))
    return {
        "shipped": {model: {name: r["accuracy"] for name, r in files.items()} for model, (files, _) in shown.items()},
        "evaluator_accuracy": evaluator_accuracy,
        "generation_accuracy": scores["accuracy"],
    }


def say(line: str) -> None:
    """A line of the demo's story, shown at once even where stdout is a pipe or a file (which Python buffers)."""
    print(line, flush=True)


def show_shipped_model(folder: Path, out: Path) -> tuple[dict, Path]:
    """A shipped model's test.json and new_test.json images and scores under ``out`` (noise seed 0), with its
    denoising picture (a GAN: its interpolation strip); returns the scores per file and the picture's path."""
    diffusion = kind_of(read_run(folder), folder).generation is Generation.DIFFUSION
    overrides = dataclasses.replace(SHIPPED_SAMPLING if diffusion else SampleOverrides(), seed=0)
    scores = {}
    for name, labels in ICLEVR_LABELS.items():
        started = time.perf_counter()
        scores[name] = write_samples(folder, out / name, labels, overrides=overrides)
        took = time.perf_counter() - started
        say(f"  {folder.name}: {name}.json, {scores[name]['images']} images in {took:.0f} s")
    if diffusion:
        return scores, write_denoising(folder, out / "denoise.png", overrides=overrides)
    return scores, write_interpolation(folder, out / "interpolation.png", seed=0)
