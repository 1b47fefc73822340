"""The ``condgen`` command: one entry point, one subcommand per job. :mod:`condgen.parser` builds the command line
and sets each command's handler, most of them functions here.

User mistakes surface as :class:`CondgenError` and are printed as one line with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

from condgen.errors import CondgenError, InterruptedTrainingError, SharedError
from condgen.kinds import KINDS, Generation
from condgen.parser import build_parser

EXIT_USER_ERROR = 2


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "train" and args.nproc is not None:
            return _torchrun(args, list(sys.argv[1:] if argv is None else argv))
        return run(args)
    except CondgenError as exc:
        if not isinstance(exc, SharedError) or _is_rank_zero():  # one line for a distributed run, not one per rank
            print(f"condgen: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("condgen: interrupted", file=sys.stderr)
        return 130


def run(args: argparse.Namespace) -> int:
    """Runs the command ``args`` was parsed for (the handler :mod:`condgen.parser` set); returns the exit status."""
    return args.handler(args)


def data_synth(args: argparse.Namespace) -> int:
    """``condgen data synth``: render a dataset folder."""
    from condgen.data.synth import synthesize_dataset

    summary = synthesize_dataset(
        args.out,
        n=args.n,
        seed=args.seed,
        size=args.size,
        workers=args.workers,
        max_objects=args.max_objects,
        repeats=args.repeats,
    )
    print(f"wrote {summary['images']} images to {args.out} ({summary['images_per_second']:.0f} images/s)")
    return 0


def data_check(args: argparse.Namespace) -> int:
    """``condgen data check``: validate a dataset folder and print its counts."""
    from condgen.data.check import check_dataset, format_report

    print(format_report(check_dataset(args.dir, strict=args.strict, max_objects=args.max_objects)))
    return 0


def evaluate(args: argparse.Namespace) -> int:
    """``condgen evaluate``: score images (or a dataset folder's own) and print the scores, as text or JSON."""
    from condgen.evaluate.scoring import evaluate_images

    if args.images is not None and args.labels is None:
        raise CondgenError("--images needs --labels (the label file the images were generated for)")
    result = evaluate_images(
        images=args.images,
        labels=args.labels,
        data=args.data,
        evaluator=args.evaluator,
        reference=args.reference,
        threshold=args.threshold,
        counter=args.counter,
    )
    print(json.dumps(result) if args.json else _format_scores(result))
    return 0


# what each count-aware rate measures, as ``condgen evaluate`` prints it
_COUNT_LINES = {
    "count_exact": ("count-exact rate", "as many objects counted as requested"),
    "exact_scene": ("exact-scene rate", "every requested object once, nothing else"),
    "extra_objects": ("extra objects", "images holding more objects than requested"),
}


def _format_scores(result: dict) -> str:
    """``condgen evaluate``'s text: accuracy, exact-set rate with precision and recall, the count-aware rates, each
    beside the real-image ceiling where the result holds one, and any Fréchet distance."""
    real = result.get("real_images") or {}

    def ceiling(key: str) -> str:
        return f"; real images {real[key]:.4f}" if key in real else ""

    lines = [
        f"accuracy: {result['accuracy']:.4f} ({result['images']} images, {result['objects']} objects"
        f"{ceiling('accuracy')})",
        f"exact-set rate: {result['exact_set']:.4f} (detected above {result['threshold']:g}; "
        f"precision {result['precision']:.4f}, recall {result['recall']:.4f}{ceiling('exact_set')})",
    ]
    lines += [
        f"{name}: {result[key]:.4f} ({meaning}{ceiling(key)})"
        for key, (name, meaning) in _COUNT_LINES.items()
        if key in result
    ]
    if "count_exact" not in result:
        lines.append("no object counter knows these objects: no count-aware rates (--counter FILE adds them)")
    if real:
        lines.append("real images: the shipped evaluator's and counter's figures on held-out real i-CLEVR images")
    if "frechet_distance" in result:
        lines.append(f"Fréchet distance in evaluator feature space: {result['frechet_distance']:.3f}")
    return "\n".join(lines)


def train(args: argparse.Namespace) -> int:
    """``condgen train KIND``: start or resume a run and say where it stopped (an evaluator: its held-out accuracy);
    a run stopped by a signal prints the command that resumes it and returns 130."""
    from condgen.kinds import BY_COMMAND
    from condgen.launch import start_training

    kind = BY_COMMAND[args.model].name
    if kind == "evaluator" and not args.resume:
        _refuse_evaluator_overwrite(args.out)
    evaluator = getattr(args, "evaluator", None)
    overrides = _training_overrides(args)
    try:
        summary = start_training(kind, args.data, args.out, args.config, overrides, args.resume, evaluator)
    except InterruptedTrainingError as exc:
        if _is_rank_zero():
            print(f"condgen: {exc}; continue exactly with: {_resume_command(args)}", file=sys.stderr)
        return 130
    best = summary["best_score"]
    if not _is_rank_zero():
        return 0
    print(
        f"stopped at step {summary['step']}; "
        f"best {'exact-set rate' if summary['best_by'] == 'exact_set' else 'accuracy'} "
        f"{best if best is None else round(best, 4)}; "
        f"run in {args.out}" + (f"; wrote {summary['wrote']}" if summary.get("wrote") else "")
    )
    if kind == "evaluator":
        print(_evaluator_record(args.out))
    return 0


def _training_overrides(args: argparse.Namespace) -> list[str]:
    """The KEY=VALUE overrides of ``condgen train``, with ``--autoencoder RUN`` as ``autoencoder=RUN``, and
    ``--teacher RUN|MODEL`` and ``--init RUN|MODEL`` as ``teacher=FOLDER`` and ``init=FOLDER`` (a new run only: a
    resumed one keeps its own)."""
    overrides = list(args.overrides)
    for option in ("autoencoder", "teacher", "init"):
        value = getattr(args, option, None)
        if value is None:
            continue
        if args.resume:
            raise CondgenError(f"--{option}: a resumed run keeps the {option} it started with; drop it")
        if option in ("teacher", "init"):
            from condgen.pretrained import model_path

            value = model_path(value)
        overrides.append(f"{option}={value}")
    return overrides


def _refuse_evaluator_overwrite(run: Path) -> None:
    """A new evaluator run never writes over an evaluator already in its folder (every rank sees the same file)."""
    if (run / "evaluator.safetensors").exists():
        raise SharedError(f"{run}: already holds an evaluator; choose another --out")


def _evaluator_record(run: Path) -> str:
    """A finished evaluator run's held-out accuracy and training time, from RUN/evaluator.json."""
    from condgen.data.jsonio import read_json

    report = read_json(run / "evaluator.json")
    return f"held-out accuracy {report['val_accuracy']:.4f} after {report['train_seconds'] / 60:.1f} min"


def sample(args: argparse.Namespace) -> int:
    """``condgen sample``: one image per label list, a grid and the scores."""
    from condgen.generate import sample_command

    args.run = _model_folder(args.run)
    result = sample_command(args)
    print(f"wrote {result['images']} images and grid.png to {args.out}{_sample_scores(result)}")
    return 0


def _sample_scores(result: dict) -> str:
    """``condgen sample``'s scores after its summary: top-k accuracy and the exact-set rate, and with a counter the
    count-exact and exact-scene rates and the share with extra objects (nothing without an evaluator)."""
    if "accuracy" not in result:
        return ""
    text = f", accuracy {result['accuracy']:.4f}, exact-set rate {result['exact_set']:.4f}"
    if "count_exact" in result:
        text += (
            f", count-exact rate {result['count_exact']:.4f}, exact-scene rate {result['exact_scene']:.4f}, "
            f"extra objects {result['extra_objects']:.4f}"
        )
    return text


def denoise(args: argparse.Namespace) -> int:
    """``condgen denoise``: one row of the sampler's states, from noise to the image."""
    from condgen.generate import denoise_command

    args.run = _model_folder(args.run, Generation.DIFFUSION)
    print(f"wrote {denoise_command(args)}")
    return 0


def interpolate(args: argparse.Namespace) -> int:
    """``condgen interpolate``: a GAN's images between two noise vectors."""
    from condgen.generate import interpolate_command

    args.run = _model_folder(args.run)
    print(f"wrote {interpolate_command(args)}")
    return 0


def export(args: argparse.Namespace) -> int:
    """``condgen export``: a run's generator as an inference-only model folder."""
    from condgen.export import export

    print(f"wrote {export(args.run, args.out, export_options(args))}")
    return 0


def export_options(args: argparse.Namespace):
    """``condgen export``'s options as the library takes them (:class:`condgen.export.ExportOptions`)."""
    from condgen.export import ExportOptions, Half
    from condgen.tensorfile import CODE_BITS

    if (args.entry or args.sampler) and args.result is None:
        raise CondgenError(f"--{'entry' if args.entry else 'sampler'}: names a part of a --result file; give --result")
    if args.ranker_bits is not None and args.ranker_bits not in CODE_BITS:
        raise CondgenError(f"--ranker-bits {args.ranker_bits}: choose {CODE_BITS.start} to {CODE_BITS.stop - 1}")
    return ExportOptions(
        checkpoint=args.checkpoint,
        half=Half(args.half),
        classifier=args.classifier,
        ranker=args.ranker,
        ranker_counter=args.ranker_counter,
        result=args.result,
        entry=args.entry,
        sampler=args.sampler,
        check_seeds=args.check_seeds,
        ranker_bits=args.ranker_bits,
    )


def report(args: argparse.Namespace) -> int:
    """``condgen report``: measure several models the same way."""
    from condgen.report.command import report_command

    print(f"wrote {report_command(args)} and report.html")
    return 0


def gradnorm(args: argparse.Namespace) -> int:
    """``condgen gradnorm``: the critic's per-layer gradient norms under each WGAN constraint."""
    from condgen.gan.gradnorm import GradNormConfig, format_norms, gradnorm_report

    config = GradNormConfig(steps=args.steps, batch_size=args.batch_size, seed=args.seed)
    norms, csv_path, png_path = gradnorm_report(args.data, args.out, config)
    print(format_norms(norms))
    print(f"wrote {png_path} and {csv_path}")
    return 0


def demo(args: argparse.Namespace) -> int:
    """``condgen demo``: the shipped models on i-CLEVR's test files, then the training path on rendered data."""
    from condgen.demo import run_demo

    run_demo(args.out, n=args.n, epochs=args.epochs, train_minutes=args.train_minutes)
    return 0


def _model_folder(model: Path | None, generation: Generation | None = None) -> Path:
    """The folder ``--run``/``--model`` names (a shipped model's name too); without one, the default shipped model
    (the first that generates the ``generation`` way, where given), which it says."""
    from condgen.pretrained import model_path

    kinds = None if generation is None else {kind.name for kind in KINDS.values() if kind.generation == generation}
    folder = model_path(model, kinds)
    if model is None:
        print(f"no --model given: using the shipped model {folder.name} ({folder})")
    return folder


def _is_rank_zero() -> bool:
    """Whether this process reports for a run: always, unless torchrun started it as a rank other than 0."""
    return os.environ.get("RANK", "0") == "0"


def _torchrun(args: argparse.Namespace, argv: list[str]) -> int:
    """``condgen train ... --nproc N``: the same command on N processes of this machine, as ``torchrun --standalone
    --nproc_per_node N`` starts them (:func:`condgen.launch.train_on_processes`); returns the exit status."""
    from condgen.launch import train_on_processes

    rest = [a for i, a in enumerate(argv) if a != "--nproc" and (i == 0 or argv[i - 1] != "--nproc")]
    rest = [a for a in rest if not a.startswith("--nproc=")]
    return train_on_processes(args.nproc, rest, args.out, f"{_resume_command(args)} --nproc {args.nproc}")


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


if __name__ == "__main__":
    sys.exit(main())
