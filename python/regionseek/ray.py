"""Many machines: distributed indexing with Ray and sharded serving with Ray Serve.

    python -m regionseek.ray index IMAGES (--coco F | --boxes F | --masks DIR) --pipeline P --model M \\
        --out DATASET --shards N [--address auto] [--device cuda]
    python -m regionseek.ray serve DATASET [--address auto] [--port 8000]

``index`` splits the corpus by photo (a hash of each photo's name, the CLI's ``--shard K/N``), runs one worker per
GPU (or per CPU slot) with the model loaded once per worker, and writes one regionseek index per shard into
``DATASET/shard-0000`` … Every shard index resumes, so a worker that dies is restarted by Ray and goes on where its
shard's last commit left it, and rerunning the command after the driver died redoes only what is missing. The
shards' Parquet segments form one dataset (``DATASET/shard-*/regions-*.parquet``).

``serve`` runs one Ray Serve deployment per shard (each opens its shard read-only) and an ingress that embeds the
query once, fans it out, merges the top k by score and answers as ``regionseek serve``'s ``/api/search`` does,
with ``partial`` and ``missing_shards`` when a shard could not answer in time.

Both are thin shells over ``regionseek.index_photos`` and ``regionseek.Index``: nothing here embeds or searches.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import regionseek

DATASET_FILE = "regionseek-dataset.json"


def shard_dir(dataset: Path, shard: int) -> Path:
    return Path(dataset) / f"shard-{shard:04d}"


def _write_json_atomic(path: Path, value: Dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        json.dump(value, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _dataset_plan(dataset: Path, shards: int, model: str, pipeline: str) -> Dict[str, Any]:
    """The dataset's description, written before any shard: a rerun must split the corpus the same way."""
    path = dataset / DATASET_FILE
    if path.exists():
        plan = json.loads(path.read_text())
        if plan["shards"] != shards:
            raise SystemExit(
                f"{dataset} was started with --shards {plan['shards']}: rerun with that count (a photo's shard "
                f"depends on it), or index into another --out"
            )
        for key, value in (("model", model), ("pipeline", pipeline)):
            if plan[key] != value:
                raise SystemExit(f"{dataset} was started with --{key} {plan[key]!r}, not {value!r}")
        return plan
    dataset.mkdir(parents=True, exist_ok=True)
    plan = {"format": 1, "shards": shards, "model": model, "pipeline": pipeline, "complete": False}
    _write_json_atomic(path, plan)
    return plan


def _worker_class():
    import ray

    @ray.remote
    class ShardIndexer:
        """One per GPU (or CPU slot): the model is loaded once and indexes shard after shard."""

        def __init__(self, model: str, device: str, precision: str, gpu_memory: float):
            self.model = regionseek.Model.load(model, device=device, precision=precision, gpu_memory=gpu_memory)

        def pid(self) -> int:
            return os.getpid()

        def index(self, shard: int, shards: int, out: str, job: Dict[str, Any]) -> Dict[str, Any]:
            # wait=True: a restarted worker may find the lock of the process it replaces still being released.
            report = regionseek.index_photos(
                job["images"], out=out, model=self.model, shard=(shard, shards), wait=True, progress=False,
                coco=job.get("coco"), boxes=job.get("boxes"), masks=job.get("masks"), pipeline=job["pipeline"],
                sam=job.get("sam"), limit=job.get("limit"), exif_rotate=job.get("exif_rotate", False),
            )
            report["shard"] = shard
            report["pid"] = os.getpid()
            return report

    return ShardIndexer


def _init_ray(address: Optional[str]) -> None:
    import ray

    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        # A local instance: nothing listens beyond this machine's loopback.
        ray.init(include_dashboard=False, _node_ip_address="127.0.0.1")


