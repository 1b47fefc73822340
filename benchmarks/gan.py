"""GAN benchmark: train each GAN of ``MODELS`` for a fixed wall-clock budget, one model at a time on the whole
machine, then sample test.json, new_test.json and the compositional split from the best checkpoint with several
noise seeds and score them with the shipped evaluator (top-k accuracy and the exact-set rate).

Run by hand:
    python benchmarks/gan.py [--budget-minutes 60] [--models hinge_s2d,latent_hinge_s2d] [--seeds 3] [--name gan_cpu]
    python benchmarks/gan.py --score-only --models hinge_s2d      # sample and score the trained runs again
    python benchmarks/gan.py --score-only --models M --candidates 16   # the same run, best of 16 per request

A latent GAN's budget covers its autoencoder too, as in the latent diffusion benchmark: the autoencoder trains for
--autoencoder-minutes (at most the budget), encoding the training set is timed, and the GAN trains for what is left.
With --autoencoder RUN an autoencoder trained earlier by this benchmark is reused, and its recorded training time is
charged to the budget just the same. A stage that finds nothing left of the budget stops the benchmark with one line
naming the stages that spent it; SIGTERM or Ctrl-C ends it with one line too (a training stops after its step, which
is saved).
Writes benchmarks/results/<name>.json (every model trained so far), the scored images of seed 0 under
benchmarks/results/<name>/<model>/<label file>/, and benchmarks/results/<name>/time_to_quality.png: each GAN's
periodic accuracy against training minutes, beside the end points of the pixel and latent diffusion benchmarks.
Runs are kept in runs/bench_gan_<model> (and a latent GAN's autoencoder in runs/bench_gan_<model>_vae); --runs and
--results name other folders, and --set adds config overrides to every model's (e.g. for a short trial).
--candidates K scores with the best of K images per request, ranked by the run's own critic (condgen.gan.sampling),
and records the result as <model>_best_of_<K>. --generator FOLDER scores a model folder that ship.py wrote from one
model's run (its training figures are those of that model's entry) in the same way, or, with an image ranker
(--ranker, a `condgen train evaluator` run) and the ranker's own object counter (--ranker-counter) in place of the
critic, their training time added to the model's, as <model>_best_of_<K>_ranked; a folder that holds (or shares,
rankers.json) an image ranker of its own ranks with it, recorded as <model>_best_of_<K>_ranked too:
    python benchmarks/gan.py --models latent_hinge_s2d_bf16_third --generator condgen/pretrained/iclevr-gan \
        --candidates 16 --seeds 3
    python benchmarks/gan.py --models latent_hinge_s2d_bf16_third --generator condgen/pretrained/iclevr-gan \
        --ranker runs/ranker_w32 --ranker-counter runs/bench_ranker_counter --candidates 16 --seeds 3
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch
from common import (
    DATA,
    RESULTS,
    Budget,
    add_label_arguments,
    add_results_argument,
    describe_autoencoder,
    earlier_record,
    label_files,
    result_header,
    run_benchmark,
    score_label_file,
    train_autoencoder,
)

from condgen.data.jsonio import read_json
from condgen.device import resolve_device
from condgen.evaluate.evaluator import load_evaluator
from condgen.evaluate.ranker import (
    load_ranker,
    load_ranker_counter,
    own_ranker_files,
    ranker_counter_weights,
    ranker_weights,
)
from condgen.kinds import KINDS
from condgen.launch import start_training
from condgen.parser import positive_float, positive_int
from condgen.train.config import config_to_dict
from condgen.train.runs import read_metrics

ROOT = Path(__file__).resolve().parents[1]
# model -> its kind, its config file in configs/ (sized for a 2-core CPU) and the overrides of an ablation
MODELS = {
    "hinge_s2d": ("gan", "gan_cpu.yaml", []),
    "latent_hinge_s2d": ("latent_gan", "latent_gan_cpu.yaml", ["optim.bf16=false"]),
    # bfloat16 autocast: 1.47x the training images/s on this CPU (benchmarks/train_speed.py)
    "latent_hinge_s2d_bf16": ("latent_gan", "latent_gan_cpu.yaml", []),
    # the same recipe trained again (on a reused VAE): how much one run's hour varies from the next
    "latent_hinge_s2d_bf16_repeat": ("latent_gan", "latent_gan_cpu.yaml", []),
    "latent_hinge_s2d_bf16_third": ("latent_gan", "latent_gan_cpu.yaml", []),
    "latent_acgan_bf16": ("latent_gan", "latent_gan_acgan.yaml", []),
    "latent_wgangp_bf16": ("latent_gan", "latent_gan_wgangp.yaml", []),
    "latent_wgan_clip_bf16": (
        "latent_gan",
        "latent_gan_wgan_clip.yaml",
        ["model.conditioning=projection", "optim.lr_g=0.00005"],
    ),
    "latent_wgan_clip_input_bf16": ("latent_gan", "latent_gan_wgan_clip.yaml", ["optim.lr_g=0.00005"]),
    # the generator at 2e-4; float32, for a CPU without bfloat16 units, where autocast is 2.6x slower
    "latent_wgan_clip_input_fast_g": ("latent_gan", "latent_gan_wgan_clip.yaml", ["optim.bf16=false"]),
}
# model -> the model whose run it starts from (`train latent-gan --init`), its config and overrides: a fine-tune,
# whose training minutes (its encoding of the training set included) add to the minutes that model's run took to
# reach the best checkpoint the fine-tune starts from
TUNED = {
    "latent_hinge_s2d_bf16_third_reward_40": ("latent_hinge_s2d_bf16_third", "latent_gan_reward_cpu.yaml", []),
    "latent_hinge_s2d_bf16_third_reward": (
        "latent_hinge_s2d_bf16_third",
        "latent_gan_reward_cpu.yaml",
        ["loop.max_minutes=15"],
    ),
    "latent_hinge_s2d_bf16_third_reward_hard": (
        "latent_hinge_s2d_bf16_third",
        "latent_gan_reward_cpu.yaml",
        ["loop.max_minutes=15", "reward.hard_fraction=0.5"],
    ),
    "latent_hinge_s2d_bf16_third_reward_40_look_alike": (
        "latent_hinge_s2d_bf16_third",
        "latent_gan_reward_cpu.yaml",
        ["reward.look_alike_fraction=0.5"],
    ),
    "latent_hinge_s2d_bf16_third_reward_look_alike": (
        "latent_hinge_s2d_bf16_third",
        "latent_gan_reward_cpu.yaml",
        ["loop.max_minutes=15", "reward.look_alike_fraction=0.5"],
    ),
}
# The diffusion benchmarks' 60-minute end points (mean over noise seeds), drawn beside the GAN curves.
DIFFUSION_RESULTS = {
    "pixel diffusion, DDIM-50": ("diffusion_cpu.json", "ddim"),
    "latent diffusion, DDIM-50": ("latent_cpu.json", "ddim"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument(
        "--budget-minutes", type=positive_float, default=60.0, help="training minutes per model (default 60)"
    )
    parser.add_argument("--name", default="gan_cpu", help="result name (default gan_cpu)")
    parser.add_argument(
        "--models",
        default="hinge_s2d,latent_hinge_s2d",
        help=f"comma-separated subset of {','.join([*MODELS, *TUNED])}",
    )
    parser.add_argument("--seeds", type=positive_int, default=3, help="noise seeds per label file (default 3)")
    parser.add_argument("--score-only", action="store_true", help="score the runs trained earlier, do not train")
    parser.add_argument(
        "--checkpoint", choices=("best", "latest"), default="best", help="which weights of a run to score (best)"
    )
    parser.add_argument(
        "--candidates", type=positive_int, help="score with the best of K per request (default: the run's own)"
    )
    parser.add_argument(
        "--autoencoder-minutes", type=positive_float, default=15.0, help="a latent GAN's autoencoder share"
    )
    parser.add_argument("--autoencoder-config", type=Path, default=ROOT / "configs" / "vae_cpu.yaml")
    parser.add_argument(
        "--autoencoder", type=Path, help="reuse this trained autoencoder run; its training minutes still count"
    )
    parser.add_argument("--runs", type=Path, default=ROOT / "runs", help="where the runs go (default runs)")
    parser.add_argument(
        "--set", nargs="+", default=[], metavar="KEY=VALUE", help="overrides added to every model's config"
    )
    parser.add_argument("--generator", type=Path, help="a model folder of the one model --models names (see above)")
    parser.add_argument("--ranker", type=Path, help="with --generator: the image ranker run that ranks candidates")
    parser.add_argument("--ranker-counter", type=Path, help="with --generator: the ranker's object counter run")
    add_label_arguments(parser)
    add_results_argument(parser)
    args = parser.parse_args()
    unknown = [name for name in args.models.split(",") if name not in MODELS and name not in TUNED]
    if unknown:
        parser.error(f"--models: unknown {', '.join(unknown)} (known: {', '.join([*MODELS, *TUNED])})")

    results = args.results / f"{args.name}.json"
    record = earlier_record(results, {"models": {}})
    if args.generator:
        if not args.candidates or "," in args.models or bool(args.ranker) != bool(args.ranker_counter):
            parser.error("--generator: needs one model in --models, --candidates, and --ranker with --ranker-counter")
        if args.models not in record["models"]:
            parser.error(f"--generator: {results} holds no trained {args.models} to take the training figures of")
        ranked = args.ranker or own_ranker_files(args.generator)[0]  # an image ranker given or the folder's own
        entry = f"{args.models}_best_of_{args.candidates}" + ("_ranked" if ranked else "")
        record["models"][entry] = score_ranked_folder(
            record["models"][args.models], args, args.results / args.name / entry
        )
        results.write_text(json.dumps(record, indent=2) + "\n")
        print(entry, json.dumps({k: v for k, v in record["models"][entry].items() if k != "config"}), flush=True)
        return
    # results of an earlier protocol (one core per model, no curve, one seed) stay in git history, not here
    record["models"] = {name: result for name, result in record["models"].items() if "curve" in result}
    for name in args.models.split(","):
        run = args.runs / f"bench_gan_{name}"
        entry = name if args.candidates is None else f"{name}_best_of_{args.candidates}"
        out_dir = args.results / args.name / entry
        if name in TUNED:
            base, config, overrides = TUNED[name]
            if base not in record["models"]:
                parser.error(f"--models {name}: {results} holds no trained {base} to start from")
            kind, before = MODELS[base][0], dict(record["models"].get(name, {}).get("started", {}))
            if not args.score_only:
                before = tune(base, kind, ROOT / "configs" / config, [*overrides, *args.set], run, args)
            before["from_minutes"] = minutes_until_best(record["models"][base])
            shutil.rmtree(out_dir, ignore_errors=True)
            record["models"][entry] = score_run(kind, run, out_dir, args, None, before)
        else:
            kind, config, overrides = MODELS[name]
            trained = record["models"].get(name, {}).get("autoencoder")
            if not args.score_only:
                trained = train(name, kind, ROOT / "configs" / config, [*overrides, *args.set], run, args)
            shutil.rmtree(out_dir, ignore_errors=True)
            record["models"][entry] = score_run(kind, run, out_dir, args, trained)
        results.parent.mkdir(parents=True, exist_ok=True)
        results.write_text(json.dumps(record, indent=2) + "\n")
        print(entry, json.dumps({k: v for k, v in record["models"][entry].items() if k != "config"}), flush=True)
    plot_time_to_quality(record, args.results / args.name / "time_to_quality.png", args.results)


def train(name: str, kind: str, config: Path, overrides: list[str], run: Path, args: argparse.Namespace) -> dict | None:
    """Trains the GAN ``name`` from scratch within ``args.budget_minutes``; a latent GAN's autoencoder first, on the
    same budget, and encoding the training set out of the GAN's share. Returns the autoencoder's record, or None for
    a pixel GAN. A stage that finds nothing left of the budget raises :class:`CondgenError` before it trains."""
    shutil.rmtree(run, ignore_errors=True)
    budget, overrides, autoencoder, encoding = Budget(args.budget_minutes), list(overrides), None, 0.0
    if KINDS[kind].needs_autoencoder:
        if args.autoencoder:
            ae_run = args.autoencoder.resolve()
            ae_kind = read_json(ae_run / "run.json").get("kind")
            autoencoder = describe_autoencoder(ae_kind, args.data, ae_run) | {"reused": str(ae_run)}
            # its recorded training time is charged as if it had trained here
            budget = Budget(args.budget_minutes, autoencoder["train_seconds"] / 60, ["the reused autoencoder"])
        else:
            ae_run = run.with_name(run.name + "_vae")
            minutes = budget.minutes_for("autoencoder", args.autoencoder_minutes)
            autoencoder = train_autoencoder("vae", args.data, ae_run, args.autoencoder_config, minutes)
        encoding = autoencoder["encode_minutes"]
        overrides.append(f"autoencoder={ae_run}")
    minutes = budget.minutes_for(f"{name} GAN", upfront=encoding, upfront_for="encoding the training set")
    overrides.append(f"loop.max_minutes={minutes}")
    start_training(kind, args.data, run, config, overrides, resume=False)
    return autoencoder


def tune(base: str, kind: str, config: Path, overrides: list[str], run: Path, args: argparse.Namespace) -> dict:
    """Trains a fine-tune of the run of ``base`` as ``config`` bounds it; returns what came before its loop: the run
    it started from and the minutes of encoding the training set again (the wall time before the loop's)."""
    shutil.rmtree(run, ignore_errors=True)
    started = time.perf_counter()
    start_training(kind, args.data, run, config, [*overrides, f"init={args.runs / f'bench_gan_{base}'}"], False)
    loop_seconds = [r for r in read_metrics(run) if "seconds" in r][-1]["seconds"]
    return {
        "from": base,
        "encode_minutes": round((time.perf_counter() - started - loop_seconds) / 60, 2),
    }


def minutes_until_best(trained: dict) -> float:
    """The minutes a run took until its best checkpoint, the one a fine-tune starts from: its training beyond that
    checkpoint is no part of the fine-tune's recipe."""
    return next(point["minutes"] for point in trained["curve"] if point["step"] == trained["best_step"])


def score_run(
    kind: str,
    run: Path,
    out_dir: Path,
    args: argparse.Namespace,
    autoencoder: dict | None,
    started: dict | None = None,
) -> dict:
    """The run's training figures and periodic curve (in minutes of the whole budget: a latent GAN's start after
    its autoencoder's training and the encoding; a fine-tune's, ``started``, after the training of the run it
    started from and its own encoding), and every label file's scores over ``args.seeds`` noise seeds (mean and
    each seed) from its ``args.checkpoint`` weights; seed 0's images are saved."""
    loaded = KINDS[kind].load_model(run, args.checkpoint)
    evaluator = load_evaluator(device=next(loaded.generator.parameters()).device)
    records = read_metrics(run)
    trained = [r for r in records if "seconds" in r]
    before = autoencoder["train_seconds"] / 60 + autoencoder["encode_minutes"] if autoencoder else 0.0
    if started:
        before = started["from_minutes"] + started["encode_minutes"]
    result = {
        **result_header(resolve_device(loaded.config.device)),
        "kind": kind,
        "config": config_to_dict(loaded.config),
        **({"autoencoder": autoencoder} if autoencoder else {}),
        **({"started": started} if started else {}),
        "train_steps": trained[-1]["step"],
        "train_minutes": round(trained[-1]["seconds"] / 60, 2),
        "minutes_until_sampling": round(before + trained[-1]["seconds"] / 60, 2),
        "seconds_per_step": round(trained[-1]["seconds"] / trained[-1]["step"], 3),
        "best_step": json.loads((run / "best" / "state.json").read_text())["step"],
        "checkpoint": args.checkpoint,
        "curve": time_to_quality(records, before),
        "seeds": args.seeds,
        "candidates": loaded.config.candidates if args.candidates is None else args.candidates,
    }

    def make_images(labels: torch.Tensor, seed: int) -> torch.Tensor:
        return loaded.sample(labels, seed, result["candidates"])

    for stem, file in label_files(args.data, args.labels).items():
        result |= score_label_file(
            make_images, evaluator, file, args.seeds, out_dir / stem, out_dir / f"{stem}_grid.png"
        )
    return result


def score_ranked_folder(trained: dict, args: argparse.Namespace, out_dir: Path) -> dict:
    """A model folder of the run ``trained`` records, scored with the best of ``args.candidates`` images per
    request, ranked by its critic or, given, an image ranker and that ranker's object counter, whose training then
    adds to the budget."""
    loaded = KINDS[trained["kind"]].load_model(args.generator, "best")
    stages = ranker_stages(loaded, args) if args.ranker else {}
    added = sum(stage["train_seconds"] for stage in stages.values()) / 60
    result = {
        **trained,
        **result_header(resolve_device(loaded.config.device)),
        **stages,
        "minutes_until_sampling": round(trained["minutes_until_sampling"] + added, 2),
        "seeds": args.seeds,
        "candidates": args.candidates,
    }
    shutil.rmtree(out_dir, ignore_errors=True)
    evaluator = load_evaluator(device=next(loaded.generator.parameters()).device)
    for stem, file in label_files(args.data, args.labels).items():
        result |= score_label_file(
            lambda labels, seed: loaded.sample(labels, seed, args.candidates),
            evaluator,
            file,
            args.seeds,
            out_dir / stem,
            out_dir / f"{stem}_grid.png",
        )
    return result


def ranker_stages(loaded, args: argparse.Namespace) -> dict:
    """Gives ``loaded`` the image ranker and its counter that ``args`` names; returns their training records."""
    objects = loaded.meta["objects"]
    loaded.ranker = load_ranker(args.ranker, objects)
    loaded.ranker_counter = load_ranker_counter(args.ranker_counter, objects)
    ranker = read_json(ranker_weights(args.ranker).with_suffix(".json"))
    counter = read_json(ranker_counter_weights(args.ranker_counter).with_suffix(".json"))
    return {
        "ranker": {
            "train_seconds": ranker["train_seconds"],
            "held_out": {"accuracy": ranker["val_accuracy"], "exact_set": ranker["val_exact_set"]},
            "config": ranker["config"],
        },
        "ranker_counter": {
            "train_seconds": counter["train_seconds"],
            "held_out": {k: v for k, v in counter["best"].items() if k.endswith("count_accuracy")},
            "config": counter["config"],
        },
    }


def time_to_quality(records: list[dict], before: float = 0.0) -> list[dict]:
    """The periodic evaluations as (minutes, step, accuracy per file): an evaluation's time is that of the loss
    record of its step, which the loop writes just before it, plus the ``before`` minutes spent before training."""
    seconds_at = {r["step"]: r["seconds"] for r in records if "seconds" in r}
    curve = []
    for r in records:
        if "accuracy" in r and r["step"] in seconds_at:
            point = {"minutes": round(before + seconds_at[r["step"]] / 60, 2), "step": r["step"]}
            curve.append(point | {k: round(v, 4) for k, v in r.items() if k.startswith(("accuracy_", "exact_set_"))})
    return curve


def plot_time_to_quality(record: dict, path: Path, results: Path = RESULTS) -> None:
    """Accuracy (mean of the two test files) against training minutes, one curve per GAN, with the diffusion
    benchmarks' results in ``results`` (those at the end of their hour) as single points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(11, 4.5))
    for name, result in record["models"].items():
        if "_best_of_" in name:  # the same training run as <model>, scored another way
            continue
        curve = result["curve"]
        mean = [(p["accuracy_test"] + p["accuracy_new_test"]) / 2 for p in curve]
        axis.plot([p["minutes"] for p in curve], mean, marker=".", label=f"GAN {name} (periodic, seed 0)")
    for (label, (file, sampler)), color in zip(DIFFUSION_RESULTS.items(), ("black", "tab:cyan")):
        if (results / file).is_file():
            result = json.loads((results / file).read_text())
            scores = result["samplers"][sampler]
            minutes = result.get("minutes_until_sampling", result.get("budget_minutes"))
            mean = (scores["accuracy_test"] + scores["accuracy_new_test"]) / 2
            axis.scatter([minutes], [mean], marker="*", s=120, color=color, label=f"{label} (after training)", zorder=3)
    axis.set_xlabel("training minutes (2-core CPU; a latent model's autoencoder included)")
    axis.set_ylabel("top-k accuracy, mean of test.json and new_test.json")
    axis.set_ylim(0, 1)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))  # beside the curves, not on them
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


if __name__ == "__main__":
    run_benchmark(main)
