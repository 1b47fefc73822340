"""The ``condgen`` command: one entry point, one subcommand per job.

User mistakes surface as :class:`CondgenError` and are printed as one line with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from condgen.errors import CondgenError

DEFAULT_OBJECTS = "red sphere, cyan cylinder, cyan cube"  # the request of the denoising and interpolation pictures

EXIT_USER_ERROR = 2


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


def non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:  # also rejects nan
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
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
        "per class and per number of objects.",
    )
    check.add_argument("dir", type=Path, help="the dataset folder")

    evaluator = commands.add_parser("evaluator", help="train the ResNet18 evaluator").add_subparsers(
        dest="evaluator_command", required=True, metavar="COMMAND"
    )
    train = evaluator.add_parser(
        "train",
        help="train a ResNet18 multi-label evaluator on a dataset folder",
        description="Train the course's evaluator architecture on DIR, holding out whole scenes for validation. "
        "Writes RUN/evaluator.safetensors and RUN/evaluator.json (config, per-epoch held-out accuracy, time).",
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
        help="score images with the evaluator (the course's top-k accuracy)",
        description="Score generated images against the label lists they were asked to show. PATH is a folder "
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
    evaluate.add_argument("--json", action="store_true", help="print one JSON object instead of text")

    train_parsers = commands.add_parser("train", help="train a generative model").add_subparsers(
        dest="model", required=True, metavar="MODEL"
    )
    ddpm = train_parsers.add_parser(
        "ddpm",
        help="conditional pixel-space diffusion (DDPM/DDIM/DPM-Solver++ sampling)",
        description="Train a conditional diffusion UNet on DIR. Settings come from the dataclass defaults, then "
        "--config FILE (YAML, overrides only; see configs/), then KEY=VALUE overrides such as loop.steps=5000 "
        "model.channels=96. Checkpoints land in RUN/checkpoints (the latest two) and RUN/best (highest evaluator "
        "accuracy on test.json/new_test.json); --resume continues exactly where the run stopped.",
    )
    classifier = train_parsers.add_parser(
        "classifier",
        help="a noisy-image classifier for classifier guidance",
        description="Train a multi-label classifier on noised images x_t (the UNet encoder plus a pooled head), "
        "for `condgen sample --classifier RUN --classifier-scale S`. Its diffusion settings must match the "
        "guided model's. Same config, checkpoint and resume habits as `train ddpm`.",
    )
    gan = train_parsers.add_parser(
        "gan",
        help="conditional GAN: bce (ACGAN with conditioning=auxiliary), hinge, wgan_clip, wgan_gp",
        description="Train a conditional GAN on DIR: optim.loss = bce | hinge | wgan_clip | wgan_gp, "
        "model.architecture = dcgan | resnet, model.conditioning = projection | auxiliary (ACGAN's head, weighted "
        "by optim.aux_weight), model.spectral_norm, model.conditional_bn. See configs/gan_*.yaml. One step is "
        "optim.n_critic critic updates and one generator update; RUN/best keeps the highest evaluator accuracy.",
    )
    autoencoders = []
    for name, regulariser in (
        ("vae", "a KL-regularised VAE"),
        ("vqvae", "a VQ-VAE (EMA codebook, dead-code restarts)"),
    ):
        autoencoders.append(
            train_parsers.add_parser(
                name,
                help=f"{regulariser} that compresses images to a small latent, for `train ldm`",
                description=f"Train {regulariser} on DIR (64x64x3 to 16x16x4 by default; model.channel_mults sets "
                "the number of halvings). Reconstruction loss optim.reconstruction = l1 | l2, optional PatchGAN loss "
                "optim.adversarial_weight > 0 from optim.adversarial_start. Each evaluation reconstructs held-out "
                "scenes and logs PSNR, the evaluator's accuracy on reconstructions against originals and, for a "
                "VQ-VAE, codebook usage; RUN/best keeps the highest accuracy on reconstructions.",
            )
        )
    ldm = train_parsers.add_parser(
        "ldm",
        help="conditional latent diffusion on a trained vae/vqvae run",
        description="Train a conditional diffusion UNet in the latent space of --autoencoder RUN, conditioned "
        "through cross-attention over per-object label tokens and the pooled label embedding. The training set is "
        "encoded once at the start; the latent scale factor is computed from it. Sampled with the same `condgen "
        "sample` and `condgen denoise` as pixel diffusion. Same config, checkpoint and resume habits as `train ddpm`.",
    )
    ldm.add_argument(
        "--autoencoder",
        type=Path,
        metavar="RUN",
        help="a `train vae` or `train vqvae` run (a resumed run keeps its own)",
    )
    for p in (ddpm, classifier, gan, ldm, *autoencoders):
        p.add_argument("--data", type=Path, required=True, help="dataset folder in the i-CLEVR format")
        p.add_argument("--out", type=Path, required=True, help="run folder")
        p.add_argument("--config", type=Path, help="YAML file of overrides (e.g. configs/ddpm_cpu.yaml)")
        p.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
        p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. optim.lr=2e-4")
    for p in (ddpm, gan, ldm, *autoencoders):
        p.add_argument(
            "--evaluator",
            type=Path,
            help="evaluator for periodic scoring (default: the shipped one when the data uses the i-CLEVR objects)",
        )

    def add_generation_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--run", type=Path, required=True, help="a training run folder")
        p.add_argument("--checkpoint", choices=["best", "latest"], default="best", help="which weights (default best)")
        p.add_argument("--sampler", choices=["ddpm", "ddim", "dpmpp"], help="diffusion runs: default sample.sampler")
        p.add_argument("--steps", type=positive_int, help="sampler steps (ddim default 50, dpmpp 20; ddpm uses T)")
        p.add_argument("--guidance", type=float, help="classifier-free guidance scale (1 = none)")
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
            choices=["leading", "trailing", "linspace", "quadratic"],  # samplers.Spacing, without importing torch
            help="ddim and dpmpp: which of the T steps they visit; trailing = evenly from T - 1, quadratic = denser "
            "near the end; default sample.spacing",
        )
        p.add_argument("--seed", type=non_negative_int, help="noise seed; the same seed gives the same images")

    sample = commands.add_parser(
        "sample",
        help="generate images for label lists from a trained run (diffusion, latent diffusion or GAN)",
        description="Generate one image per label list into OUT (0.png, 1.png, ...), an 8-per-row grid.png, "
        "and scores.json with the evaluator's accuracy. --sampler, --steps, --guidance, --guidance-min-t, --eta, "
        "--spacing and --classifier apply to diffusion runs; a GAN run uses --seed for its noise.",
    )
    add_generation_options(sample)
    request = sample.add_mutually_exclusive_group(required=True)
    request.add_argument("--labels", type=Path, help="label file (JSON list of object-name lists)")
    request.add_argument("--objects", help='one request, e.g. "red sphere, cyan cube"')
    sample.add_argument("--out", type=Path, required=True, help="new folder for the images")
    sample.add_argument("--evaluator", type=Path, help="evaluator weights (default: the run's)")
    sample.add_argument("--classifier", type=Path, help="a `train classifier` run, for classifier guidance")
    sample.add_argument("--classifier-scale", type=float, default=1.0, help="classifier guidance strength")
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
    interpolate.add_argument("--run", type=Path, required=True, help="a gan run folder")
    interpolate.add_argument("--checkpoint", choices=["best", "latest"], default="best")
    interpolate.add_argument("--objects", default=DEFAULT_OBJECTS, help="the request")
    interpolate.add_argument("--frames", type=positive_int, default=10, help="images in the strip (default 10)")
    interpolate.add_argument("--seed", type=non_negative_int, help="seed of the two noise vectors")
    interpolate.add_argument("--out", type=Path, required=True, help="PNG file to write")

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
        help="the main job on embedded data: synthesise, train an evaluator and a diffusion model, generate",
        description="Render a synthetic dataset, train an evaluator on it and score it on freshly rendered "
        "unseen scenes, train a small conditional diffusion model for a few minutes, generate the test.json "
        "conditions, score them, and draw the denoising process. Everything goes under OUT.",
    )
    demo.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder (default runs/demo)")
    demo.add_argument("--n", type=positive_int, default=3000, help="training images to render (default 3000)")
    demo.add_argument("--epochs", type=positive_int, default=10, help="evaluator epochs (default 10)")
    demo.add_argument("--ddpm-minutes", type=float, default=4.0, help="diffusion training budget (default 4)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except CondgenError as exc:
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

        print(format_report(check_dataset(args.dir)))
    elif args.command == "evaluator":
        return _train_evaluator(args)
    elif args.command == "evaluate":
        result = _evaluate(args)
        if args.json:
            print(json.dumps(result))
        else:
            print(f"accuracy: {result['accuracy']:.4f} ({result['images']} images, {result['objects']} objects)")
            if "frechet_distance" in result:
                print(f"Fréchet distance in evaluator feature space: {result['frechet_distance']:.3f}")
    elif args.command == "train":
        from condgen.runs import start_training

        kind = {"classifier": "noisy_classifier"}.get(args.model, args.model)
        evaluator = getattr(args, "evaluator", None)
        overrides = list(args.overrides)
        if getattr(args, "autoencoder", None) is not None:
            if args.resume:
                raise CondgenError("--autoencoder: a resumed run keeps the autoencoder it started with; drop it")
            overrides.append(f"autoencoder={args.autoencoder}")
        summary = start_training(kind, args.data, args.out, args.config, overrides, args.resume, evaluator)
        best = summary["best_accuracy"]
        print(
            f"stopped at step {summary['step']}; best accuracy {best if best is None else round(best, 4)}; "
            f"run in {args.out}"
        )
    elif args.command == "sample":
        from condgen.generate import sample_command

        result = sample_command(args)
        accuracy = f", accuracy {result['accuracy']:.4f}" if "accuracy" in result else ""
        print(f"wrote {result['images']} images and grid.png to {args.out}{accuracy}")
    elif args.command == "denoise":
        from condgen.generate import denoise_command

        print(f"wrote {denoise_command(args)}")
    elif args.command == "interpolate":
        from condgen.generate import interpolate_command

        print(f"wrote {interpolate_command(args)}")
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

        run_demo(args.out, n=args.n, epochs=args.epochs, ddpm_minutes=args.ddpm_minutes)
    return 0


def _train_evaluator(args: argparse.Namespace) -> int:
    from condgen.data.iclevr import load_dataset
    from condgen.evaluate.training import EvaluatorTrainConfig, train_evaluator

    if (args.out / "evaluator.safetensors").exists():
        raise CondgenError(f"{args.out}: already holds an evaluator; choose another --out")
    if not 0 < args.val_fraction < 1:
        raise CondgenError(f"--val-fraction must be between 0 and 1, got {args.val_fraction}")
    config = EvaluatorTrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, val_fraction=args.val_fraction, seed=args.seed
    )
    report = train_evaluator(load_dataset(args.data), args.out, config, half=args.half)
    print(
        f"held-out accuracy {report['val_accuracy']:.4f} after {report['train_seconds'] / 60:.1f} min; "
        f"wrote {args.out / 'evaluator.safetensors'}"
    )
    return 0


def _evaluate(args: argparse.Namespace) -> dict:
    from condgen.evaluate.scoring import evaluate_images

    if args.images is not None and args.labels is None:
        raise CondgenError("--images needs --labels (the label file the images were generated for)")
    return evaluate_images(
        images=args.images, labels=args.labels, data=args.data, evaluator=args.evaluator, reference=args.reference
    )


if __name__ == "__main__":
    sys.exit(main())
