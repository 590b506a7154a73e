//! LeGrad explainability maps of a token for the last block of a CLIP ViT, with exact analytic gradients.
//!
//! The score of a token t is `s = <t/|t|, ẑ>`, ẑ the normalised embedding of the mean of all output tokens.
//! The map is `R = mean_h mean_rows ReLU(∂s/∂A_h)` with the CLS column dropped, upsampled bilinearly ×patch
//! and min-max normalised (then resized to a mask's size by the caller's [`MapResize`]).
//! Since A_h enters only through `O_h = A_h V_h`, `∂s/∂A_h = U_h V_hᵀ` with `U = ∂s/∂O`, which is linear in
//! t̂: [`Relevance`] evaluates `t̂ → U` either through the chain rule each time ([`GradPath::Direct`]) or
//! through a per-image Jacobian K (`U = K t̂`, [`GradPath::Jacobian`]), and their transposes for the
//! backward pass. See DESIGN.md §Fast, exact gradients.

pub mod fused;
pub mod maps;

use candle_core::{DType, Device, Result, Tensor, D};

use crate::clip::{Activation, ImageTaps, VisionTransformer};
pub use maps::{MapResize, PatchUpsample};

/// How `t̂ → U = ∂s/∂O` is evaluated. Both are exact; they differ in cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GradPath {
    /// Chain rule per evaluation: ≈ 2·N·C·(F + C) MACs per token vector (forward + transpose).
    Direct,
    /// Per-image Jacobian K (N×C×d), built once (≈ N·C·d·(F + C) MACs), then 2·N·C·d per token vector.
    Jacobian,
}

/// LayerNorm Jacobian pieces at a fixed input: normalised input x̂ `[rows, C]`, σ `[rows, 1]`, γ `[C]`.
struct LnPoint {
    xhat: Tensor,
    std: Tensor,
    gamma: Tensor,
}

impl LnPoint {
    /// `J_LNᵀ·u` for each row: `(γu − mean(γu) − x̂·mean(γu⊙x̂)) / σ` (LayerNorm's backward).
    fn transpose_apply(&self, u: &Tensor) -> Result<Tensor> {
        let gh = u.broadcast_mul(&self.gamma)?;
        let m1 = gh.mean_keepdim(D::Minus1)?;
        let m2 = gh.broadcast_mul(&self.xhat)?.mean_keepdim(D::Minus1)?;
        gh.broadcast_sub(&m1)?
            .broadcast_sub(&self.xhat.broadcast_mul(&m2)?)?
            .broadcast_div(&self.std)
    }

    /// `J_LN·v` for each row: `γ ⊙ (v − mean(v) − x̂·mean(x̂⊙v)) / σ`.
    fn apply(&self, v: &Tensor) -> Result<Tensor> {
        let m1 = v.mean_keepdim(D::Minus1)?;
        let m2 = v.broadcast_mul(&self.xhat)?.mean_keepdim(D::Minus1)?;
        v.broadcast_sub(&m1)?
            .broadcast_sub(&self.xhat.broadcast_mul(&m2)?)?
            .broadcast_div(&self.std)?
            .broadcast_mul(&self.gamma)
    }
}

/// `x` `[B, N, K]` summed over its middle axis → `[B, K]`, as a batched product with a row of ones: candle
/// reduces a middle axis on one thread with strided reads (on 2 cores it was ~40% of a MaskInversion step),
/// the product runs on the GEMM kernels.
fn sum_middle(x: &Tensor) -> Result<Tensor> {
    let (b, n, _) = x.dims3()?;
    let ones = Tensor::ones((b, 1, n), x.dtype(), x.device())?;
    ones.matmul(&x.contiguous()?)?.squeeze(1)
}

fn activation_derivative(act: Activation, h: &Tensor) -> Result<Tensor> {
    match act {
        Activation::QuickGelu => {
            let s = candle_nn::ops::sigmoid(&(h * 1.702)?)?;
            let one_minus = s.affine(-1.0, 1.0)?;
            &s + (h * 1.702)?.mul(&s)?.mul(&one_minus)?
        }
        Activation::Gelu => {
            let cdf = ((h / std::f64::consts::SQRT_2)?.erf()? + 1.0)? * 0.5;
            let pdf = (h.sqr()? * -0.5)?.exp()? * (1.0 / (2.0 * std::f64::consts::PI).sqrt());
            cdf? + h.mul(&pdf?)?
        }
    }
}

