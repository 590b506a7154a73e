//! `Model`: a CLIP model loaded once and shared by every call that embeds (text, MaskInversion, indexing).

use std::sync::Arc;

use numpy::ndarray::{Array2, ArrayView1};
use numpy::{IntoPyArray, PyArray2};
use pyo3::exceptions::{PyKeyboardInterrupt, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use regionseek::cancel::Cancel;
use regionseek::clip::{ClipError, ClipModel};
use regionseek::device::{Precision, DEFAULT_GPU_MEMORY_GIB};
use regionseek::invert::{invert_image, GradChoice, InversionConfig, InvertError, MaskOutcome};

use crate::convert::{finite, DeviceArg, GradArg, ImageLike, Masks, OnBadMasks, PrecisionArg};
use crate::errors::{runtime_error, RegionError};
use crate::interrupt::interruptible;
use crate::text_model::unit_text_rows;

/// A CLIP model: a built-in random architecture (`random:vit-b-16[:seed]`, for trials and tests) or a folder
/// of real weights (Hugging Face CLIPModel or OpenCLIP layout).
#[pyclass(name = "Model", module = "regionseek", frozen)]
pub struct Model {
    inner: Arc<ClipModel>,
}

impl Model {
    pub fn clip(&self) -> Arc<ClipModel> {
        self.inner.clone()
    }
}

#[pymethods]
impl Model {
    /// Loads a model: `"random:<arch>[:seed]"` or a weights folder. `device` is "cpu" or "cuda" (a build with
    /// the cuda feature); `precision` "fp32" (default), "tf32", "bf16" or "bf16-jacobian" for the image forward and the Jacobian
    /// build; `gpu_memory` the GiB an inversion may use on a GPU, weights included.
    #[staticmethod]
    #[pyo3(signature = (spec, device = DeviceArg::cpu(), precision = PrecisionArg(Precision::Fp32), gpu_memory = DEFAULT_GPU_MEMORY_GIB))]
    fn load(
        py: Python<'_>,
        spec: &str,
        device: DeviceArg,
        precision: PrecisionArg,
        gpu_memory: f64,
    ) -> PyResult<Self> {
        let model = py
            .detach(|| {
                ClipModel::load_spec_with(spec, &device.0, precision.0)?.with_gpu_memory(gpu_memory)
            })
            .map_err(|e| match e {
                ClipError::Budget(why) => PyValueError::new_err(format!("gpu_memory: {why}")),
                other => runtime_error(other),
            })?;
        Ok(Self {
            inner: Arc::new(model),
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

    /// The vision tower's patch size: an inversion's `size` must be a multiple of it.
    #[getter]
    fn patch_size(&self) -> usize {
        self.inner.config.vision.patch_size
    }

    /// True for the built-in random models (their embeddings carry no meaning).
    #[getter]
    fn is_random(&self) -> bool {
        self.inner.is_random()
    }

    fn __repr__(&self) -> String {
        format!(
            "Model({:?}, embed_dim={})",
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

    /// MaskInversion: one localized embedding (the raw optimised token; L2-normalise it to compare) per mask.
    ///
    /// `image`: HxWx3 uint8 array or PIL image. `masks`: (M, H, W) bool array (or one (H, W) mask).
    /// A mask that cannot be embedded (empty, diverged) raises `RegionError` listing every bad mask, or with
    /// `errors="return"` gives `(embeddings, errors)` where bad rows are NaN and `errors[k]` says why.
    #[pyo3(signature = (image, masks, size = regionseek::invert::DEFAULT_SIZE, steps = regionseek::invert::DEFAULT_STEPS, lr = regionseek::invert::DEFAULT_LR, alpha = 0.0, grad = GradArg(GradChoice::Auto), errors = OnBadMasks::Raise))]
    #[allow(clippy::too_many_arguments)]
    fn invert<'py>(
        &self,
        py: Python<'py>,
        image: ImageLike,
        masks: Masks,
        size: usize,
        steps: usize,
        lr: f64,
        alpha: f64,
        grad: GradArg,
        errors: OnBadMasks,
    ) -> PyResult<Bound<'py, PyAny>> {
        let cancel = Cancel::default();
        let cfg = InversionConfig {
            size,
            steps,
            lr: finite("lr", lr)?,
            alpha: finite("alpha", alpha)?,
            grad: grad.0,
            cancel: cancel.clone(),
            ..Default::default()
        };
        let image = image.0;
        let masks = masks.fitted_to(&image)?;
        let model = &self.inner;
        let out = interruptible(py, &cancel, || invert_image(model, &image, &masks, &cfg))?
            .map_err(|e| match e {
                InvertError::Cancelled => PyKeyboardInterrupt::new_err("inversion interrupted"),
                e @ InvertError::BadSize { .. } => PyValueError::new_err(e.to_string()),
                e => runtime_error(e),
            })?;
        let (embeddings, reasons) = embeddings_and_reasons(out.masks, self.inner.config.embed_dim);
        let embeddings = embeddings.into_pyarray(py);
        match errors {
            OnBadMasks::Return => Ok((embeddings, PyList::new(py, reasons)?)
                .into_pyobject(py)?
                .into_any()),
            OnBadMasks::Raise if reasons.iter().all(Option::is_none) => Ok(embeddings.into_any()),
            OnBadMasks::Raise => Err(region_error(py, embeddings, reasons)?),
        }
    }
}

/// One row per mask (NaN where it failed), and why each failed.
fn embeddings_and_reasons(
    results: Vec<MaskOutcome>,
    dim: usize,
) -> (Array2<f32>, Vec<Option<String>>) {
    let mut embeddings = Array2::<f32>::from_elem((results.len(), dim), f32::NAN);
    let mut reasons = Vec::with_capacity(results.len());
    for (k, result) in results.into_iter().enumerate() {
        match result {
            Ok(region) => {
                embeddings
                    .row_mut(k)
                    .assign(&ArrayView1::from(&region.embedding));
                reasons.push(None);
            }
            Err(why) => reasons.push(Some(why)),
        }
    }
    (embeddings, reasons)
}

/// `RegionError` naming every bad mask, carrying the reasons by position and every embedding, so that a
/// caller who catches it loses none of the good work.
fn region_error(
    py: Python<'_>,
    embeddings: Bound<'_, PyArray2<f32>>,
    reasons: Vec<Option<String>>,
) -> PyResult<PyErr> {
    let total = reasons.len();
    let bad: Vec<(usize, String)> = reasons
        .into_iter()
        .enumerate()
        .filter_map(|(k, why)| why.map(|why| (k, why)))
        .collect();
    let listing: Vec<String> = bad
        .iter()
        .map(|(k, why)| format!("mask {k}: {why}"))
        .collect();
    let err = RegionError::new_err(format!(
        "{} of {total} masks could not be embedded: {}",
        bad.len(),
        listing.join("; ")
    ));
    let by_mask = PyDict::new(py);
    for (k, why) in bad {
        by_mask.set_item(k, why)?;
    }
    let value = err.value(py);
    value.setattr("errors", by_mask)?;
    value.setattr("embeddings", embeddings)?;
    Ok(err)
}
