"""Image rankers compared on one candidate pool: a diffusion model folder samples each request K times once, exactly
as `condgen sample` does with its own settings (its own ranker choosing among the K), and every ranker given ranks
that same pool, each with the model's own object counter beside it (the ranker counter, when the folder has one).
Each row is the shipped evaluator's top-k accuracy and exact-set rate of the candidates a ranker keeps, with the
shipped counter's count-exact, exact-scene and extra-object rates and the share of requests where it keeps the same
candidate as the model's own ranker, beside the share of requests where any of the K is an exact scene (what a
perfect ranker could reach). Rankers differ only in what they keep, so the rows compare the rankers and nothing
else. --mirror adds each ranker reading every image and its mirror image (their logits and counts averaged). Choose
among rankers on --train-lists and the tuning half of the unseen requests with --no-test-files; score the choice on
the test files and the goal half.

Run by hand from the repository root (after training the rival, e.g. `condgen train evaluator --data
../shared/iclevr --out runs/ranker_w32 --config configs/ranker_cpu.yaml width=32`):
    python benchmarks/rankers.py --model iclevr-ldm --rankers runs/ranker_w32 --seeds 3 \\
        --labels benchmarks/labels/unseen_triples.json benchmarks/labels/seen_triples.json --label-seeds 1
    python benchmarks/rankers.py --model iclevr-ldm --rankers runs/ranker_e12 --mirror --no-test-files \\
        --train-lists 64 --labels benchmarks/labels/unseen_tune.json --label-seeds 3 --name rankers_choice_cpu
Writes benchmarks/results/<name>.json (default rankers_<model>) and, for seed 0, each ranker's grid per label file
under benchmarks/results/<name>/.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from common import DATA, add_results_argument, result_header, write_result
from torchvision.utils import save_image

from condgen.data.iclevr import load_label_file
from condgen.data.splits import train_label_lists
from condgen.diffusion.sampling import generate
from condgen.evaluate.evaluator import load_evaluator
from condgen.evaluate.metrics import COUNT_KEYS, exact_sets
from condgen.evaluate.ranker import image_ranking, load_ranker
from condgen.nn.ranking import best_candidates
from condgen.parser import non_negative_int, positive_int
from condgen.pipeline import load
from condgen.pretrained import ICLEVR_LABELS


def candidate_pool(pipeline, labels: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``pipeline``'s own images for ``labels`` at ``seed`` (its default sampling, best of its K candidates by its
    own ranker) and every candidate's image, (N K, 3, 64, 64), in the order ``generate`` made them."""
    loaded = pipeline.loaded
    own, latents = loaded.ranking(), []

    def recording(x: torch.Tensor) -> torch.Tensor:
        latents.append(x.clone())
        return own(x)

    sample = loaded.config.sample.changed(seed=seed)
    chosen = generate(loaded.model, loaded.diffusion, labels, sample, classifier=loaded.classifier, ranker=recording)
    with torch.no_grad():
        pool = torch.cat([loaded.decode(x).clamp(-1, 1).cpu() for x in latents])
    return loaded.decode(chosen).clamp(-1, 1), pool


MEASURES = ("accuracy", "exact_set", *COUNT_KEYS)


def scores(evaluator, images: torch.Tensor, labels: torch.Tensor) -> dict:
    measured = evaluator.measure(images, labels)
    return {key: round(measured[key], 4) for key in MEASURES}


