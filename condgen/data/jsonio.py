"""Reading and writing the JSON files of a dataset folder, with one-line errors that name the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from condgen.errors import CondgenError
from condgen.files import write_atomic


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


def write_json(path: str | Path, value: Any) -> None:
    write_atomic(path, (json.dumps(value, indent=2) + "\n").encode("utf-8"))
