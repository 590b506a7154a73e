//! `regionseek._native`: the Python front door, a thin shell over the library's `pipeline` and `index` APIs.
//! Every call that computes releases the GIL and runs on a worker thread while the calling thread watches for
//! Ctrl-C; an interrupt sets the library's cancel flag, waits for the work to reach a safe point, and raises
//! `KeyboardInterrupt`.

use std::path::PathBuf;
use std::sync::{mpsc, Arc, OnceLock};
use std::time::Duration;

use numpy::ndarray::{Array2, ArrayView2};
use numpy::{
    IntoPyArray, PyArray2, PyArrayDescrMethods, PyArrayDyn, PyArrayMethods, PyUntypedArray,
    PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyKeyboardInterrupt, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use image::RgbImage;
use regionseek::cancel::Cancel;
use regionseek::clip::{ClipError, ClipModel};
use regionseek::device::Precision;
use regionseek::index::{Filter, RegionIndex, SearchMode};
use regionseek::invert::{invert_image, GradChoice, InversionConfig, InvertError};
use regionseek::masks::BinaryMask;
use regionseek::pipeline::{query, IndexJob, RegionSource, SamSetup, Shard};

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

fn runtime_error(e: impl std::fmt::Display) -> PyErr {
    RegionseekError::new_err(e.to_string())
}

fn anyhow_error(e: anyhow::Error) -> PyErr {
    RegionseekError::new_err(format!("{e:#}"))
}

/// Runs `work` on a scoped thread with the GIL released, checking for signals every 50 ms. On Ctrl-C (or any
/// signal handler that raises) the work is asked to stop through `cancel`, awaited, and the handler's
/// exception is returned.
fn interruptible<T: Send>(
    py: Python<'_>,
    cancel: &Cancel,
    work: impl FnOnce() -> T + Send,
) -> PyResult<T> {
    std::thread::scope(|scope| {
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let handle = scope.spawn(move || {
            let out = work();
            let _ = done_tx.send(());
            out
        });
        let mut interrupted: Option<PyErr> = None;
        let mut done_rx = done_rx;
        loop {
            // The receiver travels into the GIL-free closure and back (it is Send, not Sync).
            let (finished, rx) = py.detach(move || {
                let finished = match done_rx.recv_timeout(Duration::from_millis(50)) {
                    Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => true,
                    Err(mpsc::RecvTimeoutError::Timeout) => false,
                };
                (finished, done_rx)
            });
            done_rx = rx;
            if finished {
                break;
            }
            if interrupted.is_none() {
                if let Err(e) = py.check_signals() {
                    cancel.cancel();
                    interrupted = Some(e);
                }
            }
        }
        let out = handle
            .join()
            .map_err(|_| RegionseekError::new_err("internal error: the computation panicked"))?;
        match interrupted {
            Some(e) => Err(e),
            None => Ok(out),
        }
    })
}

/// A Pillow image becomes `numpy.asarray(image.convert("RGB"))`; anything else is taken as an array.
fn as_rgb_array<'py>(image: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = image.py();
    if image.is_instance_of::<PyUntypedArray>() {
        return Ok(image.clone());
    }
    if image.hasattr("convert")? && image.hasattr("size")? {
        let rgb = image.call_method1("convert", ("RGB",))?;
        return py.import("numpy")?.call_method1("asarray", (rgb,));
    }
    Err(PyTypeError::new_err(format!(
        "image must be an HxWx3 uint8 numpy array or a PIL image, not {}",
        image.get_type().name()?
    )))
}

