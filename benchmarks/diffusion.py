"""Diffusion benchmark: train on a dataset for a fixed wall-clock budget, then sample test.json and new_test.json
with DDPM (all T steps), DDIM-50 and DPM-Solver++(2M)-20, and score every image with the shipped evaluator.

Run by hand:
    python benchmarks/diffusion.py [--budget-minutes 60] [--config configs/ddpm_cpu.yaml] [--name diffusion_cpu]
Writes benchmarks/results/<name>.json and the scored images under benchmarks/results/<name>/{test,new_test}/<sampler>/.
"""

from __future__ import annotations

import argparse
import dataclasses
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
from condgen.diffusion.run import load_run
from condgen.diffusion.trainer import generate
from condgen.evaluate.evaluator import load_evaluator
from condgen.runs import start_training
from condgen.train.config import config_to_dict
from condgen.viz.grid import save_grid

ROOT = Path(__file__).resolve().parents[1]
SAMPLERS = {"dpmpp": 20, "ddim": 50, "ddpm": None}  # sampler -> steps (None: all T); the slowest last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "iclevr")
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "ddpm_cpu.yaml")
    parser.add_argument("--budget-minutes", type=float, default=60.0)
    parser.add_argument("--name", default="diffusion_cpu", help="result name (diffusion_cpu or diffusion_gpu)")
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "bench_diffusion", help="scratch run folder")
    parser.add_argument("--samplers", default="dpmpp,ddim,ddpm", help="comma-separated subset of dpmpp,ddim,ddpm")
    args = parser.parse_args()

    if args.run.exists():
        shutil.rmtree(args.run)
    overrides = [f"loop.max_minutes={args.budget_minutes}"]
    summary = start_training("ddpm", args.data, args.run, args.config, overrides, resume=False)
    model, diffusion, config, _ = load_run(args.run, "latest")
    device = next(model.parameters()).device
    evaluator = load_evaluator(device=device)
    images_seen = summary["step"] * config.optim.batch_size

    out_dir = ROOT / "benchmarks" / "results" / args.name
    shutil.rmtree(out_dir, ignore_errors=True)
    record = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        + (torch.cuda.get_device_name() if device.type == "cuda" else "CPU")
        + f", torch {torch.__version__}",
        "command": " ".join(["python", *[a if " " not in a else repr(a) for a in sys.argv]]),
        "config": config_to_dict(config),
        "budget_minutes": args.budget_minutes,
        "train_steps": summary["step"],
        "train_seconds": round(summary["seconds"], 1),
        "train_images_per_second": round(images_seen / summary["seconds"], 2),
        "evaluator": "shipped i-CLEVR evaluator (condgen/evaluate/weights)",
        "samplers": {},
    }
    for sampler in args.samplers.split(","):
        steps = SAMPLERS[sampler] or diffusion.num_steps
        sample = dataclasses.replace(config.sample, sampler=sampler, steps=steps)
        result = {"steps": steps, "network_evaluations_per_image": steps * (2 if sample.guidance != 1 else 1)}
        for file in ["test.json", "new_test.json"]:
            labels = load_label_file(args.data / file, evaluator.codec)
            start = time.perf_counter()
            images = generate(model, diffusion, labels, sample)
            seconds = time.perf_counter() - start
            folder = out_dir / Path(file).stem / sampler
            folder.mkdir(parents=True, exist_ok=True)
            for i, image in enumerate(images):
                save_png(image, folder / f"{i}.png")
            save_grid(images, out_dir / f"{Path(file).stem}_{sampler}_grid.png")
            result[f"accuracy_{Path(file).stem}"] = round(evaluator.accuracy(images, labels), 4)
            result[f"seconds_per_image_{Path(file).stem}"] = round(seconds / len(images), 3)
        record["samplers"][sampler] = result
        print(sampler, json.dumps(result), flush=True)
        # written after every sampler, so a long DDPM pass never holds the others hostage
        (ROOT / "benchmarks" / "results" / f"{args.name}.json").write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
