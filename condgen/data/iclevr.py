"""The i-CLEVR folder format: ``objects.json``, ``train.json``, optional ``test.json`` / ``new_test.json``, ``images/``.

``train.json`` maps an image file name (inside ``images/``) to its list of object names; the label files are lists
of such lists. Images are decoded once into a cache, a memory-mapped file that later loads map instead of reading.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image

from condgen.data.imageio import decode_image, to_signed
from condgen.data.jsonio import read_json
from condgen.data.labels import LabelCodec
from condgen.errors import CondgenError
from condgen.progress import progress_bar

LABEL_FILES = ("test.json", "new_test.json")
SELECTION_LISTS = 64  # training label sets a run's best/ is chosen on (as many requests as the two test files)
IMAGE_SIZE = 64


@dataclass
class LabeledImages:
    """A whole dataset in memory: uint8 images (N, 3, S, S), float multi-hot labels (N, C), file names."""

    images: torch.Tensor
    labels: torch.Tensor
    files: list[str]
    codec: LabelCodec

    def __len__(self) -> int:
        return len(self.files)


class ICLEVRDataset(torch.utils.data.Dataset):
    """Yields ``(image, label)``: a float image in [-1, 1] of shape (3, 64, 64) and its 24-d multi-hot vector."""

    def __init__(self, root: str | Path, size: int = IMAGE_SIZE, cache: bool = True, progress: bool = False):
        self.data = load_dataset(root, size=size, cache=cache, progress=progress)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return to_signed(self.data.images[index]), self.data.labels[index]


def random_batch(
    data: LabeledImages,
    pool: torch.Tensor,
    batch_size: int,
    hflip: bool,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """A training batch drawn with replacement from the indices ``pool``: images in [-1, 1] on ``device``, randomly
    mirrored if ``hflip`` (mirroring keeps every object), and a CPU copy of their labels."""
    index = pool[torch.randint(0, len(pool), (batch_size,), generator=generator)]
    x = to_signed(data.images[index])
    if hflip:
        flip = torch.rand(len(x), generator=generator) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    return x.to(device), data.labels[index].clone()


def load_codec(root: str | Path) -> LabelCodec:
    return LabelCodec.from_file(Path(root) / "objects.json")


def load_label_file(path: str | Path, codec: LabelCodec) -> torch.Tensor:
    """A ``test.json``-style file (a list of label lists) -> an (N, C) multi-hot matrix."""
    lists = read_json(path)
    if not isinstance(lists, list):
        raise CondgenError(f"{path}: expected a JSON list of label lists, got {type(lists).__name__}")
    if not lists:
        raise CondgenError(f"{path}: the file holds no label lists")
    return codec.encode_many(lists, str(path))


def load_label_files(root: str | Path, codec: LabelCodec) -> dict[str, torch.Tensor]:
    """The folder's ``test.json`` / ``new_test.json`` that exist, by file name, as multi-hot matrices."""
    root = Path(root)
    return {name: load_label_file(root / name, codec) for name in LABEL_FILES if (root / name).exists()}


def selection_labels(labels: torch.Tensor, count: int = SELECTION_LISTS, seed: int = 0) -> torch.Tensor:
    """``count`` rows of the training labels ``labels``, drawn without replacement with a fixed seed: the requests a
    training run's periodic score, and so its ``best/``, is measured on. They come from train.json so that no
    checkpoint is ever chosen on test.json or new_test.json."""
    index = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))[:count]
    return labels[index].clone()


def read_train_index(root: str | Path, codec: LabelCodec) -> tuple[list[str], torch.Tensor]:
    """Reads and validates ``train.json``: file names (sorted) and their multi-hot labels."""
    path = Path(root) / "train.json"
    index = read_json(path)
    if not isinstance(index, dict):
        raise CondgenError(f"{path}: expected a JSON object {{file name: [object names]}}, got {type(index).__name__}")
    if not index:
        raise CondgenError(f"{path}: no entries")
    files = sorted(index)
    for name in files:
        check_file_name(name, f'{path}: entry "{name}"')
    labels = torch.stack([codec.encode(index[name], f'{path}: entry "{name}"') for name in files])
    return files, labels


def check_file_name(name: str, where: str) -> None:
    """Rejects names that would leave ``images/``: absolute paths, ``..`` parts, backslashes, empty names."""
    pure = PurePosixPath(name)
    if not name or "\\" in name or pure.is_absolute() or ".." in pure.parts or name.startswith("~"):
        raise CondgenError(f"{where}: file name must stay inside the images folder")


def load_dataset(
    root: str | Path, size: int = IMAGE_SIZE, cache: bool = True, progress: bool = True, strict: bool = False
) -> LabeledImages:
    """Loads a dataset folder into memory, validating every JSON entry and every image. ``strict`` refuses images
    that are not ``size`` x ``size`` RGB (otherwise they are converted and resized: :func:`converted_images`)."""
    root = Path(root)
    if not root.is_dir():
        raise CondgenError(f"{root}: dataset folder not found")
    codec = load_codec(root)
    files, labels = read_train_index(root, codec)
    if strict:
        converted = converted_images(root / "images", files, size)
        if converted:
            (name, what), others = converted[0], len(converted) - 1
            more = f" (and {others} other images)" if others else ""
            raise CondgenError(
                f"{root / 'images' / name}: {what}, not {size}x{size} RGB like the dataset{more}; convert them, "
                f"or see what loading would convert with `condgen data check {root}`"
            )
    images = load_images(root / "images", files, size=size, cache=cache, progress=progress)
    return LabeledImages(images=images, labels=labels, files=files, codec=codec)


