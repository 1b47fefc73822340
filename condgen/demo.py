"""The main job on embedded data: render a dataset, train an evaluator on it, score it on unseen scenes."""

from __future__ import annotations

from pathlib import Path

from condgen.data.check import check_dataset, format_report
from condgen.data.iclevr import load_dataset
from condgen.data.synth import synthesize_dataset
from condgen.errors import CondgenError
from condgen.evaluate.scoring import evaluate_images
from condgen.evaluate.training import EvaluatorTrainConfig, train_evaluator
from condgen.viz.grid import save_grid


def run_demo(out: Path, n: int = 3000, epochs: int = 6, progress: bool = True) -> dict:
    """Writes ``out/data`` (n training scenes), ``out/evaluator``, ``out/heldout`` (n/10 unseen scenes from another
    seed), ``out/samples.png`` and prints the evaluator's accuracy on the unseen scenes."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise CondgenError(f"{out}: already exists and is not empty; remove it or pass another --out")
    print(f"[1/4] rendering {n} training images into {out / 'data'}")
    synthesize_dataset(out / "data", n=n, seed=0, progress=progress)
    print(format_report(check_dataset(out / "data", progress=progress)))
    print(f"[2/4] training the ResNet18 evaluator for {epochs} epochs into {out / 'evaluator'}")
    report = train_evaluator(
        load_dataset(out / "data", progress=progress),
        out / "evaluator",
        EvaluatorTrainConfig(epochs=epochs),
        progress=progress,
    )
    held_out = max(30, n // 10)
    print(f"[3/4] rendering {held_out} unseen images (another seed) into {out / 'heldout'}")
    synthesize_dataset(out / "heldout", n=held_out, seed=1, progress=progress)
    print("[4/4] scoring the unseen images with the trained evaluator")
    result = evaluate_images(data=out / "heldout", evaluator=out / "evaluator" / "evaluator.safetensors")
    save_grid(load_dataset(out / "heldout", progress=False).images[:32], out / "samples.png")
    print(
        f"\nvalidation accuracy (held-out scenes): {report['val_accuracy']:.4f}\n"
        f"accuracy on {held_out} unseen images:   {result['accuracy']:.4f}\n"
        f"sample grid: {out / 'samples.png'}\nevaluator:   {out / 'evaluator' / 'evaluator.safetensors'}"
    )
    return {"val_accuracy": report["val_accuracy"], "heldout_accuracy": result["accuracy"]}
