"""Index a folder of photos by region from Python and look at the best regions for a text query, each drawn
over its photo with its mask (matplotlib). Runs as a script or cell by cell in a notebook (the `# %%` marks).

    pip install ./python matplotlib pillow
    python examples/notebook.py [PHOTOS_DIR COCO_JSON] [--model DIR] [--query TEXT] [--out FILE.png]

Defaults: 16 COCO128 photos from ../shared/data with a built-in random ViT-B/32, whose scores mean nothing:
pass --model with real CLIP weights (weights/README.md) for real answers.
"""

# %%
import argparse
from pathlib import Path

import matplotlib

if __name__ == "__main__":
    matplotlib.use("Agg")  # as a script: draw into --out; in a notebook: inline
import matplotlib.pyplot as plt
import numpy as np
from PIL import Image

import regionseek

root = Path(__file__).resolve().parents[1] if "__file__" in globals() else Path.cwd()
data = root.parent / "shared" / "data" / "coco128"
p = argparse.ArgumentParser()
p.add_argument("photos", nargs="?", default=str(data / "images"))
p.add_argument("coco", nargs="?", default=str(data / "instances.json"))
p.add_argument("--model", default="random:vit-b-32")
p.add_argument("--query", default="a dog lying on a sofa")
p.add_argument("--limit", type=int, default=16)
p.add_argument("--index", default=str(root / "target" / "notebook-index"))
p.add_argument("--out", default=str(root / "target" / "notebook-hits.png"))
args = p.parse_args() if __name__ == "__main__" else p.parse_args([])

# %% Index (a rerun only embeds what is missing; Ctrl-C stops cleanly and keeps what is done)
report = regionseek.index_photos(
    args.photos, coco=args.coco, out=args.index, model=args.model, limit=args.limit, progress=True
)
print(f"{report['regions_added']} regions added, {report['rows_total']} in the index, {report['seconds']:.0f} s")

# %% Search
ix = regionseek.Index.open(args.index)
hits = ix.search(args.query, k=6)
for h in hits:
    print(f"{h['score']:.3f}  {h['image']}  region {h['region_id']}  {h['label']}  box {h['box']}")

# %% Show each hit's mask over its photo
fig, axes = plt.subplots(2, 3, figsize=(12, 7))
for ax, h in zip(axes.flat, hits):
    photo = np.asarray(Image.open(Path(args.photos) / h["image"]).convert("RGB"))
    mask = regionseek.mask_from_rle(h["mask_rle"])
    shown = photo.copy()
    shown[mask] = (0.45 * shown[mask] + 0.55 * np.array([255, 64, 32])).astype(np.uint8)
    x0, y0, x1, y1 = h["box"]
    ax.imshow(shown)
    ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="yellow", lw=2))
    ax.set_title(f"{h['score']:.3f} {h['label'] or ''}", fontsize=10)
    ax.axis("off")
for ax in list(axes.flat)[len(hits):]:
    ax.axis("off")
fig.suptitle(f"\u201c{args.query}\u201d \u2014 {ix.model_id}")
fig.tight_layout()
fig.savefig(args.out, dpi=80)
print("saved", args.out)
