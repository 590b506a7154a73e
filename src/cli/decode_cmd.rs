//! `regionseek decode FILE...`: how regionseek reads each photo: its format, size and frame and a hash of its
//! pixels (the sha256 of the RGB bytes, comparable with `hashlib.sha256(Image.open(p).convert("RGB").tobytes())`),
//! or why it is refused, in the words every other command uses.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::output::write_atomic;

#[derive(clap::Args)]
pub struct DecodeArgs {
    /// Photo files.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Turn each photo upright by its EXIF orientation, as `index --exif-rotate` does.
    #[arg(long)]
    exif_rotate: bool,
    /// Photos with more pixels are refused from their header.
    #[arg(long, default_value_t = regionseek::decode::DEFAULT_MAX_PIXELS)]
    max_pixels: u64,
    /// Also write each decoded photo's RGB bytes (row-major, 3 per pixel) to DIR/NAME.rgb.
    #[arg(long, value_name = "DIR")]
    rgb_out: Option<PathBuf>,
    /// One JSON object per file on stdout.
    #[arg(long)]
    json: bool,
}

/// Exit 0 when every photo decodes, 2 when some are refused (as `index` exits for per-photo failures).
pub fn run(args: DecodeArgs) -> anyhow::Result<ExitCode> {
    let options = regionseek::decode::DecodeOptions {
        max_pixels: args.max_pixels,
        exif_rotate: args.exif_rotate,
    };
    if let Some(dir) = &args.rgb_out {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut refused = 0;
    for file in &args.files {
        let row = match describe(file, &options, args.rgb_out.as_deref()) {
            Ok(row) => row,
            Err(error) => {
                refused += 1;
                json!({"file": file, "error": error})
            }
        };
        if args.json {
            println!("{row}");
        } else if let Some(error) = row["error"].as_str() {
            println!("{}: refused: {error}", file.display());
        } else {
            println!(
                "{}: {} {}x{}{}, sha256 {}",
                file.display(),
                row["format"].as_str().unwrap_or("?"),
                row["width"],
                row["height"],
                if args.exif_rotate { " upright" } else { "" },
                row["sha256"].as_str().unwrap_or("")
            );
        }
    }
    Ok(if refused == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

fn describe(
    file: &Path,
    options: &regionseek::decode::DecodeOptions,
    rgb_out: Option<&Path>,
) -> Result<serde_json::Value, String> {
    let bytes = std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let img = regionseek::decode::decode_rgb(&bytes, file, options).map_err(|e| e.to_string())?;
    if let Some(dir) = rgb_out {
        let name = file.file_name().unwrap_or_default().to_string_lossy();
        let out = dir.join(format!("{name}.rgb"));
        write_atomic(&out, img.as_raw())
            .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    }
    Ok(json!({
        "file": file,
        "format": regionseek::decode::format_name(&bytes),
        "width": img.width(),
        "height": img.height(),
        "exif_rotated": options.exif_rotate,
        "sha256": format!("{:x}", Sha256::digest(img.as_raw())),
    }))
}
