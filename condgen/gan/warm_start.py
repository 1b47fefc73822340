"""Starting a GAN run from a trained one (``train gan --init RUN|MODEL``): the new run takes the trained run's
network settings and, for a latent GAN, its autoencoder and latent scale, then starts from the weights of its
``best`` checkpoint: the generator (a model folder, which keeps only the EMA generator, starts both from that), the
critic, the EMA, and the optimiser states where the checkpoint holds them. What the new run changes is its own
config: a reward (:mod:`condgen.gan.reward`), learning rates, the time budget."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from condgen.errors import CondgenError
from condgen.train.checkpoint import load_module, load_tensors, optimizer_from_flat, read_state
from condgen.train.config import load_config
from condgen.train.runs import checkpoint_folder

if TYPE_CHECKING:
    from condgen.gan.trainer import GANRunConfig


def take_settings(config: GANRunConfig, kind: str) -> None:
    """Sets ``config.model`` (and a latent GAN's ``autoencoder`` and ``scale_factor``) to those of the run
    ``config.init`` names, which must be of ``kind``."""
    init = Path(config.init)
    checkpoint_folder(init, kind, "best")  # a clear error for a folder of another kind or with no checkpoint
    trained = load_config(type(config), init / "config.yaml")
    config.model = trained.model
    if hasattr(trained, "autoencoder"):
        autoencoder = str((init / trained.autoencoder).resolve())
        if config.autoencoder and str(Path(config.autoencoder).resolve()) != autoencoder:
            raise CondgenError(f"--autoencoder: a run started from --init {init} uses its autoencoder; drop it")
        config.autoencoder, config.scale_factor = autoencoder, trained.scale_factor


def load_weights(
    init: Path,
    kind: str,
    modules: dict[str, torch.nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
) -> None:
    """Loads the ``best`` checkpoint of ``init`` into ``modules`` (generator, critic, ema) and, where it holds
    them for the same kind of optimiser, the states of ``optimizers`` (their moment estimates); the optimisers keep
    their own settings (learning rate, betas), which are the new run's."""
    folder, _ = checkpoint_folder(init, kind, "best")
    for name, module in modules.items():
        file = folder / f"{name}.safetensors"
        if name == "generator" and not file.is_file():
            file = folder / "ema.safetensors"  # a model folder keeps the EMA generator alone
        if not file.is_file():
            raise CondgenError(f"{folder}: holds no {file.name}, which a run started from it needs; start from its run")
        load_module(module, file)
    saved = read_state(folder).get("optimizers", {})
    for name, optimizer in optimizers.items():
        file = folder / f"{name}.safetensors"
        groups = optimizer.state_dict()["param_groups"]
        if name not in saved or not file.is_file() or set(saved[name]["param_groups"][0]) != set(groups[0]):
            continue  # none saved, or another optimiser's (Adam's moments mean nothing to RMSprop)
        optimizer_from_flat(optimizer, load_tensors(file), {**saved[name], "param_groups": groups})
