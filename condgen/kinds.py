"""The one table of model kinds. Training, loading, the generation commands, the command line and the benchmarks
all look a kind up here; adding a kind is its own module plus one entry in ``KINDS``.

The table names each kind's pieces as ``"module:attribute"`` and imports them on first use, so the command line
can list the kinds and their help without loading torch.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from condgen.errors import CondgenError
from condgen.gan.options import Architecture, Conditioning, Loss, choices


class Generation(str, Enum):
    """How ``condgen sample`` drives a kind's trained model."""

    DIFFUSION = "diffusion"  # samplers, steps, guidance; `denoise` pictures the process
    GAN = "gan"  # one pass G(z, y); `interpolate` walks between two noise vectors


@dataclass(frozen=True, kw_only=True)
class Kind:
    name: str  # as run.json and the checkpoints record it
    command: str  # `condgen train COMMAND`
    summary: str  # one line in `condgen train --help`
    description: str  # `condgen train COMMAND --help`
    config: str  # the run config dataclass
    task: str  # (config, data, data_root, evaluator) -> a condgen.train.loop.Task
    example_config: str = ""  # a file of configs/ that suits it, for --help
    load: str = ""  # (run, checkpoint) -> the trained model for `sample`; "" = not a generator
    generation: Generation | None = None
    scored: bool = False  # an evaluator scores it during training (--evaluator)
    needs_autoencoder: bool = False  # trains on an autoencoder run's latents (--autoencoder)
    needs_teacher: bool = False  # learns from a trained diffusion run or model (--teacher)
    can_start_from: bool = False  # may start from a trained run or model of its kind (--init)
    export: str = ""  # (run, task) -> the file it wrote from the finished run, on rank 0; "" = nothing to write

    def config_class(self) -> type:
        return _resolve(self.config)

    def make_task(self, config: Any, data: Any, data_root: Path, evaluator: Any) -> Any:
        return _resolve(self.task)(config, data, data_root, evaluator)

    def load_model(self, run: Path, checkpoint: str) -> Any:
        return _resolve(self.load)(run, checkpoint)

    def export_run(self, run: Path, task: Any) -> Path | None:
        return _resolve(self.export)(run, task) if self.export else None


def _resolve(reference: str) -> Any:
    module, _, attribute = reference.partition(":")
    return getattr(importlib.import_module(module), attribute)


_AUTOENCODER = (
    "on DIR (64x64x3 to 16x16x4 by default; model.channel_mults sets the number of halvings). Reconstruction loss "
    "optim.reconstruction = l1 | l2, optional PatchGAN loss optim.adversarial_weight > 0 from "
    "optim.adversarial_start. Each evaluation reconstructs held-out scenes and logs PSNR, the evaluator's accuracy "
    "on reconstructions against originals and, for a VQ-VAE, codebook usage; RUN/best keeps the highest accuracy on "
    "reconstructions."
)

_FINE_TUNE = (
    "--init RUN|MODEL starts from a trained run or model folder of this kind: its best weights and its model "
    "settings{}. reward.weight > 0 with reward.ranker (and reward.counter) adds to the generator's loss the score "
    "best-of-K ranking keeps images by, so that one pass draws what best-of-K would keep (condgen.gan.reward)."
)

