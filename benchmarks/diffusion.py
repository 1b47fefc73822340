"""Diffusion benchmark: train on a dataset for a fixed wall-clock budget, then sample test.json and new_test.json
with DDPM (all T steps), DDIM-50 and DPM-Solver++(2M)-20, and score every image with the shipped evaluator.

Each sampler runs at the classifier-free guidance scale chosen for it on label lists drawn from train.json
(--guidance); DDPM takes DDIM's, whose choice costs a fraction of DDPM's own.

Run by hand:
    python benchmarks/diffusion.py [--budget-minutes 60] [--config configs/ddpm_cpu.yaml] [--name diffusion_cpu]
Writes benchmarks/results/<name>.json and the scored images under benchmarks/results/<name>/{test,new_test}/<sampler>/
(--results names another folder).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from common import DATA, add_results_argument, add_sampling_arguments, result_header, score_samplers

from condgen.evaluate.evaluator import load_evaluator
from condgen.kinds import KINDS
from condgen.launch import start_training
from condgen.train.config import config_to_dict
from condgen.train.runs import read_metrics

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "ddpm_cpu.yaml")
    parser.add_argument("--budget-minutes", type=float, default=60.0)
    parser.add_argument("--name", default="diffusion_cpu", help="result name (diffusion_cpu or diffusion_gpu)")
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "bench_diffusion", help="scratch run folder")
    parser.add_argument(
        "--score-only",
        action="store_true",
        help="skip training and score the run already in --run (one trained by `condgen train ddpm` with the same "
        "config and loop.max_minutes, or one whose sampling was interrupted); with --samplers, the other samplers' "
        "results for the same run and --guidance-min-t are kept",
    )
    add_sampling_arguments(parser)
    add_results_argument(parser)
    args = parser.parse_args()

    if args.score_only:
        if not (args.run / "metrics.jsonl").is_file():
            parser.error(f"--run {args.run}: no training run to score (no metrics.jsonl)")
        summary = last_logged_step(args.run)
    else:
        shutil.rmtree(args.run, ignore_errors=True)
        overrides = [f"loop.max_minutes={args.budget_minutes}"]
        summary = start_training("ddpm", args.data, args.run, args.config, overrides, resume=False)
    loaded = KINDS["ddpm"].load_model(args.run, "latest")
    config = loaded.config
    device = next(loaded.model.parameters()).device
    evaluator = load_evaluator(device=device)
    images_seen = summary["step"] * config.optim.batch_size

    out_dir = args.results / args.name
    record = {
        **result_header(device),
        "config": config_to_dict(config),
        "budget_minutes": config.loop.max_minutes,
        "train_steps": summary["step"],
        "train_seconds": round(summary["seconds"], 1),
        "train_images_per_second": round(images_seen / summary["seconds"], 2),
        "evaluator": "shipped i-CLEVR evaluator (condgen/evaluate/weights)",
        "samplers": {},
    }
    results = args.results / f"{args.name}.json"
    score_samplers(loaded, evaluator, args.data, args, out_dir, record, results)


def last_logged_step(run: Path) -> dict:
    """The step and training seconds of the last training record in ``run``'s metrics.jsonl."""
    last = [record for record in read_metrics(run) if "seconds" in record][-1]
    return {"step": last["step"], "seconds": last["seconds"]}


if __name__ == "__main__":
    main()
