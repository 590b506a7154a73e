//! The SAM stage: box prompts to masks with a Segment Anything ONNX pair (image encoder + prompt decoder, the
//! official decoder export) on ONNX Runtime, bit-compatible with `segment_anything.SamPredictor`'s geometry.
//! `--mask-from box` (the box itself as the mask) needs no model: [`box_mask`].

pub mod auto;
pub mod predictor;
pub mod runtime;
pub mod transform;

use std::path::PathBuf;

pub use auto::{AutoMask, AutoMaskParams, AutoTimings};
pub use predictor::{ImageEmbedding, PointPrediction, SamFiles, SamMask, SamModel, SamOptions};
pub use runtime::{library_path, SamDevice};
pub use transform::BoxError;

use crate::masks::BinaryMask;

#[derive(Debug, thiserror::Error)]
pub enum SamError {
    /// ONNX Runtime itself is missing or unusable.
    #[error("{0}")]
    Runtime(String),
    #[error("{}: {message}", file.display())]
    Model { file: PathBuf, message: String },
    /// The ONNX file is not the expected export.
    #[error("{}: wrong signature: {message}", file.display())]
    Signature { file: PathBuf, message: String },
    #[error("SAM {stage} failed: {message}")]
    Run {
        stage: &'static str,
        message: String,
    },
    #[error("image: {0}")]
    Image(String),
    #[error(transparent)]
    Box(#[from] BoxError),
}

/// The box itself as the mask (no SAM): checked and clipped like a SAM prompt, then filled.
pub fn box_mask(bbox: [f32; 4], width: usize, height: usize) -> Result<BinaryMask, BoxError> {
    let b = transform::clip_box(bbox, width, height)?;
    Ok(BinaryMask::from_box(
        width,
        height,
        b[0] as f64,
        b[1] as f64,
        b[2] as f64,
        b[3] as f64,
    ))
}

/// Where a box's mask comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MaskFrom {
    /// SAM prompted with the box.
    #[default]
    Sam,
    /// The box itself, filled.
    Box,
}

impl std::str::FromStr for MaskFrom {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "sam" => Ok(Self::Sam),
            "box" => Ok(Self::Box),
            other => Err(format!("unknown mask source `{other}` (sam or box)")),
        }
    }
}
