"""Best-of-K sweep for a GAN: how a trained gan or latent_gan run's accuracy and exact-set rate depend on the
number of candidates per request that its critic's auxiliary head ranks (``candidates``, condgen.gan.sampling),
measured on label lists drawn from train.json (256, permutation seed 0, unless --lists and --list-seed say
otherwise), never the test files.

Run by hand:
    python benchmarks/candidates.py --run runs/bench_gan_latent_hinge_s2d_bf16_third [--candidates 1,4,16] [--seeds 3]
Writes benchmarks/results/<name>.json (default candidates_<run folder name>; --results names another folder): per
K, the accuracy and exact-set rate (mean and each seed) and the seconds per image.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import DATA, add_results_argument, int_list, result_header, write_result

from condgen.data.splits import train_label_lists
from condgen.evaluate.evaluator import load_evaluator
from condgen.generate import load_generator
from condgen.kinds import Generation
from condgen.parser import non_negative_int, positive_int
from condgen.report.measure import score_seeds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="a trained gan or latent_gan run")
    parser.add_argument("--checkpoint", default="best", help="best (the benchmarks score it) or latest")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--candidates", type=int_list, default=[1, 4, 16], help="comma-separated K (1,4,16)")
    parser.add_argument("--seeds", type=positive_int, default=3, help="noise seeds (default 3)")
    parser.add_argument("--lists", type=positive_int, default=256, help="train.json label lists (256)")
    parser.add_argument("--list-seed", type=non_negative_int, default=0, help="which lists: a permutation seed (0)")
    parser.add_argument("--name", help="result name (default: candidates_<run folder name>)")
    add_results_argument(parser)
    args = parser.parse_args()

    loaded = load_generator(args.run, args.checkpoint, Generation.GAN)
    evaluator = load_evaluator(device=next(loaded.generator.parameters()).device)
    labels = train_label_lists(args.data, evaluator.codec, args.lists, args.list_seed)
    rows = []
    for k in args.candidates:
        scored = score_seeds(lambda y, seed, k=k: loaded.sample(y, seed, k), labels, evaluator, args.seeds)
        row = {"candidates": k, "seconds_per_image": round(scored.seconds_per_image, 5)}
        row |= {key: scored.figures[key] for key in ("accuracy", "exact_set")}
        print(row, flush=True)
        rows.append(row)
    record = {
        **result_header(next(loaded.generator.parameters()).device),
        "run": {"kind": loaded.meta["kind"], "checkpoint": args.checkpoint, "train_data": loaded.meta["data"]},
        "label_lists": f"{len(labels)} drawn from train.json (seed {args.list_seed})",
        "by_candidates": rows,
    }
    write_result(args.name or f"candidates_{args.run.name}", record, args.results)


if __name__ == "__main__":
    main()
