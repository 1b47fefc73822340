"""GAN benchmark: for ACGAN, WGAN-GP with a projection discriminator and the CPU-sized hinge GAN of
configs/gan_cpu.yaml, train on a dataset for a fixed wall-clock budget each, then sample test.json and new_test.json
from the best checkpoint and score them with the shipped evaluator.

Run by hand:
    python benchmarks/gan.py [--budget-minutes 60] [--name gan_cpu] [--models acgan,wgangp_projection,s2d_hinge]
Writes benchmarks/results/<name>.json and the scored images under benchmarks/results/<name>/<model>/{test,new_test}/.
Each model's result is also kept in <name>/<model>/result.json and <name>.json gathers every model present, so the
models can be run as separate processes side by side (for example one per core with OMP_NUM_THREADS=1).
"""

from __future__ import annotations

import argparse
import fcntl
import functools
import json
import shutil
from pathlib import Path

import torch
from common import result_header, score_file

from condgen.data.iclevr import LABEL_FILES
from condgen.evaluate.evaluator import load_evaluator
from condgen.gan.run import load_gan
from condgen.gan.trainer import sample_images
from condgen.runs import start_training
from condgen.train.config import config_to_dict
from condgen.train.loop import resolve_device

ROOT = Path(__file__).resolve().parents[1]
MODELS = {
    "acgan": "gan_acgan.yaml",
    "wgangp_projection": "gan_wgangp_projection.yaml",
    "s2d_hinge": "gan_cpu.yaml",
}
CPU_SIZED = {"s2d_hinge"}  # configs already sized for a CPU: CPU_OVERRIDES are not applied to them
# The configs are GPU-sized (64 channels, batch 64: even their DCGAN variant takes about 22 s per WGAN-GP step on one
# CPU core). On a CPU the same code runs with narrower DCGAN-style nets and batch 32: about 1 s (ACGAN) and 3 s
# (WGAN-GP: five critic steps with the penalty's double backward) per generator step on one core.
CPU_OVERRIDES = [
    "model.architecture=dcgan",
    "model.g_channels=32",
    "model.d_channels=32",
    "optim.batch_size=32",
    "loop.eval_every=200",
    "loop.checkpoint_every=200",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "iclevr")
    parser.add_argument("--budget-minutes", type=float, default=60.0, help="per model")
    parser.add_argument("--name", default="gan_cpu", help="result name (gan_cpu or gan_gpu)")
    parser.add_argument(
        "--size",
        choices=["cpu", "gpu"],
        default="gpu" if torch.cuda.is_available() else "cpu",
        help="cpu: the configs with CPU_OVERRIDES; gpu: the configs as they are (default: gpu when CUDA is available)",
    )
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {','.join(MODELS)}")
    args = parser.parse_args()

    out_dir = ROOT / "benchmarks" / "results" / args.name
    evaluator = load_evaluator()
    record = {
        **result_header(resolve_device("auto")),
        "budget_minutes_per_model": args.budget_minutes,
        "evaluator": "shipped i-CLEVR evaluator (condgen/evaluate/weights)",
    }
    for name in args.models.split(","):
        run = ROOT / "runs" / f"bench_{name}"
        shutil.rmtree(run, ignore_errors=True)
        shutil.rmtree(out_dir / name, ignore_errors=True)
        shrink = args.size == "cpu" and name not in CPU_SIZED
        overrides = (CPU_OVERRIDES if shrink else []) + [f"loop.max_minutes={args.budget_minutes}"]
        summary = start_training("gan", args.data, run, ROOT / "configs" / MODELS[name], overrides, False)
        generator, config, _ = load_gan(run, "best")
        result = {
            **record,
            "config": config_to_dict(config),
            "train_steps": summary["step"],
            "train_seconds": round(summary["seconds"], 1),
            "seconds_per_step": round(summary["seconds"] / max(1, summary["step"]), 3),
            "best_accuracy_during_training": summary["best_accuracy"],
        }
        for file in LABEL_FILES:
            stem = Path(file).stem
            accuracy, seconds = score_file(
                functools.partial(sample_images, generator, seed=config.eval_seed),
                evaluator,
                args.data / file,
                out_dir / name / stem,
                out_dir / name / f"{stem}_grid.png",
            )
            result[f"accuracy_{stem}"] = round(accuracy, 4)
            result[f"seconds_per_image_{stem}"] = round(seconds, 4)
        (out_dir / name / "result.json").write_text(json.dumps(result, indent=2) + "\n")
        print(name, json.dumps({k: v for k, v in result.items() if k != "config"}), flush=True)
        gather(out_dir, ROOT / "benchmarks" / "results" / f"{args.name}.json")


def gather(out_dir: Path, target: Path) -> None:
    """Write every model's result.json under out_dir into one file; locked, since models may finish together."""
    with open(target.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        models = {path.parent.name: json.loads(path.read_text()) for path in sorted(out_dir.glob("*/result.json"))}
        target.write_text(json.dumps({"models": models}, indent=2) + "\n")


if __name__ == "__main__":
    main()
