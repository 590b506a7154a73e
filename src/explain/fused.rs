//! The LeGrad map's per-head products without materialising them: custom ops whose CUDA kernels
//! (kernels/legrad.cu, compiled to PTX by build.rs) compute `G_h = U_h V_hᵀ` tile by tile in registers, so
//! that neither the forward nor the backward ever holds M·H·N² values. The CPU implementations are plain
//! loops over the same definition: they fix the ops' meaning for tests on machines without a GPU, and are
//! far slower than the dense path's BLAS products (the dense path stays the CPU's).

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::kernels::cpu_f32;

/// `colsum[m, j] = Σ_h Σ_i ReLU(Σ_k U[m, i, h·Dh + k] · V[h, j, k])` for `u` `[M, N, H·Dh]`, `v` `[H, N, Dh]`.
pub fn relu_colsum(u: &Tensor, v: &Tensor) -> Result<Tensor> {
    u.contiguous()?
        .apply_op2_no_bwd(&v.contiguous()?, &ReluColsum)
}

/// Backward of [`relu_colsum`] for upstream `w = ∂L/∂colsum` `[M, N]`:
/// `dU[m, i, h·Dh + k] = Σ_j [G[m, h, i, j] > 0] · w[m, j] · V[h, j, k]`.
pub fn relu_colsum_backward(u: &Tensor, v: &Tensor, w: &Tensor) -> Result<Tensor> {
    u.contiguous()?
        .apply_op3_no_bwd(&v.contiguous()?, &w.contiguous()?, &ReluColsumBackward)
}

struct ReluColsum;
struct ReluColsumBackward;

/// (M, N, H, Dh) from `u` `[M, N, H·Dh]` and `v` `[H, N, Dh]`.
fn dims(u: &Layout, v: &Layout) -> Result<(usize, usize, usize, usize)> {
    let (m, n, c) = u.shape().dims3()?;
    let (h, nv, dh) = v.shape().dims3()?;
    if nv != n || h * dh != c {
        candle_core::bail!(
            "relu_colsum: u {:?} and v {:?} do not match",
            u.shape(),
            v.shape()
        );
    }
    Ok((m, n, h, dh))
}

/// As [`dims`], with `w` checked to be `[M, N]`.
fn backward_dims(u: &Layout, v: &Layout, w: &Layout) -> Result<(usize, usize, usize, usize)> {
    let (m, n, heads, dh) = dims(u, v)?;
    if w.shape().dims2()? != (m, n) {
        candle_core::bail!("relu_colsum_backward: w is {:?}, not [{m}, {n}]", w.shape());
    }
    Ok((m, n, heads, dh))
}

/// G[i, j] for one mask's rows of `u` and one head.
fn product(u_m: &[f32], v: &[f32], h: usize, i: usize, j: usize, n: usize, dh: usize) -> f32 {
    let c = u_m.len() / n;
    let a = &u_m[i * c + h * dh..i * c + (h + 1) * dh];
    let b = &v[(h * n + j) * dh..(h * n + j + 1) * dh];
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

impl CustomOp2 for ReluColsum {
    fn name(&self) -> &'static str {
        "legrad-relu-colsum"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (m, n, heads, dh) = dims(l1, l2)?;
        let (u, v) = (
            cpu_f32(s1, l1, "relu_colsum")?,
            cpu_f32(s2, l2, "relu_colsum")?,
        );
        let mut out = vec![0f32; m * n];
        out.par_chunks_mut(n).enumerate().for_each(|(mi, row)| {
            let u_m = &u[mi * n * heads * dh..(mi + 1) * n * heads * dh];
            for h in 0..heads {
                for i in 0..n {
                    for (j, o) in row.iter_mut().enumerate() {
                        *o += product(u_m, v, h, i, j, n, dh).max(0.0);
                    }
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((m, n))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let (m, n, heads, dh) = dims(l1, l2)?;
        let tiles = n.div_ceil(cuda::TILE) as u32;
        let out = cuda::launch(
            "legrad_relu_colsum",
            ((m * heads) as u32, tiles, tiles),
            &[(s1, l1), (s2, l2)],
            m * n,
            (n, heads, dh),
        )?;
        Ok((out, Shape::from((m, n))))
    }
}

impl CustomOp3 for ReluColsumBackward {
    fn name(&self) -> &'static str {
        "legrad-relu-colsum-backward"
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
        let (m, n, heads, dh) = backward_dims(l1, l2, l3)?;
        let (u, v, w) = (
            cpu_f32(s1, l1, "relu_colsum")?,
            cpu_f32(s2, l2, "relu_colsum")?,
            cpu_f32(s3, l3, "relu_colsum")?,
        );
        let c = heads * dh;
        let mut du = vec![0f32; m * n * c];
        du.par_chunks_mut(n * c).enumerate().for_each(|(mi, du_m)| {
            let u_m = &u[mi * n * c..(mi + 1) * n * c];
            let w_m = &w[mi * n..(mi + 1) * n];
            for h in 0..heads {
                for i in 0..n {
                    let out = &mut du_m[i * c + h * dh..i * c + (h + 1) * dh];
                    for (j, &wj) in w_m.iter().enumerate() {
                        if product(u_m, v, h, i, j, n, dh) > 0.0 {
                            let vj = &v[(h * n + j) * dh..(h * n + j + 1) * dh];
                            out.iter_mut().zip(vj).for_each(|(o, x)| *o += wj * x);
                        }
                    }
                }
            }
        });
        Ok((CpuStorage::F32(du), Shape::from((m, n, c))))
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
        let (m, n, heads, dh) = backward_dims(l1, l2, l3)?;
        let out = cuda::launch(
            "legrad_relu_colsum_backward",
            ((m * heads) as u32, n.div_ceil(cuda::TILE) as u32, 1),
            &[(s1, l1), (s2, l2), (s3, l3)],
            m * n * heads * dh,
            (n, heads, dh),
        )?;
        Ok((out, Shape::from((m, n, heads * dh))))
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use crate::kernels::{Launch, Scalar};
    use candle_core::{CudaStorage, Layout, Result};

    /// Must match kernels/legrad.cu.
    pub const TILE: usize = 64;

    /// Runs kernel `name` over `grid` on the inputs and a zeroed output of `out_len` elements, with the sizes
    /// (N, H, Dh) last: the argument order of both kernels.
    pub fn launch(
        name: &'static str,
        grid: (u32, u32, u32),
        inputs: &[(&CudaStorage, &Layout)],
        out_len: usize,
        (n, heads, dh): (usize, usize, usize),
    ) -> Result<CudaStorage> {
        let dev = inputs[0].0.device.clone();
        let launch = Launch {
            module: "regionseek_legrad",
            ptx: include_str!(concat!(env!("OUT_DIR"), "/legrad.ptx")),
            name,
            grid,
            threads: 256,
            shared_bytes: 0,
            inputs,
            buffers: &[out_len],
            scalars: &[
                Scalar::I32(n as i32),
                Scalar::I32(heads as i32),
                Scalar::I32(dh as i32),
            ],
        };
        // SAFETY: the callers checked the inputs' shapes against (N, H, Dh) and sized the output as the
        // kernel writes it; the kernels guard every row and column past N and Dh.
        let out = unsafe { launch.run()? }.remove(0);
        Ok(CudaStorage::wrap_cuda_slice(out, dev))
    }
}
