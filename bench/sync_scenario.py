#!/usr/bin/env python3
"""Issue 33's scenario: a 40-photo nested folder indexed as a library, then 5 photos deleted, 3 edited, 4 moved
and 5 added; the rerun is killed (SIGKILL) part-way and run again. The index must then answer exactly as a fresh
index of the final folder (same keys, boxes and scores for every region), `verify` clean, the moved photos not
embedded again; and a rerun after moves alone is timed beside a rerun with nothing to do.

Usage: python3 bench/sync_scenario.py [--bin target/release/regionseek] [--model random:vit-b-32] [--out F]
Needs ../shared/data/coco128/images (48 photos of it). Prints one JSON object.
"""
import argparse, json, os, shutil, subprocess, sys, tempfile, time

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)


def run(args, **kw):
    t = time.monotonic()
    p = subprocess.run(args, capture_output=True, text=True, **kw)
    return p, time.monotonic() - t


def every_region(bin_, index):
    p, _ = run([bin_, "search", index, "a photo", "--k", "100000", "--exact", "--json"])
    if p.returncode != 0:
        sys.exit(p.stderr)
    return sorted(
        (h["image"], h["region_id"], h["method"], h["source"], tuple(h["box"]), h["score"])
        for h in json.loads(p.stdout.splitlines()[-1])["hits"]
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(root, "target/release/regionseek"))
    ap.add_argument("--model", default="random:vit-b-32")
    ap.add_argument("--data", default=os.path.join(root, "..", "shared", "data", "coco128", "images"))
    ap.add_argument("--out")
    a = ap.parse_args()
    all_photos = sorted(os.path.join(a.data, f) for f in os.listdir(a.data) if f.endswith(".jpg"))[:48]
    tmp = tempfile.mkdtemp(prefix="sync-scenario-")
    photos, index, fresh = (os.path.join(tmp, d) for d in ("photos", "index", "fresh"))
    folders = ["2023/spring", "2023/summer", "2024", "2024/trip/day1"]
    where = {}
    for i, p in enumerate(all_photos[:40]):
        rel = os.path.join(folders[i % 4], os.path.basename(p))
        os.makedirs(os.path.join(photos, os.path.dirname(rel)), exist_ok=True)
        shutil.copy(p, os.path.join(photos, rel))
        where[i] = rel
    base = [a.bin, "index", photos, "--model", a.model, "--json"]
    p, first_s = run(base + ["--out", index])
    assert p.returncode == 0, p.stderr
    # 5 deleted, 3 edited (new content under the path), 4 moved, 5 added.
    for i in range(0, 5):
        os.remove(os.path.join(photos, where[i]))
    for j, i in enumerate(range(5, 8)):
        shutil.copy(all_photos[40 + j], os.path.join(photos, where[i]))
    for i in range(8, 12):
        dest = os.path.join("moved", os.path.basename(where[i]))
        os.makedirs(os.path.join(photos, "moved"), exist_ok=True)
        os.rename(os.path.join(photos, where[i]), os.path.join(photos, dest))
        where[i] = dest
    for k in range(5):
        shutil.copy(all_photos[43 + k], os.path.join(photos, "2024", "new-" + os.path.basename(all_photos[43 + k])))
    # The rerun, killed once its sync is committed and its first new rows are in.
    with open(os.path.join(index, "manifest.json")) as f:
        generation = json.load(f)["generation"]
    proc = subprocess.Popen(base + ["--out", index], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed_at = None
    while proc.poll() is None:
        with open(os.path.join(index, "manifest.json")) as f:
            g = json.load(f)["generation"]
        if g >= generation + 3:
            proc.kill()
            killed_at = g
            break
        time.sleep(0.05)
    proc.wait()
    p, rerun_s = run(base + ["--out", index])
    assert p.returncode == 0, p.stderr
    rerun = json.loads(p.stdout.splitlines()[-1])
    p, noop_s = run(base + ["--out", index])
    noop = json.loads(p.stdout.splitlines()[-1])
    p, fresh_s = run(base + ["--out", fresh])
    assert p.returncode == 0, p.stderr
    same = every_region(a.bin, index) == every_region(a.bin, fresh)
    verify, _ = run([a.bin, "verify", index])
    # Moves alone, beside a rerun with nothing to do.
    for i in range(12, 16):
        dest = os.path.join("moved-again", os.path.basename(where[i]))
        os.makedirs(os.path.join(photos, "moved-again"), exist_ok=True)
        os.rename(os.path.join(photos, where[i]), os.path.join(photos, dest))
    p, moves_s = run(base + ["--out", index])
    moves = json.loads(p.stdout.splitlines()[-1])
    p, noop2_s = run(base + ["--out", index])
    result = {
        "bench": "sync_scenario",
        "model": a.model,
        "photos": 40,
        "first_index_s": round(first_s, 2),
        "killed_at_generation": killed_at,
        "rerun_after_kill": {"seconds": round(rerun_s, 2), "sync": rerun["sync"],
                             "photos_embedded": rerun["tiers"]["quick_photos"]},
        "equal_to_fresh_index": same,
        "regions": len(every_region(a.bin, fresh)),
        "verify_clean": verify.returncode == 0,
        "noop_rerun_s": round(noop_s, 2),
        "moves_only_rerun": {"seconds": round(moves_s, 2), "sync": moves["sync"],
                             "photos_embedded": moves["tiers"]["quick_photos"]},
        "noop_rerun_after_s": round(noop2_s, 2),
        "fresh_index_s": round(fresh_s, 2),
    }
    shutil.rmtree(tmp, ignore_errors=True)
    text = json.dumps(result)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")
    if not (same and verify.returncode == 0):
        sys.exit(1)


if __name__ == "__main__":
    main()
