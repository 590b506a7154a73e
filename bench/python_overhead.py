"""The Python binding's overhead (issue 18): `Model.invert` from Python against the library call it wraps
(`invert_image`, timed inside Rust by `regionseek._native._bench_invert`), on the same photo and masks, in the
same process, alternating so that both see the same machine state. Prints one JSON line.

usage: python bench/python_overhead.py [--model random:vit-b-16] [--masks 10] [--size 448] [--repeats 5]
(with the release wheel: `pip install ./python`; the dev wheel of python/test.sh measures an unoptimised crate)
"""
import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image

import regionseek
from regionseek import _native

ROOT = Path(__file__).resolve().parents[1]


def masks_for(h, w, n):
    """n ellipses of different sizes and places: regions of ordinary size, none empty."""
    yy, xx = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
        ry, rx = rng.uniform(0.08, 0.3) * h, rng.uniform(0.08, 0.3) * w
        out.append(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1)
    return np.stack(out)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="random:vit-b-16")
    p.add_argument("--image", default=str(ROOT.parent / "shared/data/coco128/images/000000000009.jpg"))
    p.add_argument("--masks", type=int, default=10)
    p.add_argument("--size", type=int, default=448)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()
    model = regionseek.Model.load(a.model)
    image = np.asarray(Image.open(a.image).convert("RGB"))
    masks = masks_for(image.shape[0], image.shape[1], a.masks)
    model.invert(image, masks, size=a.size, steps=a.steps)  # warm-up: allocations, thread pools
    py_s, rust_s = [], []
    for _ in range(a.repeats):
        t = time.perf_counter()
        model.invert(image, masks, size=a.size, steps=a.steps)
        py_s.append(time.perf_counter() - t)
        rust_s += _native._bench_invert(model, image, masks, size=a.size, steps=a.steps, repeats=1)
    py_med, rust_med = statistics.median(py_s), statistics.median(rust_s)
    print(json.dumps({
        "bench": "python_overhead", "model": model.id, "masks": a.masks, "size": a.size, "steps": a.steps,
        "image": os.path.basename(a.image), "repeats": a.repeats,
        "python_s": py_s, "rust_s": rust_s, "python_median_s": py_med, "rust_median_s": rust_med,
        "overhead_pct": 100.0 * (py_med / rust_med - 1.0),
    }))


if __name__ == "__main__":
    main()