/// What the map keeps for its backward (see [`Relevance::map_products`]).
pub enum MapProducts {
    /// `G_h = U_h V_hᵀ` laid out `[H, M·N, N]`.
    Dense(Tensor),
    /// U `[M, N, C]`; the fused kernels recompute G tile by tile.
    Fused(Tensor),
}

/// The per-image operands the Jacobian's rows are made from (see [`Relevance::build_jacobian`]).
struct JacobianOperands {
    /// `w(e_k)` for the d basis vectors `[d, C]`, and its product with fc2 `[d, F]`.
    w_of_basis: Tensor,
    y: Tensor,
    fc1: Tensor,
    out_proj: Tensor,
    act_prime: Tensor,
    ln2: LnPoint,
}

/// Everything about one image that the map and its gradient need, computed once per image.
pub struct Relevance {
    pub tokens: usize,
    pub width: usize,
    pub heads: usize,
    pub embed_dim: usize,
    pub grid: usize,
    pub patch: usize,
    /// ẑ `[d]` and |e|.
    zhat: Tensor,
    e_norm: f64,
    /// `[C, d]`.
    proj: Tensor,
    ln_post: LnPoint,
    ln_2: LnPoint,
    /// MLP activation derivative at the pre-activations `[N, F]`.
    act_prime: Tensor,
    /// fc1 `[F, C]`, fc2 `[C, F]`, out_proj `[C, C]` (torch Linear layout: `[out, in]`).
    fc1: Tensor,
    fc2: Tensor,
    out_proj: Tensor,
    /// Values per head `[H, N, D]`.
    values: Tensor,
    /// The dtype the Jacobian is built and kept in (the image tower's: bf16 halves its memory).
    jacobian_dtype: DType,
    /// The map's products through the fused kernels ([`fused`]) instead of materialised.
    fused_maps: bool,
    jacobian: Option<Tensor>,
}

impl Relevance {
    pub fn new(vision: &VisionTransformer, taps: &ImageTaps) -> Result<Self> {
        let cfg = vision.config();
        let block = vision.last_block();
        let n = taps.block.x_in.dim(0)?;
        // The step loop runs in f32 whatever the tower's weights are kept in.
        let f32 = |t: &Tensor| t.to_dtype(DType::F32);
        let e_norm = taps
            .mean_embedding
            .sqr()?
            .sum_all()?
            .sqrt()?
            .to_dtype(DType::F64)?
            .to_scalar::<f64>()?;
        Ok(Self {
            tokens: n,
            width: cfg.width,
            heads: cfg.heads,
            embed_dim: vision.projection().dim(1)?,
            grid: taps.grid,
            patch: cfg.patch_size,
            zhat: taps.mean_embedding_unit.clone(),
            e_norm,
            proj: f32(vision.projection())?,
            ln_post: LnPoint {
                xhat: taps.token_mean_normalized.unsqueeze(0)?,
                std: taps.token_mean_std.reshape((1, 1))?,
                gamma: f32(vision.ln_post_gamma())?,
            },
            ln_2: LnPoint {
                xhat: taps.block.ln2_normalized.clone(),
                std: taps.block.ln2_std.unsqueeze(1)?,
                gamma: f32(block.ln2_gamma())?,
            },
            act_prime: activation_derivative(block.activation(), &taps.block.mlp_pre)?,
            fc1: f32(block.fc1_weight())?,
            fc2: f32(block.fc2_weight())?,
            out_proj: f32(block.out_proj_weight())?,
            values: taps.block.values.clone(),
            jacobian_dtype: DType::F32,
            fused_maps: false,
            jacobian: None,
        })
    }

    /// Builds and keeps the Jacobian in `dtype` (bf16 halves its memory; the products with it return f32).
    pub fn with_jacobian_dtype(mut self, dtype: DType) -> Self {
        self.jacobian_dtype = dtype;
        self
    }

