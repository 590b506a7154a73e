//! The image tower: patch embedding, transformer, ln_post and projection, at any resolution that is a
//! multiple of the patch size.

use std::collections::HashMap;
use std::sync::Mutex;

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::{LayerNorm, VarBuilder};

use super::block::{layer_norm, matmul_t, standardize_rows, BlockTaps, ResidualBlock};
use super::config::VisionConfig;
use super::naming::Naming;
use crate::resample::{resize_planes_antialias, Filter};

/// The last block's state plus the global quantities the LeGrad score is built from.
#[derive(Debug, Clone)]
pub struct ImageTaps {
    pub block: BlockTaps,
    /// Patch grid side g (N = g² + 1).
    pub grid: usize,
    /// Mean of ALL N output tokens (CLS included), before ln_post `[C]`.
    pub token_mean: Tensor,
    /// ln_post's normalised `token_mean` `[C]` and its σ (scalar tensor).
    pub token_mean_normalized: Tensor,
    pub token_mean_std: Tensor,
    /// `e = ln_post(token_mean) @ proj` `[d]` and ẑ = e/|e|.
    pub mean_embedding: Tensor,
    pub mean_embedding_unit: Tensor,
}

pub struct VisionTransformer {
    cfg: VisionConfig,
    /// Conv weight `[C, 3, p, p]` (no bias in CLIP).
    patch_embedding: Tensor,
    class_embedding: Tensor,
    /// The checkpoint's own grid `[g0² + 1, C]`; resampled copies are cached per grid, never chained.
    positional_embedding: Tensor,
    resampled_positions: Mutex<HashMap<usize, Tensor>>,
    ln_pre: LayerNorm,
    blocks: Vec<ResidualBlock>,
    ln_post: LayerNorm,
    /// `[C, d]`: embeddings are `ln_post(x) @ proj`.
    proj: Tensor,
}

