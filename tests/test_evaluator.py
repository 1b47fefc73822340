import json
import shutil

import pytest
import torch
from conftest import REAL_DATA
from safetensors.torch import load_file

from condgen.cli import main
from condgen.data.iclevr import load_dataset
from condgen.data.imageio import to_signed
from condgen.data.labels import LabelCodec
from condgen.data.splits import scene_of, split_by_scene
from condgen.errors import CondgenError
from condgen.evaluate.evaluator import Evaluator, build_resnet18_evaluator, load_evaluator, save_evaluator
from condgen.evaluate.training import augment, one_cycle


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_resnet18_evaluator(24).eval()


def test_course_architecture(model):
    assert isinstance(model.fc, torch.nn.Sequential)
    assert isinstance(model.fc[0], torch.nn.Linear) and model.fc[0].in_features == 512
    assert model.fc[0].out_features == 24 and isinstance(model.fc[1], torch.nn.Sigmoid)


def test_course_checkpoint_round_trip(model, tmp_path):
    path = tmp_path / "checkpoint.pth"
    torch.save({"model": model.state_dict()}, path)
    loaded = load_evaluator(path)
    x = torch.rand(4, 3, 64, 64) * 2 - 1
    assert loaded.codec == LabelCodec.iclevr()
    assert torch.equal(loaded.scores(x), model(x).detach())


def test_safetensors_round_trip_full_and_half(model, tmp_path):
    codec = LabelCodec.iclevr()
    x = torch.rand(4, 3, 64, 64) * 2 - 1
    save_evaluator(model, codec, tmp_path / "full.safetensors")
    save_evaluator(model, codec, tmp_path / "half.safetensors", half=True)
    full, half = load_evaluator(tmp_path / "full.safetensors"), load_evaluator(tmp_path / "half.safetensors")
    assert full.codec == codec
    assert torch.equal(full.scores(x), model(x).detach())
    assert (tmp_path / "half.safetensors").stat().st_size < 0.6 * (tmp_path / "full.safetensors").stat().st_size
    assert torch.allclose(half.scores(x), model(x).detach(), atol=2e-2)


