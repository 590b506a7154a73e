"""Times segment_anything's SamAutomaticMaskGenerator on one photo (CPU torch), split like `regionseek sam
--auto --json` reports it: encoder (set_image), decoder (predict_torch per batch of points), post-processing (the
rest). Prints one JSON line. The same photo and parameters go to `regionseek sam --auto` in the same sitting.

usage: python bench/auto_sam_reference.py MODEL PHOTO [--points-per-side 32] [--pred-iou-thresh 0.88]
       [--stability-score-thresh 0.95] [--threads 2]
MODEL: `tiny-sharp` (tests/fixtures/make_auto_sam.py's model) or `vit_b-random` (a random-init ViT-B, seed 0,
the architecture weights/export_sam.py exports with --random).
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

root = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(root / "tests" / "fixtures"))
sys.path.insert(0, str(root / "weights"))


def load(name):
    if name == "tiny-sharp":
        from make_auto_sam import sharp_tiny_sam
        return sharp_tiny_sam()
    if name == "vit_b-random":
        from segment_anything import sam_model_registry
        torch.manual_seed(0)
        return sam_model_registry["vit_b"](checkpoint=None).eval()
    raise SystemExit(f"unknown model {name}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("photo")
    ap.add_argument("--points-per-side", type=int, default=32)
    ap.add_argument("--pred-iou-thresh", type=float, default=0.88)
    ap.add_argument("--stability-score-thresh", type=float, default=0.95)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from segment_anything import SamAutomaticMaskGenerator
    sam = load(a.model)
    gen = SamAutomaticMaskGenerator(sam, points_per_side=a.points_per_side, pred_iou_thresh=a.pred_iou_thresh,
                                    stability_score_thresh=a.stability_score_thresh)
    spent = {"encoder_s": 0.0, "decoder_s": 0.0}
    p = gen.predictor
    set_image, predict_torch = p.set_image, p.predict_torch

    def timed(key, f):
        def g(*args, **kw):
            t = time.perf_counter()
            r = f(*args, **kw)
            spent[key] += time.perf_counter() - t
            return r
        return g

    p.set_image = timed("encoder_s", set_image)
    p.predict_torch = timed("decoder_s", predict_torch)
    image = np.array(Image.open(a.photo).convert("RGB"))
    with torch.no_grad():
        t = time.perf_counter()
        masks = gen.generate(image)
        total = time.perf_counter() - t
    print(json.dumps({"impl": "segment_anything", "model": a.model, "photo": a.photo, "width": image.shape[1],
                      "height": image.shape[0], "points_per_side": a.points_per_side, "masks": len(masks),
                      "seconds": total, "encoder_s": spent["encoder_s"], "decoder_s": spent["decoder_s"],
                      "postprocess_s": total - spent["encoder_s"] - spent["decoder_s"], "threads": a.threads}))


if __name__ == "__main__":
    main()
