"""The model-folder reader against damaged folders: a tiny exported latent diffusion model and latent GAN, each
copy damaged by a few seeded mutations (files truncated, deleted, their bytes or safetensors headers flipped,
run.json, state.json and config.yaml values of the wrong type, huge, negative, unknown or YAML-tagged) and opened
with `condgen.load` and the `sample` loader: a copy either loads or is refused in one line, never another exception,
and nothing is written anywhere. Also: a shipped model's name that is a folder here too."""

import json
import random
import shutil
import signal
import struct
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import yaml

import condgen
from condgen.cli import main
from condgen.data.labels import LabelCodec
from condgen.data.synth import synthesize_dataset
from condgen.errors import CondgenError
from condgen.evaluate.evaluator import build_resnet18_evaluator, save_evaluator
from condgen.generate import load_generator
from condgen.pretrained import PRETRAINED, model_path, shipped_models

CASES = 300  # seeded damaged copies, half of each folder
SECONDS_PER_CASE = 20  # a reader that hangs on a damaged folder fails its case instead of the whole run

TINY = {
    "vae": ["model.channels=8", "model.channel_mults=[1,2,2]"],
    "ldm": ["model.channels=8", "model.channel_mults=[1,2]", "model.attention_resolutions=[8]", "model.heads=1",
            "diffusion.num_steps=20", "sample.steps=2"],
    "latent-gan": ["model.architecture=s2d", "model.g_channels=8", "model.d_channels=8", "model.noise_dim=16",
                   "model.label_dim=16", "model.conditioning=both"],
}  # fmt: skip

# values a damaged file may hold where a number, a name, a list or a section belongs
ODD_VALUES = [
    None, True, False, 0, -1, -(2**31), 2**40, 2**63, 10**30, 1e308, -1e308, 0.5, -0.5, float("nan"), float("inf"),
    "", "x", "auto", "../../outside", "1e999", "\x00", [], [1, 2], [[]], ["gray cube"] * 3, {}, {"a": 1},
    {"kind": "ldm"},
]  # fmt: skip
YAML_TAGS = [
    "!!python/object/apply:os.system ['touch {marker}']",
    "!!python/object:collections.OrderedDict {}",
    "!!python/name:os.system",
    "!!binary aGVsbG8=",
    "!!set {a, b}",
    "!!timestamp 2001-12-14",
    "&a [*a]",
    "*undefined",
]


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """A tiny ldm and latent GAN model folder (one training step each, on one autoencoder), exported once."""
    root = tmp_path_factory.mktemp("fuzz")
    data = root / "data"
    synthesize_dataset(data, n=30, seed=0, workers=1, progress=False)
    for name in ("test.json", "new_test.json"):  # two requests: a tiny run's end-of-training scoring
        (data / name).write_text(json.dumps(json.loads((data / name).read_text())[:2]))
    torch.manual_seed(0)
    scorer = root / "evaluator.safetensors"
    save_evaluator(build_resnet18_evaluator(24), LabelCodec.iclevr(), scorer)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("CONDGEN_CACHE_DIR", str(root / "cache"))
            for kind in TINY:
                extra = ["--autoencoder", str(root / "vae")] if kind != "vae" else []
                argv = ["train", kind, "--data", str(data), "--out", str(root / kind), "--evaluator", str(scorer)]
                assert main([*argv, *extra, *TINY[kind], "optim.batch_size=4", "loop.steps=1", "device=cpu"]) == 0
            for kind in ("ldm", "latent-gan"):
                assert main(["export", "--run", str(root / kind), "--out", str(root / f"{kind}-model")]) == 0
    finally:
        torch.set_num_threads(threads)
    return {kind: root / f"{kind}-model" for kind in ("ldm", "latent-gan")}


def files_under(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file())


def mutate_bytes(rng: random.Random, folder: Path) -> str:
    """Truncates, empties, flips bytes of, or deletes one file; or swaps a folder for a file."""
    path = rng.choice(files_under(folder))
    data = path.read_bytes()
    how = rng.choice(["truncate", "empty", "flip", "delete", "folder"])
    if how == "truncate":
        path.write_bytes(data[: rng.randrange(len(data) + 1)])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "flip" and data:
        flipped = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(flipped))
    elif how == "delete":
        path.unlink()
    else:  # the folder holding the file becomes a file
        parent = path.parent
        if parent == folder:
            path.unlink()
            path.mkdir()
        else:
            shutil.rmtree(parent)
            parent.write_text("not a folder")
    return f"{how} {path.relative_to(folder)}"


