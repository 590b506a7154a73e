//! `TextModel`: a model's text tower alone, for processes that only embed queries (a search front end such as
//! the Ray ingress): the vision tower's weights are never read.

use std::sync::Arc;

use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyArray2};
use pyo3::prelude::*;

use regionseek::cancel::Cancel;
use regionseek::clip::{self, TextEncoder};
use regionseek::pipeline::query;

use crate::convert::DeviceArg;
use crate::errors::{query_error, runtime_error};
use crate::interrupt::interruptible;

/// Unit text embeddings, `(N, embed_dim)`: what `Model.embed_text` and `TextModel.embed_text` both give.
pub fn unit_text_rows<'py>(
    py: Python<'py>,
    model: &(dyn TextEncoder + Send + Sync),
    texts: Vec<String>,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    let dim = model.config().embed_dim;
    if texts.is_empty() {
        return Ok(Array2::<f32>::zeros((0, dim)).into_pyarray(py));
    }
    let queries = interruptible(py, &Cancel::default(), || {
        query::embed_queries(model, &texts)
    })?
    .map_err(query_error)?;
    let flat: Vec<f32> = queries.into_iter().flat_map(|q| q.embedding).collect();
    Ok(Array2::from_shape_vec((flat.len() / dim, dim), flat)
        .map_err(runtime_error)?
        .into_pyarray(py))
}

/// A CLIP model's text tower alone (`random:<arch>[:seed]` or a weights folder): embeds queries as `Model`
/// does, without loading the vision tower.
#[pyclass(name = "TextModel", module = "regionseek", frozen)]
pub struct TextModel {
    inner: Arc<clip::TextModel>,
}

#[pymethods]
impl TextModel {
    /// Loads the text tower of `spec` on `device` ("cpu", or "cuda" in a build with the cuda feature).
    #[staticmethod]
    #[pyo3(signature = (spec, device = DeviceArg::cpu()))]
    fn load(py: Python<'_>, spec: &str, device: DeviceArg) -> PyResult<Self> {
        let tower = py
            .detach(|| clip::TextModel::load_spec(spec, &device.0))
            .map_err(runtime_error)?;
        Ok(Self {
            inner: Arc::new(tower),
        })
    }

    /// The model's id as indexes record it.
    #[getter]
    fn id(&self) -> String {
        self.inner.id()
    }

    /// Width of the embeddings.
    #[getter]
    fn embed_dim(&self) -> usize {
        self.inner.config.embed_dim
    }

    /// True for the built-in random models (their embeddings carry no meaning).
    #[getter]
    fn is_random(&self) -> bool {
        self.inner.is_random()
    }

    fn __repr__(&self) -> String {
        format!(
            "TextModel({:?}, embed_dim={})",
            self.inner.id(),
            self.inner.config.embed_dim
        )
    }

    /// Unit text embeddings, one row per text: `(N, embed_dim)` float32.
    fn embed_text<'py>(
        &self,
        py: Python<'py>,
        texts: Vec<String>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        unit_text_rows(py, self.inner.as_ref(), texts)
    }
}
