"""hnswlib and faiss on the very vectors `regionseek bench-index --export DIR` measured, in the same sitting:
the same base, queries and exact top-10, the same M and ef_construction, the same thread count, and JSON lines
with the same keys as bench-index's.

Pinned (bench/requirements-ann.txt): hnswlib==0.8.0 (built from its sdist), faiss-cpu==1.15.0, numpy.
usage:
  python3 -m venv .venv-bench && .venv-bench/bin/pip install numpy==2.4.6 pybind11==3.0.1 setuptools wheel
  .venv-bench/bin/pip install --no-build-isolation -r bench/requirements-ann.txt
  target/release/regionseek bench-index --vectors 100000 --data clustered,low-dim --ef 64,128,256,512 \
      --export target/ann
  .venv-bench/bin/python bench/ann_side_by_side.py target/ann/clustered-100000 target/ann/low-dim-100000
"""
import json
import os
import sys
import time
from pathlib import Path

import numpy as np


def percentile(ms, p):
    ms = sorted(ms)
    return ms[round((len(ms) - 1) * p)]


def recall(found, truth):
    return float(np.mean([len(set(f[:10]) & set(t)) / 10 for f, t in zip(found, truth)]))


def timed_queries(search_one, queries):
    found, ms = [], []
    for q in queries:
        t = time.perf_counter()
        found.append(search_one(q))
        ms.append((time.perf_counter() - t) * 1e3)
    return found, ms


def run(dir_):
    setup = json.loads((dir_ / "setup.json").read_text())
    base = np.load(dir_ / "base.npy")
    queries = np.load(dir_ / "queries.npy")
    truth = np.load(dir_ / "truth.npy")
    n, dim = base.shape
    m, efc = setup["m"], setup["ef_construction"]
    threads = int(os.environ.get("THREADS", os.cpu_count()))
    rows = []

    import hnswlib
    index = hnswlib.Index(space="ip", dim=dim)
    index.init_index(max_elements=n, M=m, ef_construction=efc, random_seed=100)
    index.set_num_threads(threads)
    t = time.perf_counter()
    index.add_items(base, np.arange(n))
    build_s = time.perf_counter() - t
    index.set_num_threads(1)  # one query at a time, as bench-index times them
    for ef in setup["ef"]:
        index.set_ef(max(ef, 10))
        found, ms = timed_queries(lambda q: index.knn_query(q, k=10)[0][0].tolist(), queries)
        rows.append(("hnswlib 0.8.0", ef, build_s, found, ms))

    import faiss
    faiss.omp_set_num_threads(threads)
    fx = faiss.IndexHNSWFlat(dim, m, faiss.METRIC_INNER_PRODUCT)
    fx.hnsw.efConstruction = efc
    t = time.perf_counter()
    fx.add(base)
    build_s = time.perf_counter() - t
    faiss.omp_set_num_threads(1)
    for ef in setup["ef"]:
        fx.hnsw.efSearch = max(ef, 10)
        found, ms = timed_queries(lambda q: fx.search(q[None, :], 10)[1][0].tolist(), queries)
        rows.append((f"faiss-cpu {faiss.__version__} HNSWFlat", ef, build_s, found, ms))

    for engine, ef, build_s, found, ms in rows:
        print(json.dumps({
            "engine": engine,
            "dataset": setup["dataset"],
            "vectors": n,
            "dim": dim,
            "m": m,
            "ef_construction": efc,
            "ef_search": ef,
            "threads": threads,
            "build_s": build_s,
            "build_per_s": n / build_s,
            "queries": len(queries),
            "query_p50_ms": percentile(ms, 0.5),
            "query_p99_ms": percentile(ms, 0.99),
            "recall_at_10": recall(found, truth),
        }), flush=True)


if __name__ == "__main__":
    for d in sys.argv[1:]:
        run(Path(d))
