#!/usr/bin/env python3
"""What `regionseek serve` costs under misbehaving clients (issue 30's figures), one JSON object on stdout.

- renders: peak RSS of the server while 8 clients ask at once for `overlay.jpg?size=64` of one region of a
  48-megapixel JPEG (COCO128's first photo scaled to 8000x6000 by Pillow), and how long they took;
- flood: 4 clients each POST 256 distinct long query texts with `--timeout-s 2` (so they time out), then the
  latency of one fresh query;
- sigterm: seconds from SIGTERM to exit with 200 connections that sent half a request head.

Usage: bench/serve_hostile.py [--bin target/release/regionseek] [--data ../shared/data] [--label NAME]
Pillow comes from a venv the script makes under target/ (PyPI). Give --bin of an older build to compare.
"""
import argparse
import concurrent.futures as cf
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pillow_python():
    venv = os.path.join(ROOT, "target", "bench-pillow-venv")
    py = os.path.join(venv, "bin", "python")
    if not os.path.exists(py):
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        subprocess.run([py, "-m", "pip", "install", "--quiet", "pillow"], check=True)
    return py


def make_photo(data, out_dir):
    """A 48 MP JPEG and a COCO file with one box-shaped region on it."""
    coco = json.load(open(os.path.join(data, "coco128", "instances.json")))
    first = coco["images"][0]
    src = os.path.join(data, "coco128", "images", first["file_name"])
    big = os.path.join(out_dir, "images", "big.jpg")
    os.makedirs(os.path.dirname(big), exist_ok=True)
    subprocess.run(
        [pillow_python(), "-c",
         "import sys; from PIL import Image; Image.open(sys.argv[1]).convert('RGB')"
         ".resize((8000, 6000), Image.BICUBIC).save(sys.argv[2], quality=90)", src, big],
        check=True)
    x0, y0, x1, y1 = 2000, 1500, 5000, 4000
    doc = {
        "images": [{"id": 1, "file_name": "big.jpg", "width": 8000, "height": 6000}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": (x1 - x0) * (y1 - y0),
                         "bbox": [x0, y0, x1 - x0, y1 - y0],
                         "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]]}],
        "categories": [{"id": 1, "name": "thing"}],
    }
    path = os.path.join(out_dir, "big.json")
    json.dump(doc, open(path, "w"))
    return os.path.join(out_dir, "images"), path


def start(binary, index, *extra):
    p = subprocess.Popen([binary, "serve", index, "--addr", "127.0.0.1:0", "--json", *extra],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = p.stdout.readline()
    return p, json.loads(line)["listening"]["addr"]


def kib(pid, field):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return None


def get(addr, path, timeout=120):
    t = time.perf_counter()
    try:
        with urllib.request.urlopen(f"http://{addr}{path}", timeout=timeout) as r:
            r.read()
            status = r.status
    except urllib.error.HTTPError as e:
        status = e.code
    return status, time.perf_counter() - t


def post(addr, body, timeout=120):
    req = urllib.request.Request(f"http://{addr}/api/search", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def renders(binary, index, images):
    p, addr = start(binary, index, "--images", images)
    try:
        before = kib(p.pid, "VmRSS")
        # Forget the peak of the model's start, so that VmHWM is the renders' own peak.
        with open(f"/proc/{p.pid}/clear_refs", "w") as f:
            f.write("5")
        with cf.ThreadPoolExecutor(8) as pool:
            t = time.perf_counter()
            answers = list(pool.map(lambda _: get(addr, "/api/regions/0/overlay.jpg?size=64"), range(8)))
            wall = time.perf_counter() - t
        return {"clients": 8, "statuses": sorted({a[0] for a in answers}), "wall_s": round(wall, 3),
                "rss_before_mb": round(before / 1024, 1), "peak_rss_mb": round(kib(p.pid, "VmHWM") / 1024, 1)}
    finally:
        p.kill()
        p.wait()


def flood(binary, index):
    p, addr = start(binary, index, "--timeout-s", "2")
    try:
        def one(n):
            texts = [f"flood {n} text {i}: " + "a photo of many things " * 8 for i in range(256)]
            return post(addr, {"queries": texts, "k": 1})
        with cf.ThreadPoolExecutor(4) as pool:
            statuses = list(pool.map(one, range(4)))
        status, took = get(addr, "/api/search?q=a+red+bicycle&k=3")
        return {"flood_statuses": statuses, "fresh_status": status, "fresh_query_s": round(took, 3)}
    finally:
        p.kill()
        p.wait()


def sigterm(binary, index):
    p, addr = start(binary, index)
    host, port = addr.rsplit(":", 1)
    socks = []
    for _ in range(200):
        s = socket.create_connection((host, int(port)))
        s.sendall(b"GET /api/stats HTTP/1.1\r\nHost: localh")
        socks.append(s)
    time.sleep(0.5)
    t = time.perf_counter()
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout=60)
        took = round(time.perf_counter() - t, 3)
    except subprocess.TimeoutExpired:
        took = None
        p.kill()
        p.wait()
    for s in socks:
        s.close()
    return {"stalled_connections": 200, "exit_s": took, "exit_code": p.returncode}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "regionseek"))
    ap.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data"))
    ap.add_argument("--label", default="this build")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=os.path.join(ROOT, "target")) as tmp:
        images, coco = make_photo(a.data, tmp)
        spec = os.path.join(tmp, "crop.toml")
        open(spec, "w").write('name = "crop"\nstages = ["decode", "masks", "embed", "index"]\n'
                              '[embed]\nmethod = "masked-crop"\n')
        index = os.path.join(tmp, "idx")
        subprocess.run([a.bin, "index", images, "--coco", coco, "--pipeline", spec, "--model", "random:vit-b-32",
                        "--out", index, "--json"], check=True, stdout=subprocess.DEVNULL)
        out = {"label": a.label, "bin": a.bin, "machine": f"{os.cpu_count()} cores",
               "date": time.strftime("%Y-%m-%d"),
               "renders_48mp": renders(a.bin, index, images), "flood": flood(a.bin, index),
               "sigterm": sigterm(a.bin, index)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
