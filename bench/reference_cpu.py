"""Times the official MaskInversion (maskinversion_torch 1.1) on CPU on random-init OpenCLIP weights, the
same work as `regionseek bench` (one image, M random masks at S×S, K=10, lr 0.5). One JSON line per row.

usage: python bench/reference_cpu.py ViT-B-32,ViT-B-16 224 10
"""
import io, json, sys, time
from contextlib import redirect_stdout

import torch
import open_clip
from maskinversion import MaskInversion

archs = sys.argv[1].split(",")
sizes = [int(s) for s in sys.argv[2].split(",")]
counts = [int(m) for m in sys.argv[3].split(",")]
torch.manual_seed(0)
for arch in archs:
    for size in sizes:
        model, _, _ = open_clip.create_model_and_transforms(arch, pretrained=None, force_quick_gelu=True)
        with redirect_stdout(io.StringIO()):
            mi = MaskInversion(model.eval(), lr=0.5, iterations=10)
        for m in counts:
            img = torch.randn(1, 3, size, size)
            masks = (torch.rand(m, size, size) > 0.7).float()
            best = None
            for rep in range(2):  # one warm-up
                t = time.time()
                mi.compute_maskinversion(img, masks)
                dt = time.time() - t
                if rep > 0:
                    best = dt
            print(json.dumps(dict(arch=arch, size=size, masks=m, seconds=round(best, 3),
                                  threads=torch.get_num_threads())), flush=True)
