import json
import shutil
from pathlib import Path

import pytest
import torch

from condgen.data.labels import LabelCodec
from condgen.data.synth import synthesize_dataset
from condgen.evaluate.counter import DensityCounter, save_counter
from condgen.evaluate.evaluator import build_resnet18_evaluator, save_evaluator

REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "iclevr"


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Each test gets its own decode cache, so no test sees another's cached images."""
    monkeypatch.setenv("CONDGEN_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="session")
def synth_template(tmp_path_factory) -> Path:
    """A small rendered dataset (30 images, seed 0), rendered once per session; copy it before changing it."""
    out = tmp_path_factory.mktemp("synth") / "data"
    synthesize_dataset(out, n=30, seed=0, workers=1, progress=False)
    return out


@pytest.fixture
def dataset(synth_template, tmp_path) -> Path:
    """A private copy of the small rendered dataset that a test may damage."""
    import shutil

    target = tmp_path / "data"
    shutil.copytree(synth_template, target)
    return target


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for a module's tests: tiny models run fastest so, as two threads spend more time meeting
    than working, and far more on a machine busy with other work."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def evaluator_file(tmp_path) -> Path:
    """A randomly initialised evaluator saved in our format: enough for the plumbing of scoring."""
    torch.manual_seed(0)
    path = tmp_path / "evaluator.safetensors"
    save_evaluator(build_resnet18_evaluator(24), LabelCodec.iclevr(), path)
    return path


def tiny_counter(path: Path, seed: int = 0, wild: bool = False) -> Path:
    """A random object counter of condgen's own (never the shipped one); a ``wild`` one counts images far apart
    (a fresh one finds about the same few objects in every image)."""
    torch.manual_seed(seed)
    counter = DensityCounter(24, width=4)
    if wild:  # weights that keep the signal's scale through every layer
        for layer in counter.modules():
            if isinstance(layer, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(layer.weight)
        torch.nn.init.zeros_(counter.density.bias)
    save_counter(counter, LabelCodec.iclevr(), path)
    return path


def tiny_ranker(path: Path, seed: int = 2) -> Path:
    """A random image ranker of condgen's own: an evaluator-shaped ResNet18 of width 8."""
    torch.manual_seed(seed)
    save_evaluator(build_resnet18_evaluator(24, width=8), LabelCodec.iclevr(), path)
    return path


def edit_json(path: Path, change) -> None:
    value = json.loads(path.read_text())
    path.write_text(json.dumps(change(value)))


def chromium_paths() -> tuple[str | None, str | None]:
    """The paths of a chromium and its driver, or None for each that is not installed."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    return browser, shutil.which("chromedriver")


def no_browser() -> str:
    """Why the browser test cannot run here, or "" when it can."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "the browser test needs selenium (pip install -e '.[test]')"
    if None in chromium_paths():
        return "no chromium and chromedriver found (Debian: apt-get install chromium chromium-driver)"
    return ""


def headless_chromium():
    """A headless chromium driven by selenium, keeping the page's console messages."""
    from selenium import webdriver

    browser, driver = chromium_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver))


SERVED_TINY = {
    "ddpm": ["model.channels=16", "model.channel_mults=[1,2]", "model.attention_resolutions=[16]", "model.heads=2",
             "diffusion.num_steps=20", "sample.steps=3"],
    "gan": ["model.g_channels=8", "model.d_channels=8", "model.noise_dim=16", "model.label_dim=16"],
}  # fmt: skip


@pytest.fixture(scope="session")
def served_runs(tmp_path_factory, synth_template) -> Path:
    """A tiny ddpm run and a tiny gan run (:data:`SERVED_TINY`), trained once per session for the page's tests under
    the returned folder; copy one before changing it."""
    root = tmp_path_factory.mktemp("served")
    train_tiny_runs(root, synth_template, SERVED_TINY)
    return root


def train_tiny_runs(root: Path, data: Path, settings: dict[str, list[str]]) -> Path:
    """Trains one run per kind of ``settings`` (kind -> config overrides) into ``root``/KIND, two steps of 4 images
    each, scored by a random evaluator saved as ``root``/evaluator.safetensors; returns that evaluator's path."""
    from condgen.cli import main

    torch.manual_seed(0)
    scorer = root / "evaluator.safetensors"
    save_evaluator(build_resnet18_evaluator(24), LabelCodec.iclevr(), scorer)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CONDGEN_CACHE_DIR", str(root / "cache"))
        for kind, overrides in settings.items():
            argv = ["train", kind, "--data", str(data), "--out", str(root / kind), "--evaluator", str(scorer)]
            assert main([*argv, *overrides, "optim.batch_size=4", "loop.steps=2", "device=cpu"]) == 0
    return scorer