def any_exact_scene(evaluator, pool: torch.Tensor, repeated: torch.Tensor, k: int) -> float:
    """The share of requests with at least one candidate that is an exact scene (exact set, each object once)."""
    exact = exact_sets(evaluator.scores(pool), repeated)
    once = evaluator.counter.totals(pool) == repeated.sum(dim=1)
    return round((exact & once).view(-1, k).any(1).float().mean().item(), 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="iclevr-ldm", help="a diffusion model folder with its own ranker")
    parser.add_argument(
        "--rankers", type=Path, nargs="+", required=True, help="rival rankers: `train evaluator` runs or files"
    )
    parser.add_argument("--seeds", type=positive_int, default=3, help="noise seeds for test.json and new_test.json")
    parser.add_argument("--labels", type=Path, nargs="*", default=[], help="more label files (e.g. the triples)")
    parser.add_argument("--label-seeds", type=positive_int, default=1, help="noise seeds for the --labels files")
    parser.add_argument("--data", type=Path, default=DATA, help="the dataset whose train.json --train-lists draws on")
    parser.add_argument(
        "--train-lists", type=non_negative_int, default=0, help="also N three-object lists drawn from train.json"
    )
    parser.add_argument(
        "--test-files",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="score test.json and new_test.json (--no-test-files while choosing)",
    )
    parser.add_argument(
        "--mirror", action="store_true", help="also each ranker reading every image and its mirror, averaged"
    )
    parser.add_argument("--name", help="result name (default rankers_<model folder name>)")
    add_results_argument(parser)
    args = parser.parse_args()

    pipeline = load(args.model)
    loaded = pipeline.loaded
    if loaded.ranker is None or loaded.config.sample.candidates < 2:
        parser.error(f"--model: {pipeline.folder} does not rank candidates by an image ranker of its own")
    evaluator = load_evaluator()
    rankers = {"own": loaded.ranker} | {str(path): load_ranker(path, loaded.meta["objects"]) for path in args.rankers}
    files = {name: (path, args.seeds) for name, path in ICLEVR_LABELS.items()} if args.test_files else {}
    if args.train_lists:
        files["train_lists"] = (None, args.label_seeds)
    files |= {path.stem: (path, args.label_seeds) for path in args.labels}
    readings = {ranker: False for ranker in rankers} | ({f"{r} mirrored": True for r in rankers} if args.mirror else {})
    k = loaded.config.sample.candidates
    name = args.name or f"rankers_{pipeline.folder.name}"
    record = result_header(torch.device("cpu")) | {"model": str(args.model), "candidates": k, "files": {}}
    for file, (path, seeds) in files.items():
        labels = (
            train_label_lists(args.data, pipeline.codec, args.train_lists, objects=3)
            if path is None
            else load_label_file(path, pipeline.codec)
        )
        repeated = labels.repeat_interleave(k, dim=0)
        rows: dict[str, list] = {ranker: [] for ranker in readings} | {"any_exact_scene": [], "own_reproduced": []}
        for seed in range(seeds):
            chosen, pool = candidate_pool(pipeline, labels, seed)
            rows["any_exact_scene"].append(any_exact_scene(evaluator, pool, repeated, k))
            own_picks = None
            for ranker, mirror in readings.items():
                network, counter = rankers[ranker.removesuffix(" mirrored")], loaded.ranker_counter
                reading = image_ranking(network, lambda images: images, counter=counter, mirror=mirror)(pool)
                picks = best_candidates(reading, repeated, k)
                own_picks = picks if own_picks is None else own_picks  # "own" ranks first
                kept = pool.view(len(labels), k, *pool.shape[1:])[torch.arange(len(labels)), picks]
                same = round((picks == own_picks).float().mean().item(), 4)
                rows[ranker].append(scores(evaluator, kept, labels) | {"same_picks_as_own": same})
                if ranker == "own":  # the pool and the ranking are the model's own: the same images as `sample`
                    rows["own_reproduced"].append(round((kept - chosen).abs().max().item(), 4))
                if seed == 0:
                    tag = "_".join(Path(ranker).parts[-2:]).replace(" ", "_")
                    out = args.results / name / f"{file}_{tag}_grid.png"
                    out.parent.mkdir(parents=True, exist_ok=True)
                    save_image((kept + 1) / 2, out, nrow=8)
            print(f"{file} seed {seed}: " + ", ".join(f"{r} {rows[r][-1]}" for r in readings), flush=True)
        record["files"][file] = rows | {
            f"{ranker}_mean": {m: round(sum(s[m] for s in rows[ranker]) / seeds, 4) for m in rows[ranker][0]}
            for ranker in readings
        }
        write_result(name, record, args.results)


if __name__ == "__main__":
    main()
