//! CLIP in candle: both towers, the last-block taps the explainer needs, preprocessing, tokenizer, weights.
//! Knows nothing about masks or inversion.

pub mod block;
pub mod config;
pub mod manifest;
pub mod naming;
pub mod preprocess;
pub mod text;
pub mod tokenizer;
pub mod vision;
pub mod weights;

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

pub use block::BlockTaps;
pub use config::{Activation, Arch, ClipConfig, Normalization};
pub use naming::Naming;
pub use text::TextTransformer;
pub use tokenizer::Tokenizer;
pub use vision::{ImageTaps, VisionTransformer};
pub use weights::{ModelFiles, ModelSource, WeightsError};

#[derive(Debug, thiserror::Error)]
pub enum ClipError {
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error(transparent)]
    Tokenizer(#[from] tokenizer::TokenizerError),
    #[error("model computation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

pub struct ClipModel {
    pub config: ClipConfig,
    pub vision: VisionTransformer,
    pub text: TextTransformer,
    /// Temperature of the image-text logits (exp of the checkpoint's logit_scale; CLIP's 100 if absent).
    pub logit_scale: f32,
    pub source: ModelSource,
    /// The folder the weights came from (None for built-in random models).
    pub dir: Option<PathBuf>,
    pub device: Device,
}

fn build(
    vb: VarBuilder,
    naming: Naming,
    config: ClipConfig,
    source: ModelSource,
    dir: Option<PathBuf>,
    device: &Device,
) -> candle_core::Result<ClipModel> {
    let vision = VisionTransformer::load(vb.clone(), naming, &config.vision, config.embed_dim)?;
    let text = TextTransformer::load(vb.clone(), naming, &config.text, config.embed_dim)?;
    let logit_scale = vb
        .get((), "logit_scale")
        .and_then(|t| t.to_dtype(DType::F32)?.to_scalar::<f32>())
        .map(f32::exp)
        .unwrap_or(100.0);
    Ok(ClipModel {
        config,
        vision,
        text,
        logit_scale,
        source,
        dir,
        device: device.clone(),
    })
}

impl ClipModel {
    pub fn load(source: &ModelSource, device: &Device) -> Result<Self, ClipError> {
        match source {
            ModelSource::Random { arch, seed } => {
                let config = arch.config();
                let tensors = weights::random_state_dict(&config, *seed, device)?;
                let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
                Ok(build(
                    vb,
                    Naming::OpenClip,
                    config,
                    source.clone(),
                    None,
                    device,
                )?)
            }
            ModelSource::Dir(dir) => {
                let files = ModelFiles::resolve(dir)?;
                let vb = files.var_builder(device)?;
                build(
                    vb,
                    files.naming,
                    files.config.clone(),
                    source.clone(),
                    Some(dir.clone()),
                    device,
                )
                .map_err(|e| {
                    ClipError::Weights(WeightsError::Tensor {
                        path: files.weights.clone(),
                        message: weights::one_line(&e),
                    })
                })
            }
        }
    }

    pub fn load_spec(spec: &str, device: &Device) -> Result<Self, ClipError> {
        Self::load(&ModelSource::parse(spec)?, device)
    }

    pub fn tokenizer(&self) -> Result<Tokenizer, ClipError> {
        Ok(Tokenizer::for_model_dir(self.dir.as_deref())?)
    }

    /// Text embeddings `[B, d]` (unnormalised).
    pub fn encode_texts(
        &self,
        tokenizer: &Tokenizer,
        texts: &[String],
    ) -> Result<Tensor, ClipError> {
        let l = self.config.text.context_length;
        let mut ids = Vec::with_capacity(texts.len() * l);
        for t in texts {
            ids.extend(tokenizer.encode(t, l)?);
        }
        let tokens = Tensor::from_vec(ids, (texts.len(), l), &self.device)?;
        Ok(self.text.forward(&tokens)?)
    }

    /// A label that marks untrained models in every output.
    pub fn id(&self) -> String {
        self.source.id()
    }
    pub fn is_random(&self) -> bool {
        matches!(self.source, ModelSource::Random { .. })
    }
}
