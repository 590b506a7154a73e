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

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::device::Precision;

pub use block::BlockTaps;
pub use config::{Activation, Arch, ClipConfig, Normalization};
pub use naming::Naming;
pub use text::TextTransformer;
pub use tokenizer::Tokenizer;
pub use vision::{ImageTaps, VisionTransformer};
pub use weights::{ModelFiles, ModelSource, WeightsError};

/// The model a front door uses when none is named: the paper's backbone, OpenAI's CLIP ViT-B/16, from a local
/// copy or the hub cache (`regionseek weights fetch clip-vit-b-16`); offline and without one, loading it says
/// what to pass instead. Random weights are used only when named (`random:ARCH`).
pub const DEFAULT_MODEL: &str = "clip-vit-b-16";

#[derive(Debug, thiserror::Error)]
pub enum ClipError {
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error(transparent)]
    Tokenizer(#[from] tokenizer::TokenizerError),
    #[error("model computation failed: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("{0}")]
    Budget(String),
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
    /// The arithmetic of the image forward and of the explainer's Jacobian build.
    pub precision: Precision,
    /// Device memory an inversion may take in all, weights included; None leaves the sizes to the
    /// inversion's own byte budgets (what a CPU run uses). Set for GPUs (`--gpu-memory`).
    pub device_memory_budget: Option<u64>,
    /// Read from the weights folder on first use, then kept: a query server embeds texts all day.
    tokenizer: std::sync::OnceLock<Tokenizer>,
}

fn logit_scale(vb: &VarBuilder) -> f32 {
    vb.get((), "logit_scale")
        .and_then(|t| t.to_dtype(DType::F32)?.to_scalar::<f32>())
        .map(f32::exp)
        .unwrap_or(100.0)
}

fn build(
    vb: VarBuilder,
    naming: Naming,
    config: ClipConfig,
    source: ModelSource,
    dir: Option<PathBuf>,
    device: &Device,
    precision: Precision,
) -> candle_core::Result<ClipModel> {
    precision.apply_gemm_mode(device);
    // Only the image tower's products change precision: queries are embedded once each and stay f32.
    let vision = VisionTransformer::load(
        vb.clone(),
        naming,
        &config.vision,
        config.embed_dim,
        precision.weights_dtype(),
    )?;
    let text = TextTransformer::load(vb.clone(), naming, &config.text, config.embed_dim)?;
    let logit_scale = logit_scale(&vb);
    Ok(ClipModel {
        config,
        vision,
        text,
        logit_scale,
        source,
        dir,
        device: device.clone(),
        precision,
        device_memory_budget: None,
        tokenizer: std::sync::OnceLock::new(),
    })
}

impl ClipModel {
    pub fn load(source: &ModelSource, device: &Device) -> Result<Self, ClipError> {
        Self::load_with(source, device, Precision::Fp32)
    }

