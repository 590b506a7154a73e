#!/usr/bin/env bash
# Issue 16's side-by-side in one sitting: regionseek's graph (i8 codes, and f32 codes for the recall
# reference) and hnswlib / faiss on the very same exported vectors, 100k then 1M, both corpora.
# JSON lines land in OUT (default target/ann); `python3 bench/summarize_ann.py OUT/*.jsonl` prints the tables.
# Needs .venv-bench (see bench/ann_side_by_side.py) and about 12 GB of free disk for the 1M exports.
# Usage: bench/ann_all.sh [OUT] [SIZES (100000 1000000)]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/ann}
sizes=${2:-100000 1000000}
efs=64,128,256,512,768,1024,1536,2048
cargo build --release --quiet
mkdir -p "$out"
for n in $sizes; do
  target/release/regionseek bench-index --vectors "$n" --data clustered,low-dim --codec i8 --ef $efs \
    --export "$out" > "$out/ours-i8-$n.jsonl"
  .venv-bench/bin/python bench/ann_side_by_side.py "$out/clustered-$n" "$out/low-dim-$n" > "$out/peers-$n.jsonl"
  target/release/regionseek bench-index --vectors "$n" --data clustered,low-dim --codec f32 --ef $efs \
    > "$out/ours-f32-$n.jsonl"
done
