//! `regionseek._native`: the Python front door, a thin shell over the library's `pipeline` and `index` APIs.
//! Every call that computes releases the GIL (see `interrupt`); inputs are checked at the door (`convert`).

mod bench;
mod convert;
mod errors;
mod hits;
mod index;
mod interrupt;
mod jobs;
mod masks;
mod model;
mod text_model;

use pyo3::prelude::*;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<model::Model>()?;
    m.add_class::<text_model::TextModel>()?;
    m.add_class::<index::Index>()?;
    m.add_function(wrap_pyfunction!(jobs::index_photos, m)?)?;
    m.add_function(wrap_pyfunction!(index::simd_backend, m)?)?;
    m.add_function(wrap_pyfunction!(bench::_bench_invert, m)?)?;
    m.add_function(wrap_pyfunction!(masks::mask_from_rle, m)?)?;
    m.add("RegionseekError", py.get_type::<errors::RegionseekError>())?;
    m.add("RegionError", py.get_type::<errors::RegionError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