fn rgb_image(image: &Bound<'_, PyAny>) -> PyResult<RgbImage> {
    let array = as_rgb_array(image)?;
    let untyped = array.cast::<PyUntypedArray>().map_err(|_| {
        PyTypeError::new_err("image must be an HxWx3 uint8 numpy array or a PIL image")
    })?;
    let shape = untyped.shape().to_vec();
    if shape.len() != 3 || shape[2] != 3 {
        return Err(PyValueError::new_err(format!(
            "image must have shape (H, W, 3) (RGB), got {shape:?}"
        )));
    }
    if !untyped.dtype().is_equiv_to(&numpy::dtype::<u8>(image.py())) {
        return Err(PyTypeError::new_err(format!(
            "image must be uint8 (0..255), got {}",
            untyped.dtype()
        )));
    }
    let (h, w) = (shape[0], shape[1]);
    if h == 0 || w == 0 {
        return Err(PyValueError::new_err(format!(
            "image is empty ({h}x{w} pixels)"
        )));
    }
    let typed = array.cast::<PyArrayDyn<u8>>()?.readonly();
    let pixels: Vec<u8> = typed.as_array().iter().copied().collect();
    RgbImage::from_raw(w as u32, h as u32, pixels)
        .ok_or_else(|| PyValueError::new_err("image does not fit in memory as RGB"))
}

/// Masks as `(M, H, W)` (or one `(H, W)`) bool arrays, or uint8 where non-zero is inside.
fn binary_masks(
    masks: &Bound<'_, PyAny>,
    width: usize,
    height: usize,
) -> PyResult<Vec<BinaryMask>> {
    let py = masks.py();
    let array = if masks.is_instance_of::<PyUntypedArray>() {
        masks.clone()
    } else {
        py.import("numpy")?.call_method1("asarray", (masks,))?
    };
    let untyped = array.cast::<PyUntypedArray>()?;
    let shape = untyped.shape().to_vec();
    let (m, h, w) = match shape.as_slice() {
        [h, w] => (1, *h, *w),
        [m, h, w] => (*m, *h, *w),
        _ => {
            return Err(PyValueError::new_err(format!(
                "masks must have shape (M, H, W) or (H, W), got {shape:?}"
            )))
        }
    };
    if (h, w) != (height, width) {
        return Err(PyValueError::new_err(format!(
            "masks are {w}x{h} but the image is {width}x{height}: masks must be at the image's own resolution"
        )));
    }
    let dtype = untyped.dtype();
    let values: Vec<u8> = if dtype.is_equiv_to(&numpy::dtype::<bool>(py)) {
        let typed = array.cast::<PyArrayDyn<bool>>()?.readonly();
        typed.as_array().iter().map(|&b| b as u8).collect()
    } else if dtype.is_equiv_to(&numpy::dtype::<u8>(py)) {
        let typed = array.cast::<PyArrayDyn<u8>>()?.readonly();
        typed.as_array().iter().map(|&v| (v != 0) as u8).collect()
    } else {
        return Err(PyTypeError::new_err(format!(
            "masks must be bool (or uint8, non-zero inside), got {dtype}"
        )));
    };
    let per = h * w;
    (0..m)
        .map(|k| {
            BinaryMask::new(w, h, values[k * per..(k + 1) * per].to_vec())
                .map_err(|e| PyValueError::new_err(e.to_string()))
        })
        .collect()
}

fn finite(name: &str, v: f64) -> PyResult<f64> {
    if v.is_finite() {
        Ok(v)
    } else {
        Err(PyValueError::new_err(format!(
            "{name} must be finite, got {v}"
        )))
    }
}

fn grad_choice(grad: &str) -> PyResult<GradChoice> {
    match grad {
        "auto" => Ok(GradChoice::Auto),
        "jacobian" => Ok(GradChoice::Jacobian),
        "direct" => Ok(GradChoice::Direct),
        other => Err(PyValueError::new_err(format!(
            "grad must be 'auto', 'jacobian' or 'direct', not {other:?}"
        ))),
    }
}

/// A CLIP model: a built-in random architecture (`random:vit-b-16[:seed]`, for trials and tests) or a folder
/// of real weights (Hugging Face CLIPModel or OpenCLIP layout).
#[pyclass(name = "Model", module = "regionseek", frozen)]
struct Model {
    inner: Arc<ClipModel>,
}

