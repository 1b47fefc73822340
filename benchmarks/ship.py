"""Ship a benchmark's generator inside the package: export its run as a model folder under condgen/pretrained/NAME,
set the folder's default sampling to the benchmark's settings for one sampler, keep the weights in float16 only if
float16 changes no score, and write a model card with the benchmark's record (how it was trained, what it scored).

Run by hand, after the benchmark that trained the run:
    python benchmarks/latent.py --samplers dpmpp,ddim --guidance 8 --seeds 3
    python benchmarks/ship.py --run runs/bench_ldm --result benchmarks/results/latent_cpu.json --name iclevr-ldm

The float16 check samples test.json and new_test.json with each of --seeds noise seeds from both the float32 and the
float16 folder and compares the shipped evaluator's accuracy and exact-set rate image set by image set.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import yaml
from safetensors.torch import load_file

import condgen
from condgen.data.iclevr import load_label_file
from condgen.evaluate.evaluator import load_evaluator
from condgen.export import export_model
from condgen.pretrained import ICLEVR_LABELS, PRETRAINED

ROOT = Path(__file__).resolve().parents[1]
FILES = {"test": "test.json", "new_test": "new_test.json", "unseen_triples": "unseen", "seen_triples": "seen"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="the benchmark's trained run")
    parser.add_argument("--result", type=Path, required=True, help="the benchmark's result JSON")
    parser.add_argument("--name", required=True, help="the shipped model's name, e.g. iclevr-ldm")
    parser.add_argument(
        "--sampler",
        help="the benchmark sampler whose settings become the default (default: the most accurate on the "
        "three-object requests that occur in train.json, never on test.json or new_test.json)",
    )
    parser.add_argument("--checkpoint", default="latest", help="the checkpoint the benchmark scored (default latest)")
    parser.add_argument("--seeds", type=int, default=3, help="noise seeds of the float16 check (default 3)")
    args = parser.parse_args()

    result = json.loads(args.result.read_text())
    args.sampler = args.sampler or max(result["samplers"], key=lambda s: result["samplers"][s]["accuracy_seen_triples"])
    sampling = sampling_defaults(result, args.sampler)
    with tempfile.TemporaryDirectory() as scratch:
        folders = {}
        for precision, half in (("float32", False), ("float16", True)):
            folders[precision] = export_model(args.run, Path(scratch) / precision, args.checkpoint, half=half)
            set_sampling(folders[precision], sampling)
        check = half_precision_check(folders, args.seeds)
        print(json.dumps(check, indent=2))
        chosen = "float16" if check["same_scores"] else "float32"
        target = PRETRAINED / args.name
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(folders[chosen], target)
    relative_sources(target)
    (target / "README.md").write_text(model_card(args, result, sampling, check, chosen, target))
    size = sum(f.stat().st_size for f in target.rglob("*") if f.is_file())
    print(f"wrote {target} ({chosen}, {size / 1e6:.1f} MB)")


def sampling_defaults(result: dict, sampler: str) -> dict:
    """The sample settings the benchmark scored ``sampler`` with."""
    scored = result["samplers"][sampler]
    settings = {"sampler": sampler, "steps": scored["steps"], "guidance": scored["guidance"]}
    settings |= {key: scored[key] for key in ("eta", "spacing") if key in scored}
    return settings | {"guidance_min_t": result.get("guidance_min_t", 0), "seed": 0}


def set_sampling(folder: Path, sampling: dict) -> None:
    config = yaml.safe_load((folder / "config.yaml").read_text())
    config["sample"] |= sampling
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def half_precision_check(folders: dict[str, Path], seeds: int) -> dict:
    """Each folder's scores on test.json and new_test.json for seeds 0..seeds-1, and whether they are equal."""
    evaluator = load_evaluator()
    scores: dict[str, dict] = {}
    largest_difference = 0.0
    for file, path in ICLEVR_LABELS.items():
        labels = load_label_file(path, evaluator.codec)
        requests = [", ".join(evaluator.codec.decode(row)) for row in labels]
        for seed in range(seeds):
            images = {p: condgen.load(f).generate(requests, seed=seed) for p, f in folders.items()}
            largest_difference = max(largest_difference, float((images["float32"] - images["float16"]).abs().max()))
            for precision, batch in images.items():
                measured = evaluator.measure(batch, labels)
                entry = scores.setdefault(precision, {}).setdefault(file, {"accuracy": [], "exact_set": []})
                for key in entry:
                    entry[key].append(round(measured[key], 4))
    return {
        "seeds": seeds,
        "scores": scores,
        "same_scores": scores["float32"] == scores["float16"],
        "largest_pixel_difference": round(largest_difference, 4),  # images in [-1, 1]
    }


def relative_sources(folder: Path) -> None:
    """Where the folder came from, relative to the repository, in its run.json files."""
    for meta_file in folder.rglob("run.json"):
        meta = json.loads(meta_file.read_text())
        for key in ("exported_from", "data", "autoencoder"):
            if isinstance(meta.get(key), str) and Path(meta[key]).is_absolute():
                path = Path(meta[key]).resolve()
                meta[key] = str(path.relative_to(ROOT.parent)) if path.is_relative_to(ROOT.parent) else path.name
        meta_file.write_text(json.dumps(meta, indent=2) + "\n")


def parameters(weights: Path) -> int:
    return sum(tensor.numel() for tensor in load_file(weights).values())


