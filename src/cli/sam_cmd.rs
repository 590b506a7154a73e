//! `regionseek sam`: box prompts on one image to mask PNGs (SAM, or the box itself).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use regionseek::masks::{BinaryMask, Rle};
use regionseek::sam::{box_mask, AutoMaskParams, MaskFrom, SamDevice, SamModel, SamOptions};
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

/// `SamAutomaticMaskGenerator`'s main parameters (the rest keep its defaults).
#[derive(clap::Args, Clone, Debug)]
pub struct AutoArgs {
    /// Segment everything: SAM's automatic masks instead of box prompts.
    #[arg(long)]
    auto: bool,
    #[arg(long, default_value_t = 32)]
    points_per_side: usize,
    #[arg(long, default_value_t = 0.88)]
    pred_iou_thresh: f32,
    #[arg(long, default_value_t = 0.95)]
    stability_score_thresh: f32,
    #[arg(long, default_value_t = 0.7)]
    box_nms_thresh: f64,
    #[arg(long, default_value_t = 0)]
    crop_n_layers: usize,
    #[arg(long, default_value_t = 0)]
    min_mask_region_area: usize,
}

impl AutoArgs {
    fn params(&self) -> AutoMaskParams {
        AutoMaskParams {
            points_per_side: self.points_per_side,
            pred_iou_thresh: self.pred_iou_thresh,
            stability_score_thresh: self.stability_score_thresh,
            box_nms_thresh: self.box_nms_thresh,
            crop_n_layers: self.crop_n_layers,
            min_mask_region_area: self.min_mask_region_area,
            ..Default::default()
        }
    }
}

#[derive(clap::Args)]
pub struct SamArgs {
    image: PathBuf,
    /// A box prompt `x0,y0,x1,y1` in pixels (repeat for several).
    #[arg(long = "box", required_unless_present = "auto", conflicts_with = "auto", value_parser = parse_box, allow_hyphen_values = true)]
    boxes: Vec<[f32; 4]>,
    #[command(flatten)]
    auto: AutoArgs,
    #[command(flatten)]
    sam: SamModelArgs,
    /// Folder for the mask PNGs (`<image stem>_<box index>.png`).
    #[arg(long)]
    out: PathBuf,
    /// Turn the photo upright by its EXIF orientation first (default: its stored frame, as Pillow opens it).
    #[arg(long)]
    exif_rotate: bool,
    #[arg(long)]
    json: bool,
}

/// Creates the output folder; the photo's stem names the files written there.
fn prepare_out(a: &SamArgs) -> anyhow::Result<String> {
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    Ok(a.image
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("image")
        .to_string())
}

/// `--auto`: every automatic mask as a PNG, and the generator's records as `<stem>_auto.json`.
fn run_auto(a: &SamArgs) -> anyhow::Result<ExitCode> {
    let image = super::load_photo(&a.image, a.exif_rotate)?;
    let params = a.auto.params();
    params.validate().map_err(anyhow::Error::msg)?;
    let dir = a
        .sam
        .sam
        .as_ref()
        .context("--auto needs a SAM model: --sam DIR (encoder.onnx + decoder.onnx)")?;
    let mut model = SamModel::load_dir(dir, a.sam.sam_device, a.sam.sam_threads)?;
    let stem = prepare_out(&a)?;
    let started = Instant::now();
    let (masks, timings) = regionseek::sam::auto::generate(&mut model, &image, &params)?;
    let seconds = started.elapsed().as_secs_f64();
    let mut records = Vec::with_capacity(masks.len());
    for (i, m) in masks.iter().enumerate() {
        let file = a.out.join(format!("{stem}_auto-{i:04}.png"));
        m.rle
            .decode()
            .save_png(&file)
            .with_context(|| format!("writing {}", file.display()))?;
        records.push(json!({
            "segmentation": m.rle.to_coco(), "area": m.area, "bbox": m.bbox_xywh,
            "predicted_iou": m.predicted_iou, "point_coords": [m.point],
            "stability_score": m.stability_score, "crop_box": m.crop_box_xywh, "mask_png": file,
        }));
    }
    let records_file = a.out.join(format!("{stem}_auto.json"));
    super::output::write_atomic(&records_file, &serde_json::to_vec(&records)?)?;
    if a.json {
        print_json(&json!({
            "image": a.image, "width": image.width(), "height": image.height(), "params": params,
            "masks": masks.len(), "records": records_file, "seconds": seconds, "timings": timings,
            "decoder_batches": model.decoder_batches,
        }))?;
    } else {
        println!(
            "{} masks from {} prompts in {seconds:.2} s (encoder {:.2} s, decoder {:.2} s, post-processing {:.2} s) \
             -> {}",
            masks.len(),
            timings.prompts,
            timings.encoder_s,
            timings.decoder_s,
            timings.postprocess_s,
            records_file.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run(a: SamArgs) -> anyhow::Result<ExitCode> {
    if a.auto.auto {
        return run_auto(&a);
    }
    let image = super::load_photo(&a.image, a.exif_rotate)?;
    let (w, h) = (image.width() as usize, image.height() as usize);
    let mut model = a.sam.load()?;
    let stem = prepare_out(&a)?;

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
