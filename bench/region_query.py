#!/usr/bin/env python3
"""Query by example region through `serve`: latency of one region query (cold: the first, which loads the vision
tower; warm: the next ones), split into the inversion (`region.embed_ms`) and the search (`search_ms`), for the
random ViT-B/32 and ViT-B/16 at the reference's settings (448 px, 10 steps); then 8 concurrent region queries
against a server started with `--max-concurrent 2` (answered, or refused with 503/408), the server's peak
memory, and text queries' p50 alone and under that load.

Usage: python3 bench/region_query.py [--bin target/release/regionseek] [--out FILE]
Writes one JSON object to stdout (and to --out).
"""
import argparse, json, os, statistics, subprocess, sys, tempfile, threading, time, urllib.request, uuid

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)
photos = os.path.join(root, "examples/photos")
BOXES = [
    ("000000000194.jpg", [183, 69, 366, 137]),
    ("000000000194.jpg", [20, 200, 300, 470]),
    ("000000000450.jpg", [400, 100, 600, 400]),
    ("000000000450.jpg", [0, 0, 320, 240]),
]


def build_index(binary, model, out, tmp):
    boxes = os.path.join(tmp, "boxes.json")
    with open(boxes, "w") as f:
        json.dump([{"image": i, "box": b, "id": f"b{n}"} for n, (i, b) in enumerate(BOXES)], f)
    subprocess.run([binary, "index", photos, "--boxes", boxes, "--model", model, "--out", out, "--json"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def serve(binary, index, *extra):
    p = subprocess.Popen([binary, "serve", index, "--addr", "127.0.0.1:0", "--json", "--images", photos, *extra],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    addr = json.loads(p.stdout.readline())["listening"]["addr"]
    return p, addr


def region_query(addr, image, box, k=10):
    boundary = uuid.uuid4().hex
    with open(os.path.join(photos, image), "rb") as f:
        data = f.read()
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{image}\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode() + data + (
        f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"box\"\r\n\r\n{','.join(map(str, box))}\r\n"
        f"--{boundary}--\r\n").encode()
    req = urllib.request.Request(f"http://{addr}/api/search/region?k={k}", data=body, method="POST",
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    t = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            answer = json.load(r)
            return 200, answer, time.monotonic() - t
    except urllib.error.HTTPError as e:
        return e.code, json.load(e), time.monotonic() - t


def text_query(addr, text):
    t = time.monotonic()
    with urllib.request.urlopen(f"http://{addr}/api/search?q={urllib.parse.quote(text)}&k=10", timeout=300) as r:
        json.load(r)
    return time.monotonic() - t


def peak_rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024


def latency(binary, model, tmp, warm=8):
    index = os.path.join(tmp, model.replace(":", "-"))
    build_index(binary, model, index, tmp)
    server, addr = serve(binary, index)
    try:
        runs = []
        for n in range(warm + 1):
            image, box = BOXES[n % len(BOXES)]
            status, a, wall = region_query(addr, image, box)
            assert status == 200, a
            runs.append({"wall_ms": wall * 1e3, "embed_ms": a["region"]["embed_ms"], "search_ms": a["search_ms"]})
        cold, rest = runs[0], runs[1:]
        return {
            "model": model,
            "settings": "448 px, 10 steps (the index's, recorded in its rows)",
            "cold_wall_ms": round(cold["wall_ms"], 1),
            "cold_embed_ms": round(cold["embed_ms"], 1),
            "warm_wall_p50_ms": round(statistics.median(r["wall_ms"] for r in rest), 1),
            "warm_embed_p50_ms": round(statistics.median(r["embed_ms"] for r in rest), 1),
            "warm_search_p50_ms": round(statistics.median(r["search_ms"] for r in rest), 3),
            "warm_queries": len(rest),
        }, index
    finally:
        server.terminate()
        server.wait()


def under_load(binary, index, concurrent=8):
    server, addr = serve(binary, index, "--max-concurrent", "2", "--timeout-s", "20")
    try:
        texts = ["a dog", "a red car", "food on a plate", "a person", "a tree"]
        for t in texts:
            text_query(addr, t)  # cached embeddings aside: first calls load nothing new
        alone = [text_query(addr, f"{texts[i % 5]} {i}") for i in range(20)]
        results, text_times, done = [], [], threading.Event()

        def one(n):
            image, box = BOXES[n % len(BOXES)]
            status, _, wall = region_query(addr, image, box)
            results.append((status, wall))

        def texts_meanwhile():
            i = 0
            while not done.is_set():
                text_times.append(text_query(addr, f"{texts[i % 5]} under load {i}"))
                i += 1
                time.sleep(0.05)

        region_query(addr, *BOXES[0])  # the vision tower loaded before the burst
        threads = [threading.Thread(target=one, args=(n,)) for n in range(concurrent)]
        watcher = threading.Thread(target=texts_meanwhile)
        watcher.start()
        t = time.monotonic()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        burst_s = time.monotonic() - t
        done.set()
        watcher.join()
        codes = {}
        for status, _ in results:
            codes[str(status)] = codes.get(str(status), 0) + 1
        return {
            "concurrent_region_queries": concurrent,
            "server_flags": "--max-concurrent 2 --timeout-s 20 (defaults: --region-workers 1 --max-queued-regions 4)",
            "statuses": codes,
            "answered_wall_max_s": round(max((w for s, w in results if s == 200), default=0), 2),
            "burst_s": round(burst_s, 2),
            "server_peak_rss_mb": round(peak_rss_mb(server.pid), 1),
            "text_p50_alone_ms": round(statistics.median(alone) * 1e3, 2),
            "text_p50_under_load_ms": round(statistics.median(text_times) * 1e3, 2),
            "text_queries_under_load": len(text_times),
        }
    finally:
        server.terminate()
        server.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(root, "target/release/regionseek"))
    ap.add_argument("--out")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="region-query-") as tmp:
        b32, index32 = latency(a.bin, "random:vit-b-32", tmp)
        b16, _ = latency(a.bin, "random:vit-b-16", tmp)
        load = under_load(a.bin, index32)
    result = {"bench": "region_query", "date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(),
              "latency": [b32, b16], "load": load}
    text = json.dumps(result, indent=1)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
