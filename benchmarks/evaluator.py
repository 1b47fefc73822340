"""Ship a trained evaluator: store it in float16 as the package's default and measure what that costs.

Run by hand after training one:
    condgen train evaluator --data ../shared/iclevr --out runs/iclevr_evaluator optim.epochs=20
    python benchmarks/evaluator.py --run runs/iclevr_evaluator
Writes condgen/evaluate/weights/iclevr_evaluator.{safetensors,json} and benchmarks/results/evaluator_cpu.json:
held-out accuracy (the scenes the training held out) in float32 and after the float16 round trip, and the shipped
file's exact-set rate at several detection thresholds. `--shipped` measures only the shipped file (no training run
needed: its record names the held-out split) and adds that to evaluator_cpu.json. `--repack` rewrites the shipped
file in the current float16 layout (condgen.tensorfile's byte planes), failing unless every tensor is unchanged.
--results names another folder for evaluator_cpu.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
from pathlib import Path

import torch

from condgen.data.iclevr import load_dataset
from condgen.data.imageio import to_signed
from condgen.data.splits import split_by_scene
from condgen.evaluate.evaluator import SHIPPED_WEIGHTS, Evaluator, load_evaluator, save_evaluator
from condgen.tensorfile import BYTE_PLANES, read_tensors, save_tensors

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", type=Path, help="a `train evaluator` run folder to ship")
    source.add_argument("--shipped", action="store_true", help="measure the shipped evaluator as it is")
    source.add_argument("--repack", action="store_true", help="rewrite the shipped file in the current layout")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "iclevr")
    parser.add_argument(
        "--results", type=Path, default=ROOT / "benchmarks" / "results", help="folder of evaluator_cpu.json"
    )
    args = parser.parse_args()
    out = args.results / "evaluator_cpu.json"
    weights = ROOT / "condgen" / "evaluate" / "weights"
    if args.repack:
        repack(weights / SHIPPED_WEIGHTS)
        return
    if args.shipped:
        report = json.loads((weights / "iclevr_evaluator.json").read_text())
        images, labels = held_out(args.data, report)
        result = json.loads(out.read_text()) | calibration(load_evaluator(weights / SHIPPED_WEIGHTS), images, labels)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))
        return

    report = json.loads((args.run / "evaluator.json").read_text())
    full = load_evaluator(args.run / "evaluator.safetensors")
    save_evaluator(full.model, full.codec, weights / SHIPPED_WEIGHTS, half=True)
    shutil.copy(args.run / "evaluator.json", weights / "iclevr_evaluator.json")
    half = load_evaluator(weights / SHIPPED_WEIGHTS)

    images, labels = held_out(args.data, report)
    result = {
        "date": datetime.date.today().isoformat(),
        "training_command": f"condgen train evaluator --data {os.path.relpath(args.data, ROOT)} "
        f"--out {os.path.relpath(args.run, ROOT)} optim.epochs={report['config']['epochs']}",
        "machine": report["machine"],
        "train_images": report["train_images"],
        "held_out_images": report["val_images"],
        "train_wall_seconds": round(report["train_seconds"], 1),
        "held_out_accuracy_fp32": round(full.accuracy(images, labels), 4),
        "held_out_accuracy_fp16_shipped": round(half.accuracy(images, labels), 4),
        "per_epoch_held_out_accuracy": [round(e["val_accuracy"], 4) for e in report["epochs"]],
        "shipped_file_bytes": (weights / SHIPPED_WEIGHTS).stat().st_size,
        **calibration(half, images, labels),
    }
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


def repack(path: Path) -> None:
    """Rewrites the shipped float16 evaluator with byte planes, bit for bit the same weights."""
    before, metadata = read_tensors(path)
    if any(t.is_floating_point() and t.dtype != torch.float16 for t in before.values()):
        raise SystemExit(f"{path}: not all float16; ship it from its run with --run instead")
    save_tensors(before, path, {k: v for k, v in metadata.items() if k != BYTE_PLANES}, half=True)
    after, _ = read_tensors(path)
    if before.keys() != after.keys() or any(not torch.equal(before[k], after[k]) for k in before):
        raise SystemExit(f"{path}: the rewritten tensors differ")
    print(f"rewrote {path} ({path.stat().st_size / 1e6:.1f} MB), every tensor unchanged")


def held_out(data_root: Path, report: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The real scenes the evaluator's training held out (its record's val_fraction and seed), as signed images."""
    data = load_dataset(data_root)
    _, val = split_by_scene(data.files, report["config"]["val_fraction"], report["config"]["seed"])
    return to_signed(data.images[val]), data.labels[val]


def calibration(evaluator: Evaluator, images: torch.Tensor, labels: torch.Tensor) -> dict:
    """Top-k accuracy beside the exact-set rate, precision and recall at several detection thresholds, on real
    held-out scenes: what a perfect generator would score, so generated images' figures can be read against it."""
    by_threshold = {str(t): evaluator.measure(images, labels, t) for t in THRESHOLDS}
    rounded = {t: {k: round(v, 4) for k, v in scores.items() if k != "accuracy"} for t, scores in by_threshold.items()}
    return {
        "held_out_exact_set_by_threshold": rounded,
        "held_out_exact_set_at_0.5": rounded["0.5"]["exact_set"],
    }


THRESHOLDS = (0.3, 0.5, 0.7)

if __name__ == "__main__":
    main()
