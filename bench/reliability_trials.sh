#!/usr/bin/env bash
# Issue 14's "must show", on real photos: (1) TRIALS times, two `index` runs on disjoint halves of a COCO128
# slice started 0-2.5 s apart on one --out; the second waits (--wait) in odd trials and is refused and rerun in
# even ones; afterwards the index must hold exactly the union. (2) SEARCHES `search --json` during one index run:
# no errors, and every answer's row count a committed prefix of the final segments (no partial batch).
# Usage: bench/reliability_trials.sh [BIN] [TRIALS] [PHOTOS_PER_HALF] [SEARCHES]  -> JSON lines on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/regionseek}
trials=${2:-20}
half=${3:-16}
searches=${4:-200}
data=${REGIONSEEK_DATA:-../shared/data}/coco128
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 - "$data/instances.json" "$work" "$half" <<'PY'
import json, sys
coco = json.load(open(sys.argv[1])); out = sys.argv[2]; n = int(sys.argv[3])
for name, imgs in (("a", coco["images"][:n]), ("b", coco["images"][n:2 * n]), ("all", coco["images"])):
    ids = {i["id"] for i in imgs}
    part = dict(coco, images=imgs, annotations=[a for a in coco["annotations"] if a["image_id"] in ids])
    json.dump(part, open(f"{out}/{name}.json", "w"))
PY
cat > "$work/fast.toml" <<'TOML'
name = "fast"
stages = ["decode", "masks", "embed", "index"]
[embed]
method = "masked-crop"
[index]
batch_images = 2
TOML
run_index() { # out coco [extra...]
  local out=$1 coco=$2; shift 2
  "$bin" index "$data/images" --coco "$coco" --pipeline "$work/fast.toml" --model random:vit-b-32 --out "$out" --json "$@"
}
rows() { "$bin" verify "$1" --json | python3 -c 'import json,sys; r=json.loads(sys.stdin.read()); print(r["rows"] if r["ok"] else -1)'; }
# The union: both halves indexed one after the other.
run_index "$work/reference" "$work/a.json" >/dev/null 2>&1 || true
run_index "$work/reference" "$work/b.json" >/dev/null 2>&1 || true
want=$(rows "$work/reference")
ok=0; refused=0; waited=0
for t in $(seq 1 "$trials"); do
  out="$work/t$t"
  delay=$(python3 -c "print(($t * 0.37) % 2.5)")
  run_index "$out" "$work/a.json" >"$work/a.out" 2>"$work/a.err" & pa=$!
  sleep "$delay"
  extra=(); [ $((t % 2)) -eq 1 ] && extra=(--wait)
  set +e
  run_index "$out" "$work/b.json" "${extra[@]}" >"$work/b.out" 2>"$work/b.err"; rb=$?
  wait $pa; ra=$?
  set -e
  if grep -q "is being written by another process" "$work/b.err"; then
    refused=$((refused + 1)); run_index "$out" "$work/b.json" --wait >/dev/null 2>&1 || true
  elif [ ${#extra[@]} -gt 0 ]; then waited=$((waited + 1)); fi
  if grep -q "is being written by another process" "$work/a.err"; then
    run_index "$out" "$work/a.json" --wait >/dev/null 2>&1 || true
  fi
  got=$(rows "$out")
  [ "$got" = "$want" ] && ok=$((ok + 1))
  echo "{\"trial\": $t, \"delay_s\": $delay, \"exit_a\": $ra, \"exit_b\": $rb, \"rows\": $got, \"want\": $want}" >&2
done
echo "{\"test\": \"two_writers\", \"trials\": $trials, \"union_exact\": $ok, \"second_refused\": $refused, \"second_waited\": $waited, \"rows\": $want}"

# Searches during one full run.
out="$work/live"
run_index "$out" "$work/all.json" >/dev/null 2>&1 & pi=$!
errors=0; done_searches=0; during=0
: >"$work/counts"
while [ $done_searches -lt "$searches" ]; do
  if [ -f "$out/manifest.json" ]; then
    kill -0 $pi 2>/dev/null && during=$((during + 1))
    if "$bin" search "$out" "a dog" --k 3 --json >"$work/s.out" 2>"$work/s.err"; then
      python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).read().splitlines()[-1])["candidates"])' "$work/s.out" >>"$work/counts"
    else
      errors=$((errors + 1)); cat "$work/s.err" >&2
    fi
    done_searches=$((done_searches + 1))
  else
    sleep 0.05
  fi
done
wait $pi || true
python3 - "$out/manifest.json" "$work/counts" "$errors" "$done_searches" "$during" <<'PY'
import json, sys, itertools
m = json.load(open(sys.argv[1]))
prefixes = {0, *itertools.accumulate(s["rows"] for s in m["segments"])}
counts = [int(x) for x in open(sys.argv[2]).read().split()]
partial = sum(1 for c in counts if c not in prefixes)
print(json.dumps({"test": "searches_during_index", "searches": int(sys.argv[4]), "errors": int(sys.argv[3]),
                  "partial_batches_seen": partial, "distinct_states_seen": len(set(counts)),
                  "final_rows": m["rows"], "searches_started_while_indexing": int(sys.argv[5])}))
PY
