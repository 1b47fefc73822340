"""optim.bf16 and optim.compile, the speed options of every trainer: bf16 runs the forward passes under bfloat16
autocast and keeps the weights float32, and bf16: auto lets the machine choose; compile changes no number of a
training step and nothing a run saves."""

from types import SimpleNamespace

import pytest
import torch
import yaml

from condgen.cli import main
from condgen.data.iclevr import load_dataset
from condgen.errors import CondgenError
from condgen.kinds import KINDS
from condgen.train import acceleration
from condgen.train.acceleration import bf16_warning
from condgen.train.config import load_config

TINY = {
    "ddpm": ["model.channels=16", "model.channel_mults=[1,2]", "model.attention_resolutions=[16]", "model.heads=2",
             "diffusion.num_steps=20"],
    "gan": ["model.g_channels=8", "model.d_channels=8", "model.noise_dim=16", "model.label_dim=16"],
    "vae": ["model.channels=8", "model.channel_mults=[1,2,2]"],
    "noisy_classifier": ["model.channels=16", "model.channel_mults=[1,2]", "model.attention_resolutions=[16]",
                         "model.heads=2", "diffusion.num_steps=20"],
}  # fmt: skip
# kind, extra settings, the trained networks (task attributes) and those compiled
CASES = [
    ("ddpm", [], ["model"], ["model"]),
    (
        "gan",
        ["optim.loss=hinge", "optim.n_critic=1", "model.spectral_norm=false"],
        ["generator_net", "critic"],
        ["generator_net", "critic"],
    ),
    (
        "gan",
        ["optim.loss=hinge", "optim.n_critic=1", "model.spectral_norm=true"],
        ["generator_net", "critic"],
        ["generator_net"],
    ),  # inductor fails on spectral norm's in-place update
    ("gan", ["optim.loss=wgan_gp", "optim.n_critic=1"], ["generator_net", "critic"], ["generator_net"]),  # no GP
    ("vae", [], ["model"], ["model"]),
    ("noisy_classifier", [], ["model"], ["model"]),
]


def make_task(kind, dataset, *settings):
    entry = KINDS[kind]
    config = load_config(entry.config_class(), None, [*TINY[kind], "optim.batch_size=4", "device=cpu", *settings])
    return entry.make_task(config, load_dataset(dataset, progress=False), dataset, None)


def layers(net: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in net.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]


@pytest.mark.parametrize(("kind", "settings", "nets", "compiled"), CASES)
def test_bf16_runs_every_trained_network_under_bfloat16_autocast_with_float32_weights(
    dataset, kind, settings, nets, compiled
):
    task = make_task(kind, dataset, "optim.bf16=true", *settings)
    seen = {name: set() for name in nets}
    for name in nets:
        for layer in layers(getattr(task, name)):
            layer.register_forward_hook(lambda module, inputs, output, name=name: seen[name].add(output.dtype))
    losses = task.train_step(0)
    assert all(torch.isfinite(torch.tensor(value)) for value in losses.values())
    assert seen == {name: {torch.bfloat16} for name in nets}
    assert all(p.dtype == torch.float32 for module in task.modules.values() for p in module.parameters())


@pytest.mark.parametrize(("kind", "settings", "nets", "compiled"), CASES)
def test_compile_changes_no_number_of_a_training_step(dataset, kind, settings, nets, compiled):
    """aot_eager traces the networks as inductor does but runs the traced graph without generating code: the same
    arithmetic, so the same weights after two steps, within float rounding."""
    eager = make_task(kind, dataset, *settings)
    traced = make_task(kind, dataset, "optim.compile=aot_eager", *settings)
    for name in nets:
        net = getattr(traced, name).module if hasattr(getattr(traced, name), "module") else getattr(traced, name)
        assert (net._compiled_call_impl is not None) == (name in compiled), name
    for step in range(2):
        losses = []
        for task in (eager, traced):
            torch.manual_seed(step)  # the VAE's sampling noise comes from the global stream
            losses.append(task.train_step(step))
        assert losses[0] == pytest.approx(losses[1], rel=1e-4, abs=1e-5)
    for key, module in eager.modules.items():
        state = traced.modules[key].state_dict()
        assert state.keys() == module.state_dict().keys()  # checkpoints are those of the plain networks
        for name, value in module.state_dict().items():
            torch.testing.assert_close(state[name], value, rtol=1e-4, atol=1e-5, msg=f"{key}.{name}")


def test_an_unknown_compile_backend_is_refused_naming_the_option(dataset):
    with pytest.raises(CondgenError, match=r"optim.compile: 'fastest' is not a torch.compile backend"):
        make_task("ddpm", dataset, "optim.compile=fastest")


@pytest.mark.parametrize(
    ("flags", "device", "enabled", "warns"),
    [
        ("fpu avx2 avx512f avx512_vnni", "cpu", True, True),  # AVX-512 without bfloat16: emulated
        ("fpu avx2 avx512f avx512_bf16", "cpu", True, False),
        ("fpu avx2 amx_bf16 amx_tile", "cpu", True, False),
        ("fpu avx2 avx512f", "cpu", False, False),  # bf16 not asked for
        ("fpu avx2 avx512f", "cuda", True, False),  # GPUs are not judged by the CPU's flags
        (None, "cpu", True, False),  # no /proc/cpuinfo: nothing is known, nothing is said
    ],
)
def test_bf16_on_a_cpu_without_bfloat16_units_is_named_in_one_line(tmp_path, flags, device, enabled, warns):
    cpuinfo = tmp_path / "cpuinfo"
    if flags is not None:
        cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n")
    warning = bf16_warning(torch.device(device), enabled, cpuinfo)
    assert (warning is not None) == warns
    if warns:
        assert warning.startswith("optim.bf16:") and "optim.bf16=false" in warning and "\n" not in warning


