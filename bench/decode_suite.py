#!/usr/bin/env python3
"""Per-format parity with Pillow 13 on public decoder test suites: every JPEG, PNG, GIF, WebP, TIFF, BMP, HEIC and
AVIF file in the test images of Pillow 13.0.0's and pillow-heif 1.9.0's source distributions (PyPI), decoded by
the reference's readers (`Image.open(p).convert("RGB")`, pillow-heif registered) and by `regionseek decode`.

Each file is one of: identical (same size, same bytes), within 1 (same size, no byte more than 1 level apart),
differs (the largest difference given), size differs, refused by regionseek (its reason), decoded by regionseek
but refused by Pillow, or refused by both.

Usage: python bench/decode_suite.py [--bin target/release/regionseek] [--cache target/decode-suite] [--out F]
Needs pillow==13.0.0 and pillow-heif==1.9.0 (tests/fixtures/requirements.txt) and network access to PyPI the
first time (the sdists are kept in --cache).
"""
import argparse, collections, hashlib, json, os, shutil, subprocess, sys, tarfile, tempfile

import numpy as np
import pillow_heif
from PIL import Image

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)
SDISTS = [("pillow", "13.0.0", "Tests/images/"), ("pillow_heif", "1.9.0", "tests/images/")]
FORMATS = {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "gif": "GIF", "webp": "WebP", "tif": "TIFF",
           "tiff": "TIFF", "bmp": "BMP", "heic": "HEIC", "heif": "HEIC", "hif": "HEIC", "avif": "AVIF"}


def suite_files(cache):
    """(name, path) of every test image of a format above, from the sdists (downloaded once into cache)."""
    os.makedirs(cache, exist_ok=True)
    files = []
    for package, version, images in SDISTS:
        tar = next((os.path.join(cache, f) for f in os.listdir(cache)
                    if f.lower().startswith(f"{package.replace('_', '-')}-{version}".lower().replace("-", "_"))
                    or f.lower().startswith(f"{package}-{version}".lower())), None)
        if tar is None:
            subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-binary", ":all:",
                            "--no-deps", f"{package}=={version}", "-d", cache], check=True)
            tar = next(os.path.join(cache, f) for f in os.listdir(cache) if f.endswith(".tar.gz")
                       and version in f and package.split("_")[0] in f.lower().replace("-", "_"))
        out = os.path.join(cache, f"{package}-{version}")
        if not os.path.isdir(out):
            with tarfile.open(tar) as t:
                members = [m for m in t.getmembers() if images in m.name and m.isfile()]
                t.extractall(out, members=members, filter="data")
        for dirpath, _, names in os.walk(out):
            for n in sorted(names):
                ext = n.rsplit(".", 1)[-1].lower()
                if ext in FORMATS:
                    p = os.path.join(dirpath, n)
                    files.append((f"{package}:{os.path.relpath(p, out).split(images, 1)[-1]}", p))
    return sorted(files)


def pillow_rgb(path):
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB")), None
    except Exception as e:  # the reference's refusal, whatever it is
        return None, f"{type(e).__name__}: {e}"[:160]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(root, "target/release/regionseek"))
    ap.add_argument("--cache", default=os.path.join(root, "target/decode-suite"))
    ap.add_argument("--out")
    a = ap.parse_args()
    pillow_heif.register_heif_opener()
    files = suite_files(a.cache)
    tmp = tempfile.mkdtemp(prefix="decode-suite-")
    flat = []
    for i, (name, path) in enumerate(files):
        dst = os.path.join(tmp, f"{i:04d}-{os.path.basename(path)}")
        shutil.copyfile(path, dst)
        flat.append(dst)
    rgb_dir = os.path.join(tmp, "rgb")
    ours = {}
    for start in range(0, len(flat), 200):
        r = subprocess.run([a.bin, "decode", "--json", "--rgb-out", rgb_dir, *flat[start:start + 200]],
                           capture_output=True, text=True)
        if r.returncode not in (0, 2):
            sys.exit(f"regionseek decode failed ({r.returncode}): {r.stderr[-2000:]}")
        for line in r.stdout.splitlines():
            row = json.loads(line)
            ours[row["file"]] = row
    rows, summary = [], collections.defaultdict(collections.Counter)
    for (name, _), dst in zip(files, flat):
        fmt = FORMATS[name.rsplit(".", 1)[-1].lower()]
        theirs, their_error = pillow_rgb(dst)
        mine = ours.get(dst, {"error": "no answer"})
        row = {"file": name, "format": fmt}
        if "error" in mine and theirs is None:
            row["result"] = "refused by both"
            row["regionseek"], row["pillow"] = mine["error"].split(": ", 1)[-1], their_error
        elif "error" in mine:
            row["result"] = "refused by regionseek"
            row["regionseek"] = mine["error"].split(dst + ": ", 1)[-1]
        elif theirs is None:
            row["result"] = "decoded, Pillow refuses"
            row["pillow"] = their_error
        else:
            h, w = theirs.shape[:2]
            if (mine["width"], mine["height"]) != (w, h):
                row["result"] = "size differs"
                row["sizes"] = {"regionseek": [mine["width"], mine["height"]], "pillow": [w, h]}
            elif mine["sha256"] == hashlib.sha256(theirs.tobytes()).hexdigest():
                row["result"] = "identical"
            else:
                with open(os.path.join(rgb_dir, os.path.basename(dst) + ".rgb"), "rb") as f:
                    m = np.frombuffer(f.read(), np.uint8).reshape(h, w, 3)
                diff = int(np.abs(m.astype(int) - theirs.astype(int)).max())
                row["result"] = "within 1" if diff <= 1 else "differs"
                row["max_difference"] = diff
                row["pixels_differing"] = float((np.abs(m.astype(int) - theirs.astype(int)).max(-1) > 0).mean())
        summary[fmt][row["result"]] += 1
        rows.append(row)
    shutil.rmtree(tmp)
    columns = ["identical", "within 1", "differs", "size differs", "refused by regionseek",
               "decoded, Pillow refuses", "refused by both"]
    print("| format | files | " + " | ".join(columns) + " |")
    print("|---|---|" + "---|" * len(columns))
    for fmt in ["JPEG", "PNG", "GIF", "WebP", "TIFF", "BMP", "HEIC", "AVIF"]:
        c = summary.get(fmt, collections.Counter())
        print(f"| {fmt} | {sum(c.values())} | " + " | ".join(str(c[k]) for k in columns) + " |")
    for row in rows:
        if row["result"] not in ("identical", "refused by both"):
            print(json.dumps(row))
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"pillow": Image.__version__ if hasattr(Image, "__version__") else "13.0.0",
                       "pillow_heif": pillow_heif.__version__, "sources": [f"{p}=={v} sdist" for p, v, _ in SDISTS],
                       "summary": {k: dict(v) for k, v in summary.items()}, "files": rows}, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
