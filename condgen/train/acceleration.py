"""The speed options every trainer shares, ``optim.bf16`` and ``optim.compile``: bfloat16 autocast of the training
forward passes and ``torch.compile`` of the trained networks. ``optim.bf16: auto`` lets the machine decide when a run
starts: a CPU's avx512_bf16/AMX units, a GPU's bfloat16 support.

Neither changes what a run saves: under autocast the weights, their gradients and the optimiser state stay float32
(matrix products and convolutions run in bfloat16, the losses that autocast lists in float32), and compiling works in
place (``nn.Module.compile``), so state-dict keys, checkpoints, the EMA and DDP wrapping are those of the plain
networks. ``benchmarks/train_speed.py`` measures what each pays on a machine.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import torch

from condgen.errors import CondgenError

# CPU instructions that run bfloat16 matrix products natively; without them autocast emulates bfloat16 and a
# training step is slower than in float32 (benchmarks/train_speed.py measures both on a machine)
BFLOAT16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")

# optim.bf16 of every trainer: on, off, or "auto", settled for the machine when a run starts (resolve_bf16)
Bf16 = bool | Literal["auto"]


def autocast(device: torch.device, enabled: Bf16) -> torch.autocast:
    """The context for a training step's forward passes: bfloat16 autocast on ``device`` when ``enabled`` (a task
    built outside ``condgen train`` may still hold "auto": :func:`bf16_pays` decides it, once per device)."""
    if enabled == "auto":
        enabled = _auto_bf16(device)
    return torch.autocast(device.type, torch.bfloat16, enabled=enabled)


@functools.cache
def _auto_bf16(device: torch.device) -> bool:
    return bf16_pays(device)[0]


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str] | None:
    """The instruction-set flags this CPU lists; None where ``cpuinfo`` cannot be read."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return None
    return {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split(":", 1)[1].split()}


def cpu_has_bfloat16_units(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool | None:
    """Whether this CPU lists bfloat16 instructions among its flags; None where ``cpuinfo`` cannot be read."""
    flags = cpu_flags(cpuinfo)
    return None if flags is None else any(flag in flags for flag in BFLOAT16_CPU_FLAGS)


def bf16_pays(device: torch.device) -> tuple[bool, str]:
    """Whether bfloat16 autocast speeds training up on ``device``, and why in a few words. On a CPU its flags
    decide: with avx512_bf16 or AMX units it pays (1.14x to 2.26x the images/s of float32 measured), without them
    autocast emulates bfloat16 and runs 1.5-2x slower. On a GPU its bfloat16 support decides."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        if torch.cuda.is_bf16_supported():
            return True, f"{name} supports bfloat16"
        return False, f"{name} does not support bfloat16"
    if device.type != "cpu":
        return False, f"bfloat16 autocast is not measured on {device.type}"
    flags = cpu_flags()
    if flags is None:
        return False, "/proc/cpuinfo cannot be read, so this CPU's bfloat16 units are unknown"
    found = [flag for flag in BFLOAT16_CPU_FLAGS if flag in flags]
    if found:
        return True, f"this CPU has {' and '.join(found)}"
    return False, "this CPU has no avx512_bf16/AMX units"


def resolve_bf16(optim: Any, device: torch.device) -> str | None:
    """Settles a run's ``optim.bf16`` (``optim``: its config section; None for a kind without one) before the config
    is saved: "auto" becomes True or False by :func:`bf16_pays`, so that config.yaml records the choice and a
    resumed run keeps it. Returns the line for the console and the run's log: what auto chose and why, or the
    warning of bf16 forced on a CPU without bfloat16 units; None when there is nothing to say."""
    if not hasattr(optim, "bf16"):
        return None
    if optim.bf16 == "auto":
        optim.bf16, why = bf16_pays(device)
        return f"optim.bf16: auto -> {'on' if optim.bf16 else 'off'}: {why}"
    return bf16_warning(device, optim.bf16)


def bf16_warning(device: torch.device, enabled: bool, cpuinfo: Path = Path("/proc/cpuinfo")) -> str | None:
    """The line to print when ``optim.bf16`` asks for autocast on a CPU known to lack bfloat16 units."""
    if not enabled or device.type != "cpu" or cpu_has_bfloat16_units(cpuinfo) is not False:
        return None
    return (
        f"optim.bf16: this CPU has none of {', '.join(BFLOAT16_CPU_FLAGS)}, so bfloat16 is emulated and training "
        "runs slower than in float32; pass optim.bf16=false (or auto)"
    )


def compile_in_place(modules: Iterable[torch.nn.Module], backend: str) -> None:
    """``torch.compile`` every module with ``backend``: "" leaves them eager, "inductor" generates fused kernels
    (C++ on CPUs, Triton on GPUs; the first steps pay the compilation), "aot_eager" and the like trace without
    generating code (for debugging). Call it after any copy of a module is made (the EMA's), and before DDP wraps
    it."""
    if not backend:
        return
    available = torch._dynamo.list_backends(exclude_tags=())
    if backend not in available:
        raise CondgenError(f"optim.compile: {backend!r} is not a torch.compile backend ({', '.join(available)})")
    for module in modules:
        module.compile(backend=backend)