def converted_images(folder: Path, files: list[str], size: int = IMAGE_SIZE) -> list[tuple[str, str]]:
    """The images that loading converts, read from their headers alone: (file name, what it is), e.g.
    ``("a.png", "128x128 RGBA")``. Loading makes every image RGB and resizes it to ``size`` x ``size``."""
    converted = []
    for name in files:
        try:
            with Image.open(folder / name) as image:
                width, height, mode = *image.size, image.mode
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
            continue  # unreadable: decoding reports it with its reason
        if (width, height, mode) != (size, size, "RGB"):
            converted.append((name, f"{width}x{height} {mode}"))
    return converted


def load_images(
    folder: Path, files: list[str], size: int = IMAGE_SIZE, cache: bool = True, progress: bool = True
) -> torch.Tensor:
    """Decodes ``files`` under ``folder`` into a uint8 tensor (N, 3, size, size), through the decode cache.

    The cache is a memory-mapped .npy file: a load maps it instead of reading it, so a dataset larger than memory
    loads at once and a batch reads only its own images' pages (each process of a distributed run its own shard's).
    The tensor is copy-on-write: writing to it never changes the file. Without a cache (``cache=False``, or a cache
    folder that cannot be written) the images are decoded into memory."""
    paths = [folder / name for name in files]
    cache_file = _cache_path(folder, files, paths, size) if cache else None
    if cache_file is not None and cache_file.exists():
        try:
            return _open_cache(cache_file)
        except (OSError, ValueError):
            cache_file.unlink(missing_ok=True)  # a damaged cache entry is rebuilt below
    shape = (len(paths), 3, size, size)
    if cache_file is not None and _build_cache(cache_file, shape, lambda array: _decode_into(array, paths, progress)):
        return _open_cache(cache_file)
    array = np.empty(shape, dtype=np.uint8)
    _decode_into(array, paths, progress)
    return torch.from_numpy(array)


def _decode_into(array: np.ndarray, paths: list[Path], progress: bool) -> None:
    """Decodes ``paths`` into the rows of ``array`` (in memory or a memory map), 256 images at a time."""
    chunks = [paths[i : i + 256] for i in range(0, len(paths), 256)]
    with progress_bar(total=len(paths), desc="decoding images", unit="img", enabled=progress) as bar:
        for start, block in zip(range(0, len(paths), 256), _decode_chunks(chunks, array.shape[-1])):
            array[start : start + len(block)] = block
            bar.update(len(block))


def _open_cache(path: Path) -> torch.Tensor:
    array = np.load(path, mmap_mode="c")  # copy-on-write: pages are read when used, writes stay in this process
    if array.dtype != np.uint8 or array.ndim != 4:
        raise ValueError(f"{path}: not a decoded image cache")
    return torch.from_numpy(array)


def _decode_chunk(args: tuple[list[Path], int]) -> np.ndarray:
    paths, size = args
    return np.stack([decode_image(path, size) for path in paths])


def _decode_chunks(chunks: list[list[Path]], size: int) -> Iterator[np.ndarray]:
    jobs = [(chunk, size) for chunk in chunks]
    workers = min(os.cpu_count() or 1, 8)
    if len(chunks) <= 1 or workers == 1:
        yield from map(_decode_chunk, jobs)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(_decode_chunk, jobs)


def cache_dir() -> Path:
    """Where decoded datasets are kept: ``$CONDGEN_CACHE_DIR``, else ``$XDG_CACHE_HOME/condgen``, else ``~/.cache``."""
    if os.environ.get("CONDGEN_CACHE_DIR"):
        return Path(os.environ["CONDGEN_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "condgen"


def _cache_path(folder: Path, files: list[str], paths: list[Path], size: int) -> Path:
    """A cache key over the folder, the size and every file's name, byte size and modification time.

    Replacing, adding or touching any image gives a new key, so a stale cache is never read.
    """
    digest = hashlib.sha256(f"{folder.resolve()}|{size}".encode())
    for name, path in zip(files, paths):
        try:
            stat = path.stat()
        except FileNotFoundError:
            raise CondgenError(f'{path}: image not found (listed in train.json as "{name}")') from None
        digest.update(f"|{name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return cache_dir() / f"images-{digest.hexdigest()[:32]}.npy"


def _build_cache(path: Path, shape: tuple[int, ...], fill) -> bool:
    """Creates the cache entry ``path`` as a memory-mapped array of ``shape``, has ``fill`` write every image into
    it, and moves it into place atomically. Returns False, leaving nothing behind, when the cache folder cannot be
    written or lacks the space (which is reserved before the first image is written, so a full disk is an error
    here, not a crash in the middle of the memory map); an error from ``fill`` removes the partial file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        if hasattr(os, "posix_fallocate"):
            with open(tmp, "r+b") as handle:
                os.posix_fallocate(handle.fileno(), 0, os.path.getsize(tmp))
    except OSError:
        tmp.unlink(missing_ok=True)
        return False
    try:
        fill(array)
        array.flush()
        del array
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return True
