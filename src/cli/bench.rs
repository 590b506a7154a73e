//! `regionseek bench`: times the image forward, the Jacobian build and the K inversion steps for a grid of
//! models, resolutions, mask counts and gradient paths; one JSON line per configuration.

use std::path::PathBuf;
use std::process::ExitCode;

use candle_core::Tensor;
use regionseek::clip::ClipModel;
use regionseek::invert::{invert_pixels, GradChoice, InversionConfig};
use regionseek::masks::BinaryMask;
use serde_json::json;

use super::output::{write_atomic, ModelArgs};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Models (comma-separated): directories or random:<arch>.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "random:vit-b-32,random:vit-b-16"
    )]
    models: Vec<String>,
    #[arg(long, value_delimiter = ',', default_value = "224,448")]
    sizes: Vec<usize>,
    #[arg(long, value_delimiter = ',', default_value = "1,5,10,50,100")]
    masks: Vec<usize>,
    #[arg(long, value_delimiter = ',', default_value = "direct,jacobian")]
    grad: Vec<String>,
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Timed repetitions per configuration (the fastest is reported, after one warm-up run).
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Also write all rows as a JSON array to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Rows are always JSON; accepted for symmetry with the other commands.
    #[arg(long)]
    json: bool,
}

/// Random masks like the reference's timing script: each pixel on with probability 0.3, at S×S.
fn random_masks(count: usize, size: usize, seed: u64) -> Vec<BinaryMask> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..count)
        .map(|_| {
            let data = (0..size * size)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    ((state % 1000) >= 700) as u8
                })
                .collect();
            BinaryMask {
                width: size,
                height: size,
                data,
            }
        })
        .collect()
}

pub fn run(a: BenchArgs) -> anyhow::Result<ExitCode> {
    let mut rows = Vec::new();
    for spec in &a.models {
        let model: ClipModel = ModelArgs {
            model: spec.clone(),
            device: a.device.clone(),
        }
        .load()?;
        for &size in &a.sizes {
            let pixels = Tensor::randn(0f32, 1f32, (1, 3, size, size), &model.device)?;
            for &m in &a.masks {
                let masks = random_masks(m, size, m as u64);
                for g in &a.grad {
                    let grad = match g.as_str() {
                        "direct" => GradChoice::Direct,
                        "jacobian" => GradChoice::Jacobian,
                        "auto" => GradChoice::Auto,
                        other => {
                            anyhow::bail!("unknown gradient path {other} (direct, jacobian, auto)")
                        }
                    };
                    let cfg = InversionConfig {
                        size,
                        steps: a.steps,
                        grad,
                        ..Default::default()
                    };
                    let mut best: Option<(f64, regionseek::invert::InversionReport)> = None;
                    for rep in 0..=a.repeat {
                        let t = std::time::Instant::now();
                        let out = invert_pixels(&model, &pixels, size, size, &masks, &cfg, t)?;
                        let total = t.elapsed().as_secs_f64();
                        if rep > 0 && best.as_ref().is_none_or(|b| total < b.0) {
                            best = Some((total, out.report));
                        }
                    }
                    let (total, r) = best.expect("at least one timed run");
                    let row = json!({
                        "model": model.id(), "size": size, "masks": m, "steps": a.steps, "grad": r.grad_path,
                        "device": a.device, "forward_s": r.seconds_forward, "jacobian_s": r.seconds_jacobian,
                        "steps_s": r.seconds_steps, "total_s": total,
                        "threads": rayon::current_num_threads(),
                    });
                    println!("{row}");
                    rows.push(row);
                }
            }
        }
    }
    if let Some(path) = &a.out {
        write_atomic(path, serde_json::to_string_pretty(&rows)?.as_bytes())?;
    }
    Ok(ExitCode::SUCCESS)
}
