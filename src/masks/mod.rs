//! Masks are plain data; they live in the model-free `regionseek-masks` crate (`masks/`) so that the index
//! and the fuzz targets share them without candle.

pub use regionseek_masks::*;
