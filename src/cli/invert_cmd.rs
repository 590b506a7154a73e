//! `regionseek invert`: localized embeddings of masks of one image, with an optional zero-shot ranking.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use image::RgbImage;
use regionseek::baselines::{self, Baseline};
use regionseek::invert::{invert_image, validate_mask, GradChoice, InversionConfig};
use regionseek::masks::BinaryMask;
use regionseek::pipeline::query;
use serde_json::json;

use super::args::{InversionArgs, ModelArgs};
use super::choice::choice;
use super::output::{print_json, write_atomic};

/// `maskinversion` (None) or one of the baselines.
#[derive(Clone, Copy, Debug)]
pub struct MethodChoice(pub Option<Baseline>);

pub fn parse_method(s: &str) -> Result<MethodChoice, String> {
    if s == "maskinversion" {
        return Ok(MethodChoice(None));
    }
    s.parse::<Baseline>()
        .map(|b| MethodChoice(Some(b)))
        .map_err(|_| format!("unknown method `{s}` (maskinversion, cls, crop, masked-crop, mask-pool, red-circle, blur)"))
}

#[derive(clap::Args)]
pub struct InvertArgs {
    image: PathBuf,
    /// A mask PNG at the image's resolution (repeat for several regions).
    #[arg(long = "mask", required = true)]
    masks: Vec<PathBuf>,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    inversion: InversionArgs,
    /// Gradient path: auto picks the cheaper of the cached Jacobian and the direct chain.
    #[arg(long, value_parser = choice::<GradChoice>(), default_value = "auto")]
    grad: GradChoice,
    /// maskinversion, or a baseline: cls, crop, masked-crop, mask-pool, red-circle, blur.
    #[arg(long, value_parser = parse_method, default_value = "maskinversion")]
    method: MethodChoice,
    /// Comma-separated class names: prints each region's zero-shot ranking ("a photo of a {}.").
    #[arg(long, value_delimiter = ',')]
    labels: Vec<String>,
    /// Write each region's final explainability map as a PNG overlay on the image into this folder.
    #[arg(long)]
    save_maps: Option<PathBuf>,
    /// Turn the photo upright by its EXIF orientation first (default: its stored frame, as Pillow opens it).
    #[arg(long)]
    exif_rotate: bool,
    #[arg(long)]
    json: bool,
}

fn jet(v: f32) -> [f32; 3] {
    let v = v.clamp(0.0, 1.0);
    let r = (1.5 - (4.0 * v - 3.0).abs()).clamp(0.0, 1.0);
    let g = (1.5 - (4.0 * v - 2.0).abs()).clamp(0.0, 1.0);
    let b = (1.5 - (4.0 * v - 1.0).abs()).clamp(0.0, 1.0);
    [r, g, b]
}

fn overlay(img: &RgbImage, map: &[f32]) -> RgbImage {
    let mut out = img.clone();
    for (i, p) in out.pixels_mut().enumerate() {
        let c = jet(map[i]);
        for k in 0..3 {
            p[k] = (0.4 * p[k] as f32 + 0.6 * 255.0 * c[k]).round() as u8;
        }
    }
    out
}

fn save_png(img: &RgbImage, path: &Path) -> anyhow::Result<()> {
    let mut bytes = Vec::new();
    image::DynamicImage::ImageRgb8(img.clone()).write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )?;
    Ok(write_atomic(path, &bytes)?)
}

