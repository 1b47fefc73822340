"""Exact-set sweep for a diffusion run and its noisy classifier: what classifier guidance towards the requested
objects (classifier_scale), away from the others (classifier_absent_scale), best-of-K ranking (candidates) and the
classifier-free guidance scale and interval (guidance, guidance_min_t) each do to top-k accuracy and the exact-set
rate, one change at a time, on label lists that are never the test files:
the compositional split's 136 unseen three-object sets by default (--labels), or lists drawn from train.json
(--lists). The images are made with the benchmarks' sampler settings (DDIM-50, eta 1, unless --sampler) at
--guidance.

Run by hand (after `python benchmarks/latent.py --classifier-minutes 6 ...` trained both runs):
    python benchmarks/ranking.py --run runs/bench_ldm --classifier runs/bench_latent_classifier
    python benchmarks/ranking.py --run runs/bench_ldm --classifier runs/bench_latent_classifier --lists 128 \\
        --settings candidates=1 candidates=4 candidates=8
    python benchmarks/ranking.py --run condgen/pretrained/iclevr-ldm --lists 256 --objects 3 \\
        --settings none guidance_min_t=100 guidance=12    # no classifier: classifier-free guidance alone
    python benchmarks/ranking.py --run runs/bench_ldm --classifier runs/bench_latent_classifier --pool 8
    python benchmarks/ranking.py --run condgen/pretrained/iclevr-ldm --pool 8 --rivals runs/other_classifier
    python benchmarks/ranking.py --run condgen/pretrained/iclevr-ldm --pool 4 --settings none steps=25 steps=100
With --pool K, each request is sampled K times once (at --guidance; classifier guidance only where --settings asks)
and, for K' = 1, 2, 4 .. K, the rows give the exact-set rate of the candidate the classifier ranks first among the
first K', beside the share of requests where any of them is exactly right: what a perfect ranker could reach. That
share is a diagnostic of the ranker, read off the evaluator; no image is chosen by it. --settings makes one pool per
sampler change (steps=25, eta=0.5, guidance_min_t=200 ...); --rivals adds rows for other classifier runs ranking the
same pool, and for the ensemble of all of them.
Writes benchmarks/results/<name>.json (default ranking_<run folder name>; --results names another folder): one row
per setting (or per K').
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from common import (
    COMPOSITIONAL,
    DATA,
    SAMPLERS,
    add_results_argument,
    result_header,
    sampler_config,
    sampler_record,
    write_result,
)

from condgen.data.iclevr import load_label_file
from condgen.data.splits import train_label_lists
from condgen.diffusion.sampling import SampleConfig, generate
from condgen.diffusion.selection import classifier_likelihood, image_maker
from condgen.evaluate.evaluator import Evaluator, load_evaluator
from condgen.evaluate.metrics import exact_sets
from condgen.generate import guiding_classifier, load_generator
from condgen.kinds import Generation
from condgen.parser import non_negative_int, positive_int

KEYS = {
    "classifier_scale": float,
    "classifier_absent_scale": float,
    "candidates": int,
    "guidance": float,
    "guidance_min_t": int,
    "steps": int,
    "eta": float,
}
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


def setting_row(make_images, evaluator: Evaluator, labels: torch.Tensor, base: SampleConfig, changes: dict, seeds: int):
    """The evaluator's scores of ``base`` with ``changes``, per noise seed and their mean."""
    row = {"setting": changes or "none", "by_seed": []}
    start = time.perf_counter()
    for seed in range(seeds):
        measured = evaluator.measure(make_images(labels, base.changed(seed=seed, **changes)), labels)
        row["by_seed"].append({key: round(value, 4) for key, value in measured.items()})
    row["seconds_per_image"] = round((time.perf_counter() - start) / (len(labels) * seeds), 3)
    for key in row["by_seed"][0]:
        row[key] = round(sum(seed[key] for seed in row["by_seed"]) / seeds, 4)
    print(row, flush=True)
    return row