def model_card(args, result: dict, sampling: dict, check: dict, precision: str, folder: Path) -> str:
    """README.md of a shipped model: use, training record, the benchmark's scores and the float16 check."""
    meta = json.loads((folder / "run.json").read_text())
    diffusion, autoencoder = result["diffusion"], result["autoencoder"]
    unet = parameters(folder / "best" / "ema.safetensors")
    vae = parameters(folder / "autoencoder" / "best" / "model.safetensors")
    lines = [
        f"# {args.name}",
        "",
        f"A conditional latent diffusion model of 64x64 i-CLEVR scenes of up to {meta['max_objects']} objects out of "
        f"{len(meta['objects'])} (3 shapes x 8 colours), trained on the real i-CLEVR set on a 2-core CPU within one "
        f"hour, shipped with condgen: a {unet / 1e6:.1f} M-parameter UNet on "
        f"the 16x16x4 latents of a {vae / 1e6:.2f} "
        f"M-parameter VAE, {precision} weights, step {meta['step']}.",
        "",
        "```bash",
        f'condgen sample --model {args.name} --objects "red sphere, cyan cube" --out out/one',
        "```",
        "",
        "```python",
        "import condgen",
        "",
        f'images = condgen.load("{args.name}").generate(["red sphere, cyan cube"], seed=0)  # (1, 3, 64, 64), [-1, 1]',
        "```",
        "",
        f"Default sampling (`config.yaml`, `sample`): {describe(sampling)}, the benchmark's most accurate sampler on "
        "the three-object requests drawn from train.json (seen, below); every `condgen sample` option changes it.",
        "",
        "## How it was trained",
        "",
        "```bash",
        result["command"],
        f"python benchmarks/ship.py --run {args.run} --result {args.result} --name {args.name}",
        "```",
        "",
        f"`benchmarks/latent.py` trains, within one {result['budget_minutes']:g}-minute wall-clock budget on "
        f"{result['machine']} ({result['date']}), first the autoencoder (`configs/vae_cpu.yaml`: "
        f"{autoencoder['train_steps']} steps in {autoencoder['train_seconds'] / 60:.1f} minutes; its reconstructions "
        f"keep {autoencoder['best_held_out_scores']['accuracy_ratio']:.3f} of the evaluator's accuracy on held-out "
        f"real scenes), then, after encoding the training set and its mirror images, the diffusion model "
        f"(`configs/ldm_cpu.yaml`: {diffusion['train_steps']} steps of {diffusion['config']['optim']['batch_size']} "
        f"latents in {diffusion['train_seconds'] / 60:.1f} minutes, {diffusion['train_images_per_second']:.1f} "
        "images/s). `benchmarks/ship.py` exports the run (`condgen export`) and writes this card.",
        "",
        "## Scores",
        "",
        "The shipped evaluator's top-k accuracy and exact-set rate (the share of images whose detected objects are "
        "exactly the requested ones), mean over noise seeds "
        f"0 to {len(next(iter(result['samplers'].values()))['accuracy_test_by_seed']) - 1}, from "
        f"`{args.result}`. unseen / seen: three-object requests that never / do occur in train.json "
        "(`benchmarks/labels/`).",
        "",
        "| sampler | network evaluations | " + " | ".join(FILES.values()) + " | seconds per image |",
        "|---|---|" + "---|" * len(FILES) + "---|",
    ]
    for name, scored in result["samplers"].items():
        cells = [
            f"{scored[f'accuracy_{key}']:.3f} / {scored[f'exact_set_{key}']:.3f}"
            for key in FILES
            if f"accuracy_{key}" in scored
        ]
        lines.append(
            f"| {name}-{scored['steps']}, guidance {scored['guidance']:g} | "
            f"{scored['network_evaluations_per_image']} | "
            + " | ".join(cells)
            + f" | {scored['seconds_per_image_test']} |"
        )
    lines += [
        "",
        f"Float16 weights: over seeds 0 to {check['seeds'] - 1} on test.json and new_test.json, the float32 and "
        f"float16 weights gave {'the same scores' if check['same_scores'] else 'different scores'} "
        f"(largest pixel difference {check['largest_pixel_difference']} on a [-1, 1] scale){differences(check)}, so "
        f"the weights ship in {precision}.",
    ]
    return "\n".join(lines) + "\n"


def differences(check: dict) -> str:
    """The scores float16 changed, as ': test.json accuracy, seed 2: 0.944 -> 0.958'."""
    changed = [
        f"{ICLEVR_LABELS[file].name} {key.replace('_', '-')}, seed {seed}: {full} -> {half}"
        for file, scores in check["scores"]["float32"].items()
        for key, values in scores.items()
        for seed, (full, half) in enumerate(zip(values, check["scores"]["float16"][file][key]))
        if full != half
    ]
    return ": " + "; ".join(changed) if changed else ""


def describe(sampling: dict) -> str:
    text = f"{sampling['sampler']}, {sampling['steps']} steps, guidance {sampling['guidance']:g}"
    if sampling.get("guidance_min_t"):
        text += f" at t >= {sampling['guidance_min_t']}"
    if "spacing" in sampling:
        text += f", {sampling['spacing']} spacing, eta {sampling['eta']:g}"
    return text + ", seed 0"


if __name__ == "__main__":
    main()
