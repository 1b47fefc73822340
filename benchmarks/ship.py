"""Ship a benchmark's generator inside the package: export its run as a model folder under condgen/pretrained/NAME,
set the folder's default sampling to the benchmark's settings for one sampler, keep the weights in float16 unless
float16 lowers a score, and write a model card with the benchmark's record (how it was trained, what it scored).

Run by hand, after the benchmark that trained the run:
    python benchmarks/latent.py --samplers dpmpp,ddim --guidance 8 --seeds 3
    python benchmarks/ship.py --run runs/bench_ldm --result benchmarks/results/latent_cpu.json --name iclevr-ldm
    python benchmarks/latent.py --classifier-minutes 6 --candidates 4 --samplers ddim --guidance 8 \
        --guidance-min-t 100 --name latent_exact_cpu
    python benchmarks/ship.py --run runs/bench_ldm --classifier runs/bench_latent_classifier \
        --result benchmarks/results/latent_exact_cpu.json --name iclevr-ldm
    python benchmarks/latent.py --autoencoder-minutes 12 --autoencoder-set optim.bf16=true \
        --ranker-config configs/ranker_cpu.yaml --candidates 8 --samplers ddim --guidance 8 --guidance-min-t 100 \
        --seeds 3 --labels benchmarks/labels/unseen_triples.json benchmarks/labels/seen_triples.json \
        --name latent_ranker_ship_cpu
    python benchmarks/ship.py --run runs/bench_ldm --ranker runs/bench_ranker \
        --result benchmarks/results/latent_ranker_ship_cpu.json --name iclevr-ldm
    python benchmarks/gan.py --models latent_hinge_s2d_bf16 --seeds 3
    python benchmarks/ship.py --run runs/bench_gan_latent_hinge_s2d_bf16 --result benchmarks/results/gan_cpu.json \
        --entry latent_hinge_s2d_bf16 --name iclevr-gan

A diffusion benchmark that trained a noisy classifier (`--classifier-minutes`) ships it with --classifier, one that
trained an image ranker (`--ranker-config`) ships it with --ranker: the folder then guides and ranks as the benchmark
scored (its candidates and classifier scales). A GAN has no sampler to choose:
its folder keeps the checkpoint the benchmark scored (best) and samples with a seed, ranking as many candidates per
request as the entry was scored with (`gan.py --candidates K`, entry <model>_best_of_K).

The float16 check samples test.json and new_test.json with each of --seeds noise seeds from both the float32 and the
float16 folder and compares the shipped evaluator's accuracy and exact-set rate image set by image set. A sampler
that integrates over many steps turns float16's rounding into other images for some seeds, so scores can move either
way: float16 (stored in byte planes, condgen.tensorfile) ships unless its mean over the seeds is below float32's for
a file and a measure. A folder's image ranker is checked on the same images: on how many requests its float16 copy
keeps another candidate than the float32 one; where the generator stays in float32, a ranker that keeps every
candidate ships in float16 beside it. `--run` may also be a model folder already shipped, to store it again under
the current rule and layout; its card then keeps the command that first shipped it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import torch
import yaml
from gan import MODELS as GAN_MODELS

import condgen
from condgen.data.iclevr import load_label_file
from condgen.evaluate.evaluator import load_evaluator
from condgen.evaluate.ranker import RANKER_FILE, image_ranking, load_ranker
from condgen.export import export_model
from condgen.nn.ranking import set_log_likelihood
from condgen.pipeline import Pipeline
from condgen.pretrained import ICLEVR_LABELS, PRETRAINED
from condgen.tensorfile import read_tensors

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
    parser.add_argument(
        "--classifier",
        type=Path,
        help="the benchmark's noisy classifier run, shipped in the folder to guide and rank as the benchmark scored",
    )
    parser.add_argument(
        "--ranker",
        type=Path,
        help="the benchmark's image ranker run, shipped in the folder (ranker.safetensors) to rank as the benchmark "
        "scored",
    )
    parser.add_argument("--entry", help="the model's entry in a result file of several (gan_cpu.json's models)")
    parser.add_argument(
        "--checkpoint", help="the checkpoint the benchmark scored (default: latest for diffusion, best for a GAN)"
    )
    parser.add_argument("--seeds", type=int, default=3, help="noise seeds of the float16 check (default 3)")
    args = parser.parse_args()

    result = json.loads(args.result.read_text())
    if "models" in result:
        if args.entry not in result["models"]:
            parser.error(f"--entry: one of {', '.join(result['models'])} in {args.result}")
        models, result = result["models"], result["models"][args.entry]
        trained_by = models.get(args.entry.split("_best_of_")[0], result)["command"]  # a rescored run's training
        result = result | {"commands": list(dict.fromkeys([trained_by, result["command"]]))}
    sampling = None  # a GAN's folder samples with its own eval_seed
    changes = {"candidates": result.get("candidates", 1)}  # a GAN's best of K, as it was scored
    if "samplers" in result:
        samplers = result["samplers"]
        args.sampler = args.sampler or max(samplers, key=lambda s: samplers[s]["accuracy_seen_triples"])
        sampling = sampling_defaults(result, args.sampler)
        changes = {"sample": sampling}
    records = {path.relative_to(args.run): json.loads(path.read_text()) for path in args.run.rglob("run.json")}
    top = records[Path("run.json")]
    args.first_shipped = top.get("exported_from") if "format" in top else None  # --run is a model folder
    args.checkpoint = args.checkpoint or ("latest" if sampling and not args.first_shipped else "best")
    with tempfile.TemporaryDirectory() as scratch:

        def export(name: str, half: bool, ranker_half: bool | None = None) -> Path:
            folder = export_model(
                args.run, Path(scratch) / name, args.checkpoint, half, args.classifier, args.ranker, ranker_half
            )
            set_config(folder, changes)
            return folder

        folders = {"float32": export("float32", False), "float16": export("float16", True)}
        check = half_precision_check(folders, args.seeds)
        print(json.dumps(check, indent=2))
        chosen = "float16" if check["float16_no_lower"] else "float32"
        shipped = folders[chosen]
        if chosen == "float32" and check.get("ranker_choices_changed") == 0:
            # the float16 ranker keeps the very candidates the float32 one keeps: the same images at half the size
            shipped = export("float32_ranker_float16", False, ranker_half=True)
        target = PRETRAINED / args.name
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(shipped, target)
    if args.first_shipped:  # a folder shipped again keeps where each of its parts first came from
        for relative, record in records.items():
            meta = json.loads((target / relative).read_text()) | {"exported_from": record["exported_from"]}
            (target / relative).write_text(json.dumps(meta, indent=2) + "\n")
    relative_sources(target)
    (target / "README.md").write_text(model_card(args, result, sampling, check, chosen, target))
    size = sum(f.stat().st_size for f in target.rglob("*") if f.is_file())
    print(f"wrote {target} ({chosen}, {size / 1e6:.1f} MB)")


RANKING_KEYS = ("candidates", "classifier_scale", "classifier_absent_scale")  # what a classifier or ranker serves


def ranking_sampling(result: dict) -> dict:
    """The guidance and ranking settings a diffusion benchmark scored its noisy classifier or image ranker with; {}
    without either."""
    if not (result.get("classifier") or result.get("ranker")):
        return {}
    sample = result["diffusion"]["config"]["sample"]
    return {key: sample[key] for key in RANKING_KEYS}


def sampling_defaults(result: dict, sampler: str) -> dict:
    """The sample settings the benchmark scored ``sampler`` with, its classifier's guidance and ranking included."""
    scored = result["samplers"][sampler]
    settings = {"sampler": sampler, "steps": scored["steps"], "guidance": scored["guidance"]}
    settings |= {key: scored[key] for key in ("eta", "spacing") if key in scored}
    settings |= ranking_sampling(result)
    return settings | {"guidance_min_t": result.get("guidance_min_t", 0), "seed": 0}


