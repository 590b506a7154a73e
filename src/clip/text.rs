//! The text tower: token + position embeddings, causal transformer, ln_final, EOT pooling, projection.

use candle_core::{DType, Device, IndexOp, Module, Result, Tensor, D};
use candle_nn::{LayerNorm, VarBuilder};

use super::block::{layer_norm, ResidualBlock};
use super::config::TextConfig;
use super::naming::Naming;

pub struct TextTransformer {
    cfg: TextConfig,
    token_embedding: Tensor,
    positional_embedding: Tensor,
    blocks: Vec<ResidualBlock>,
    ln_final: LayerNorm,
    /// `[W, d]`.
    proj: Tensor,
    causal_mask: Tensor,
}

impl TextTransformer {
    pub fn load(
        vb: VarBuilder,
        naming: Naming,
        cfg: &TextConfig,
        embed_dim: usize,
    ) -> Result<Self> {
        let keys = naming.text();
        let w = cfg.width;
        let l = cfg.context_length;
        let token_embedding = vb.get((cfg.vocab_size, w), keys.token_embedding)?;
        let positional_embedding = vb.get((l, w), keys.positional_embedding)?;
        let blocks = (0..cfg.layers)
            .map(|i| {
                ResidualBlock::load(
                    vb.pp(keys.blocks).pp(i),
                    naming,
                    w,
                    cfg.heads,
                    cfg.mlp_dim,
                    cfg.activation,
                    cfg.ln_eps,
                    DType::F32,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let ln_final = layer_norm(vb.pp(keys.ln_final), w, cfg.ln_eps)?;
        let proj = match naming {
            Naming::OpenClip => vb.get((w, embed_dim), "text_projection")?,
            Naming::Hf => vb
                .get((embed_dim, w), "text_projection.weight")?
                .t()?
                .contiguous()?,
        };
        let mask: Vec<f32> = (0..l * l)
            .map(|i| {
                if i % l > i / l {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
            .collect();
        let causal_mask = Tensor::from_vec(mask, (l, l), vb.device())?.to_dtype(vb.dtype())?;
        Ok(Self {
            cfg: cfg.clone(),
            token_embedding,
            positional_embedding,
            blocks,
            ln_final,
            proj,
            causal_mask,
        })
    }

    pub fn config(&self) -> &TextConfig {
        &self.cfg
    }

    /// Text embeddings `[B, d]` (unnormalised) for token ids `[B, context_length]`; each row is pooled at
    /// its end-of-text token, the highest id in the row as in CLIP.
    pub fn forward(&self, tokens: &Tensor) -> Result<Tensor> {
        let (b, l) = tokens.dims2()?;
        if l != self.cfg.context_length {
            candle_core::bail!(
                "token rows must have {} ids, got {l}",
                self.cfg.context_length
            )
        }
        let eot = tokens
            .to_dtype(DType::U32)?
            .argmax(D::Minus1)?
            .to_vec1::<u32>()?;
        // Attention is causal, so the padding after the last end-of-text token of the batch never reaches
        // any pooled token: it is cut instead of computed (a query of 8 tokens costs ~1/10 of 77).
        let n = eot
            .iter()
            .map(|&p| p as usize + 1)
            .max()
            .unwrap_or(l)
            .min(l);
        let tokens = tokens.narrow(1, 0, n)?;
        let flat = tokens.flatten_all()?;
        let x = self
            .token_embedding
            .index_select(&flat, 0)?
            .reshape((b, n, self.cfg.width))?;
        let mut x = x.broadcast_add(&self.positional_embedding.narrow(0, 0, n)?)?;
        let mask = self
            .causal_mask
            .narrow(0, 0, n)?
            .narrow(1, 0, n)?
            .contiguous()?;
        for block in &self.blocks {
            x = block.forward(&x, Some(&mask))?;
        }
        let x = self.ln_final.forward(&x)?;
        let pooled = eot
            .iter()
            .enumerate()
            .map(|(row, &pos)| x.i((row, pos as usize)))
            .collect::<Result<Vec<_>>>()?;
        Tensor::stack(&pooled, 0)?.matmul(&self.proj)
    }

    pub fn device(&self) -> &Device {
        self.proj.device()
    }
}
