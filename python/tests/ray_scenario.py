"""The Ray scenario of test_ray.py, run inside a network namespace that has only loopback (Ray binds every
interface otherwise). Exits non-zero on the first failed check; prints one JSON line of figures at the end.

    unshare --net -- sh -c 'ip link set lo up && exec python ray_scenario.py WORKDIR COCO128 SPEC MODEL'
"""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np

import regionseek
import regionseek.ray as rr

work, coco, spec, model = (Path(p) for p in sys.argv[1:5])
images, instances = coco / "images", coco / "instances.json"
SHARDS = 4
figures = {}


def check(condition, message):
    if not condition:
        print(f"FAILED: {message}", file=sys.stderr, flush=True)
        sys.exit(1)


def rows_of(index_dir):
    """{(image, region_id): embedding bytes} of an index, checking each region is there once."""
    table = regionseek.Index.open(index_dir).to_arrow()
    keys = list(zip(table.column("image").to_pylist(), table.column("region_id").to_pylist()))
    check(len(keys) == len(set(keys)), f"{index_dir}: a region is there twice")
    vectors = regionseek.Index.open(index_dir).embeddings()
    return {k: v.tobytes() for k, v in zip(keys, vectors)}


# 1. One process, the reference.
t = time.time()
single = work / "single"
regionseek.index_photos(images, coco=instances, pipeline=str(spec), out=single, model=str(model), progress=False)
figures["single_process_s"] = time.time() - t
want = rows_of(single)

# 2. Four shards on a local Ray instance; one worker killed while it indexes.
dataset = work / "dataset"
cmd = [sys.executable, "-m", "regionseek.ray", "index", str(images), "--coco", str(instances), "--pipeline",
       str(spec), "--model", str(model), "--out", str(dataset), "--shards", str(SHARDS), "--json"]
t = time.time()
driver = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
killed = None
deadline = time.time() + 300
while driver.poll() is None and killed is None and time.time() < deadline:
    # Kill as soon as some shard has committed rows and a worker is inside an index call.
    committed = any(
        json.loads((d / "manifest.json").read_text()).get("rows", 0) > 0
        for d in dataset.glob("shard-*") if (d / "manifest.json").exists()
    )
    busy = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                title = (proc / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if title.startswith("ray::ShardIndexer.index"):
                busy.append(int(proc.name))
    if committed and busy:
        os.kill(busy[0], signal.SIGKILL)
        killed = busy[0]
    time.sleep(0.05)
out, err = driver.communicate(timeout=600)
check(driver.returncode == 0, f"the sharded run failed after a worker was killed:\n{err[-3000:]}")
check(killed is not None, "the run ended before a worker could be killed mid-run: make the scenario slower")
figures["ray_4_shards_s"] = time.time() - t
first = json.loads(out.strip().splitlines()[-1])
figures["killed_worker_pid"] = killed

# 3. A rerun finds nothing left to do.
again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
check(again.returncode == 0, f"the rerun failed:\n{again.stderr[-3000:]}")
rerun = json.loads(again.stdout.strip().splitlines()[-1])
check(rerun["regions_added"] == 0, f"the rerun added {rerun['regions_added']} regions")

# 4. The shards together are the single-process index, row for row, bit for bit, each region once.
got = {}
for k in range(SHARDS):
    part = rows_of(rr.shard_dir(dataset, k))
    check(not (part.keys() & got.keys()), f"shard {k} repeats regions of another shard")
    got.update(part)
check(got.keys() == want.keys(), f"{len(got)} regions in the shards, {len(want)} in one process")
differ = [k for k in want if got[k] != want[k]]
check(not differ, f"{len(differ)} embeddings differ from the single-process run, e.g. {differ[:3]}")
figures["rows"] = len(got)
check(first["rows_total"] == len(got), "the summary's row count")

# 5. The segments are one Parquet dataset as they lie.
import pyarrow.dataset as ds

table = ds.dataset(str(dataset), format="parquet", exclude_invalid_files=True).to_table(columns=["image"])
check(table.num_rows == len(got), f"pyarrow reads {table.num_rows} rows from the dataset, not {len(got)}")

# 6. One graph over all shards, no re-embedding.
merged = work / "merged"
bin_ = os.environ["REGIONSEEK_BIN"]
subprocess.run([bin_, "merge", str(dataset), "--out", str(merged), "--json"], check=True, capture_output=True)
check(rows_of(merged) == want, "the merged index differs from the single-process index")

# 7. Sharded serving: the same top 10 as the merged index; a killed replica gives partial answers, no errors.
from ray import serve

port = 18765
# Two CPUs here: the five replicas share them. A shard gets 0.5 s (answers take milliseconds here), well under
# what a replica's restart takes (a new worker process opening its shard), so a query during the restart is
# answered without that shard rather than after it.
rr.serve_dataset(str(dataset), port=port, cpus_per_shard=0.25, shard_timeout_s=0.5, blocking=False)
merged_ix = regionseek.Index.open(merged, model=str(model))


def ask(text, k=10, exact=True):
    url = f"http://127.0.0.1:{port}/api/search?q={urllib.parse.quote(text)}&k={k}&exact={str(exact).lower()}"
    with urllib.request.urlopen(url, timeout=30) as r:
        check(r.status == 200, f"HTTP {r.status}")
        return json.loads(r.read())


for text in ["a dog on a sofa", "a red car", "people at a table", "a bird in the sky"]:
    answer = ask(text)
    check(not answer["partial"], f"{text}: partial with every shard up: {answer}")
    ours = [(h["image"], h["region_id"], round(h["score"], 5)) for h in answer["hits"]]
    theirs = [(h["image"], h["region_id"], round(h["score"], 5)) for h in merged_ix.search(text, k=10, exact=True)]
    check(ours == theirs, f"{text}: sharded top 10 {ours} != merged {theirs}")

latencies = {"sharded": [], "merged": []}
for i in range(60):
    text = f"query number {i}"
    t = time.perf_counter()
    ask(text, exact=False)
    latencies["sharded"].append(time.perf_counter() - t)
    t = time.perf_counter()
    merged_ix.search(text, k=10)
    latencies["merged"].append(time.perf_counter() - t)
for name, values in latencies.items():
    figures[f"{name}_p50_ms"] = float(np.percentile(values, 50) * 1e3)
    figures[f"{name}_p99_ms"] = float(np.percentile(values, 99) * 1e3)

victim = serve.get_deployment_handle("shard-0001", app_name="regionseek")
pid = victim.pid.remote().result()
os.kill(pid, signal.SIGKILL)
answers = []
end = time.time() + 60
while time.time() < end:
    answers.append(ask("a dog on a sofa"))
    if answers[-1]["partial"] is False and len(answers) > 1 and any(a["partial"] for a in answers):
        break
    time.sleep(0.2)
partial = [a for a in answers if a["partial"]]
check(partial, "no answer was marked partial while shard 1's replica was down")
check(all(a["missing_shards"] == [1] for a in partial), f"other shards missing: {partial[0]}")
check(all(len(a["hits"]) == 10 for a in answers), "a partial answer lacks the other shards' hits")
check(not answers[-1]["partial"], "shard 1 never came back within 60 s")
figures["answers_while_replica_restarted"] = len(answers)
figures["partial_answers"] = len(partial)
serve.shutdown()
print(json.dumps(figures), flush=True)