def set_config(folder: Path, changes: dict) -> None:
    """Merges ``changes`` into the folder's config.yaml, a section ({"sample": {...}}) key by key."""
    config = yaml.safe_load((folder / "config.yaml").read_text())
    for key, value in changes.items():
        config[key] = config[key] | value if isinstance(value, dict) else value
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def half_precision_check(folders: dict[str, Path], seeds: int) -> dict:
    """Each folder's scores on test.json and new_test.json for seeds 0..seeds-1, and whether they are equal; with an
    image ranker, also on how many requests its float16 copy would keep another candidate than the float32 one."""
    evaluator = load_evaluator()
    pipelines = {precision: condgen.load(folder) for precision, folder in folders.items()}
    half_ranker = folders["float16"] / RANKER_FILE
    rankings = record_rankings(pipelines["float32"], half_ranker) if half_ranker.is_file() else None
    ranker_choices_changed = 0
    scores: dict[str, dict] = {}
    largest_difference = 0.0
    for file, path in ICLEVR_LABELS.items():
        labels = load_label_file(path, evaluator.codec)
        requests = [", ".join(evaluator.codec.decode(row)) for row in labels]
        for seed in range(seeds):
            images = {p: pipeline.generate(requests, seed=seed) for p, pipeline in pipelines.items()}
            if rankings is not None:
                ranker_choices_changed += changed_choices(rankings, labels, pipelines["float32"])
            largest_difference = max(largest_difference, float((images["float32"] - images["float16"]).abs().max()))
            for precision, batch in images.items():
                measured = evaluator.measure(batch, labels)
                entry = scores.setdefault(precision, {}).setdefault(file, {"accuracy": [], "exact_set": []})
                for key in entry:
                    entry[key].append(round(measured[key], 4))
    means = {
        precision: {file: {key: sum(v) / len(v) for key, v in entry.items()} for file, entry in by_file.items()}
        for precision, by_file in scores.items()
    }
    return {
        "seeds": seeds,
        "scores": scores,
        "same_scores": scores["float32"] == scores["float16"],
        "float16_no_lower": all(
            means["float16"][file][key] >= value
            for file, entry in means["float32"].items()
            for key, value in entry.items()
        ),
        "largest_pixel_difference": round(largest_difference, 4),  # images in [-1, 1]
    } | ({"ranker_choices_changed": ranker_choices_changed} if rankings is not None else {})


