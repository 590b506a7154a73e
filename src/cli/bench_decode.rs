//! `regionseek bench-decode DIR`: how fast photos decode to RGB, regionseek's Pillow-exact decoder (JPEG by
//! libjpeg-turbo) against the `image` crate's (zune-jpeg for JPEG: what regionseek used before), in the same
//! sitting, on the same bytes held in memory (file reads are not timed). One JSON line per decoder.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use serde_json::json;

use super::output::write_atomic;

#[derive(clap::Args)]
pub struct BenchDecodeArgs {
    /// A folder of photos (every file in it is decoded).
    images: PathBuf,
    /// Passes over the folder per decoder; the fastest pass is reported (the others warm caches up).
    #[arg(long, default_value_t = 3)]
    passes: usize,
    /// Also write the rows as a JSON array to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Rows are always JSON; accepted for symmetry with the other commands.
    #[arg(long)]
    json: bool,
}

type Decoder = fn(&[u8], &Path) -> anyhow::Result<(u32, u32)>;

fn regionseek_decoder(bytes: &[u8], name: &Path) -> anyhow::Result<(u32, u32)> {
    let img = regionseek::decode::decode_rgb(bytes, name, &Default::default())?;
    Ok(img.dimensions())
}

fn image_crate_decoder(bytes: &[u8], _name: &Path) -> anyhow::Result<(u32, u32)> {
    let img = image::load_from_memory(bytes)?.to_rgb8();
    Ok(img.dimensions())
}

pub fn run(args: BenchDecodeArgs) -> anyhow::Result<ExitCode> {
    let mut photos = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&args.images)
        .with_context(|| format!("reading {}", args.images.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    entries.sort();
    for p in entries {
        let bytes = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
        photos.push((p, bytes));
    }
    anyhow::ensure!(!photos.is_empty(), "no photos in {}", args.images.display());
    let decoders: [(&str, &str, Decoder); 2] = [
        (
            "regionseek",
            "libjpeg-turbo 3.1.0 (JPEG), png/gif/tiff raw samples + Pillow's conversions, libheif 1.23.1 (HEIC; AVIF planes + libyuv's arithmetic)",
            regionseek_decoder,
        ),
        (
            "image-crate",
            "image 0.25 (zune-jpeg), to_rgb8",
            image_crate_decoder,
        ),
    ];
    let mut rows = Vec::new();
    for (name, what, decode) in decoders {
        let mut best = f64::INFINITY;
        let mut pixels = 0u64;
        let mut failed = 0usize;
        for _ in 0..args.passes.max(1) {
            pixels = 0;
            failed = 0;
            let t = Instant::now();
            for (path, bytes) in &photos {
                match decode(bytes, path) {
                    Ok((w, h)) => pixels += w as u64 * h as u64,
                    Err(e) => {
                        failed += 1;
                        tracing::warn!("{}: {e}", path.display());
                    }
                }
            }
            best = best.min(t.elapsed().as_secs_f64());
        }
        let row = json!({
            "bench": "decode",
            "decoder": name,
            "implementation": what,
            "photos": photos.len(),
            "failed": failed,
            "megapixels": pixels as f64 / 1e6,
            "seconds": best,
            "megapixels_per_s": pixels as f64 / 1e6 / best,
            "photos_per_s": (photos.len() - failed) as f64 / best,
            "threads": 1,
        });
        println!("{}", serde_json::to_string(&row)?);
        rows.push(row);
    }
    if let Some(out) = &args.out {
        write_atomic(out, serde_json::to_string_pretty(&rows)?.as_bytes())?;
    }
    Ok(ExitCode::SUCCESS)
}
