"""The generators that ship with condgen, trained on the real i-CLEVR set, and i-CLEVR's two request lists.

A shipped model is a model folder written by ``condgen export`` (its README.md says how it was trained and what it
scored); its name stands wherever a model folder does: ``--model iclevr-ldm``, ``condgen.load("iclevr-ldm")``.
``benchmarks/ship.py`` writes them from the benchmarks' runs.
"""

from __future__ import annotations

import sys
from collections.abc import Collection
from pathlib import Path

from condgen.errors import CondgenError

PRETRAINED = Path(__file__).resolve().parent
# the default first: the first one present is what `sample`, `serve` and the demo use when no model is named, and
# `denoise` (`interpolate`) the first one of a kind it pictures. iclevr-gan reaches the few-step goal of
# benchmarks/README.md ("Few-step generators") at 4 network evaluations, where iclevr-ldm spends 760
SHIPPED = ("iclevr-gan", "iclevr-ldm")
# i-CLEVR's test.json and new_test.json (32 requests each), to generate without the dataset at hand
ICLEVR_LABELS = {name: PRETRAINED / "iclevr" / f"{name}.json" for name in ("test", "new_test")}


def shipped_models(kinds: Collection[str] | None = None) -> list[str]:
    """The names of the shipped models present in this installation, the default first; only those whose run.json
    names one of ``kinds`` when given."""
    present = [name for name in SHIPPED if (PRETRAINED / name / "run.json").is_file()]
    if kinds is None:
        return present
    from condgen.data.jsonio import read_json  # here, as the command line's parser imports this module for the names

    return [name for name in present if read_json(PRETRAINED / name / "run.json").get("kind") in kinds]


def shipped_folders() -> list[Path]:
    """The folders of every shipped model present, the default first; none present is an error, as for
    ``model_path(None)``."""
    return [PRETRAINED / name for name in shipped_models()] or [model_path(None)]


def model_path(model: str | Path | None, kinds: Collection[str] | None = None) -> Path:
    """The folder a ``--model`` value names: an existing folder as it is, else the shipped model of that name; with
    None, the default shipped model (the first of ``kinds``, run.json kinds, where given). A shipped model's name
    that is also a folder here (``sample --out iclevr-gan/x`` makes one) names that folder where it is a run or model
    folder, and one line on stderr says where the shipped one is; else the shipped model, and one line says that the
    folder is passed over."""
    if model is None:
        available = shipped_models(kinds)
        if not available:
            of = f" of a kind this takes ({', '.join(sorted(kinds))})" if kinds is not None else ""
            raise CondgenError(f"no shipped model{of} in this installation; pass --model with a run or model folder")
        return PRETRAINED / available[0]
    path, is_shipped = Path(model), str(model) in shipped_models()
    if path.exists() and is_shipped:
        return _name_clash(str(model))
    if path.exists():
        return path
    if is_shipped:
        return PRETRAINED / str(model)
    shipped = ", ".join(shipped_models()) or "none"
    raise CondgenError(f"{model}: no such run or model folder, nor a shipped model (shipped: {shipped})")


def _name_clash(name: str) -> Path:
    """The folder ``name`` means where it is both a shipped model's name and a path here (see :func:`model_path`)."""
    if Path(name).resolve() == (PRETRAINED / name).resolve():  # run from inside condgen/pretrained
        return PRETRAINED / name
    if (Path(name) / "run.json").is_file():
        print(f"condgen: using ./{name}, a model folder here; the shipped one is {PRETRAINED / name}", file=sys.stderr)
        return Path(name)
    print(f"condgen: ./{name} is not a model folder; using the shipped {name}", file=sys.stderr)
    return PRETRAINED / name
