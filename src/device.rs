//! Choosing the compute device.

use candle_core::Device;

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("unknown device `{0}` (use cpu or cuda)")]
    Unknown(String),
    #[error(
        "this build has no CUDA support: rebuild with `cargo build --release --features cuda`"
    )]
    NoCuda,
    #[error("cannot open CUDA device: {0}")]
    Cuda(String),
}

pub fn parse(name: &str) -> Result<Device, DeviceError> {
    match name {
        "cpu" => Ok(Device::Cpu),
        "cuda" | "gpu" => {
            if cfg!(feature = "cuda") {
                Device::new_cuda(0).map_err(|e| DeviceError::Cuda(e.to_string()))
            } else {
                Err(DeviceError::NoCuda)
            }
        }
        other => Err(DeviceError::Unknown(other.to_string())),
    }
}

/// GiB of GPU memory an inversion may use, weights included, unless told otherwise: fits a 16 GiB card.
pub const DEFAULT_GPU_MEMORY_GIB: f64 = 16.0;

/// Arithmetic of the image forward and of the Jacobian build (the step loop always runs in f32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Full f32 everywhere: the parity-checked default.
    #[default]
    Fp32,
    /// f32 storage, products on a GPU's TF32 tensor cores (10-bit mantissa inputs, f32 sums). The CPU has
    /// no TF32: there it is fp32.
    Tf32,
    /// The image tower's products in bfloat16 (f32 activations, LayerNorm and softmax, as torch's autocast)
    /// and the Jacobian built and kept in bfloat16; maps, Dice and the optimiser stay f32.
    Bf16,
    /// The forward in f32, only the Jacobian built and kept in bfloat16: half its memory for little parity
    /// cost (README "Precision").
    #[value(name = "bf16-jacobian")]
    #[serde(rename = "bf16-jacobian")]
    Bf16Jacobian,
}

impl Precision {
    pub fn parse(name: &str) -> Option<Self> {
        <Self as clap::ValueEnum>::from_str(name, false).ok()
    }

    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Tf32 => "tf32",
            Precision::Bf16 => "bf16",
            Precision::Bf16Jacobian => "bf16-jacobian",
        }
    }

    /// The dtype the image tower's products run in (its weights are kept in it).
    pub fn weights_dtype(self) -> candle_core::DType {
        match self {
            Precision::Bf16 => candle_core::DType::BF16,
            Precision::Fp32 | Precision::Tf32 | Precision::Bf16Jacobian => candle_core::DType::F32,
        }
    }

    /// The dtype the explainer's Jacobian is built and kept in.
    pub fn jacobian_dtype(self) -> candle_core::DType {
        match self {
            Precision::Bf16 | Precision::Bf16Jacobian => candle_core::DType::BF16,
            Precision::Fp32 | Precision::Tf32 => candle_core::DType::F32,
        }
    }

    /// Switches cuBLAS's f32 products to TF32 or back, for the whole process (a cuBLAS setting, not a
    /// tensor's). No effect in a CPU build.
    pub fn apply_gemm_mode(self, device: &Device) {
        if device.is_cuda() {
            candle_core::cuda::set_gemm_reduced_precision_f32(self == Precision::Tf32);
        } else if self == Precision::Tf32 {
            tracing::warn!("tf32 applies to GPU products only: on the CPU the run is fp32");
        }
    }
}

/// Bytes in use on the device now (every allocation on the card, the CUDA context included), or None on
/// the CPU.
pub fn memory_in_use(device: &Device) -> Option<u64> {
    #[cfg(feature = "cuda")]
    if let Ok(cuda) = device.as_cuda_device() {
        let (free, total) = cuda.cuda_stream().context().mem_get_info().ok()?;
        return Some((total - free) as u64);
    }
    let _ = device;
    None
}

static PEAK_DEVICE_BYTES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Samples the device's memory in use into the process's peak (called where a computation holds the most:
/// after the forward, after the Jacobian build, inside the step loop). Free on the CPU.
pub fn note_memory_use(device: &Device) {
    if let Some(bytes) = memory_in_use(device) {
        PEAK_DEVICE_BYTES.fetch_max(bytes, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The highest device memory in use seen by [`note_memory_use`] in this process, in MiB; None on the CPU.
pub fn peak_memory_mib() -> Option<f64> {
    let bytes = PEAK_DEVICE_BYTES.load(std::sync::atomic::Ordering::Relaxed);
    (bytes > 0).then(|| bytes as f64 / (1024.0 * 1024.0))
}

/// Starts a new peak (a benchmark's next configuration).
pub fn reset_peak_memory() {
    PEAK_DEVICE_BYTES.store(0, std::sync::atomic::Ordering::Relaxed);
}
