#!/usr/bin/env python3
"""HEIC and AVIF decode throughput: `regionseek bench-decode` against the reference's readers in the same sitting
(pillow-heif 1.9 for HEIC, Pillow 13's AVIF plugin), one thread each, on the same files held in memory.

The files are made from COCO128 photos (as found, ~0.3 MP) and from a few of them scaled to a phone's 12 MP
(4032x3024), written by pillow-heif (x265, quality 80) and Pillow (aom, quality 75).

Usage: python bench/decode_heif.py [--bin target/release/regionseek] [--n 32] [--phone 4] [--out F]
Needs pillow==13.0.0 and pillow-heif==1.9.0 (tests/fixtures/requirements.txt) in the Python that runs it.
"""
import argparse, io, json, os, subprocess, sys, tempfile, time

import pillow_heif
from PIL import AvifImagePlugin, Image

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)


def pillow_mp_per_s(folder, passes):
    blobs = [open(os.path.join(folder, f), "rb").read() for f in sorted(os.listdir(folder))]
    best, pixels = float("inf"), 0
    for _ in range(passes):
        pixels = 0
        t = time.perf_counter()
        for b in blobs:
            im = Image.open(io.BytesIO(b)).convert("RGB")
            pixels += im.width * im.height
        best = min(best, time.perf_counter() - t)
    return {"megapixels": pixels / 1e6, "seconds": best, "megapixels_per_s": pixels / 1e6 / best,
            "photos_per_s": len(blobs) / best}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(root, "target/release/regionseek"))
    ap.add_argument("--photos", default=os.path.join(root, "..", "shared", "data", "coco128", "images"))
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--phone", type=int, default=4)
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--out")
    a = ap.parse_args()
    pillow_heif.register_heif_opener()
    pillow_heif.options.DECODE_THREADS = 1
    AvifImagePlugin.DEFAULT_MAX_THREADS = 1
    sources = sorted(f for f in os.listdir(a.photos) if f.endswith(".jpg"))[: a.n]
    tmp = tempfile.mkdtemp(prefix="decode-heif-")
    sets = {}
    for fmt, ext, kw in [("HEIF", "heic", {"quality": 80}), ("AVIF", "avif", {"quality": 75})]:
        for kind, count, size in [("coco", a.n, None), ("phone-12mp", a.phone, (4032, 3024))]:
            folder = os.path.join(tmp, f"{ext}-{kind}")
            os.makedirs(folder)
            for f in sources[:count]:
                im = Image.open(os.path.join(a.photos, f)).convert("RGB")
                if size:
                    im = im.resize(size, Image.Resampling.BICUBIC)
                im.save(os.path.join(folder, f[:-4] + "." + ext), format=fmt, **kw)
            sets[f"{ext}-{kind}"] = folder
    rows = []
    for name, folder in sets.items():
        out = subprocess.run([a.bin, "bench-decode", folder, "--passes", str(a.passes)], check=True,
                             capture_output=True, text=True).stdout
        ours = next(json.loads(l) for l in out.splitlines() if json.loads(l)["decoder"] == "regionseek")
        theirs = pillow_mp_per_s(folder, a.passes)
        row = {"set": name, "photos": len(os.listdir(folder)), "threads": 1,
               "regionseek_mp_per_s": round(ours["megapixels_per_s"], 2), "regionseek_failed": ours["failed"],
               "pillow_mp_per_s": round(theirs["megapixels_per_s"], 2),
               "ratio": round(ours["megapixels_per_s"] / theirs["megapixels_per_s"], 3),
               "pillow": Image.__version__ if hasattr(Image, "__version__") else None,
               "pillow_heif": pillow_heif.__version__, "libheif_pillow_heif": pillow_heif.libheif_version()}
        print(json.dumps(row), flush=True)
        rows.append(row)
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(), "rows": rows}, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
