//! The step loop with every per-step value on the model's device. On a GPU nothing crosses to the host
//! between the first step and the last: the host loop (`invert_chunk` in the parent module) copies each
//! step's patch relevance out and the token gradient back, which costs nothing on a CPU but is a
//! synchronisation and two transfers per step on a GPU. Same maths as the host loop, summed in another
//! order: the two agree to rounding, which the tests check.
//!
//! The g×g → S×S bilinear upsampling is separable and linear, so it is two products with a dense `[S, g]`
//! matrix `A` (`X = A·R·Aᵀ`, backward `dR = Aᵀ·dX·A`); min-max normalisation keeps its arg-extremes as
//! one-hot rows, and Dice runs on S×S through the folded masks exactly as on the host.

use candle_core::{DType, Device, Tensor};

use super::{prepare_masks, InversionConfig, InvertError, MaskOutcome, MaskResult};
use crate::explain::{GradPath, MapProducts, Relevance};
use crate::masks::BinaryMask;
use crate::resample::bilinear_taps;

/// Dense `[out, in]` matrix of torch's bilinear resize (align_corners=False) along one axis.
fn resize_matrix(in_size: usize, out_size: usize, device: &Device) -> candle_core::Result<Tensor> {
    let mut a = vec![0f32; out_size * in_size];
    for (o, t) in bilinear_taps(in_size, out_size).iter().enumerate() {
        a[o * in_size + t.lo] += 1.0 - t.frac;
        a[o * in_size + t.hi] += t.frac;
    }
    Tensor::from_vec(a, (out_size, in_size), device)
}

/// The g×g → S×S upsampling and its transpose.
pub(crate) struct DeviceUpsample {
    grid: usize,
    size: usize,
    /// `A` `[S, g]` and `Aᵀ` `[g, S]`, both contiguous.
    a: Tensor,
    a_t: Tensor,
    /// `0..S²` as a `[1, S²]` row, made once for the arg-extremes' one-hot rows of every step.
    positions: Tensor,
}

impl DeviceUpsample {
    pub(crate) fn new(grid: usize, patch: usize, device: &Device) -> candle_core::Result<Self> {
        let size = grid * patch;
        let a = resize_matrix(grid, size, device)?;
        let a_t = a.t()?.contiguous()?;
        let positions = Tensor::arange(0u32, (size * size) as u32, device)?.unsqueeze(0)?;
        Ok(Self {
            grid,
            size,
            a,
            a_t,
            positions,
        })
    }

    /// `[M, g²]` → `[M, S²]`.
    fn forward(&self, r: &Tensor) -> candle_core::Result<Tensor> {
        let m = r.dim(0)?;
        let p = r
            .reshape((m, self.grid, self.grid))?
            .broadcast_matmul(&self.a_t)?; // [M, g, S]
        self.a
            .broadcast_matmul(&p)?
            .reshape((m, self.size * self.size))
    }

    /// `[M, S²]` → `[M, g²]`.
    fn backward(&self, dx: &Tensor) -> candle_core::Result<Tensor> {
        let m = dx.dim(0)?;
        let q = dx
            .reshape((m, self.size, self.size))?
            .broadcast_matmul(&self.a)?; // [M, S, g]
        self.a_t
            .broadcast_matmul(&q)?
            .reshape((m, self.grid * self.grid))
    }
}

/// Min-max normalised maps `[M, S²]` and what their backward needs.
struct DeviceMaps {
    values: Tensor,
    /// One-hot rows of the first minimum and the first maximum `[M, S²]`.
    at_min: Tensor,
    at_max: Tensor,
    /// max − min where positive, 1 elsewhere `[M, 1]`, and 1/0 for "has a range" `[M, 1]`.
    range: Tensor,
    valid: Tensor,
}

fn unit_rows(x: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
    let norms = x.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12f32, f32::MAX)?;
    Ok((x.broadcast_div(&norms)?, norms))
}

impl DeviceUpsample {
    /// Rows `[M, S²]` with a 1 at each row's `index` `[M, 1]`.
    fn one_hot(&self, index: &Tensor) -> candle_core::Result<Tensor> {
        self.positions.broadcast_eq(index)?.to_dtype(DType::F32)
    }
}

