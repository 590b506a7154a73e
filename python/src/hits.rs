//! Search hits as Python dicts with the keys and values the CLI's `--json` gives (`regionseek::index::Hit`
//! serialised), so that a hit from Python equals one parsed from the CLI.

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use regionseek::index::{CocoRle, Hit};

/// An f32 as the CLI's JSON carries it: its shortest decimal read back as a Python float (widening the bits
/// instead would give 0.10000000149011612 where the CLI says 0.1), and None where JSON has no number.
fn json_float(py: Python<'_>, value: f32) -> PyResult<Bound<'_, PyAny>> {
    if !value.is_finite() {
        return Ok(py.None().into_bound(py));
    }
    let widened = value.to_string().parse::<f64>().unwrap_or(f64::from(value));
    Ok(widened.into_pyobject(py)?.into_any())
}

fn rle_dict<'py>(py: Python<'py>, rle: &CocoRle) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    dict.set_item("size", PyList::new(py, rle.size)?)?;
    dict.set_item("counts", &rle.counts)?;
    Ok(dict)
}

pub fn hit_dict<'py>(py: Python<'py>, hit: &Hit) -> PyResult<Bound<'py, PyDict>> {
    // Every field named: a field added to `Hit` fails to compile here instead of going missing in Python.
    let Hit {
        image,
        region_id,
        bbox,
        mask_rle,
        score,
        method,
        source,
        label,
        row,
        exif_rotated,
        taken_at,
        camera,
        other_matches,
    } = hit;
    let corners = bbox
        .iter()
        .map(|&c| json_float(py, c))
        .collect::<PyResult<Vec<_>>>()?;
    let dict = PyDict::new(py);
    dict.set_item("image", image)?;
    dict.set_item("region_id", region_id)?;
    dict.set_item("box", PyList::new(py, corners)?)?;
    dict.set_item("mask_rle", rle_dict(py, mask_rle)?)?;
    dict.set_item("score", json_float(py, *score)?)?;
    dict.set_item("method", method)?;
    dict.set_item("source", source)?;
    dict.set_item("label", label.as_deref())?;
    dict.set_item("row", row)?;
    dict.set_item("exif_rotated", exif_rotated)?;
    dict.set_item("taken_at", taken_at.as_deref())?;
    dict.set_item("camera", camera.as_deref())?;
    if let Some(n) = other_matches {
        dict.set_item("other_matches", n)?;
    }
    Ok(dict)
}

pub fn hit_list<'py>(py: Python<'py>, hits: &[Hit]) -> PyResult<Bound<'py, PyList>> {
    let dicts = hits
        .iter()
        .map(|h| hit_dict(py, h))
        .collect::<PyResult<Vec<_>>>()?;
    PyList::new(py, dicts)
}
