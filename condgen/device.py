"""Which torch device a config's ``device`` names, and the one global switch training sets for it."""

from __future__ import annotations

import torch

from condgen.errors import CondgenError


def resolve_device(name: str) -> torch.device:
    """``auto`` is the GPU when there is one, else the CPU; anything else is passed to torch. No side effects."""
    try:
        device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)
    except (RuntimeError, TypeError):
        raise CondgenError(f"device={name!r}: not a device (auto, cpu, cuda, cuda:1, ...)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CondgenError(f"device={name}: this machine has no CUDA GPU; use device=auto or device=cpu")
    return device


def enable_tf32(device: torch.device) -> bool:
    """On a CUDA device, lets float32 matrix products run on tensor cores (TF32), as convolutions already do;
    returns whether it is on. Called once where a command starts work on a device, since it is process-wide."""
    if device.type != "cuda":
        return False
    torch.backends.cuda.matmul.allow_tf32 = True
    return True


def describe(device: torch.device) -> str:
    """One line for a run's log: the device, TF32 and the CPU threads."""
    tf32 = device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32
    return f"device {device}, TF32 {'on' if tf32 else 'off'}, {torch.get_num_threads()} CPU threads"