/// The patch relevance `[M, g²]` of unit tokens `[M, d]`, with what its backward needs.
fn relevance_of(
    rel: &Relevance,
    path: GradPath,
    t_hat: &Tensor,
) -> candle_core::Result<(MapProducts, Tensor)> {
    let u = rel.attention_output_grad(t_hat, path)?;
    let grads = rel.map_products(u)?;
    let r = rel.relevance(&grads, t_hat.dim(0)?)?;
    Ok((grads, r))
}

/// With the fused kernels: per mask `[M]` Dice loss and flatness, and `dL/dR` `[M, g²]` (times `scale`).
fn fused_dice_and_grad(
    r: &Tensor,
    folded: &Tensor,
    consts: &Tensor,
    up: &DeviceUpsample,
    scale: f64,
) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
    let g2 = up.grid * up.grid;
    let out = super::fused_dice::map_dice(r, folded, consts, up.grid, up.size, scale as f32)?;
    Ok((
        out.narrow(1, g2, 1)?.squeeze(1)?,
        out.narrow(1, g2 + 1, 1)?,
        out.narrow(1, 0, g2)?,
    ))
}

fn maps_of(
    rel: &Relevance,
    path: GradPath,
    up: &DeviceUpsample,
    t_hat: &Tensor,
) -> candle_core::Result<(MapProducts, DeviceMaps)> {
    let (grads, r) = relevance_of(rel, path, t_hat)?;
    Ok((grads, normalized_maps(up, &r)?))
}

/// The S×S maps of patch relevance `r` `[M, g²]`, min-max normalised.
fn normalized_maps(up: &DeviceUpsample, r: &Tensor) -> candle_core::Result<DeviceMaps> {
    let x = up.forward(r)?;
    let lo = x.min_keepdim(1)?;
    let hi = x.max_keepdim(1)?;
    let span = (&hi - &lo)?;
    let valid = span.gt(0f32)?.to_dtype(DType::F32)?;
    // Flat maps: zeros and no gradient, as the host loop (the reference would divide by zero).
    let range = ((&span * &valid)? + valid.affine(-1.0, 1.0)?)?;
    let values = x
        .broadcast_sub(&lo)?
        .broadcast_div(&range)?
        .broadcast_mul(&valid)?;
    Ok(DeviceMaps {
        values,
        at_min: up.one_hot(&x.argmin_keepdim(1)?)?,
        at_max: up.one_hot(&x.argmax_keepdim(1)?)?,
        range,
        valid,
    })
}

/// A chunk's masks on the device: folded onto S×S `[M, S²]`, the Dice weights ρ `[1, S²]`, the areas
/// `[M, 1]`, and for the fused kernels ρ ‖ areas as one buffer.
struct ChunkMasks {
    folded: Tensor,
    rho: Tensor,
    area: Tensor,
    fused_consts: Option<Tensor>,
}

impl ChunkMasks {
    fn new(
        prepared: &[super::PreparedMask],
        rho: Vec<f32>,
        s: usize,
        fused: bool,
        device: &Device,
    ) -> candle_core::Result<Self> {
        let m = prepared.len();
        let folded = Tensor::from_vec(
            prepared.iter().flat_map(|p| p.folded.clone()).collect(),
            (m, s * s),
            device,
        )?;
        let rho = Tensor::from_vec(rho, (1, s * s), device)?;
        let area = Tensor::from_vec(prepared.iter().map(|p| p.area).collect(), (m, 1), device)?;
        let fused_consts = if fused {
            Some(Tensor::cat(&[rho.flatten_all()?, area.flatten_all()?], 0)?)
        } else {
            None
        };
        Ok(Self {
            folded,
            rho,
            area,
            fused_consts,
        })
    }
}

/// Dice per mask `[M]` and, scaled by `scale`, `dL/dE` `[M, S²]`.
fn dice_and_grad(
    e: &Tensor,
    folded: &Tensor,
    rho: &Tensor,
    area: &Tensor,
    scale: f64,
) -> candle_core::Result<(Tensor, Tensor)> {
    let inter = (e * folded)?.sum_keepdim(1)?;
    let total = e.broadcast_mul(rho)?.sum_keepdim(1)?;
    let denom = ((total + area)? + 1.0)?;
    let num = ((inter * 2.0)? + 1.0)?;
    let loss = (num.div(&denom)?.affine(-1.0, 1.0)?).squeeze(1)?;
    let a = (denom.recip()? * (-2.0 * scale))?;
    let b = (num.div(&denom.sqr()?)? * scale)?;
    let grad = (folded.broadcast_mul(&a)? + rho.broadcast_mul(&b)?)?;
    Ok((loss, grad))
}

