//! MaskInversion: for one image and M masks, one image forward and M localized embedding tokens (LETs),
//! each optimised so that its LeGrad map matches its mask (Dice, smooth 1) with an optional pull towards
//! the image's CLS embedding, by AdamW from the CLS embedding, exactly as maskinversion_torch 1.1.
//!
//! Masks only interact through the loss's mean (a 1/M factor) and Adam is element-wise, so masks are
//! processed in chunks that bound memory, with identical results.

use candle_core::{Device, Tensor};
use image::RgbImage;
use rayon::prelude::*;
use serde::Serialize;

use crate::clip::{preprocess, ClipModel};
use crate::explain::{GradPath, MapProducts, MapResize, PatchUpsample, Relevance};
use crate::masks::BinaryMask;

use plan::{InversionPlan, JACOBIAN_TOKEN_CHUNK};

pub mod fused_dice;
mod plan;
mod resident;

#[derive(Debug, thiserror::Error)]
pub enum InvertError {
    #[error("image size {size} is not a positive multiple of the patch size {patch}")]
    BadSize { size: usize, patch: usize },
    #[error("interrupted")]
    Cancelled,
    #[error("model computation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

/// Where the per-step map, Dice and AdamW arithmetic runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StepLoop {
    /// On the device for a GPU model, on the host for a CPU model.
    Auto,
    /// Per-step maps and gradients as host vectors (fastest on a CPU, where "device" is host memory).
    Host,
    /// Every per-step value as a tensor on the model's device; one transfer after the last step.
    Device,
}

/// Which gradient path to use; `Auto` picks the cheaper one for M·K evaluations (see [`CostBasis`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GradChoice {
    Auto,
    Jacobian,
    Direct,
}

/// How the map and its Dice are computed in each step (README "Fused kernels").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MapKernel {
    /// Generic tensor ops: the per-head products `U_h V_hᵀ` materialised (H·M·N² values per step, three
    /// times over with the backward), and on the device loop some twenty passes over M·S² maps for the
    /// upsampling, normalisation and Dice.
    Generic,
    /// The fused kernels (`explain::fused` for the products, `invert::fused_dice` for the rest on the device
    /// loop): recomputed where needed, never held. On a CPU they are plain loops, far slower than the generic
    /// ops; they are meant for CUDA, where they have yet to be checked against their twins on a GPU
    /// (`tests/gpu.rs`), hence not the default.
    Fused,
}

crate::choice::named_choice!(StepLoop, "step loop", { Auto => "auto", Host => "host", Device => "device" });
crate::choice::named_choice!(GradChoice, "gradient path", {
    Auto => "auto", Jacobian => "jacobian", Direct => "direct",
});
crate::choice::named_choice!(MapKernel, "map kernel", { Generic => "generic", Fused => "fused" });

/// What [`GradChoice::Auto`] compares the two gradient paths by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CostBasis {
    /// Measured on a GPU, counted on the CPU. On a CPU both paths are the same kind of f32 products at
    /// nearly the same rate per MAC, so counting is right, free and does not let timing noise change the
    /// path (and with it the LETs' last digits) from run to run; a GPU runs the Jacobian's few large
    /// products far faster per MAC than the chain's many small ones, by a factor that depends on the card,
    /// the model and the precision.
    Auto,
    /// Timed on the device, once per process for each model shape, precision and mask-count bucket.
    Measured,
    /// Multiply-accumulates counted from the model's sizes.
    Counted,
}

crate::choice::named_choice!(CostBasis, "cost basis", {
    Auto => "auto", Measured => "measured", Counted => "counted",
});

#[derive(Debug, Clone, Serialize)]
pub struct InversionConfig {
    /// Input resolution S (squash resize).
    pub size: usize,
    pub steps: usize,
    pub lr: f64,
    /// Weight of the `1 − cos(LET, CLS)` regulariser.
    pub alpha: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    pub grad: GradChoice,
    /// What `grad: Auto` decides by.
    pub auto_costs: CostBasis,
    pub map_kernel: MapKernel,
    pub step_loop: StepLoop,
    /// Bytes the per-chunk temporaries may take (the M·H·N² products dominate).
    pub chunk_budget_bytes: usize,
    /// Bytes the cached Jacobian may take.
    pub jacobian_budget_bytes: usize,
    /// Keep each mask's final map at the mask's resolution.
    pub keep_maps: bool,
    /// Checked before every step: a set flag ends the inversion with `InvertError::Cancelled`.
    #[serde(skip)]
    pub cancel: crate::cancel::Cancel,
}

