//! `regionseek sam`: box prompts on one image to mask PNGs (SAM, or the box itself).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use regionseek::masks::{BinaryMask, Rle};
use regionseek::sam::{box_mask, MaskFrom, SamDevice, SamModel, SamOptions};
use serde_json::json;

use super::output::print_json;

/// `x0,y0,x1,y1` in pixels.
pub fn parse_box(s: &str) -> Result<[f32; 4], String> {
    let v: Vec<f32> = s
        .split(',')
        .map(|p| p.trim().parse::<f32>())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("box `{s}`: {e} (expected x0,y0,x1,y1)"))?;
    <[f32; 4]>::try_from(v)
        .map_err(|v| format!("box `{s}` has {} numbers, expected x0,y0,x1,y1", v.len()))
}

#[derive(clap::Args, Clone, Debug)]
pub struct SamModelArgs {
    /// SAM model directory: encoder.onnx + decoder.onnx (weights/export_sam.py, weights/README.md).
    #[arg(long = "sam")]
    pub sam: Option<PathBuf>,
    /// Where SAM runs; CUDA needs the onnxruntime-gpu library and falls back to the CPU with a warning.
    #[arg(long, default_value = "cpu")]
    pub sam_device: SamDevice,
    /// Best of SAM's three multimask outputs by predicted IoU instead of its single-mask output.
    #[arg(long)]
    pub multimask: bool,
    /// `sam` (prompt SAM with the box) or `box` (the box itself is the mask, no model).
    #[arg(long, default_value = "sam")]
    pub mask_from: MaskFrom,
    /// ONNX Runtime threads.
    #[arg(long, default_value_t = 2)]
    pub sam_threads: usize,
}

impl SamModelArgs {
    /// The SAM model when masks come from SAM, None for `--mask-from box`.
    pub fn load(&self) -> anyhow::Result<Option<SamModel>> {
        if self.mask_from == MaskFrom::Box {
            return Ok(None);
        }
        let dir = self.sam.as_ref().context(
            "SAM needs a model: --sam DIR (encoder.onnx + decoder.onnx), or --mask-from box",
        )?;
        let model = SamModel::load_dir(dir, self.sam_device, self.sam_threads)?;
        Ok(Some(model))
    }

    pub fn options(&self) -> SamOptions {
        SamOptions {
            multimask: self.multimask,
        }
    }
}

#[derive(clap::Args)]
pub struct SamArgs {
    image: PathBuf,
    /// A box prompt `x0,y0,x1,y1` in pixels (repeat for several).
    #[arg(long = "box", required = true, value_parser = parse_box, allow_hyphen_values = true)]
    boxes: Vec<[f32; 4]>,
    #[command(flatten)]
    sam: SamModelArgs,
    /// Folder for the mask PNGs (`<image stem>_<box index>.png`).
    #[arg(long)]
    out: PathBuf,
    #[arg(long)]
    json: bool,
}

pub fn run(a: SamArgs) -> anyhow::Result<ExitCode> {
    let image = regionseek::decode::load_rgb(&a.image)?;
    let (w, h) = (image.width() as usize, image.height() as usize);
    let mut model = a.sam.load()?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let stem = a
        .image
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("image")
        .to_string();

    let started = Instant::now();
    let embedding = match model.as_mut() {
        Some(m) => Some(m.embed(&image)?),
        None => None,
    };
    let encoder_ms = started.elapsed().as_secs_f64() * 1e3;
    let mut regions = Vec::new();
    let mut errors = Vec::new();
    for (index, bbox) in a.boxes.iter().enumerate() {
        let t = Instant::now();
        let result: Result<(BinaryMask, Option<(f32, usize)>, [f32; 4]), String> =
            match (model.as_mut(), &embedding) {
                (Some(m), Some(emb)) => m
                    .predict_box(emb, *bbox, a.sam.options())
                    .map(|r| (r.mask, Some((r.iou_prediction, r.mask_index)), r.prompt_box))
                    .map_err(|e| e.to_string()),
                _ => box_mask(*bbox, w, h)
                    .map(|m| {
                        let clipped =
                            regionseek::sam::transform::clip_box(*bbox, w, h).unwrap_or(*bbox);
                        (m, None, clipped)
                    })
                    .map_err(|e| e.to_string()),
            };
        let ms = t.elapsed().as_secs_f64() * 1e3;
        match result {
            Ok((mask, sam_info, prompt_box)) => {
                let file = a.out.join(format!("{stem}_{index}.png"));
                mask.save_png(&file)
                    .with_context(|| format!("writing {}", file.display()))?;
                let rle = Rle::encode(&mask).to_coco();
                if !a.json {
                    println!(
                        "box {index} {:?}: {} px{} -> {}",
                        bbox,
                        mask.area(),
                        sam_info
                            .map(|(iou, _)| format!(", predicted IoU {iou:.3}"))
                            .unwrap_or_default(),
                        file.display()
                    );
                }
                regions.push(json!({
                    "index": index, "box": bbox, "prompt_box": prompt_box, "mask_png": file,
                    "mask_rle": rle, "area": mask.area(),
                    "iou_prediction": sam_info.map(|s| s.0), "mask_index": sam_info.map(|s| s.1),
                    "ms": ms,
                }));
            }
            Err(e) => {
                eprintln!("box {index} {bbox:?}: {e}");
                errors.push(json!({"index": index, "box": bbox, "error": e}));
            }
        }
    }
    if a.json {
        print_json(&json!({
            "image": a.image, "width": w, "height": h,
            "mask_from": a.sam.mask_from,
            "model": model.as_ref().map(|m| m.files.encoder.parent().map(|p| p.display().to_string())),
            "device": model.as_ref().map(|m| m.device),
            "multimask": a.sam.multimask,
            "encoder_ms": model.as_ref().map(|_| encoder_ms),
            "regions": regions, "errors": errors,
        }))?;
    }
    Ok(if errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}
