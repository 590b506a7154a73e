#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 300) and prints libFuzzer's final stats line.
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). Crashes land in fuzz/artifacts/.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-300}
for t in rle_string polygon coco_json decode; do
  mkdir -p corpus/$t
  echo "== $t ($secs s)"
  seeds=seeds/$t
  [ "$t" = decode ] && seeds=../tests/fixtures/decode
  cargo +nightly fuzz run -O $t corpus/$t $seeds -- -max_total_time=$secs -print_final_stats=1 2>&1 \
    | grep -E "stat::number_of_executed_units|stat::peak_rss_mb|ERROR|panicked|SUMMARY|Done" || true
done
