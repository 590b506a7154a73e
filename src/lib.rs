//! regionseek: search photo collections by region.
//!
//! Stages, one folder each: `decode` (photos), `masks` (plain mask data), `sam` (boxes -> masks),
//! `clip` (the model), `explain` (LeGrad maps), `invert` (MaskInversion), and the `regionseek-index` crate.

pub mod clip;
pub mod decode;
pub mod device;
pub mod resample;