def index_dataset(
    images: str,
    out: str,
    shards: int,
    *,
    coco: Optional[str] = None,
    boxes: Optional[str] = None,
    masks: Optional[str] = None,
    pipeline: str = "gt-masks",
    model: str = "clip-vit-b-16",
    device: str = "cpu",
    precision: str = "fp32",
    gpu_memory: float = 16.0,
    sam: Optional[str] = None,
    limit: Optional[int] = None,
    exif_rotate: bool = False,
    workers: Optional[int] = None,
    cpus_per_worker: float = 1.0,
    address: Optional[str] = None,
    progress: bool = True,
) -> Dict[str, Any]:
    """Indexes ``images`` into ``shards`` shard indexes under ``out`` on a Ray cluster; returns a summary with
    each shard's report. Reruns resume."""
    import ray
    from ray.util import ActorPool

    if shards < 1:
        raise ValueError("shards must be at least 1")
    if sum(x is not None for x in (coco, boxes, masks)) > 1:
        raise ValueError("give at most one of coco, boxes, masks")
    dataset = Path(out)
    _dataset_plan(dataset, shards, model, pipeline)
    _init_ray(address)
    resources = ray.cluster_resources()
    if device == "cuda":
        slots = int(resources.get("GPU", 0))
        if slots == 0:
            raise SystemExit("--device cuda but the Ray cluster has no GPU")
        options = {"num_gpus": 1, "num_cpus": cpus_per_worker}
    else:
        slots = max(1, int(resources.get("CPU", 1) // cpus_per_worker))
        options = {"num_cpus": cpus_per_worker}
    count = min(workers or slots, slots, shards)
    worker = _worker_class()
    # A worker that dies (OOM, preemption, kill -9) is restarted and its call retried: the shard resumes.
    actors = [
        worker.options(max_restarts=-1, max_task_retries=-1, **options).remote(model, device, precision, gpu_memory)
        for _ in range(count)
    ]
    job = {"images": str(images), "coco": coco, "boxes": boxes, "masks": masks, "pipeline": pipeline, "sam": sam,
           "limit": limit, "exif_rotate": exif_rotate}
    started = time.time()
    pool = ActorPool(actors)
    for k in range(shards):
        pool.submit(lambda a, k: a.index.remote(k, shards, str(shard_dir(dataset, k)), job), k)
    bar = None
    if progress:
        from ray.experimental.tqdm_ray import tqdm

        bar = tqdm(total=shards, desc="shards")
    reports = []
    while pool.has_next():
        reports.append(pool.get_next_unordered())
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    reports.sort(key=lambda r: r["shard"])
    summary = {
        "dataset": str(dataset),
        "shards": shards,
        "workers": count,
        "seconds": time.time() - started,
        "images_processed": sum(r["images_processed"] for r in reports),
        "regions_added": sum(r["regions_added"] for r in reports),
        "rows_total": sum(r["rows_total"] for r in reports),
        "failures": sum(r["failures"] for r in reports),
        "reports": reports,
    }
    plan = json.loads((dataset / DATASET_FILE).read_text())
    plan.update(complete=True, rows=summary["rows_total"])
    _write_json_atomic(dataset / DATASET_FILE, plan)
    for a in actors:
        ray.kill(a)
    return summary


# ---- serving -------------------------------------------------------------------------------------------------


def _shard_paths(dataset: Path) -> List[Path]:
    plan_path = dataset / DATASET_FILE
    if plan_path.exists():
        count = json.loads(plan_path.read_text())["shards"]
        paths = [shard_dir(dataset, k) for k in range(count)]
    else:
        paths = sorted(p for p in dataset.glob("shard-*") if (p / "manifest.json").exists())
    missing = [str(p) for p in paths if not (p / "manifest.json").exists()]
    if missing or not paths:
        raise SystemExit(f"{dataset}: no shard index at {', '.join(missing) or 'shard-*'} (run `index` first)")
    return paths


def merge_hits(answers: List[Optional[List[Dict[str, Any]]]], k: int) -> List[Dict[str, Any]]:
    """The top ``k`` of every shard's hits by score (ties by shard, then rank), each marked with its shard."""
    pooled = []
    for shard, hits in enumerate(answers):
        for rank, hit in enumerate(hits or []):
            pooled.append((-hit["score"], shard, rank, {**hit, "shard": shard}))
    pooled.sort(key=lambda t: t[:3])
    return [t[3] for t in pooled[:k]]


def build_app(dataset: str, model: Optional[str] = None, shard_timeout_s: float = 2.0, cpus_per_shard: float = 1.0):
    """The Serve application: one ``ShardSearcher`` deployment per shard (``cpus_per_shard`` CPUs reserved for
    each, for its graph walks) and the ``SearchIngress`` in front (it only embeds the query, with the text tower alone)."""
    from ray import serve
    from starlette.requests import Request
    from starlette.responses import JSONResponse

    dataset = Path(dataset)
    paths = _shard_paths(dataset)
    plan_path = dataset / DATASET_FILE
    model = model or (json.loads(plan_path.read_text())["model"] if plan_path.exists() else None)
    if model is None:
        raise SystemExit(f"{dataset} has no {DATASET_FILE}: give --model")

    @serve.deployment(max_ongoing_requests=64, health_check_period_s=1, health_check_timeout_s=5)
    class ShardSearcher:
        def __init__(self, path: str):
            self.index = regionseek.Index.open(path)

        def rows(self) -> int:
            return len(self.index)

        def pid(self) -> int:
            return os.getpid()

        def search(self, vector: List[float], k: int, filters: Dict[str, Any]) -> List[Dict[str, Any]]:
            import numpy as np

            try:
                return self.index.search_vectors(np.asarray(vector, dtype=np.float32), k=k, **filters)
            except ValueError as e:
                if "nothing to search" in str(e):
                    return []  # this shard holds no row the filter keeps; another may
                raise

    @serve.deployment(max_ongoing_requests=128)
    class SearchIngress:
        def __init__(self, model_spec: str, timeout_s: float, *shards):
            # Only queries are embedded here: the text tower alone, as `regionseek serve` loads it.
            self.model = regionseek.TextModel.load(model_spec)
            self.shards = list(shards)
            self.timeout_s = timeout_s

        async def _ask(self, handle, vector, k, filters):
            return await asyncio.wait_for(handle.search.remote(vector, k, filters), self.timeout_s)

        async def __call__(self, request: Request) -> JSONResponse:
            started = time.perf_counter()
            if request.url.path.rstrip("/") not in ("/api/search",):
                return JSONResponse({"error": "no such endpoint (the API: /api/search)"}, status_code=404)
            p = request.query_params
            text = p.get("q", "")
            if not text.strip():
                return JSONResponse({"error": "the query text (q) is empty"}, status_code=400)
            try:
                k = int(p.get("k", "10"))
                ef = int(p["ef"]) if "ef" in p else None
            except ValueError:
                return JSONResponse({"error": "k and ef must be whole numbers"}, status_code=400)
            if not 1 <= k <= 1000:
                return JSONResponse({"error": "k must be 1 to 1000"}, status_code=400)
            exact = p.get("exact", "false").lower() in ("1", "true", "yes")
            filters = {key: p[key] for key in ("method", "label", "image", "source") if key in p}
            filters.update(ef=ef, exact=exact)
            vector = self.model.embed_text([text])[0].tolist()
            results = await asyncio.gather(
                *(self._ask(h, vector, k, filters) for h in self.shards), return_exceptions=True
            )
            answers, missing, errors = [], [], {}
            for shard, r in enumerate(results):
                if isinstance(r, BaseException):
                    answers.append(None)
                    missing.append(shard)
                    errors[str(shard)] = "timed out" if isinstance(r, asyncio.TimeoutError) else str(r)[:300]
                else:
                    answers.append(r)
            body = {
                "query": text,
                "k": k,
                "mode": "exact" if exact else "approximate",
                "ef": ef,
                "hits": merge_hits(answers, k),
                "shards": len(self.shards),
                "partial": bool(missing),
                "missing_shards": missing,
                "ms": (time.perf_counter() - started) * 1e3,
            }
            if errors:
                body["shard_errors"] = errors
            return JSONResponse(body)

    searchers = [
        ShardSearcher.options(name=f"shard-{k:04d}", ray_actor_options={"num_cpus": cpus_per_shard}).bind(str(path))
        for k, path in enumerate(paths)
    ]
    return SearchIngress.options(ray_actor_options={"num_cpus": min(1.0, cpus_per_shard)}).bind(
        model, shard_timeout_s, *searchers
    )


def serve_dataset(dataset: str, *, address: Optional[str] = None, host: str = "127.0.0.1", port: int = 8000,
                  model: Optional[str] = None, shard_timeout_s: float = 2.0, cpus_per_shard: float = 1.0,
                  blocking: bool = True):
    from ray import serve

    _init_ray(address)
    serve.start(http_options={"host": host, "port": port})
    handle = serve.run(build_app(dataset, model, shard_timeout_s, cpus_per_shard), name="regionseek",
                       route_prefix="/")
    print(json.dumps({"serving": dataset, "url": f"http://{host}:{port}/api/search?q=..."}), flush=True)
    if blocking:
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            serve.shutdown()
    return handle


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m regionseek.ray", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ix = sub.add_parser("index", help="index a photo folder into N shard indexes on a Ray cluster")
    ix.add_argument("images")
    group = ix.add_mutually_exclusive_group()
    group.add_argument("--coco")
    group.add_argument("--boxes")
    group.add_argument("--masks")
    ix.add_argument("--pipeline", default="gt-masks")
    ix.add_argument("--model", default="clip-vit-b-16")
    ix.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ix.add_argument("--precision", default="fp32", choices=["fp32", "tf32", "bf16", "bf16-jacobian"])
    ix.add_argument("--gpu-memory", type=float, default=16.0)
    ix.add_argument("--sam")
    ix.add_argument("--out", required=True, help="the dataset folder (one index per shard inside)")
    ix.add_argument("--shards", type=int, required=True)
    ix.add_argument("--limit", type=int)
    ix.add_argument("--exif-rotate", action="store_true")
    ix.add_argument("--workers", type=int, help="at most this many workers (default: one per GPU or CPU slot)")
    ix.add_argument("--cpus-per-worker", type=float, default=1.0)
    ix.add_argument("--address", help="a Ray cluster (`auto` for the one this machine belongs to)")
    ix.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    sv = sub.add_parser("serve", help="serve a sharded dataset with Ray Serve")
    sv.add_argument("dataset")
    sv.add_argument("--address")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--model", help="the text model (default: the dataset's)")
    sv.add_argument("--shard-timeout", type=float, default=2.0, help="seconds a shard may take before the answer "
                    "goes out without it (marked partial)")
    sv.add_argument("--cpus-per-shard", type=float, default=1.0, help="CPUs Ray reserves for each shard's replica")
    a = parser.parse_args(argv)
    if a.command == "index":
        summary = index_dataset(
            a.images, a.out, a.shards, coco=a.coco, boxes=a.boxes, masks=a.masks, pipeline=a.pipeline,
            model=a.model, device=a.device, precision=a.precision, gpu_memory=a.gpu_memory, sam=a.sam,
            limit=a.limit, exif_rotate=a.exif_rotate, workers=a.workers, cpus_per_worker=a.cpus_per_worker,
            address=a.address, progress=not a.json,
        )
        if a.json:
            print(json.dumps(summary), flush=True)
        else:
            print(f"{summary['rows_total']} regions in {summary['shards']} shards under {summary['dataset']} "
                  f"({summary['seconds']:.1f} s, {summary['failures']} failures)")
        return 1 if summary["failures"] else 0
    serve_dataset(a.dataset, address=a.address, host=a.host, port=a.port, model=a.model,
                  shard_timeout_s=a.shard_timeout, cpus_per_shard=a.cpus_per_shard)
    return 0


if __name__ == "__main__":
    sys.exit(main())
