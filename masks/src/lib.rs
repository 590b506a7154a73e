//! Masks as plain data for regionseek: a binary mask at the image's own resolution, COCO polygons and RLE
//! bit-for-bit as pycocotools, PNG masks, and the COCO instances reader. No model code lives here, so the
//! index and the fuzz targets can use it without pulling in candle.

pub mod coco;
mod mask;
pub mod polygon;
mod rle;

use std::path::PathBuf;

pub use coco::{
    CocoAnnotation, CocoCategory, CocoDataset, CocoError, CocoImage, ItemError, Segmentation,
};
pub use mask::BinaryMask;
pub use rle::{CocoRle, Rle, MAX_PIXELS};

#[derive(Debug, thiserror::Error)]
pub enum MaskError {
    #[error("cannot read mask {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("cannot write mask {path}: {message}")]
    Write { path: PathBuf, message: String },
    #[error("cannot encode mask: {0}")]
    Encode(String),
    #[error("mask buffer of {len} values does not match {width}x{height}")]
    Size {
        width: usize,
        height: usize,
        len: usize,
    },
    #[error("masks of different sizes: {}x{} and {}x{}", a.0, a.1, b.0, b.1)]
    SizeMismatch {
        a: (usize, usize),
        b: (usize, usize),
    },
    #[error("invalid RLE: {0}")]
    Rle(String),
    #[error("invalid polygon: {0}")]
    Polygon(String),
}