    /// Evaluates the map's per-head products with the fused kernels: M·H·N² values never held.
    pub fn with_fused_maps(mut self, fused: bool) -> Self {
        self.fused_maps = fused;
        self
    }

    pub fn fused_maps(&self) -> bool {
        self.fused_maps
    }

    pub fn device(&self) -> &Device {
        self.zhat.device()
    }

    pub fn mlp_width(&self) -> usize {
        self.act_prime.dim(1).unwrap_or(0)
    }

    /// `w = ∂s/∂z̄` for unit tokens `[M, d]` → `[M, C]`.
    fn token_mean_grad(&self, t_hat: &Tensor) -> Result<Tensor> {
        let along = t_hat.matmul(&self.zhat.unsqueeze(1)?)?; // [M, 1]
        let u = (t_hat - along.broadcast_mul(&self.zhat.unsqueeze(0)?)?)? / self.e_norm;
        self.ln_post.transpose_apply(&u?.matmul(&self.proj.t()?)?)
    }

    /// Transpose of [`Self::token_mean_grad`]: `[M, C]` → `[M, d]`.
    fn token_mean_grad_t(&self, dw: &Tensor) -> Result<Tensor> {
        let v = self.ln_post.apply(dw)?.matmul(&self.proj)?;
        let along = v.matmul(&self.zhat.unsqueeze(1)?)?;
        (v - along.broadcast_mul(&self.zhat.unsqueeze(0)?)?)? / self.e_norm
    }

    /// `g_i = ∂s/∂x_mid[i]` for all tokens from `w` `[M, C]` → `[M, N, C]`.
    fn residual_grad(&self, w: &Tensor) -> Result<Tensor> {
        let (m, c) = w.dims2()?;
        let n = self.tokens;
        let y = w.matmul(&self.fc2)?; // [M, F]
        let z = self
            .act_prime
            .unsqueeze(0)?
            .broadcast_mul(&y.unsqueeze(1)?)?; // [M, N, F]
        let f = y.dim(1)?;
        let q = z
            .reshape((m * n, f))?
            .matmul(&self.fc1)?
            .reshape((m, n, c))?;
        let back = self.ln_2.transpose_apply(&q)?;
        back.broadcast_add(&w.unsqueeze(1)?)? / n as f64
    }

    /// Transpose of [`Self::residual_grad`]: `[M, N, C]` → `[M, C]`.
    fn residual_grad_t(&self, dg: &Tensor) -> Result<Tensor> {
        let (m, n, c) = dg.dims3()?;
        let t = self.ln_2.apply(dg)?;
        let f = self.fc1.dim(0)?;
        let s = t
            .reshape((m * n, c))?
            .matmul(&self.fc1.t()?)?
            .reshape((m, n, f))?;
        let s = sum_middle(&s.broadcast_mul(&self.act_prime.unsqueeze(0)?)?)?; // [M, F]
        let through_mlp = s.matmul(&self.fc2.t()?)?;
        (through_mlp + sum_middle(dg)?)? / n as f64
    }

    /// The operands every chunk of Jacobian rows is made from, in the Jacobian's dtype.
    fn jacobian_operands(&self) -> Result<JacobianOperands> {
        let d = self.embed_dim;
        let dt = self.jacobian_dtype;
        // M_mat = ∂w/∂t̂ as [d, C] rows: the images of the unit vectors.
        let eye = Tensor::eye(d, DType::F32, self.device())?;
        let w_of_basis = self.token_mean_grad(&eye)?.to_dtype(dt)?; // [d, C]: row k = w(e_k)
        let fc2 = self.fc2.to_dtype(dt)?;
        Ok(JacobianOperands {
            y: w_of_basis.matmul(&fc2)?, // [d, F]
            w_of_basis,
            fc1: self.fc1.to_dtype(dt)?,
            out_proj: self.out_proj.to_dtype(dt)?,
            act_prime: self.act_prime.to_dtype(dt)?,
            ln2: LnPoint {
                xhat: self.ln_2.xhat.to_dtype(dt)?,
                std: self.ln_2.std.to_dtype(dt)?,
                gamma: self.ln_2.gamma.to_dtype(dt)?,
            },
        })
    }

