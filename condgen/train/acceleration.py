"""The speed options every trainer shares, ``optim.bf16`` and ``optim.compile``: bfloat16 autocast of the training
forward passes and ``torch.compile`` of the trained networks.

Neither changes what a run saves: under autocast the weights, their gradients and the optimiser state stay float32
(matrix products and convolutions run in bfloat16, the losses that autocast lists in float32), and compiling works in
place (``nn.Module.compile``), so state-dict keys, checkpoints, the EMA and DDP wrapping are those of the plain
networks. ``benchmarks/train_speed.py`` measures what each pays on a machine.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch

from condgen.errors import CondgenError


def autocast(device: torch.device, enabled: bool) -> torch.autocast:
    """The context for a training step's forward passes: bfloat16 autocast on ``device`` when ``enabled``."""
    return torch.autocast(device.type, torch.bfloat16, enabled=enabled)


# CPU instructions that run bfloat16 matrix products natively; without them autocast emulates bfloat16 and a
# training step is slower than in float32 (benchmarks/train_speed.py measures both on a machine)
BFLOAT16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_has_bfloat16_units(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool | None:
    """Whether this CPU lists bfloat16 instructions among its flags; None where ``cpuinfo`` cannot be read."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return None
    flags = {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split(":", 1)[1].split()}
    return any(flag in flags for flag in BFLOAT16_CPU_FLAGS)


def bf16_warning(device: torch.device, enabled: bool, cpuinfo: Path = Path("/proc/cpuinfo")) -> str | None:
    """The line to print when ``optim.bf16`` asks for autocast on a CPU known to lack bfloat16 units."""
    if not enabled or device.type != "cpu" or cpu_has_bfloat16_units(cpuinfo) is not False:
        return None
    return (
        f"optim.bf16: this CPU has none of {', '.join(BFLOAT16_CPU_FLAGS)}, so bfloat16 is emulated and training "
        "runs slower than in float32; pass optim.bf16=false"
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
