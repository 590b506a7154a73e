//! `Index`: a region index opened for searching, through the library's one query API
//! (`regionseek::pipeline::query`), with the CLI's defaults, filters, checks and hints.

use std::ffi::CString;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyArray2};
use pyo3::exceptions::{PyImportError, PyUserWarning, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyList;

use regionseek::cancel::Cancel;
use regionseek::clip::{ClipModel, TextEncoder};
use regionseek::index::{Filter, RegionIndex};
use regionseek::pipeline::photo_meta::{with_photo_words, PhotoWords};
use regionseek::pipeline::query::{self, SearchAnswer, SearchOptions, TextQuery, DEFAULT_K};
use regionseek::pipeline::region_query::{
    search_region, IndexEmbedding, RegionPrompt, RegionQuery, WeightedText,
};

use crate::convert::{
    DeviceArg, GroupArg, ImageLike, Masks, ModelArg, NearArg, QueryVectors, TextsArg, WhenArg,
};
use crate::errors::{query_error, region_query_error, runtime_error, RegionseekError};
use crate::hits::hit_list;
use crate::interrupt::interruptible;

type TextTower = Arc<dyn TextEncoder + Send + Sync>;

/// A region index opened for searching (a snapshot of its last commit; writers elsewhere are not disturbed).
#[pyclass(name = "Index", module = "regionseek", frozen)]
pub struct Index {
    index: RegionIndex,
    path: PathBuf,
    /// Loaded on the first text search: an index searched only with vectors (a Ray shard) reads no model.
    text_tower: OnceLock<TextTower>,
    /// Loaded on the first region search (or given to `open` as a `Model`): the vision tower embeds regions.
    whole_model: OnceLock<Arc<ClipModel>>,
    /// The model spec `open` was given (a moved weights folder), for the vision tower too.
    model_spec: Option<String>,
    /// How the index embedded its regions, read once (the index is a snapshot).
    embedding: OnceLock<IndexEmbedding>,
    device: candle_core::Device,
}

/// The photo metadata keywords of a search, as given.
struct PhotoKeywords {
    after: Option<WhenArg>,
    before: Option<WhenArg>,
    camera: Option<String>,
    near: Option<NearArg>,
}

/// The rows a search may return: every given field must match.
fn search_filter(
    method: Option<String>,
    label: Option<String>,
    image: Option<String>,
    source: Option<String>,
    photo: PhotoKeywords,
) -> PyResult<Filter> {
    let filter = Filter {
        image,
        method,
        source,
        label,
        ..Filter::default()
    };
    let words = PhotoWords {
        after: photo.after.as_ref().map(|w| w.0.as_str()),
        before: photo.before.as_ref().map(|w| w.0.as_str()),
        camera: photo.camera.as_deref(),
        near: photo.near.as_ref().map(|n| n.0.as_str()),
    };
    with_photo_words(filter, words).map_err(|e| PyValueError::new_err(e.to_string()))
}

impl Index {
    /// The index's own text tower unless `Index.open` was given a model.
    fn text_tower(&self, py: Python<'_>) -> PyResult<TextTower> {
        if let Some(tower) = self.text_tower.get() {
            return Ok(tower.clone());
        }
        let loaded: TextTower = Arc::new(
            py.detach(|| query::load_text_model(&self.index, None, &self.device))
                .map_err(query_error)?,
        );
        Ok(self.text_tower.get_or_init(|| loaded).clone())
    }

    /// The index's whole model (both towers), for region searches.
    fn whole_model(&self, py: Python<'_>) -> PyResult<Arc<ClipModel>> {
        if let Some(model) = self.whole_model.get() {
            return Ok(model.clone());
        }
        let loaded = py
            .detach(|| query::load_model(&self.index, self.model_spec.as_deref(), &self.device))
            .map_err(query_error)?;
        Ok(self.whole_model.get_or_init(|| Arc::new(loaded)).clone())
    }

    /// As the CLI warns: a query longer than the text tower's context is cut, and the user should know.
    fn warn_if_truncated(
        &self,
        py: Python<'_>,
        answer: &SearchAnswer,
        context: usize,
    ) -> PyResult<()> {
        if !answer.truncated {
            return Ok(());
        }
        let message = format!(
            "the query is {} tokens; the model reads the first {context} (the rest is ignored)",
            answer.query_tokens
        );
        let message = CString::new(message).map_err(runtime_error)?;
        PyErr::warn(py, &py.get_type::<PyUserWarning>(), &message, 2)
    }
}

/// How a search runs, from the keywords `search` and `search_vectors` share (checked by the library).
fn search_options(
    k: usize,
    filter: Filter,
    exact: bool,
    ef: Option<usize>,
    min_score: Option<f32>,
    group_by: Option<GroupArg>,
) -> PyResult<SearchOptions> {
    Ok(SearchOptions::new(k, filter, exact, ef)
        .and_then(|o| o.with_min_score(min_score))
        .map_err(query_error)?
        .grouped(group_by.map(|g| g.0).unwrap_or_default()))
}

#[pymethods]
impl Index {
    /// Opens an index folder. `model`: a `Model` or spec for text queries (default: the one the index was
    /// built with, loaded on the first text search; a spec loads only its text tower).
    #[staticmethod]
    #[pyo3(signature = (path, model = None, device = DeviceArg::cpu()))]
    fn open(
        py: Python<'_>,
        path: PathBuf,
        model: Option<ModelArg>,
        device: DeviceArg,
    ) -> PyResult<Self> {
        let device = device.0;
        let index = py
            .detach(|| RegionIndex::open(&path))
            .map_err(|e| RegionseekError::new_err(format!("{}: {e}", path.display())))?;
        let text_tower = OnceLock::new();
        let whole_model = OnceLock::new();
        let model_spec = match &model {
            Some(ModelArg::Spec(spec)) => Some(spec.clone()),
            _ => None,
        };
        let given: Option<TextTower> = match model {
            None => None,
            Some(ModelArg::Loaded(clip)) => {
                query::check_model(&index, clip.as_ref())
                    .map_err(|e| PyValueError::new_err(format!("{e:#}")))?;
                let _ = whole_model.set(clip.clone());
                Some(clip)
            }
            Some(ModelArg::Spec(spec)) => Some(Arc::new(
                py.detach(|| query::load_text_model(&index, Some(&spec), &device))
                    .map_err(query_error)?,
            )),
        };
        if let Some(tower) = given {
            let _ = text_tower.set(tower);
        }
        Ok(Self {
            index,
            path,
            text_tower,
            whole_model,
            model_spec,
            embedding: OnceLock::new(),
            device,
        })
    }

    fn __len__(&self) -> usize {
        self.index.len()
    }

    fn __repr__(&self) -> String {
        format!(
            "Index({:?}, rows={}, model={:?})",
            self.path.display().to_string(),
            self.index.len(),
            self.index.manifest().model_id
        )
    }

    #[getter]
    fn path(&self) -> PathBuf {
        self.path.clone()
    }

    #[getter]
    fn dim(&self) -> usize {
        self.index.dim()
    }

    /// The id of the model whose embedding space the index holds.
    #[getter]
    fn model_id(&self) -> String {
        self.index.manifest().model_id.clone()
    }

    /// The regions closest to a text query, best first: a list of dicts with the CLI's hit keys (`image`,
    /// `region_id`, `box` [x0, y0, x1, y1], `mask_rle` (COCO RLE), `score`, `method`, `source`, `label`, `row`,
    /// `exif_rotated`, `taken_at`, `camera`). Filters keep only rows whose field equals the value; `after`/
    /// `before` (text, `datetime.date` or `datetime.datetime`), `camera` (text in the make and model, any case)
    /// and `near` (`(lat, lon, km)`) filter on the photos' EXIF; `ef` widens the graph's beam, `exact=True`
    /// scans every candidate.
    #[pyo3(signature = (text, k = DEFAULT_K, method = None, label = None, image = None, ef = None, exact = false, source = None, min_score = None, group_by = None, after = None, before = None, camera = None, near = None))]
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
        source: Option<String>,
        min_score: Option<f32>,
        group_by: Option<GroupArg>,
        after: Option<WhenArg>,
        before: Option<WhenArg>,
        camera: Option<String>,
        near: Option<NearArg>,
    ) -> PyResult<Bound<'py, PyList>> {
        let photo = PhotoKeywords {
            after,
            before,
            camera,
            near,
        };
        let options = search_options(
            k,
            search_filter(method, label, image, source, photo)?,
            exact,
            ef,
            min_score,
            group_by,
        )?;
        let tower = self.text_tower(py)?;
        let answer = interruptible(py, &Cancel::default(), || {
            let query = query::embed_query(tower.as_ref(), text)?;
            query::search_query(&self.index, &query, &options)
        })?
        .map_err(query_error)?;
        self.warn_if_truncated(py, &answer, tower.config().text.context_length)?;
        hit_list(py, &answer.hits)
    }

    /// The regions closest to embedding vectors: a `(d,)` array gives one list of hits, a `(Q, d)` array a list
    /// per row. Vectors of any scale (normalised here); float32 or float64.
    #[pyo3(signature = (vectors, k = DEFAULT_K, method = None, label = None, image = None, ef = None, exact = false, source = None, min_score = None, group_by = None, after = None, before = None, camera = None, near = None))]
    #[allow(clippy::too_many_arguments)]
    fn search_vectors<'py>(
        &self,
        py: Python<'py>,
        vectors: QueryVectors,
        k: usize,
        method: Option<String>,
        label: Option<String>,
        image: Option<String>,
        ef: Option<usize>,
        exact: bool,
        source: Option<String>,
        min_score: Option<f32>,
        group_by: Option<GroupArg>,
        after: Option<WhenArg>,
        before: Option<WhenArg>,
        camera: Option<String>,
        near: Option<NearArg>,
    ) -> PyResult<Bound<'py, PyList>> {
        let photo = PhotoKeywords {
            after,
            before,
            camera,
            near,
        };
        let options = search_options(
            k,
            search_filter(method, label, image, source, photo)?,
            exact,
            ef,
            min_score,
            group_by,
        )?;
        let queries = vectors
            .rows
            .iter()
            .enumerate()
            .map(|(i, row)| {
                TextQuery::from_vector(row, self.index.dim()).map_err(|e| match vectors.single {
                    true => query_error(e),
                    false => PyValueError::new_err(format!("vector {i}: {e}")),
                })
            })
            .collect::<PyResult<Vec<_>>>()?;
        let answers = py
            .detach(|| {
                queries
                    .iter()
                    .map(|q| query::search_query(&self.index, q, &options))
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(query_error)?;
        match (vectors.single, answers.first()) {
            (true, Some(answer)) => hit_list(py, &answer.hits),
            _ => {
                let lists = answers
                    .iter()
                    .map(|a| hit_list(py, &a.hits))
                    .collect::<PyResult<Vec<_>>>()?;
                PyList::new(py, lists)
            }
        }
    }

    /// The regions most like a region of a photo (query by example), best first, as `search`'s hits.
    /// `image`: HxWx3 uint8 array or PIL image, in the frame the index's photos were indexed in. The region:
    /// `mask` (an (H, W) bool array), or `box` (`[x0, y0, x1, y1]` in pixels), or neither for the whole
    /// photo. It is embedded as the index embedded its own regions (its best tier's method and recorded
    /// settings), so an indexed region asked with its own mask finds itself first. `text` / `minus`: texts
    /// (`"red"` or `"0.5:red"`, one or a list) added to or taken from the region's embedding.
    #[pyo3(signature = (image, mask = None, r#box = None, k = DEFAULT_K, text = None, minus = None, method = None, label = None, source = None, ef = None, exact = false, min_score = None, group_by = None, after = None, before = None, camera = None, near = None))]
    #[allow(clippy::too_many_arguments)]
    fn search_region<'py>(
        &self,
        py: Python<'py>,
        image: ImageLike,
        mask: Option<Masks>,
        r#box: Option<[f32; 4]>,
        k: usize,
        text: Option<TextsArg>,
        minus: Option<TextsArg>,
        method: Option<String>,
        label: Option<String>,
        source: Option<String>,
        ef: Option<usize>,
        exact: bool,
        min_score: Option<f32>,
        group_by: Option<GroupArg>,
        after: Option<WhenArg>,
        before: Option<WhenArg>,
        camera: Option<String>,
        near: Option<NearArg>,
    ) -> PyResult<Bound<'py, PyList>> {
        let photo = PhotoKeywords {
            after,
            before,
            camera,
            near,
        };
        let options = search_options(
            k,
            search_filter(method, label, None, source, photo)?,
            exact,
            ef,
            min_score,
            group_by,
        )?;
        let image = image.0;
        let prompt = match (mask, r#box) {
            (Some(_), Some(_)) => {
                return Err(PyValueError::new_err("give mask or box, not both"));
            }
            (Some(m), None) => {
                let mut masks = m.fitted_to(&image)?;
                if masks.len() != 1 {
                    return Err(PyValueError::new_err(format!(
                        "mask must be one (H, W) mask, not {}",
                        masks.len()
                    )));
                }
                RegionPrompt::Mask(masks.remove(0))
            }
            (None, Some(b)) => RegionPrompt::Box(b),
            (None, None) => RegionPrompt::WholePhoto,
        };
        let mut texts = Vec::new();
        for t in text.map(|t| t.0).unwrap_or_default() {
            texts.push(t.parse::<WeightedText>().map_err(region_query_error)?);
        }
        for t in minus.map(|t| t.0).unwrap_or_default() {
            texts.push(
                t.parse::<WeightedText>()
                    .map_err(region_query_error)?
                    .negated(),
            );
        }
        let model = self.whole_model(py)?;
        let how = self
            .embedding
            .get_or_init(|| IndexEmbedding::of(&self.index));
        let query = RegionQuery {
            image: &image,
            prompt,
            texts,
        };
        let cancel = Cancel::default();
        let found = interruptible(py, &cancel, || {
            search_region(&self.index, how, &model, &query, &options, None, &cancel)
        })?
        .map_err(region_query_error)?;
        hit_list(py, &found.answer.hits)
    }

    /// Every row's stored unit embedding, `(len, d)` float32, in row order (NaN rows for any without one).
    fn embeddings<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let (rows, dim) = (self.index.len(), self.index.dim());
        let flat = py.detach(|| {
            let mut flat = Vec::with_capacity(rows * dim);
            for row in 0..rows {
                match self.index.embedding(row) {
                    Some(v) => flat.extend(v),
                    None => flat.extend(std::iter::repeat_n(f32::NAN, dim)),
                }
            }
            flat
        });
        Ok(Array2::from_shape_vec((rows, dim), flat)
            .map_err(runtime_error)?
            .into_pyarray(py))
    }

    /// The committed Parquet segments, in row order (the files `to_arrow` reads).
    fn segment_paths(&self) -> Vec<PathBuf> {
        self.index
            .manifest()
            .segments
            .iter()
            .map(|s| self.path.join(&s.file))
            .collect()
    }

    /// The region table (every row's metadata and embedding) as a `pyarrow.Table`, read from the index's
    /// Parquet segments.
    fn to_arrow<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let parquet = py.import("pyarrow.parquet").map_err(|_| {
            PyImportError::new_err("Index.to_arrow needs pyarrow (pip install pyarrow)")
        })?;
        let segments = self
            .segment_paths()
            .into_iter()
            .map(|p| parquet.call_method1("read_table", (p,)))
            .collect::<PyResult<Vec<_>>>()?;
        if segments.is_empty() {
            return Err(PyValueError::new_err("the index holds no rows yet"));
        }
        // Segments written before a column existed lack it: promoted, their rows read it as null.
        let promote = pyo3::types::PyDict::new(py);
        promote.set_item("promote_options", "default")?;
        py.import("pyarrow")?.call_method(
            "concat_tables",
            (PyList::new(py, segments)?,),
            Some(&promote),
        )
    }
}

/// The SIMD back end the index's distance kernels run on here (e.g. "avx2+fma+f16c").
#[pyfunction]
pub fn simd_backend() -> String {
    regionseek::index::kernels::simd_backend().to_string()
}
