#!/usr/bin/env bash
# On the GPU machine (device tool), after bench/gpu_prepare.sh here: issue 13's figures in one sitting — our
# CUDA build and the official maskinversion_torch on the same card, the indexing throughput with its GPU
# utilisation, and tests/it/gpu.rs. Each step has its own time limit so the whole stays under the 10-minute call;
# results go to a work folder, packed into $OUT/sitting.tgz after every step (the device tool brings back at most
# 8 files, and what a call killed at its limit left there), and a summary table is printed last.
# usage: bash bench/gpu_sitting.sh [STEP...]   STEP: b16 ref-b16 index tests fused l14 precision (default: all,
# in that order of priority, so a call cut short still brings back the most wanted figures)
set -u
steps=${*:-b16 ref-b16 index tests fused l14 precision}
want() { [[ " $steps " == *" $1 "* ]]; }
DEST=${OUT:-/tmp}; OUT=/tmp/sitting; mkdir -p "$OUT" "$DEST"
T0=$(date +%s)
step() { tar czf "$DEST/sitting.tgz" -C "$OUT" . 2>/dev/null; echo "=== [$(( $(date +%s) - T0 ))s] $*"; }
# tests/it/gpu.rs finds its fixtures where it was built (CARGO_MANIFEST_DIR)
manifest=${REGIONSEEK_BUILT_AT:-/work/main}
[ -e "$manifest" ] || { mkdir -p "$(dirname "$manifest")" && ln -sfn "$PWD" "$manifest"; }
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
bin=/tmp/rs-bin; mkdir -p $bin
for f in regionseek gpu-tests; do xz -dc gpu-out/$f.xz > $bin/$f && chmod +x $bin/$f; done
RS=$bin/regionseek
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl >/dev/null 2>&1
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
rep=/tmp/rep
for r in 0 1 2 3 4 5 6 7; do mkdir -p $rep/rep$r; ln -sf "$PWD"/gpu-data/coco128/images/* $rep/rep$r/; done
cat > /tmp/boxes-224.toml <<'T'
name = "boxes-224"
description = "throughput: boxes as masks, MaskInversion at 224"
stages = ["decode", "box-mask", "invert", "index"]
[invert]
size = 224
[index]
batch_images = 64
T
sed 's/^size = 224$/size = 224\nmap_kernel = "fused"/' /tmp/boxes-224.toml > /tmp/boxes-224-fused.toml
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader | tee $OUT/gpu.txt

if want b16; then
step "bench ViT-B/16 (auto's choice beside both paths)"
timeout 120 $RS bench --device cuda --models random:vit-b-16 --sizes 448,224 --masks 10,100 \
  --grad auto,jacobian,direct --repeat 3 2>$OUT/bench_b16.err | tee $OUT/bench_b16.jsonl
fi
if want ref-b16; then
step "official maskinversion_torch ViT-B/16"
(cd gpu-data && timeout 80 python3 reference_timing.py ViT-B-16 448,224) 2>$OUT/ref_b16.err | tee $OUT/ref_b16.jsonl

fi
if want index; then
step "index: COCO128 x8, 10 boxes per photo, ViT-B/16 at 224"
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits -lms 200 > $OUT/smi_index.csv &
smi=$!
timeout 120 $RS index $rep --boxes gpu-data/boxes_x8.json --mask-from box --pipeline /tmp/boxes-224.toml \
  --model random:vit-b-16 --device cuda --out /tmp/idx --json > $OUT/index.json 2>$OUT/index.err
echo "index exit $?"; kill $smi 2>/dev/null
cat $OUT/index.json; tail -3 $OUT/index.err

fi
if want tests; then
step "tests/it/gpu.rs"
timeout 120 $bin/gpu-tests gpu:: --test-threads=1 --nocapture > $OUT/gpu_tests.txt 2>&1; echo "gpu tests exit $?"
grep -E 'test result|panicked|FAILED|kernels vs twin|cosine 0\.9[0-8]' $OUT/gpu_tests.txt | head -20

fi
if want fused; then
step "fused map kernels against the generic products, ViT-B/16 at 448"
timeout 90 $RS bench --device cuda --models random:vit-b-16 --sizes 448 --masks 10,100 --grad auto \
  --map-kernel generic,fused --repeat 3 2>$OUT/fused.err | tee $OUT/fused.jsonl
timeout 90 $RS index $rep --boxes gpu-data/boxes_x8.json --mask-from box \
  --pipeline /tmp/boxes-224-fused.toml --model random:vit-b-16 --device cuda --out /tmp/idx-fused --json \
  > $OUT/index_fused.json 2>$OUT/index_fused.err
echo "index (fused) exit $?"; cat $OUT/index_fused.json
fi
if want l14; then
step "ViT-L/14 at 448, ours and official"
timeout 70 $RS bench --device cuda --models random:vit-l-14 --sizes 448 --masks 10,100 --grad auto --repeat 2 \
  2>$OUT/bench_l14.err | tee $OUT/bench_l14.jsonl
(cd gpu-data && timeout 80 python3 reference_timing.py ViT-L-14 448) 2>$OUT/ref_l14.err | tee $OUT/ref_l14.jsonl

fi
if want precision; then
step "precisions: time at 100 masks, parity at 10"
for p in tf32 bf16 bf16-jacobian; do
  timeout 30 $RS bench --device cuda --precision $p --models random:vit-b-16 --sizes 448 --masks 100 --grad auto \
    --repeat 2 2>>$OUT/prec.err | tee -a $OUT/prec.jsonl
  timeout 40 $RS bench --device cuda --precision $p --models random:vit-b-16 --sizes 448 --masks 10 --grad auto \
    --parity 2>>$OUT/prec.err | tee -a $OUT/prec.jsonl
done
fi
step "done"
python3 - "$OUT" <<'P'
import json, os, sys
out = sys.argv[1]
def rows(name):
    p = os.path.join(out, name)
    return [json.loads(l) for l in open(p) if l.startswith("{")] if os.path.exists(p) else []
ref = {(r["arch"].lower().replace("-", ""), r["size"], r["masks"]): r for r in rows("ref_b16.jsonl") + rows("ref_l14.jsonl")}
print(f"{'model':16} {'S':>4} {'M':>4} {'grad':9} {'maps':7} {'prec':13} {'ours ms':>8} {'official ms':>11} {'ratio':>6} {'beyond MiB':>10} {'parity min':>10}")
for r in rows("bench_b16.jsonl") + rows("bench_l14.jsonl") + rows("fused.jsonl") + rows("prec.jsonl"):
    arch = r["model"].split(":")[1].replace("-", "")
    o = ref.get((arch, r["size"], r["masks"]))
    osec = o and o.get("seconds")
    print(f"{r['model']:16} {r['size']:>4} {r['masks']:>4} {r['grad']+('*' if r.get('grad_asked')=='auto' else ''):9} "
          f"{r.get('map_kernel', 'generic'):7} {r['precision']:13} {1000*r['total_s']:8.1f} {1000*osec if osec else float('nan'):11.1f} "
          f"{osec/r['total_s'] if osec else float('nan'):6.1f} {r.get('gpu_beyond_baseline_mib') or float('nan'):10.0f} "
          f"{r.get('parity_min_cos') or float('nan'):10.6f}")
for name in ("index.json", "index_fused.json"):
    try:
        ix = json.load(open(os.path.join(out, name)))
        print(f"{name}: {ix['images_processed']} photos, {ix['regions_added']} regions, "
              f"{ix['images_per_second']:.1f} photos/s, model busy {100*ix['model_busy_fraction']:.0f}%, "
              f"GPU utilisation {ix.get('gpu_utilisation')}")
    except Exception as e:
        print(f"{name}: no report ({e})")
print("(* = auto's choice)")
P