/// The reference's example run (`maskinversion_torch`'s demo: 448 px, 10 steps, lr 0.5), which every front
/// door and pipeline spec defaults to.
pub const DEFAULT_SIZE: usize = 448;
pub const DEFAULT_STEPS: usize = 10;
pub const DEFAULT_LR: f64 = 0.5;

impl Default for InversionConfig {
    fn default() -> Self {
        Self {
            size: DEFAULT_SIZE,
            steps: DEFAULT_STEPS,
            lr: DEFAULT_LR,
            alpha: 0.0,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            grad: GradChoice::Auto,
            auto_costs: CostBasis::Auto,
            map_kernel: MapKernel::Generic,
            step_loop: StepLoop::Auto,
            chunk_budget_bytes: 1 << 30,
            jacobian_budget_bytes: 2 << 30,
            keep_maps: false,
            cancel: Default::default(),
        }
    }
}

/// One mask's result.
#[derive(Debug, Clone, Serialize)]
pub struct MaskResult {
    /// The raw (unnormalised) token after the last step; consumers L2-normalise it.
    pub embedding: Vec<f32>,
    /// Dice loss of the map evaluated at each step (before that step's update), as the reference reports.
    pub dice_trace: Vec<f32>,
    /// Dice loss of the final token's map.
    pub final_dice: f32,
    /// The final token's map at the mask's resolution (row-major), when asked for.
    #[serde(skip)]
    pub map: Option<Vec<f32>>,
}

/// Per mask: a result, or why this mask was not inverted (the others still are).
pub type MaskOutcome = Result<MaskResult, String>;

#[derive(Debug, Clone, Serialize)]
pub struct InversionReport {
    pub grad_path: &'static str,
    pub step_loop: &'static str,
    pub chunks: usize,
    /// Size of the cached Jacobian (0 on the direct path).
    pub jacobian_mib: f64,
    pub seconds_forward: f64,
    pub seconds_jacobian: f64,
    pub seconds_steps: f64,
    /// The measured costs `grad: Auto` chose by, when it measured (on a GPU, or `CostBasis::Measured`).
    pub grad_estimate: Option<GradEstimate>,
    /// The operation counts of both paths, whenever `grad: Auto` ran: what it chose by on a CPU.
    pub grad_counted: Option<CountedEstimate>,
}

/// Floating-point operations each gradient path would take for this photo's masks and steps.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CountedEstimate {
    pub direct_gflop: f64,
    /// The Jacobian's build included.
    pub jacobian_gflop: f64,
}

/// What `grad: Auto` expected each path to take for this photo, from costs measured on its device.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct GradEstimate {
    pub direct_s: f64,
    pub jacobian_s: f64,
    /// The costs were measured for this photo (the first of its kind in this process), not reused.
    pub measured_now: bool,
}

pub struct InversionOutput {
    pub cls_embedding: Vec<f32>,
    pub masks: Vec<MaskOutcome>,
    pub report: InversionReport,
}

/// Why a mask cannot be inverted, checked before any work.
pub fn validate_mask(mask: &BinaryMask, width: usize, height: usize) -> Result<(), String> {
    if mask.width != width || mask.height != height {
        return Err(format!(
            "mask is {}x{} but the image is {}x{}: masks must be at the image's own resolution",
            mask.width, mask.height, width, height
        ));
    }
    if mask.area() == 0 {
        return Err("mask is empty: there is no region to embed".into());
    }
    Ok(())
}

struct PreparedMask {
    folded: Vec<f32>,
    area: f32,
    resize: MapResize,
}

/// Each mask folded onto the S×S map grid, and ρ (the weight of each S×S pixel in the resized map's sum).
/// ρ depends only on the mask's size, and every valid mask has the image's size: one serves all.
fn prepare_masks(masks: &[&BinaryMask], s: usize) -> (Vec<PreparedMask>, Vec<f32>) {
    let prepared: Vec<PreparedMask> = masks
        .par_iter()
        .map(|m| {
            let resize = MapResize::new(s, m.height, m.width);
            PreparedMask {
                folded: resize.fold_mask(&m.as_f32()),
                area: m.area() as f32,
                resize,
            }
        })
        .collect();
    let rho = prepared
        .first()
        .map(|p| p.resize.fold_ones())
        .unwrap_or_default();
    (prepared, rho)
}

