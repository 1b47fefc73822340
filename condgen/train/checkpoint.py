"""Checkpoints that carry everything needed to continue: weights, EMA, optimiser, step, RNG states and config.

Layout of one checkpoint folder (``RUN/checkpoints/step-0001000/``):

    <name>.safetensors   one file per module state (model, ema, ...)
    optimizer.safetensors  the optimiser's tensors, keyed "<param index>.<name>"
    rng.safetensors      torch's global CPU RNG state ("torch") and the state of each of the task's named random
                         streams ("generator.<name>"): those of rank 0 in a distributed run, whose other ranks'
                         states are keyed "rank<r>.<key>"
    state.json           step, kind, the optimiser's non-tensor state, anything else small

A checkpoint is written into a hidden temporary folder and renamed into place, then ``RUN/checkpoints/latest``
(a one-line text file) is replaced atomically; a crash at any point leaves the previous checkpoint usable.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from condgen.errors import CondgenError
from condgen.files import staged_folder, write_atomic
from condgen.tensorfile import read_tensors


def optimizer_to_flat(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Splits an optimiser state dict into tensors (for safetensors) and the JSON-able rest."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}.{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_from_flat(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], rest: dict) -> None:
    state: dict[int, dict] = {}
    for key, value in [*tensors.items(), *rest["scalars"].items()]:
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": rest["param_groups"]})


def save_checkpoint(
    run: Path,
    step: int,
    modules: dict[str, torch.nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    random_streams: dict[str, torch.Generator],
    extra: dict,
    other_ranks_rng: list[dict[str, torch.Tensor]] | None = None,
) -> Path:
    """Writes ``run/checkpoints/step-NNNNNNN`` atomically and points ``latest`` at it. ``modules`` are plain
    modules (not DistributedDataParallel wrappers), so that any number of processes can load the checkpoint;
    ``other_ranks_rng`` holds the :func:`rng_states` of ranks 1, 2, ... of a distributed run."""
    folder = run / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"step-{step:07d}"
    with staged_folder(final) as staging:
        for name, module in modules.items():
            state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
            save_file(state, staging / f"{name}.safetensors")
        optimizer_state = {}
        for name, optimizer in optimizers.items():
            tensors, rest = optimizer_to_flat(optimizer)
            save_file(tensors, staging / f"{name}.safetensors")
            optimizer_state[name] = rest
        rng = rng_states(random_streams)
        for rank, states in enumerate(other_ranks_rng or [], start=1):
            rng |= {f"rank{rank}.{key}": value for key, value in states.items()}
        save_file(rng, staging / "rng.safetensors")
        state = {"step": step, "optimizers": optimizer_state, **extra}
        (staging / "state.json").write_text(json.dumps(state, indent=2))
    write_atomic(folder / "latest", f"{final.name}\n".encode())
    return final


def rng_states(random_streams: dict[str, torch.Generator]) -> dict[str, torch.Tensor]:
    """This process's random state: torch's global CPU generator and each named random stream."""
    return {"torch": torch.get_rng_state()} | {f"generator.{k}": g.get_state() for k, g in random_streams.items()}


def load_rank_rng(checkpoint: Path, rank: int, random_streams: dict[str, torch.Generator]) -> None:
    """Restores the random state that rank ``rank`` (> 0) of a distributed run saved in ``checkpoint``."""
    rng = load_tensors(checkpoint / "rng.safetensors")
    if f"rank{rank}.torch" not in rng:
        raise CondgenError(f"{checkpoint / 'rng.safetensors'}: holds no random state of rank {rank}")
    torch.set_rng_state(rng[f"rank{rank}.torch"])
    for name, stream in random_streams.items():
        stream.set_state(rng[f"rank{rank}.generator.{name}"])


def checkpoints_newest_first(run: Path) -> list[Path]:
    """The checkpoint ``latest`` points to (when it exists), then every other ``step-N`` folder, newest first: where
    resuming looks when the newest one turns out unreadable."""
    pointer = run / "checkpoints" / "latest"
    named = run / "checkpoints" / pointer.read_text().strip() if pointer.exists() else None
    others = sorted((run / "checkpoints").glob("step-*"), reverse=True)
    return ([named] if named is not None and named.is_dir() else []) + [c for c in others if c != named]


def latest_checkpoint(run: Path) -> Path | None:
    pointer = run / "checkpoints" / "latest"
    if not pointer.exists():
        return None
    target = run / "checkpoints" / pointer.read_text().strip()
    if not target.is_dir():
        raise CondgenError(f"{pointer}: points to a missing checkpoint {target.name}")
    return target


def read_state(checkpoint: Path) -> dict:
    """A checkpoint's state.json, which must hold a JSON object."""
    try:
        state = json.loads((checkpoint / "state.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CondgenError(f"{checkpoint}: not a checkpoint (no state.json)") from None
    except (OSError, ValueError) as exc:  # ValueError: malformed JSON or bytes that are not UTF-8
        raise CondgenError(f"{checkpoint / 'state.json'}: unreadable ({exc.__class__.__name__}: {exc})") from None
    if not isinstance(state, dict):
        raise CondgenError(f"{checkpoint / 'state.json'}: expected a JSON object, got {type(state).__name__}")
    return state


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CondgenError(f"{path}: missing from the checkpoint")
    return read_tensors(path)[0]


def load_module(module: torch.nn.Module, path: Path) -> None:
    try:
        module.load_state_dict(load_tensors(path))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CondgenError(f"{path}: does not fit this model ({first})") from None


def load_checkpoint(
    checkpoint: Path,
    modules: dict[str, torch.nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    random_streams: dict[str, torch.Generator],
) -> dict:
    """Restores everything ``save_checkpoint`` wrote; returns the state dict (step and extras)."""
    state = read_state(checkpoint)
    for name, module in modules.items():
        load_module(module, checkpoint / f"{name}.safetensors")
    for name, optimizer in optimizers.items():
        optimizer_from_flat(optimizer, load_tensors(checkpoint / f"{name}.safetensors"), state["optimizers"][name])
    rng = load_tensors(checkpoint / "rng.safetensors")
    torch.set_rng_state(rng["torch"])
    for name, stream in random_streams.items():
        stream.set_state(rng[f"generator.{name}"])
    return state