    /// The Jacobian's rows for tokens `start..start + len`: `[len·C, d]`.
    fn jacobian_rows(&self, ops: &JacobianOperands, start: usize, len: usize) -> Result<Tensor> {
        let (d, c, n) = (self.embed_dim, self.width, self.tokens);
        // residual_grad over a subset of tokens, with the d basis vectors as the "masks".
        let a = ops.act_prime.narrow(0, start, len)?; // [len, F]
        let z = a.unsqueeze(0)?.broadcast_mul(&ops.y.unsqueeze(1)?)?; // [d, len, F]
        let f = ops.y.dim(1)?;
        let q = z
            .reshape((d * len, f))?
            .matmul(&ops.fc1)?
            .reshape((d, len, c))?;
        let ln = LnPoint {
            xhat: ops.ln2.xhat.narrow(0, start, len)?,
            std: ops.ln2.std.narrow(0, start, len)?,
            gamma: ops.ln2.gamma.clone(),
        };
        let g = (ln
            .transpose_apply(&q)?
            .broadcast_add(&ops.w_of_basis.unsqueeze(1)?)?
            / n as f64)?;
        let u = g
            .reshape((d * len, c))?
            .matmul(&ops.out_proj)?
            .reshape((d, len * c))?; // [d, len·C]
        u.t()?.contiguous() // [len·C, d]
    }

    /// Builds and keeps the per-image Jacobian K `[N·C, d]` with `U[i, c] = <K[i, c, :], t̂>`.
    /// `token_chunk` bounds the temporary `[chunk, F, d]` buffer.
    pub fn build_jacobian(&mut self, token_chunk: usize) -> Result<()> {
        let n = self.tokens;
        let ops = self.jacobian_operands()?;
        let token_chunk = token_chunk.max(1);
        let mut parts = Vec::with_capacity(n.div_ceil(token_chunk));
        let mut start = 0;
        while start < n {
            let len = token_chunk.min(n - start);
            parts.push(self.jacobian_rows(&ops, start, len)?);
            start += len;
        }
        self.jacobian = Some(Tensor::cat(&parts, 0)?);
        Ok(())
    }

    /// What the two gradient paths cost on this image's device, timed on a slice of the real work: `masks`
    /// token vectors through the chain rule and its transpose, and one `token_chunk` of Jacobian rows (the
    /// build repeats exactly that chunk N/chunk times) with the two products against a tile of such rows.
    /// Each piece runs once untimed first, so that kernel loading and library handles stay out of the
    /// figures. Counted MACs cannot see that a GPU runs the Jacobian's few large products far faster per
    /// MAC than the chain's many small ones, or what a precision does to either.
    pub fn measure_costs(&self, masks: usize, token_chunk: usize) -> Result<MeasuredCosts> {
        let device = self.device().clone();
        let (n, c) = (self.tokens, self.width);
        let m = masks.max(1);
        let timed = |f: &mut dyn FnMut() -> Result<()>| -> Result<f64> {
            f()?;
            device.synchronize()?;
            let t = std::time::Instant::now();
            f()?;
            device.synchronize()?;
            Ok(t.elapsed().as_secs_f64())
        };
        // Real-valued unit tokens: the image's own direction, as an inversion starts from it.
        let t_hat = self.zhat.unsqueeze(0)?.repeat((m, 1))?;
        let du = self.attention_output_grad(&t_hat, GradPath::Direct)?;
        let direct_s = timed(&mut || {
            let u = self.attention_output_grad(&t_hat, GradPath::Direct)?;
            self.attention_output_grad_t(&u, GradPath::Direct).map(drop)
        })?;

        let mut ops = None;
        let operands_s = timed(&mut || {
            ops = Some(self.jacobian_operands()?);
            Ok(())
        })?;
        let ops = ops.expect("set by the timed closure");
        let len = token_chunk.clamp(1, n);
        let mut rows = None;
        let rows_s = timed(&mut || {
            rows = Some(self.jacobian_rows(&ops, 0, len)?);
            Ok(())
        })?;
        let rows = rows.expect("set by the timed closure");
        // Products against a tile of up to 8 chunks (at most all N tokens): one chunk's product is too small
        // to fill a GPU.
        let tile = (n / len).clamp(1, 8);
        let k_tile = Tensor::cat(&vec![&rows; tile], 0)?; // [tile·len·C, d]
        let tile_tokens = tile * len;
        let t_k = t_hat.to_dtype(k_tile.dtype())?;
        let du_tile = du
            .narrow(1, 0, tile_tokens)?
            .reshape((m, tile_tokens * c))?
            .to_dtype(k_tile.dtype())?;
        let products_s = timed(&mut || {
            k_tile.matmul(&t_k.t()?)?;
            du_tile.matmul(&k_tile).map(drop)
        })?;
        let chunks = n.div_ceil(len) as f64;
        Ok(MeasuredCosts {
            masks: m,
            direct_per_eval_s: direct_s / m as f64,
            jacobian_per_eval_s: products_s * (n as f64 / tile_tokens as f64) / m as f64,
            jacobian_build_s: operands_s + rows_s * chunks,
        })
    }

