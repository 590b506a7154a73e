//! A chunk's whole per-step map arithmetic after the patch relevance, fused: bilinear upsampling to S×S,
//! min-max normalisation, Dice through the folded mask and the backward of all three down to `dL/dR`. The
//! CUDA kernel (kernels/map_dice.cu) does it in one block per mask, recomputing each S×S pixel from R in
//! shared memory instead of holding some twenty M·S² intermediates; the CPU implementation here follows the
//! same definition directly and fixes the op's meaning for tests. The generic twin is the device loop's
//! tensor code in `resident` (maps_of, dice_and_grad, normalize_backward).

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::kernels::cpu_f32;

use crate::resample::bilinear_taps;

/// Per mask, from its relevance `r` `[M, g²]`, folded mask `folded` `[M, S²]`, and `consts` = rho `[S²]` ‖
/// area `[M]`: `[M, g² + 2]` = `dL/dR` (times `scale`) ‖ the Dice loss ‖ 1 where the map has a range, else 0.
pub fn map_dice(
    r: &Tensor,
    folded: &Tensor,
    consts: &Tensor,
    grid: usize,
    size: usize,
    scale: f32,
) -> Result<Tensor> {
    r.contiguous()?.apply_op3_no_bwd(
        &folded.contiguous()?,
        &consts.contiguous()?,
        &MapDice { grid, size, scale },
    )
}

struct MapDice {
    grid: usize,
    size: usize,
    scale: f32,
}

impl MapDice {
    /// M, after checking every shape against (g, S).
    fn masks(&self, r: &Layout, folded: &Layout, consts: &Layout) -> Result<usize> {
        let (g2, s2) = (self.grid * self.grid, self.size * self.size);
        let (m, rg) = r.shape().dims2()?;
        let ok = rg == g2
            && folded.shape().dims2()? == (m, s2)
            && consts.shape().elem_count() == s2 + m
            && self.grid > 0
            && self.size % self.grid == 0;
        if !ok {
            candle_core::bail!(
                "map_dice: r {:?}, folded {:?}, consts {:?} do not fit g = {}, S = {}",
                r.shape(),
                folded.shape(),
                consts.shape(),
                self.grid,
                self.size
            );
        }
        Ok(m)
    }
}

