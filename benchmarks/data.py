"""Data-layer benchmark: renderer throughput, decode and cached load of the real i-CLEVR set, sample grids.

Run by hand on an otherwise idle machine:  python benchmarks/data.py [--real ../shared/iclevr]
Writes benchmarks/results/data_cpu.json and the grids docs/synth_samples.png and docs/iclevr_samples.png (--results
and --grids name other folders).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import torch

from condgen.data.iclevr import load_dataset
from condgen.data.synth import synthesize_dataset
from condgen.viz.grid import save_grid

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", type=Path, default=ROOT.parent / "shared" / "iclevr", help="real i-CLEVR folder")
    parser.add_argument("--n", type=int, default=6000, help="images to render (default 6000)")
    parser.add_argument(
        "--results", type=Path, default=ROOT / "benchmarks" / "results", help="folder for data_cpu.json"
    )
    parser.add_argument("--grids", type=Path, default=ROOT / "docs", help="folder for the two sample grids (docs)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="condgen-bench-"))
    os.environ["CONDGEN_CACHE_DIR"] = str(work / "cache")  # start from an empty decode cache
    try:
        render = synthesize_dataset(work / "synth", n=args.n, seed=0)
        synth = load_dataset(work / "synth", progress=False)
        save_grid(synth.images[:32], args.grids / "synth_samples.png", nrow=8)

        start = time.perf_counter()
        real = load_dataset(args.real)
        first_load = time.perf_counter() - start
        start = time.perf_counter()
        real = load_dataset(args.real, progress=False)
        second_load = time.perf_counter() - start
        save_grid(real.images[:32], args.grids / "iclevr_samples.png", nrow=8)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    result = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "render_images": args.n,
        "render_seconds": round(render["seconds"], 2),
        "render_images_per_second": round(render["images_per_second"], 1),
        "real_images": len(real),
        "real_first_load_seconds (decode + cache write)": round(first_load, 2),
        "real_cached_load_seconds": round(second_load, 3),
    }
    out = args.results / "data_cpu.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
