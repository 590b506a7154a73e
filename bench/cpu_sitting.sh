#!/usr/bin/env bash
# MaskInversion on this CPU: ours and the official implementation in one sitting, with the cores' measured fp32
# peak beside them.
#
#   bench/cpu_sitting.sh      (needs .venv-ref: see tests/fixtures/requirements.txt)
#
# Rows (bench/results/cpu-DATE.jsonl): the cores' AVX-512 FMA peak (bench/cpu_peak.c, one thread per core),
# `regionseek bench` B/32 and B/16 at 224 and 448 with 10 masks (`--grad auto`: the path it picks), each with the
# GFLOP/s of its steps (2 × the multiply-adds it counts for its path, over the steps' seconds), then
# bench/reference_cpu.py for the same shapes.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release/regionseek
[ -x "$bin" ] || cargo build --release
py=${PYTHON:-.venv-ref/bin/python}
cores=$(nproc)
out="bench/results/cpu-$(date -u +%Y-%m-%d).jsonl"
mkdir -p bench/results
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
gcc -O3 -mavx512f -mfma -fopenmp bench/cpu_peak.c -o "$tmp/peak"
{
  OMP_NUM_THREADS=$cores "$tmp/peak" | python3 -c 'import json,sys; r=json.load(sys.stdin); r.pop("sink"); print(json.dumps({"row": "peak", **r}))'
  "$bin" bench --models random:vit-b-32,random:vit-b-16 --sizes 224,448 --masks 10 --grad auto 2>/dev/null |
    python3 -c '
import json, sys
for line in sys.stdin:
    r = json.loads(line)
    flop = r["estimate_direct_gflop"] if r["grad"] == "direct" else r["estimate_jacobian_gflop"]
    # `estimate_*_gflop` counts multiply-adds: two operations each.
    r["steps_gflop_per_s"] = 2 * flop / (r["steps_s"] + r["jacobian_s"]) if flop else None
    print(json.dumps({"row": "regionseek", **r}))'
  # The reference's imports print warnings on stdout: only its JSON lines are rows.
  "$py" bench/reference_cpu.py ViT-B-32,ViT-B-16 224,448 10 2>/dev/null | grep '^{' |
    python3 -c 'import json,sys; [print(json.dumps({"row": "official", **json.loads(l)})) for l in sys.stdin]'
} | tee "$out"
echo "written to $out" >&2
