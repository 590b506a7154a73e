"""Ctrl-C during a long call: the call stops at its next safe point and raises KeyboardInterrupt; an index run
leaves a committed, resumable index behind."""

import os
import signal
import threading
import time

import numpy as np
import pytest

import regionseek
from conftest import TINY


@pytest.fixture(autouse=True)
def python_handles_sigint():
    """Python's own Ctrl-C handler, as in a terminal: a process started in the background (CI, nohup) inherits
    SIGINT ignored, and Python then leaves it ignored."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def ctrl_c_after(seconds):
    timer = threading.Timer(seconds, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    return timer


def test_ctrl_c_stops_an_inversion_promptly(tiny_model, tiny_image, tiny_masks):
    masks = np.repeat(tiny_masks, 16, axis=0)
    started = time.perf_counter()
    tiny_model.invert(tiny_image, masks, size=128, steps=2, grad="direct")
    per_step = (time.perf_counter() - started) / 2
    steps = int(10.0 / per_step) + 10  # about ten seconds of work
    timer = ctrl_c_after(0.5)
    started = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        tiny_model.invert(tiny_image, masks, size=128, steps=steps, grad="direct")
    took = time.perf_counter() - started
    timer.join()
    assert took < 0.5 + 1.0 + 3 * per_step, (took, per_step)
    # The model is still usable.
    assert tiny_model.invert(tiny_image, tiny_masks, size=64, steps=1).shape == (2, 32)


def test_ctrl_c_leaves_a_resumable_index_with_every_region_once(coco128, small_spec, tmp_path):
    run = dict(
        coco=coco128 / "instances.json", pipeline=str(small_spec),
        model=regionseek.Model.load(str(TINY)), limit=48, progress=False,
    )
    reference = regionseek.index_photos(coco128 / "images", out=tmp_path / "whole", **run)
    seconds = reference["seconds"]
    out = tmp_path / "interrupted"
    timer = ctrl_c_after(seconds / 3)
    with pytest.raises(KeyboardInterrupt):
        regionseek.index_photos(coco128 / "images", out=out, **run)
    timer.join()
    partial = len(regionseek.Index.open(out))
    assert 0 < partial < reference["rows_total"], (partial, reference["rows_total"])
    resumed = regionseek.index_photos(coco128 / "images", out=out, **run)
    assert resumed["regions_already_indexed"] == partial
    assert resumed["rows_total"] == reference["rows_total"]
    keys = lambda ix: sorted(zip(*(ix.to_arrow().column(c).to_pylist() for c in ["image", "region_id"])))
    got = keys(regionseek.Index.open(out))
    assert len(got) == len(set(got)), "a region was indexed twice"
    assert got == keys(regionseek.Index.open(tmp_path / "whole"))