#[pymethods]
impl Model {
    /// Loads a model: `"random:<arch>[:seed]"` or a weights folder. `device` is "cpu" or "cuda" (a build with
    /// the cuda feature); `precision` "fp32" (default), "tf32", "bf16" or "bf16-jacobian" for the image forward and the Jacobian
    /// build; `gpu_memory` the GiB an inversion may use on a GPU, weights included.
    #[staticmethod]
    #[pyo3(signature = (spec, device = "cpu", precision = "fp32", gpu_memory = regionseek::device::DEFAULT_GPU_MEMORY_GIB))]
    fn load(
        py: Python<'_>,
        spec: &str,
        device: &str,
        precision: &str,
        gpu_memory: f64,
    ) -> PyResult<Self> {
        let device =
            regionseek::device::parse(device).map_err(|e| PyValueError::new_err(e.to_string()))?;
        let precision = <Precision as regionseek::choice::NamedChoice>::from_name(precision).ok_or_else(|| {
            PyValueError::new_err(format!(
                "precision must be 'fp32', 'tf32', 'bf16' or 'bf16-jacobian', not {precision:?}"
            ))
        })?;
        let model = py
            .detach(|| {
                ClipModel::load_spec_with(spec, &device, precision)?.with_gpu_memory(gpu_memory)
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
        if texts.is_empty() {
            return Ok(Array2::<f32>::zeros((0, self.inner.config.embed_dim)).into_pyarray(py));
        }
        let model = &self.inner;
        let queries = interruptible(py, &Cancel::default(), || {
            query::embed_queries(model.as_ref(), &texts)
        })?
        .map_err(|e| PyValueError::new_err(format!("{e:#}")))?;
        let d = self.inner.config.embed_dim;
        let flat: Vec<f32> = queries.into_iter().flat_map(|q| q.embedding).collect();
        let rows = flat.len() / d;
        Ok(Array2::from_shape_vec((rows, d), flat)
            .map_err(runtime_error)?
            .into_pyarray(py))
    }

    /// MaskInversion: one localized embedding (the raw optimised token; L2-normalise it to compare) per mask.
    ///
    /// `image`: HxWx3 uint8 array or PIL image. `masks`: (M, H, W) bool array (or one (H, W) mask).
    /// A mask that cannot be embedded (empty, diverged) raises `RegionError` listing every bad mask, or with
    /// `errors="return"` gives `(embeddings, errors)` where bad rows are NaN and `errors[k]` says why.
    #[pyo3(signature = (image, masks, size = 448, steps = 10, lr = 0.5, alpha = 0.0, grad = "auto", errors = "raise"))]
    #[allow(clippy::too_many_arguments)]
    fn invert<'py>(
        &self,
        py: Python<'py>,
        image: &Bound<'py, PyAny>,
        masks: &Bound<'py, PyAny>,
        size: usize,
        steps: usize,
        lr: f64,
        alpha: f64,
        grad: &str,
        errors: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        let return_errors = match errors {
            "raise" => false,
            "return" => true,
            other => {
                return Err(PyValueError::new_err(format!(
                    "errors must be 'raise' or 'return', not {other:?}"
                )))
            }
        };
        let cancel = Cancel::default();
        let cfg = InversionConfig {
            size,
            steps,
            lr: finite("lr", lr)?,
            alpha: finite("alpha", alpha)?,
            grad: grad_choice(grad)?,
            cancel: cancel.clone(),
            ..Default::default()
        };
        let img = rgb_image(image)?;
        let masks = binary_masks(masks, img.width() as usize, img.height() as usize)?;
        let model = &self.inner;
        let out = interruptible(py, &cancel, || invert_image(model, &img, &masks, &cfg))?;
        let out = match out {
            Ok(o) => o,
            Err(InvertError::Cancelled) => {
                return Err(PyKeyboardInterrupt::new_err("inversion interrupted"))
            }
            Err(e @ InvertError::BadSize { .. }) => {
                return Err(PyValueError::new_err(e.to_string()))
            }
            Err(e) => return Err(runtime_error(e)),
        };
        let d = self.inner.config.embed_dim;
        let mut embeddings = Array2::<f32>::from_elem((masks.len(), d), f32::NAN);
        let mut why: Vec<Option<String>> = Vec::with_capacity(masks.len());
        for (k, r) in out.masks.into_iter().enumerate() {
            match r {
                Ok(r) => {
                    embeddings
                        .row_mut(k)
                        .assign(&numpy::ndarray::ArrayView1::from(&r.embedding));
                    why.push(None);
                }
                Err(e) => why.push(Some(e)),
            }
        }
        let embeddings = embeddings.into_pyarray(py);
        if return_errors {
            let errs = PyList::new(py, why)?;
            return Ok((embeddings, errs).into_pyobject(py)?.into_any());
        }
        let bad: Vec<(usize, String)> = why
            .into_iter()
            .enumerate()
            .filter_map(|(k, e)| e.map(|e| (k, e)))
            .collect();
        if bad.is_empty() {
            return Ok(embeddings.into_any());
        }
        let listing: Vec<String> = bad.iter().map(|(k, e)| format!("mask {k}: {e}")).collect();
        let err = RegionError::new_err(format!(
            "{} of {} masks could not be embedded: {}",
            bad.len(),
            masks.len(),
            listing.join("; ")
        ));
        let by_mask = PyDict::new(py);
        for (k, e) in bad {
            by_mask.set_item(k, e)?;
        }
        let value = err.value(py);
        value.setattr("errors", by_mask)?;
        value.setattr("embeddings", embeddings)?;
        Err(err)
    }
}

fn model_from(py: Python<'_>, model: &Bound<'_, PyAny>, device: &str) -> PyResult<Arc<ClipModel>> {
    if let Ok(m) = model.cast::<Model>() {
        return Ok(m.get().inner.clone());
    }
    let spec: String = model.extract().map_err(|_| {
        PyTypeError::new_err("model must be a regionseek.Model or a model spec string")
    })?;
    // A spec gets the defaults; pass a loaded Model for another precision or GPU budget.
    Ok(Model::load(
        py,
        &spec,
        device,
        "fp32",
        regionseek::device::DEFAULT_GPU_MEMORY_GIB,
    )?
    .inner)
}

fn search_mode(ef: Option<usize>, exact: bool) -> PyResult<SearchMode> {
    match (exact, ef) {
        (true, Some(_)) => Err(PyValueError::new_err(
            "pass either exact=True or ef, not both",
        )),
        (true, None) => Ok(SearchMode::Exact),
        (false, Some(0)) => Err(PyValueError::new_err("ef must be at least 1")),
        (false, Some(ef)) => Ok(SearchMode::Approximate { ef }),
        (false, None) => Ok(SearchMode::Auto),
    }
}

/// Hits as the CLI's `--json` writes them, as Python dicts.
fn hits_to_py<'py>(
    py: Python<'py>,
    hits: &[regionseek::index::Hit],
) -> PyResult<Bound<'py, PyAny>> {
    let text = serde_json::to_string(hits).map_err(runtime_error)?;
    py.import("json")?.call_method1("loads", (text,))
}

