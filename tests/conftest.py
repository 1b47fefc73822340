import json
from pathlib import Path

import pytest

from condgen.data.synth import synthesize_dataset

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


def edit_json(path: Path, change) -> None:
    value = json.loads(path.read_text())
    path.write_text(json.dumps(change(value)))