    /// Bytes the cached Jacobian takes on the device (0 before it is built).
    pub fn jacobian_bytes(&self) -> usize {
        self.jacobian
            .as_ref()
            .map_or(0, |k| k.elem_count() * k.dtype().size_in_bytes())
    }

    pub fn has_jacobian(&self) -> bool {
        self.jacobian.is_some()
    }

    /// `U = ∂s/∂O` `[M, N, C]` for unit tokens `[M, d]`.
    pub fn attention_output_grad(&self, t_hat: &Tensor, path: GradPath) -> Result<Tensor> {
        let m = t_hat.dim(0)?;
        match (path, &self.jacobian) {
            (GradPath::Jacobian, Some(k)) => k
                .matmul(&t_hat.to_dtype(k.dtype())?.t()?)?
                .to_dtype(DType::F32)?
                .t()?
                .reshape((m, self.tokens, self.width)),
            _ => {
                let w = self.token_mean_grad(t_hat)?;
                let g = self.residual_grad(&w)?;
                let c = self.width;
                g.reshape((m * self.tokens, c))?
                    .matmul(&self.out_proj)?
                    .reshape((m, self.tokens, c))
            }
        }
    }

    /// Transpose of [`Self::attention_output_grad`]: `dU` `[M, N, C]` → `dt̂` `[M, d]`.
    pub fn attention_output_grad_t(&self, du: &Tensor, path: GradPath) -> Result<Tensor> {
        let (m, n, c) = du.dims3()?;
        match (path, &self.jacobian) {
            (GradPath::Jacobian, Some(k)) => du
                .reshape((m, n * c))?
                .to_dtype(k.dtype())?
                .matmul(k)?
                .to_dtype(DType::F32),
            _ => {
                let dg = du
                    .reshape((m * n, c))?
                    .matmul(&self.out_proj.t()?)?
                    .reshape((m, n, c))?;
                self.token_mean_grad_t(&self.residual_grad_t(&dg)?)
            }
        }
    }

    /// Per-head products `G_h = U_h V_hᵀ` laid out `[H, M·N, N]`.
    pub fn attention_grads(&self, u: &Tensor) -> Result<Tensor> {
        let (m, n, _) = u.dims3()?;
        let h = self.heads;
        let dh = self.width / h;
        let uh = u.reshape((m * n, h, dh))?.transpose(0, 1)?.contiguous()?; // [H, M·N, D]
        uh.matmul(&self.values.transpose(1, 2)?.contiguous()?)
    }

    /// What the map's backward needs from its forward for `U` `[M, N, C]`: the products themselves, or
    /// only U when the fused kernels recompute them.
    pub fn map_products(&self, u: Tensor) -> Result<MapProducts> {
        if self.fused_maps {
            Ok(MapProducts::Fused(u.contiguous()?))
        } else {
            Ok(MapProducts::Dense(self.attention_grads(&u)?))
        }
    }

