//! ONNX Runtime, loaded at run time (`ort`'s `load-dynamic`): finding the shared library, one environment per
//! process, and sessions on the CPU or CUDA execution provider.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::session::Session;

use super::SamError;

/// The ONNX Runtime version `./setup.sh` installs (from the PyPI `onnxruntime` wheel).
pub const ORT_VERSION: &str = "1.32.0";

/// Where a SAM session runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SamDevice {
    #[default]
    Cpu,
    Cuda,
}

impl std::str::FromStr for SamDevice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda),
            other => Err(format!("unknown SAM device `{other}` (cpu or cuda)")),
        }
    }
}

fn install_hint() -> String {
    format!(
        "run ./setup.sh (it unpacks libonnxruntime.so.{ORT_VERSION} from the PyPI onnxruntime wheel into \
         vendor/onnxruntime/), or `pip download --no-deps onnxruntime=={ORT_VERSION}`, unzip \
         onnxruntime/capi/libonnxruntime.so.* and set ORT_DYLIB_PATH to it (onnxruntime-gpu for CUDA)"
    )
}

/// The candidates, in order: `ORT_DYLIB_PATH`; `vendor/onnxruntime/` under the current directory, beside
/// the executable's checkout (`target/<profile>/..`), and under the source tree this binary was built from.
fn candidate_paths() -> Vec<PathBuf> {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        return vec![PathBuf::from(p)];
    }
    let mut dirs = vec![PathBuf::from("vendor/onnxruntime")];
    if let Ok(exe) = std::env::current_exe() {
        for up in exe.ancestors().skip(1).take(4) {
            dirs.push(up.join("vendor/onnxruntime"));
        }
    }
    dirs.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("vendor/onnxruntime"));
    let mut found = Vec::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut libs: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("libonnxruntime.so"))
            })
            .collect();
        libs.sort();
        found.extend(libs.into_iter().rev());
    }
    found
}

/// The library `ort` will load, or the error that says how to install it. `ort` panics on a missing
/// library, so its presence is checked here first.
pub fn library_path() -> Result<PathBuf, SamError> {
    let candidates = candidate_paths();
    if let Some(p) = candidates.iter().find(|p| p.is_file()) {
        return Ok(p.clone());
    }
    let looked = if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        format!("ORT_DYLIB_PATH={} does not exist", Path::new(&p).display())
    } else {
        "no ORT_DYLIB_PATH and no vendor/onnxruntime/libonnxruntime.so.*".to_string()
    };
    Err(SamError::Runtime(format!(
        "ONNX Runtime library not found ({looked}): {}",
        install_hint()
    )))
}

static ENVIRONMENT: OnceLock<Result<Environment, String>> = OnceLock::new();

/// The process's ONNX Runtime environment, created on first use.
pub fn environment() -> Result<&'static Environment, SamError> {
    let env = ENVIRONMENT.get_or_init(|| {
        let path = library_path().map_err(|e| e.to_string())?;
        let builder = ort::init_from(&path).map_err(|e| {
            format!(
                "cannot load ONNX Runtime from {}: {e}; {}",
                path.display(),
                install_hint()
            )
        })?;
        tracing::debug!(library = %path.display(), "ONNX Runtime loaded");
        builder
            .with_name("regionseek")
            .build()
            .map_err(|e| format!("cannot start ONNX Runtime: {e}"))
    });
    env.as_ref()
        .map_err(|message| SamError::Runtime(message.clone()))
}

fn builder_error(file: &Path, e: impl std::fmt::Display) -> SamError {
    SamError::Model {
        file: file.to_path_buf(),
        message: e.to_string(),
    }
}

/// A session for one ONNX file. CUDA that cannot be had (a CPU-only library, no driver) falls back to the CPU
/// with a warning; the returned device says which one runs.
pub fn open_session(
    file: &Path,
    device: SamDevice,
    threads: usize,
) -> Result<(Session, SamDevice), SamError> {
    let env = environment()?;
    if !file.is_file() {
        return Err(SamError::Model {
            file: file.to_path_buf(),
            message: "file not found".into(),
        });
    }
    let configure = || -> Result<ort::session::builder::SessionBuilder, SamError> {
        let b = Session::builder(env).map_err(|e| builder_error(file, e))?;
        let b = b
            .with_intra_threads(threads.max(1))
            .map_err(|e| builder_error(file, ort::Error::<()>::from(e)))?;
        Ok(b)
    };
    if device == SamDevice::Cuda {
        let cuda = ort::ep::CUDA::default().build().error_on_failure();
        let attempt = configure()?
            .with_execution_providers([cuda])
            .map_err(|e| ort::Error::<()>::from(e).to_string())
            .and_then(|mut b| b.commit_from_file(file).map_err(|e| e.to_string()));
        match attempt {
            Ok(session) => return Ok((session, SamDevice::Cuda)),
            Err(e) => tracing::warn!(
                file = %file.display(),
                "SAM on CUDA is not available ({e}); running on the CPU instead. The CUDA provider needs the \
                 onnxruntime-gpu library (ORT_DYLIB_PATH) and the NVIDIA driver"
            ),
        }
    }
    let session = configure()?
        .commit_from_file(file)
        .map_err(|e| builder_error(file, e))?;
    Ok((session, SamDevice::Cpu))
}