/// A region index opened for searching (a snapshot of its last commit; writers elsewhere are not disturbed).
#[pyclass(name = "Index", module = "regionseek", frozen)]
struct Index {
    inner: RegionIndex,
    path: PathBuf,
    model: OnceLock<Arc<ClipModel>>,
    device: String,
}

impl Index {
    fn filter(image: Option<String>, method: Option<String>, label: Option<String>) -> Filter {
        Filter {
            image,
            method,
            source: None,
            label,
        }
    }

    fn text_model(&self, py: Python<'_>) -> PyResult<Arc<ClipModel>> {
        if let Some(m) = self.model.get() {
            return Ok(m.clone());
        }
        let spec = self.inner.manifest().model_id.clone();
        let device = regionseek::device::parse(&self.device)
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        let model = py
            .detach(|| ClipModel::load_spec(&spec, &device))
            .map_err(|e| {
                RegionseekError::new_err(format!(
                    "loading the index's model {spec}: {e} (pass model= to Index.open if it moved)"
                ))
            })?;
        // Checked once here (as `open` checks a model it is given), not on every search.
        query::check_model(&self.inner, &model)
            .map_err(|e| PyValueError::new_err(format!("{e:#}")))?;
        Ok(self.model.get_or_init(|| Arc::new(model)).clone())
    }