fn unit_rows(x: &[f32], d: usize) -> (Vec<f32>, Vec<f32>) {
    let mut out = vec![0f32; x.len()];
    let mut norms = Vec::with_capacity(x.len() / d);
    for (row, o) in x.chunks(d).zip(out.chunks_mut(d)) {
        let n = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
        o.iter_mut().zip(row).for_each(|(o, v)| *o = v / n);
        norms.push(n);
    }
    (out, norms)
}

/// Dice `1 − (2I + 1)/(P + Q + 1)` on S×S through the folded mask, and `dL/dE` scaled by `scale`.
fn dice_and_grad(e: &[f32], prepared: &PreparedMask, rho: &[f32], scale: f32) -> (f32, Vec<f32>) {
    let mut inter = 0f64;
    let mut total = 0f64;
    for ((&ev, &m), &r) in e.iter().zip(&prepared.folded).zip(rho) {
        inter += (ev * m) as f64;
        total += (ev * r) as f64;
    }
    let denom = total + prepared.area as f64 + 1.0;
    let loss = 1.0 - (2.0 * inter + 1.0) / denom;
    let a = (-2.0 / denom) as f32 * scale;
    let b = ((2.0 * inter + 1.0) / (denom * denom)) as f32 * scale;
    let grad = prepared
        .folded
        .iter()
        .zip(rho)
        .map(|(&m, &r)| a * m + b * r)
        .collect();
    (loss as f32, grad)
}

fn check_size(model: &ClipModel, cfg: &InversionConfig) -> Result<(), InvertError> {
    let patch = model.config.vision.patch_size;
    if cfg.size == 0 || cfg.size % patch != 0 {
        return Err(InvertError::BadSize {
            size: cfg.size,
            patch,
        });
    }
    Ok(())
}

/// Inverts all masks of one image. Each mask must be at the image's resolution; invalid masks get an
/// error in their slot and the others are inverted.
pub fn invert_image(
    model: &ClipModel,
    image: &RgbImage,
    masks: &[BinaryMask],
    cfg: &InversionConfig,
) -> Result<InversionOutput, InvertError> {
    invert_images(model, &[(image, masks)], cfg)?
        .pop()
        .expect("one photo in, one result out")
}

