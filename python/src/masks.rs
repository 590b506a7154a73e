//! Masks of hits, decoded for Python.

use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyArray2};
use pyo3::prelude::*;

use regionseek::masks::Rle;

use crate::convert::CocoRleArg;
use crate::errors::{runtime_error, value_error};

/// A hit's `mask_rle` (COCO RLE: `{"size": [h, w], "counts": str}`) as an `(h, w)` bool array, decoded as
/// pycocotools decodes it.
#[pyfunction]
pub fn mask_from_rle(py: Python<'_>, rle: CocoRleArg) -> PyResult<Bound<'_, PyArray2<bool>>> {
    let mask = Rle::from_coco(&rle.0).map_err(value_error)?.decode();
    let inside: Vec<bool> = mask.data.iter().map(|&v| v != 0).collect();
    Ok(Array2::from_shape_vec((mask.height, mask.width), inside)
        .map_err(runtime_error)?
        .into_pyarray(py))
}
