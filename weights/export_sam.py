"""Exports a Segment Anything model as the ONNX pair regionseek's SAM stage runs.

usage:
  python weights/export_sam.py --model-type vit_b --checkpoint sam_vit_b_01ec64.pth --out weights/sam-vit-b
  python weights/export_sam.py --model-type vit_t --checkpoint mobile_sam.pt --out weights/mobile-sam   # needs mobile_sam

Writes OUT/encoder.onnx and OUT/decoder.onnx (+ OUT/sam.json naming them):
- encoder: input `images` float32 [1, 3, 1024, 1024] (RGB resized to 1024 on the longest side, normalised with
  SAM's pixel mean/std, zero-padded at the bottom/right), output `image_embeddings` [1, C, 64, 64];
- decoder: exactly the official `scripts/export_onnx_model.py` export of segment_anything (SamOnnxModel,
  opset 17, all 4 masks: `return_single_mask=False`): inputs `image_embeddings, point_coords, point_labels,
  mask_input, has_mask_input, orig_im_size`, outputs `masks, iou_predictions, low_res_masks`.
Pinned stack: torch 2.15.0, segment-anything 1.0, onnx 1.23.2 (tests/fixtures/requirements.txt). torch's
TorchScript exporter is used (`dynamo=False`), as the official script does.
"""
import argparse
import json
import warnings
from pathlib import Path

import torch

OPSET = 17


class EncoderOnnx(torch.nn.Module):
    """The image encoder alone: preprocessing (resize, normalise, pad) stays outside the graph, as in the
    Python predictor, so the caller controls it exactly."""

    def __init__(self, sam):
        super().__init__()
        self.image_encoder = sam.image_encoder

    def forward(self, images):
        return self.image_encoder(images)


def export_encoder(sam, path):
    size = sam.image_encoder.img_size
    dummy = torch.zeros(1, 3, size, size, dtype=torch.float)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=UserWarning)
        torch.onnx.export(
            EncoderOnnx(sam).eval(),
            (dummy,),
            str(path),
            export_params=True,
            opset_version=OPSET,
            do_constant_folding=True,
            input_names=["images"],
            output_names=["image_embeddings"],
            dynamo=False,
        )


class LowResDecoder(torch.nn.Module):
    """SamOnnxModel without its full-size `masks` output: that branch upsamples every mask of every prompt to
    1024x1024 and then to the photo, and ONNX Runtime computes it even when it is not fetched. regionseek reads
    only `iou_predictions` and `low_res_masks` and does the upsampling itself, as SamPredictor does."""

    def __init__(self, onnx_model):
        super().__init__()
        self.inner = onnx_model

    def forward(self, image_embeddings, point_coords, point_labels, mask_input, has_mask_input, orig_im_size):
        _, scores, low_res = self.inner(image_embeddings, point_coords, point_labels, mask_input, has_mask_input,
                                        orig_im_size)
        return scores, low_res


def export_decoder(sam, path, return_single_mask=False, batch_axis=False):
    """The official SamOnnxModel export. `batch_axis=True` makes the prompts' first axis dynamic, so that many
    independent prompts (e.g. the automatic generator's grid points) share one decoder run, and leaves out the
    unused full-size `masks` output (LowResDecoder); regionseek reads both kinds."""
    from segment_anything.utils.onnx import SamOnnxModel

    model = SamOnnxModel(model=sam, return_single_mask=return_single_mask).eval()
    if batch_axis:
        model = LowResDecoder(model).eval()
    embed_dim = sam.prompt_encoder.embed_dim
    embed_size = sam.prompt_encoder.image_embedding_size
    mask_input_size = [4 * x for x in embed_size]
    dummy = {
        "image_embeddings": torch.randn(1, embed_dim, *embed_size, dtype=torch.float),
        # Traced with two prompts when batched, so that no shape of 1 is folded into the graph.
        "point_coords": torch.randint(low=0, high=1024, size=(2 if batch_axis else 1, 5, 2), dtype=torch.float),
        "point_labels": torch.randint(low=0, high=4, size=(2 if batch_axis else 1, 5), dtype=torch.float),
        "mask_input": torch.randn(1, 1, *mask_input_size, dtype=torch.float),
        "has_mask_input": torch.tensor([1], dtype=torch.float),
        "orig_im_size": torch.tensor([1500, 2250], dtype=torch.float),
    }
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=UserWarning)
        torch.onnx.export(
            model,
            tuple(dummy.values()),
            str(path),
            export_params=True,
            verbose=False,
            opset_version=OPSET,
            do_constant_folding=True,
            input_names=list(dummy.keys()),
            output_names=["iou_predictions", "low_res_masks"] if batch_axis else ["masks", "iou_predictions", "low_res_masks"],
            dynamic_axes={
                "point_coords": {0: "batch", 1: "num_points"} if batch_axis else {1: "num_points"},
                "point_labels": {0: "batch", 1: "num_points"} if batch_axis else {1: "num_points"},
            },
            dynamo=False,
        )


def export_pair(sam, out_dir, name, batch_axis=False):
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    export_encoder(sam, out_dir / "encoder.onnx")
    export_decoder(sam, out_dir / "decoder.onnx", batch_axis=batch_axis)
    meta = {"name": name, "encoder": "encoder.onnx", "decoder": "decoder.onnx", "image_size": sam.image_encoder.img_size}
    (out_dir / "sam.json").write_text(json.dumps(meta, indent=1) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-type", required=True, help="vit_b, vit_l, vit_h (segment_anything) or vit_t (mobile_sam)")
    ap.add_argument("--checkpoint", help="the official checkpoint (.pth)")
    ap.add_argument(
        "--random",
        action="store_true",
        help="random-init weights (torch seed 0) instead of a checkpoint: for timing, never for real masks",
    )
    ap.add_argument("--out", required=True)
    ap.add_argument(
        "--batch-1",
        action="store_true",
        help="the official decoder signature with batch 1 (default: a batch axis, so that `auto-sam` decodes 64 "
        "grid points per run instead of one)",
    )
    args = ap.parse_args()
    if args.model_type == "vit_t":
        from mobile_sam import sam_model_registry
    else:
        from segment_anything import sam_model_registry
    if args.random == bool(args.checkpoint):
        ap.error("give --checkpoint FILE or --random")
    if args.random:
        import torch

        torch.manual_seed(0)
    sam = sam_model_registry[args.model_type](checkpoint=args.checkpoint).eval()
    export_pair(sam, args.out, f"sam-{args.model_type}", batch_axis=not args.batch_1)
    print(f"wrote {args.out}/encoder.onnx, decoder.onnx, sam.json")


if __name__ == "__main__":
    main()
