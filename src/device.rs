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
