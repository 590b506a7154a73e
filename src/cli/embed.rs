//! `embed-image` and `embed-text`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use regionseek::clip::preprocess;
use serde_json::json;

use super::args::ModelArgs;
use super::output::print_json;

#[derive(clap::Args)]
pub struct EmbedImageArgs {
    /// Image files.
    #[arg(required = true)]
    images: Vec<PathBuf>,
    #[command(flatten)]
    model: ModelArgs,
    /// Input resolution S (a multiple of the patch size); the image is squash-resized to S×S.
    #[arg(long, default_value_t = 224)]
    size: u32,
    /// Turn the photo upright by its EXIF orientation first (default: its stored frame, as Pillow opens it).
    #[arg(long)]
    exif_rotate: bool,
    /// Print the embeddings as JSON (one object per image).
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct EmbedTextArgs {
    #[arg(required = true)]
    texts: Vec<String>,
    #[command(flatten)]
    model: ModelArgs,
    #[arg(long)]
    json: bool,
}

fn l2(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}

pub fn embed_image(a: EmbedImageArgs) -> anyhow::Result<ExitCode> {
    let model = a.model.load()?;
    let mut failures = 0;
    for path in &a.images {
        let result = (|| -> anyhow::Result<Vec<f32>> {
            let img = super::load_photo(path, a.exif_rotate)?;
            let x = preprocess::squash(&img, a.size, &model.config.normalization, &model.device)?;
            Ok(model.vision.forward(&x)?.squeeze(0)?.to_vec1::<f32>()?)
        })();
        match result {
            Ok(emb) => {
                if a.json {
                    print_json(
                        &json!({"image": path, "model": model.id(), "size": a.size, "embedding": emb}),
                    )?;
                } else {
                    let head: Vec<String> = emb.iter().take(4).map(|v| format!("{v:.4}")).collect();
                    println!(
                        "{}\t{}-d, norm {:.4}, [{} ...]",
                        path.display(),
                        emb.len(),
                        l2(&emb),
                        head.join(", ")
                    );
                }
            }
            Err(e) => {
                failures += 1;
                if a.json {
                    print_json(&json!({"image": path, "error": format!("{e:#}")}))?;
                } else {
                    eprintln!("error: {}: {e:#}", path.display());
                }
            }
        }
    }
    Ok(if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

pub fn embed_text(a: EmbedTextArgs) -> anyhow::Result<ExitCode> {
    let model = a.model.load()?;
    let tok = model.tokenizer()?;
    let emb = model
        .encode_texts(tok, &a.texts)
        .context("encoding texts")?;
    for (text, row) in a.texts.iter().zip(emb.to_vec2::<f32>()?) {
        if a.json {
            print_json(&json!({"text": text, "model": model.id(), "embedding": row}))?;
        } else {
            println!("{text}\t{}-d, norm {:.4}", row.len(), l2(&row));
        }
    }
    Ok(ExitCode::SUCCESS)
}
