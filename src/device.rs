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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize)]
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
    #[serde(rename = "bf16-jacobian")]
    Bf16Jacobian,
}

crate::choice::named_choice!(Precision, "precision", {
    Fp32 => "fp32", Tf32 => "tf32", Bf16 => "bf16", Bf16Jacobian => "bf16-jacobian",
});

impl Precision {
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

/// A memory figure of this process in KiB from the kernel (`/proc/self/status`: `VmRSS:` now, `VmHWM:` its
/// peak); None where there is no such file.
pub fn process_memory_kib(field: &str) -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
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

/// The GPU's utilisation over a run, as nvidia-smi reports it: per sample, the percent of the last sample
/// period during which a kernel was running.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct GpuUtilisation {
    pub mean_percent: f64,
    pub samples: usize,
}

impl GpuUtilisation {
    pub fn from_samples(samples: &[u32]) -> Option<Self> {
        (!samples.is_empty()).then(|| Self {
            mean_percent: samples.iter().map(|&s| s as f64).sum::<f64>() / samples.len() as f64,
            samples: samples.len(),
        })
    }
}

/// Samples a CUDA device's utilisation from NVML on a background thread until [`Self::finish`].
pub struct UtilisationSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<u32>>>,
}

#[cfg(feature = "cuda")]
/// Between NVML samples: the driver averages utilisation over 1/6 s to 1 s depending on the card.
const UTILISATION_PERIOD: std::time::Duration = std::time::Duration::from_millis(200);

impl UtilisationSampler {
    /// None on the CPU, in a build without CUDA, or where NVML cannot be loaded or does not know the
    /// device (the run goes on; only the figure is missing).
    pub fn start(device: &Device) -> Option<Self> {
        let bus_id = pci_bus_id(device)?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || sample_until_stopped(&bus_id, &ready_tx, &stopped));
        match ready_rx.recv() {
            Ok(Ok(())) => Some(Self {
                stop,
                thread: Some(thread),
            }),
            Ok(Err(e)) => {
                tracing::warn!("GPU utilisation is not reported: {e}");
                None
            }
            Err(_) => None,
        }
    }

    pub fn finish(mut self) -> Option<GpuUtilisation> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let samples = self.thread.take()?.join().ok()?;
        GpuUtilisation::from_samples(&samples)
    }
}

impl Drop for UtilisationSampler {
    /// A run that ends in an error never calls `finish`: its sampler still stops.
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The device's PCI address, which NVML (blind to CUDA_VISIBLE_DEVICES' renumbering) is asked by.
#[cfg(feature = "cuda")]
fn pci_bus_id(device: &Device) -> Option<String> {
    use candle_core::cuda_backend::cudarc::driver::sys::CUdevice_attribute as A;
    let cuda = device.as_cuda_device().ok()?;
    let context = cuda.cuda_stream().context().clone();
    let get = |a| context.attribute(a).ok();
    let (domain, bus, dev) = (
        get(A::CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID)?,
        get(A::CU_DEVICE_ATTRIBUTE_PCI_BUS_ID)?,
        get(A::CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID)?,
    );
    Some(format!("{domain:x}:{bus:x}:{dev:x}.0"))
}

#[cfg(not(feature = "cuda"))]
fn pci_bus_id(_device: &Device) -> Option<String> {
    None
}

type Ready = std::sync::mpsc::Sender<Result<(), String>>;

#[cfg(feature = "cuda")]
fn sample_until_stopped(
    bus_id: &str,
    ready: &Ready,
    stop: &std::sync::atomic::AtomicBool,
) -> Vec<u32> {
    // The driver ships only the versioned name; the plain one comes with development packages.
    let nvml = match nvml_wrapper::Nvml::builder()
        .lib_path(std::ffi::OsStr::new("libnvidia-ml.so.1"))
        .init()
        .or_else(|_| nvml_wrapper::Nvml::init())
    {
        Ok(nvml) => nvml,
        Err(e) => {
            let _ = ready.send(Err(format!("NVML: {e}")));
            return Vec::new();
        }
    };
    let gpu = match nvml.device_by_pci_bus_id(bus_id) {
        Ok(gpu) => gpu,
        Err(e) => {
            let _ = ready.send(Err(format!("NVML has no device at {bus_id}: {e}")));
            return Vec::new();
        }
    };
    let _ = ready.send(Ok(()));
    let mut samples = Vec::new();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        std::thread::sleep(UTILISATION_PERIOD);
        if let Ok(u) = gpu.utilization_rates() {
            samples.push(u.gpu);
        }
    }
    samples
}

#[cfg(not(feature = "cuda"))]
fn sample_until_stopped(
    _bus_id: &str,
    ready: &Ready,
    _stop: &std::sync::atomic::AtomicBool,
) -> Vec<u32> {
    let _ = ready.send(Err("this build has no CUDA support".into()));
    Vec::new()
}
