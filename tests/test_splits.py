"""Label lists that are never the test files: lists drawn from train.json and the compositional split of
three-object requests (condgen.data.splits), on a hand-made vocabulary and on the real i-CLEVR folder."""

import itertools
import json
from pathlib import Path

import pytest
import torch
from conftest import REAL_DATA

from condgen.data.iclevr import load_codec, read_train_index
from condgen.data.labels import share_a_first_word
from condgen.data.splits import compositional_split, train_label_lists
from condgen.errors import CondgenError

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["red cube", "blue cube", "red sphere", "blue sphere", "gray cylinder"]


def label_folder(root: Path, lists: list[list[str]]) -> Path:
    """A data folder of objects.json (``NAMES``) and a train.json entry per label list (no images: none is read)."""
    root.mkdir()
    (root / "objects.json").write_text(json.dumps({name: i for i, name in enumerate(NAMES)}))
    (root / "train.json").write_text(json.dumps({f"{i}.png": names for i, names in enumerate(lists)}))
    return root


def test_train_label_lists_are_a_seeded_draw_of_train_json_rows(dataset):
    codec = load_codec(dataset)
    _, rows = read_train_index(dataset, codec)
    drawn = train_label_lists(dataset, codec, 8, list_seed=3)
    assert drawn.shape == (8, len(codec)) and torch.equal(drawn, train_label_lists(dataset, codec, 8, list_seed=3))
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(3))[:8]
    assert torch.equal(drawn, rows[order])
    assert not torch.equal(drawn, train_label_lists(dataset, codec, 8, list_seed=4))
    assert len(train_label_lists(dataset, codec, 1000)) == len(rows)  # at most what train.json holds


def test_train_label_lists_of_a_number_of_objects(dataset):
    codec = load_codec(dataset)
    triples = train_label_lists(dataset, codec, 1000, objects=3)
    assert len(triples) == 10 and set(triples.sum(dim=1).tolist()) == {3.0}  # one per rendered scene
    with pytest.raises(CondgenError, match=r"train\.json: no label list of 4 objects"):
        train_label_lists(dataset, codec, 8, objects=4)


def test_train_label_lists_with_or_without_two_objects_of_one_colour(dataset):
    codec = load_codec(dataset)
    alike, distinct = (train_label_lists(dataset, codec, 1000, look_alike=which) for which in (True, False))
    assert len(alike) + len(distinct) == len(train_label_lists(dataset, codec, 1000)) and len(alike) > 0
    assert share_a_first_word(alike, codec.names).all() and not share_a_first_word(distinct, codec.names).any()


def test_the_split_sets_every_unseen_triple_beside_as_many_seen_ones(tmp_path):
    seen = [list(names) for names in itertools.combinations(NAMES, 3)][::2]  # 5 of the 10 triples
    data = label_folder(tmp_path / "data", [*seen, ["red cube"], ["red cube", "blue cube"]])
    split = compositional_split(data, seed=0)
    everything = [list(names) for names in itertools.combinations(NAMES, 3)]  # in objects.json order
    assert split["unseen"] == [names for names in everything if names not in seen]
    assert len(split["seen"]) == 5 and all(names in seen for names in split["seen"])
    assert split["seen"] == [names for names in everything if names in split["seen"]]  # in objects.json order


def test_the_seed_draws_which_seen_triples_when_there_are_more_than_unseen_ones(tmp_path):
    everything = [list(names) for names in itertools.combinations(NAMES, 3)]
    data = label_folder(tmp_path / "data", everything[:8])
    draws = {seed: compositional_split(data, seed) for seed in range(4)}
    assert all(split["unseen"] == everything[8:] and len(split["seen"]) == 2 for split in draws.values())
    assert len({json.dumps(split["seen"]) for split in draws.values()}) > 1
    assert compositional_split(data, 2) == draws[2]


def test_the_split_reads_a_bad_train_json_as_a_one_line_error(tmp_path):
    data = label_folder(tmp_path / "data", [["red cube", "purple cone", "blue cube"]])
    with pytest.raises(CondgenError, match='unknown object "purple cone"'):
        compositional_split(data)


def test_the_committed_split_is_what_the_real_train_json_gives_with_seed_0():
    if not REAL_DATA.exists():
        pytest.skip("the real i-CLEVR folder is not beside this checkout")
    split = compositional_split(REAL_DATA, 0)
    assert len(split["unseen"]) == len(split["seen"]) == 136
    assert sorted(split["unseen_tune"] + split["unseen_goal"]) == sorted(split["unseen"])
    assert len(split["unseen_tune"]) == len(split["unseen_goal"]) == 68
    for name, file in (
        ("unseen", "unseen_triples"),
        ("seen", "seen_triples"),
        *((n, n) for n in ("unseen_tune", "unseen_goal")),
    ):
        committed = ROOT / "benchmarks" / "labels" / f"{file}.json"
        assert committed.read_text() == json.dumps(split[name]) + "\n"  # byte for byte, as compositional.py writes