pub fn run(a: InvertArgs) -> anyhow::Result<ExitCode> {
    let model = a.model.load()?;
    let img = super::load_photo(&a.image, a.exif_rotate)?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut masks = Vec::new();
    let mut read_errors = Vec::new();
    for p in &a.masks {
        match BinaryMask::read(p) {
            Ok(m) => {
                read_errors.push(None);
                masks.push(m);
            }
            Err(e) => {
                read_errors.push(Some(e.to_string()));
                masks.push(BinaryMask::zeros(0, 0));
            }
        }
    }
    let cfg = InversionConfig {
        grad: a.grad,
        keep_maps: a.save_maps.is_some(),
        ..a.inversion.config()
    };
    let started = std::time::Instant::now();
    // Per mask: (embedding, final dice, dice trace, map) or an error.
    type Row = Result<(Vec<f32>, Option<f32>, Vec<f32>, Option<Vec<f32>>), String>;
    let mut report = serde_json::Value::Null;
    let rows: Vec<Row> = match a.method.0 {
        None => {
            let out = invert_image(&model, &img, &masks, &cfg)?;
            report = serde_json::to_value(&out.report)?;
            out.masks
                .into_iter()
                .map(|r| r.map(|r| (r.embedding, Some(r.final_dice), r.dice_trace, r.map)))
                .collect()
        }
        Some(method) => {
            let valid: Vec<usize> = (0..masks.len())
                .filter(|&i| validate_mask(&masks[i], w, h).is_ok())
                .collect();
            let picked: Vec<BinaryMask> = valid.iter().map(|&i| masks[i].clone()).collect();
            let embs = baselines::embed_regions(&model, &img, &picked, method)?;
            let mut rows: Vec<Row> = masks
                .iter()
                .map(|m| Err(validate_mask(m, w, h).err().unwrap_or_default()))
                .collect();
            for (i, e) in valid.into_iter().zip(embs) {
                rows[i] = Ok((e, None, vec![], None));
            }
            rows
        }
    };
    let seconds = started.elapsed().as_secs_f64();

    let text_embeddings = if a.labels.is_empty() {
        None
    } else {
        let prompts: Vec<String> = a.labels.iter().map(|l| query::prompt(l)).collect();
        Some(query::text_embeddings(&model, &prompts).context("encoding labels")?)
    };
    if let Some(dir) = &a.save_maps {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut failures = 0;
    for (i, (path, row)) in a.masks.iter().zip(rows).enumerate() {
        let row = match (&read_errors[i], row) {
            (Some(e), _) => Err(e.clone()),
            (None, r) => r,
        };
        match row {
            Ok((emb, final_dice, trace, map)) => {
                let ranking: Vec<(String, f32)> = text_embeddings
                    .as_ref()
                    .map(|texts| query::rank_labels(&model, &emb, &a.labels, texts))
                    .unwrap_or_default();
                let map_file = match (&a.save_maps, &map) {
                    (Some(dir), Some(m)) => {
                        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("mask");
                        let file = dir.join(format!("{i:03}_{stem}_map.png"));
                        save_png(&overlay(&img, m), &file)?;
                        Some(file)
                    }
                    _ => None,
                };
                if a.json {
                    print_json(&json!({
                        "image": a.image, "mask": path, "method": a.method.0.map(Baseline::name).unwrap_or("maskinversion"),
                        "model": model.id(), "final_dice": final_dice, "dice_trace": trace,
                        "embedding": emb, "ranking": ranking.iter().map(|(l, p)| json!({"label": l, "prob": p})).collect::<Vec<_>>(),
                        "map": map_file,
                    }))?;
                } else {
                    let loss = final_dice
                        .map(|d| format!("dice {d:.4}"))
                        .unwrap_or_default();
                    let top: Vec<String> = ranking
                        .iter()
                        .take(5)
                        .map(|(l, p)| format!("{l} {p:.3}"))
                        .collect();
                    println!("{}\t{loss}\t{}", path.display(), top.join(", "));
                }
            }
            Err(e) => {
                failures += 1;
                if a.json {
                    print_json(&json!({"image": a.image, "mask": path, "error": e}))?;
                } else {
                    eprintln!("error: {}: {e}", path.display());
                }
            }
        }
    }
    if a.json {
        print_json(
            &json!({"summary": {"masks": a.masks.len(), "failed": failures, "seconds": seconds,
                                       "model": model.id(), "inversion": report}}),
        )?;
    } else {
        eprintln!(
            "{} masks in {seconds:.2} s ({} failed), model {}",
            a.masks.len(),
            failures,
            model.id()
        );
    }
    Ok(if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}
