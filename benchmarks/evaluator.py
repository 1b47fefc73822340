"""Ship a trained evaluator: store it in float16 as the package's default and measure what that costs.

Run by hand after training one:
    condgen evaluator train --data ../shared/iclevr --out runs/iclevr_evaluator --epochs 20
    python benchmarks/evaluator.py --run runs/iclevr_evaluator
Writes condgen/evaluate/weights/iclevr_evaluator.{safetensors,json} and benchmarks/results/evaluator_cpu.json:
held-out accuracy (the scenes the training held out) in float32 and after the float16 round trip.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
from pathlib import Path

from condgen.data.iclevr import load_dataset
from condgen.data.imageio import to_signed
from condgen.evaluate.evaluator import SHIPPED_WEIGHTS, load_evaluator, save_evaluator
from condgen.evaluate.training import split_by_scene

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="an `evaluator train` run folder")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "iclevr")
    args = parser.parse_args()

    report = json.loads((args.run / "evaluator.json").read_text())
    full = load_evaluator(args.run / "evaluator.safetensors")
    weights = ROOT / "condgen" / "evaluate" / "weights"
    save_evaluator(full.model, full.codec, weights / SHIPPED_WEIGHTS, half=True)
    shutil.copy(args.run / "evaluator.json", weights / "iclevr_evaluator.json")
    half = load_evaluator(weights / SHIPPED_WEIGHTS)

    data = load_dataset(args.data)
    _, val = split_by_scene(data.files, report["config"]["val_fraction"], report["config"]["seed"])
    images, labels = to_signed(data.images[val]), data.labels[val]
    result = {
        "date": datetime.date.today().isoformat(),
        "training_command": f"condgen evaluator train --data {os.path.relpath(args.data, ROOT)} "
        f"--out {os.path.relpath(args.run, ROOT)} --epochs {report['config']['epochs']}",
        "machine": report["machine"],
        "train_images": report["train_images"],
        "held_out_images": report["val_images"],
        "train_wall_seconds": round(report["train_seconds"], 1),
        "held_out_accuracy_fp32": round(full.accuracy(images, labels), 4),
        "held_out_accuracy_fp16_shipped": round(half.accuracy(images, labels), 4),
        "per_epoch_held_out_accuracy": [round(e["val_accuracy"], 4) for e in report["epochs"]],
        "shipped_file_bytes": (weights / SHIPPED_WEIGHTS).stat().st_size,
    }
    out = ROOT / "benchmarks" / "results" / "evaluator_cpu.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