    fn run_search<'py>(
        &self,
        py: Python<'py>,
        vectors: Vec<Vec<f32>>,
        k: usize,
        filter: Filter,
        mode: SearchMode,
    ) -> PyResult<Vec<Vec<regionseek::index::Hit>>> {
        if k == 0 {
            return Err(PyValueError::new_err("k must be at least 1"));
        }
        if let Some(why) = query::explain_empty_filter(&self.inner, &filter) {
            return Err(PyValueError::new_err(format!("nothing to search: {why}")));
        }
        let index = &self.inner;
        py.detach(|| {
            vectors
                .iter()
                .map(|v| index.search(v, k, &filter, mode))
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(|e| PyValueError::new_err(e.to_string()))
    }
}

#[pymethods]
impl Index {
    /// Opens an index folder. `model`: a `Model` or spec for text queries (default: the one the index was
    /// built with, loaded on the first text search).
    #[staticmethod]
    #[pyo3(signature = (path, model = None, device = "cpu"))]
    fn open(
        py: Python<'_>,
        path: PathBuf,
        model: Option<&Bound<'_, PyAny>>,
        device: &str,
    ) -> PyResult<Self> {
        let inner = py
            .detach(|| RegionIndex::open(&path))
            .map_err(|e| RegionseekError::new_err(format!("{}: {e}", path.display())))?;
        let cell = OnceLock::new();
        if let Some(m) = model {
            let m = model_from(py, m, device)?;
            query::check_model(&inner, m.as_ref())
                .map_err(|e| PyValueError::new_err(format!("{e:#}")))?;
            let _ = cell.set(m);
        }
        Ok(Self {
            inner,
            path,
            model: cell,
            device: device.to_string(),
        })
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }

    fn __repr__(&self) -> String {
        format!(
            "Index({:?}, rows={}, model={:?})",
            self.path.display().to_string(),
            self.inner.len(),
            self.inner.manifest().model_id
        )
    }

    #[getter]
    fn path(&self) -> PathBuf {
        self.path.clone()
    }

    #[getter]
    fn dim(&self) -> usize {
        self.inner.dim()
    }

    /// The id of the model whose embedding space the index holds.
    #[getter]
    fn model_id(&self) -> String {
        self.inner.manifest().model_id.clone()
    }

    /// The regions closest to a text query, best first: a list of dicts with the CLI's hit keys (`image`,
    /// `region_id`, `box` [x0, y0, x1, y1], `mask_rle` (COCO RLE), `score`, `method`, `source`, `label`, `row`,
    /// `exif_rotated`). Filters keep only rows whose field equals the value; `ef` widens the graph's beam,
    /// `exact=True` scans every candidate.
    #[pyo3(signature = (text, k = 10, method = None, label = None, image = None, ef = None, exact = false))]
    #[allow(clippy::too_many_arguments)]
    fn search<'py>(
        &self,
        py: Python<'py>,
        text: &str,
        k: usize,
        method: Option<String>,
        label: Option<String>,
        image: Option<String>,
        ef: Option<usize>,
        exact: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let mode = search_mode(ef, exact)?;
        let model = self.text_model(py)?;
        let text = text.to_string();
        let q = interruptible(py, &Cancel::default(), || {
            query::embed_query(model.as_ref(), &text)
        })?
        .map_err(|e| PyValueError::new_err(format!("{e:#}")))?;
        let mut hits = self.run_search(
            py,
            vec![q.embedding],
            k,
            Self::filter(image, method, label),
            mode,
        )?;
        hits_to_py(py, &hits.remove(0))
    }

    /// The regions closest to embedding vectors: a `(d,)` array gives one list of hits, a `(Q, d)` array a list
    /// per row. Vectors of any scale (normalised here); float32 or float64.
    #[pyo3(signature = (vectors, k = 10, method = None, label = None, image = None, ef = None, exact = false))]
    #[allow(clippy::too_many_arguments)]
    fn search_vectors<'py>(
        &self,
        py: Python<'py>,
        vectors: &Bound<'py, PyAny>,
        k: usize,
        method: Option<String>,
        label: Option<String>,
        image: Option<String>,
        ef: Option<usize>,
        exact: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let mode = search_mode(ef, exact)?;
        let np = py.import("numpy")?;
        let untyped = vectors.cast::<PyUntypedArray>().map_err(|_| {
            PyTypeError::new_err("vectors must be a numpy array of shape (d,) or (Q, d)")
        })?;
        let kind = untyped.dtype().kind();
        if kind != b'f' {
            return Err(PyTypeError::new_err(format!(
                "vectors must be float32 or float64, got {}",
                untyped.dtype()
            )));
        }
        let one = untyped.ndim() == 1;
        let as_f32 = np.call_method1("ascontiguousarray", (vectors, "float32"))?;
        let as_2d = if one {
            as_f32.call_method1("reshape", ((1, -1),))?
        } else {
            as_f32
        };
        let arr = as_2d
            .cast::<PyArray2<f32>>()
            .map_err(|_| PyValueError::new_err("vectors must have shape (d,) or (Q, d)"))?
            .readonly();
        let view: ArrayView2<f32> = arr.as_array();
        if view.ncols() != self.inner.dim() {
            return Err(PyValueError::new_err(format!(
                "vectors are {}-d but the index holds {}-d embeddings",
                view.ncols(),
                self.inner.dim()
            )));
        }
        let rows: Vec<Vec<f32>> = view.rows().into_iter().map(|r| r.to_vec()).collect();
        for (i, r) in rows.iter().enumerate() {
            if r.iter().any(|v| !v.is_finite()) {
                return Err(PyValueError::new_err(format!(
                    "vector {i} has NaN or infinite values"
                )));
            }
        }
        let hits = self.run_search(py, rows, k, Self::filter(image, method, label), mode)?;
        if one {
            hits_to_py(py, &hits[0])
        } else {
            let lists = PyList::empty(py);
            for h in &hits {
                lists.append(hits_to_py(py, h)?)?;
            }
            Ok(lists.into_any())
        }
    }

    /// Every row's stored unit embedding, `(len, d)` float32, in row order.
    fn embeddings<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let d = self.inner.dim();
        let n = self.inner.len();
        let index = &self.inner;
        let flat = py.detach(|| {
            let mut flat = Vec::with_capacity(n * d);
            for row in 0..n {
                match index.embedding(row) {
                    Some(v) => flat.extend(v),
                    None => flat.extend(std::iter::repeat_n(f32::NAN, d)),
                }
            }
            flat
        });
        Ok(Array2::from_shape_vec((n, d), flat)
            .map_err(runtime_error)?
            .into_pyarray(py))
    }

    /// The committed Parquet segments, in row order (the files `to_arrow` reads).
    fn segment_paths(&self) -> Vec<PathBuf> {
        self.inner
            .manifest()
            .segments
            .iter()
            .map(|s| self.path.join(&s.file))
            .collect()
    }

    /// The region table (every row's metadata and embedding) as a `pyarrow.Table`, read from the index's
    /// Parquet segments.
    fn to_arrow<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let pq = py.import("pyarrow.parquet").map_err(|_| {
            pyo3::exceptions::PyImportError::new_err(
                "Index.to_arrow needs pyarrow (pip install pyarrow)",
            )
        })?;
        let pa = py.import("pyarrow")?;
        let tables = PyList::empty(py);
        for p in self.segment_paths() {
            tables.append(pq.call_method1("read_table", (p,))?)?;
        }
        if tables.is_empty() {
            return Err(PyValueError::new_err("the index holds no rows yet"));
        }
        pa.call_method1("concat_tables", (tables,))
    }
}

