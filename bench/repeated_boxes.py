"""Boxes JSON for the GPU indexing throughput run: COCO128 repeated R times, exactly 10 boxes per photo (its
ground-truth boxes first, then a 3x3 grid to fill up), with region ids unique per repeat so that no repeat is
skipped as already indexed. Photos are named rep<r>/<file>: link each repeat's folder to the same images.
usage: python bench/repeated_boxes.py INSTANCES_JSON REPEATS OUT_JSON"""
import collections
import json
import sys

instances, repeats, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
coco = json.load(open(instances))
boxes_of = collections.defaultdict(list)
for a in coco["annotations"]:
    x, y, w, h = a["bbox"]
    if w >= 2 and h >= 2:
        boxes_of[a["image_id"]].append([x, y, x + w, y + h])
rows = []
for r in range(repeats):
    for im in coco["images"]:
        w, h = im["width"], im["height"]
        boxes = boxes_of[im["id"]][:10]
        k = 0
        while len(boxes) < 10:
            i, j = k % 3, (k // 3) % 3
            boxes.append([w * i / 3, h * j / 3, w * (i + 1) / 3, h * (j + 1) / 3])
            k += 1
        for n, b in enumerate(boxes):
            rows.append(
                {"image": f"rep{r}/{im['file_name']}", "box": [round(v, 2) for v in b], "id": f"rep{r}_r{n}"}
            )
json.dump(rows, open(out, "w"))
print(f"{len(rows)} boxes on {repeats * len(coco['images'])} photos -> {out}")
