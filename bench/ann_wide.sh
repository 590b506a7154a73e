#!/usr/bin/env bash
# Issue 16's 1M clustered set at the beam widths where recall@10 reaches 0.95: regionseek (i8 codes, timed),
# hnswlib and faiss on the very same vectors in the same sitting, then regionseek's f16 and f32 codes for the
# codecs' recall at equal ef. JSON lines into OUT (default target/ann-wide); `python3 bench/summarize_ann.py
# OUT/*.jsonl` prints the tables. About 45 minutes on 2 cores and 6 GB of disk.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/ann-wide}
efs=${EFS:-1024,2048,3072,4096,6144}
cargo build --release --quiet
mkdir -p "$out"
target/release/regionseek bench-index --vectors 1000000 --data clustered --codec i8 --ef "$efs" \
  --export "$out" > "$out/ours-i8.jsonl"
THREADS=2 .venv-bench/bin/python bench/ann_side_by_side.py "$out/clustered-1000000" > "$out/peers.jsonl"
target/release/regionseek bench-index --vectors 1000000 --data clustered --codec f16,f32 --ef "$efs" \
  > "$out/ours-f16-f32.jsonl"