    /// Patch relevance `[M, g²]` (CLS column dropped).
    pub fn relevance(&self, products: &MapProducts, masks: usize) -> Result<Tensor> {
        let n = self.tokens;
        let h = self.heads;
        let r = match products {
            // [H·M, N, N] → column sums [H·M, N] → [M, N]
            MapProducts::Dense(grads) => sum_middle(&grads.relu()?.reshape((h * masks, n, n))?)?
                .reshape((h, masks, n))?
                .sum(0)?,
            MapProducts::Fused(u) => fused::relu_colsum(u, &self.values)?,
        };
        r.narrow(1, 1, n - 1)? / (h * n) as f64
    }

    /// Backward of [`Self::relevance`]: `dR` `[M, g²]` → `dU` `[M, N, C]`.
    pub fn relevance_backward(&self, products: &MapProducts, d_rel: &Tensor) -> Result<Tensor> {
        let m = d_rel.dim(0)?;
        let n = self.tokens;
        let h = self.heads;
        let dh = self.width / h;
        let zero_cls = Tensor::zeros((m, 1), DType::F32, self.device())?;
        let d_full = (Tensor::cat(&[&zero_cls, d_rel], 1)? / (h * n) as f64)?; // [M, N]
        let grads = match products {
            MapProducts::Dense(grads) => grads,
            MapProducts::Fused(u) => return fused::relu_colsum_backward(u, &self.values, &d_full),
        };
        let positive = grads
            .gt(0f32)?
            .to_dtype(DType::F32)?
            .reshape((h, m, n, n))?;
        let dg = positive
            .broadcast_mul(&d_full.reshape((1, m, 1, n))?)?
            .reshape((h, m * n, n))?;
        let du = dg.matmul(&self.values)?; // [H, M·N, D]
        du.transpose(0, 1)?.reshape((m, n, h * dh))
    }

    /// Patch relevance of unit tokens `[M, d]` in one call (no gradient kept).
    pub fn patch_relevance(&self, t_hat: &Tensor, path: GradPath) -> Result<Tensor> {
        let u = self.attention_output_grad(t_hat, path)?;
        self.relevance(&self.map_products(u)?, t_hat.dim(0)?)
    }

    /// MACs of one `t̂ → U` evaluation plus its transpose, per token vector, for each path; and the build
    /// cost of the Jacobian. Used to pick the cheaper path.
    pub fn costs(&self) -> PathCosts {
        let mut costs =
            PathCosts::for_sizes(self.tokens, self.width, self.mlp_width(), self.embed_dim);
        costs.jacobian_bytes *= self.jacobian_dtype.size_in_bytes() as f64 / 4.0;
        costs
    }
}

/// Multiply-accumulate counts of the two gradient paths for one image.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct PathCosts {
    pub direct_per_eval: f64,
    pub jacobian_per_eval: f64,
    pub jacobian_build: f64,
    pub jacobian_bytes: f64,
}

impl PathCosts {
    pub fn for_sizes(n: usize, c: usize, f: usize, d: usize) -> Self {
        let (n, c, f, d) = (n as f64, c as f64, f as f64, d as f64);
        Self {
            direct_per_eval: 2.0 * n * c * (f + c),
            jacobian_per_eval: 2.0 * n * c * d,
            jacobian_build: n * c * d * (f + c) + f * c * d,
            jacobian_bytes: 4.0 * n * c * d,
        }
    }
}

/// Seconds the two gradient paths take on one device for one model shape, measured by
/// [`Relevance::measure_costs`].
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct MeasuredCosts {
    /// Token vectors per evaluation the figures were taken at (a GPU's per-vector cost falls with more).
    pub masks: usize,
    pub direct_per_eval_s: f64,
    pub jacobian_per_eval_s: f64,
    pub jacobian_build_s: f64,
}

impl MeasuredCosts {
    /// Estimated seconds of `evaluations` token-vector evaluations on each path: (direct, Jacobian).
    pub fn estimate(&self, evaluations: usize) -> (f64, f64) {
        let e = evaluations as f64;
        (
            e * self.direct_per_eval_s,
            self.jacobian_build_s + e * self.jacobian_per_eval_s,
        )
    }
}
