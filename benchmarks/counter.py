"""How well the object counter counts, and what it finds in generated images.

1. Held-out real i-CLEVR scenes (the scenes the evaluator and the counter both held out): count accuracy for 1, 2
   and 3 objects, and the shipped evaluator's and counter's figures on them, the ceiling of every generated score.
2. Held-out composites: real images of those scenes with objects of other held-out scenes pasted in.
3. Rendered scenes (`condgen data synth --max-objects 6 --repeats 0.5 --seed 1`), a renderer stream the counter's
   training never draws from (it renders from streams 1000 and 2000 on): count accuracy for 1 to 6 objects, and
   how often it sees the extra object in a scene that repeats one (counts more objects than the scene has distinct
   ones), against how often it over-counts a scene that repeats none.
4. Committed generated images (the shipped models' benchmark folders): the count-aware rates.

Run by hand from the repository root:
    python benchmarks/counter.py                       # the shipped counter
    python benchmarks/counter.py --counter runs/counter/counter.safetensors --ship
--ship copies the counter into the package (condgen/evaluate/weights/) with its training record and the real-image
ceiling. Writes benchmarks/results/<name>.json (default counter_cpu) and grids of what it counted under
benchmarks/results/<name>/.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import torch
from common import DATA, RESULTS, ROOT, add_results_argument, result_header, write_result
from PIL import Image, ImageDraw

from condgen.data.composites import cut_out
from condgen.data.iclevr import load_dataset, load_label_file
from condgen.data.imageio import decode_image, to_signed
from condgen.data.jsonio import read_json, write_json
from condgen.data.splits import split_by_scene
from condgen.evaluate.counter import CEILING_RECORD, SHIPPED_COUNTER
from condgen.evaluate.evaluator import load_evaluator
from condgen.evaluate.metrics import COUNT_KEYS
from condgen.parser import positive_int
from condgen.train.counter import CounterOptimConfig, composites, rendered

WEIGHTS = ROOT / "condgen" / "evaluate" / "weights"
SHIPPED_LDM = RESULTS / "latent_ranker_ship_cpu"
SHIPPED_GAN = RESULTS / "gan_cpu" / "latent_hinge_s2d_bf16_third_best_of_16"
LABELS = {
    "test": DATA / "test.json",
    "new_test": DATA / "new_test.json",
    "unseen_triples": ROOT / "benchmarks" / "labels" / "unseen_triples.json",
    "seen_triples": ROOT / "benchmarks" / "labels" / "seen_triples.json",
}
GENERATED = {  # committed folders of generated images: model -> label file -> folder of 0.png ...
    "iclevr-ldm": {name: SHIPPED_LDM / name / "ddim" for name in LABELS},
    "iclevr-gan": {name: SHIPPED_GAN / name for name in LABELS},
}


def by_count(totals: torch.Tensor, truth: torch.Tensor) -> dict[str, dict]:
    """Per true object count: images, the share counted right, too high and too low."""
    table = {}
    for n in sorted(set(truth.tolist())):
        mask = truth == n
        table[str(n)] = {
            "images": int(mask.sum()),
            "count_accuracy": round(float((totals[mask] == n).float().mean()), 4),
            "over": round(float((totals[mask] > n).float().mean()), 4),
            "under": round(float((totals[mask] < n).float().mean()), 4),
        }
    return table


def real_scenes(evaluator, counter, data, val: torch.Tensor) -> tuple[dict, dict]:
    """The held-out real scenes: count accuracy per count, and the evaluator's and counter's scores (the ceiling)."""
    images, labels = to_signed(data.images[val]), data.labels[val]
    totals = counter.totals(images)
    ceiling = {key: round(value, 4) for key, value in evaluator.measure(images, labels).items()}
    return {"images": len(val), "by_count": by_count(totals, labels.sum(1).long())}, ceiling


def held_out_composites(counter, data, val: torch.Tensor, count: int) -> dict:
    made = composites(data, cut_out(data, val), count, CounterOptimConfig(), torch.Generator().manual_seed(1))
    totals, truth = counter.totals(to_signed(made.images)), made.counts.sum(1).long()
    repeated = (made.counts > 1).any(1)
    return {
        "images": count,
        "by_count": by_count(totals, truth),
        "with_a_repeat": {"images": int(repeated.sum()), **_repeat_figures(totals, made.counts, repeated)},
    }


def rendered_scenes(counter, count: int, seed: int) -> dict:
    """Scenes of 1 to 6 objects from the renderer, half of them repeating an object: the images and counts.json
    that `condgen data synth --max-objects 6 --repeats 0.5 --seed SEED` writes."""
    scenes = rendered(counter.codec, count, seed, 64)
    counts = scenes.counts
    totals = counter.totals(to_signed(scenes.images))
    repeated = (counts > 1).any(1)
    return {
        "images": count,
        "seed": seed,
        "by_count": by_count(totals, counts.sum(1).long()),
        "with_a_repeat": {"images": int(repeated.sum()), **_repeat_figures(totals, counts, repeated)},
        "without_repeats": {
            "images": int((~repeated).sum()),
            "over_count": round(float((totals[~repeated] > counts[~repeated].sum(1)).float().mean()), 4),
        },
    }


def _repeat_figures(totals: torch.Tensor, counts: torch.Tensor, repeated: torch.Tensor) -> dict:
    """On scenes that repeat an object: how often the counter sees more objects than distinct ones (it sees the
    extra copy), and how often it counts all of them exactly."""
    distinct = (counts[repeated] > 0).sum(1)
    return {
        "sees_the_extra_copy": round(float((totals[repeated] > distinct).float().mean()), 4),
        "count_accuracy": round(float((totals[repeated] == counts[repeated].sum(1)).float().mean()), 4),
    }


def generated_images(evaluator, out: Path) -> dict:
    """The count-aware rates of the committed images of each shipped model, and one grid per folder with the
    counter's count under each image, for counting by eye."""
    record = {}
    for model, folders in GENERATED.items():
        for name, folder in folders.items():
            labels = load_label_file(LABELS[name], evaluator.codec)
            if not (folder / f"{len(labels) - 1}.png").is_file():
                continue
            images = torch.stack(
                [to_signed(torch.from_numpy(decode_image(folder / f"{i}.png", 64))) for i in range(len(labels))]
            )
            measured = evaluator.measure(images, labels)
            record[f"{model}/{name}"] = {
                "folder": str(folder.relative_to(ROOT)),
                **{key: round(measured[key], 4) for key in COUNT_KEYS},
            }
            counted_grid(images[:32], evaluator.counter.totals(images[:32]), labels[:32], out / f"{model}_{name}.png")
    return record


