//! The pre-norm residual attention block shared by both towers.

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::{LayerNorm, VarBuilder};

use super::config::Activation;
use super::naming::Naming;

pub(crate) fn layer_norm(vb: VarBuilder, dim: usize, eps: f64) -> Result<LayerNorm> {
    let weight = vb.get(dim, "weight")?;
    let bias = vb.get(dim, "bias")?;
    Ok(LayerNorm::new(weight, bias, eps))
}

/// `x·wᵀ` with the product in `w`'s dtype and the result in f32, as torch's autocast: activations, sums,
/// LayerNorm and softmax stay f32 and only the products run in reduced precision.
pub(crate) fn matmul_t(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    x.to_dtype(w.dtype())?
        .broadcast_matmul(&w.t()?)?
        .to_dtype(DType::F32)
}

/// A dense layer whose weight may be kept in a reduced-precision dtype (see [`matmul_t`]); f32 bias.
pub struct Linear {
    weight: Tensor,
    bias: Tensor,
}

impl Linear {
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        matmul_t(x, &self.weight)?.broadcast_add(&self.bias)
    }
}

fn linear(vb: VarBuilder, in_dim: usize, out_dim: usize, dtype: DType) -> Result<Linear> {
    Ok(Linear {
        weight: vb.get((out_dim, in_dim), "weight")?.to_dtype(dtype)?,
        bias: vb.get(out_dim, "bias")?,
    })
}

pub(crate) fn activate(act: Activation, x: &Tensor) -> Result<Tensor> {
    match act {
        Activation::QuickGelu => x.broadcast_mul(&candle_nn::ops::sigmoid(&(x * 1.702)?)?),
        Activation::Gelu => x.gelu_erf(),
    }
}

/// What the explainer needs from the last block of the image tower, for one image (batch of 1).
/// Shapes: N tokens (CLS first), C width, H heads of D, F MLP width.
#[derive(Debug, Clone)]
pub struct BlockTaps {
    /// Block input `[N, C]`.
    pub x_in: Tensor,
    /// Post-softmax attention probabilities `[H, N, N]`.
    pub attn_probs: Tensor,
    /// Value vectors `[H, N, D]` (after the in-projection bias).
    pub values: Tensor,
    /// Residual stream after attention, the input of `ln_2` `[N, C]`.
    pub x_mid: Tensor,
    /// `ln_2`'s normalised input `(x_mid − μ)/σ` `[N, C]` and its σ = sqrt(var + eps) `[N]`.
    pub ln2_normalized: Tensor,
    pub ln2_std: Tensor,
    /// MLP pre-activations `[N, F]`.
    pub mlp_pre: Tensor,
    /// Block output `[N, C]`.
    pub x_out: Tensor,
}

pub struct ResidualBlock {
    ln_1: LayerNorm,
    /// Packed q/k/v in-projection `[3C, C]` and its bias `[3C]`, the OpenCLIP layout.
    qkv_weight: Tensor,
    qkv_bias: Tensor,
    out_proj: Linear,
    ln_2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    heads: usize,
    activation: Activation,
    eps: f64,
}

impl ResidualBlock {
    #[allow(clippy::too_many_arguments)] // a block's shape, as the checkpoint's config spells it
    pub fn load(
        vb: VarBuilder,
        naming: Naming,
        width: usize,
        heads: usize,
        mlp_dim: usize,
        activation: Activation,
        eps: f64,
        matmul_dtype: DType,
    ) -> Result<Self> {
        let (qkv_weight, qkv_bias, out_proj) = match naming {
            Naming::OpenClip => {
                let attn = vb.pp("attn");
                (
                    attn.get((3 * width, width), "in_proj_weight")?
                        .to_dtype(matmul_dtype)?,
                    attn.get(3 * width, "in_proj_bias")?,
                    linear(attn.pp("out_proj"), width, width, matmul_dtype)?,
                )
            }
            Naming::Hf => {
                let attn = vb.pp("self_attn");
                let parts = ["q_proj", "k_proj", "v_proj"]
                    .iter()
                    .map(|n| linear(attn.pp(n), width, width, matmul_dtype))
                    .collect::<Result<Vec<_>>>()?;
                let w: Vec<Tensor> = parts.iter().map(|l| l.weight().clone()).collect();
                let b: Vec<Tensor> = parts.iter().map(|l| l.bias.clone()).collect();
                (
                    Tensor::cat(&w, 0)?,
                    Tensor::cat(&b, 0)?,
                    linear(attn.pp("out_proj"), width, width, matmul_dtype)?,
                )
            }
        };
        let (ln1, ln2, mlp, fc1, fc2) = match naming {
            Naming::OpenClip => ("ln_1", "ln_2", "mlp", "c_fc", "c_proj"),
            Naming::Hf => ("layer_norm1", "layer_norm2", "mlp", "fc1", "fc2"),
        };
        Ok(Self {
            ln_1: layer_norm(vb.pp(ln1), width, eps)?,
            qkv_weight,
            qkv_bias,
            out_proj,
            ln_2: layer_norm(vb.pp(ln2), width, eps)?,
            fc1: linear(vb.pp(mlp).pp(fc1), width, mlp_dim, matmul_dtype)?,
            fc2: linear(vb.pp(mlp).pp(fc2), mlp_dim, width, matmul_dtype)?,
            heads,
            activation,
            eps,
        })
    }