/// Indexes a folder of photos by region with a named pipeline, as `regionseek index` does (same files, same
/// resume: a rerun embeds only what is missing). Regions come from `coco` (instances JSON), `boxes` (boxes
/// JSON), `masks` (mask PNG folder), or, for the auto-sam / auto-grid pipelines, are found in every photo.
/// Without `pipeline`, the one that fits: `boxes` for `boxes` (`boxes-sam` with `sam`), else `gt-masks`.
/// `shard=(k, n)` indexes only the photos of shard k of n (split by a hash of each photo's name, the CLI's
/// `--shard k/n`). Returns the run's report (the CLI's `--json` keys). Ctrl-C stops after the photo being embedded, commits
/// what is done, and raises KeyboardInterrupt.
#[pyfunction]
#[pyo3(signature = (images, *, out, coco = None, boxes = None, masks = None, pipeline = None,
                    model = None, device = "cpu", sam = None, limit = None, shard = None, progress = true,
                    wait = false, exif_rotate = false, max_pixels = None))]
#[allow(clippy::too_many_arguments)]
fn index_photos<'py>(
    py: Python<'py>,
    images: PathBuf,
    out: PathBuf,
    coco: Option<PathBuf>,
    boxes: Option<PathBuf>,
    masks: Option<PathBuf>,
    pipeline: Option<String>,
    model: Option<&Bound<'py, PyAny>>,
    device: &str,
    sam: Option<PathBuf>,
    limit: Option<usize>,
    shard: Option<(usize, usize)>,
    progress: bool,
    wait: bool,
    exif_rotate: bool,
    max_pixels: Option<u64>,
) -> PyResult<Bound<'py, PyAny>> {
    let shard = shard
        .map(|(k, n)| Shard::new(k, n))
        .transpose()
        .map_err(PyValueError::new_err)?;
    let regions = match (coco, boxes, masks) {
        (Some(c), None, None) => RegionSource::Coco(c),
        (None, Some(b), None) => RegionSource::Boxes(b),
        (None, None, Some(m)) => RegionSource::MaskDir(m),
        (None, None, None) => RegionSource::FindThem,
        _ => {
            return Err(PyValueError::new_err(
                "give at most one of coco=, boxes=, masks=",
            ))
        }
    };
    // A Model object is used as is; a spec string is loaded after the index's lock is taken (as the CLI does).
    let (loaded, spec) = match model.map(|m| (m.cast::<Model>(), m)) {
        None => (None, regionseek::clip::DEFAULT_MODEL.to_string()),
        Some((Ok(m), _)) => (Some(m.get().inner.clone()), String::new()),
        Some((Err(_), m)) => (
            None,
            m.extract().map_err(|_| {
                PyTypeError::new_err("model must be a regionseek.Model or a model spec string")
            })?,
        ),
    };
    let device_parsed =
        regionseek::device::parse(device).map_err(|e| PyValueError::new_err(e.to_string()))?;
    let cancel = Cancel::default();
    // Without a pipeline, the one that fits the regions given (boxes: `boxes` or `boxes-sam`), as the CLI.
    let pipeline = pipeline.unwrap_or_else(|| {
        regionseek::pipeline::default_pipeline(&regions, sam.is_some()).to_string()
    });
    let job = IndexJob {
        images,
        regions,
        pipeline,
        out,
        limit,
        shard,
        wait: regionseek::index::LockWait::forever_if(wait),
        decode: regionseek::decode::DecodeOptions {
            max_pixels: max_pixels.unwrap_or(regionseek::decode::DEFAULT_MAX_PIXELS),
            exif_rotate,
        },
        sam: SamSetup {
            dir: sam,
            ..Default::default()
        },
        reporter: regionseek::pipeline::SharedReporter::new(
            regionseek::pipeline::bar::Bar::new(progress),
        ),
        cancel: cancel.clone(),
    };
    let report = interruptible(py, &cancel, move || {
        job.run(|| match loaded {
            Some(m) => Ok(m),
            None => Ok(Arc::new(ClipModel::load_spec(&spec, &device_parsed)?)),
        })
    })?
    .map_err(|e| match e.downcast_ref::<regionseek::pipeline::NeedsRegions>() {
        Some(n) => RegionseekError::new_err(format!(
            "pipeline {} takes its regions from coco=, boxes= or masks=; for a plain photo folder use \
             pipeline=\"auto-sam\" (with sam=DIR) or pipeline=\"auto-grid\"",
            n.pipeline
        )),
        None => anyhow_error(e),
    })?;
    if report.interrupted {
        return Err(PyKeyboardInterrupt::new_err(format!(
            "indexing interrupted: {} regions committed; rerun to resume",
            report.regions_added
        )));
    }
    let text = serde_json::to_string(&report).map_err(runtime_error)?;
    py.import("json")?.call_method1("loads", (text,))
}

