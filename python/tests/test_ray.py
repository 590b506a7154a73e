"""regionseek.ray on a local Ray cluster (issue 19), inside a network namespace that has only loopback: Ray
listens on every interface and talks to the machine's own address, which a test must never do. The scenario
(ray_scenario.py) indexes COCO128 in 4 shards, kills a worker mid-run, reruns, compares the shards with a
single-process index row for row and bit for bit, reads them as one Parquet dataset, merges them, and serves
them with Ray Serve (same top 10 as the merged index; a killed replica gives partial answers, never errors)."""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import TINY

HERE = Path(__file__).parent


def _loopback_namespace_or_skip():
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'ray[serve]')")
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("unshare and ip (util-linux, iproute2) are needed to isolate Ray's network")
    probe = subprocess.run(["unshare", "--net", "--", "ip", "link", "set", "lo", "up"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a network namespace here (root is needed): {probe.stderr.decode().strip()}")


def test_sharded_indexing_recovers_and_sharded_search_matches_the_merged_index(coco128, tmp_path):
    _loopback_namespace_or_skip()
    spec = tmp_path / "gt-masks-ray.toml"
    # 10 steps at 64 px: each shard runs long enough for a worker to be killed in the middle of it.
    text = (Path(__file__).parents[2] / "pipelines" / "gt-masks.toml").read_text()
    spec.write_text(text.replace('name = "gt-masks"', 'name = "gt-masks-ray"').replace("size = 448", "size = 64"))
    # Ray's sockets live under its temp dir, whose path must stay short (unix socket paths are ≤ 107 bytes).
    ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    env = dict(os.environ, RAY_TMPDIR=ray_tmp, PYTHONUNBUFFERED="1")
    try:
        run = subprocess.run(
            ["unshare", "--net", "--", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", sys.executable,
             str(HERE / "ray_scenario.py"), str(tmp_path), str(coco128), str(spec), str(TINY)],
            capture_output=True, text=True, timeout=600, env=env,
        )
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    failed = [line for line in run.stderr.splitlines() if line.startswith("FAILED")]
    assert run.returncode == 0, "\n".join(failed) or run.stderr[-4000:]
    print(run.stdout.strip().splitlines()[-1])
