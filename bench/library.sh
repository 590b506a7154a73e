#!/usr/bin/env bash
# The library pipeline on a real folder, and the old plain-folder default beside it, in one sitting.
#
#   bench/library.sh [MODEL] [AUTO_GRID_PHOTOS]      (defaults: random:vit-b-32, 16)
#
# Builds a nested copy of the 128 COCO128 photos (../shared/data) with non-photo files among them (a text file,
# a video, a sidecar, a hidden file per folder), indexes it with `regionseek index DIR --out ...` and default
# settings (the `library` pipeline), checks that a search returns no region twice, then indexes the first
# AUTO_GRID_PHOTOS photos with `--pipeline auto-grid` (the former way to index a plain folder). Writes
# bench/results/library-DATE.json: both reports, the wall times, the time until every photo was searchable.
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-random:vit-b-32}
grid_photos=${2:-16}
data=${REGIONSEEK_DATA:-../shared/data}
bin=target/release/regionseek
[ -x "$bin" ] || cargo build --release
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
lib="$work/photos"
i=0
for p in "$data"/coco128/images/*.jpg; do
  sub="$lib/$(( i % 4 ))/$(( i % 3 ))"
  mkdir -p "$sub"
  cp "$p" "$sub/"
  i=$((i + 1))
done
for d in "$lib"/*/; do
  echo "notes" > "$d/notes.txt"
  printf '\0\0\0\x18ftypmp42' > "$d/clip.mp4"
  echo '<x:xmpmeta/>' > "$d/photo.xmp"
  cp "$(ls "$data"/coco128/images/*.jpg | head -1)" "$d/.thumbnail.jpg"
done

now() { date +%s.%N; }
t0=$(now)
"$bin" index "$lib" --out "$work/library-index" --model "$model" --json > "$work/library.json" 2> "$work/library.log" || true
t1=$(now)
"$bin" search "$work/library-index" "a dog on a sofa" --k 100000 --json > "$work/hits.json"
t2=$(now)
"$bin" index "$lib" --out "$work/grid-index" --model "$model" --pipeline auto-grid --limit "$grid_photos" --json \
  > "$work/grid.json" 2> "$work/grid.log" || true
t3=$(now)

mkdir -p bench/results
out="bench/results/library-$(date -u +%Y-%m-%d).json"
python3 - "$work" "$t0" "$t1" "$t2" "$t3" "$model" "$out" <<'PY'
import json, sys, platform, os
work, t0, t1, t2, t3, model, out = sys.argv[1], *map(float, sys.argv[2:6]), sys.argv[6], sys.argv[7]
lib = json.load(open(f"{work}/library.json"))
grid = json.load(open(f"{work}/grid.json"))
hits = json.load(open(f"{work}/hits.json"))["hits"]
keys = [(h["image"], h["region_id"]) for h in hits]
tiers = lib["tiers"]
wall = t1 - t0
# The run's clock starts once the model is loaded; what came before is process start and model load.
load_s = wall - lib["seconds"]
result = {
    "date": __import__("datetime").datetime.utcnow().isoformat() + "Z",
    "machine": f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}",
    "model": model,
    "library": {
        "wall_s": wall,
        "model_load_s": load_s,
        "searchable_after_s": load_s + tiers["quick_seconds"],
        "quick_photos_per_second": tiers["quick_photos_per_second"],
        "refined_regions_per_second": tiers["refined_regions_per_second"],
        "regions_per_photo_max": 24,
        "hits": len(hits),
        "regions_returned_twice": len(keys) - len(set(keys)),
        "methods": sorted({h["method"] for h in hits}),
        "report": lib,
    },
    "auto_grid": {"wall_s": t3 - t2, "photos": grid_photos if (grid_photos := grid["images_processed"]) else 0, "report": grid},
}
json.dump(result, open(out, "w"), indent=1)
s = result["library"]
print(f"library: searchable after {s['searchable_after_s']:.1f} s ({s['quick_photos_per_second']:.1f} photos/s), "
      f"refined {s['refined_regions_per_second']:.2f} regions/s, {tiers['quick_regions']} regions, "
      f"{s['regions_returned_twice']} returned twice, failures {lib['failures']}, skipped {lib['skipped']}, "
      f"peak RSS {lib['peak_rss_mb']:.0f} MB")
print(f"auto-grid: {grid['images_processed']} photos, {grid['images_per_second']:.3f} photos/s, "
      f"{grid['regions_per_second']:.2f} regions/s, peak RSS {grid['peak_rss_mb']:.0f} MB")
print(f"written to {out}")
PY
