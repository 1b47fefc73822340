"""Run folders, for every kind alike: what a run is, which checkpoint to load, which evaluator scores it, and which
requests it can serve. Knows no model family; the families' loaders build on it.

A run folder holds ``run.json`` (kind, vocabulary, largest scene, data and evaluator), ``config.yaml``,
``metrics.jsonl``, ``log.txt``, ``checkpoints/`` (the latest two, plus a ``latest`` pointer) and ``best/``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from condgen.data.iclevr import load_label_file
from condgen.data.jsonio import read_json
from condgen.data.labels import LabelCodec
from condgen.errors import CondgenError
from condgen.evaluate.evaluator import Evaluator, load_evaluator
from condgen.train.checkpoint import latest_checkpoint, read_state

# The layout version of exported model folders (`condgen export`); a training run's run.json has none (0).
MODEL_FORMAT = 1


def read_run(run: Path) -> dict:
    """A run folder's (or an exported model folder's) run.json."""
    if not (run / "run.json").exists():
        raise CondgenError(f"{run}: not a training run or model folder (no run.json)")
    meta = read_json(run / "run.json")
    if not isinstance(meta, dict) or not isinstance(meta.get("kind"), str):
        raise CondgenError(f"{run / 'run.json'}: not a condgen run (no kind)")
    layout = meta.get("format", 0)
    if isinstance(layout, bool) or not isinstance(layout, int):
        raise CondgenError(f"{run / 'run.json'}: format {layout!r} is not a whole number (the layout version)")
    if layout > MODEL_FORMAT:
        raise CondgenError(
            f"{run}: a model folder of format {meta['format']}, from a newer condgen; this one reads up to "
            f"{MODEL_FORMAT}"
        )
    _check_vocabulary(run / "run.json", meta)
    return meta


def _check_vocabulary(path: Path, meta: dict) -> None:
    """The objects a run.json lists (distinct names) and its largest scene (a whole number of at least 1)."""
    objects, largest = meta.get("objects"), meta.get("max_objects")
    if not isinstance(objects, list) or not objects or not all(isinstance(name, str) and name for name in objects):
        raise CondgenError(f"{path}: objects must be a list of object names, got {str(objects)[:60]!r}")
    if len(set(objects)) != len(objects):
        raise CondgenError(f"{path}: objects names an object twice")
    if isinstance(largest, bool) or not isinstance(largest, int) or largest < 1:
        raise CondgenError(f"{path}: max_objects {largest!r} is not a whole number of at least 1 (the largest scene)")


def read_metrics(run: Path) -> list[dict]:
    """Every record of a run's metrics.jsonl, in order."""
    lines = (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def elapsed_by_step(records: list[dict]) -> dict[int, float]:
    """Each loss record's step -> wall-clock training seconds up to it, summed over the run's invocations (the loop
    counts a resumed invocation's seconds from 0 again)."""
    elapsed, offset, last = {}, 0.0, 0.0
    for record in records:
        if "seconds" in record:
            if record["seconds"] < last:
                offset += last
            last = record["seconds"]
            elapsed[record["step"]] = offset + last
    return elapsed


def checkpoint_folder(run: Path, kind: str, which: str) -> tuple[Path, dict]:
    """The ``best`` (falling back to ``latest``) or ``latest`` checkpoint of a run of ``kind``, and its run.json."""
    meta = read_run(run)
    if meta.get("kind") != kind:
        raise CondgenError(f"{run}: a {meta.get('kind')} run; this needs a {kind} run")
    folder = run / "best" if which == "best" and (run / "best").is_dir() else latest_checkpoint(run)
    if folder is None:
        raise CondgenError(_no_checkpoint(run, meta, which))
    state = read_state(folder)
    if state.get("kind") != kind:
        raise CondgenError(f"{folder}: a {state.get('kind')} checkpoint, not {kind}")
    return folder, meta


def _no_checkpoint(run: Path, meta: dict, which: str) -> str:
    """Why ``run`` has no ``which`` checkpoint to load: a model folder holds ``best/`` alone, a run gets its
    checkpoints by training."""
    if "format" not in meta:
        return f"{run}: no checkpoint yet (neither best/ nor checkpoints/); train it, or --resume it if it was stopped"
    if (run / "best").is_dir():
        return f"{run}: a model folder holds best/ alone; use the best checkpoint, not {which}"
    return f"{run / 'best'}: missing, so {run} is an incomplete model folder; export it again (condgen export)"


def run_evaluator(meta: dict, override: Path | None) -> Evaluator | None:
    """The evaluator a run was trained with, unless ``override`` names another."""
    if override is not None:
        return load_evaluator(override)
    if meta.get("evaluator") == "shipped":
        return load_evaluator()
    if meta.get("evaluator"):
        path = Path(meta["evaluator"])
        return load_evaluator(path) if path.exists() else None
    return None


def request_labels(meta: dict, labels_file: Path | None, objects: str | None) -> torch.Tensor:
    """The label rows to generate, validated against the run's vocabulary and its largest training scene."""
    codec = LabelCodec(meta["objects"])
    if labels_file is not None:
        rows, where = load_label_file(labels_file, codec), str(labels_file)
    else:
        rows, where = codec.parse(objects or "", "--objects")[None], "--objects"
    too_many = rows.sum(dim=1) > meta["max_objects"]
    if too_many.any():
        first = int(torch.nonzero(too_many)[0])
        raise CondgenError(
            f"{where}: entry {first} asks for {int(rows[first].sum())} objects; "
            f"the model was trained on at most {meta['max_objects']}"
        )
    return rows
