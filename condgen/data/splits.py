"""Label lists that are never the test files: lists drawn from train.json, which sampling settings are chosen on, and
the compositional split, the three-object requests that train.json never holds (unseen) beside as many that it does
(seen). A model that only memorised the training combinations scores lower on the first than on the second. And the
split of a dataset's images into training and held-out ones by whole scenes."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import torch

from condgen.data.iclevr import load_codec, read_train_index
from condgen.data.labels import LabelCodec, share_a_first_word
from condgen.errors import CondgenError


def train_label_lists(
    data: str | Path,
    codec: LabelCodec,
    lists: int,
    list_seed: int = 0,
    objects: int | None = None,
    look_alike: bool | None = None,
) -> torch.Tensor:
    """``lists`` label lists (multi-hot rows, at most as many as train.json holds) drawn from ``data``'s train.json by
    a permutation seeded with ``list_seed``; only those of ``objects`` objects when given, and only those that do
    (``look_alike`` True) or do not (False) ask for two objects of one colour (:func:`share_a_first_word`). The same
    arguments give the same lists, so settings chosen on them can be chosen again."""
    _, labels = read_train_index(data, codec)
    if objects is not None:
        labels = labels[labels.sum(dim=1) == objects]
    if look_alike is not None:
        labels = labels[share_a_first_word(labels, codec.names) == look_alike]
    if len(labels) == 0:
        kind = "" if look_alike is None else (" with" if look_alike else " without") + " two objects of one colour"
        size = f" of {objects} objects" if objects is not None else ""
        raise CondgenError(f"{Path(data) / 'train.json'}: no label list{size}{kind} to draw from")
    return labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(list_seed))[:lists]]


def compositional_split(data: str | Path, seed: int = 0) -> dict[str, list[list[str]]]:
    """``{"unseen": ..., "seen": ...}``: every three-object set that no entry of ``data``'s train.json holds, and as
    many sets that one does (all of them where train.json holds fewer), drawn by a permutation seeded with ``seed``;
    each set a list of object names, both lists in the order of objects.json's indices. ``unseen_tune`` and
    ``unseen_goal`` halve the unseen sets by a permutation seeded with ``seed + 1``: one to choose settings on, one
    that scores them and that no choice is made on."""
    codec = load_codec(data)
    _, labels = read_train_index(data, codec)
    seen = {tuple(row.nonzero().flatten().tolist()) for row in labels[labels.sum(dim=1) == 3]}
    combinations = list(itertools.combinations(range(len(codec)), 3))
    unseen = [c for c in combinations if c not in seen]
    present = [c for c in combinations if c in seen]
    drawn = torch.randperm(len(present), generator=torch.Generator().manual_seed(seed))[: len(unseen)]
    halves = torch.randperm(len(unseen), generator=torch.Generator().manual_seed(seed + 1))
    tune = sorted(halves[: len(unseen) // 2].tolist())
    return {
        "unseen": [[codec.names[i] for i in c] for c in unseen],
        "seen": [[codec.names[i] for i in present[j]] for j in sorted(drawn.tolist())],
        # settings may be chosen on the first half; the second half only scores what was chosen
        "unseen_tune": [[codec.names[i] for i in unseen[j]] for j in tune],
        "unseen_goal": [[codec.names[i] for i in unseen[j]] for j in sorted(set(range(len(unseen))) - set(tune))],
    }


# CLEVR_train_000123_2.png -> scene "CLEVR_train_000123": images of one scene share objects and must not be split.
_SCENE_PATTERN = re.compile(r"^(.*)_\d+\.[^.]+$")


def scene_of(file_name: str) -> str:
    match = _SCENE_PATTERN.match(file_name)
    return match.group(1) if match else file_name


def split_by_scene(files: list[str], val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of training and validation images, with every scene entirely on one side."""
    scenes = sorted({scene_of(f) for f in files})
    if len(scenes) < 2:
        raise CondgenError("evaluator training needs at least 2 scenes to hold one out for validation")
    n_val = min(max(1, round(len(scenes) * val_fraction)), len(scenes) - 1)
    order = torch.randperm(len(scenes), generator=torch.Generator().manual_seed(seed)).tolist()
    val_scenes = {scenes[i] for i in order[:n_val]}
    is_val = torch.tensor([scene_of(f) in val_scenes for f in files])
    return torch.nonzero(~is_val).flatten(), torch.nonzero(is_val).flatten()
