"""Image decoding and the two pixel conventions: uint8 [0, 255] on disk, float [-1, 1] in models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from condgen.errors import CondgenError

# The most pixels an image file may hold, read from its header before decoding: over 200 times i-CLEVR's 320x240
# originals, far below a decompression bomb (a 30000x30000 1-bit PNG is 109 kB on disk and 900 M pixels decoded).
MAX_PIXELS = 4096 * 4096


def decode_image(path: str | Path, size: int) -> np.ndarray:
    """Reads an image file as RGB uint8 of shape (3, size, size), resizing if it is stored at another size. A file
    of more than :data:`MAX_PIXELS` pixels is refused from its header, before anything is decoded."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise CondgenError(f"{path}: {width}x{height} pixels; images of at most {MAX_PIXELS} pixels are read")
            image = image.convert("RGB")
            if image.size != (size, size):
                image = image.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=2.0)
            array = np.asarray(image, dtype=np.uint8)
    except FileNotFoundError:
        raise CondgenError(f"{path}: image not found") from None
    except UnidentifiedImageError:
        raise CondgenError(f"{path}: cannot decode image (not an image file PIL can read)") from None
    except OSError as exc:
        reason = exc.strerror or str(exc)  # strerror for unreadable files, the message for truncated data
        raise CondgenError(f"{path}: cannot decode image ({reason})") from None
    except (SyntaxError, ValueError) as exc:  # PIL's PNG decoder raises these on some corrupt chunks
        raise CondgenError(f"{path}: cannot decode image ({exc})") from None
    except Image.DecompressionBombError as exc:  # PIL's own limit, met on opening
        raise CondgenError(f"{path}: {exc}") from None
    return np.ascontiguousarray(array.transpose(2, 0, 1))


def to_signed(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [-1, 1]: the course's ToTensor + Normalize(mean=0.5, std=0.5)."""
    return images.float().div_(127.5).sub_(1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8 [0, 255], clamping values outside the range."""
    return ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round_().to(torch.uint8)


def save_png(image: torch.Tensor, path: str | Path) -> None:
    """Saves one (3, H, W) image, uint8 or float in [-1, 1], as a PNG."""
    if image.dtype != torch.uint8:
        image = to_uint8(image)
    Image.fromarray(image.permute(1, 2, 0).cpu().numpy()).save(path)
