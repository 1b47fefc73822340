import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import edit_json
from PIL import Image

from condgen.cli import main
from condgen.data import iclevr
from condgen.data.iclevr import ICLEVRDataset, load_dataset, load_label_file


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_loader_yields_signed_64px_images_with_multi_hot_labels(dataset):
    data = ICLEVRDataset(dataset)
    image, label = data[0]
    assert len(data) == 30
    assert image.shape == (3, 64, 64) and image.dtype == torch.float32
    assert image.min() >= -1 and image.max() <= 1 and image.min() < -0.5  # dark pixels exist
    assert label.shape == (24,) and set(label.unique().tolist()) == {0.0, 1.0}
    train = json.loads((dataset / "train.json").read_text())
    name = data.data.files[0]
    assert data.data.codec.decode(label) == sorted(train[name], key=data.data.codec.index.get)


def test_larger_images_are_resized_to_64(dataset):
    original = load_dataset(dataset, progress=False, cache=False)
    path = dataset / "images" / original.files[0]
    Image.open(path).resize((128, 128), Image.Resampling.BICUBIC).save(path)
    resized = load_dataset(dataset, progress=False, cache=False)
    assert resized.images.shape == original.images.shape == (30, 3, 64, 64)
    difference = (resized.images[0].float() - original.images[0].float()).abs().mean()
    assert difference < 4  # up-then-down sampling changes little


def mapped_files() -> set[str]:
    return {line.split()[-1] for line in Path("/proc/self/maps").read_text().splitlines() if len(line.split()) > 5}


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads the process's memory maps from /proc")
def test_the_cache_is_memory_mapped_copy_on_write(dataset):
    in_memory = load_dataset(dataset, progress=False, cache=False).images
    mapped = load_dataset(dataset, progress=False).images  # builds the cache entry, then maps it
    (entry,) = iclevr.cache_dir().glob("images-*.npy")
    assert str(entry) in mapped_files() and torch.equal(mapped, in_memory)
    on_disk = entry.read_bytes()
    mapped[0] = 0  # the tensor is writable; the file does not change
    assert entry.read_bytes() == on_disk and load_dataset(dataset, progress=False).images[0].max() > 0


def test_a_cache_without_room_falls_back_to_memory_and_leaves_nothing(dataset, monkeypatch):
    def full_disk(fd, offset, length):
        raise OSError(28, "No space left on device")

    expected = load_dataset(dataset, progress=False, cache=False).images
    monkeypatch.setattr(os, "posix_fallocate", full_disk, raising=False)
    assert torch.equal(load_dataset(dataset, progress=False).images, expected)
    assert not list(iclevr.cache_dir().iterdir())  # neither an entry nor a temporary file


def test_second_load_comes_from_the_cache_and_a_changed_image_is_decoded_again(dataset, monkeypatch):
    first = load_dataset(dataset, progress=False)
    calls = []
    real_decode = iclevr.decode_image
    monkeypatch.setattr(iclevr, "decode_image", lambda *a: calls.append(a) or real_decode(*a))
    monkeypatch.setattr(iclevr, "_decode_chunk", lambda job: np.stack([iclevr.decode_image(p, job[1]) for p in job[0]]))
    second = load_dataset(dataset, progress=False)
    assert calls == [] and torch.equal(first.images, second.images)

    path = dataset / "images" / first.files[3]
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(path)
    os.utime(path, ns=(1, 1))  # a different mtime even on coarse file systems
    third = load_dataset(dataset, progress=False)
    assert len(calls) == 30
    assert third.images[3].max() == 0 and not torch.equal(first.images[3], third.images[3])


def test_label_files_load_as_multi_hot(dataset):
    codec = load_dataset(dataset, progress=False).codec
    labels = load_label_file(dataset / "test.json", codec)
    assert labels.shape == (32, 24) and set(labels.sum(1).tolist()) == {1.0, 2.0, 3.0}


def test_selection_labels_are_distinct_training_rows_drawn_the_same_every_time(dataset):
    labels = load_dataset(dataset, progress=False).labels
    drawn = iclevr.selection_labels(labels, count=10)
    assert torch.equal(drawn, iclevr.selection_labels(labels, count=10))  # the same requests in every run
    index = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))[:10]
    assert torch.equal(drawn, labels[index]) and len(set(index.tolist())) == 10
    assert len(iclevr.selection_labels(labels, count=10**6)) == len(labels)  # a small dataset gives all it has


def test_real_iclevr_label_files_parse():
    from conftest import REAL_DATA

    if not REAL_DATA.exists():
        pytest.skip("the real i-CLEVR folder is not beside this checkout")
    codec = iclevr.load_codec(REAL_DATA)
    assert len(codec) == 24
    assert load_label_file(REAL_DATA / "test.json", codec).shape == (32, 24)
    assert load_label_file(REAL_DATA / "new_test.json", codec).shape == (32, 24)


def test_data_check_reports_counts(dataset, capsys):
    code, out, _ = run_cli(capsys, "data", "check", dataset)
    assert code == 0
    assert "OK, 30 images of 64x64" in out
    assert "1: 10, 2: 10, 3: 10" in out
    assert "test.json: 32 label lists" in out


def _write(path, text):
    path.write_text(text)


def _first_entry(dataset):
    return sorted(json.loads((dataset / "train.json").read_text()))[0]