/// `dL/dE` → `dL/dX` through the min-max normalisation (torch's min/max route to the first extreme).
fn normalize_backward(maps: &DeviceMaps, d_e: &Tensor) -> candle_core::Result<Tensor> {
    let inv = maps.valid.div(&maps.range)?; // 1/range, or 0 for flat maps
    let to_min = (d_e * (maps.values.affine(1.0, -1.0))?)?.sum_keepdim(1)?;
    let to_max = (d_e * &maps.values)?.sum_keepdim(1)?.neg()?;
    let dx = (d_e + maps.at_min.broadcast_mul(&to_min)? + maps.at_max.broadcast_mul(&to_max)?)?;
    dx.broadcast_mul(&inv)
}

#[allow(clippy::too_many_arguments)]
pub(super) fn invert_chunk(
    rel: &Relevance,
    path: GradPath,
    up: &DeviceUpsample,
    cls: &[f32],
    masks: Vec<&BinaryMask>,
    cfg: &InversionConfig,
    total_masks: usize,
) -> Result<Vec<MaskOutcome>, InvertError> {
    let device: &Device = rel.device();
    let d = cls.len();
    let mc = masks.len();
    let s = up.size;
    let (prepared, rho_host) = prepare_masks(&masks, s);
    let ChunkMasks {
        folded,
        rho,
        area,
        fused_consts,
    } = ChunkMasks::new(&prepared, rho_host, s, rel.fused_maps(), device)?;
    let cls_t = Tensor::from_slice(cls, (1, d), device)?;
    let (cls_unit, _) = unit_rows(&cls_t)?;
    let scale = 1.0 / total_masks as f64;

    let mut token = cls_t.broadcast_as((mc, d))?.contiguous()?;
    let mut m1 = Tensor::zeros((mc, d), DType::F32, device)?;
    let mut m2 = Tensor::zeros((mc, d), DType::F32, device)?;
    let mut traces = Vec::with_capacity(cfg.steps);

    for step in 1..=cfg.steps {
        if cfg.cancel.is_cancelled() {
            return Err(InvertError::Cancelled);
        }
        let (t_hat, norms) = unit_rows(&token)?;
        let (grads, d_rel) = match &fused_consts {
            Some(consts) => {
                let (grads, r) = relevance_of(rel, path, &t_hat)?;
                let (loss, _, d_rel) = fused_dice_and_grad(&r, &folded, consts, up, scale)?;
                traces.push(loss);
                (grads, d_rel)
            }
            None => {
                let (grads, maps) = maps_of(rel, path, up, &t_hat)?;
                let (loss, d_e) = dice_and_grad(&maps.values, &folded, &rho, &area, scale)?;
                traces.push(loss);
                (grads, up.backward(&normalize_backward(&maps, &d_e)?)?)
            }
        };
        let du = rel.relevance_backward(&grads, &d_rel)?;
        if step == 1 {
            // The chunk's largest live set: the products, their masks and the map tensors.
            crate::device::note_memory_use(device);
        }
        drop(grads);
        let mut d_t = rel.attention_output_grad_t(&du, path)?.reshape((mc, d))?;
        if cfg.alpha != 0.0 {
            d_t = d_t.broadcast_sub(&(&cls_unit * (cfg.alpha / total_masks as f64))?)?;
        }
        // Through t̂ = x/|x|: (I − t̂t̂ᵀ)/|x|, then AdamW (torch's single-tensor arithmetic).
        let along = (&t_hat * &d_t)?.sum_keepdim(1)?;
        let g = (d_t - t_hat.broadcast_mul(&along)?)?.broadcast_div(&norms)?;
        if cfg.weight_decay != 0.0 {
            token = (token * (1.0 - cfg.lr * cfg.weight_decay))?;
        }
        m1 = ((m1 * cfg.beta1)? + (&g * (1.0 - cfg.beta1))?)?;
        m2 = ((m2 * cfg.beta2)? + (g.sqr()? * (1.0 - cfg.beta2))?)?;
        let bc1 = 1.0 - cfg.beta1.powi(step as i32);
        let bc2_sqrt = (1.0 - cfg.beta2.powi(step as i32)).sqrt();
        let denom = ((m2.sqrt()? / bc2_sqrt)? + cfg.eps)?;
        token = (token - (m1.div(&denom)? * (cfg.lr / bc1))?)?;
    }

    // One transfer out: tokens, the losses of every step, and the final maps' losses and flatness.
    let (t_hat, _) = unit_rows(&token)?;
    // The maps themselves are only ever needed here, when kept: then the generic path makes them.
    let (final_loss, valid, final_maps) = match &fused_consts {
        Some(consts) if !cfg.keep_maps => {
            let (_, r) = relevance_of(rel, path, &t_hat)?;
            let (loss, valid, _) = fused_dice_and_grad(&r, &folded, consts, up, 1.0)?;
            (loss, valid, None)
        }
        _ => {
            let (_, maps) = maps_of(rel, path, up, &t_hat)?;
            let (loss, _) = dice_and_grad(&maps.values, &folded, &rho, &area, 1.0)?;
            let kept = if cfg.keep_maps {
                Some(maps.values.to_vec2::<f32>()?)
            } else {
                None
            };
            (loss, maps.valid, kept)
        }
    };
    let tokens: Vec<Vec<f32>> = token.to_vec2()?;
    let traces: Vec<Vec<f32>> = if traces.is_empty() {
        vec![Vec::new(); mc]
    } else {
        Tensor::stack(&traces, 1)?.to_vec2()?
    };
    let final_loss: Vec<f32> = final_loss.to_vec1()?;
    let valid: Vec<f32> = valid.squeeze(1)?.to_vec1()?;
    let results = tokens
        .into_iter()
        .zip(traces)
        .enumerate()
        .map(|(k, (embedding, dice_trace))| {
            if embedding.iter().any(|v| !v.is_finite()) {
                return Err("the optimisation diverged (non-finite token)".to_string());
            }
            if valid[k] == 0.0 {
                tracing::warn!("mask {k}: the token's map is flat (no positive gradient anywhere)");
            }
            Ok(MaskResult {
                embedding,
                dice_trace,
                final_dice: final_loss[k],
                map: final_maps
                    .as_ref()
                    .map(|m| prepared[k].resize.forward(&m[k])),
            })
        })
        .collect();
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fused map Dice op (its CPU implementation, the CUDA kernel's definition) against the generic tensor
    /// code it replaces: loss, flatness and dL/dR, on maps with a range and on a flat one.
    #[test]
    fn fused_map_dice_matches_the_generic_tensor_code() {
        let device = Device::Cpu;
        let (grid, patch) = (7, 4);
        let up = DeviceUpsample::new(grid, patch, &device).unwrap();
        let s = up.size;
        let masks: Vec<BinaryMask> = (0..3)
            .map(|k| BinaryMask::from_box(40, 30, 3.0 * k as f64, 2.0, 20.0 + 5.0 * k as f64, 25.0))
            .collect();
        let (prepared, rho_host) = prepare_masks(&masks.iter().collect::<Vec<_>>(), s);
        let mc = masks.len();
        let chunk = ChunkMasks::new(&prepared, rho_host, s, true, &device).unwrap();
        // two relevance maps with structure, one flat
        let mut r: Vec<f32> = (0..2 * grid * grid)
            .map(|i| ((i * 37 % 23) as f32 * 0.11).sin().abs())
            .collect();
        r.extend(std::iter::repeat_n(0.25, grid * grid));
        let r = Tensor::from_vec(r, (mc, grid * grid), &device).unwrap();
        let scale = 1.0 / 3.0;

        let maps = normalized_maps(&up, &r).unwrap();
        let (loss, d_e) =
            dice_and_grad(&maps.values, &chunk.folded, &chunk.rho, &chunk.area, scale).unwrap();
        let d_r = up
            .backward(&normalize_backward(&maps, &d_e).unwrap())
            .unwrap();

        let consts = chunk.fused_consts.as_ref().unwrap();
        let (f_loss, f_valid, f_d_r) =
            fused_dice_and_grad(&r, &chunk.folded, consts, &up, scale).unwrap();
        let close = |a: &Tensor, b: &Tensor, what: &str| {
            let a: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
            let b: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
            let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
            for (i, (x, y)) in a.iter().zip(&b).enumerate() {
                assert!(
                    (x - y).abs() <= 1e-5 * scale,
                    "{what}[{i}]: fused {x} vs generic {y}"
                );
            }
        };
        close(&f_loss, &loss, "loss");
        close(&f_valid, &maps.valid, "valid");
        close(&f_d_r, &d_r, "dL/dR");
        assert_eq!(
            f_valid.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            [1.0, 1.0, 0.0]
        );
    }
}