def pool_rows(
    loaded, evaluator: Evaluator, labels: torch.Tensor, sample: SampleConfig, k: int, rankers: dict
) -> list[dict]:
    """K candidates per request from one sampling pass; for each classifier in ``rankers`` (name -> classifier),
    and for their ensemble (the sum of their set log-likelihoods) when there are several, and for K' = 1, 2, 4 .. K:
    the exact-set rate of its pick among the first K' (``ranked_exact_set``) and the share of requests with any
    exactly right candidate among them (``any_exact``), with the pool's own rate per candidate."""
    repeated = labels.repeat_interleave(k, dim=0)
    x = generate(loaded.model, loaded.diffusion, repeated, sample.changed(candidates=1), classifier=loaded.classifier)
    exact = exact_sets(evaluator.scores(loaded.decode(x)), repeated).float().view(-1, k)
    likelihoods = {
        name: classifier_likelihood(classifier, x, repeated).view(-1, k) for name, classifier in rankers.items()
    }
    if len(rankers) > 1:
        likelihoods["ensemble"] = sum(likelihoods.values())
    rows = []
    for name, likelihood in likelihoods.items():
        first = 1
        while first <= k:
            pick = likelihood[:, :first].argmax(dim=1)
            rows.append(
                {
                    "ranker": name,
                    "candidates": first,
                    "ranked_exact_set": round(exact[torch.arange(len(pick)), pick].mean().item(), 4),
                    "any_exact": round(exact[:, :first].max(dim=1).values.mean().item(), 4),
                    "exact_set_per_candidate": round(exact.mean().item(), 4),
                }
            )
            first *= 2
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="a trained ddpm or ldm run (or model folder)")
    parser.add_argument(
        "--classifier", type=Path, help="its classifier or latent-classifier run (default: the model folder's own)"
    )
    parser.add_argument(
        "--checkpoint",
        help="latest or best (default: latest, which the benchmarks score; best in a model folder, its only one)",
    )
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument(
        "--settings",
        type=setting,
        nargs="+",
        help=f"key=value[,key=value] or none; keys: {', '.join(KEYS)} (default: {' '.join(DEFAULT_SETTINGS)}; "
        "with --pool: none)",
    )
    parser.add_argument("--labels", type=Path, default=COMPOSITIONAL[0], help="default: the unseen triples")
    parser.add_argument("--lists", type=positive_int, help="instead of --labels: this many train.json label lists")
    parser.add_argument("--list-seed", type=non_negative_int, default=0, help="which train.json lists (seed 0)")
    parser.add_argument("--objects", type=positive_int, help="with --lists: only lists of this many objects")
    parser.add_argument("--sampler", choices=list(SAMPLERS), default="ddim", help="default ddim (50 steps, eta 1)")
    parser.add_argument("--guidance", type=float, default=8.0, help="classifier-free guidance scale (default 8)")
    parser.add_argument(
        "--guidance-min-t", type=non_negative_int, help="guide only at t >= this (default: the run's own setting)"
    )
    parser.add_argument("--seeds", type=positive_int, default=1, help="noise seeds 0..N-1 per setting (default 1)")
    parser.add_argument("--name", help="result name (default: ranking_<run folder name>)")
    parser.add_argument(
        "--pool",
        type=positive_int,
        help="K candidates per request, ranked and any-exact rows (one pool per --settings entry)",
    )
    parser.add_argument(
        "--rivals",
        type=Path,
        nargs="+",
        default=[],
        help="with --pool: other classifier runs that rank the same pool, each in its own rows and with --classifier "
        "in an ensemble's",
    )
    add_results_argument(parser)
    args = parser.parse_args()

    checkpoint = args.checkpoint or ("latest" if (args.run / "checkpoints").is_dir() else "best")
    loaded = load_generator(args.run, checkpoint, Generation.DIFFUSION)
    loaded.classifier = guiding_classifier(loaded, args.classifier)
    if args.rivals and not args.pool:
        parser.error("--rivals: ranks a --pool K; give --pool too")
    rankers = {str(args.classifier or args.run / "classifier"): loaded.classifier}
    rankers |= {str(run): guiding_classifier(loaded, run) for run in args.rivals}
    if args.settings is None:
        args.settings = [{}] if args.pool else [setting(text) for text in DEFAULT_SETTINGS]
    if args.pool and any("candidates" in changes for changes in args.settings):
        parser.error("--settings: with --pool K, candidates is K")
    for changes in [{"candidates": args.pool}] if args.pool else args.settings:
        if loaded.classifier is None and SampleConfig(**changes).uses_classifier:
            parser.error(f"--settings {changes}: needs --classifier RUN (the model has none of its own)")
    device = next(loaded.model.parameters()).device
    evaluator = load_evaluator(device=device)
    if args.lists:
        labels = train_label_lists(args.data, evaluator.codec, args.lists, args.list_seed, args.objects)
        source = "train.json" + (f" ({args.objects} objects each)" if args.objects else "")
    else:
        labels, source = load_label_file(args.labels, evaluator.codec), args.labels.name
    base = sampler_config(loaded.config.sample, args.sampler, loaded.diffusion.num_steps)
    base = base.changed(
        guidance=args.guidance,
        guidance_min_t=args.guidance_min_t,
        classifier_scale=0.0,
        classifier_absent_scale=0.0,
        candidates=1,
    )
    if args.pool:
        rows = [
            row | {"setting": changes or "none", "seed": seed}
            for changes in args.settings
            for seed in range(args.seeds)
            for row in pool_rows(loaded, evaluator, labels, base.changed(seed=seed, **changes), args.pool, rankers)
        ]
    else:
        make_images = image_maker(loaded)
        rows = [setting_row(make_images, evaluator, labels, base, changes, args.seeds) for changes in args.settings]
    record = {
        **result_header(device),
        "run": str(args.run),
        "classifier": str(args.classifier) if args.classifier else None,
        "rivals": [str(run) for run in args.rivals],
        "labels": f"{len(labels)} from {source}" + (f" (permutation seed {args.list_seed})" if args.lists else ""),
        "sampler": sampler_record(args.sampler, base, args.guidance),
        "rows": rows,
    }
    write_result(args.name or f"ranking_{args.run.name}", record, args.results)


if __name__ == "__main__":
    main()
