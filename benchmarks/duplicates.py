"""Where a requested object drawn twice comes from: guidance, ranking, or both. For each guidance scale, a diffusion
model folder samples every request K times once (its own sampler settings otherwise), and the rows score, with the
shipped evaluator and counter:

- ``plain``: the first candidate of each request (what --candidates 1 gives);
- ``image ranker``: the candidate the folder's image ranker keeps (a set classifier: it cannot see a duplicate);
- ``image ranker + counter``: the same ranker with a counter of its own (--ranker-counter, never the shipped one):
  a candidate holding more or fewer objects than requested is ranked down;
- ``any exact scene``: the share of requests where any of the K is exactly right, each object once (a diagnostic
  of what ranking could reach, read off the judges; no image is chosen by it).

Label lists are never the test files: three-object lists drawn from train.json and the tuning half of the unseen
requests. Run by hand from the repository root:
    python benchmarks/duplicates.py --guidance 1,2,3,5,8 --ranker-counter runs/ranker_counter
Writes benchmarks/results/<name>.json (default duplicates_cpu) and seed 0's grids under benchmarks/results/<name>/.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from common import DATA, ROOT, add_results_argument, float_list, result_header, write_result
from torchvision.utils import save_image

from condgen.data.iclevr import load_label_file
from condgen.data.splits import train_label_lists
from condgen.diffusion.sampling import generate
from condgen.evaluate.evaluator import Evaluator, load_evaluator
from condgen.evaluate.metrics import COUNT_KEYS, exact_sets
from condgen.evaluate.ranker import image_ranking, load_ranker_counter
from condgen.nn.ranking import best_candidates
from condgen.parser import non_negative_int, positive_int
from condgen.pipeline import load

TUNE = ROOT / "benchmarks" / "labels" / "unseen_tune.json"


def judged(evaluator: Evaluator, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    measured = evaluator.measure(images, labels)
    return {key: round(measured[key], 4) for key in ("accuracy", "exact_set", *COUNT_KEYS)}


def pool_rows(loaded, evaluator, counter, labels, sample, k: int, grid: Path | None) -> dict[str, dict]:
    """One pool of ``k`` candidates per request and the rows it gives (see the module docstring)."""
    repeated = labels.repeat_interleave(k, dim=0)
    x = generate(loaded.model, loaded.diffusion, repeated, sample.changed(candidates=1))
    images = loaded.decode(x).clamp(-1, 1)
    n = len(labels)
    picks = {"plain": torch.zeros(n, dtype=torch.long)}
    picks["image ranker"] = best_candidates(image_ranking(loaded.ranker, loaded.decode)(x), repeated, k)
    if counter is not None:
        read = image_ranking(loaded.ranker, loaded.decode, counter=counter)(x)
        picks["image ranker + counter"] = best_candidates(read, repeated, k)
    rows = {}
    for name, pick in picks.items():
        kept = images.view(n, k, *images.shape[1:])[torch.arange(n), pick]
        rows[name] = judged(evaluator, kept, labels)
        if grid is not None:
            save_image((kept[:32] + 1) / 2, grid / f"{name.replace(' ', '_').replace('+', 'and')}.png", nrow=8)
    scores = evaluator.scores(images)
    exact = exact_sets(scores, repeated)
    scene = exact & (evaluator.counter.totals(images) == repeated.sum(1))
    rows["any exact scene"] = {"exact_scene": round(float(scene.view(n, k).any(1).float().mean()), 4)}
    rows["per candidate"] = judged(evaluator, images, repeated)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="iclevr-ldm", help="a diffusion model folder or shipped name")
    parser.add_argument("--ranker-counter", type=Path, help="a `condgen train counter` run the ranker counts with")
    parser.add_argument("--guidance", type=float_list, default=[2.0, 3.0, 8.0], help="scales (default 2,3,8)")
    parser.add_argument("--guidance-min-t", type=non_negative_int, help="default: the model's own")
    parser.add_argument("--candidates", type=positive_int, default=8, help="K per request (default 8)")
    parser.add_argument("--lists", type=positive_int, default=48, help="three-object train.json lists (default 48)")
    parser.add_argument("--tune", type=positive_int, default=48, help="requests of unseen_tune.json (default 48)")
    parser.add_argument("--seeds", type=positive_int, default=1, help="noise seeds 0..N-1 (default 1)")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--name", default="duplicates_cpu")
    add_results_argument(parser)
    args = parser.parse_args()
    pipeline = load(args.model)
    loaded = pipeline.loaded
    if loaded.ranker is None:
        parser.error(f"--model {args.model}: has no image ranker")
    evaluator = load_evaluator()
    counter = load_ranker_counter(args.ranker_counter, loaded.meta["objects"]) if args.ranker_counter else None
    label_sets = {
        "train_triples": train_label_lists(args.data, evaluator.codec, args.lists, 0, objects=3),
        "unseen_tune": load_label_file(TUNE, evaluator.codec)[: args.tune],
    }
    record = result_header(torch.device("cpu")) | {
        "model": args.model,
        "ranker_counter": str(args.ranker_counter) if args.ranker_counter else None,
        "candidates": args.candidates,
        "labels": {name: len(labels) for name, labels in label_sets.items()},
        "rows": [],
    }
    for guidance in args.guidance:
        sample = loaded.config.sample.changed(guidance=guidance, guidance_min_t=args.guidance_min_t)
        for name, labels in label_sets.items():
            for seed in range(args.seeds):
                start = time.perf_counter()
                grid = args.results / args.name / f"{name}_guidance{guidance:g}" if seed == 0 else None
                if grid is not None:
                    grid.mkdir(parents=True, exist_ok=True)
                rows = pool_rows(loaded, evaluator, counter, labels, sample.changed(seed=seed), args.candidates, grid)
                entry = {
                    "guidance": guidance,
                    "guidance_min_t": sample.guidance_min_t,
                    "labels": name,
                    "seed": seed,
                    "seconds": round(time.perf_counter() - start, 1),
                    "rows": rows,
                }
                record["rows"].append(entry)
                print(entry, flush=True)
                write_result(args.name, record, args.results)


if __name__ == "__main__":
    main()