@pytest.mark.parametrize(
    ("flags", "on", "why"),
    [
        ({"fpu", "avx2", "avx512f", "avx512_vnni"}, False, "this CPU has no avx512_bf16/AMX units"),
        ({"fpu", "avx2", "avx512f", "avx512_bf16"}, True, "this CPU has avx512_bf16"),
        ({"fpu", "avx2", "amx_bf16", "amx_tile"}, True, "this CPU has amx_bf16"),
        (None, False, "/proc/cpuinfo cannot be read"),  # nothing known: float32, which never loses accuracy
    ],
)
def test_bf16_auto_follows_the_cpus_bfloat16_units(monkeypatch, flags, on, why):
    monkeypatch.setattr(acceleration, "cpu_flags", lambda: flags)
    decided, reason = acceleration.bf16_pays(torch.device("cpu"))
    assert decided is on and why in reason
    optim = SimpleNamespace(bf16="auto")
    line = acceleration.resolve_bf16(optim, torch.device("cpu"))
    assert optim.bf16 is on and line == f"optim.bf16: auto -> {'on' if on else 'off'}: {reason}"


def test_bf16_auto_on_a_gpu_follows_its_bfloat16_support(monkeypatch):
    monkeypatch.setattr(acceleration, "cpu_flags", lambda: set())  # the CPU's flags do not judge a GPU
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "a test GPU")
    for supported in (True, False):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, s=supported, **kwargs: s)
        assert acceleration.bf16_pays(torch.device("cuda")) == (
            supported,
            f"a test GPU {'supports' if supported else 'does not support'} bfloat16",
        )


def test_resolve_bf16_leaves_a_forced_choice_alone_and_warns_of_emulation(monkeypatch):
    monkeypatch.setattr(acceleration, "cpu_has_bfloat16_units", lambda cpuinfo=None: False)
    optim = SimpleNamespace(bf16=True)
    line = acceleration.resolve_bf16(optim, torch.device("cpu"))
    assert optim.bf16 is True and line.startswith("optim.bf16: this CPU has none of")
    assert acceleration.resolve_bf16(SimpleNamespace(bf16=False), torch.device("cpu")) is None
    assert acceleration.resolve_bf16(None, torch.device("cpu")) is None  # a kind without optim.bf16


def test_a_config_takes_bf16_auto_and_refuses_anything_else_in_one_line(tmp_path):
    for kind in ("ddpm", "gan", "vae"):
        assert load_config(KINDS[kind].config_class(), None, ["optim.bf16=auto"]).optim.bf16 == "auto"
        assert load_config(KINDS[kind].config_class(), None, ["optim.bf16=false"]).optim.bf16 is False
    with pytest.raises(CondgenError) as refused:
        load_config(KINDS["gan"].config_class(), None, ["optim.bf16=maybe"])
    assert str(refused.value) == "override 'optim.bf16=maybe': expected true, false or auto, got 'maybe'"
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  bf16: 1\n")
    with pytest.raises(CondgenError, match=rf"^{path}: optim: bf16: expected true, false or auto, got 1$"):
        load_config(KINDS["ddpm"].config_class(), path)


def test_a_task_built_outside_condgen_train_decides_auto_by_the_machine(dataset, monkeypatch):
    monkeypatch.setattr(acceleration, "cpu_flags", lambda: {"avx2", "amx_bf16"})
    acceleration._auto_bf16.cache_clear()
    try:
        task = make_task("vae", dataset, "optim.bf16=auto")
        seen = set()
        for layer in layers(task.model):
            layer.register_forward_hook(lambda module, inputs, output: seen.add(output.dtype))
        task.train_step(0)
    finally:
        acceleration._auto_bf16.cache_clear()
    assert seen == {torch.bfloat16}


def test_condgen_train_says_what_bf16_auto_chose_and_a_resumed_run_keeps_it(
    dataset, evaluator_file, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(acceleration, "cpu_flags", lambda: {"avx2", "avx512f"})
    run = tmp_path / "run"
    argv = ["train", "gan", "--data", str(dataset), "--out", str(run), "--evaluator", str(evaluator_file)]
    settings = [*TINY["gan"], "optim.batch_size=4", "device=cpu", "optim.bf16=auto"]
    assert main([*argv, *settings, "loop.steps=1"]) == 0
    said = "optim.bf16: auto -> off: this CPU has no avx512_bf16/AMX units"
    assert f"condgen: {said}\n" in capsys.readouterr().err
    assert said in (run / "log.txt").read_text()
    assert yaml.safe_load((run / "config.yaml").read_text())["optim"]["bf16"] is False  # the choice, not "auto"
    monkeypatch.setattr(acceleration, "cpu_flags", lambda: {"avx2", "amx_bf16"})  # moved to another machine
    assert main([*argv, "--resume", "loop.steps=2"]) == 0
    assert "optim.bf16" not in capsys.readouterr().err and "auto" not in (run / "log.txt").read_text().splitlines()[-1]
    assert yaml.safe_load((run / "config.yaml").read_text())["optim"]["bf16"] is False
