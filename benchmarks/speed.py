"""Seconds per image of models' own default sampling, measured side by side in one run: every model generates the
requests of a label file in batches of --batch, round after round (--rounds), the models taking turns, so that a
change of the machine's load falls on all of them alike. Each image is made exactly as `condgen sample` makes it
(`condgen.load(...).generate`), candidates and ranking included.

Run by hand on an otherwise idle machine:
    python benchmarks/speed.py --models iclevr-ldm runs/new-ldm --labels ../shared/iclevr/test.json --rounds 2
Writes benchmarks/results/<name>.json (default speed_cpu; --results names another folder).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from common import DATA, add_results_argument, result_header, write_result

from condgen.data.jsonio import read_json
from condgen.parser import positive_int
from condgen.pipeline import load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", required=True, help="model folders, runs or shipped model names")
    parser.add_argument("--labels", type=Path, default=DATA / "test.json", help="label file (default test.json)")
    parser.add_argument("--batch", type=positive_int, default=32, help="requests per generate call (default 32)")
    parser.add_argument("--rounds", type=positive_int, default=2, help="passes over the label file (default 2)")
    parser.add_argument("--name", default="speed_cpu")
    add_results_argument(parser)
    args = parser.parse_args()
    requests = [", ".join(names) for names in read_json(args.labels)]
    pipelines = {name: load(name) for name in args.models}
    seconds: dict[str, list[float]] = {name: [] for name in args.models}
    for round_ in range(args.rounds):
        for name, pipeline in pipelines.items():
            start = time.perf_counter()
            for first in range(0, len(requests), args.batch):
                pipeline.generate(requests[first : first + args.batch], seed=round_)
            seconds[name].append(round((time.perf_counter() - start) / len(requests), 4))
            print(f"round {round_}: {name} {seconds[name][-1]} s per image", flush=True)
    record = result_header(torch.device("cpu")) | {
        "labels": str(args.labels),
        "batch": args.batch,
        "seconds_per_image": {
            name: {"median": statistics.median(values), "by_round": values} for name, values in seconds.items()
        },
    }
    write_result(args.name, record, args.results)


if __name__ == "__main__":
    main()