/// As [`invert_image`] for several photos, their forward passes batched into one (the step loops stay per
/// photo): the same LETs, and a GPU kept busier. One result per photo; a failed forward fails them all.
pub fn invert_images(
    model: &ClipModel,
    photos: &[(&RgbImage, &[BinaryMask])],
    cfg: &InversionConfig,
) -> Result<Vec<Result<InversionOutput, InvertError>>, InvertError> {
    check_size(model, cfg)?;
    if photos.is_empty() {
        return Ok(Vec::new());
    }
    let t0 = std::time::Instant::now();
    let pixels = photos
        .iter()
        .map(|(image, _)| {
            preprocess::squash(
                image,
                cfg.size as u32,
                &model.config.normalization,
                &model.device,
            )
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    let forwards = model
        .vision
        .forward_with_taps_batch(&Tensor::cat(&pixels, 0)?)?;
    drop(pixels);
    // The batch's forward is shared: each photo reports its part of it.
    let forward_share = t0.elapsed() / photos.len() as u32;
    Ok(forwards
        .into_iter()
        .zip(photos)
        .map(|((cls, taps), (image, masks))| {
            let now = std::time::Instant::now();
            let started = now.checked_sub(forward_share).unwrap_or(now);
            invert_from_taps(
                model,
                &cls,
                &taps,
                image.width() as usize,
                image.height() as usize,
                masks,
                cfg,
                started,
            )
        })
        .collect())
}

/// As [`invert_image`] for an already preprocessed `[1, 3, S, S]` tensor of an image of `width`×`height`.
pub fn invert_pixels(
    model: &ClipModel,
    pixels: &Tensor,
    width: usize,
    height: usize,
    masks: &[BinaryMask],
    cfg: &InversionConfig,
    started: std::time::Instant,
) -> Result<InversionOutput, InvertError> {
    let (cls, taps) = model.vision.forward_with_taps(pixels)?;
    invert_from_taps(model, &cls, &taps, width, height, masks, cfg, started)
}

#[allow(clippy::too_many_arguments)]
fn invert_from_taps(
    model: &ClipModel,
    cls: &Tensor,
    taps: &crate::clip::ImageTaps,
    width: usize,
    height: usize,
    masks: &[BinaryMask],
    cfg: &InversionConfig,
    started: std::time::Instant,
) -> Result<InversionOutput, InvertError> {
    let mut rel = Relevance::new(&model.vision, taps)?
        .with_jacobian_dtype(model.precision.jacobian_dtype())
        .with_fused_maps(cfg.map_kernel == MapKernel::Fused);
    let cls_embedding: Vec<f32> = cls.to_vec1()?;
    let seconds_forward = started.elapsed().as_secs_f64();
    crate::device::note_memory_use(rel.device());

    let mut outcomes: Vec<Option<MaskOutcome>> = masks
        .iter()
        .map(|m| validate_mask(m, width, height).err().map(Err))
        .collect();
    let valid: Vec<usize> = (0..masks.len())
        .filter(|&i| outcomes[i].is_none())
        .collect();
    let total_masks = masks.len().max(1);

    let plan = InversionPlan::new(model, &rel, valid.len(), cfg)?;
    let (path, on_device) = (plan.path, plan.on_device);
    let up = PatchUpsample::new(rel.grid, rel.patch);
    let device_up = if on_device {
        Some(resident::DeviceUpsample::new(
            rel.grid,
            rel.patch,
            rel.device(),
        )?)
    } else {
        None
    };
    let t_jac = std::time::Instant::now();
    if path == GradPath::Jacobian && !valid.is_empty() {
        rel.build_jacobian(JACOBIAN_TOKEN_CHUNK)?;
        crate::device::note_memory_use(rel.device());
    }
    let seconds_jacobian = t_jac.elapsed().as_secs_f64();
    let chunk = plan.masks_per_chunk(rel.jacobian_bytes());
    let s = up.size();
    let t_steps = std::time::Instant::now();
    let mut chunks = 0;
    for ids in valid.chunks(chunk) {
        chunks += 1;
        let chunk_masks = ids.iter().map(|&i| &masks[i]).collect();
        let results = match &device_up {
            Some(device_up) => resident::invert_chunk(
                &rel,
                path,
                device_up,
                &cls_embedding,
                chunk_masks,
                cfg,
                total_masks,
            )?,
            None => invert_chunk(
                &rel,
                path,
                &up,
                &cls_embedding,
                chunk_masks,
                cfg,
                total_masks,
                s,
            )?,
        };
        for (&i, r) in ids.iter().zip(results) {
            outcomes[i] = Some(r);
        }
    }
    Ok(InversionOutput {
        cls_embedding,
        masks: outcomes
            .into_iter()
            .map(|o| o.expect("every mask has an outcome"))
            .collect(),
        report: InversionReport {
            grad_path: match path {
                GradPath::Direct => "direct",
                GradPath::Jacobian => "jacobian",
            },
            step_loop: if on_device { "device" } else { "host" },
            chunks,
            jacobian_mib: rel.jacobian_bytes() as f64 / (1024.0 * 1024.0),
            seconds_forward,
            seconds_jacobian,
            seconds_steps: t_steps.elapsed().as_secs_f64(),
            grad_estimate: plan.grad_estimate,
            grad_counted: plan.grad_counted,
        },
    })
}

/// Maps of unit tokens `[M, d]` at S×S, with the relevance products kept for the backward pass.
fn maps_of(
    rel: &Relevance,
    path: GradPath,
    up: &PatchUpsample,
    t_hat: &Tensor,
) -> candle_core::Result<(MapProducts, Vec<crate::explain::maps::NormalizedMap>)> {
    let m = t_hat.dim(0)?;
    let u = rel.attention_output_grad(t_hat, path)?;
    let grads = rel.map_products(u)?;
    let r: Vec<Vec<f32>> = rel.relevance(&grads, m)?.to_vec2()?;
    let maps = r.par_iter().map(|row| up.forward(row)).collect();
    Ok((grads, maps))
}

#[allow(clippy::too_many_arguments)]
fn invert_chunk(
    rel: &Relevance,
    path: GradPath,
    up: &PatchUpsample,
    cls: &[f32],
    masks: Vec<&BinaryMask>,
    cfg: &InversionConfig,
    total_masks: usize,
    s: usize,
) -> Result<Vec<MaskOutcome>, InvertError> {
    let device: &Device = rel.device();
    let d = cls.len();
    let mc = masks.len();
    let (prepared, rho) = prepare_masks(&masks, s);

    let (cls_unit, _) = unit_rows(cls, d);
    let mut token: Vec<f32> = cls.repeat(mc);
    let mut m1 = vec![0f32; mc * d];
    let mut m2 = vec![0f32; mc * d];
    let mut traces = vec![Vec::with_capacity(cfg.steps); mc];
    let scale = 1.0 / total_masks as f32;

    for step in 1..=cfg.steps {
        if cfg.cancel.is_cancelled() {
            return Err(InvertError::Cancelled);
        }
        let (t_hat, norms) = unit_rows(&token, d);
        let t_hat_t = Tensor::from_vec(t_hat.clone(), (mc, d), device)?;
        let (grads, maps) = maps_of(rel, path, up, &t_hat_t)?;
        let per_mask: Vec<(f32, Vec<f32>)> = maps
            .par_iter()
            .zip(&prepared)
            .map(|(map, p)| {
                let (loss, d_e) = dice_and_grad(&map.values, p, &rho, scale);
                (loss, up.backward(map, &d_e))
            })
            .collect();
        let g2 = rel.grid * rel.grid;
        let mut d_rel = Vec::with_capacity(mc * g2);
        for (k, (loss, dr)) in per_mask.into_iter().enumerate() {
            traces[k].push(loss);
            d_rel.extend(dr);
        }
        let d_rel = Tensor::from_vec(d_rel, (mc, g2), device)?;
        let du = rel.relevance_backward(&grads, &d_rel)?;
        drop(grads);
        let mut d_t: Vec<f32> = rel
            .attention_output_grad_t(&du, path)?
            .flatten_all()?
            .to_vec1()?;
        if cfg.alpha != 0.0 {
            let a = (cfg.alpha / total_masks as f64) as f32;
            for row in d_t.chunks_mut(d) {
                row.iter_mut().zip(&cls_unit).for_each(|(g, c)| *g -= a * c);
            }
        }
        // Through t̂ = x/|x|: (I − t̂t̂ᵀ)/|x|, then AdamW (torch's single-tensor arithmetic).
        let bc1 = 1.0 - cfg.beta1.powi(step as i32);
        let bc2_sqrt = (1.0 - cfg.beta2.powi(step as i32)).sqrt();
        let step_size = (cfg.lr / bc1) as f32;
        for k in 0..mc {
            let th = &t_hat[k * d..(k + 1) * d];
            let dt = &d_t[k * d..(k + 1) * d];
            let along: f32 = th.iter().zip(dt).map(|(a, b)| a * b).sum();
            for j in 0..d {
                let idx = k * d + j;
                let g = (dt[j] - th[j] * along) / norms[k];
                if cfg.weight_decay != 0.0 {
                    token[idx] *= 1.0 - (cfg.lr * cfg.weight_decay) as f32;
                }
                m1[idx] = cfg.beta1 as f32 * m1[idx] + (1.0 - cfg.beta1 as f32) * g;
                m2[idx] = cfg.beta2 as f32 * m2[idx] + (1.0 - cfg.beta2 as f32) * g * g;
                let denom = m2[idx].sqrt() / bc2_sqrt as f32 + cfg.eps as f32;
                token[idx] -= step_size * m1[idx] / denom;
            }
        }
    }

    // The final tokens' maps: the loss they reach, and the maps to show.
    let (t_hat, _) = unit_rows(&token, d);
    let (_, maps) = maps_of(rel, path, up, &Tensor::from_vec(t_hat, (mc, d), device)?)?;
    let results = (0..mc)
        .into_par_iter()
        .map(|k| {
            let emb = token[k * d..(k + 1) * d].to_vec();
            if emb.iter().any(|v| !v.is_finite()) {
                return Err("the optimisation diverged (non-finite token)".to_string());
            }
            let valid_map = maps[k].is_valid();
            let (final_dice, _) = dice_and_grad(&maps[k].values, &prepared[k], &rho, 1.0);
            let map = cfg
                .keep_maps
                .then(|| prepared[k].resize.forward(&maps[k].values));
            if !valid_map {
                tracing::warn!("mask {k}: the token's map is flat (no positive gradient anywhere)");
            }
            Ok(MaskResult {
                embedding: emb,
                dice_trace: traces[k].clone(),
                final_dice,
                map,
            })
        })
        .collect();
    Ok(results)
}

/// The LeGrad map of one token `[d]` (normalised inside) at S×S, min-max normalised, as the reference's
/// `compute_legrad` for the image behind `taps`.
pub fn legrad_map(rel: &Relevance, token: &[f32], path: GradPath) -> candle_core::Result<Vec<f32>> {
    let (t_hat, _) = unit_rows(token, token.len());
    let up = PatchUpsample::new(rel.grid, rel.patch);
    let (_, maps) = maps_of(
        rel,
        path,
        &up,
        &Tensor::from_vec(t_hat, (1, token.len()), rel.device())?,
    )?;
    Ok(maps
        .into_iter()
        .next()
        .map(|m| m.values)
        .unwrap_or_default())
}