KINDS: dict[str, Kind] = {
    kind.name: kind
    for kind in (
        Kind(
            name="ddpm",
            command="ddpm",
            summary="conditional pixel-space diffusion (DDPM/DDIM/DPM-Solver++ sampling)",
            description="Train a conditional diffusion UNet on DIR. Checkpoints land in RUN/checkpoints (the latest "
            "two) and RUN/best (highest evaluator accuracy on 64 label sets drawn from train.json, never the test "
            "files).",
            config="condgen.diffusion.trainer:DDPMRunConfig",
            task="condgen.diffusion.trainer:DiffusionTask",
            example_config="configs/ddpm_cpu.yaml",
            load="condgen.diffusion.run:load_ddpm",
            generation=Generation.DIFFUSION,
            scored=True,
        ),
        Kind(
            name="noisy_classifier",
            command="classifier",
            summary="a noisy-image classifier for classifier guidance",
            description="Train a multi-label classifier on noised images x_t (the UNet encoder plus a pooled head), "
            "for `condgen sample --classifier RUN --classifier-scale S`. Its diffusion settings must match the guided "
            "model's.",
            config="condgen.diffusion.classifier:ClassifierRunConfig",
            task="condgen.diffusion.classifier:make_classifier_task",
        ),
        Kind(
            name="evaluator",
            command="evaluator",
            summary="the ResNet18 multi-label evaluator that scores generated images (--evaluator)",
            description="Train the course's evaluator architecture (torchvision ResNet18 with a sigmoid head) on "
            "DIR's real images with BCE over the objects, random flips and shifts, AdamW under a one-cycle schedule; "
            "whole scenes (val_fraction of them) are held out and scored after every epoch (optim.epochs sets the "
            "steps). RUN/best keeps the highest held-out accuracy and becomes RUN/evaluator.safetensors (float16 with "
            "half=true) with its record RUN/evaluator.json.",
            config="condgen.train.evaluator:EvaluatorRunConfig",
            task="condgen.train.evaluator:EvaluatorTask",
            example_config="configs/evaluator_cpu.yaml",
            export="condgen.train.evaluator:export_evaluator",
        ),
        Kind(
            name="counter",
            command="counter",
            summary="the object counter that checks each requested object stands once (--counter)",
            description="Train the density counter (one 8x8 map per object, summed into instance counts) on DIR's real "
            "images and on real images with objects of other scenes pasted in, up to six objects with repeats; DIR "
            "must be rendered one object at a time like i-CLEVR (X_0, X_1, X_2). Whole scenes (val_fraction of them) "
            "are held out; each epoch counts their real images and composites. RUN/best keeps the highest count "
            "accuracy and becomes RUN/counter.safetensors with its record RUN/counter.json.",
            config="condgen.train.counter:CounterRunConfig",
            task="condgen.train.counter:CounterTask",
            example_config="configs/counter_cpu.yaml",
            export="condgen.train.counter:export_counter",
        ),
        Kind(
            name="gan",
            command="gan",
            summary=f"conditional GAN: {choices(Loss, ', ')} (bce with conditioning=auxiliary is ACGAN)",
            description=f"Train a conditional GAN on DIR: optim.loss = {choices(Loss)}, model.architecture = "
            f"{choices(Architecture)}, model.conditioning = {choices(Conditioning)} (auxiliary and both add ACGAN's "
            "head, weighted by optim.aux_weight; input gives the labels as planes beside the critic's input), "
            "model.spectral_norm, model.conditional_bn. One step is optim.n_critic critic updates and one generator "
            "update; RUN/best keeps the highest evaluator accuracy on 64 label sets drawn from train.json. "
            + _FINE_TUNE.format(""),
            config="condgen.gan.trainer:GANRunConfig",
            task="condgen.gan.trainer:make_gan_task",
            example_config="configs/gan_acgan.yaml",
            load="condgen.gan.run:load_gan",
            generation=Generation.GAN,
            scored=True,
            can_start_from=True,
        ),
        Kind(
            name="vae",
            command="vae",
            summary="a KL-regularised VAE that compresses images to a small latent, for `train ldm`",
            description=f"Train a KL-regularised VAE {_AUTOENCODER}",
            config="condgen.latent.trainer:AutoencoderRunConfig",
            task="condgen.latent.trainer:make_vae_task",
            example_config="configs/vae_cpu.yaml",
            scored=True,
        ),
        Kind(
            name="vqvae",
            command="vqvae",
            summary="a VQ-VAE (EMA codebook, dead-code restarts) that compresses images to a small latent, for `train "
            "ldm`",
            description=f"Train a VQ-VAE (EMA codebook, dead-code restarts) {_AUTOENCODER}",
            config="condgen.latent.trainer:AutoencoderRunConfig",
            task="condgen.latent.trainer:make_vqvae_task",
            scored=True,
        ),
        Kind(
            name="ldm",
            command="ldm",
            summary="conditional latent diffusion on a trained vae/vqvae run",
            description="Train a conditional diffusion UNet in the latent space of --autoencoder RUN, conditioned "
            "through cross-attention over per-object label tokens and the pooled label embedding. The training set is "
            "encoded once at the start; the latent scale factor is computed from it. Sampled with the same `condgen "
            "sample` and `condgen denoise` as pixel diffusion.",
            config="condgen.latent.ldm:LDMRunConfig",
            task="condgen.latent.ldm:make_ldm_task",
            example_config="configs/ldm_cpu.yaml",
            load="condgen.latent.ldm:load_ldm",
            generation=Generation.DIFFUSION,
            scored=True,
            needs_autoencoder=True,
        ),
        Kind(
            name="distill",
            command="distill",
            summary="a few-step generator (1 to 4 passes) distilled from a trained ldm run or model",
            description="Distil --teacher RUN|MODEL (an ldm run or model folder, e.g. iclevr-ldm) into a student of "
            "its UNet, started from its weights, that also sees each jump's length: the finest of jumps.grid jumps "
            "learn the teacher's guided x_0 (its classifier-free guidance built in) on noised training latents, each "
            "coarser jump the landing of two of the student's own half-length jumps. It samples with DDIM in 1, 2, "
            "4, ... jumps of one network pass each (sample.steps, 4 by default), without guidance. The teacher's "
            "autoencoder encodes the training set once at the start.",
            config="condgen.fewstep.trainer:FewStepRunConfig",
            task="condgen.fewstep.trainer:make_distill_task",
            example_config="configs/distill_cpu.yaml",
            load="condgen.fewstep.trainer:load_few_step",
            generation=Generation.DIFFUSION,
            scored=True,
            needs_teacher=True,
        ),
        Kind(
            name="shortcut",
            command="shortcut",
            summary="a few-step generator (1 to 4 passes) trained from scratch on a vae/vqvae run's latents",
            description="Train a shortcut model (Frans et al. 2025) in the latent space of --autoencoder RUN: a "
            "diffusion UNet that also sees each jump's length, whose finest of jumps.grid jumps learn the data as "
            "latent diffusion does and each coarser jump the landing of two of its own half-length jumps, guided "
            "(jumps.guidance) at the finest level. It samples with DDIM in 1, 2, 4, ... jumps of one network pass "
            "each (sample.steps, 4 by default), without guidance.",
            config="condgen.fewstep.trainer:FewStepRunConfig",
            task="condgen.fewstep.trainer:make_shortcut_task",
            example_config="configs/shortcut_cpu.yaml",
            load="condgen.fewstep.trainer:load_few_step",
            generation=Generation.DIFFUSION,
            scored=True,
            needs_autoencoder=True,
        ),
        Kind(
            name="latent_classifier",
            command="latent-classifier",
            summary="a noisy classifier of a vae/vqvae run's latents, for guiding and ranking latent diffusion",
            description="Train a multi-label classifier on noised latents z_t of --autoencoder RUN (the UNet encoder "
            "plus a pooled head), for `condgen sample --classifier RUN` on an ldm run of the same autoencoder and "
            "noise schedule: classifier guidance (--classifier-scale, --classifier-absent-scale) and the best of "
            "--candidates K samples, ranked at t = 0 by how close each is to holding exactly the requested objects. "
            "The training set is encoded once at the start.",
            config="condgen.latent.classifier:LatentClassifierRunConfig",
            task="condgen.latent.classifier:make_latent_classifier_task",
            example_config="configs/latent_classifier_cpu.yaml",
            needs_autoencoder=True,
        ),
        Kind(
            name="latent_gan",
            command="latent-gan",
            summary="conditional GAN in the latent space of a trained vae/vqvae run",
            description="Train a conditional GAN whose generator makes --autoencoder RUN's 16x16 latents and whose "
            "discriminator judges them (model.architecture = s2d); images are the autoencoder's decoding. Every gan "
            "setting applies. The training set is encoded once at the start; the latent scale factor is computed from "
            "it. " + _FINE_TUNE.format(", autoencoder and latent scale"),
            config="condgen.latent.gan:LatentGANRunConfig",
            task="condgen.latent.gan:make_latent_gan_task",
            example_config="configs/latent_gan_cpu.yaml",
            load="condgen.latent.gan:load_latent_gan",
            generation=Generation.GAN,
            scored=True,
            needs_autoencoder=True,
            can_start_from=True,
        ),
    )
}

BY_COMMAND: dict[str, Kind] = {kind.command: kind for kind in KINDS.values()}


def kind_of(meta: dict, run: Path) -> Kind:
    """The kind a run's run.json names."""
    name = meta.get("kind")
    if name not in KINDS:
        raise CondgenError(f"{run}: unknown kind {name!r} in run.json (known: {', '.join(KINDS)})")
    return KINDS[name]