    pub fn load_with(
        source: &ModelSource,
        device: &Device,
        precision: Precision,
    ) -> Result<Self, ClipError> {
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
                    precision,
                )?)
            }
            ModelSource::Dir(dir) | ModelSource::Named { dir, .. } => {
                let files = ModelFiles::resolve(dir)?;
                let vb = files.var_builder(device)?;
                build(
                    vb,
                    files.naming,
                    files.config.clone(),
                    source.clone(),
                    Some(dir.clone()),
                    device,
                    precision,
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

    pub fn load_spec_with(
        spec: &str,
        device: &Device,
        precision: Precision,
    ) -> Result<Self, ClipError> {
        Self::load_with(&ModelSource::parse(spec)?, device, precision)
    }

    pub fn tokenizer(&self) -> Result<&Tokenizer, ClipError> {
        if let Some(t) = self.tokenizer.get() {
            return Ok(t);
        }
        let loaded = Tokenizer::for_model_dir(self.dir.as_deref())?;
        Ok(self.tokenizer.get_or_init(|| loaded))
    }

    /// Text embeddings `[B, d]` (unnormalised).
    pub fn encode_texts(
        &self,
        tokenizer: &Tokenizer,
        texts: &[String],
    ) -> Result<Tensor, ClipError> {
        encode_with(&self.text, &self.device, tokenizer, texts)
    }

    /// Caps the device memory of this model's inversions at `gib` GiB, weights included, when the model is on
    /// a GPU (on the CPU the inversion's own byte budgets apply and `gib` is only checked).
    pub fn with_gpu_memory(mut self, gib: f64) -> Result<Self, ClipError> {
        if !(gib.is_finite() && gib > 0.0) {
            return Err(ClipError::Budget(format!(
                "GPU memory must be a positive number of GiB, got {gib}"
            )));
        }
        let bytes = (gib * (1u64 << 30) as f64) as u64;
        if self.device.is_cuda() {
            if bytes <= self.vision_weight_bytes() {
                return Err(ClipError::Budget(format!(
                    "{gib} GiB of GPU memory does not even hold the image tower's weights ({:.2} GiB)",
                    self.vision_weight_bytes() as f64 / (1u64 << 30) as f64
                )));
            }
            self.device_memory_budget = Some(bytes);
        }
        Ok(self)
    }

    /// Bytes the image tower's weights take on the device (all counted at the products' dtype: under bf16 the
    /// few f32 ones, embeddings and LayerNorms, are under 1 % of them).
    pub fn vision_weight_bytes(&self) -> u64 {
        (self.config.vision.parameter_count(self.config.embed_dim)
            * self.vision.dtype().size_in_bytes()) as u64
    }

    /// A label that marks untrained models in every output.
    pub fn id(&self) -> String {
        self.source.id()
    }
    pub fn is_random(&self) -> bool {
        matches!(self.source, ModelSource::Random { .. })
    }
}

/// What turns texts into embeddings: the whole model, or its text tower alone.
pub trait TextEncoder {
    fn config(&self) -> &ClipConfig;
    /// Text embeddings `[B, d]` (unnormalised).
    fn embed_texts(&self, texts: &[String]) -> Result<Tensor, ClipError>;
    /// Tokens a text takes with its start and end tokens, before the cut to the context length.
    fn token_count(&self, text: &str) -> Result<usize, ClipError>;
    /// The model's label (see [`ClipModel::id`]).
    fn id(&self) -> String;
    /// The folder the weights came from (None for built-in random models).
    fn weights_dir(&self) -> Option<&Path>;
    /// Built-in random weights: embeddings and scores carry no meaning.
    fn is_random(&self) -> bool;
}

fn encode_with(
    tower: &TextTransformer,
    device: &Device,
    tokenizer: &Tokenizer,
    texts: &[String],
) -> Result<Tensor, ClipError> {
    let l = tower.config().context_length;
    let mut ids = Vec::with_capacity(texts.len() * l);
    for t in texts {
        ids.extend(tokenizer.encode(t, l)?);
    }
    let tokens = Tensor::from_vec(ids, (texts.len(), l), device)?;
    Ok(tower.forward(&tokens)?)
}

impl TextEncoder for ClipModel {
    fn config(&self) -> &ClipConfig {
        &self.config
    }
    fn embed_texts(&self, texts: &[String]) -> Result<Tensor, ClipError> {
        self.encode_texts(self.tokenizer()?, texts)
    }
    fn token_count(&self, text: &str) -> Result<usize, ClipError> {
        Ok(self.tokenizer()?.token_count(text)?)
    }
    fn id(&self) -> String {
        ClipModel::id(self)
    }
    fn weights_dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }
    fn is_random(&self) -> bool {
        matches!(self.source, ModelSource::Random { .. })
    }
}

/// The text tower alone, for processes that only embed queries (a search server): the vision tower's
/// weights are never read from the mapped file, so they cost no memory.
pub struct TextModel {
    pub config: ClipConfig,
    pub text: TextTransformer,
    pub logit_scale: f32,
    pub source: ModelSource,
    pub dir: Option<PathBuf>,
    pub device: Device,
    tokenizer: Tokenizer,
}

impl TextModel {
    pub fn load(source: &ModelSource, device: &Device) -> Result<Self, ClipError> {
        let (vb, naming, config, dir) = match source {
            ModelSource::Random { arch, seed } => {
                let config = arch.config();
                // Generated whole so that the text tower is the same as in the full random model; the
                // vision tensors are dropped when the builder is.
                let tensors = weights::random_state_dict(&config, *seed, device)?;
                let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
                (vb, Naming::OpenClip, config, None)
            }
            ModelSource::Dir(dir) | ModelSource::Named { dir, .. } => {
                let files = ModelFiles::resolve(dir)?;
                (
                    files.var_builder(device)?,
                    files.naming,
                    files.config.clone(),
                    Some(dir.clone()),
                )
            }
        };
        let text = TextTransformer::load(vb.clone(), naming, &config.text, config.embed_dim)
            .map_err(|e| {
                ClipError::Weights(WeightsError::Tensor {
                    path: dir.clone().unwrap_or_default(),
                    message: weights::one_line(&e),
                })
            })?;
        let tokenizer = Tokenizer::for_model_dir(dir.as_deref())?;
        Ok(Self {
            logit_scale: logit_scale(&vb),
            config,
            text,
            source: source.clone(),
            dir,
            device: device.clone(),
            tokenizer,
        })
    }

    pub fn load_spec(spec: &str, device: &Device) -> Result<Self, ClipError> {
        Self::load(&ModelSource::parse(spec)?, device)
    }
}

impl TextEncoder for TextModel {
    fn config(&self) -> &ClipConfig {
        &self.config
    }
    fn embed_texts(&self, texts: &[String]) -> Result<Tensor, ClipError> {
        encode_with(&self.text, &self.device, &self.tokenizer, texts)
    }
    fn token_count(&self, text: &str) -> Result<usize, ClipError> {
        Ok(self.tokenizer.token_count(text)?)
    }
    fn id(&self) -> String {
        self.source.id()
    }
    fn weights_dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }
    fn is_random(&self) -> bool {
        matches!(self.source, ModelSource::Random { .. })
    }
}
