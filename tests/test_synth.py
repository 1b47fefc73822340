import json

import numpy as np
import pytest

from condgen.cli import main
from condgen.data.iclevr import load_dataset
from condgen.data.synth import (
    MIN_VISIBLE,
    Canvas,
    SceneObject,
    render_counting_scene,
    render_scene,
    render_views,
    synthesize_dataset,
    too_hidden,
)


def folder_bytes(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_images(synth_template, tmp_path):
    synthesize_dataset(tmp_path / "again", n=30, seed=0, workers=2, progress=False)  # other worker count too
    synthesize_dataset(tmp_path / "other", n=30, seed=1, workers=1, progress=False)
    assert folder_bytes(tmp_path / "again") == folder_bytes(synth_template)
    original, other = load_dataset(synth_template, progress=False), load_dataset(tmp_path / "other", progress=False)
    assert not np.array_equal(original.images.numpy(), other.images.numpy())


def test_scenes_add_one_object_at_a_time(synth_template):
    train = json.loads((synth_template / "train.json").read_text())
    assert len(train) == 30
    for scene in range(10):
        views = [train[f"scene_{scene:06d}_{k}.png"] for k in range(3)]
        assert [len(v) for v in views] == [1, 2, 3]
        assert views[1][:1] == views[0] and views[2][:2] == views[1]


def test_label_files_and_vocabulary(synth_template):
    objects = json.loads((synth_template / "objects.json").read_text())
    assert objects["gray cube"] == 0 and len(objects) == 24
    for name in ["test.json", "new_test.json"]:
        lists = json.loads((synth_template / name).read_text())
        assert len(lists) == 32 and {len(x) for x in lists} == {1, 2, 3}
        assert all(len(set(x)) == len(x) for x in lists)
    assert json.loads((synth_template / "test.json").read_text()) != json.loads(
        (synth_template / "new_test.json").read_text()
    )


def test_partial_last_scene_and_size(tmp_path):
    synthesize_dataset(tmp_path / "d", n=5, seed=3, size=32, workers=1, progress=False)
    data = load_dataset(tmp_path / "d", size=32, progress=False)
    assert data.images.shape == (5, 3, 32, 32)
    assert sorted(data.files)[-1] == "scene_000001_1.png"


def obj(shape, color, u, v, radius=6.0):
    return SceneObject(shape=shape, color=color, metal=False, u=u, v=v, radius=radius, angle=0.3, shade=1.0)


@pytest.mark.parametrize("shape", ["cube", "sphere", "cylinder"])
def test_every_shape_is_drawn_in_its_colour_with_shading(shape):
    canvas = Canvas(64)
    color, coverage = canvas.draw(obj(shape, "red", 32, 40))
    inside = coverage > 0.99
    assert 30 < inside.sum() < 400
    red = color[:, inside]
    assert (red[0] > red[1] + 0.1).all() and (red[0] > red[2] + 0.1).all()  # red stays red where lit or dark
    assert red[0].max() - red[0].min() > 0.1  # shading varies across the object


def test_shapes_have_distinct_silhouettes():
    canvas = Canvas(64)
    masks = {s: canvas.draw(obj(s, "gray", 32, 40))[1] > 0.5 for s in ["cube", "sphere", "cylinder"]}
    for a, b in [("cube", "sphere"), ("cube", "cylinder"), ("sphere", "cylinder")]:
        assert (masks[a] ^ masks[b]).sum() > 10, (a, b)


def test_hidden_objects_are_rejected_and_the_views_increment():
    canvas = Canvas(64)
    near, far = obj("cube", "red", 32, 50, radius=9), obj("sphere", "blue", 32, 44, radius=4)
    assert render_scene(canvas, [far, near], 1.0) is None  # the far sphere sits behind the big near cube
    apart = [obj("cube", "red", 16, 50), obj("sphere", "blue", 48, 44), obj("cylinder", "green", 32, 30)]
    views = render_scene(canvas, apart, 1.0)
    assert len(views) == 3 and all(v.shape == (64, 64, 3) and v.dtype == np.uint8 for v in views)
    assert (views[0] != views[1]).any(axis=2).sum() > 20  # the second object appears


def test_sampled_scenes_keep_objects_visible():
    canvas = Canvas(64)
    for scene in range(20):
        objects, _ = render_views(7, scene, 64)
        layers = [canvas.draw(o)[1] for o in objects]
        order = sorted(range(3), key=lambda i: objects[i].v)
        for rank, i in enumerate(order):
            visible = layers[i] * np.prod([1 - layers[j] for j in order[rank + 1 :]] or [1.0], axis=0)
            assert visible.sum() >= MIN_VISIBLE * layers[i].sum()


@pytest.fixture(scope="module")
def counting_set(tmp_path_factory):
    """Counting scenes of up to 6 objects, half of them with a repeated object."""
    out = tmp_path_factory.mktemp("counting") / "data"
    synthesize_dataset(out, n=300, seed=0, workers=1, progress=False, max_objects=6, repeats=0.5)
    return out


def test_counts_agree_with_the_multi_hot_labels(counting_set):
    train = json.loads((counting_set / "train.json").read_text())
    counts = json.loads((counting_set / "counts.json").read_text())
    assert list(counts) == list(train) == [f"scene_{i:06d}.png" for i in range(300)]
    assert sorted(p.name for p in (counting_set / "images").iterdir()) == list(train)
    for file, names in train.items():
        assert len(set(names)) == len(names) and set(counts[file]) == set(names)
        assert all(isinstance(c, int) and c >= 1 for c in counts[file].values())
    assert load_dataset(counting_set, progress=False).images.shape == (300, 3, 64, 64)


def test_counting_scenes_range_over_one_to_six_objects_and_repeat_about_half(counting_set):
    counts = json.loads((counting_set / "counts.json").read_text())
    assert {sum(c.values()) for c in counts.values()} == set(range(1, 7))
    repeated = sum(max(c.values()) >= 2 for c in counts.values())
    assert 100 < repeated < 200
    assert any(len(c) == 6 for c in counts.values())  # six distinct objects fit as well as six copies


def test_counting_scenes_keep_every_instance_visible():
    canvas = Canvas(64)
    for scene in range(15):
        objects, image = render_counting_scene(4, scene, 64, max_objects=6, repeats=1.0)
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8
        assert len(objects) >= 2 and len({o.name for o in objects}) < len(objects)
        assert not too_hidden(objects, [canvas.draw(o)[1] for o in objects])


def test_repeats_one_repeats_an_object_in_every_scene(tmp_path):
    synthesize_dataset(tmp_path / "d", n=40, seed=2, size=32, workers=1, progress=False, max_objects=4, repeats=1)
    counts = json.loads((tmp_path / "d" / "counts.json").read_text())
    assert len(counts) == 40 and all(max(c.values()) >= 2 and sum(c.values()) <= 4 for c in counts.values())


def test_repeats_zero_draws_distinct_objects(tmp_path):
    synthesize_dataset(tmp_path / "d", n=40, seed=2, size=32, workers=1, progress=False, max_objects=5)
    counts = json.loads((tmp_path / "d" / "counts.json").read_text())
    assert all(set(c.values()) == {1} for c in counts.values())
    assert max(len(c) for c in counts.values()) == 5


def test_counting_scenes_are_deterministic_per_seed(counting_set, tmp_path):
    synthesize_dataset(tmp_path / "again", n=300, seed=0, workers=2, progress=False, max_objects=6, repeats=0.5)
    synthesize_dataset(tmp_path / "other", n=30, seed=1, workers=1, progress=False, max_objects=6, repeats=0.5)
    again = folder_bytes(tmp_path / "again")
    assert again == folder_bytes(counting_set)
    other = folder_bytes(tmp_path / "other")
    assert other["images/scene_000000.png"] != again["images/scene_000000.png"]


def test_triples_write_no_counts(synth_template):
    assert not (synth_template / "counts.json").exists()


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--max-objects", "0", "--max-objects must be a whole number from 1 to 6, got 0"),
        ("--max-objects", "7", "--max-objects must be a whole number from 1 to 6, got 7"),
        ("--repeats", "1.5", "--repeats must be a share from 0 to 1, got 1.5"),
        ("--repeats", "nan", "--repeats must be a share from 0 to 1, got nan"),
        ("--repeats", "-0.1", "--repeats must be a share from 0 to 1, got -0.1"),
    ],
)
def test_bad_counting_options_give_one_line_errors(option, value, message, tmp_path, capsys):
    code = main(["data", "synth", "--out", str(tmp_path / "d"), "--n", "3", option, value])
    err = capsys.readouterr().err
    assert code == 2 and err == f"condgen: error: {message}\n"
    assert not (tmp_path / "d").exists() and list(tmp_path.iterdir()) == []


def test_repeats_need_two_objects(tmp_path, capsys):
    code = main(["data", "synth", "--out", str(tmp_path / "d"), "--n", "3", "--max-objects", "1", "--repeats", "0.5"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--repeats 0.5 needs --max-objects 2 or more" in err


def test_help_explains_the_counting_options(capsys):
    with pytest.raises(SystemExit):
        main(["data", "synth", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--max-objects K" in text and "from 1 to K (1-6)" in text
    assert "--repeats P" in text and "drawn two or more times" in text and "counts.json" in text
