"""Exact-set sweep for a diffusion run and its noisy classifier: what classifier guidance towards the requested
objects (classifier_scale), away from the others (classifier_absent_scale) and best-of-K ranking (candidates) each
do to top-k accuracy and the exact-set rate, one change at a time, on label lists that are never the test files:
the compositional split's 136 unseen three-object sets by default (--labels), or lists drawn from train.json
(--lists). The images are made with the benchmarks' sampler settings (DDIM-50, eta 1, unless --sampler) at
--guidance.

Run by hand (after `python benchmarks/latent.py --classifier-minutes 6 ...` trained both runs):
    python benchmarks/ranking.py --run runs/bench_ldm --classifier runs/bench_latent_classifier
    python benchmarks/ranking.py --run runs/bench_ldm --classifier runs/bench_latent_classifier --lists 128 \\
        --settings candidates=1 candidates=4 candidates=8
Writes benchmarks/results/<name>.json (default ranking_<run folder name>): one row per setting.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from common import COMPOSITIONAL, SAMPLERS, image_maker, result_header, sampler_config, train_label_lists, write_result

from condgen.data.iclevr import load_label_file
from condgen.evaluate.evaluator import load_evaluator
from condgen.generate import guiding_classifier, load_generator
from condgen.kinds import Generation
from condgen.parser import non_negative_int, positive_int

ROOT = Path(__file__).resolve().parents[1]
KEYS = {"classifier_scale": float, "classifier_absent_scale": float, "candidates": int}
DEFAULT_SETTINGS = [
    "none",
    "classifier_scale=1",
    "classifier_scale=1,classifier_absent_scale=1",
    "candidates=4",
    "classifier_scale=1,classifier_absent_scale=1,candidates=4",
]


def setting(text: str) -> dict:
    """ "classifier_scale=1,candidates=4" -> {"classifier_scale": 1.0, "candidates": 4}; "none" -> {}."""
    if text == "none":
        return {}
    changes = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        if key not in KEYS:
            raise argparse.ArgumentTypeError(f"{key!r}: not one of {', '.join(KEYS)} (or none)")
        try:
            changes[key] = KEYS[key](value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{part!r}: {key} takes a {KEYS[key].__name__}") from None
    return changes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="a trained ddpm or ldm run (or model folder)")
    parser.add_argument("--classifier", type=Path, required=True, help="its classifier or latent-classifier run")
    parser.add_argument("--checkpoint", default="latest", help="latest (the benchmarks score it) or best")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "iclevr")
    parser.add_argument("--settings", type=setting, nargs="+", default=[setting(s) for s in DEFAULT_SETTINGS])
    parser.add_argument("--labels", type=Path, default=COMPOSITIONAL[0], help="default: the unseen triples")
    parser.add_argument("--lists", type=positive_int, help="instead of --labels: this many train.json label lists")
    parser.add_argument("--list-seed", type=non_negative_int, default=0, help="which train.json lists (seed 0)")
    parser.add_argument("--sampler", choices=list(SAMPLERS), default="ddim", help="default ddim (50 steps, eta 1)")
    parser.add_argument("--guidance", type=float, default=8.0, help="classifier-free guidance scale (default 8)")
    parser.add_argument("--seeds", type=positive_int, default=1, help="noise seeds 0..N-1 per setting (default 1)")
    parser.add_argument("--name", help="result name (default: ranking_<run folder name>)")
    args = parser.parse_args()

    loaded = load_generator(args.run, args.checkpoint, Generation.DIFFUSION)
    loaded.classifier = guiding_classifier(loaded, args.classifier)
    device = next(loaded.model.parameters()).device
    evaluator = load_evaluator(device=device)
    if args.lists:
        labels, source = train_label_lists(args.data, evaluator.codec, args.lists, args.list_seed), "train.json"
    else:
        labels, source = load_label_file(args.labels, evaluator.codec), args.labels.name
    base = sampler_config(loaded.config.sample, args.sampler, loaded.diffusion.num_steps)
    base = base.changed(guidance=args.guidance, classifier_scale=0.0, classifier_absent_scale=0.0, candidates=1)
    make_images = image_maker(loaded)
    rows = []
    for changes in args.settings:
        row = {"setting": changes or "none", "by_seed": []}
        start = time.perf_counter()
        for seed in range(args.seeds):
            measured = evaluator.measure(make_images(labels, base.changed(seed=seed, **changes)), labels)
            row["by_seed"].append({key: round(value, 4) for key, value in measured.items()})
        row["seconds_per_image"] = round((time.perf_counter() - start) / (len(labels) * args.seeds), 3)
        for key in row["by_seed"][0]:
            row[key] = round(sum(seed[key] for seed in row["by_seed"]) / args.seeds, 4)
        print(row, flush=True)
        rows.append(row)
    record = {
        **result_header(device),
        "run": str(args.run),
        "classifier": str(args.classifier),
        "labels": f"{len(labels)} from {source}" + (f" (permutation seed {args.list_seed})" if args.lists else ""),
        "sampler": {"name": args.sampler, "steps": base.sampler_steps(), "eta": base.eta, "guidance": args.guidance},
        "rows": rows,
    }
    write_result(args.name or f"ranking_{args.run.name}", record)


if __name__ == "__main__":
    main()
