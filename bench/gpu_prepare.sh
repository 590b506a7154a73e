#!/usr/bin/env bash
# Here, on the build machine: everything bench/gpu_sitting.sh needs on the GPU machine, in folders that
# .git/info/exclude keeps out of git (they travel with `carry`). Then, with the device tool:
#   run  command: "bash bench/gpu_sitting.sh 2>&1 | tee $OUT/sitting.log"  carry: [gpu-out, gpu-data, .whl]
# One call does the whole sitting (start, our bench, the official code, indexing, the GPU tests) in ~9 min.
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${SHARED:-../shared}
mkdir -p .git/info
for d in /gpu-out/ /gpu-data/ /.whl/; do grep -qxF "$d" .git/info/exclude 2>/dev/null || echo "$d" >> .git/info/exclude; done
source "$shared/gpu/cuda-env.sh"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
cargo build --release --features cuda --bin regionseek
tests=$(cargo test --release --features cuda --test it --no-run --message-format=json 2>/dev/null |
  python3 -c 'import sys,json
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m["target"]["name"]=="it" and m.get("executable"): print(m["executable"])' | tail -1)
rm -rf gpu-out && mkdir gpu-out
cp "$CARGO_TARGET_DIR/release/regionseek" gpu-out/regionseek
cp "$tests" gpu-out/gpu-tests
strip gpu-out/regionseek gpu-out/gpu-tests
xz -9 -T2 gpu-out/regionseek gpu-out/gpu-tests   # 130 MB -> 17 MB: the working tree travels under 64 MiB
rm -rf gpu-data && mkdir gpu-data
cp -r "$shared/data/coco128" gpu-data/
cp "$shared/gpu/reference_timing.py" "$shared/reference/design_in_torch.py" gpu-data/
python3 bench/repeated_boxes.py gpu-data/coco128/instances.json 8 gpu-data/boxes_x8.json
rm -rf .whl && python3 -m pip download -q --no-deps -d .whl \
  open_clip_torch==2.23.0 legrad_torch==1.1 maskinversion_torch==1.1 ftfy wcwidth
du -sh gpu-out gpu-data .whl
