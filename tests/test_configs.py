from pathlib import Path

import pytest
import yaml

from condgen.diffusion.trainer import DDPMRunConfig
from condgen.errors import CondgenError
from condgen.fewstep.trainer import FewStepRunConfig
from condgen.gan.trainer import GANRunConfig
from condgen.latent.classifier import LatentClassifierRunConfig
from condgen.latent.gan import LatentGANRunConfig
from condgen.latent.ldm import LDMRunConfig
from condgen.latent.trainer import AutoencoderRunConfig
from condgen.train.config import dump_config, load_config
from condgen.train.counter import CounterRunConfig
from condgen.train.evaluator import EvaluatorRunConfig

# a config file's name starts with its kind: gan_acgan.yaml, latent_gan_cpu.yaml; ranker_*.yaml trains an evaluator,
# ranker_counter_*.yaml a counter
KINDS = {
    "gan": GANRunConfig,
    "latent_gan": LatentGANRunConfig,
    "ddpm": DDPMRunConfig,
    "vae": AutoencoderRunConfig,
    "ldm": LDMRunConfig,
    "latent_classifier": LatentClassifierRunConfig,
    "evaluator": EvaluatorRunConfig,
    "ranker": EvaluatorRunConfig,
    "counter": CounterRunConfig,
    "ranker_counter": CounterRunConfig,
    "distill": FewStepRunConfig,
    "shortcut": FewStepRunConfig,
}

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_load_and_round_trip(path, tmp_path):
    kind = KINDS[max((name for name in KINDS if path.name.startswith(name + "_")), key=len)]
    config = load_config(kind, path)
    if issubclass(kind, GANRunConfig) and "model" in yaml.safe_load(path.read_text()):
        config.validate()  # a file without a model section is for --init RUN, which gives the model settings
    copy = tmp_path / "copy.yaml"
    copy.write_text(dump_config(config))
    assert load_config(kind, copy) == config


def test_overrides_beat_the_file_and_accept_yaml_floats(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 0.1\n  batch_size: 8\n")
    config = load_config(DDPMRunConfig, path, ["optim.lr=5e-5", "model.channel_mults=[1,2]"])
    assert config.optim.lr == 5e-5 and config.optim.batch_size == 8 and config.model.channel_mults == (1, 2)


def test_a_section_keeps_the_defaults_its_parent_gives_it():
    # LDMRunConfig's model section defaults to a latent UNet (patch_size 1), AutoencoderRunConfig's loop section to
    # evaluating every 500 steps; setting another key of either section must not fall back to the plain defaults
    ldm = load_config(LDMRunConfig, overrides=["model.channels=16"])
    assert ldm.model.channels == 16 and ldm.model.patch_size == 1 and ldm.model.cross_attention
    autoencoder = load_config(AutoencoderRunConfig, overrides=["loop.max_minutes=1"])
    assert autoencoder.loop.max_minutes == 1 and autoencoder.loop.eval_every == 500


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.g_chanels=8"], "override 'model.g_chanels=8': unknown key 'g_chanels'"),
        (["model.g_channels=abc"], "override 'model.g_channels=abc': expected int"),
        (["model.g_channels=-5"], "model.g_channels: -5; every size must be a positive number"),
        (["model.label_dim=0"], "model.label_dim: 0; every size must be a positive number"),
    ],
)
def test_a_bad_override_is_named_as_the_override_not_the_file(overrides, message):
    with pytest.raises(CondgenError) as caught:
        load_config(GANRunConfig, CONFIGS[0].parent / "gan_cpu.yaml", overrides)
    assert message in str(caught.value) and "gan_cpu.yaml" not in str(caught.value)


@pytest.mark.parametrize(
    ("config", "key"),
    [(LDMRunConfig, "channel_mults"), (AutoencoderRunConfig, "channels"), (GANRunConfig, "d_channels")],
)
def test_a_config_file_with_a_size_that_is_not_positive_names_the_file_and_the_key(config, key, tmp_path):
    value = "[1, -2]" if key == "channel_mults" else "-5"
    path = tmp_path / "config.yaml"
    path.write_text(f"model:\n  {key}: {value}\n")
    with pytest.raises(CondgenError, match=rf"^{path}: model\.{key}: .*every size must be a positive number"):
        load_config(config, path)


@pytest.mark.parametrize(
    ("config", "overrides", "message"),
    [
        # 128 channels at 8x8 split over 3 heads (condgen.nn.blocks.Attention) would crash sampling
        (DDPMRunConfig, ["model.heads=3"], "model.heads: 3 does not divide the 128 channels of an attention layer"),
        (LDMRunConfig, ["model.channels=12", "model.heads=16"], "model.heads: 16 does not divide the 24 channels"),
        (LatentClassifierRunConfig, ["model.heads=5"], "model.heads: 5 does not divide the"),
        (DDPMRunConfig, ["model.dropout=-0.1"], "model.dropout: -0.1 is not in [0, 1)"),
        (DDPMRunConfig, ["model.dropout=1.0"], "model.dropout: 1.0 is not in [0, 1)"),
        (LDMRunConfig, ["model.dropout=.nan"], "model.dropout: nan is not in [0, 1)"),
    ],
)
def test_a_unet_whose_heads_or_dropout_cannot_work_is_refused_at_load_naming_the_key(config, overrides, message):
    with pytest.raises(CondgenError) as caught:
        load_config(config, overrides=overrides)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_a_config_file_with_heads_that_do_not_divide_an_attention_layer_names_the_file(tmp_path):
    path = tmp_path / "config.yaml"
    unet = "model:\n  channels: 12\n  channel_mults: [1, 2]\n  heads: 8\n  attention_resolutions: "
    path.write_text(unet + "[32]\n")  # the 12 channels at 32x32 attend; the 24-channel middle would take 8 heads
    with pytest.raises(CondgenError, match=rf"^{path}: model\.heads: 8 does not divide the 12 channels"):
        load_config(DDPMRunConfig, path)
    path.write_text(unet + "[16]\n")  # only 24-channel layers attend
    assert load_config(DDPMRunConfig, path).model.heads == 8
