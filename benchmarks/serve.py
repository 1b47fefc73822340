"""Latency of `condgen serve`: seconds per request through the HTTP API (the image, its denoising strip and the
evaluator's verdict) and the model's own generation time within it, for each sampler, on this machine.

The requests go through FastAPI's test client, so the figures hold everything the server does but the network.
Each sampler answers --requests requests (three objects, seeds 0, 1, ...) after one untimed warm-up request.

A GAN has no sampler: it answers one row, "gan" (its interpolation strip in place of the denoising strip).

Run by hand on an otherwise idle machine:
    python benchmarks/serve.py [--model iclevr-ldm] [--requests 5] [--name serve_cpu]
    python benchmarks/serve.py --model iclevr-gan --name serve_cpu_gan
Writes benchmarks/results/<name>.json (--results names another folder).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from common import add_results_argument, result_header, write_result
from fastapi.testclient import TestClient

from condgen.diffusion.presets import PRESETS
from condgen.evaluate.evaluator import load_evaluator
from condgen.serve.app import create_app
from condgen.serve.models import load_models
from condgen.serve.requests import Limits

OBJECTS = ["red sphere", "cyan cylinder", "cyan cube"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="iclevr-ldm", help="a run, model folder or shipped model (iclevr-ldm)")
    parser.add_argument("--requests", type=int, default=5, help="timed requests per sampler (default 5)")
    parser.add_argument("--name", default="serve_cpu", help="result name (default serve_cpu)")
    add_results_argument(parser)
    args = parser.parse_args()

    (model,) = load_models([args.model])
    described = model.describe()
    noise_steps = described.get("noise_steps", 1)  # a GAN: one pass, no steps
    samplers = [sampler.value for sampler in PRESETS] if described["generation"] == "diffusion" else ["gan"]
    client = TestClient(create_app([model], load_evaluator(), Limits(max_steps=noise_steps)))
    record = {**result_header(torch.device("cpu")), "model": args.model, "objects": OBJECTS, "samplers": {}}
    for sampler in samplers:
        request = {"objects": OBJECTS, "seed": 0}
        if sampler != "gan":  # a GAN takes the seed alone; a sampler its steps as the server picks them (PRESETS)
            request |= {"sampler": sampler}
        warm_up = client.post("/api/generate", json=request)
        warm_up.raise_for_status()
        steps = warm_up.json()["results"][0]["settings"].get("steps", 1)  # a GAN: one pass
        total, generation = [], []
        for seed in range(args.requests):
            start = time.perf_counter()
            response = client.post("/api/generate", json=request | {"seed": seed})
            total.append(time.perf_counter() - start)
            response.raise_for_status()
            generation.append(response.json()["results"][0]["seconds"])
        record["samplers"][sampler] = {
            "steps": steps,
            "request_seconds_median": round(statistics.median(total), 3),
            "generation_seconds_median": round(statistics.median(generation), 3),
            "request_seconds": [round(s, 3) for s in total],
        }
        print(sampler, record["samplers"][sampler], flush=True)
    write_result(args.name, record, args.results)


if __name__ == "__main__":
    main()