def record_rankings(pipeline: Pipeline, other_weights: Path) -> dict[str, list[torch.Tensor]]:
    """Makes a diffusion ``pipeline`` that ranks its candidates by its image ranker record, beside that ranker's
    logits of each batch of candidates, those of the ranker stored at ``other_weights`` (it still ranks by its own)."""
    loaded = pipeline.loaded
    own = loaded.ranking()
    other = image_ranking(load_ranker(other_weights, loaded.meta["objects"]), loaded.decode)
    logits: dict[str, list[torch.Tensor]] = {"own": [], "other": []}

    def both(samples: torch.Tensor) -> torch.Tensor:
        mine = own(samples)
        logits["own"].append(mine)
        logits["other"].append(other(samples))
        return mine

    loaded.ranking = lambda: both  # the pipeline asks its model for the ranking on every generate call
    return logits


def changed_choices(logits: dict[str, list[torch.Tensor]], labels: torch.Tensor, pipeline: Pipeline) -> int:
    """The requests of the last generate call (``labels``) on which the two recorded rankers keep different
    candidates (the sampler ranks each request's K candidates, made in a row, by condgen.nn.ranking); clears them."""
    k = pipeline.loaded.config.sample.candidates
    rows = labels.repeat_interleave(k, dim=0).float()
    best = [set_log_likelihood(torch.cat(v).float(), rows).view(-1, k).argmax(dim=1) for v in logits.values()]
    for recorded in logits.values():
        recorded.clear()
    return int((best[0] != best[1]).sum())


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
    return sum(tensor.numel() for tensor in read_tensors(weights)[0].values())


