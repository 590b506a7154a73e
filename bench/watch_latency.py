#!/usr/bin/env python3
"""`regionseek index --watch`: how long from a photo written into the watched folder to its rows being
searchable (committed to the index, which `serve` picks up on its next reload), over N changes.

Usage: python3 bench/watch_latency.py [--bin target/release/regionseek] [--changes 20] [--model random:vit-b-32]
Writes one JSON object (per-change latencies, median, p90) to stdout and to --out if given. Each change waits for
the previous run to finish (its report line) so that every latency is one sync's, not a queue's.
"""
import argparse, json, os, shutil, statistics, subprocess, sys, tempfile, threading, time, queue

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)


def manifest_rows(index):
    try:
        with open(os.path.join(index, "manifest.json")) as f:
            return json.load(f)["rows"]
    except (OSError, ValueError, KeyError):
        return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(root, "target/release/regionseek"))
    ap.add_argument("--changes", type=int, default=20)
    ap.add_argument("--model", default="random:vit-b-32")
    ap.add_argument("--out")
    a = ap.parse_args()
    shipped = sorted(
        os.path.join(root, "examples/photos", f)
        for f in os.listdir(os.path.join(root, "examples/photos"))
        if f.endswith(".jpg")
    )
    tmp = tempfile.mkdtemp(prefix="watch-latency-")
    photos, index = os.path.join(tmp, "photos"), os.path.join(tmp, "index")
    os.makedirs(photos)
    shutil.copy(shipped[0], os.path.join(photos, "start.jpg"))
    proc = subprocess.Popen(
        [a.bin, "index", photos, "--out", index, "--model", a.model, "--watch", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    reports = queue.Queue()
    threading.Thread(target=lambda: [reports.put(l) for l in proc.stdout], daemon=True).start()
    reports.get(timeout=600)  # the first run
    latencies = []
    for i in range(a.changes):
        source = shipped[i % len(shipped)]
        name = os.path.join(photos, f"new-{i:02d}.jpg")
        with open(source, "rb") as f:
            data = f.read()
        # Past the first dozen, the same pixels with one more byte after the JPEG's end: new content (a new
        # hash) that decodes the same.
        data += b"\0" * (i // len(shipped))
        before = manifest_rows(index)
        t0 = time.monotonic()
        with open(name + ".part", "wb") as f:
            f.write(data)
        os.rename(name + ".part", name)  # one event, a whole file: as a camera app or a sync client writes
        while manifest_rows(index) <= before:
            if time.monotonic() - t0 > 300:
                sys.exit(f"change {i}: not searchable after 300 s")
            time.sleep(0.01)
        latencies.append(time.monotonic() - t0)
        reports.get(timeout=600)  # the run that synced it is over
    proc.terminate()
    proc.wait(timeout=60)
    shutil.rmtree(tmp, ignore_errors=True)
    result = {
        "bench": "watch_latency",
        "model": a.model,
        "changes": len(latencies),
        "median_s": statistics.median(latencies),
        "p90_s": sorted(latencies)[int(0.9 * (len(latencies) - 1))],
        "max_s": max(latencies),
        "latencies_s": [round(x, 3) for x in latencies],
        "note": "from the file's rename into the folder to the commit of its quick rows; includes the 0.5 s quiet "
                "period, the run's start (folder scan, sync) and one forward",
    }
    text = json.dumps(result)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
