"""GAN benchmark: for ACGAN and for WGAN-GP with a projection discriminator, train on a dataset for a fixed
wall-clock budget each, then sample test.json and new_test.json from the best checkpoint and score them with the
shipped evaluator.

Run by hand:
    python benchmarks/gan.py [--budget-minutes 60] [--name gan_cpu]
Writes benchmarks/results/<name>.json and the scored images under benchmarks/results/<name>/<model>/{test,new_test}/.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import torch

from condgen.data.iclevr import load_label_file
from condgen.data.imageio import save_png
from condgen.evaluate.evaluator import load_evaluator
from condgen.gan.run import load_gan
from condgen.gan.trainer import sample_images
from condgen.runs import start_training
from condgen.train.config import config_to_dict
from condgen.viz.grid import save_grid

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"acgan": "gan_acgan.yaml", "wgangp_projection": "gan_wgangp_projection.yaml"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "iclevr")
    parser.add_argument("--budget-minutes", type=float, default=60.0, help="per model")
    parser.add_argument("--name", default="gan_cpu", help="result name (gan_cpu or gan_gpu)")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {','.join(MODELS)}")
    args = parser.parse_args()

    out_dir = ROOT / "benchmarks" / "results" / args.name
    shutil.rmtree(out_dir, ignore_errors=True)
    evaluator = load_evaluator()
    record = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        + (torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU")
        + f", torch {torch.__version__}",
        "command": " ".join(["python", *sys.argv]),
        "budget_minutes_per_model": args.budget_minutes,
        "evaluator": "shipped i-CLEVR evaluator (condgen/evaluate/weights)",
        "models": {},
    }
    for name in args.models.split(","):
        run = ROOT / "runs" / f"bench_{name}"
        shutil.rmtree(run, ignore_errors=True)
        summary = start_training(
            "gan", args.data, run, ROOT / "configs" / MODELS[name], [f"loop.max_minutes={args.budget_minutes}"], False
        )
        generator, config, _ = load_gan(run, "best")
        result = {
            "config": config_to_dict(config),
            "train_steps": summary["step"],
            "train_seconds": round(summary["seconds"], 1),
            "seconds_per_step": round(summary["seconds"] / max(1, summary["step"]), 3),
            "best_accuracy_during_training": summary["best_accuracy"],
        }
        for file in ["test.json", "new_test.json"]:
            labels = load_label_file(args.data / file, evaluator.codec)
            start = time.perf_counter()
            images = sample_images(generator, labels, config.eval_seed)
            seconds = time.perf_counter() - start
            folder = out_dir / name / Path(file).stem
            folder.mkdir(parents=True, exist_ok=True)
            for i, image in enumerate(images):
                save_png(image, folder / f"{i}.png")
            save_grid(images, out_dir / name / f"{Path(file).stem}_grid.png")
            result[f"accuracy_{Path(file).stem}"] = round(evaluator.accuracy(images, labels), 4)
            result[f"seconds_per_image_{Path(file).stem}"] = round(seconds / len(images), 4)
        record["models"][name] = result
        print(name, json.dumps({k: v for k, v in result.items() if k != "config"}), flush=True)
        (ROOT / "benchmarks" / "results" / f"{args.name}.json").write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