/// A hit's `mask_rle` (COCO RLE: `{"size": [h, w], "counts": str}`) as an `(h, w)` bool array, decoded as
/// pycocotools decodes it.
#[pyfunction]
fn mask_from_rle<'py>(
    py: Python<'py>,
    rle: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyArray2<bool>>> {
    let size: Vec<u32> = rle.get_item("size")?.extract()?;
    let counts: String = rle.get_item("counts")?.extract()?;
    let [h, w] = size[..] else {
        return Err(PyValueError::new_err(format!(
            "size must be [h, w], got {size:?}"
        )));
    };
    let mask = regionseek::masks::Rle::from_coco(&regionseek::index::CocoRle {
        size: [h, w],
        counts,
    })
    .map_err(|e| PyValueError::new_err(e.to_string()))?
    .decode();
    let bits: Vec<bool> = mask.data.iter().map(|&v| v != 0).collect();
    Ok(Array2::from_shape_vec((mask.height, mask.width), bits)
        .map_err(runtime_error)?
        .into_pyarray(py))
}

/// Benchmark support (bench/python_overhead.py): converts the inputs once, then times `repeats` calls of the
/// library's `invert_image` inside Rust, as the CLI makes it. Returns the seconds of each call.
#[pyfunction]
#[pyo3(signature = (model, image, masks, size = 448, steps = 10, grad = "auto", repeats = 5))]
#[allow(clippy::too_many_arguments)]
fn _bench_invert(
    py: Python<'_>,
    model: &Bound<'_, Model>,
    image: &Bound<'_, PyAny>,
    masks: &Bound<'_, PyAny>,
    size: usize,
    steps: usize,
    grad: &str,
    repeats: usize,
) -> PyResult<Vec<f64>> {
    let cfg = InversionConfig {
        size,
        steps,
        grad: grad_choice(grad)?,
        ..Default::default()
    };
    let img = rgb_image(image)?;
    let masks = binary_masks(masks, img.width() as usize, img.height() as usize)?;
    let model = model.get().inner.clone();
    py.detach(|| {
        (0..repeats)
            .map(|_| {
                let t = std::time::Instant::now();
                invert_image(&model, &img, &masks, &cfg).map(|_| t.elapsed().as_secs_f64())
            })
            .collect::<Result<Vec<_>, _>>()
    })
    .map_err(runtime_error)
}

/// The SIMD back end the index's distance kernels run on here (e.g. "avx2+fma+f16c").
#[pyfunction]
fn simd_backend() -> String {
    regionseek::index::kernels::simd_backend().to_string()
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<Model>()?;
    m.add_class::<Index>()?;
    m.add_function(wrap_pyfunction!(index_photos, m)?)?;
    m.add_function(wrap_pyfunction!(simd_backend, m)?)?;
    m.add_function(wrap_pyfunction!(_bench_invert, m)?)?;
    m.add_function(wrap_pyfunction!(mask_from_rle, m)?)?;
    m.add("RegionseekError", py.get_type::<RegionseekError>())?;
    m.add("RegionError", py.get_type::<RegionError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
