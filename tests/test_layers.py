"""The direction of dependencies: data <- nn <- {evaluate, diffusion, gan} <- latent <- fewstep; train and evaluate
know no model family; the autoencoders know neither diffusion nor GANs (only the latent models built on them do);
only the command line's top (cli, generate, launch, demo) knows every family. Each check imports a package's
modules in a fresh interpreter, as a newcomer's import would, and lists what else of condgen came with them."""

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import condgen

PACKAGE = Path(condgen.__file__).parent
FAMILIES = {"diffusion", "gan", "latent", "fewstep"}
TOP = {"cli", "parser", "generate", "launch", "demo", "kinds", "export", "pipeline", "serve", "report"}

# package -> the condgen packages and top-level modules it must never pull in
FORBIDDEN = {
    "data": FAMILIES | {"nn", "train", "evaluate", "viz"} | TOP,
    "nn": FAMILIES | {"train", "evaluate", "viz"} | TOP,
    "evaluate": FAMILIES | {"train"} | TOP,
    "viz": FAMILIES | {"nn", "train", "evaluate"} | TOP,
    "train": FAMILIES | {"nn"} | TOP,
    "diffusion": {"gan", "latent", "fewstep"} | TOP,
    "gan": {"diffusion", "latent", "fewstep"} | TOP,
    "latent": {"fewstep"} | TOP,
    "fewstep": {"gan"} | TOP,
}
# the autoencoders and their latents, beneath the latent diffusion and latent GAN modules beside them
AUTOENCODER_MODULES = ["autoencoder", "latents", "run", "trainer"]


def imported_by(package: str, only: list[str] | None = None) -> set[str]:
    """The condgen packages and top-level modules loaded after importing every module of ``package`` (or those of
    ``only``)."""
    names = only or [m.name for m in pkgutil.iter_modules([str(PACKAGE / package)])]
    modules = [f"condgen.{package}.{name}" for name in names]
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "print(json.dumps(sorted({m.split('.')[1] for m in sys.modules if m.startswith('condgen.')})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(json.loads(out))


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_package_imports_nothing_above_it(package):
    assert not imported_by(package) & FORBIDDEN[package]


def test_the_autoencoders_know_no_generator_family():
    assert not imported_by("latent", AUTOENCODER_MODULES) & ({"diffusion", "gan"} | TOP)


def test_the_command_line_parser_loads_no_torch_and_no_model_code():
    code = (
        "import json, sys\nimport condgen.parser\n"
        "print(json.dumps(['torch' in sys.modules, sorted(m for m in sys.modules if m.startswith('condgen.'))]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    torch_loaded, modules = json.loads(out)
    assert not torch_loaded
    assert set(modules) <= {
        "condgen.data",
        "condgen.data.vocabulary",
        "condgen.diffusion",
        "condgen.diffusion.options",
        "condgen.diffusion.presets",  # the sampler presets, named in the help texts
        "condgen.errors",
        "condgen.gan",
        "condgen.gan.options",  # the GAN options' allowed values, for the help texts
        "condgen.kinds",
        "condgen.parser",
        "condgen.pretrained",  # the shipped models' names, for the help texts
        "condgen.serve",
        "condgen.serve.requests",  # the largest seed, which the page and the command line share
    }


def test_every_kind_in_the_table_names_a_config_a_task_and_a_loader_that_exist():
    from condgen.kinds import KINDS, _resolve

    for kind in KINDS.values():
        config = kind.config_class()()
        assert hasattr(config, "loop") and hasattr(config, "device"), kind.name
        assert callable(_resolve(kind.task)), kind.name
        assert bool(kind.load) == (kind.generation is not None), kind.name
        if kind.load:
            assert callable(_resolve(kind.load)), kind.name