def test_a_narrower_resnet18_has_a_quarter_of_the_parameters_and_loads_at_its_width(tmp_path):
    """An image ranker need not be the evaluator's size: at width 32 every stage has half the channels."""
    torch.manual_seed(0)
    narrow = build_resnet18_evaluator(24, width=32).eval()
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert 0.24 < count(narrow) / count(build_resnet18_evaluator(24)) < 0.26
    assert narrow.layer4[1].conv2.out_channels == 256 and narrow.fc[0].in_features == 256
    save_evaluator(narrow, LabelCodec.iclevr(), tmp_path / "narrow.safetensors")
    loaded = load_evaluator(tmp_path / "narrow.safetensors")  # the width comes from the weights themselves
    x = torch.rand(3, 3, 64, 64) * 2 - 1
    assert torch.equal(loaded.scores(x), Evaluator(narrow, LabelCodec.iclevr()).scores(x))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x00\x01truncated", "cannot load checkpoint"),
        (None, "expected the course format"),
    ],
)
def test_bad_course_checkpoints(tmp_path, content, message):
    path = tmp_path / "checkpoint.pth"
    if content is None:
        torch.save({"state_dict": {}}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(CondgenError, match=message):
        load_evaluator(path)


def test_truncated_safetensors_and_foreign_weights(model, tmp_path):
    path = tmp_path / "e.safetensors"
    save_evaluator(model, LabelCodec.iclevr(), path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CondgenError, match="e.safetensors: truncated or corrupt"):
        load_evaluator(path)
    torch.save({"model": {"conv.weight": torch.zeros(1)}}, tmp_path / "other.pth")
    with pytest.raises(CondgenError, match="not a ResNet18 evaluator for 24 objects"):
        load_evaluator(tmp_path / "other.pth")


def test_scene_split_keeps_scenes_whole():
    files = [f"CLEVR_train_{s:06d}_{k}.png" for s in range(50) for k in range(3)]
    train, val = split_by_scene(files, 0.2, seed=3)
    assert len(val) == 30 and len(train) == 120
    assert not {scene_of(files[i]) for i in train} & {scene_of(files[i]) for i in val}


def test_augment_only_flips_and_shifts():
    images = torch.randint(0, 256, (8, 3, 64, 64), dtype=torch.uint8)
    shifted = augment(images, 4, torch.Generator().manual_seed(0))
    assert shifted.shape == (8, 3, 64, 64) and shifted.min() >= -1 and shifted.max() <= 1
    flipped_only = augment(images, 0, torch.Generator().manual_seed(0))
    signed = to_signed(images)
    for out, original in zip(flipped_only, signed):
        assert torch.equal(out, original) or torch.equal(out, original.flip(-1))
    assert any(not torch.equal(out, original) for out, original in zip(flipped_only, signed))


@pytest.mark.parametrize(("total", "pct_start"), [(1, 0.15), (4, 0.15), (7, 0.3), (200, 0.15)])
def test_one_cycle_is_torchs_one_cycle_lr(total, pct_start):
    weight = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([weight], lr=1.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=2e-3, total_steps=total, pct_start=pct_start)
    for step in range(total):
        lr, beta1 = one_cycle(step, total, 2e-3, pct_start)
        group = optimizer.param_groups[0]
        assert lr == pytest.approx(group["lr"], rel=1e-12) and beta1 == pytest.approx(group["betas"][0], rel=1e-12)
        optimizer.step()
        schedule.step()


def test_training_learns_and_writes_its_run(dataset, tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", "evaluator", "--data", str(dataset), "--out", str(run), "optim.epochs=3", "optim.batch_size=8"]
    assert main([*argv, "half=true"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {run / 'evaluator.safetensors'}" in printed and "held-out accuracy" in printed
    meta = json.loads((run / "evaluator.json").read_text())
    assert meta["train_images"] + meta["val_images"] == 30 and meta["config"]["val_fraction"] == 0.1
    assert [e["epoch"] for e in meta["epochs"]] == [1, 2, 3] and meta["epochs"][2]["step"] == 12  # 27 images / 8
    assert meta["val_accuracy"] == max(e["val_accuracy"] for e in meta["epochs"])
    assert meta["epochs"][2]["train_loss"] < meta["epochs"][0]["train_loss"]
    evaluator = load_evaluator(run / "evaluator.safetensors")
    best = load_file(run / "best" / "model.safetensors")
    for key, value in evaluator.model.state_dict().items():  # the best weights, stored in float16
        if value.is_floating_point():
            assert torch.equal(value, best[key].half().float()), key


def test_a_resumed_evaluator_run_ends_exactly_as_the_uninterrupted_one(dataset, tmp_path):
    """Resumed from the checkpoint of its step 4, a run of 8 steps ends with the same weights, optimiser state and
    records as one that was never stopped: the one-cycle rate is a function of the step, so nothing else is kept."""
    settings = ["optim.epochs=0", "loop.steps=8", "optim.batch_size=4", "loop.checkpoint_every=2", "device=cpu"]
    settings += ["loop.keep_checkpoints=10", "loop.eval_every=4"]
    runs = {name: tmp_path / name for name in ("whole", "resumed")}
    for run in runs.values():
        assert main(["train", "evaluator", "--data", str(dataset), "--out", str(run), *settings]) == 0
    checkpoints = runs["resumed"] / "checkpoints"
    for later in ("step-0000006", "step-0000008"):  # as if it had stopped right after step 4's checkpoint
        shutil.rmtree(checkpoints / later)
    (checkpoints / "latest").write_text("step-0000004\n")
    assert main(["train", "evaluator", "--data", str(dataset), "--out", str(runs["resumed"]), "--resume"]) == 0
    for name in ("model", "optimizer"):
        whole, resumed = (load_file(r / "checkpoints" / "step-0000008" / f"{name}.safetensors") for r in runs.values())
        assert all(torch.equal(whole[k], resumed[k]) for k in whole), name
    records = [json.loads((r / "evaluator.json").read_text())["epochs"] for r in runs.values()]
    assert records[0] == records[1]


def test_cli_names_the_option_of_a_bad_held_out_share_and_writes_nothing(dataset, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "evaluator", "--data", str(dataset), "--out", str(run), "val_fraction=1.5"]) == 2
    assert "val_fraction: 1.5 is not between 0 and 1" in capsys.readouterr().err
    assert not run.exists()


def test_cli_refuses_to_overwrite_an_evaluator(dataset, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "evaluator.safetensors").write_bytes(b"keep")
    assert main(["train", "evaluator", "--data", str(dataset), "--out", str(run)]) == 2
    assert "already holds an evaluator" in capsys.readouterr().err
    assert (run / "evaluator.safetensors").read_bytes() == b"keep"


def test_shipped_evaluator_scores_held_out_real_scenes():
    if not REAL_DATA.exists():
        pytest.skip("the real i-CLEVR folder is not beside this checkout")
    evaluator = load_evaluator()
    from importlib import resources

    meta = json.loads((resources.files("condgen.evaluate") / "weights" / "iclevr_evaluator.json").read_text())
    data = load_dataset(REAL_DATA, progress=False)
    _, val = split_by_scene(data.files, meta["config"]["val_fraction"], meta["config"]["seed"])
    val = val[:300]
    assert evaluator.accuracy(to_signed(data.images[val]), data.labels[val]) >= 0.95
