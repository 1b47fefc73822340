"""The main job on embedded data: render a dataset, train an evaluator on it, train a small conditional diffusion
model for a few CPU minutes, generate the test conditions and score them."""

from __future__ import annotations

from pathlib import Path

from condgen.data.check import check_dataset, format_report
from condgen.data.iclevr import load_dataset
from condgen.data.synth import synthesize_dataset
from condgen.errors import CondgenError
from condgen.evaluate.scoring import evaluate_images
from condgen.evaluate.training import EvaluatorTrainConfig, train_evaluator
from condgen.generate import denoise_command, sample_command
from condgen.launch import start_training
from condgen.parser import build_parser

# A UNet small enough to learn something in minutes on two cores (configs/ddpm_cpu.yaml is the same family).
DEMO_DDPM = [
    "model.channels=32",
    "model.channel_mults=[1,2,4]",
    "model.attention_resolutions=[8]",
    "diffusion.min_snr_gamma=5",
    "optim.lr=0.001",
    "optim.warmup_steps=50",
    "optim.ema_decay=0.995",
    "loop.steps=1000000",
    "loop.eval_every=0",
    "loop.checkpoint_every=500",
]


def run_demo(out: Path, n: int, epochs: int, ddpm_minutes: float, progress: bool = True) -> dict:
    """Writes under ``out``: data/ (n rendered images), evaluator/, heldout/ (unseen scenes), ddpm/ (the run),
    samples/ (test.json generated, with grid.png and scores.json) and denoise.png."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise CondgenError(f"{out}: already exists and is not empty; remove it or pass another --out")
    print(f"[1/5] rendering {n} training images into {out / 'data'}")
    synthesize_dataset(out / "data", n=n, seed=0, progress=progress)
    print(format_report(check_dataset(out / "data", progress=progress)))

    print(f"[2/5] training the ResNet18 evaluator for {epochs} epochs into {out / 'evaluator'}")
    evaluator = out / "evaluator" / "evaluator.safetensors"
    report = train_evaluator(
        load_dataset(out / "data", progress=progress),
        out / "evaluator",
        EvaluatorTrainConfig(epochs=epochs, batch_size=32, lr=1e-3),
        progress=progress,
    )
    held_out = max(30, n // 10)
    print(f"[3/5] scoring the evaluator on {held_out} unseen images (another seed) in {out / 'heldout'}")
    synthesize_dataset(out / "heldout", n=held_out, seed=1, progress=progress)
    evaluator_accuracy = evaluate_images(data=out / "heldout", evaluator=evaluator)["accuracy"]

    print(f"[4/5] training a conditional diffusion model for {ddpm_minutes:g} minutes into {out / 'ddpm'}")
    overrides = [*DEMO_DDPM, f"loop.max_minutes={ddpm_minutes}"]
    start_training("ddpm", out / "data", out / "ddpm", None, overrides, False, evaluator, progress=progress)

    print("[5/5] generating the test.json conditions and the denoising picture")
    # through the command line's own parser, so every sampling option keeps its default here too
    parse = build_parser().parse_args
    run = ["--run", str(out / "ddpm"), "--checkpoint", "latest", "--seed", "0"]
    request = ["--labels", str(out / "data" / "test.json"), "--evaluator", str(evaluator)]
    scores = sample_command(parse(["sample", *run, *request, "--out", str(out / "samples")]))
    denoise_command(parse(["denoise", *run, "--out", str(out / "denoise.png")]))
    print(
        f"\nevaluator accuracy on unseen rendered scenes: {evaluator_accuracy:.4f} "
        f"(held-out scenes during training: {report['val_accuracy']:.4f})\n"
        f"generated test.json accuracy (by that evaluator): {scores['accuracy']:.4f}\n"
        f"generated grid:     {out / 'samples' / 'grid.png'}\n"
        f"denoising process:  {out / 'denoise.png'}\n"
        f"scores:             {out / 'samples' / 'scores.json'}"
    )
    return {"evaluator_accuracy": evaluator_accuracy, "generation_accuracy": scores["accuracy"]}