def model_card(args, result: dict, sampling: dict | None, check: dict, precision: str, folder: Path) -> str:
    """README.md of a shipped model: use, training record, the benchmark's scores and the float16 check; ``sampling``
    is a diffusion model's default settings, None for a GAN."""
    meta = json.loads((folder / "run.json").read_text())
    autoencoder = result["autoencoder"]
    weights = parameters(folder / "best" / "ema.safetensors")
    vae = parameters(folder / "autoencoder" / "best" / "model.safetensors")
    network = f"a {weights / 1e6:.1f} M-parameter " + ("UNet" if sampling else "generator")
    seeds = len(result_rows(result)[0][1]["accuracy_test_by_seed"])
    lines = [
        f"# {args.name}",
        "",
        f"A conditional {'latent diffusion model' if sampling else 'GAN'} of 64x64 i-CLEVR scenes of up to "
        f"{meta['max_objects']} objects out of {len(meta['objects'])} (3 shapes x 8 colours), trained on the real "
        f"i-CLEVR set on a 2-core CPU within one hour, shipped with condgen: {network} on the 16x16x4 latents of a "
        f"{vae / 1e6:.2f} M-parameter VAE, {precision} weights, step {meta['step']}.",
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
    ]
    if sampling:
        lines += [
            f"Default sampling (`config.yaml`, `sample`): {describe(sampling, (folder / RANKER_FILE).is_file())}, "
            "the benchmark's most accurate sampler on the three-object requests drawn from train.json (seen, "
            "below); every `condgen sample` option changes it.",
            "",
        ]
    elif result.get("candidates", 1) > 1:
        lines += [
            f"Each image is the best of {result['candidates']} generator evaluations (`config.yaml`, `candidates`): "
            "the one whose objects the GAN's own critic, shipped beside it, finds closest to exactly the request "
            "(its auxiliary multi-label head, trained on the training images, never the evaluator); `--candidates "
            "1` samples plainly, `--seed` (default 0) picks the noise.",
            "",
        ]
    else:
        lines += ["One generator evaluation per image; `--seed` (default 0) picks the noise.", ""]
    options = (
        (f" --classifier {args.classifier}" if args.classifier else "")
        + (f" --ranker {args.ranker}" if args.ranker else "")
        + f" --result {args.result}"
        + (f" --entry {args.entry}" if args.entry else "")
        + f" --name {args.name}"
    )
    shipping = [f"python benchmarks/ship.py --run {run}{options}" for run in (args.first_shipped, args.run) if run]
    lines += [
        "## How it was trained",
        "",
        "```bash",
        *result.get("commands", [result["command"]]),
        *shipping,
        "```",
        "",
        f"`benchmarks/{'latent' if sampling else 'gan'}.py` trains, within one "
        f"{result.get('budget_minutes', 60):g}-minute wall-clock budget on {result['machine']} ({result['date']}), "
        f"first the autoencoder (`configs/vae_cpu.yaml`: {autoencoder['train_steps']} steps in "
        f"{autoencoder['train_seconds'] / 60:.1f} minutes{reused(autoencoder)}; its reconstructions keep "
        f"{autoencoder['best_held_out_scores']['accuracy_ratio']:.3f} of the evaluator's accuracy on held-out real "
        "scenes), then, after encoding the training set and its mirror images, "
        f"{training(result, sampling, args.entry)}. "
        "`benchmarks/ship.py` exports the run (`condgen export`) and writes this card.",
        "",
        "## Scores",
        "",
        "The shipped evaluator's top-k accuracy and exact-set rate (the share of images whose detected objects are "
        f"exactly the requested ones), mean over noise seeds 0 to {seeds - 1}, "
        f"from `{args.result}`. unseen / seen: three-object requests that never / do occur in train.json "
        "(`benchmarks/labels/`).",
        "",
        "| sampler | network evaluations | " + " | ".join(FILES.values()) + " | seconds per image |",
        "|---|---|" + "---|" * len(FILES) + "---|",
    ]
    for name, scored in result_rows(result):
        cells = [
            f"{scored[f'accuracy_{key}']:.3f} / {scored[f'exact_set_{key}']:.3f}"
            for key in FILES
            if f"accuracy_{key}" in scored
        ]
        evaluations = scored.get("network_evaluations_per_image", scored.get("candidates", 1))
        lines.append(
            f"| {name} | {evaluations} | " + " | ".join(cells) + f" | {scored['seconds_per_image_test']:.2f} |"
        )
    lines += [
        "",
        f"Float16 weights: over seeds 0 to {check['seeds'] - 1} on test.json and new_test.json, the float32 and "
        f"float16 weights gave {'the same scores' if check['same_scores'] else 'different scores'} "
        f"(largest pixel difference {check['largest_pixel_difference']} on a [-1, 1] scale){differences(check)}; "
        f"float16's mean over the seeds is {'no lower on any' if check['float16_no_lower'] else 'lower on some'} "
        f"file and measure, so the weights ship in {precision}"
        + (" (stored in byte planes, lossless: `condgen/tensorfile.py`)." if precision == "float16" else ".")
        + ranker_precision(check, precision),
    ]
    return "\n".join(lines) + "\n"


