"""The ``condgen`` command: one entry point, one subcommand per job (the parser is :mod:`condgen.parser`).

User mistakes surface as :class:`CondgenError` and are printed as one line with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from condgen.errors import CondgenError, InterruptedTrainingError, SharedError
from condgen.parser import build_parser

EXIT_USER_ERROR = 2


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "train" and args.nproc is not None:
            return _torchrun(args.nproc, list(sys.argv[1:] if argv is None else argv))
        return run(args)
    except CondgenError as exc:
        if not isinstance(exc, SharedError) or _is_rank_zero():  # one line for a distributed run, not one per rank
            print(f"condgen: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("condgen: interrupted", file=sys.stderr)
        return 130


def run(args: argparse.Namespace) -> int:
    if args.command == "data" and args.data_command == "synth":
        from condgen.data.synth import synthesize_dataset

        summary = synthesize_dataset(args.out, n=args.n, seed=args.seed, size=args.size, workers=args.workers)
        print(f"wrote {summary['images']} images to {args.out} ({summary['images_per_second']:.0f} images/s)")
    elif args.command == "data" and args.data_command == "check":
        from condgen.data.check import check_dataset, format_report

        print(format_report(check_dataset(args.dir, strict=args.strict, max_objects=args.max_objects)))
    elif args.command == "evaluator":
        return _train_evaluator(args)
    elif args.command == "evaluate":
        result = _evaluate(args)
        if args.json:
            print(json.dumps(result))
        else:
            print(f"accuracy: {result['accuracy']:.4f} ({result['images']} images, {result['objects']} objects)")
            print(
                f"exact-set rate: {result['exact_set']:.4f} (detected above {result['threshold']:g}; "
                f"precision {result['precision']:.4f}, recall {result['recall']:.4f})"
            )
            if "frechet_distance" in result:
                print(f"Fréchet distance in evaluator feature space: {result['frechet_distance']:.3f}")
    elif args.command == "train":
        from condgen.kinds import BY_COMMAND
        from condgen.launch import start_training

        kind = BY_COMMAND[args.model].name
        evaluator = getattr(args, "evaluator", None)
        overrides = list(args.overrides)
        if getattr(args, "autoencoder", None) is not None:
            if args.resume:
                raise CondgenError("--autoencoder: a resumed run keeps the autoencoder it started with; drop it")
            overrides.append(f"autoencoder={args.autoencoder}")
        try:
            summary = start_training(kind, args.data, args.out, args.config, overrides, args.resume, evaluator)
        except InterruptedTrainingError as exc:
            if _is_rank_zero():
                print(f"condgen: {exc}; continue exactly with: {_resume_command(args)}", file=sys.stderr)
            return 130
        best = summary["best_accuracy"]
        if not _is_rank_zero():
            return 0
        print(
            f"stopped at step {summary['step']}; best accuracy {best if best is None else round(best, 4)}; "
            f"run in {args.out}" + (f"; wrote {summary['wrote']}" if summary.get("wrote") else "")
        )
    elif args.command == "sample":
        from condgen.generate import sample_command

        args.run = _model_folder(args.run)
        result = sample_command(args)
        accuracy = ""
        if "accuracy" in result:
            accuracy = f", accuracy {result['accuracy']:.4f}, exact-set rate {result['exact_set']:.4f}"
        print(f"wrote {result['images']} images and grid.png to {args.out}{accuracy}")
    elif args.command == "denoise":
        from condgen.generate import denoise_command

        args.run = _model_folder(args.run)
        print(f"wrote {denoise_command(args)}")
    elif args.command == "interpolate":
        from condgen.generate import interpolate_command

        args.run = _model_folder(args.run)
        print(f"wrote {interpolate_command(args)}")
    elif args.command == "export":
        from condgen.export import export_model

        print(f"wrote {export_model(args.run, args.out, args.checkpoint, args.half, args.classifier, args.ranker)}")
    elif args.command == "serve":
        from condgen.serve.command import serve_command

        serve_command(args)
    elif args.command == "report":
        from condgen.report.command import report_command

        print(f"wrote {report_command(args)} and report.html")
    elif args.command == "gradnorm":
        from condgen.data.iclevr import load_dataset
        from condgen.gan.gradnorm import SETTINGS, GradNormConfig, measure, write_report

        if (args.out / "gradnorm.csv").exists():
            raise CondgenError(f"{args.out}: already holds gradnorm.csv; choose another --out")
        data = load_dataset(args.data)
        config = GradNormConfig(steps=args.steps, batch_size=args.batch_size, seed=args.seed)
        norms = {setting: measure(data, setting, config) for setting in SETTINGS}
        csv_path, png_path = write_report(norms, args.out)
        for setting, values in norms.items():
            print(f"{setting:>17}: " + "  ".join(f"{k} {v:.3g}" for k, v in values.items()))
        print(f"wrote {png_path} and {csv_path}")
    elif args.command == "demo":
        from condgen.demo import run_demo

        run_demo(args.out, n=args.n, epochs=args.epochs, train_minutes=args.train_minutes)
    return 0


def _model_folder(model: Path | None) -> Path:
    """The folder ``--run``/``--model`` names (a shipped model's name too); without one, the best shipped model,
    which it says."""
    from condgen.pretrained import model_path

    folder = model_path(model)
    if model is None:
        print(f"no --model given: using the shipped model {folder.name} ({folder})")
    return folder


def _is_rank_zero() -> bool:
    """Whether this process reports for a run: always, unless torchrun started it as a rank other than 0."""
    return os.environ.get("RANK", "0") == "0"


def _torchrun(nproc: int, argv: list[str]) -> int:
    """``condgen train ... --nproc N``: the same command under ``torchrun --standalone --nproc_per_node N`` (one
    machine, N processes), whose exit status it returns."""
    rest = [a for i, a in enumerate(argv) if a != "--nproc" and (i == 0 or argv[i - 1] != "--nproc")]
    rest = [a for a in rest if not a.startswith("--nproc=")]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    return subprocess.call([*command, "-m", "condgen", *rest])


def _resume_command(args: argparse.Namespace) -> str:
    """The command that resumes the training ``args`` started or resumed, with what it does not keep itself."""
    command = ["condgen", "train", args.model, "--data", str(args.data), "--out", str(args.out), "--resume"]
    if getattr(args, "evaluator", None) is not None:
        command += ["--evaluator", str(args.evaluator)]
    if args.resume:  # a resume's overrides are not written to config.yaml; a new run's are
        command += list(args.overrides)
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    if processes > 1 and os.environ.get("LOCAL_WORLD_SIZE") == str(processes):  # torchrun on this machine only
        command += ["--nproc", str(processes)]
    elif processes > 1:
        return f"{shlex.join(command)} (under the same torchrun command on every machine)"
    return shlex.join(command)


def _train_evaluator(args: argparse.Namespace) -> int:
    """`condgen evaluator train`: `condgen train evaluator` with the recipe's main settings as options."""
    from condgen.data.jsonio import read_json
    from condgen.launch import start_training

    if (args.out / "evaluator.safetensors").exists():
        raise CondgenError(f"{args.out}: already holds an evaluator; choose another --out")
    if not 0 < args.val_fraction < 1:
        raise CondgenError(f"--val-fraction: {args.val_fraction} is not between 0 and 1")
    overrides = [f"optim.{key}={getattr(args, key)}" for key in ("epochs", "batch_size", "lr", "seed")]
    overrides += [f"val_fraction={args.val_fraction}", f"half={str(args.half).lower()}"]
    try:
        summary = start_training("evaluator", args.data, args.out, None, overrides, resume=False)
    except InterruptedTrainingError as exc:
        resume = f"condgen train evaluator --data {args.data} --out {args.out} --resume"
        print(f"condgen: {exc}; continue exactly with: {resume}", file=sys.stderr)
        return 130
    report = read_json(args.out / "evaluator.json")
    print(
        f"held-out accuracy {report['val_accuracy']:.4f} after {report['train_seconds'] / 60:.1f} min; "
        f"wrote {summary['wrote']}"
    )
    return 0


def _evaluate(args: argparse.Namespace) -> dict:
    from condgen.evaluate.scoring import evaluate_images

    if args.images is not None and args.labels is None:
        raise CondgenError("--images needs --labels (the label file the images were generated for)")
    return evaluate_images(
        images=args.images,
        labels=args.labels,
        data=args.data,
        evaluator=args.evaluator,
        reference=args.reference,
        threshold=args.threshold,
    )


if __name__ == "__main__":
    sys.exit(main())
