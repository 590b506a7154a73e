//! `regionseek bench`: times the image forward, the Jacobian build and the K inversion steps for a grid of
//! models, resolutions, mask counts and gradient paths; one JSON line per configuration.

use std::path::PathBuf;
use std::process::ExitCode;

use candle_core::Tensor;
use regionseek::clip::ClipModel;
use regionseek::device::Precision;

use super::choice::choice;
use regionseek::invert::{
    invert_pixels, CostBasis, GradChoice, InversionConfig, InversionOutput, MapKernel, StepLoop,
};
use regionseek::masks::BinaryMask;
use serde_json::json;

use super::args::ModelArgs;
use super::output::write_atomic;

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
    /// What `--grad auto` decides by: auto (measured on a GPU, counted on the CPU), measured or counted.
    /// Rows of `auto` show the estimates it chose by: operation counts on a CPU (`estimate_direct_gflop`,
    /// `estimate_jacobian_gflop`), seconds measured on the device on a GPU (`estimate_direct_s`,
    /// `estimate_jacobian_s`).
    #[arg(long, value_parser = choice::<CostBasis>(), default_value_t = CostBasis::Auto)]
    auto_costs: CostBasis,
    /// Timed repetitions per configuration (the fastest is reported, after one warm-up run).
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    #[arg(long, default_value = "cpu")]
    device: String,
    #[arg(long, value_parser = choice::<Precision>(), default_value_t = Precision::Fp32)]
    precision: Precision,
    /// GiB of GPU memory an inversion may use, weights included (see `invert --gpu-memory`).
    #[arg(long, default_value_t = regionseek::device::DEFAULT_GPU_MEMORY_GIB)]
    gpu_memory: f64,
    /// How the map's products are evaluated (comma-separated to compare): generic, fused.
    #[arg(long, value_parser = choice::<MapKernel>(), value_delimiter = ',', default_value = "generic")]
    map_kernel: Vec<MapKernel>,
    /// Where the step loop runs (comma-separated to compare): auto, host, device.
    #[arg(long, value_delimiter = ',', default_value = "auto")]
    step_loop: Vec<String>,
    /// Also invert each configuration with fp32 on the CPU's host loop (the parity-checked path) and report
    /// the LETs' cosine to it (`parity_min_cos`, `parity_mean_cos`): the parity cost of a precision, loop
    /// or device.
    #[arg(long)]
    parity: bool,
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

/// Per-mask cosine of `got`'s LETs to the same inversion by `reference` on the CPU: (min, mean).
fn parity_against(
    reference: &ClipModel,
    pixels: &Tensor,
    masks: &[BinaryMask],
    cfg: &InversionConfig,
    got: &InversionOutput,
) -> anyhow::Result<(f64, f64)> {
    let size = cfg.size;
    let pixels = pixels.to_device(&reference.device)?;
    let want = invert_pixels(
        reference,
        &pixels,
        size,
        size,
        masks,
        cfg,
        std::time::Instant::now(),
    )?;
    let mut cosines = Vec::new();
    for (g, w) in got.masks.iter().zip(&want.masks) {
        if let (Ok(g), Ok(w)) = (g, w) {
            let dot: f64 = g
                .embedding
                .iter()
                .zip(&w.embedding)
                .map(|(a, b)| *a as f64 * *b as f64)
                .sum();
            let ng: f64 = g
                .embedding
                .iter()
                .map(|a| (*a as f64).powi(2))
                .sum::<f64>()
                .sqrt();
            let nw: f64 = w
                .embedding
                .iter()
                .map(|a| (*a as f64).powi(2))
                .sum::<f64>()
                .sqrt();
            cosines.push(dot / (ng * nw).max(1e-30));
        }
    }
    if cosines.is_empty() {
        anyhow::bail!("no mask was inverted by both runs");
    }
    let min = cosines.iter().copied().fold(f64::INFINITY, f64::min);
    Ok((min, cosines.iter().sum::<f64>() / cosines.len() as f64))
}