def result_rows(result: dict) -> list[tuple[str, dict]]:
    """(row name, scores) per sampler of a diffusion result; the one row of a GAN's."""
    if "samplers" not in result:
        k = result.get("candidates", 1)
        return [("generator (one forward pass)" if k == 1 else f"generator, best of {k} by its critic", result)]
    interval = f" at t >= {result['guidance_min_t']}" if result.get("guidance_min_t") else ""
    ranked = ranking_sampling(result).get("candidates", 1)
    best_of = f", best of {ranked}" if ranked > 1 else ""
    return [
        (f"{n}-{s['steps']}, guidance {s['guidance']:g}{interval}{best_of}", s) for n, s in result["samplers"].items()
    ]


def reused(autoencoder: dict) -> str:
    return (
        ", trained by an earlier run of the same benchmark and charged to this one's hour"
        if "reused" in autoencoder
        else ""
    )


def training(result: dict, sampling: dict | None, entry: str | None) -> str:
    """How the generator itself trained, from the benchmark's record."""
    if sampling:
        diffusion = result["diffusion"]
        classifier, image_ranker = result.get("classifier"), result.get("ranker")
        before = []  # what trained between the autoencoder and the diffusion model
        if classifier:
            before.append(
                f"the noisy latent classifier (`configs/latent_classifier_cpu.yaml`: {classifier['train_steps']} "
                f"steps in {classifier['train_seconds'] / 60:.1f} minutes; exact-set rate "
                f"{classifier['held_out']['exact_set_t0']:.3f} on held-out latents at t = 0), then "
            )
        if image_ranker:
            before.append(
                f"the image ranker (`configs/ranker_cpu.yaml`: {image_ranker['config']['epochs']} epochs over the "
                f"training images in {image_ranker['train_seconds'] / 60:.1f} minutes; exact-set rate "
                f"{image_ranker['held_out']['exact_set']:.3f} on held-out real scenes), then "
            )
        return (
            f"{''.join(before)}the diffusion model (`configs/ldm_cpu.yaml`: {diffusion['train_steps']} steps of "
            f"{diffusion['config']['optim']['batch_size']} latents in {diffusion['train_seconds'] / 60:.1f} minutes, "
            f"{diffusion['train_images_per_second']:.1f} images/s)"
        )
    return (
        f"the GAN (`configs/{GAN_MODELS[entry.split('_best_of_')[0]][1]}`: {result['train_steps']} generator steps of "
        f"{result['config']['optim']['batch_size']} in "
        f"{result['train_minutes']:.1f} minutes, {result['seconds_per_step']} s each; the EMA generator of its "
        f"checkpoint with the best periodic accuracy, step {result['best_step']}, ships)"
    )


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


def ranker_precision(check: dict, precision: str) -> str:
    """What the float16 check found of the image ranker's float16 copy, where the folder holds a ranker."""
    if "ranker_choices_changed" not in check:
        return ""
    changed = check["ranker_choices_changed"]
    kept = (
        "the same candidate as the float32 one on every request"
        if changed == 0
        else f"another candidate than the float32 one on {changed} request{'s' if changed > 1 else ''}"
    )
    if precision == "float16":
        return f" The float16 image ranker, part of those scores, keeps {kept}; the ranker ships in float16 too."
    if changed == 0:
        return f" The image ranker's float16 copy keeps {kept}, the same images, so the ranker ships in float16."
    return f" The image ranker's float16 copy keeps {kept}, so the ranker ships in float32."


def describe(sampling: dict, ranked_by_image: bool = False) -> str:
    text = f"{sampling['sampler']}, {sampling['steps']} steps, guidance {sampling['guidance']:g}"
    if sampling.get("guidance_min_t"):
        text += f" at t >= {sampling['guidance_min_t']}"
    if "spacing" in sampling:
        text += f", {sampling['spacing']} spacing, eta {sampling['eta']:g}"
    if sampling.get("classifier_scale") or sampling.get("classifier_absent_scale"):
        text += (
            f", classifier guidance {sampling['classifier_scale']:g} towards the requested objects and "
            f"{sampling['classifier_absent_scale']:g} away from the others"
        )
    if sampling.get("candidates", 1) > 1:
        ranker = (
            "the image ranker shipped beside the model (`ranker.safetensors`, a ResNet18 trained on the training "
            "images, never the evaluator"
            if ranked_by_image
            else "the noisy latent classifier shipped beside the model (`classifier/`, trained on the training "
            "images' latents, never the evaluator"
        )
        text += (
            f", each image the best of {sampling['candidates']} ranked by {ranker}; `--candidates 1` samples plainly)"
        )
    return text + ", seed 0"


if __name__ == "__main__":
    main()