impl CustomOp3 for MapDice {
    fn name(&self) -> &'static str {
        "map-dice"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let m = self.masks(l1, l2, l3)?;
        let (g, s) = (self.grid, self.size);
        let (r, folded, consts) = (
            cpu_f32(s1, l1, "map_dice")?,
            cpu_f32(s2, l2, "map_dice")?,
            cpu_f32(s3, l3, "map_dice")?,
        );
        let (rho, area) = consts.split_at(s * s);
        let taps = bilinear_taps(g, s);
        // The dense [S, g] resize matrix A: X = A·R·Aᵀ, dR = Aᵀ·dX·A.
        let mut a = vec![0f32; s * g];
        for (o, t) in taps.iter().enumerate() {
            a[o * g + t.lo] += 1.0 - t.frac;
            a[o * g + t.hi] += t.frac;
        }
        let mut out = vec![0f32; m * (g * g + 2)];
        out.par_chunks_mut(g * g + 2)
            .enumerate()
            .for_each(|(k, o)| {
                let rk = &r[k * g * g..(k + 1) * g * g];
                let fk = &folded[k * s * s..(k + 1) * s * s];
                // along x, then along y, as the kernel and the generic products associate
                let mut along_x = vec![0f32; g * s];
                for row in 0..g {
                    for x in 0..s {
                        along_x[row * s + x] = (0..g).map(|c| rk[row * g + c] * a[x * g + c]).sum();
                    }
                }
                let mut map = vec![0f32; s * s];
                for y in 0..s {
                    for x in 0..s {
                        map[y * s + x] = (0..g)
                            .map(|row| a[y * g + row] * along_x[row * s + x])
                            .sum();
                    }
                }
                // first extremes, as torch's argmin/argmax
                let (mut at_min, mut at_max) = (0, 0);
                for (px, &v) in map.iter().enumerate() {
                    if v < map[at_min] {
                        at_min = px;
                    }
                    if v > map[at_max] {
                        at_max = px;
                    }
                }
                let span = map[at_max] - map[at_min];
                let valid = span > 0.0;
                let (range, inv) = if valid {
                    (span, 1.0 / span)
                } else {
                    (1.0, 0.0)
                };
                let lo = map[at_min];
                let e: Vec<f32> = map
                    .iter()
                    .map(|&v| if valid { (v - lo) / range } else { 0.0 })
                    .collect();
                let (mut inter, mut total) = (0f64, 0f64);
                for px in 0..s * s {
                    inter += (e[px] * fk[px]) as f64;
                    total += (e[px] * rho[px]) as f64;
                }
                let denom = total + area[k] as f64 + 1.0;
                let num = 2.0 * inter + 1.0;
                let (ca, cb) = (
                    (-2.0 / denom * self.scale as f64) as f32,
                    (num / (denom * denom) * self.scale as f64) as f32,
                );
                // dL/dE, then through the normalisation (the extremes' rows carry the range's derivative)
                let d_e: Vec<f32> = (0..s * s).map(|px| ca * fk[px] + cb * rho[px]).collect();
                let to_min: f32 = d_e.iter().zip(&e).map(|(d, v)| d * (v - 1.0)).sum();
                let to_max: f32 = -d_e.iter().zip(&e).map(|(d, v)| d * v).sum::<f32>();
                let mut dx: Vec<f32> = d_e.iter().map(|d| d * inv).collect();
                dx[at_min] += to_min * inv;
                dx[at_max] += to_max * inv;
                // dR = Aᵀ·dX·A
                let mut q = vec![0f32; s * g];
                for y in 0..s {
                    for c in 0..g {
                        q[y * g + c] = (0..s).map(|x| dx[y * s + x] * a[x * g + c]).sum();
                    }
                }
                for row in 0..g {
                    for c in 0..g {
                        o[row * g + c] = (0..s).map(|y| a[y * g + row] * q[y * g + c]).sum();
                    }
                }
                o[g * g] = (1.0 - num / denom) as f32;
                o[g * g + 1] = if valid { 1.0 } else { 0.0 };
            });
        Ok((CpuStorage::F32(out), Shape::from((m, g * g + 2))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use crate::kernels::{Launch, Scalar};
        let m = self.masks(l1, l2, l3)?;
        let (g, s) = (self.grid, self.size);
        // R and the resize taps (two ints and a float per output position) in shared memory
        let shared_bytes = 4 * (g * g + 3 * s);
        if shared_bytes > 40 << 10 {
            candle_core::bail!(
                "map_dice: g = {g}, S = {s} need {shared_bytes} B of shared memory (at most 40 KiB)"
            );
        }
        let dev = s1.device.clone();
        let launch = Launch {
            module: "regionseek_map_dice",
            ptx: include_str!(concat!(env!("OUT_DIR"), "/map_dice.ptx")),
            name: "map_dice",
            grid: (m as u32, 1, 1),
            threads: 512,
            shared_bytes: shared_bytes as u32,
            inputs: &[(s1, l1), (s2, l2), (s3, l3)],
            buffers: &[m * s * g, m * (g * g + 2)],
            scalars: &[
                Scalar::I32(g as i32),
                Scalar::I32(s as i32),
                Scalar::F32(self.scale),
            ],
        };
        // SAFETY: masks() checked r [M, g²], folded [M, S²] and consts [S² + M]; the buffers are the kernel's
        // scratch [M, S, g] and output [M, g² + 2]; one block per mask touches only its own rows.
        let mut buffers = unsafe { launch.run()? };
        let out = buffers.remove(1);
        Ok((
            candle_core::CudaStorage::wrap_cuda_slice(out, dev),
            Shape::from((m, g * g + 2)),
        ))
    }
}
