"""Best-of-K sweep for a GAN: how a trained gan or latent_gan run's scores depend on the number of candidates per
request (``candidates``, condgen.gan.sampling) that its critic's auxiliary head ranks, or an image ranker
(--ranker, a `condgen train evaluator` run) with its own object counter (--ranker-counter, a `condgen train counter`
run), measured on label lists drawn from train.json (256, permutation seed 0, unless --lists, --list-seed and
--objects say otherwise; --look-alike keeps the lists that ask for two objects of one colour, or those that do not),
never the test files.

Run by hand:
    python benchmarks/candidates.py --run runs/bench_gan_latent_hinge_s2d_bf16_third [--candidates 1,4,16] [--seeds 3]
    python benchmarks/candidates.py --run condgen/pretrained/iclevr-gan --ranker runs/ranker_w32 \
        --ranker-counter runs/ranker_counter --candidates 1,16,32 --objects 3 --lists 96 --name candidates_gan_ranked
Writes benchmarks/results/<name>.json (default candidates_<run folder name>; --results names another folder): per
K, the accuracy, exact-set rate, and with the shipped counter count-exact, exact-scene and extra-object rates (mean
and each seed) and the seconds per image.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import COUNT_KEYS, DATA, add_results_argument, int_list, result_header, write_result

from condgen.data.splits import train_label_lists
from condgen.evaluate.evaluator import load_evaluator
from condgen.evaluate.ranker import load_ranker, load_ranker_counter
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
    parser.add_argument("--objects", type=positive_int, help="only train.json lists of this many objects")
    parser.add_argument(
        "--look-alike",
        choices=["only", "none"],
        help="only lists that ask for two objects of one colour (only), or only those that do not (none)",
    )
    parser.add_argument("--ranker", type=Path, help="an image ranker run that ranks in place of the critic")
    parser.add_argument("--ranker-counter", type=Path, help="with --ranker: the counter it ranks with")
    parser.add_argument("--name", help="result name (default: candidates_<run folder name>)")
    add_results_argument(parser)
    args = parser.parse_args()

    loaded = load_generator(args.run, args.checkpoint, Generation.GAN)
    device = next(loaded.generator.parameters()).device
    if args.ranker:
        loaded.ranker = load_ranker(args.ranker, loaded.meta["objects"], device)
    if args.ranker_counter:
        if loaded.ranker is None:
            parser.error("--ranker-counter: the counter ranks with an image ranker; give --ranker too")
        loaded.ranker_counter = load_ranker_counter(args.ranker_counter, loaded.meta["objects"], device)
    evaluator = load_evaluator(device=device)
    look_alike = None if args.look_alike is None else args.look_alike == "only"
    labels = train_label_lists(args.data, evaluator.codec, args.lists, args.list_seed, args.objects, look_alike)
    rows = []
    for k in args.candidates:
        scored = score_seeds(lambda y, seed, k=k: loaded.sample(y, seed, k), labels, evaluator, args.seeds)
        row = {"candidates": k, "seconds_per_image": round(scored.seconds_per_image, 5)}
        row |= {key: scored.figures[key] for key in ("accuracy", "exact_set", *COUNT_KEYS) if key in scored.figures}
        print(row, flush=True)
        rows.append(row)
    record = {
        **result_header(next(loaded.generator.parameters()).device),
        "run": {"kind": loaded.meta["kind"], "checkpoint": args.checkpoint, "train_data": loaded.meta["data"]},
        "ranker": str(args.ranker) if args.ranker else "the critic's auxiliary head",
        "ranker_counter": str(args.ranker_counter) if args.ranker_counter else None,
        "label_lists": f"{len(labels)} drawn from train.json (seed {args.list_seed})"
        + (f", {args.objects} objects each" if args.objects else "")
        + {None: "", "only": ", two of one colour", "none": ", no two of one colour"}[args.look_alike],
        "by_candidates": rows,
    }
    write_result(args.name or f"candidates_{args.run.name}", record, args.results)


if __name__ == "__main__":
    main()