def mutate_safetensors_header(rng: random.Random, folder: Path) -> str:
    """Damages a safetensors file's 8-byte header length or its JSON header: a flipped byte, a length past the end
    or of zero, shapes and offsets changed, dtypes unknown."""
    path = rng.choice([p for p in files_under(folder) if p.suffix == ".safetensors"])
    data = bytearray(path.read_bytes())
    try:
        length = struct.unpack("<Q", bytes(data[:8]))[0]
        header = json.loads(bytes(data[8 : 8 + length]))
        names = [name for name in header if name != "__metadata__"]
    except (struct.error, ValueError, TypeError):
        return "an earlier mutation left no safetensors header"
    if not names:
        return "an earlier mutation left no tensors"
    how = rng.choice(["length", "flip", "shape", "offsets", "dtype", "metadata"])
    name = rng.choice(names)
    if how == "length":
        data[:8] = struct.pack("<Q", rng.choice([0, 1, length - 1, length + 1, len(data), 2**63 - 1]))
    elif how == "flip":
        data[8 + rng.randrange(length)] ^= 1 << rng.randrange(8)
    else:
        if how == "shape":
            header[name]["shape"] = rng.choice([[], [0], [-1], [2**40], [1] * 9, "x", [1.5]])
        elif how == "offsets":
            header[name]["data_offsets"] = rng.choice([[0, 0], [10, 2], [0, 2**40], [-1, 4], "x", [0]])
        elif how == "dtype":
            header[name]["dtype"] = rng.choice(["F64", "I64", "BOOL", "U8", "X42", 7])
        else:
            header["__metadata__"] = rng.choice([{"byte_planes": json.dumps(names[:2])}, {"byte_planes": "[["}, []])
        text = json.dumps(header).encode()
        data = bytearray(struct.pack("<Q", len(text)) + text + bytes(data[8 + length :]))
    path.write_bytes(bytes(data))
    return f"safetensors {how} {path.relative_to(folder)}"


def mutate_json(rng: random.Random, folder: Path) -> str:
    """Sets, deletes or adds a key of run.json or state.json (the objects list among them), or replaces the whole
    document."""
    path = rng.choice([p for p in files_under(folder) if p.suffix == ".json"])
    try:
        document = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        return "an earlier mutation left no JSON"
    how = rng.choice(["set", "set", "delete", "add", "objects", "whole"])
    if how == "whole" or not isinstance(document, dict) or not document:
        document = rng.choice([[], "run", 3, None, [{"kind": "ldm"}]])
    elif how == "objects" and "objects" in document:
        objects = list(document["objects"])
        document["objects"] = rng.choice(
            [objects[:-1], objects + ["gray cube"], objects[::-1], [1] * len(objects), ["no such thing"] * 24,
             objects * 1000, [], "gray cube"]
        )  # fmt: skip
    elif how == "delete":
        del document[rng.choice(list(document))]
    elif how == "add":
        document[rng.choice(["surprise", "__proto__", "format"])] = rng.choice(ODD_VALUES)
    else:
        document[rng.choice(list(document))] = rng.choice(ODD_VALUES)
    path.write_text(json.dumps(document))
    return f"json {how} {path.relative_to(folder)}"


def leaves(node: object, at: tuple = ()) -> list[tuple]:
    """The key paths of a YAML mapping's leaves and sections."""
    if not isinstance(node, dict):
        return []
    found = []
    for key, value in node.items():
        found.append((*at, key))
        found += leaves(value, (*at, key))
    return found


def mutate_yaml(rng: random.Random, folder: Path, marker: Path) -> str:
    """Sets a value of a config.yaml (wrong types, huge numbers, negative sizes, a YAML tag), adds an unknown key,
    deletes one, or replaces the whole document."""
    path = rng.choice([p for p in files_under(folder) if p.name == "config.yaml"])
    try:
        document = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError):
        return "an earlier mutation left no YAML"
    how = rng.choice(["set", "set", "set", "size", "tag", "add", "delete", "whole"])
    keys = leaves(document)
    if how == "whole" or not keys:
        path.write_text(rng.choice(["", "- a\n- b\n", "42\n", "model: [\n", "{model: 3}\n", "\t- x\n"]))
        return f"yaml whole {path.relative_to(folder)}"
    key = rng.choice(keys)
    *parents, leaf = key
    node = document
    for part in parents:
        node = node[part]
    if how == "tag":
        tag = rng.choice(YAML_TAGS).replace("{marker}", str(marker))  # where running code would leave a file
        node[leaf] = "TAGGED"
        path.write_text(yaml.safe_dump(document, sort_keys=False).replace("TAGGED", tag, 1))
        return f"yaml tag {'.'.join(map(str, key))} {tag}"
    if how == "size":  # a size that is no size: every model key that holds a whole number
        node[leaf] = rng.choice([0, -1, -8, 2**40, 10**12, [0], [-1, 2], [10**12]])  # no machine allocates these
    elif how == "add":
        node[rng.choice(["surprise", "channels_typo", "__class__"])] = rng.choice(ODD_VALUES)
    elif how == "delete":
        del node[leaf]
    else:
        node[leaf] = rng.choice(ODD_VALUES)
    path.write_text(yaml.safe_dump(document, sort_keys=False, allow_unicode=True))
    return f"yaml {how} {'.'.join(map(str, key))}"


