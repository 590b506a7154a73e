"""Shared fixtures: the repository's tiny CLIP fixture (the one the Rust parity tests use), the CLI binary built
from the same sources, and a small COCO128 index built once per session."""

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import regionseek

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "tests" / "fixtures" / "tiny"
MASK_FILES = ["mask_rect.png", "mask_ellipse.png"]


def shared_data():
    return Path(os.environ.get("REGIONSEEK_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def cli():
    """The `regionseek` binary built from this checkout (python/test.sh builds it and sets REGIONSEEK_BIN)."""
    path = Path(os.environ.get("REGIONSEEK_BIN", ROOT / "target" / "debug" / "regionseek"))
    if not path.exists():
        pytest.fail(f"the CLI is not built at {path}: run python/test.sh (or set REGIONSEEK_BIN)")

    def run(*args):
        done = subprocess.run([str(path), *map(str, args)], capture_output=True, text=True)
        assert done.returncode == 0, f"regionseek {' '.join(map(str, args))}: {done.stderr}"
        return done.stdout

    return run


@pytest.fixture(scope="session")
def tiny_model():
    return regionseek.Model.load(str(TINY))


@pytest.fixture(scope="session")
def tiny_image():
    return np.asarray(Image.open(TINY / "image.png").convert("RGB"))


def read_mask(path):
    """The CLI's reading of a 0/255 mask PNG (the brightest channel above half of its maximum)."""
    a = np.asarray(Image.open(path).convert("RGB")).max(axis=2)
    return a > a.max() // 2


@pytest.fixture(scope="session")
def tiny_masks():
    return np.stack([read_mask(TINY / f) for f in MASK_FILES])


@pytest.fixture(scope="session")
def coco128():
    data = shared_data() / "coco128"
    if not (data / "instances.json").exists():
        pytest.skip(f"COCO128 not found under {data} (set REGIONSEEK_DATA)")
    return data


@pytest.fixture(scope="session")
def small_spec(tmp_path_factory):
    """gt-masks at the tiny model's scale (64 px, 3 steps): the pipeline as shipped, quick enough for tests."""
    text = (ROOT / "pipelines" / "gt-masks.toml").read_text()
    text = text.replace('name = "gt-masks"', 'name = "gt-masks-small"')
    text = text.replace("size = 448", "size = 64").replace("steps = 10", "steps = 3")
    path = tmp_path_factory.mktemp("spec") / "gt-masks-small.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="session")
def coco_index(coco128, small_spec, tmp_path_factory):
    out = tmp_path_factory.mktemp("index") / "coco128"
    report = regionseek.index_photos(
        coco128 / "images",
        coco=coco128 / "instances.json",
        pipeline=str(small_spec),
        out=out,
        model=str(TINY),
        limit=12,
        progress=False,
    )
    return out, report
