"""The ``condgen`` command line's parser: every subcommand, option and help text. It imports no torch, so
``condgen --help`` answers at once; the commands themselves live in :mod:`condgen.cli`."""

from __future__ import annotations

import argparse
from pathlib import Path

from condgen.data.vocabulary import DEFAULT_OBJECTS
from condgen.diffusion.options import DEFAULT_STEPS, Sampler, Spacing
from condgen.kinds import KINDS
from condgen.pretrained import SHIPPED

# How every kind's settings are made and how a run continues, said once for every `condgen train KIND --help`.
TRAINING = (
    "Settings come from the dataclass defaults, then --config FILE (YAML, overrides only; see configs/), then "
    "KEY=VALUE overrides such as loop.steps=5000. --resume continues exactly where the run stopped."
)


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
    parser = argparse.ArgumentParser(
        prog="condgen",
        description="Multi-label conditional image generation on i-CLEVR-format datasets.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = commands.add_parser("data", help="make or check a dataset folder").add_subparsers(
        dest="data_command", required=True, metavar="COMMAND"
    )
    synth = data.add_parser(
        "synth",
        help="render a synthetic CLEVR-like dataset in the i-CLEVR format",
        description="Render CLEVR-like scenes of 1-3 objects (3 shapes x 8 colours) into DIR, with train.json, "
        "test.json, new_test.json and objects.json. Scenes come in triples (NNNNNN_0/1/2) that add one object "
        "at a time, as in i-CLEVR. Deterministic for a given seed.",
    )
    synth.add_argument("--out", type=Path, required=True, help="new folder to create (must not exist or be empty)")
    synth.add_argument("--n", type=positive_int, required=True, help="number of training images")
    synth.add_argument("--seed", type=non_negative_int, default=0, help="random seed (default 0)")
    synth.add_argument("--size", type=positive_int, default=64, help="image side in pixels (default 64)")
    synth.add_argument("--workers", type=positive_int, default=None, help="processes (default: all cores)")
    check = data.add_parser(
        "check",
        help="validate a dataset folder and count its classes",
        description="Validate objects.json, train.json, the optional label files and every image; print counts "
        "per class and per number of objects, the images that loading converts (any that is not 64x64 RGB) and the "
        "label lists that ask for more objects than a model trained on the set accepts. --strict, as training "
        "does, refuses both.",
    )
    check.add_argument("dir", type=Path, help="the dataset folder")
    check.add_argument(
        "--strict",
        action="store_true",
        help="refuse images that are not 64x64 RGB and label lists longer than --max-objects (training's rule)",
    )
    check.add_argument(
        "--max-objects",
        type=positive_int,
        help="the most objects a label list may ask for (default: the largest scene in train.json)",
    )

    evaluator = commands.add_parser("evaluator", help="train the ResNet18 evaluator").add_subparsers(
        dest="evaluator_command", required=True, metavar="COMMAND"
    )
    train = evaluator.add_parser(
        "train",
        help="train a ResNet18 multi-label evaluator on a dataset folder",
        description="Train the course's evaluator architecture on DIR, holding out whole scenes for validation. "
        "Writes RUN/evaluator.safetensors and RUN/evaluator.json (config, per-epoch held-out accuracy, time). The "
        "same as `condgen train evaluator` with these options as overrides; that command also trains on several "
        "processes (--nproc), resumes (--resume) and takes every setting (optim.bf16=true, optim.compile=inductor).",
    )
    train.add_argument("--data", type=Path, required=True, help="dataset folder in the i-CLEVR format")
    train.add_argument("--out", type=Path, required=True, help="run folder to write (must not hold an evaluator)")
    train.add_argument("--epochs", type=positive_int, default=15, help="training epochs (default 15)")
    train.add_argument("--batch-size", type=positive_int, default=128, help="batch size (default 128)")
    train.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (default 2e-3)")
    train.add_argument("--val-fraction", type=float, default=0.1, help="share of scenes held out (default 0.1)")
    train.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    train.add_argument("--half", action="store_true", help="store the weights in float16")

    evaluate = commands.add_parser(
        "evaluate",
        help="score images with the evaluator (the course's top-k accuracy and the exact-set rate)",
        description="Score generated images against the label lists they were asked to show: the course's top-k "
        "accuracy, the exact-set rate (the share of images whose detected objects, evaluator output above "
        "--threshold, are exactly the requested ones) and per-object precision and recall. PATH is a folder "
        "of 0.png, 1.png, ... (one per label list, in order) or a .pt/.npy tensor (N, 3, H, W): uint8 in [0, 255] "
        "or float in [-1, 1]. Alternatively --data scores a dataset folder's own images against its train.json.",
    )
    source = evaluate.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", type=Path, help="folder of N.png files, or a .pt/.npy tensor batch")
    source.add_argument("--data", type=Path, help="a dataset folder: score its images against train.json")
    evaluate.add_argument("--labels", type=Path, help="label file (a JSON list of object-name lists)")
    evaluate.add_argument(
        "--evaluator",
        type=Path,
        help="evaluator weights: .safetensors or the course's .pth (default: the shipped i-CLEVR evaluator)",
    )
    evaluate.add_argument(
        "--reference",
        type=Path,
        help="dataset folder: also report the Fréchet distance to its "
        "images in the evaluator's 512-d feature space (not Inception FID)",
    )
    evaluate.add_argument(
        "--threshold",
        type=probability,
        default=0.5,
        help="an object counts as detected when the evaluator's output exceeds this (default 0.5)",
    )
    evaluate.add_argument("--json", action="store_true", help="print one JSON object instead of text")

    train_parsers = commands.add_parser("train", help="train a generative model").add_subparsers(
        dest="model", required=True, metavar="MODEL"
    )
    for kind in KINDS.values():
        example = f" (e.g. {kind.example_config})" if kind.example_config else ""
        p = train_parsers.add_parser(kind.command, help=kind.summary, description=f"{kind.description} {TRAINING}")
        p.add_argument("--data", type=Path, required=True, help="dataset folder in the i-CLEVR format")
        p.add_argument("--out", type=Path, required=True, help="run folder")
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
            p.add_argument(
                "--evaluator",
                type=Path,
                help="evaluator for periodic scoring (default: the shipped one when the data uses the i-CLEVR objects)",
            )
        if kind.needs_autoencoder:
            p.add_argument(
                "--autoencoder",
                type=Path,
                metavar="RUN",
                help="a `train vae` or `train vqvae` run; required for a new run (a resumed run keeps its own)",
            )

    def add_generation_options(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--run",
            "--model",
            dest="run",
            type=Path,
            help="a training run folder, a model folder written by `condgen export` or a shipped model's name "
            f"({', '.join(SHIPPED)}); default: the best shipped model ({SHIPPED[0]})",
        )
        p.add_argument(
            "--checkpoint",
            choices=["best", "latest"],
            default="best",
            help="best: the weights with the highest evaluation score (else the latest); latest: the last saved "
            "(default best)",
        )
        p.add_argument(
            "--sampler", choices=[s.value for s in Sampler], help="diffusion runs; default: the run's sample.sampler"
        )
        p.add_argument(
            "--steps",
            type=positive_int,
            help="ddim and dpmpp steps; default: the run's sample.steps, or with --sampler that sampler's default "
            f"({', '.join(f'{s.value} {n}' for s, n in DEFAULT_STEPS.items() if n)}); ddpm always takes T",
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
            "or the SDE solver (dpmpp); default sample.eta",
        )
        p.add_argument(
            "--spacing",
            choices=[s.value for s in Spacing],
            help="ddim and dpmpp: which of the T steps they visit; trailing = evenly from T - 1, quadratic = denser "
            "near the end; default sample.spacing",
        )
        p.add_argument(
            "--seed",
            type=non_negative_int,
            help="noise seed; the same seed gives the same images (default: the run's sample.seed, or a GAN "
            "run's eval_seed)",
        )

    sample = commands.add_parser(
        "sample",
        help="generate images for label lists from a trained run (diffusion, latent diffusion or GAN)",
        description="Generate one image per label list into OUT (0.png, 1.png, ...), an 8-per-row grid.png, "
        "and scores.json with the evaluator's accuracy. --sampler, --steps, --guidance, --guidance-min-t, --eta, "
        "--spacing and --classifier options apply to diffusion runs; a GAN run uses --seed and --candidates.",
    )
    add_generation_options(sample)
    request = sample.add_mutually_exclusive_group(required=True)
    request.add_argument("--labels", type=Path, help="label file (JSON list of object-name lists)")
    request.add_argument("--objects", help='one request, e.g. "red sphere, cyan cube"')
    sample.add_argument("--out", type=Path, required=True, help="new folder for the images")
    sample.add_argument("--evaluator", type=Path, help="evaluator weights (default: the run's)")
    sample.add_argument(
        "--candidates",
        type=positive_int,
        help="make K images per request and keep the one a classifier trained on the training images finds "
        "closest to exactly the requested objects (never the evaluator): a GAN's critic's auxiliary head, or a "
        "diffusion model's image ranker (--ranker) or else its noisy classifier (--classifier); 1 = no ranking; "
        "default: the run's candidates",
    )
    sample.add_argument(
        "--ranker",
        type=Path,
        metavar="RUN",
        help="diffusion runs: an image classifier that ranks --candidates by their decoded images, a `condgen train "
        "evaluator --config configs/ranker_cpu.yaml` run or its evaluator.safetensors, trained on the training "
        "images and never the shipped evaluator (default: the model folder's own ranker.safetensors, if it has one)",
    )
    sample.add_argument(
        "--classifier",
        type=Path,
        metavar="RUN",
        help="diffusion runs: a noisy classifier for classifier guidance and --candidates, a `train classifier` "
        "run for a ddpm run or a `train latent-classifier` run for an ldm run (default: the model folder's own "
        "classifier/, if it has one)",
    )
    sample.add_argument(
        "--classifier-scale",
        type=non_negative_float,
        help="classifier guidance towards the requested objects (default: the run's sample.classifier_scale, or 1 "
        "when --classifier is given alone)",
    )
    sample.add_argument(
        "--classifier-absent-scale",
        type=non_negative_float,
        help="classifier guidance away from the objects not requested (default: the run's "
        "sample.classifier_absent_scale)",
    )
    denoise = commands.add_parser(
        "denoise",
        help="picture the denoising process: pure noise to the final image",
        description="Write one row of snapshots of the sampler's state, from pure noise to the final image.",
    )
    add_generation_options(denoise)
    denoise.add_argument("--objects", default=DEFAULT_OBJECTS, help="the request")
    denoise.add_argument("--out", type=Path, required=True, help="PNG file to write")
    denoise.add_argument("--snapshots", type=positive_int, default=10, help="images in the row (default 10)")
    interpolate = commands.add_parser(
        "interpolate",
        help="a GAN's images between two noise vectors, for one request",
        description="Write one row of images whose noise moves linearly from one random vector to another while "
        "the requested objects stay fixed.",
    )
    interpolate.add_argument(
        "--run", "--model", dest="run", type=Path, required=True, help="a gan run folder or exported gan model folder"
    )
    interpolate.add_argument(
        "--checkpoint", choices=["best", "latest"], default="best", help="which weights (default best)"
    )
    interpolate.add_argument("--objects", default=DEFAULT_OBJECTS, help="the request")
    interpolate.add_argument("--frames", type=positive_int, default=10, help="images in the strip (default 10)")
    interpolate.add_argument("--seed", type=non_negative_int, help="seed of the two noise vectors")
    interpolate.add_argument("--out", type=Path, required=True, help="PNG file to write")

    export = commands.add_parser(
        "export",
        help="write a run's generator as an inference-only model folder",
        description="Write the EMA weights of a generating run (ddpm, gan, ldm, latent_gan; a latent model's "
        "autoencoder too), its config, its object vocabulary and a model card (README.md) into a new folder that "
        "`sample`, `denoise`, `interpolate` (--model DIR) and condgen.load(DIR) open like the run itself. Nothing in "
        "it is pickled.",
    )
    export.add_argument(
        "--run", type=Path, required=True, help="a ddpm, gan, ldm or latent_gan training run, or a model folder"
    )
    export.add_argument("--out", type=Path, required=True, help="the model folder to create")
    export.add_argument("--checkpoint", choices=["best", "latest"], default="best", help="which weights (default best)")
    export.add_argument(
        "--half",
        action="store_true",
        help="store the weights in float16 (half the size), byte planes that compress better",
    )
    export.add_argument(
        "--classifier",
        type=Path,
        metavar="RUN",
        help="diffusion runs: a noisy classifier run (`train classifier` for ddpm, `train latent-classifier` for "
        "ldm) to carry as classifier/, for classifier guidance and --candidates without --classifier",
    )
    export.add_argument(
        "--ranker",
        type=Path,
        metavar="RUN",
        help="diffusion runs: an image ranker (a `condgen train evaluator --config configs/ranker_cpu.yaml` run or "
        "its evaluator.safetensors) to carry as ranker.safetensors, which then ranks --candidates",
    )

    serve = commands.add_parser(
        "serve",
        help="a local web page: pick objects and settings, see the image, its denoising and the evaluator's verdict",
        description="Start a web server with a page where one picks up to three objects (colour and shape), a "
        "sampler, steps, guidance and a seed, and gets the image, its denoising strip (a GAN: its interpolation "
        "strip), the evaluator's probability for each requested object (detected above 0.5) and any unrequested "
        "object it detects, and the time it took; with --model repeated, every model answers the same request side "
        "by side. POST /api/generate takes the same request as JSON. One image per request, at most --max-steps "
        "sampler steps, --max-concurrent generations at once. Needs the web extra: pip install 'condgen[serve]'.",
    )
    serve.add_argument(
        "--model",
        dest="models",
        action="append",
        type=Path,
        metavar="DIR",
        help="a training run folder, a model folder written by `condgen export` or a shipped model's name "
        f"({', '.join(SHIPPED)}); repeat it to compare models side by side (default: every shipped model)",
    )
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 opens it to the network)",
    )
    serve.add_argument("--port", type=port, default=8000, help="port to listen on (default 8000)")
    serve.add_argument(
        "--checkpoint", choices=["best", "latest"], default="best", help="a run's weights (default best)"
    )
    serve.add_argument(
        "--evaluator", type=Path, help="evaluator that judges the images (default: the shipped i-CLEVR evaluator)"
    )
    serve.add_argument(
        "--max-steps",
        type=positive_int,
        default=100,
        help="the most sampler steps one request may take (default 100); ddpm takes all of a model's T steps, so "
        "it is refused for models with a larger T",
    )
    serve.add_argument(
        "--max-concurrent",
        type=positive_int,
        default=1,
        help="generations running at once (default 1); later requests wait for a free slot",
    )
    serve.add_argument(
        "--queue-timeout",
        type=non_negative_float,
        default=30.0,
        help="seconds a request waits for a free slot before the server answers 503 busy (default 30)",
    )

    report = commands.add_parser(
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
    report.add_argument(
        "--runs", nargs="+", required=True, metavar="RUN", help="training runs, model folders or shipped model names"
    )
    report.add_argument("--out", type=Path, required=True, help="new folder for report.md, report.html and figures")
    report.add_argument(
        "--data", type=Path, help="the dataset: its test files and real images (default: the shipped i-CLEVR lists)"
    )
    report.add_argument("--labels", type=Path, nargs="*", help="more label files to score")
    report.add_argument("--seeds", type=positive_int, default=3, help="noise seeds per file and sampler (default 3)")
    report.add_argument(
        "--samplers",
        default="dpmpp,ddim,ddpm,gan",
        help="comma-separated subset of ddpm,ddim,dpmpp,gan (default all; ddpm takes all T steps: seconds per image "
        "on a CPU)",
    )
    report.add_argument(
        "--quick", action="store_true", help="one seed, the first 16 requests of each file, batches 1 and 8"
    )
    report.add_argument(
        "--frechet-images",
        type=non_negative_int,
        default=1024,
        help="images generated per model and sampler for the Fréchet distance to --data's real images, for label "
        "sets drawn from --data (default 1024; at least 512, the feature dimension; 0 = none; --quick: none)",
    )
    report.add_argument("--evaluator", type=Path, help="evaluator weights (default: the shipped i-CLEVR evaluator)")
    report.add_argument("--gradnorm", type=Path, help="a `condgen gradnorm` output folder whose plot to include")

    gradnorm = commands.add_parser(
        "gradnorm",
        help="per-layer critic gradient norms: WGAN weight clipping vs gradient penalty",
        description="Train a DCGAN-style critic (4 conv layers + a linear score) and a generator on DIR under "
        "weight clipping and under a gradient penalty, record the norm of the critic loss's gradient for each "
        "layer's weights, and write OUT/gradnorm.png (log scale) and OUT/gradnorm.csv.",
    )
    gradnorm.add_argument("--data", type=Path, required=True, help="dataset folder")
    gradnorm.add_argument("--out", type=Path, required=True, help="folder for gradnorm.png and gradnorm.csv")
    gradnorm.add_argument("--steps", type=positive_int, default=100, help="generator steps per setting (default 100)")
    gradnorm.add_argument("--batch-size", type=positive_int, default=32, help="batch size (default 32)")
    gradnorm.add_argument("--seed", type=non_negative_int, default=0, help="random seed (default 0)")

    demo = commands.add_parser(
        "demo",
        help="the main job: the shipped model on i-CLEVR's test files, then training on rendered data",
        description="Generate i-CLEVR's test.json and new_test.json with the shipped model, score them and draw its "
        "denoising process; then render a synthetic dataset, train an evaluator on it and score it on freshly "
        "rendered unseen scenes, train a small conditional latent diffusion model (in the shipped autoencoder's "
        "latent space) for a few minutes, generate the rendered set's test.json conditions, score them, and draw "
        "the denoising process. Everything goes under OUT.",
    )
    demo.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder (default runs/demo)")
    demo.add_argument("--n", type=positive_int, default=3000, help="training images to render (default 3000)")
    demo.add_argument("--epochs", type=positive_int, default=10, help="evaluator epochs (default 10)")
    demo.add_argument(
        "--train-minutes",
        type=positive_float,
        default=4.0,
        help="the latent diffusion model's training budget (default 4)",
    )
    return parser
