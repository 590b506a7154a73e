//! The exceptions the module raises, and how the library's errors become them: a caller's mistake is a
//! `ValueError` (or `TypeError`), a failure of the machinery (files, models, locks) a `RegionseekError`.

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::PyErr;

use regionseek::pipeline::query::QueryError;

pyo3::create_exception!(
    regionseek,
    RegionseekError,
    PyRuntimeError,
    "A regionseek call failed (a missing or damaged file, a model that does not load, an index in use)."
);
pyo3::create_exception!(
    regionseek,
    RegionError,
    PyValueError,
    "Some regions could not be embedded. `errors` maps each bad mask's position to why; `embeddings` holds \
     every row, NaN for the bad ones."
);

pub fn runtime_error(e: impl std::fmt::Display) -> PyErr {
    RegionseekError::new_err(e.to_string())
}

/// With the whole chain of causes: the outermost context alone rarely says what to fix.
pub fn anyhow_error(e: anyhow::Error) -> PyErr {
    RegionseekError::new_err(format!("{e:#}"))
}

pub fn value_error(e: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(e.to_string())
}

/// A query's refusal in the words of this front door's keywords where they differ from the library's.
pub fn query_error(e: QueryError) -> PyErr {
    match e {
        QueryError::ExactAndBeam => PyValueError::new_err("pass either exact=True or ef, not both"),
        QueryError::Model { .. } => {
            RegionseekError::new_err(format!("{e} (pass model= to Index.open if it moved)"))
        }
        QueryError::Space(_) | QueryError::Embed(_) => value_error(e),
        // A refused search stays a ValueError as it was before the split: scripts catch it to move on.
        QueryError::NoHitsAsked
        | QueryError::NoBeam
        | QueryError::BeamTooWide
        | QueryError::MinScoreOutOfRange(_)
        | QueryError::EmptyText
        | QueryError::WrongDimension { .. }
        | QueryError::NotFinite
        | QueryError::NothingToSearch(_)
        | QueryError::Index(_) => value_error(e),
    }
}

/// A region query's refusal: the caller's mistake is a ValueError in its own words.
pub fn region_query_error(e: regionseek::pipeline::region_query::RegionQueryError) -> PyErr {
    use regionseek::pipeline::region_query::RegionQueryError;
    match e {
        RegionQueryError::Query(q) => query_error(q),
        e if e.is_user_error() => PyValueError::new_err(e.to_string()),
        e => RegionseekError::new_err(e.to_string()),
    }
}
