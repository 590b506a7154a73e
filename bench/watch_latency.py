#!/usr/bin/env python3
"""`regionseek index --watch`: how long from a photo written into the watched folder to its rows being
searchable, over N changes: committed to the index (what a new reader sees), and served (`serve` on the same index,
with its default 500 ms reload, reports the new rows in /api/stats).

Usage: python3 bench/watch_latency.py [--bin target/release/regionseek] [--changes 20] [--model random:vit-b-32]
Writes one JSON object (per-change latencies, median, p90) to stdout and to --out if given. Each change waits for
the previous run to finish (its report line) so that every latency is one sync's, not a queue's.
"""
import argparse, json, os, urllib.request, shutil, statistics, subprocess, sys, tempfile, threading, time, queue

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)


def manifest(index):
    """(rows, generation) of the index's last commit."""
    try:
        with open(os.path.join(index, "manifest.json")) as f:
            m = json.load(f)
        return m["rows"], m["generation"]
    except (OSError, ValueError, KeyError):
        return 0, 0


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
    # The starting photo must differ from every change (a copy of an indexed photo adds no rows: same content hash).
    with open(shipped[0], "rb") as f, open(os.path.join(photos, "start.jpg"), "wb") as g:
        g.write(f.read() + b"start")
    proc = subprocess.Popen(
        [a.bin, "index", photos, "--out", index, "--model", a.model, "--watch", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    reports = queue.Queue()
    threading.Thread(target=lambda: [reports.put(l) for l in proc.stdout], daemon=True).start()
    reports.get(timeout=600)  # the first run
    server = subprocess.Popen(
        [a.bin, "serve", index, "--addr", "127.0.0.1:0", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    address = json.loads(server.stdout.readline())["listening"]["addr"]

    def served_generation():
        with urllib.request.urlopen(f"http://{address}/api/stats", timeout=10) as r:
            return json.load(r)["index"]["generation"]

    latencies, served_latencies = [], []
    for i in range(a.changes):
        source = shipped[i % len(shipped)]
        name = os.path.join(photos, f"new-{i:02d}.jpg")
        with open(source, "rb") as f:
            data = f.read()
        # Past the first dozen, the same pixels with one more byte after the JPEG's end: new content (a new
        # hash) that decodes the same.
        data += b"\0" * (i // len(shipped))
        before, _ = manifest(index)
        t0 = time.monotonic()
        with open(name + ".part", "wb") as f:
            f.write(data)
        os.rename(name + ".part", name)  # one event, a whole file: as a camera app or a sync client writes
        while (committed := manifest(index))[0] <= before:
            if time.monotonic() - t0 > 300:
                sys.exit(f"change {i}: not searchable after 300 s")
            time.sleep(0.01)
        latencies.append(time.monotonic() - t0)
        while served_generation() < committed[1]:
            if time.monotonic() - t0 > 300:
                sys.exit(f"change {i}: not served after 300 s")
            time.sleep(0.01)
        served_latencies.append(time.monotonic() - t0)
        reports.get(timeout=600)  # the run that synced it is over
    for p in (proc, server):
        p.terminate()
        p.wait(timeout=60)
    shutil.rmtree(tmp, ignore_errors=True)
    result = {
        "bench": "watch_latency",
        "model": a.model,
        "changes": len(latencies),
        "median_s": statistics.median(latencies),
        "p90_s": sorted(latencies)[int(0.9 * (len(latencies) - 1))],
        "max_s": max(latencies),
        "latencies_s": [round(x, 3) for x in latencies],
        "served_median_s": statistics.median(served_latencies),
        "served_p90_s": sorted(served_latencies)[int(0.9 * (len(served_latencies) - 1))],
        "served_latencies_s": [round(x, 3) for x in served_latencies],
        "note": "from the file's rename into the folder to the commit of its quick rows; includes the 0.5 s quiet "
                "period, the run's start (folder scan, sync) and one forward; served_*: until `serve` on the index reports the "
                "new rows (its reload checks every 500 ms)",
    }
    text = json.dumps(result)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