impl VisionTransformer {
    pub fn load(
        vb: VarBuilder,
        naming: Naming,
        cfg: &VisionConfig,
        embed_dim: usize,
        matmul_dtype: DType,
    ) -> Result<Self> {
        let keys = naming.vision();
        let c = cfg.width;
        let p = cfg.patch_size;
        let g0 = cfg.base_grid();
        let patch_embedding = vb
            .get((c, 3, p, p), keys.patch_embedding)?
            .to_dtype(matmul_dtype)?;
        let class_embedding = vb.get(c, keys.class_embedding)?;
        let positional_embedding = vb.get((g0 * g0 + 1, c), keys.positional_embedding)?;
        let ln_pre = layer_norm(vb.pp(keys.ln_pre), c, cfg.ln_eps)?;
        let blocks = (0..cfg.layers)
            .map(|i| {
                ResidualBlock::load(
                    vb.pp(keys.blocks).pp(i),
                    naming,
                    c,
                    cfg.heads,
                    cfg.mlp_dim,
                    cfg.activation,
                    cfg.ln_eps,
                    matmul_dtype,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let ln_post = layer_norm(vb.pp(keys.ln_post), c, cfg.ln_eps)?;
        let proj = match naming {
            Naming::OpenClip => vb.get((c, embed_dim), "visual.proj")?,
            Naming::Hf => vb
                .get((embed_dim, c), "visual_projection.weight")?
                .t()?
                .contiguous()?,
        }
        .to_dtype(matmul_dtype)?;
        Ok(Self {
            cfg: cfg.clone(),
            patch_embedding,
            class_embedding,
            positional_embedding,
            resampled_positions: Mutex::new(HashMap::new()),
            ln_pre,
            blocks,
            ln_post,
            proj,
        })
    }

    pub fn config(&self) -> &VisionConfig {
        &self.cfg
    }

    /// Positional embeddings for a g×g grid: the checkpoint's grid resampled with antialiased bicubic
    /// (align_corners=False), the CLS position kept, as timm's `resample_abs_pos_embed` used by the reference.
    pub fn positional_embedding(&self, grid: usize) -> Result<Tensor> {
        let g0 = self.cfg.base_grid();
        if grid == g0 {
            return Ok(self.positional_embedding.clone());
        }
        let mut cache = self
            .resampled_positions
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(t) = cache.get(&grid) {
            return Ok(t.clone());
        }
        let c = self.cfg.width;
        let cls = self.positional_embedding.narrow(0, 0, 1)?;
        // [g0², C] -> planar [C, g0, g0] for the separable resampler.
        let planes: Vec<f32> = self
            .positional_embedding
            .narrow(0, 1, g0 * g0)?
            .to_dtype(DType::F32)?
            .t()?
            .contiguous()?
            .flatten_all()?
            .to_vec1()?;
        let out = resize_planes_antialias(&planes, c, g0, g0, grid, grid, Filter::Bicubic);
        let grid_pe = Tensor::from_vec(out, (c, grid * grid), self.positional_embedding.device())?
            .t()?
            .to_dtype(self.positional_embedding.dtype())?;
        let pe = Tensor::cat(&[cls, grid_pe], 0)?.contiguous()?;
        cache.insert(grid, pe.clone());
        Ok(pe)
    }

    fn grid_of(&self, pixels: &Tensor) -> Result<usize> {
        let (_, ch, h, w) = pixels.dims4()?;
        let p = self.cfg.patch_size;
        if ch != 3 || h != w || h % p != 0 || h == 0 {
            candle_core::bail!(
                "image tensor must be [B, 3, S, S] with S a multiple of {p}, got {:?}",
                pixels.dims()
            )
        }
        Ok(h / p)
    }

    /// Tokens entering the transformer `[B, N, C]`.
    fn embed(&self, pixels: &Tensor) -> Result<Tensor> {
        let grid = self.grid_of(pixels)?;
        let b = pixels.dim(0)?;
        let c = self.cfg.width;
        // Stride = kernel: the convolution is a matmul over non-overlapping patches (exact, and faster
        // than candle's im2col conv for large patches).
        let p = self.cfg.patch_size;
        let patches = pixels
            .reshape((b, 3, grid, p, grid, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .contiguous()?
            .reshape((b, grid * grid, 3 * p * p))?;
        let kernel = self.patch_embedding.reshape((c, 3 * p * p))?;
        let patches = matmul_t(&patches, &kernel)?; // [B, g², C]
        let cls = self
            .class_embedding
            .reshape((1, 1, c))?
            .broadcast_as((b, 1, c))?;
        let x = Tensor::cat(&[&cls.contiguous()?, &patches.contiguous()?], 1)?;
        let x = x.broadcast_add(&self.positional_embedding(grid)?)?;
        self.ln_pre.forward(&x)
    }

    fn project(&self, tokens: &Tensor) -> Result<Tensor> {
        matmul_t(&self.ln_post.forward(tokens)?, &self.proj.t()?)
    }

    /// The dtype the tower's products run in (activations are f32 throughout).
    pub fn dtype(&self) -> DType {
        self.proj.dtype()
    }

    /// All output tokens of the transformer `[B, N, C]` (before ln_post).
    pub fn forward_tokens(&self, pixels: &Tensor) -> Result<Tensor> {
        let mut x = self.embed(pixels)?;
        for block in &self.blocks {
            x = block.forward(&x, None)?;
        }
        Ok(x)
    }

    /// CLS embeddings `[B, d]` (unnormalised).
    pub fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        let x = self.forward_tokens(pixels)?;
        self.project(&x.narrow(1, 0, 1)?.squeeze(1)?)
    }

    /// One image `[1, 3, S, S]`: its CLS embedding `[d]` and the last block's taps.
    pub fn forward_with_taps(&self, pixels: &Tensor) -> Result<(Tensor, ImageTaps)> {
        if pixels.dim(0)? != 1 {
            candle_core::bail!(
                "forward_with_taps takes one image, got a batch of {}",
                pixels.dim(0)?
            )
        }
        Ok(self
            .forward_with_taps_batch(pixels)?
            .pop()
            .expect("one image in, one out"))
    }

    /// A batch `[B, 3, S, S]` in one forward (bigger products keep a GPU busy): each image's CLS embedding
    /// `[d]` and its last block's taps.
    pub fn forward_with_taps_batch(&self, pixels: &Tensor) -> Result<Vec<(Tensor, ImageTaps)>> {
        let grid = self.grid_of(pixels)?;
        let (x, last) = self.up_to_last_block(pixels)?;
        let (x_out, block_taps) = last.forward_with_taps(&x)?;
        block_taps
            .into_iter()
            .enumerate()
            .map(|(i, block)| {
                let x_out = x_out.get(i)?;
                let cls = self.project(&x_out.get(0)?.unsqueeze(0)?)?.squeeze(0)?;
                let token_mean = x_out.mean(0)?;
                let (normalized, std) =
                    standardize_rows(&token_mean.unsqueeze(0)?, self.cfg.ln_eps)?;
                let mean_embedding = self.project(&token_mean.unsqueeze(0)?)?.squeeze(0)?;
                let norm = mean_embedding.sqr()?.sum_all()?.sqrt()?;
                let mean_embedding_unit = mean_embedding.broadcast_div(&norm)?;
                Ok((
                    cls,
                    ImageTaps {
                        block,
                        grid,
                        token_mean,
                        token_mean_normalized: normalized.squeeze(0)?,
                        token_mean_std: std.squeeze(0)?,
                        mean_embedding,
                        mean_embedding_unit,
                    },
                ))
            })
            .collect()
    }

    /// The library's quick tier, from one pass through the first blocks: per image its CLS embedding `[B, d]`
    /// (the full last block) and its value-path patch tokens `[B, g², C]` (see
    /// [`Self::value_path_patch_tokens`]); the last block runs twice, the other blocks once.
    pub fn forward_cls_and_patch_tokens(&self, pixels: &Tensor) -> Result<(Tensor, Tensor)> {
        let (x, last) = self.up_to_last_block(pixels)?;
        let out = last.forward(&x, None)?;
        let cls = self.project(&out.narrow(1, 0, 1)?.squeeze(1)?)?;
        Ok((cls, self.value_path_from(last, &x)?))
    }

    /// The tokens entering the last block `[B, N, C]`, and that block.
    fn up_to_last_block(&self, pixels: &Tensor) -> Result<(Tensor, &ResidualBlock)> {
        let mut x = self.embed(pixels)?;
        let (last, rest) = self
            .blocks
            .split_last()
            .expect("a ViT has at least one block");
        for block in rest {
            x = block.forward(&x, None)?;
        }
        Ok((x, last))
    }

    fn value_path_from(&self, last: &ResidualBlock, x: &Tensor) -> Result<Tensor> {
        let (wv, bv) = last.value_projection()?;
        let v = matmul_t(&last.ln_1().forward(x)?, &wv)?.broadcast_add(&bv)?;
        let attn_out = last.out_proj().forward(&v)?;
        let x_mid = (x + attn_out)?;
        let y = (&x_mid + last.mlp_forward(&last.ln_2().forward(&x_mid)?)?)?;
        let n = y.dim(1)?;
        y.narrow(1, 1, n - 1)
    }

    /// MaskCLIP-style dense features: each patch token taken through the last block's value path only
    /// (no attention mixing), residual and MLP kept, before ln_post `[B, g², C]`. Pool them inside a mask
    /// and pass the pooled token to [`Self::project_tokens`].
    pub fn value_path_patch_tokens(&self, pixels: &Tensor) -> Result<Tensor> {
        let (x, last) = self.up_to_last_block(pixels)?;
        self.value_path_from(last, &x)
    }

    /// `ln_post(x) @ proj` for tokens `[..., C]`.
    pub fn project_tokens(&self, tokens: &Tensor) -> Result<Tensor> {
        self.project(tokens)
    }

    pub fn last_block(&self) -> &ResidualBlock {
        self.blocks.last().expect("a ViT has at least one block")
    }
    pub fn ln_post_gamma(&self) -> &Tensor {
        self.ln_post.weight()
    }
    pub fn projection(&self) -> &Tensor {
        &self.proj
    }
    pub fn embed_dim(&self) -> usize {
        self.proj.dim(D::Minus1).unwrap_or(0)
    }
}
