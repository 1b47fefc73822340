"""Reading and writing the JSON files of a dataset folder, with one-line errors that name the file."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from condgen.errors import CondgenError


def read_json(path: str | Path) -> Any:
    """Parses a JSON file; a missing, unreadable or malformed file raises :class:`CondgenError`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CondgenError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CondgenError(f"{path}: cannot read ({exc.__class__.__name__}: {exc})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CondgenError(f"{path}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None


def write_atomic(path: str | Path, data: bytes) -> None:
    """Writes ``data`` to a temporary file beside ``path`` and renames it into place.

    A reader never sees a half-written file, and an interrupted write leaves the old file intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the permissions open() would
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, value: Any) -> None:
    write_atomic(path, (json.dumps(value, indent=2) + "\n").encode("utf-8"))