def counted_grid(images: torch.Tensor, totals: torch.Tensor, labels: torch.Tensor, path: Path) -> None:
    """8 images a row at 2x, each captioned "counted / requested", red where the counter finds more."""
    tiles = []
    for image, total, requested in zip(images, totals.tolist(), labels.sum(1).long().tolist()):
        tile = Image.fromarray(((image.permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).byte().numpy())
        tile = tile.resize((128, 128), Image.NEAREST)
        canvas = Image.new("RGB", (128, 144), "white")
        canvas.paste(tile, (0, 0))
        ImageDraw.Draw(canvas).text((4, 130), f"{total} / {requested}", fill="red" if total > requested else "black")
        tiles.append(np.asarray(canvas))
    rows = [np.concatenate(tiles[i : i + 8], 1) for i in range(0, len(tiles), 8)]
    rows[-1] = np.pad(rows[-1], ((0, 0), (0, rows[0].shape[1] - rows[-1].shape[1]), (0, 0)), constant_values=255)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows, 0)).save(path)


def ship(counter_file: Path, ceiling: dict) -> None:
    """The counter and its record, with the real-image ceiling, into the package."""
    record = read_json(counter_file.with_suffix(".json")) if counter_file.with_suffix(".json").is_file() else {}
    record.pop("evaluations", None)
    shutil.copyfile(counter_file, WEIGHTS / SHIPPED_COUNTER)
    write_json(WEIGHTS / CEILING_RECORD, {**record, "real_images": ceiling})
    print(f"shipped {counter_file} as {WEIGHTS / SHIPPED_COUNTER}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counter", type=Path, help="counter weights to measure (default: the shipped counter)")
    parser.add_argument("--data", type=Path, default=DATA, help="the i-CLEVR folder (default ../shared/iclevr)")
    parser.add_argument("--rendered", type=positive_int, default=3000, help="rendered scenes to count (default 3000)")
    parser.add_argument("--composites", type=positive_int, default=3000, help="held-out composites (default 3000)")
    parser.add_argument("--ship", action="store_true", help="copy --counter into the package with its ceiling")
    parser.add_argument("--name", default="counter_cpu", help="result name (default counter_cpu)")
    add_results_argument(parser)
    args = parser.parse_args()
    evaluator = load_evaluator(counter=args.counter)
    counter = evaluator.counter
    data = load_dataset(args.data, progress=False)
    _, val = split_by_scene(data.files, 0.1, 0)  # the scenes the evaluator and the counter held out
    real, ceiling = real_scenes(evaluator, counter, data, val)
    print(f"real held-out scenes: {real['by_count']}\nceiling: {ceiling}")
    record = {
        **result_header(torch.device("cpu")),
        "counter": str(args.counter or "shipped"),
        "real_images": {**real, "scores": ceiling},
        "composites": held_out_composites(counter, data, val, args.composites),
        "rendered": rendered_scenes(counter, args.rendered, seed=1),
        "generated": generated_images(evaluator, args.results / args.name),
    }
    for part in ("composites", "rendered"):
        print(f"{part}: {record[part]}")
    for name, scores in record["generated"].items():
        print(f"{name}: {scores}")
    write_result(args.name, record, args.results)
    if args.ship:
        if args.counter is None:
            parser.error("--ship needs --counter FILE")
        ship(args.counter, ceiling)


if __name__ == "__main__":
    main()