    /// q, k, v as `[B, H, N, D]` each.
    fn qkv(&self, x: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let (b, n, c) = x.dims3()?;
        let d = c / self.heads;
        let qkv =
            matmul_t(&self.ln_1.forward(x)?, &self.qkv_weight)?.broadcast_add(&self.qkv_bias)?;
        let qkv = qkv
            .reshape((b, n, 3, self.heads, d))?
            .permute((2, 0, 3, 1, 4))?;
        Ok((
            qkv.get(0)?.contiguous()?,
            qkv.get(1)?.contiguous()?,
            qkv.get(2)?.contiguous()?,
        ))
    }

    /// Attention probabilities `[B, H, N, N]`; `mask` is additive `[N, N]` (causal text mask).
    fn attention_probs(&self, q: &Tensor, k: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let d = q.dim(D::Minus1)?;
        let scores = self.product(&(q * (d as f64).powf(-0.5))?, &k.t()?)?;
        let scores = match mask {
            Some(m) => scores.broadcast_add(m)?,
            None => scores,
        };
        candle_nn::ops::softmax_last_dim(&scores)
    }

    /// `a·b` of two activations, in the dtype the block's weights are kept in, back to f32.
    fn product(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        let dt = self.qkv_weight.dtype();
        a.to_dtype(dt)?
            .matmul(&b.to_dtype(dt)?)?
            .to_dtype(DType::F32)
    }

    fn merge_heads(o: &Tensor) -> Result<Tensor> {
        let (b, h, n, d) = o.dims4()?;
        o.transpose(1, 2)?.reshape((b, n, h * d))
    }

    fn mlp(&self, pre: &Tensor) -> Result<Tensor> {
        self.fc2.forward(&activate(self.activation, pre)?)
    }

    pub fn forward(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let (q, k, v) = self.qkv(x)?;
        let probs = self.attention_probs(&q, &k, mask)?;
        let o = Self::merge_heads(&self.product(&probs, &v)?)?;
        let x_mid = (x + self.out_proj.forward(&o)?)?;
        let pre = self.fc1.forward(&self.ln_2.forward(&x_mid)?)?;
        x_mid + self.mlp(&pre)?
    }

    /// The forward of a batch (`x`: `[B, N, C]`) that keeps each image's intermediate state.
    pub fn forward_with_taps(&self, x: &Tensor) -> Result<(Tensor, Vec<BlockTaps>)> {
        let (b, n, c) = x.dims3()?;
        let (q, k, v) = self.qkv(x)?;
        let probs = self.attention_probs(&q, &k, None)?;
        let o = Self::merge_heads(&self.product(&probs, &v)?)?;
        let x_mid = (x + self.out_proj.forward(&o)?)?;
        let (ln2_normalized, ln2_std) = standardize_rows(&x_mid.reshape((b * n, c))?, self.eps)?;
        let pre = self.fc1.forward(&self.ln_2.forward(&x_mid)?)?;
        let x_out = (&x_mid + self.mlp(&pre)?)?;
        let taps = (0..b)
            .map(|i| {
                Ok(BlockTaps {
                    x_in: x.get(i)?,
                    attn_probs: probs.get(i)?,
                    values: v.get(i)?,
                    x_mid: x_mid.get(i)?,
                    ln2_normalized: ln2_normalized.narrow(0, i * n, n)?,
                    ln2_std: ln2_std.narrow(0, i * n, n)?,
                    mlp_pre: pre.get(i)?,
                    x_out: x_out.get(i)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((x_out, taps))
    }

    pub fn out_proj_weight(&self) -> &Tensor {
        self.out_proj.weight()
    }
    pub fn fc1_weight(&self) -> &Tensor {
        self.fc1.weight()
    }
    pub fn fc2_weight(&self) -> &Tensor {
        self.fc2.weight()
    }
    pub fn ln2_gamma(&self) -> &Tensor {
        self.ln_2.weight()
    }
    pub fn activation(&self) -> Activation {
        self.activation
    }
    /// The value projection `[C, C]` and bias `[C]` (rows 2C..3C of the packed in-projection).
    pub fn value_projection(&self) -> Result<(Tensor, Tensor)> {
        let c = self.qkv_weight.dim(1)?;
        Ok((
            self.qkv_weight.narrow(0, 2 * c, c)?,
            self.qkv_bias.narrow(0, 2 * c, c)?,
        ))
    }
    pub fn ln_1(&self) -> &LayerNorm {
        &self.ln_1
    }
    pub fn ln_2(&self) -> &LayerNorm {
        &self.ln_2
    }
    pub fn out_proj(&self) -> &Linear {
        &self.out_proj
    }
    pub fn mlp_forward(&self, ln2_out: &Tensor) -> Result<Tensor> {
        self.mlp(&self.fc1.forward(ln2_out)?)
    }
}

/// LayerNorm's normalisation without the affine part: `((x − μ)/σ, σ)` over the last dimension of a
/// `[rows, C]` tensor, biased variance as torch.
pub fn standardize_rows(x: &Tensor, eps: f64) -> Result<(Tensor, Tensor)> {
    let x = x.to_dtype(DType::F32)?;
    let mean = x.mean_keepdim(D::Minus1)?;
    let centered = x.broadcast_sub(&mean)?;
    let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
    let std = (var + eps)?.sqrt()?;
    Ok((centered.broadcast_div(&std)?, std.squeeze(D::Minus1)?))
}
