"""Quality against network evaluations per image: few-step models (`condgen train distill`, `condgen train shortcut`)
at 1, 2, 4 and 8 jumps beside any other model at its own settings (the shipped iclevr-ldm and iclevr-gan, say).

Every network pass counts: each candidate's generator passes (two at a guided diffusion step) and, where a model
ranks K > 1 candidates, one pass of each ranking network (image ranker, its counter; a GAN's critic) per candidate.
Each row is the shipped evaluator's top-k accuracy, exact-set rate and, with its counter, count-exact, exact-scene
and extra-object rates, on test.json, new_test.json and the label files given, over noise seeds 0..N-1 (each seed's
figure kept), with seconds per image at batch 1 and at batch 32.

Run by hand from the repository root, e.g.:
    python benchmarks/fewstep.py --models runs/distill_cpu iclevr-ldm iclevr-gan --steps 1,2,4,8 --seeds 3
Choose settings on --train-lists N (three-object lists drawn from train.json, scored first) and --files train,
never on the test files. Writes benchmarks/results/<name>.json and, for seed 0, a grid per row and label file under
benchmarks/results/<name>/.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from common import (
    DATA,
    add_label_arguments,
    add_results_argument,
    int_list,
    label_files,
    result_header,
    run_benchmark,
    score_label_file,
    write_result,
)

from condgen.data.splits import train_label_lists
from condgen.diffusion.sampling import is_few_step
from condgen.evaluate.evaluator import load_evaluator
from condgen.gan.run import GANModel
from condgen.parser import non_negative_int, positive_int
from condgen.pipeline import Pipeline, load
from condgen.report.measure import GAN_PASS, SPEED_REQUEST, Model


def seconds_per_image(make, batch: int, rounds: int = 3) -> float:
    """Mean wall-clock seconds per image over ``rounds`` batches of ``batch`` copies of one request (after one
    warm-up batch)."""
    requests = [SPEED_REQUEST] * batch
    make(requests, 0)
    started = time.perf_counter()
    for round_ in range(rounds):
        make(requests, round_ + 1)
    return round((time.perf_counter() - started) / (rounds * batch), 5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", required=True, help="runs, model folders or shipped model names")
    parser.add_argument("--steps", type=int_list, default=[1, 2, 4, 8], help="a few-step model's jumps (1,2,4,8)")
    parser.add_argument("--seeds", type=positive_int, default=3, help="noise seeds per label file (default 3)")
    parser.add_argument("--data", type=Path, default=DATA, help="the dataset folder (default ../shared/iclevr)")
    parser.add_argument(
        "--train-lists",
        type=non_negative_int,
        default=0,
        help="also score N three-object label lists drawn from train.json (seed 0), the lists to choose on",
    )
    parser.add_argument(
        "--files",
        default="all",
        help="which label files to score: all, or train (only the --train-lists, for choosing settings)",
    )
    parser.add_argument(
        "--candidates",
        type=int_list,
        help="a GAN's best of K, each K a row (default: 1 and the model's own K)",
    )
    parser.add_argument("--speed", type=int_list, default=[1, 32], help="batch sizes to time (default 1,32)")
    parser.add_argument("--name", default="fewstep_cpu", help="result name (default fewstep_cpu)")
    add_label_arguments(parser)
    add_results_argument(parser)
    args = parser.parse_args()
    evaluator = load_evaluator()
    files = {} if args.files == "train" else label_files(args.data, args.labels)
    if args.train_lists:
        lists = train_label_lists(args.data, evaluator.codec, args.train_lists, 0, objects=3)
        path = args.results / args.name / "train_lists.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps([evaluator.codec.decode(row) for row in lists]) + "\n")
        files = {"train_lists": path, **files}
    record = {**result_header(torch.device("cpu")), "rows": []}
    for name in args.models:
        pipeline = load(name)
        measured = Model(name, pipeline.folder, pipeline)
        sampler = GAN_PASS if measured.is_gan else pipeline.loaded.config.sample.sampler.value
        for label, setting in variants(name, pipeline, args.steps, args.candidates):
            row = {"model": name, "kind": pipeline.kind, **setting}
            row["evaluations"] = measured.network_evaluations(sampler, **setting)

            def make(requests, seed, pipeline=pipeline, setting=setting):
                return pipeline.generate(requests, seed=seed, **setting)

            def make_images(labels, seed, make=make):
                return make([", ".join(evaluator.codec.decode(row)) for row in labels], seed)

            folder = args.results / args.name / label.replace("/", "_").replace(" ", "_")
            for stem, path in files.items():
                row |= score_label_file(make_images, evaluator, path, args.seeds, folder / stem, folder / f"{stem}.png")
            for batch in args.speed:
                row[f"seconds_per_image_batch_{batch}"] = seconds_per_image(make, batch)
            shown = [k for k in row if k.startswith(("accuracy_", "exact_s")) and not k.endswith("seed")]
            summary = ", ".join(f"{k} {row[k]:.3f}" for k in shown)
            print(f"{label} ({row['evaluations']} evaluations): {summary}", flush=True)
            record["rows"].append(row)
            write_result(args.name, record, args.results)


def variants(name: str, pipeline: Pipeline, steps: list[int], candidates: list[int] | None) -> list[tuple[str, dict]]:
    """The settings a model is scored at, each with its label: a few-step model at each of ``steps`` jumps, a GAN
    at each of ``candidates`` (default: one candidate, one pass, and its own best-of-K), any other model at its own
    settings."""
    if not isinstance(pipeline.loaded, GANModel):
        if is_few_step(pipeline.loaded.model.config):
            return [(f"{name} x{count}", {"steps": count}) for count in steps]
        return [(name, {})]
    if candidates:
        return [(f"{name} x{k}", {"candidates": k}) for k in candidates]
    if pipeline.loaded.config.candidates > 1:
        return [(f"{name} x1", {"candidates": 1}), (name, {})]
    return [(name, {})]


if __name__ == "__main__":
    run_benchmark(main)
