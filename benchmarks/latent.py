"""Latent diffusion benchmark: within one wall-clock budget, train an autoencoder and then a latent diffusion model
on a dataset, sample test.json and new_test.json with DDPM (all T steps), DDIM-50 and DPM-Solver++(2M)-20, and score
every image with the shipped evaluator, each sampler at the classifier-free guidance scale chosen for it on label
lists drawn from train.json (--guidance). The budget covers everything before sampling: the autoencoder's training,
encoding the training set, the optional noisy classifier's training (--classifier-minutes: classifier guidance and
best-of-K ranking), the optional image ranker's (--ranker-config: best-of-K ranking of the decoded images, before the
classifier; never the evaluator), the optional object counter it ranks with (--ranker-counter-config; a candidate
holding more or fewer objects than requested is ranked down; never the shipped counter) and the diffusion model's
training. Each stage trains for at most what is left of it (its loop.max_minutes; the ranker's epochs are cut short
where it runs out first), and a stage that finds nothing left stops the benchmark with one line naming the stages
that spent it. SIGTERM or Ctrl-C ends it with one line too (a training stops after its step, which is saved).

Run by hand:
    python benchmarks/latent.py [--budget-minutes 60] [--autoencoder-minutes 15] [--autoencoder vae|vqvae]
    python benchmarks/latent.py --score-only    # score the trained runs again, e.g. after changing sample.clip_x0
    python benchmarks/latent.py --classifier-minutes 6 --candidates 4 --samplers ddim --guidance 8 \
        --name latent_ranked_cpu    # a noisy classifier within the budget; each image the best of 4 by it
    python benchmarks/latent.py --generator condgen/pretrained/iclevr-ldm \
        --generator-result benchmarks/results/latent_ranker_ship_cpu.json --ranker-config configs/ranker_cpu.yaml ...
        # the autoencoder and diffusion model that benchmark trained (as shipped), an image ranker trained anew
    python benchmarks/latent.py --generator condgen/pretrained/iclevr-ldm \
        --generator-result benchmarks/results/latent_ranker_ship_cpu.json --ranker-config configs/ranker_cpu.yaml \
        --ranker-counter-config configs/ranker_counter_cpu.yaml ...
        # ... and the ranker's own object counter, both within the budget
Writes benchmarks/results/<name>.json and the scored images under benchmarks/results/<name>/{test,new_test}/<sampler>/
(--results names another folder).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from common import (
    DATA,
    Budget,
    add_results_argument,
    add_sampling_arguments,
    configured_minutes,
    earlier_record,
    result_header,
    run_benchmark,
    score_samplers,
    train_autoencoder,
)

from condgen.data.jsonio import read_json
from condgen.evaluate.evaluator import load_evaluator
from condgen.evaluate.ranker import load_ranker, load_ranker_counter
from condgen.kinds import KINDS
from condgen.latent.classifier import LatentClassifierRunConfig, load_latent_classifier
from condgen.latent.ldm import LDMRunConfig
from condgen.launch import start_training
from condgen.parser import positive_int
from condgen.train.config import config_to_dict, load_config
from condgen.train.runs import read_metrics

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--budget-minutes", type=float, default=60.0, help="autoencoder + encoding + diffusion")
    parser.add_argument("--autoencoder-minutes", type=float, default=15.0, help="the autoencoder's share")
    parser.add_argument("--autoencoder", choices=["vae", "vqvae"], default="vae")
    parser.add_argument("--autoencoder-config", type=Path, default=ROOT / "configs" / "vae_cpu.yaml")
    parser.add_argument(
        "--autoencoder-set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="overrides of the autoencoder's config, e.g. optim.bf16=auto",
    )
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "ldm_cpu.yaml")
    parser.add_argument("--name", default="latent_cpu", help="result name (latent_cpu or latent_gpu)")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs", help="where the scratch runs go")
    parser.add_argument(
        "--score-only",
        action="store_true",
        help="skip training: score the runs in --runs again (after changing their sampling settings), keeping the "
        "training figures of the <name>.json that trained them",
    )
    parser.add_argument(
        "--classifier-minutes",
        type=float,
        default=0.0,
        help="the latent noisy classifier's share of the budget (configs/latent_classifier_cpu.yaml), trained after "
        "the autoencoder and before the diffusion model; 0 = none (default)",
    )
    parser.add_argument("--classifier-config", type=Path, default=ROOT / "configs" / "latent_classifier_cpu.yaml")
    parser.add_argument(
        "--generator",
        type=Path,
        help="instead of training the autoencoder and diffusion model: those of a model folder that ship.py wrote "
        "from an earlier run of this benchmark (float32 weights), with a classifier trained anew in its "
        "--classifier-minutes share; needs --generator-result",
    )
    parser.add_argument(
        "--generator-result", type=Path, help="with --generator: the result JSON of the benchmark that trained it"
    )
    parser.add_argument(
        "--ranker-config",
        type=Path,
        help="train an image ranker (`condgen train evaluator` with this config, e.g. configs/ranker_cpu.yaml) "
        "within the budget, after the autoencoder and before the diffusion model; it ranks the candidates",
    )
    parser.add_argument(
        "--ranker-set", nargs="+", default=[], metavar="KEY=VALUE", help="overrides of the ranker's config"
    )
    parser.add_argument(
        "--ranker-counter-config",
        type=Path,
        help="train the image ranker's own object counter (`condgen train counter` with this config, e.g. "
        "configs/ranker_counter_cpu.yaml) within the budget, after the ranker; needs --ranker-config",
    )
    parser.add_argument(
        "--candidates",
        type=positive_int,
        default=1,
        help="best of K samples per request, ranked by the image ranker, else the classifier",
    )
    parser.add_argument("--classifier-scale", type=float, default=0.0, help="classifier guidance to the requested")
    parser.add_argument("--classifier-absent-scale", type=float, default=0.0, help="and away from the others")
    add_sampling_arguments(parser)
    add_results_argument(parser)
    args = parser.parse_args()

    results = args.results / f"{args.name}.json"
    ae_run, ldm_run = args.runs / f"bench_{args.autoencoder}", args.runs / "bench_ldm"
    classifier_run = args.runs / "bench_latent_classifier" if args.classifier_minutes > 0 else None
    ranker_run = args.runs / "bench_ranker" if args.ranker_config else None
    counter_run = args.runs / "bench_ranker_counter" if args.ranker_counter_config else None
    if counter_run and not ranker_run:
        parser.error("--ranker-counter-config: the counter ranks with an image ranker; give --ranker-config too")
    if args.generator:
        if not (args.generator_result and args.generator_result.is_file()) or not (classifier_run or ranker_run):
            parser.error(
                "--generator: needs --generator-result JSON (the benchmark that trained it) and "
                "--classifier-minutes > 0 or --ranker-config"
            )
        trained = train_rankers_only(args, classifier_run, ranker_run, counter_run)
        ldm_run = args.generator
    elif args.score_only:
        if not results.is_file() or not (ldm_run / "metrics.jsonl").is_file():
            parser.error(f"--score-only: needs {ldm_run} and {results} from an earlier full run")
        trained = {k: v for k, v in earlier_record(results, {}).items() if k in TRAINING_KEYS}
    else:
        trained = train(args, ae_run, classifier_run, ranker_run, counter_run, ldm_run)
    loaded = KINDS["ldm"].load_model(ldm_run, "best" if args.generator else "latest")
    config = loaded.config
    if classifier_run is not None:
        loaded.classifier = load_latent_classifier(classifier_run, config)
    if ranker_run is not None:
        loaded.ranker = load_ranker(ranker_run, loaded.meta["objects"], next(loaded.model.parameters()).device)
    if counter_run is not None:
        loaded.ranker_counter = load_ranker_counter(counter_run, loaded.meta["objects"])
    config.sample = config.sample.changed(
        candidates=args.candidates,
        classifier_scale=args.classifier_scale,
        classifier_absent_scale=args.classifier_absent_scale,
    )
    device = next(loaded.model.parameters()).device
    evaluator = load_evaluator(device=device)
    trained["diffusion"]["config"] = config_to_dict(config)  # its sampling settings may have changed since

    out_dir = args.results / args.name
    record = {
        **result_header(device),
        **trained,
        "evaluator": "shipped i-CLEVR evaluator (condgen/evaluate/weights)",
        "samplers": {},
    }
    score_samplers(loaded, evaluator, args.data, args, out_dir, record, results)


TRAINING_KEYS = (
    "generator",
    "budget_minutes",
    "minutes_until_sampling",
    "autoencoder",
    "classifier",
    "ranker",
    "ranker_counter",
    "diffusion",
)


def train_rankers_only(
    args: argparse.Namespace, classifier_run: Path | None, ranker_run: Path | None, counter_run: Path | None
) -> dict:
    """The training record of ``args.generator_result`` with its classifier, ranker and ranker counter replaced by
    those trained anew (a classifier on the generator's autoencoder), and the minutes until sampling changed by the
    difference in their training time."""
    trained = {k: v for k, v in json.loads(args.generator_result.read_text()).items() if k in TRAINING_KEYS}
    if trained["diffusion"]["train_steps"] != read_json(args.generator / "best" / "state.json")["step"]:
        raise SystemExit(f"{args.generator}: not the diffusion model that {args.generator_result} trained")
    autoencoder = args.generator / "autoencoder"
    replaced = ("classifier", "ranker", "ranker_counter")
    earlier = sum((trained.get(key) or {}).get("train_seconds", 0.0) for key in replaced) / 60
    # the stages trained anew spend what the generator's autoencoder and diffusion model left of the budget
    budget = Budget(args.budget_minutes, trained["minutes_until_sampling"] - earlier, ["the generator"])
    retrained = {
        "classifier": train_classifier(args, autoencoder, classifier_run, budget) if classifier_run else None,
        "ranker": train_ranker(args, ranker_run, budget) if ranker_run else None,
        "ranker_counter": train_ranker_counter(args, counter_run, budget) if counter_run else None,
    }
    difference = sum((retrained[key] or {}).get("train_seconds", 0.0) for key in replaced) / 60 - earlier
    trained["minutes_until_sampling"] = round(trained["minutes_until_sampling"] + difference, 2)
    return trained | retrained | {"generator": f"{args.generator} ({args.generator_result.name})"}


def train_ranker(args: argparse.Namespace, ranker_run: Path, budget: Budget) -> dict:
    """Trains the image ranker (`condgen train evaluator` with ``args.ranker_config``) from scratch on the training
    images, its epochs cut short where the ``budget`` runs out first; returns its record for the result file, with
    the held-out figures of the weights that rank."""
    shutil.rmtree(ranker_run, ignore_errors=True)
    share = configured_minutes("evaluator", args.ranker_config, args.ranker_set)
    overrides = [*args.ranker_set, f"loop.max_minutes={budget.minutes_for('ranker', share)}"]
    start_training("evaluator", args.data, ranker_run, args.ranker_config, overrides, False)
    report = read_json(ranker_run / "evaluator.json")
    return {
        "train_seconds": report["train_seconds"],
        "best_step": report["best_step"],
        "held_out": {"accuracy": report["val_accuracy"], "exact_set": report["val_exact_set"]},
        "config": report["config"],
    }


def train_ranker_counter(args: argparse.Namespace, counter_run: Path, budget: Budget) -> dict:
    """Trains the ranker's object counter (`condgen train counter` with ``args.ranker_counter_config``) from
    scratch within its config's minutes and the ``budget``; returns its record for the result file, with the
    held-out figures of the weights that rank."""
    shutil.rmtree(counter_run, ignore_errors=True)
    share = configured_minutes("counter", args.ranker_counter_config, [])
    overrides = [f"loop.max_minutes={budget.minutes_for('ranker counter', share)}"]
    start_training("counter", args.data, counter_run, args.ranker_counter_config, overrides, False)
    report = read_json(counter_run / "counter.json")
    return {
        "train_seconds": report["train_seconds"],
        "best_step": report["best_step"],
        "held_out": {key: value for key, value in report["best"].items() if key.endswith("count_accuracy")},
        "config": report["config"],
    }


def train_classifier(args: argparse.Namespace, ae_run: Path, classifier_run: Path, budget: Budget) -> dict:
    """Trains the latent noisy classifier on ``ae_run``'s latents for ``args.classifier_minutes`` (at most what is
    left of the ``budget``) from scratch; its own encoding of the training set comes out of that share. Returns its
    record for the result file, with the held-out figures of its best/ checkpoint, the one that ranks and guides."""
    shutil.rmtree(classifier_run, ignore_errors=True)
    minutes = budget.minutes_for("noisy classifier", args.classifier_minutes)
    overrides = [f"autoencoder={ae_run}", f"loop.max_minutes={minutes}"]
    summary = start_training("latent_classifier", args.data, classifier_run, args.classifier_config, overrides, False)
    config = load_config(LatentClassifierRunConfig, classifier_run / "config.yaml")
    evaluations = [record for record in read_metrics(classifier_run) if "exact_set" in record]
    best = max(evaluations, key=lambda record: record[config.loop.best_by])  # best/, which ranks; the first on ties
    return {
        "train_steps": summary["step"],
        "train_seconds": round(summary["seconds"], 1),
        "best_step": best["step"],
        "held_out": {key: value for key, value in best.items() if key.startswith(("accuracy", "exact_set"))},
        "config": config_to_dict(config),
    }


def train(
    args: argparse.Namespace,
    ae_run: Path,
    classifier_run: Path | None,
    ranker_run: Path | None,
    counter_run: Path | None,
    ldm_run: Path,
) -> dict:
    """Trains the autoencoder, then the noisy classifier, the image ranker and its counter where their runs are
    given, then the diffusion model on what is left of the budget; returns the record's training part
    (``TRAINING_KEYS``). Each stage trains within what is left; one that finds nothing left stops the benchmark."""
    budget = Budget(args.budget_minutes)
    start = budget.started
    shutil.rmtree(ldm_run, ignore_errors=True)
    ae_minutes = budget.minutes_for("autoencoder", args.autoencoder_minutes)
    autoencoder = train_autoencoder(
        args.autoencoder, args.data, ae_run, args.autoencoder_config, ae_minutes, args.autoencoder_set
    )
    classifier = train_classifier(args, ae_run, classifier_run, budget) if classifier_run is not None else None
    ranker = train_ranker(args, ranker_run, budget) if ranker_run is not None else None
    ranker_counter = train_ranker_counter(args, counter_run, budget) if counter_run is not None else None
    # the diffusion model gets what is left; encoding the training set comes out of its share
    encoding = autoencoder.pop("encode_minutes")
    left = budget.minutes_for("diffusion model", upfront=encoding, upfront_for="encoding the training set")
    overrides = [f"autoencoder={ae_run}", f"loop.max_minutes={left}"]
    ldm_summary = start_training("ldm", args.data, ldm_run, args.config, overrides, resume=False)
    batch_size = load_config(LDMRunConfig, ldm_run / "config.yaml").optim.batch_size
    return {
        "budget_minutes": args.budget_minutes,
        "minutes_until_sampling": round((time.perf_counter() - start) / 60, 2),
        "autoencoder": autoencoder,
        "classifier": classifier,
        "ranker": ranker,
        "ranker_counter": ranker_counter,
        "diffusion": {
            "train_steps": ldm_summary["step"],
            "train_seconds": round(ldm_summary["seconds"], 1),
            "train_images_per_second": round(ldm_summary["step"] * batch_size / ldm_summary["seconds"], 2),
        },
    }


if __name__ == "__main__":
    run_benchmark(main)
