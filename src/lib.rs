//! regionseek: search photo collections by region.
//!
//! Stages, one folder each: `decode` (photos), `masks` (plain mask data), `clip` (the model), `explain`
//! (LeGrad maps and their exact gradients), `invert` (MaskInversion), and the `regionseek-index` crate.

pub mod baselines;
pub mod cancel;
pub mod choice;
pub mod clip;
pub mod decode;
pub mod device;
pub mod explain;
pub mod invert;
mod kernels;
pub mod masks;
pub mod pipeline;
pub mod resample;
pub mod sam;
#[cfg(feature = "serve")]
pub mod serve;

/// The region index (its own crate: no model dependency).
pub use regionseek_index as index;
