"""Training speed of every trainer under each speed option: train images per second of the real training step
(`Task.train_step`: batch drawing, forward and backward passes, optimiser step, EMA), for 1 and 2 processes.

For each kind and option a fresh process (or a torchrun group of 2, with DistributedDataParallel over gloo or
nccl) builds the kind's task from its config (configs/<kind>_cpu.yaml, or _gpu.yaml on a GPU where one exists) on
the first --images images of the data, takes --warmup untimed steps (where torch.compile compiles) and then times
--steps steps. Options: fp32 (optim.bf16=false); bf16 (optim.bf16=true, bfloat16 autocast); compile (float32 with
optim.compile=inductor); bf16+compile. Each sets optim.bf16 itself, so a config's `bf16: auto` never decides what an
option measures, and each option's entry records the optim.bf16 and optim.compile its processes trained with.
One process uses every core (torch's default threads); each of 2 processes gets half of them. The latent kinds
(ldm, latent_gan) encode through --autoencoder, by default the shipped model's.

Run by hand on an otherwise idle machine:
    python benchmarks/train_speed.py [--kinds ddpm,ldm,gan,latent_gan,vae] [--options fp32,bf16,compile]
        [--processes 1,2] [--steps 20] [--name train_speed_cpu]
Writes benchmarks/results/train_speed_<cpu|gpu>.json (or --name): images/s per kind, option and process count; the
kinds not measured this time keep their earlier figures, each kind with the date it was measured. A machine of
another kind (a CPU without bfloat16 units, say) takes its own --name, so no file mixes two machines' figures;
--results names another folder.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from common import DATA, add_results_argument, earlier_record, result_header, write_result

from condgen.device import resolve_device

ROOT = Path(__file__).resolve().parents[1]
OPTIONS = {
    "fp32": ["optim.bf16=false"],
    "bf16": ["optim.bf16=true"],
    "compile": ["optim.bf16=false", "optim.compile=inductor"],
    "bf16+compile": ["optim.bf16=true", "optim.compile=inductor"],
}
KINDS = ("ddpm", "ldm", "gan", "latent_gan", "vae", "evaluator")  # configs/<kind>_cpu.yaml exists for each


def config_file(kind: str, device: torch.device) -> Path:
    gpu = ROOT / "configs" / f"{kind}_gpu.yaml"
    return gpu if device.type == "cuda" and gpu.is_file() else ROOT / "configs" / f"{kind}_cpu.yaml"


def worker(args: argparse.Namespace) -> None:
    """One measurement in this process (one rank of it under torchrun): prints rank 0's JSON line."""
    from condgen.data.iclevr import LabeledImages, load_dataset
    from condgen.kinds import KINDS
    from condgen.train import distributed
    from condgen.train.config import load_config

    device = resolve_device("auto")
    entry = KINDS[args.kind]
    overrides = [*OPTIONS[args.option], "loop.eval_every=0"]
    if entry.needs_autoencoder:
        overrides.append(f"autoencoder={args.autoencoder}")
    with distributed.session(device):
        config = load_config(entry.config_class(), config_file(args.kind, device), overrides)
        whole = load_dataset(args.data, progress=False)
        n = min(args.images, len(whole))
        data = LabeledImages(whole.images[:n].clone(), whole.labels[:n], whole.files[:n], whole.codec)
        task = entry.make_task(config, data, args.data, None)
        for step in range(args.warmup):
            task.train_step(step)
        if distributed.active():
            torch.distributed.barrier()
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for step in range(args.warmup, args.warmup + args.steps):
            task.train_step(step)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if distributed.active():
            torch.distributed.barrier()
        seconds = time.perf_counter() - start
        if distributed.is_main_process():
            images = config.optim.batch_size * distributed.world_size() * args.steps
            optim = {"bf16": config.optim.bf16, "compile": config.optim.compile}  # what the option resolved to
            figures = {"images_per_second": round(images / seconds, 1), "batch": config.optim.batch_size}
            print(json.dumps(figures | {"optim": optim}))


def measure(args: argparse.Namespace, kind: str, option: str, processes: int) -> dict:
    """Runs :func:`worker` in a fresh process, or under torchrun with ``processes`` ranks; returns its figures."""
    here = Path(__file__).resolve()
    rest = [
        "--worker", "--kind", kind, "--option", option, "--data", str(args.data), "--autoencoder",
        str(args.autoencoder), "--images", str(args.images), "--warmup", str(args.warmup), "--steps", str(args.steps),
    ]  # fmt: skip
    env = dict(os.environ)
    if processes > 1:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or processes) // processes))
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
        command += [str(here), *rest]
    else:
        command = [sys.executable, str(here), *rest]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=here.parent)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated subset of {','.join(KINDS)}")
    parser.add_argument("--options", default="fp32,bf16,compile", help=f"comma-separated subset of {','.join(OPTIONS)}")
    parser.add_argument("--processes", default="1,2", help="comma-separated process counts (default 1,2)")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument(
        "--autoencoder", type=Path, default=ROOT / "condgen" / "pretrained" / "iclevr-ldm" / "autoencoder"
    )
    parser.add_argument("--images", type=int, default=2048, help="training images the tasks draw from (default 2048)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (default 5)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps (default 20)")
    parser.add_argument("--name", help="result name (default train_speed_cpu, or train_speed_gpu on a GPU)")
    add_results_argument(parser)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--kind", help=argparse.SUPPRESS)
    parser.add_argument("--option", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    kinds, options = args.kinds.split(","), args.options.split(",")
    for name, chosen, known in (("--kinds", kinds, KINDS), ("--options", options, OPTIONS)):
        unknown = [c for c in chosen if c not in known]
        if unknown:
            parser.error(f"{name}: unknown {', '.join(unknown)} (known: {', '.join(known)})")
    device = resolve_device("auto")
    name = args.name or f"train_speed_{device.type.replace('cuda', 'gpu')}"
    results: dict = earlier_record(args.results / f"{name}.json", {"images_per_second": {}})["images_per_second"]
    for kind in kinds:
        results[kind] = {"config": str(config_file(kind, device).relative_to(ROOT)), "date": str(datetime.date.today())}
        for option in options:
            for processes in [int(p) for p in args.processes.split(",")]:
                figures = measure(args, kind, option, processes)
                entry = results[kind].setdefault(option, {})
                entry[f"{processes} process" + ("es" if processes > 1 else "")] = figures.get(
                    "images_per_second", figures.get("error")
                )
                if "optim" in figures:
                    entry["optim"] = figures["optim"]
                print(kind, option, processes, json.dumps(figures), flush=True)
    settings = {"images": args.images, "warmup_steps": args.warmup, "timed_steps": args.steps}
    write_result(name, {**result_header(device), **settings, "images_per_second": results}, args.results)


if __name__ == "__main__":
    main()