pub fn run(a: BenchArgs) -> anyhow::Result<ExitCode> {
    let mut rows = Vec::new();
    for spec in &a.models {
        let model: ClipModel = ModelArgs {
            precision: a.precision,
            gpu_memory: a.gpu_memory,
            ..ModelArgs::new(spec, &a.device)
        }
        .load()?;
        let reference = if a.parity {
            Some(ModelArgs::new(spec, "cpu").load()?)
        } else {
            None
        };
        for &size in &a.sizes {
            let pixels = Tensor::randn(0f32, 1f32, (1, 3, size, size), &model.device)?;
            for &m in &a.masks {
                let masks = random_masks(m, size, m as u64);
                let mut combinations = Vec::new();
                for g in &a.grad {
                    for l in &a.step_loop {
                        for &k in &a.map_kernel {
                            combinations.push((g, l, k));
                        }
                    }
                }
                for (g, loop_name, map_kernel) in combinations {
                    let step_loop = match loop_name.as_str() {
                        "auto" => StepLoop::Auto,
                        "host" => StepLoop::Host,
                        "device" => StepLoop::Device,
                        other => anyhow::bail!("unknown step loop {other} (auto, host, device)"),
                    };
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
                        auto_costs: a.auto_costs,
                        map_kernel,
                        step_loop,
                        ..Default::default()
                    };
                    // Memory in use before the inversion: the weights, the CUDA context, the pixels.
                    let baseline_mib = regionseek::device::memory_in_use(&model.device)
                        .map(|b| b as f64 / (1024.0 * 1024.0));
                    regionseek::device::reset_peak_memory();
                    let mut best: Option<(f64, InversionOutput)> = None;
                    for rep in 0..=a.repeat {
                        let t = std::time::Instant::now();
                        let out = invert_pixels(&model, &pixels, size, size, &masks, &cfg, t)?;
                        let total = t.elapsed().as_secs_f64();
                        if rep > 0 && best.as_ref().is_none_or(|b| total < b.0) {
                            best = Some((total, out));
                        }
                    }
                    let (total, out) = best.expect("at least one timed run");
                    let parity = match &reference {
                        Some(reference) => Some(parity_against(
                            reference,
                            &pixels,
                            &masks,
                            &InversionConfig {
                                step_loop: StepLoop::Host,
                                ..cfg.clone()
                            },
                            &out,
                        )?),
                        None => None,
                    };
                    let r = out.report;
                    let peak_mib = regionseek::device::peak_memory_mib();
                    let row = json!({
                        "model": model.id(), "size": size, "masks": m, "steps": a.steps, "grad": r.grad_path,
                        "grad_asked": g,
                        "estimate_direct_s": r.grad_estimate.map(|e| e.direct_s),
                        "estimate_jacobian_s": r.grad_estimate.map(|e| e.jacobian_s),
                        "estimate_direct_gflop": r.grad_counted.map(|e| e.direct_gflop),
                        "estimate_jacobian_gflop": r.grad_counted.map(|e| e.jacobian_gflop),
                        "step_loop": r.step_loop, "precision": model.precision.name(),
                        "map_kernel": map_kernel,
                        "device": a.device, "forward_s": r.seconds_forward, "jacobian_s": r.seconds_jacobian,
                        "steps_s": r.seconds_steps, "total_s": total, "chunks": r.chunks,
                        "jacobian_mib": r.jacobian_mib,
                        "gpu_baseline_mib": baseline_mib, "gpu_peak_mib": peak_mib,
                        "gpu_beyond_baseline_mib": peak_mib.zip(baseline_mib).map(|(p, b)| p - b),
                        "threads": rayon::current_num_threads(),
                        "parity_min_cos": parity.map(|p| p.0), "parity_mean_cos": parity.map(|p| p.1),
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