BAD_INPUTS = {
    "missing objects.json": (lambda d: (d / "objects.json").unlink(), "objects.json: file not found"),
    "malformed train.json": (lambda d: _write(d / "train.json", '{"a.png": ['), "train.json: malformed JSON at line 1"),
    "train.json of the wrong shape": (
        lambda d: _write(d / "train.json", "[]"),
        "train.json: expected a JSON object",
    ),
    "unknown object": (
        lambda d: edit_json(d / "train.json", lambda t: {**t, _first_entry(d): ["red sphre"]}),
        'entry "scene_000000_0.png": unknown object "red sphre" (did you mean "red sphere"?)',
    ),
    "empty label list": (
        lambda d: edit_json(d / "train.json", lambda t: {**t, _first_entry(d): []}),
        'entry "scene_000000_0.png": empty label list',
    ),
    "duplicated object": (
        lambda d: edit_json(d / "train.json", lambda t: {**t, _first_entry(d): ["red cube", "red cube"]}),
        'entry "scene_000000_0.png": object "red cube" appears twice',
    ),
    "file name escaping the folder": (
        lambda d: edit_json(d / "train.json", lambda t: {**t, "../x.png": ["red cube"]}),
        'entry "../x.png": file name must stay inside the images folder',
    ),
    "absolute file name": (
        lambda d: edit_json(d / "train.json", lambda t: {**t, "/etc/x.png": ["red cube"]}),
        'entry "/etc/x.png": file name must stay inside the images folder',
    ),
    "missing image": (
        lambda d: (d / "images" / "scene_000001_2.png").unlink(),
        "scene_000001_2.png: image not found",
    ),
    "corrupt image": (
        lambda d: _write(d / "images" / "scene_000002_1.png", "not a png"),
        "scene_000002_1.png: cannot decode image",
    ),
    "unreadable image": (
        lambda d: ((d / "images" / "scene_000003_0.png").unlink(), (d / "images" / "scene_000003_0.png").mkdir()),
        "scene_000003_0.png: cannot decode image",
    ),
    "decompression bomb": (  # 30000x30000 pixels in a PNG of about 100 kB: refused from its header
        lambda d: Image.new("1", (30000, 30000)).save(d / "images" / "scene_000002_2.png"),
        "scene_000002_2.png: ",
    ),
    "image too large to read": (  # 5000x5000, under PIL's own limit, over condgen's
        lambda d: Image.new("1", (5000, 5000)).save(d / "images" / "scene_000002_2.png"),
        "scene_000002_2.png: 5000x5000 pixels; images of at most 16777216 pixels are read",
    ),
    "label file of the wrong shape": (
        lambda d: _write(d / "test.json", '{"gray cube": 1}'),
        "test.json: expected a JSON list of label lists",
    ),
    "bad entry in a label file": (
        lambda d: edit_json(d / "new_test.json", lambda t: t[:5] + [["gray cube", "gray cube"]]),
        'new_test.json: entry 5: object "gray cube" appears twice',
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_gives_one_line_error(case, dataset, capsys):
    damage, message = BAD_INPUTS[case]
    damage(dataset)
    code, out, err = run_cli(capsys, "data", "check", dataset)
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("condgen: error: ") and message in err


def test_synth_refuses_a_non_empty_folder_and_leaves_it_intact(tmp_path, capsys):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    code, _, err = run_cli(capsys, "data", "synth", "--out", out, "--n", "3")
    assert code == 2 and "already exists and is not empty" in err
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "precious"


def test_missing_dataset_folder(tmp_path, capsys):
    code, _, err = run_cli(capsys, "data", "check", tmp_path / "nowhere")
    assert code == 2 and "dataset folder not found" in err


def test_broken_cache_file_is_rebuilt(dataset):
    # a copy: overwriting the file in place below would pull the pages from under the first load's memory map
    first = load_dataset(dataset, progress=False).images.clone()
    for cached in iclevr.cache_dir().glob("*.npy"):
        cached.write_bytes(b"garbage")
    assert torch.equal(load_dataset(dataset, progress=False).images, first)
    shutil.rmtree(iclevr.cache_dir())


@pytest.mark.parametrize(
    ("change", "what"),
    [
        (lambda image: image.convert("L"), "64x64 L"),
        (lambda image: image.convert("RGBA"), "64x64 RGBA"),
        (lambda image: image.resize((128, 128)), "128x128 RGB"),
        (lambda image: image.resize((64, 48)), "64x48 RGB"),
    ],
)
def test_data_check_says_what_it_converts_and_training_refuses_it(dataset, capsys, change, what):
    name = sorted(json.loads((dataset / "train.json").read_text()))[3]
    path = dataset / "images" / name
    change(Image.open(path)).save(path)
    code, out, _ = run_cli(capsys, "data", "check", dataset)
    assert code == 0 and f"{name} ({what})" in out and "training refuses them" in out
    code, _, err = run_cli(capsys, "data", "check", dataset, "--strict")
    assert code == 2 and f"{name}: {what}, not 64x64 RGB like the dataset" in err
    code, _, err = run_cli(capsys, "train", "gan", "--data", dataset, "--out", dataset.parent / "run", "device=cpu")
    assert code == 2 and f"{name}: {what}, not 64x64 RGB" in err and not (dataset.parent / "run").exists()


def test_data_check_reports_label_lists_longer_than_the_largest_scene(dataset, capsys):
    edit_json(dataset / "test.json", lambda lists: [["red cube", "red sphere", "blue cube", "gray cylinder"], *lists])
    code, out, _ = run_cli(capsys, "data", "check", dataset)
    assert code == 0 and "note: test.json: 1 label lists ask for more than 3 objects (entries 0)" in out
    code, _, err = run_cli(capsys, "data", "check", dataset, "--strict")
    assert code == 2 and "test.json: entry 0 asks for 4 objects, more than 3" in err
    assert run_cli(capsys, "data", "check", dataset, "--strict", "--max-objects", "4")[0] == 0