def damage(rng: random.Random, folder: Path, marker: Path) -> list[str]:
    """One to three mutations of ``folder``, chosen and placed by ``rng``."""
    done = []
    for _ in range(rng.choice([1, 1, 2, 3])):
        if not files_under(folder):
            break
        mutation = rng.choice(["bytes", "header", "json", "json", "yaml", "yaml", "yaml"])
        if mutation == "bytes":
            done.append(mutate_bytes(rng, folder))
        elif mutation == "header" and any(p.suffix == ".safetensors" for p in files_under(folder)):
            done.append(mutate_safetensors_header(rng, folder))
        elif mutation == "json" and any(p.suffix == ".json" for p in files_under(folder)):
            done.append(mutate_json(rng, folder))
        elif mutation == "yaml" and any(p.name == "config.yaml" for p in files_under(folder)):
            done.append(mutate_yaml(rng, folder, marker))
    return done


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` with its size and modification time."""
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


@contextmanager
def time_limit(seconds: int):
    def stop(signum, frame):
        raise TimeoutError(f"still reading after {seconds} s")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def open_folder(folder: Path) -> str:
    """Opens ``folder`` as `condgen sample` and `condgen.load` do; returns "loaded" or "refused" (in one line)."""
    try:
        load_generator(folder, "best")
        condgen.load(folder)
        return "loaded"
    except CondgenError as exc:
        assert str(exc) and "\n" not in str(exc), repr(str(exc))
        return "refused"


def test_a_damaged_model_folder_loads_or_is_refused_in_one_line_and_nothing_is_written(
    folders, tmp_path, monkeypatch, one_thread
):
    monkeypatch.chdir(tmp_path)  # a reader that writes where it runs would leave a file here
    marker = tmp_path / "tagged"  # what a YAML tag that runs code would create
    template_state = {kind: snapshot(folder) for kind, folder in folders.items()}
    failures, outcomes = [], {"loaded": 0, "refused": 0}
    for case in range(CASES):
        rng = random.Random(case)
        kind = ("ldm", "latent-gan")[case % 2]
        folder = tmp_path / f"case-{case}"
        shutil.copytree(folders[kind], folder)
        done = damage(rng, folder, marker)
        before = snapshot(tmp_path)
        try:
            with time_limit(SECONDS_PER_CASE):
                outcomes[open_folder(folder)] += 1
        except Exception as exc:  # the reader's bug: anything but CondgenError
            failures.append(f"case {case} ({kind}: {'; '.join(done)}): {type(exc).__name__}: {str(exc)[:200]}")
        if snapshot(tmp_path) != before:
            failures.append(f"case {case} ({kind}: {'; '.join(done)}): wrote {set(snapshot(tmp_path)) - set(before)}")
        shutil.rmtree(folder, ignore_errors=True)
    assert not failures, "\n".join(failures)
    assert outcomes["refused"] > CASES // 3 and outcomes["loaded"] > 10, outcomes  # the mutations reach the reader
    assert {kind: snapshot(folder) for kind, folder in folders.items()} == template_state
    assert not marker.exists()


def test_a_shipped_models_name_that_is_also_a_folder_here_means_what_can_be_loaded(tmp_path, monkeypatch, capsys):
    if not shipped_models():
        pytest.skip("no shipped model in this installation")
    name = shipped_models()[-1]
    monkeypatch.chdir(tmp_path)
    (tmp_path / name / "x").mkdir(parents=True)  # what `condgen sample --model NAME --out NAME/x` leaves
    assert model_path(name) == PRETRAINED / name
    assert capsys.readouterr().err == f"condgen: ./{name} is not a model folder; using the shipped {name}\n"
    shutil.copy(PRETRAINED / name / "run.json", tmp_path / name / "run.json")  # a run or model folder of that name
    assert model_path(name) == Path(name)
    err = capsys.readouterr().err
    assert err == f"condgen: using ./{name}, a model folder here; the shipped one is {PRETRAINED / name}\n"
    monkeypatch.chdir(PRETRAINED)  # inside the package: the shipped folder itself, nothing to say
    assert model_path(name) == PRETRAINED / name and capsys.readouterr().err == ""
