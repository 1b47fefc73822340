"""safetensors files whose float16 tensors may be stored as byte planes, and the one reader for all of them.

A float16 weight's high byte (sign, exponent and two mantissa bits) takes far fewer values than its low byte.
Stored as a uint8 tensor of shape (2, *shape), all low bytes then all high bytes, the deflate of a wheel compresses
the file about 7 % smaller than interleaved (the shuffle filter of HDF5 and Blosc). It is lossless, and the file
stays plain safetensors: the packed tensors keep their names and are listed in the header metadata ``byte_planes``.

A network that only ranks finished images (an image ranker) may go further: its convolution and linear weights as
signed integer codes of a few bits per output channel (``channel_codes``), half of float16's size or less. That is
lossy; `condgen export` keeps it only where a measured check finds no lower score (condgen.export.half).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from condgen.errors import CondgenError
from condgen.files import write_atomic

BYTE_PLANES = "byte_planes"
CHANNEL_CODES = "channel_codes"  # metadata: {"bits": B, "names": [...]}; each name's scales stored as NAME + SCALE
SCALE = ".channel_scale"
CODE_BITS = range(4, 9)  # at most 8, as the codes are int8


def to_byte_planes(tensor: torch.Tensor) -> torch.Tensor:
    """A float16 tensor as uint8 (2, *shape): its low bytes, then its high bytes (on the little-endian machines
    torch runs on)."""
    flat = tensor.contiguous().reshape(-1).view(torch.uint8).view(-1, 2)
    return flat.T.reshape(2, *tensor.shape).contiguous()


def from_byte_planes(planes: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`to_byte_planes`."""
    pairs = torch.stack([planes[0].reshape(-1), planes[1].reshape(-1)], dim=1)  # (n, 2), low byte first
    return pairs.view(torch.float16).reshape(planes.shape[1:])


def to_channel_codes(tensor: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric linear quantisation per output channel (dim 0) with zero point 0 (Jacob et al. 2018, eq. 1):
    int8 ``codes`` round(w / s) within +-(2^(bits-1) - 1), and float32 ``scales`` s, each channel's max |w| over
    that bound."""
    bound = 2 ** (bits - 1) - 1
    weights = tensor.float()
    scales = weights.abs().reshape(len(weights), -1).amax(dim=1).clamp_min(torch.finfo(torch.float32).tiny) / bound
    codes = (weights / _per_channel(scales, weights)).round().clamp(-bound, bound).to(torch.int8)
    return codes, scales


def from_channel_codes(codes: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """The weights :func:`to_channel_codes` stands for, in float16 as every packed tensor of this module loads."""
    return (codes.float() * _per_channel(scales.float(), codes)).half()


def _per_channel(scales: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return scales.reshape(-1, *[1] * (like.dim() - 1))


def save_tensors(
    tensors: dict[str, torch.Tensor],
    path: Path,
    metadata: dict[str, str] | None = None,
    half: bool = False,
    bits: int | None = None,
) -> None:
    """Writes ``tensors`` atomically; with ``half``, floating-point ones as float16 stored in byte planes; with
    ``bits`` (one of :data:`CODE_BITS`), those of two or more dimensions (convolution and linear weights) as
    :func:`to_channel_codes` of that many bits and the other floating-point ones as with ``half``."""
    metadata, scales = dict(metadata or {}), set()
    if bits is not None:
        if bits not in CODE_BITS:
            raise CondgenError(f"{path}: codes of {bits} bits; choose {CODE_BITS.start} to {CODE_BITS.stop - 1}")
        coded = [name for name, tensor in tensors.items() if tensor.is_floating_point() and tensor.dim() >= 2]
        tensors = dict(tensors)
        for name in coded:
            tensors[name], tensors[name + SCALE] = to_channel_codes(tensors[name], bits)
            scales.add(name + SCALE)
        metadata[CHANNEL_CODES] = json.dumps({"bits": bits, "names": coded})
        half = True
    if half:
        floats = [name for name, tensor in tensors.items() if tensor.is_floating_point() and name not in scales]
        tensors = {k: to_byte_planes(v.half()) if k in floats else v.contiguous() for k, v in tensors.items()}
        metadata[BYTE_PLANES] = json.dumps(floats)
    write_atomic(path, save(tensors, metadata=metadata or None))


@contextmanager
def _opened(path: Path) -> Iterator[Any]:
    """``path`` opened by safetensors; a missing or damaged file is a one-line :class:`CondgenError` that names it."""
    try:
        with safe_open(path, framework="pt") as handle:
            yield handle
    except FileNotFoundError:
        raise CondgenError(f"{path}: not found") from None
    except (SafetensorError, OSError) as exc:
        raise CondgenError(f"{path}: truncated or corrupt ({exc})") from None


def read_metadata(path: Path) -> dict[str, str]:
    """A safetensors file's header metadata, read without its tensors."""
    with _opened(path) as handle:
        return handle.metadata() or {}


def read_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """A safetensors file's tensors (byte planes and channel codes turned back into float16) and its header metadata;
    a missing or damaged file is a one-line :class:`CondgenError` that names it."""
    with _opened(path) as handle:
        metadata = handle.metadata() or {}
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118 (not iterable)
    try:
        packed = json.loads(metadata.get(BYTE_PLANES, "[]"))
        for name in packed:
            tensors[name] = from_byte_planes(tensors[name])
    except (ValueError, KeyError, TypeError, RuntimeError, IndexError) as exc:
        raise CondgenError(f"{path}: damaged {BYTE_PLANES} metadata ({exc.__class__.__name__})") from None
    try:
        for name in json.loads(metadata.get(CHANNEL_CODES, '{"names": []}'))["names"]:
            tensors[name] = from_channel_codes(tensors[name], tensors.pop(name + SCALE))
    except (ValueError, KeyError, TypeError, RuntimeError, IndexError) as exc:
        raise CondgenError(f"{path}: damaged {CHANNEL_CODES} metadata ({exc.__class__.__name__})") from None
    return tensors, metadata
