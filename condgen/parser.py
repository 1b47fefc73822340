"""The ``condgen`` command line's parser: every subcommand, option and help text. It imports no torch, so
``condgen --help`` answers at once. Each ``add_*_command`` function builds one command and sets its handler, a
function of :mod:`condgen.cli` (or beside the library code it drives) that is imported only when the command runs."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path

from condgen.data.vocabulary import DEFAULT_OBJECTS
from condgen.diffusion.options import Sampler, Spacing
from condgen.diffusion.presets import PRESETS
from condgen.kinds import KINDS, Kind
from condgen.pretrained import SHIPPED
from condgen.serve.requests import MAX_SEED

# How every kind's settings are made and how a run continues, said once for every `condgen train KIND --help`.
TRAINING = (
    "Settings come from the dataclass defaults, then --config FILE (YAML, overrides only; see configs/), then "
    "KEY=VALUE overrides such as loop.steps=5000. --resume continues exactly where the run stopped."
)

Commands = argparse._SubParsersAction  # what add_subparsers returns: add_parser makes one command


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text}")
    return value


def seed(text: str) -> int:
    """A noise seed: a whole number from 0 to 2^32 - 1, as the page takes (torch refuses seeds of 2^64 and up)."""
    value = int(text)
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be a whole number from 0 to {MAX_SEED}, got {text[:40]}")
    return value


def output_folder(text: str) -> Path:
    """A folder to write into: refused at once where a file stands in its way (``--out notes.txt/run``), before any
    work or any folder is made."""
    path = Path(text)
    _no_file_above(path, (path, *path.parents))
    return path


def output_file(text: str) -> Path:
    """A file to write: refused at once where it names a folder or a file stands where its folder would be."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; name the file to write")
    _no_file_above(path, path.parents)
    return path


def _no_file_above(path: Path, places: Iterable[Path]) -> None:
    """Refuses ``path`` where the first of ``places`` (it, or its parents from the nearest) that exists is a file."""
    for place in places:
        if place.exists():
            if place == path and not place.is_dir():
                raise argparse.ArgumentTypeError(f"{path} is a file, not a folder")
            if not place.is_dir():
                raise argparse.ArgumentTypeError(f"{place} is a file, so {path} cannot be made below it")
            return


