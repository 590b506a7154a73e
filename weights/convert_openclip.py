"""Converts an OpenCLIP checkpoint (.pt/.bin state dict, or a full pickled model) to the directory layout
regionseek reads: open_clip_config.json + open_clip_model.safetensors.

usage: python weights/convert_openclip.py CHECKPOINT OUT_DIR --arch ViT-B-16 [--quick-gelu]
"""
import argparse
import json
from pathlib import Path

import torch
from safetensors.torch import save_file


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--arch", required=True, help="open_clip architecture name, e.g. ViT-B-16, ViT-H-14")
    ap.add_argument("--quick-gelu", action="store_true", help="the weights were trained with QuickGELU (OpenAI)")
    a = ap.parse_args()

    import open_clip
    cfg = open_clip.get_model_config(a.arch)
    if cfg is None:
        raise SystemExit(f"unknown open_clip architecture {a.arch}")
    cfg = dict(cfg)
    cfg["quick_gelu"] = bool(a.quick_gelu or cfg.get("quick_gelu", False))

    sd = torch.load(a.checkpoint, map_location="cpu", weights_only=False)
    if hasattr(sd, "state_dict"):
        sd = sd.state_dict()
    for key in ("state_dict", "model"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    sd = {k.removeprefix("module."): v.detach().float().contiguous() for k, v in sd.items()
          if torch.is_tensor(v) and k != "attn_mask"}
    missing = [k for k in ("visual.proj", "visual.conv1.weight", "text_projection") if k not in sd]
    if missing:
        raise SystemExit(f"{a.checkpoint} is not an OpenCLIP ViT checkpoint (missing {', '.join(missing)})")

    a.out.mkdir(parents=True, exist_ok=True)
    tmp = a.out / ".open_clip_model.safetensors.part"
    save_file(sd, str(tmp))
    tmp.replace(a.out / "open_clip_model.safetensors")
    mean = (0.48145466, 0.4578275, 0.40821073)
    std = (0.26862954, 0.26130258, 0.27577711)
    (a.out / "open_clip_config.json").write_text(json.dumps(
        {"model_cfg": cfg, "preprocess_cfg": {"mean": list(mean), "std": list(std)}}, indent=1))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
