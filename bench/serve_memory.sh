#!/usr/bin/env bash
# Memory and latency of `regionseek serve` (random ViT-B/32 text tower) on a large synthetic index: builds the
# index once (examples/synthetic_index: COCO128's real masks reused, clustered 512-d embeddings), starts the
# server, reads its memory from /proc at start, after searches and after /api/stats, and prints one JSON line.
# Usage: bench/serve_memory.sh [ROWS (1000000)] [INDEX_DIR (target/synth-ROWS)]
set -euo pipefail
cd "$(dirname "$0")/.."
rows=${1:-1000000}
dir=${2:-target/synth-$rows}
cargo build --release --quiet --example synthetic_index
bin=target/release/regionseek
[ -x "$bin" ] || cargo build --release --quiet
if [ ! -f "$dir/manifest.json" ]; then
  /usr/bin/time -f '{"build_s": %e, "build_peak_kib": %M}' target/release/examples/synthetic_index "$dir" "$rows" >&2
fi
index_bytes=$(du -sb "$dir" | cut -f1)
out=$(mktemp)
t0=$(date +%s.%N)
"$bin" serve "$dir" --addr 127.0.0.1:0 --json >"$out" 2>/dev/null &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -f "$out"' EXIT
until [ -s "$out" ]; do
  kill -0 $pid 2>/dev/null || { echo "the server did not start" >&2; exit 1; }
  sleep 0.2
done
t1=$(date +%s.%N)
addr=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["listening"]["addr"])' "$out")
kib() { awk -v f="$1:" '$1 == f {print $2}' /proc/$pid/status; }
rss_start=$(kib VmRSS)
lat=()
for i in $(seq 1 40); do
  lat+=("$(curl -s -o /dev/null -w '%{time_total}' "http://$addr/api/search?k=10&q=a+photo+of+object+$i")")
done
rss_search=$(kib VmRSS)
curl -s -o /dev/null "http://$addr/api/stats"
curl -s -o /dev/null "http://$addr/api/similar/12345?k=10"
rss_stats=$(kib VmRSS)
peak=$(kib VmHWM)
python3 - "$rows" "$index_bytes" "$t0" "$t1" "$rss_start" "$rss_search" "$rss_stats" "$peak" "${lat[@]}" <<'PY'
import json, statistics, sys
a = sys.argv[1:]
lat = sorted(float(x) * 1e3 for x in a[8:])
print(json.dumps({
    "bench": "serve-memory", "rows": int(a[0]), "model": "random:vit-b-32 (text tower only)",
    "index_dir_mib": round(int(a[1]) / 2**20, 1),
    "startup_s": round(float(a[3]) - float(a[2]), 2),
    "rss_started_mib": round(int(a[4]) / 1024, 1),
    "rss_after_searches_mib": round(int(a[5]) / 1024, 1),
    "rss_after_stats_mib": round(int(a[6]) / 1024, 1),
    "rss_peak_mib": round(int(a[7]) / 1024, 1),
    "search_p50_ms": round(statistics.median(lat), 1),
    "search_max_ms": round(lat[-1], 1),
    "searches": len(lat),
}))
PY
