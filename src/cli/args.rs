//! Flags several commands share: which model, and MaskInversion's parameters.

use candle_core::Device;
use regionseek::clip::ClipModel;
use regionseek::device::Precision;

use super::choice::choice;

#[derive(clap::Args, Clone, Debug)]
pub struct ModelArgs {
    /// A model directory (Hugging Face CLIPModel or OpenCLIP layout) or `random:<arch>[:seed]`.
    #[arg(long, default_value = regionseek::clip::DEFAULT_MODEL)]
    pub model: String,
    /// `cpu` or `cuda` (needs a build with `--features cuda`).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Arithmetic of the image forward and the Jacobian build: fp32 (exact), tf32 (GPU tensor cores), bf16
    /// (bfloat16 products) or bf16-jacobian (only the Jacobian, half its memory). README "Precision" gives
    /// each one's parity cost.
    #[arg(long, value_parser = choice::<Precision>(), default_value_t = Precision::Fp32)]
    pub precision: Precision,
    /// GiB of GPU memory an inversion may use in all, weights included (with `--device cuda`): the
    /// Jacobian and the mask chunks are sized to fit.
    #[arg(long, default_value_t = regionseek::device::DEFAULT_GPU_MEMORY_GIB)]
    pub gpu_memory: f64,
}

impl ModelArgs {
    pub fn new(model: &str, device: &str) -> Self {
        Self {
            model: model.to_string(),
            device: device.to_string(),
            precision: Precision::Fp32,
            gpu_memory: regionseek::device::DEFAULT_GPU_MEMORY_GIB,
        }
    }

    pub fn device(&self) -> anyhow::Result<Device> {
        Ok(regionseek::device::parse(&self.device)?)
    }

    pub fn load(&self) -> anyhow::Result<ClipModel> {
        let device = self.device()?;
        let model = ClipModel::load_spec_with(&self.model, &device, self.precision)?
            .with_gpu_memory(self.gpu_memory)
            .map_err(|e| anyhow::anyhow!("--gpu-memory: {e}"))?;
        if model.is_random() {
            tracing::warn!(
                "model {} has random weights: embeddings carry no meaning",
                model.id()
            );
        }
        Ok(model)
    }
}

/// MaskInversion's parameters on the command line (defaults: the reference's example run).
#[derive(clap::Args, Clone, Debug)]
pub struct InversionArgs {
    /// Input resolution S (squash resize); a multiple of the patch size.
    #[arg(long, default_value_t = regionseek::invert::DEFAULT_SIZE)]
    pub size: usize,
    #[arg(long, default_value_t = regionseek::invert::DEFAULT_STEPS)]
    pub steps: usize,
    #[arg(long, default_value_t = regionseek::invert::DEFAULT_LR)]
    pub lr: f64,
    /// Weight of the regulariser towards the CLS embedding.
    #[arg(long, default_value_t = 0.0)]
    pub alpha: f64,
}

impl InversionArgs {
    pub fn config(&self) -> regionseek::invert::InversionConfig {
        regionseek::invert::InversionConfig {
            size: self.size,
            steps: self.steps,
            lr: self.lr,
            alpha: self.alpha,
            ..Default::default()
        }
    }
}
