import pytest
import torch

from condgen.data.labels import ICLEVR_OBJECTS, LabelCodec, share_a_first_word
from condgen.errors import CondgenError


def test_iclevr_vocabulary_matches_the_course_order():
    codec = LabelCodec.iclevr()
    assert len(codec) == 24
    assert codec.index["gray cube"] == 0 and codec.index["gray sphere"] == 8 and codec.index["yellow cylinder"] == 23


def test_encode_decode_round_trip():
    codec = LabelCodec.iclevr()
    vector = codec.encode(["red sphere", "cyan cube", "cyan cylinder"])
    assert vector.dtype == torch.float32 and vector.sum() == 3
    assert codec.decode(vector) == ["cyan cube", "red sphere", "cyan cylinder"]
    assert torch.equal(codec.parse("red sphere,  cyan cube , cyan cylinder"), vector)


def test_encode_many_stacks_rows():
    matrix = LabelCodec.iclevr().encode_many([["gray cube"], ["red cube", "blue cube"]])
    assert matrix.shape == (2, 24)
    assert matrix.sum(1).tolist() == [1, 2]


def test_from_mapping_orders_by_index_and_rejects_gaps():
    codec = LabelCodec.from_mapping({"b": 1, "a": 0}, "objects.json")
    assert codec.names == ("a", "b")
    with pytest.raises(CondgenError, match="objects.json: indices must be 0..1"):
        LabelCodec.from_mapping({"a": 0, "b": 2}, "objects.json")
    with pytest.raises(CondgenError, match='entry "a": index must be an integer'):
        LabelCodec.from_mapping({"a": "0"}, "objects.json")


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["red sphre"], 'unknown object "red sphre" \\(did you mean "red sphere"\\?\\)'),
        ([], "empty label list"),
        (["red cube", "red cube"], 'object "red cube" appears twice'),
        ("red cube", "expected a list of object names"),
        ([3], "expected a list of object names"),
    ],
)
def test_bad_label_lists_are_named(names, message):
    with pytest.raises(CondgenError, match=f"^test.json: entry 4: {message}"):
        LabelCodec(ICLEVR_OBJECTS).encode(names, "test.json: entry 4")


def test_objects_json_errors_name_the_index():
    with pytest.raises(CondgenError, match='index 0 is used twice \\("a" and "b"\\)'):
        LabelCodec.from_mapping({"a": 0, "b": 0}, "objects.json")
    with pytest.raises(CondgenError, match='"b" has 2 and 1 is missing'):
        LabelCodec.from_mapping({"a": 0, "b": 2}, "objects.json")


def test_look_alike_requests_are_two_objects_of_one_colour():
    codec = LabelCodec.iclevr()
    rows = codec.encode_many(
        [["red cube", "red sphere"], ["red cube", "blue cube"], ["gray cube"], ["cyan cube", "cyan sphere", "red cube"]]
    )
    assert share_a_first_word(rows, codec.names).tolist() == [True, False, False, True]