def probability(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:  # also rejects nan
        raise argparse.ArgumentTypeError(f"must be a number between 0 and 1, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if not 0 <= value < float("inf"):  # also rejects nan
        raise argparse.ArgumentTypeError(f"must be a number >= 0 (and finite), got {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not 0 < value < float("inf"):  # also rejects nan
        raise argparse.ArgumentTypeError(f"must be a number > 0 (and finite), got {text}")
    return value


def port(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number from 1 to 65535, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The whole command line; ``args.handler(args)`` runs the command a parse chose."""
    parser = argparse.ArgumentParser(
        prog="condgen",
        description="Multi-label conditional image generation on i-CLEVR-format datasets.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_command in (
        add_data_command,
        add_evaluate_command,
        add_train_command,
        add_sample_command,
        add_denoise_command,
        add_interpolate_command,
        add_export_command,
        add_serve_command,
        add_report_command,
        add_gradnorm_command,
        add_demo_command,
    ):
        add_command(commands)
    return parser


# --- handlers -------------------------------------------------------------------------------------------------------


def lazy_handler(reference: str) -> Callable[[argparse.Namespace], int]:
    """The command function ``"module:function"`` as a handler that imports its module only when it runs, so that
    building the parser (and ``--help``) loads no torch. ``handler.args[0]`` is the reference."""
    return partial(_run_handler, reference)


def _run_handler(reference: str, args: argparse.Namespace) -> int:
    module, _, function = reference.partition(":")
    return getattr(importlib.import_module(module), function)(args)


# --- options that several commands share ----------------------------------------------------------------------------


def add_out_option(p: argparse.ArgumentParser, help_text: str, file: bool = False) -> None:
    """``--out``: the folder a command writes into, or with ``file`` the one file it writes."""
    p.add_argument("--out", type=output_file if file else output_folder, required=True, help=help_text)


def add_seed_option(
    p: argparse.ArgumentParser, help_text: str = "random seed (default 0)", default: int | None = 0
) -> None:
    p.add_argument("--seed", type=seed, default=default, help=help_text)


def add_checkpoint_option(p: argparse.ArgumentParser, help_text: str = "which weights (default best)") -> None:
    p.add_argument("--checkpoint", choices=["best", "latest"], default="best", help=help_text)


def add_run_option(p: argparse.ArgumentParser, help_text: str, required: bool = False) -> None:
    """``--run``, or its other name ``--model``: the run or model folder a command opens."""
    p.add_argument("--run", "--model", dest="run", type=Path, required=required, help=help_text)


def add_objects_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--objects", default=DEFAULT_OBJECTS, help="the request")


def add_evaluator_option(p: argparse.ArgumentParser, help_text: str) -> None:
    p.add_argument("--evaluator", type=Path, help=help_text)


def add_generation_options(
    p: argparse.ArgumentParser, default: str = f"the default shipped model ({SHIPPED[0]})"
) -> None:
    """The model and sampler options of every command that generates from a run: sample, denoise (``default``: the
    model it takes without --model, in words)."""
    add_run_option(
        p,
        "a training run folder, a model folder written by `condgen export` or a shipped model's name "
        f"({', '.join(SHIPPED)}); default: {default}",
    )
    add_checkpoint_option(
        p,
        "best: the weights with the highest evaluation score (else the latest); latest: the last saved (default best)",
    )
    p.add_argument(
        "--sampler",
        choices=[s.value for s in Sampler],
        help="diffusion runs; default: the run's sample.sampler. Another sampler brings its preset steps, eta and "
        "spacing (condgen/diffusion/presets.py); the run's guidance, seed and candidates stay",
    )
    p.add_argument(
        "--steps",
        type=positive_int,
        help="ddim and dpmpp steps; default: the run's sample.steps, or with another --sampler that sampler's preset "
        f"({', '.join(f'{name.value} {p.steps}' for name, p in PRESETS.items() if p.steps)}); ddpm always takes T",
    )
    p.add_argument(
        "--guidance",
        type=non_negative_float,
        help="diffusion runs: classifier-free guidance scale (1 = none, 0 = unconditional); default: the run's "
        "sample.guidance",
    )
    p.add_argument(
        "--guidance-min-t",
        type=non_negative_int,
        help="guide only at steps t >= this (below it, the plain conditional prediction at half the cost); "
        "0 = every step; default sample.guidance_min_t",
    )
    p.add_argument(
        "--eta",
        type=non_negative_float,
        help="ddim and dpmpp: fresh noise per step; 0 = deterministic (the ODE), 1 = as much as DDPM adds (ddim) "
        "or the SDE solver (dpmpp); default sample.eta, or another --sampler's preset",
    )
    p.add_argument(
        "--spacing",
        choices=[s.value for s in Spacing],
        help="ddim and dpmpp: which of the T steps they visit; trailing = evenly from T - 1, quadratic = denser "
        "near the end; default sample.spacing, or another --sampler's preset",
    )
    add_seed_option(
        p,
        "noise seed; the same seed gives the same images (default: the run's sample.seed, or a GAN run's eval_seed)",
        default=None,
    )


# --- commands -------------------------------------------------------------------------------------------------------


def add_data_command(commands: Commands) -> None:
    """``condgen data synth`` and ``condgen data check``."""
    data = commands.add_parser("data", help="make or check a dataset folder").add_subparsers(
        dest="data_command", required=True, metavar="COMMAND"
    )
    add_data_synth_command(data)
    add_data_check_command(data)


def add_data_synth_command(commands: Commands) -> None:
    p = commands.add_parser(
        "synth",
        help="render a synthetic CLEVR-like dataset in the i-CLEVR format",
        description="Render CLEVR-like scenes (3 shapes x 8 colours) into DIR, with train.json, test.json, "
        "new_test.json and objects.json. By default scenes of 1-3 distinct objects come in triples (NNNNNN_0/1/2) "
        "that add one object at a time, as in i-CLEVR. --max-objects other than 3 or --repeats above 0 render "
        "counting scenes instead: one image per scene (NNNNNN), and counts.json, which maps each file to "
        "{object name: number of instances}. Deterministic for a given seed.",
    )
    add_out_option(p, "new folder to create (must not exist or be empty)")
    p.add_argument("--n", type=positive_int, required=True, help="number of training images")
    add_seed_option(p)
    p.add_argument("--size", type=positive_int, default=64, help="image side in pixels (default 64)")
    p.add_argument("--workers", type=positive_int, default=None, help="processes (default: all cores)")
    p.add_argument(
        "--max-objects",
        type=int,
        default=3,
        metavar="K",
        help="counting scenes: the number of objects in each image is drawn uniformly from 1 to K (1-6); "
        "3 with --repeats 0 keeps the i-CLEVR triples (default 3)",
    )
    p.add_argument(
        "--repeats",
        type=float,
        default=0.0,
        metavar="P",
        help="counting scenes: the share (0-1) of images in which some object, same colour and shape, is drawn two "
        "or more times (those hold 2 to K objects); the other images hold distinct objects (default 0)",
    )
    p.set_defaults(handler=lazy_handler("condgen.cli:data_synth"))


def add_data_check_command(commands: Commands) -> None:
    p = commands.add_parser(
        "check",
        help="validate a dataset folder and count its classes",
        description="Validate objects.json, train.json, the optional label files and every image; print counts "
        "per class and per number of objects, the images that loading converts (any that is not 64x64 RGB) and the "
        "label lists that ask for more objects than a model trained on the set accepts. --strict, as training "
        "does, refuses both.",
    )
    p.add_argument("dir", type=Path, help="the dataset folder")
    p.add_argument(
        "--strict",
        action="store_true",
        help="refuse images that are not 64x64 RGB and label lists longer than --max-objects (training's rule)",
    )
    p.add_argument(
        "--max-objects",
        type=positive_int,
        help="the most objects a label list may ask for (default: the largest scene in train.json)",
    )
    p.set_defaults(handler=lazy_handler("condgen.cli:data_check"))


def add_evaluate_command(commands: Commands) -> None:
    p = commands.add_parser(
        "evaluate",
        help="score images with the evaluator (the course's top-k accuracy and the exact-set rate) and the object "
        "counter (the count-exact and exact-scene rates)",
        description="Score generated images against the label lists they were asked to show: the course's top-k "
        "accuracy, the exact-set rate (the share of images whose detected objects, evaluator output above "
        "--threshold, are exactly the requested ones) and per-object precision and recall; with an object counter "
        "(the shipped one for i-CLEVR's objects, or --counter), the count-exact rate (as many objects as requested), "
        "the exact-scene rate (exactly the requested objects, each once) and the share with extra objects. PATH is "
        "a folder of 0.png, 1.png, ... (one per label list, in order) or a .pt/.npy tensor (N, 3, H, W): uint8 in "
        "[0, 255] or float in [-1, 1]. Alternatively --data scores a dataset folder's own images against its "
        "train.json.",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", type=Path, help="folder of N.png files, or a .pt/.npy tensor batch")
    source.add_argument("--data", type=Path, help="a dataset folder: score its images against train.json")
    p.add_argument("--labels", type=Path, help="label file (a JSON list of object-name lists)")
    add_evaluator_option(
        p, "evaluator weights: .safetensors or the course's .pth (default: the shipped i-CLEVR evaluator)"
    )
    p.add_argument(
        "--counter",
        type=Path,
        metavar="FILE",
        help="object counter weights, a `condgen train counter` run's counter.safetensors, for the evaluator's "
        "objects (default: the shipped i-CLEVR counter where the objects are i-CLEVR's, else no count scores)",
    )
    p.add_argument(
        "--reference",
        type=Path,
        help="dataset folder: also report the Fréchet distance to its "
        "images in the evaluator's 512-d feature space (not Inception FID)",
    )
    p.add_argument(
        "--threshold",
        type=probability,
        default=0.5,
        help="an object counts as detected when the evaluator's output exceeds this (default 0.5)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.set_defaults(handler=lazy_handler("condgen.cli:evaluate"))


def add_train_command(commands: Commands) -> None:
    """``condgen train KIND`` for every kind in :data:`condgen.kinds.KINDS`."""
    kinds = commands.add_parser("train", help="train a generative model").add_subparsers(
        dest="model", required=True, metavar="MODEL"
    )
    for kind in KINDS.values():
        add_train_kind_command(kinds, kind)


def add_train_kind_command(commands: Commands, kind: Kind) -> None:
    p = commands.add_parser(kind.command, help=kind.summary, description=f"{kind.description} {TRAINING}")
    example = f" (e.g. {kind.example_config})" if kind.example_config else ""
    p.add_argument("--data", type=Path, required=True, help="dataset folder in the i-CLEVR format")
    add_out_option(p, "run folder")
    p.add_argument("--config", type=Path, help=f"YAML file of overrides{example}")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. optim.lr=2e-4")
    p.add_argument(
        "--nproc",
        type=positive_int,
        help="train with N processes on this machine (torchrun --standalone --nproc_per_node N); the global "
        "batch is N x optim.batch_size",
    )
    if kind.scored:
        add_evaluator_option(
            p, "evaluator for periodic scoring (default: the shipped one when the data uses the i-CLEVR objects)"
        )
    if kind.needs_autoencoder:
        p.add_argument(
            "--autoencoder",
            type=Path,
            metavar="RUN",
            help="a `train vae` or `train vqvae` run; required for a new run"
            + (" unless --init gives one" if kind.can_start_from else "")
            + " (a resumed run keeps its own)",
        )
    if kind.needs_teacher:
        p.add_argument(
            "--teacher",
            metavar="RUN|MODEL",
            help="the ldm run or model folder to learn from, or a shipped model's name (iclevr-ldm); required for a "
            "new run (a resumed run keeps its own)",
        )
    if kind.can_start_from:
        p.add_argument(
            "--init",
            metavar="RUN|MODEL",
            help=f"a trained {kind.name} run or model folder, or a shipped model's name, to start from: its best "
            "weights and model settings (a resumed run keeps its own)",
        )
    p.set_defaults(handler=lazy_handler("condgen.cli:train"))


def add_sample_command(commands: Commands) -> None:
    p = commands.add_parser(
        "sample",
        help="generate images for label lists from a trained run (diffusion, latent diffusion or GAN)",
        description="Generate one image per label list into OUT (0.png, 1.png, ...), an 8-per-row grid.png, "
        "and scores.json with the evaluator's accuracy. --sampler, --steps, --guidance, --guidance-min-t, --eta, "
        "--spacing and --classifier options apply to diffusion runs; a GAN run uses --seed and --candidates.",
    )
    add_generation_options(p)
    request = p.add_mutually_exclusive_group(required=True)
    request.add_argument("--labels", type=Path, help="label file (JSON list of object-name lists)")
    request.add_argument("--objects", help='one request, e.g. "red sphere, cyan cube"')
    add_out_option(p, "new folder for the images")
    add_evaluator_option(p, "evaluator weights (default: the run's)")
    p.add_argument(
        "--candidates",
        type=positive_int,
        help="make K images per request and keep the one a classifier trained on the training images finds "
        "closest to exactly the requested objects (never the evaluator): a GAN's critic's auxiliary head, or a "
        "diffusion model's image ranker (--ranker) or else its noisy classifier (--classifier); 1 = no ranking; "
        "default: the run's candidates",
    )
    add_classifier_guidance_options(p)
    p.set_defaults(handler=lazy_handler("condgen.cli:sample"))


def add_classifier_guidance_options(p: argparse.ArgumentParser) -> None:
    """``condgen sample``'s image ranker and noisy classifier, and how hard the classifier steers."""
    p.add_argument(
        "--ranker",
        type=Path,
        metavar="RUN",
        help="diffusion runs: an image classifier that ranks --candidates by their decoded images, a `condgen train "
        "evaluator --config configs/ranker_cpu.yaml` run or its evaluator.safetensors, trained on the training "
        "images and never the shipped evaluator (default: the model folder's own ranker.safetensors, if it has one)",
    )
    p.add_argument(
        "--ranker-counter",
        type=Path,
        metavar="RUN",
        help="diffusion runs: the object counter the image ranker (--ranker, else the model folder's own) ranks "
        "with, a `condgen train counter` run or its counter.safetensors, never the shipped counter: it ranks down a "
        "candidate holding more or fewer objects than requested (default: with the model folder's own ranker, its "
        "ranker_counter.safetensors, if it has one; with --ranker, none)",
    )
    p.add_argument(
        "--classifier",
        type=Path,
        metavar="RUN",
        help="diffusion runs: a noisy classifier for classifier guidance and --candidates, a `train classifier` "
        "run for a ddpm run or a `train latent-classifier` run for an ldm run (default: the model folder's own "
        "classifier/, if it has one)",
    )
    p.add_argument(
        "--classifier-scale",
        type=non_negative_float,
        help="classifier guidance towards the requested objects (default: the run's sample.classifier_scale, or 1 "
        "when --classifier is given alone)",
    )
    p.add_argument(
        "--classifier-absent-scale",
        type=non_negative_float,
        help="classifier guidance away from the objects not requested (default: the run's "
        "sample.classifier_absent_scale)",
    )


def add_denoise_command(commands: Commands) -> None:
    p = commands.add_parser(
        "denoise",
        help="picture the denoising process: pure noise to the final image",
        description="Write one row of snapshots of the sampler's state, from pure noise to the final image.",
    )
    add_generation_options(p, "the first shipped diffusion model, as a GAN draws in one pass")
    add_objects_option(p)
    add_out_option(p, "PNG file to write", file=True)
    p.add_argument("--snapshots", type=positive_int, default=10, help="images in the row (default 10)")
    p.set_defaults(handler=lazy_handler("condgen.cli:denoise"))


def add_interpolate_command(commands: Commands) -> None:
    p = commands.add_parser(
        "interpolate",
        help="a GAN's images between two noise vectors, for one request",
        description="Write one row of images whose noise moves linearly from one random vector to another while "
        "the requested objects stay fixed.",
    )
    add_run_option(p, "a gan run folder or exported gan model folder", required=True)
    add_checkpoint_option(p)
    add_objects_option(p)
    p.add_argument("--frames", type=positive_int, default=10, help="images in the strip (default 10)")
    add_seed_option(p, "seed of the two noise vectors", default=None)
    add_out_option(p, "PNG file to write", file=True)
    p.set_defaults(handler=lazy_handler("condgen.cli:interpolate"))


def add_export_command(commands: Commands) -> None:
    p = commands.add_parser(
        "export",
        help="write a run's generator as an inference-only model folder",
        description="Write the EMA weights of a generating run (ddpm, gan, ldm, latent_gan; a latent model's "
        "autoencoder too), its config, its object vocabulary and a model card (README.md) into a new folder that "
        "`sample`, `denoise`, `interpolate` (--model DIR) and condgen.load(DIR) open like the run itself. Nothing in "
        "it is pickled. With --result, the benchmark result that trained and scored the run sets the folder's "
        "default sampling and writes the card's training record and score table; --half auto keeps float16 only "
        "where a measured check finds no lower score.",
    )
    p.add_argument(
        "--run", type=Path, required=True, help="a ddpm, gan, ldm or latent_gan training run, or a model folder"
    )
    add_out_option(p, "the model folder to create")
    p.add_argument(
        "--checkpoint",
        choices=["best", "latest"],
        help="which weights (default best; latest for a training run with a diffusion benchmark's --result, which "
        "scores the weights its training ended with)",
    )
    p.add_argument(
        "--half",
        nargs="?",
        const="yes",
        default="no",
        choices=["yes", "no", "auto"],
        help="store the weights in float16 (half the size, byte planes that compress better); `--half auto` "
        "samples test.json and new_test.json with --check-seeds noise seeds from a float32 and a float16 copy and "
        "keeps float16 unless its mean score is lower for a file and measure (the card reports the check)",
    )
    p.add_argument(
        "--check-seeds",
        type=positive_int,
        default=3,
        metavar="N",
        help="noise seeds of --half auto's check (default 3)",
    )
    p.add_argument(
        "--classifier",
        type=Path,
        metavar="RUN",
        help="diffusion runs: a noisy classifier run (`train classifier` for ddpm, `train latent-classifier` for "
        "ldm) to carry as classifier/, for classifier guidance and --candidates without --classifier",
    )
    p.add_argument(
        "--ranker",
        type=Path,
        metavar="RUN",
        help="an image ranker (a `condgen train evaluator --config configs/ranker_cpu.yaml` run or its "
        "evaluator.safetensors) to carry as ranker.safetensors, which then ranks --candidates (a diffusion model's "
        "or a GAN's, before its critic); a file already stored as asked is copied byte for byte",
    )
    p.add_argument(
        "--ranker-counter",
        type=Path,
        metavar="RUN",
        help="with an image ranker (--ranker or the model folder's own): its own object counter (a "
        "`condgen train counter` run or its counter.safetensors, never the shipped counter) to carry as "
        "ranker_counter.safetensors, in the ranker's precision; the ranker then ranks down a candidate holding more "
        "or fewer objects than requested",
    )
    p.add_argument(
        "--ranker-bits",
        type=int,
        metavar="N",
        help="store the image ranker's convolution and linear weights as N-bit codes per output channel (4 to 8; "
        "8 takes half of float16's size), its other weights and its counter in float16. Lossy: with --half auto, "
        "the check samples with it and keeps it only where no mean score is lower (the card reports how many "
        "choices it changed)",
    )
    p.add_argument(
        "--result",
        type=Path,
        metavar="FILE",
        help="the benchmark result JSON (benchmarks/results/) that trained and scored --run: the folder samples by "
        "default as it scored (a diffusion model its sampler most accurate on train.json's three-object sets, a GAN "
        "its best of K) and the card gives its commands, machine, time budget and scores",
    )
    p.add_argument("--entry", help="with --result: the run's entry in a result file of several models (gan.py's)")
    p.add_argument("--sampler", help="with --result: the scored sampler to default to, instead of the most accurate")
    p.set_defaults(handler=lazy_handler("condgen.cli:export"))


def add_serve_command(commands: Commands) -> None:
    p = commands.add_parser(
        "serve",
        help="a local web page: pick objects and settings, see the image, its denoising and the evaluator's verdict",
        description="Start a web server with a page where one picks up to three objects (colour and shape), a "
        "sampler, steps, guidance and a seed, and gets the image, its denoising strip (a GAN: its interpolation "
        "strip), the evaluator's probability for each requested object (detected above 0.5) and any unrequested "
        "object it detects, and the time it took; with --model repeated, every model answers the same request side "
        "by side. POST /api/generate takes the same request as JSON. One image per request, at most --max-steps "
        "sampler steps, --max-concurrent generations at once. Needs the web extra: pip install 'condgen[serve]'.",
    )
    p.add_argument(
        "--model",
        dest="models",
        action="append",
        type=Path,
        metavar="DIR",
        help="a training run folder, a model folder written by `condgen export` or a shipped model's name "
        f"({', '.join(SHIPPED)}); repeat it to compare models side by side (default: every shipped model)",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 opens it to the network)",
    )
    p.add_argument("--port", type=port, default=8000, help="port to listen on (default 8000)")
    add_checkpoint_option(p, "a run's weights (default best)")
    add_evaluator_option(p, "evaluator that judges the images (default: the shipped i-CLEVR evaluator)")
    p.add_argument(
        "--max-steps",
        type=positive_int,
        default=100,
        help="the most sampler steps one request may take (default 100); ddpm takes all of a model's T steps, so "
        "it is refused for models with a larger T",
    )
    p.add_argument(
        "--max-concurrent",
        type=positive_int,
        default=1,
        help="generations running at once (default 1); later requests wait for a free slot",
    )
    p.add_argument(
        "--queue-timeout",
        type=non_negative_float,
        default=30.0,
        help="seconds a request waits for a free slot before the server answers 503 busy (default 30)",
    )
    p.set_defaults(handler=lazy_handler("condgen.serve.command:serve_command"))


def add_report_command(commands: Commands) -> None:
    p = commands.add_parser(
        "report",
        help="measure several models the same way: one table and one set of figures for all of them",
        description="Measure every given run or model folder (GAN, pixel or latent diffusion) the same way: top-k "
        "accuracy and exact-set rate on test.json, new_test.json and any --labels file for each sampler (ddpm over "
        "all T steps, ddim 50 steps, dpmpp 20 steps; a GAN's single pass), mean over --seeds noise seeds with each "
        "seed's figure; per-object precision and recall; network evaluations, seconds per image at batch 1, "
        "images/s at the best batch, parameters, peak memory; the evaluator-feature Fréchet distance to --data's "
        "real images and a diversity figure; the training records of runs. Writes OUT/report.md, a self-contained "
        "OUT/report.html and the figures. Results are cached per model and sampler ($CONDGEN_CACHE_DIR/report), so "
        "a second report with one more model measures only that one.",
    )
    p.add_argument(
        "--runs", nargs="+", required=True, metavar="RUN", help="training runs, model folders or shipped model names"
    )
    add_out_option(p, "new folder for report.md, report.html and figures")
    p.add_argument(
        "--data", type=Path, help="the dataset: its test files and real images (default: the shipped i-CLEVR lists)"
    )
    p.add_argument("--labels", type=Path, nargs="*", help="more label files to score")
    p.add_argument("--seeds", type=positive_int, default=3, help="noise seeds per file and sampler (default 3)")
    p.add_argument(
        "--samplers",
        default="dpmpp,ddim,ddpm,gan",
        help="comma-separated subset of ddpm,ddim,dpmpp,gan (default all; ddpm takes all T steps: seconds per image "
        "on a CPU)",
    )
    p.add_argument("--quick", action="store_true", help="one seed, the first 16 requests of each file, batches 1 and 8")
    p.add_argument(
        "--frechet-images",
        type=non_negative_int,
        default=1024,
        help="images generated per model and sampler for the Fréchet distance to --data's real images, for label "
        "sets drawn from --data (default 1024; at least 512, the feature dimension; 0 = none; --quick: none)",
    )
    add_evaluator_option(p, "evaluator weights (default: the shipped i-CLEVR evaluator)")
    p.add_argument("--gradnorm", type=Path, help="a `condgen gradnorm` output folder whose plot to include")
    p.set_defaults(handler=lazy_handler("condgen.cli:report"))


def add_gradnorm_command(commands: Commands) -> None:
    p = commands.add_parser(
        "gradnorm",
        help="per-layer critic gradient norms: WGAN weight clipping vs gradient penalty",
        description="Train a DCGAN-style critic (4 conv layers + a linear score) and a generator on DIR under "
        "weight clipping and under a gradient penalty, record the norm of the critic loss's gradient for each "
        "layer's weights, and write OUT/gradnorm.png (log scale) and OUT/gradnorm.csv.",
    )
    p.add_argument("--data", type=Path, required=True, help="dataset folder")
    add_out_option(p, "folder for gradnorm.png and gradnorm.csv")
    p.add_argument("--steps", type=positive_int, default=100, help="generator steps per setting (default 100)")
    p.add_argument("--batch-size", type=positive_int, default=32, help="batch size (default 32)")
    add_seed_option(p)
    p.set_defaults(handler=lazy_handler("condgen.cli:gradnorm"))


def add_demo_command(commands: Commands) -> None:
    p = commands.add_parser(
        "demo",
        help="the main job: the shipped model on i-CLEVR's test files, then training on rendered data",
        description="Generate i-CLEVR's test.json and new_test.json with the shipped model, score them and draw its "
        "denoising process; then render a synthetic dataset, train an evaluator on it and score it on freshly "
        "rendered unseen scenes, train a small conditional latent diffusion model (in the shipped autoencoder's "
        "latent space) for a few minutes, generate the rendered set's test.json conditions, score them, and draw "
        "the denoising process. Everything goes under OUT.",
    )
    p.add_argument("--out", type=output_folder, default=Path("runs/demo"), help="output folder (default runs/demo)")
    p.add_argument("--n", type=positive_int, default=3000, help="training images to render (default 3000)")
    p.add_argument("--epochs", type=positive_int, default=10, help="evaluator epochs (default 10)")
    p.add_argument(
        "--train-minutes",
        type=positive_float,
        default=4.0,
        help="the latent diffusion model's training budget (default 4)",
    )
    p.set_defaults(handler=lazy_handler("condgen.cli:demo"))
