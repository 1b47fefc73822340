"""The generators that ship with condgen, trained on the real i-CLEVR set, and i-CLEVR's two request lists.

A shipped model is a model folder written by ``condgen export`` (its README.md says how it was trained and what it
scored); its name stands wherever a model folder does: ``--model iclevr-ldm``, ``condgen.load("iclevr-ldm")``.
``benchmarks/ship.py`` writes them from the benchmarks' runs.
"""

from __future__ import annotations

from pathlib import Path

from condgen.errors import CondgenError

PRETRAINED = Path(__file__).resolve().parent
# best first: the first one present is what `sample`, `denoise`, `serve` and the demo use when no model is named
SHIPPED = ("iclevr-ldm", "iclevr-gan")
# i-CLEVR's test.json and new_test.json (32 requests each), to generate without the dataset at hand
ICLEVR_LABELS = {name: PRETRAINED / "iclevr" / f"{name}.json" for name in ("test", "new_test")}


def shipped_models() -> list[str]:
    """The names of the shipped models present in this installation, best first."""
    return [name for name in SHIPPED if (PRETRAINED / name / "run.json").is_file()]


def shipped_folders() -> list[Path]:
    """The folders of every shipped model present, best first; none present is an error, as for ``model_path(None)``."""
    return [PRETRAINED / name for name in shipped_models()] or [model_path(None)]


def model_path(model: str | Path | None) -> Path:
    """The folder a ``--model`` value names: an existing folder as it is, else the shipped model of that name; with
    None, the best shipped model."""
    if model is None:
        available = shipped_models()
        if not available:
            raise CondgenError("no shipped model in this installation; pass --model with a run or model folder")
        return PRETRAINED / available[0]
    path = Path(model)
    if path.exists():
        return path
    if str(model) in shipped_models():
        return PRETRAINED / str(model)
    shipped = ", ".join(shipped_models()) or "none"
    raise CondgenError(f"{model}: no such run or model folder, nor a shipped model (shipped: {shipped})")
