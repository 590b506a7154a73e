//! What Python hands in, turned into the library's types once, at the door, with errors that name the
//! keyword and say what it takes. Functions then work on checked values only.

use std::sync::Arc;

use numpy::{
    PyArrayDescrMethods, PyArrayDyn, PyArrayMethods, PyUntypedArray, PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::Borrowed;

use image::RgbImage;
use regionseek::choice::NamedChoice;
use regionseek::clip::ClipModel;
use regionseek::device::Precision;
use regionseek::index::CocoRle;
use regionseek::invert::GradChoice;
use regionseek::masks::BinaryMask;
use regionseek::pipeline::Shard;

use crate::model::Model;

/// A setting's names as a sentence: `'a', 'b' or 'c'`.
fn spoken_names<T: NamedChoice>() -> String {
    let quoted: Vec<String> = T::ALL.iter().map(|v| format!("'{}'", v.name())).collect();
    match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => quoted.concat(),
    }
}

/// A named setting given by its name, as every front door spells it (`regionseek::choice`).
fn named_choice<T: NamedChoice>(obj: Borrowed<'_, '_, PyAny>, keyword: &str) -> PyResult<T> {
    let name: String = obj.extract().map_err(|_| {
        PyTypeError::new_err(format!(
            "{keyword} must be a string: {}",
            spoken_names::<T>()
        ))
    })?;
    T::from_name(&name).ok_or_else(|| {
        PyValueError::new_err(format!(
            "{keyword} must be {}, not {name:?}",
            spoken_names::<T>()
        ))
    })
}

/// `grad=`: the gradient path of an inversion.
pub struct GradArg(pub GradChoice);

impl<'a, 'py> FromPyObject<'a, 'py> for GradArg {
    type Error = PyErr;
    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        named_choice(obj, "grad").map(Self)
    }
}

/// `group_by=`: `"region"` (every region on its own) or `"photo"` (the best region of each photo).
pub struct GroupArg(pub regionseek::pipeline::query::Grouping);

impl<'a, 'py> FromPyObject<'a, 'py> for GroupArg {
    type Error = PyErr;
    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        named_choice(obj, "group_by").map(Self)
    }
}

/// `precision=`: the arithmetic of the image forward and the Jacobian build.
pub struct PrecisionArg(pub Precision);

impl<'a, 'py> FromPyObject<'a, 'py> for PrecisionArg {
    type Error = PyErr;
    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        named_choice(obj, "precision").map(Self)
    }
}

/// `errors=`: what an inversion does with masks that cannot be embedded.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum OnBadMasks {
    /// Raise `RegionError`, which still carries every embedding.
    Raise,
    /// Return `(embeddings, errors)`: NaN rows and the reason for each.
    Return,
}

impl<'a, 'py> FromPyObject<'a, 'py> for OnBadMasks {
    type Error = PyErr;
    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        let name: String = obj.extract().unwrap_or_default();
        match name.as_str() {
            "raise" => Ok(Self::Raise),
            "return" => Ok(Self::Return),
            _ => Err(PyValueError::new_err(format!(
                "errors must be 'raise' or 'return', not {}",
                obj.repr()?
            ))),
        }
    }
}

/// `device=`: "cpu", or "cuda" in a build with the cuda feature.
pub struct DeviceArg(pub candle_core::Device);

impl DeviceArg {
    pub fn cpu() -> Self {
        Self(candle_core::Device::Cpu)
    }
}

impl<'a, 'py> FromPyObject<'a, 'py> for DeviceArg {
    type Error = PyErr;
    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        let name: String = obj
            .extract()
            .map_err(|_| PyTypeError::new_err("device must be a string: 'cpu' or 'cuda'"))?;
        regionseek::device::parse(&name)
            .map(Self)
            .map_err(|e| PyValueError::new_err(e.to_string()))
    }
}

/// `model=`: a loaded `Model`, used as is, or a spec, loaded by the callee (which decides which towers and
/// when: an index run loads it only once it holds the index's lock).
pub enum ModelArg {
    Loaded(Arc<ClipModel>),
    Spec(String),
}

impl<'a, 'py> FromPyObject<'a, 'py> for ModelArg {
    type Error = PyErr;
    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        if let Ok(model) = obj.cast::<Model>() {
            return Ok(Self::Loaded(model.get().clip()));
        }
        obj.extract().map(Self::Spec).map_err(|_| {
            PyTypeError::new_err("model must be a regionseek.Model or a model spec string")
        })
    }
}

/// `shard=(k, n)`: shard k of n, as the CLI's `--shard k/n`.
pub struct ShardArg(pub Shard);

impl<'a, 'py> FromPyObject<'a, 'py> for ShardArg {
    type Error = PyErr;
    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        let (k, n): (usize, usize) = obj
            .extract()
            .map_err(|_| PyTypeError::new_err("shard must be a pair (k, n) of whole numbers"))?;
        Shard::new(k, n).map(Self).map_err(PyValueError::new_err)
    }
}

/// A Pillow image becomes `numpy.asarray(image.convert("RGB"))`; anything else must be an array already.
fn as_rgb_array<'py>(image: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    if image.is_instance_of::<PyUntypedArray>() {
        return Ok(image.clone());
    }
    if image.hasattr("convert")? && image.hasattr("size")? {
        let rgb = image.call_method1("convert", ("RGB",))?;
        return image.py().import("numpy")?.call_method1("asarray", (rgb,));
    }
    Err(PyTypeError::new_err(format!(
        "image must be an HxWx3 uint8 numpy array or a PIL image, not {}",
        image.get_type().name()?
    )))
}

/// `image=`: an HxWx3 uint8 array (any strides) or a PIL image, as RGB pixels.
pub struct ImageLike(pub RgbImage);

impl<'a, 'py> FromPyObject<'a, 'py> for ImageLike {
    type Error = PyErr;
    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        let array = as_rgb_array(&obj.to_owned())?;
        let untyped = array.cast::<PyUntypedArray>().map_err(|_| {
            PyTypeError::new_err("image must be an HxWx3 uint8 numpy array or a PIL image")
        })?;
        let shape = untyped.shape().to_vec();
        let [h, w, 3] = shape[..] else {
            return Err(PyValueError::new_err(format!(
                "image must have shape (H, W, 3) (RGB), got {shape:?}"
            )));
        };
        if !untyped.dtype().is_equiv_to(&numpy::dtype::<u8>(obj.py())) {
            return Err(PyTypeError::new_err(format!(
                "image must be uint8 (0..255), got {}",
                untyped.dtype()
            )));
        }
        if h == 0 || w == 0 {
            return Err(PyValueError::new_err(format!(
                "image is empty ({h}x{w} pixels)"
            )));
        }
        let (Ok(width), Ok(height)) = (u32::try_from(w), u32::try_from(h)) else {
            return Err(PyValueError::new_err(format!(
                "image is too large ({h}x{w} pixels)"
            )));
        };
        let pixels: Vec<u8> = array
            .cast::<PyArrayDyn<u8>>()?
            .readonly()
            .as_array()
            .iter()
            .copied()
            .collect();
        RgbImage::from_raw(width, height, pixels)
            .map(Self)
            .ok_or_else(|| PyValueError::new_err("image does not fit in memory as RGB"))
    }
}

/// `masks=`: `(M, H, W)` (or one `(H, W)`) bool arrays, or uint8 where non-zero is inside; anything numpy
/// reads as such. Checked against the image with [`Masks::fitted_to`].
pub struct Masks {
    count: usize,
    height: usize,
    width: usize,
    /// 0 or 1 per pixel, mask after mask, row-major.
    inside: Vec<u8>,
}

impl<'a, 'py> FromPyObject<'a, 'py> for Masks {
    type Error = PyErr;
    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        let py = obj.py();
        let array = if obj.is_instance_of::<PyUntypedArray>() {
            obj.to_owned()
        } else {
            py.import("numpy")?.call_method1("asarray", (obj,))?
        };
        let untyped = array.cast::<PyUntypedArray>()?;
        let shape = untyped.shape().to_vec();
        let (count, height, width) = match shape[..] {
            [h, w] => (1, h, w),
            [m, h, w] => (m, h, w),
            _ => {
                return Err(PyValueError::new_err(format!(
                    "masks must have shape (M, H, W) or (H, W), got {shape:?}"
                )))
            }
        };
        let dtype = untyped.dtype();
        let inside: Vec<u8> = if dtype.is_equiv_to(&numpy::dtype::<bool>(py)) {
            let typed = array.cast::<PyArrayDyn<bool>>()?.readonly();
            typed.as_array().iter().map(|&b| u8::from(b)).collect()
        } else if dtype.is_equiv_to(&numpy::dtype::<u8>(py)) {
            let typed = array.cast::<PyArrayDyn<u8>>()?.readonly();
            typed.as_array().iter().map(|&v| u8::from(v != 0)).collect()
        } else {
            return Err(PyTypeError::new_err(format!(
                "masks must be bool (or uint8, non-zero inside), got {dtype}"
            )));
        };
        Ok(Self {
            count,
            height,
            width,
            inside,
        })
    }
}

impl Masks {
    /// The masks, refused unless they are at the image's own resolution (a mask is not resampled: the
    /// caller would not know which pixels its region covers).
    pub fn fitted_to(self, image: &RgbImage) -> PyResult<Vec<BinaryMask>> {
        let (width, height) = (image.width() as usize, image.height() as usize);
        if (self.height, self.width) != (height, width) {
            return Err(PyValueError::new_err(format!(
                "masks are {}x{} but the image is {width}x{height}: masks must be at the image's own resolution",
                self.width, self.height
            )));
        }
        let per_mask = height * width;
        (0..self.count)
            .map(|k| {
                BinaryMask::new(
                    width,
                    height,
                    self.inside[k * per_mask..(k + 1) * per_mask].to_vec(),
                )
                .map_err(|e| PyValueError::new_err(e.to_string()))
            })
            .collect()
    }
}

/// `vectors=`: a float array of shape `(d,)` (one query) or `(Q, d)` (a batch), as f32 rows.
pub struct QueryVectors {
    pub rows: Vec<Vec<f32>>,
    /// A `(d,)` array: the caller expects one list of hits, not a list of lists.
    pub single: bool,
}

impl<'a, 'py> FromPyObject<'a, 'py> for QueryVectors {
    type Error = PyErr;
    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        let untyped = obj.cast::<PyUntypedArray>().map_err(|_| {
            PyTypeError::new_err("vectors must be a numpy array of shape (d,) or (Q, d)")
        })?;
        if untyped.dtype().kind() != b'f' {
            return Err(PyTypeError::new_err(format!(
                "vectors must be float32 or float64, got {}",
                untyped.dtype()
            )));
        }
        let shape = untyped.shape().to_vec();
        let (single, dim) = match shape[..] {
            [d] => (true, d),
            [_, d] => (false, d),
            _ => {
                return Err(PyValueError::new_err(format!(
                    "vectors must have shape (d,) or (Q, d), got {shape:?}"
                )))
            }
        };
        // numpy's own cast, so that float16 and float64 round to f32 exactly as `astype` would.
        let as_f32 = obj
            .py()
            .import("numpy")?
            .call_method1("ascontiguousarray", (obj, "float32"))?;
        let typed = as_f32.cast::<PyArrayDyn<f32>>()?.readonly();
        let flat = typed.as_slice()?;
        let rows = if dim == 0 {
            vec![Vec::new(); if single { 1 } else { shape[0] }]
        } else {
            flat.chunks(dim).map(<[f32]>::to_vec).collect()
        };
        Ok(Self { rows, single })
    }
}

/// `rle=`: a hit's `mask_rle`, `{"size": [h, w], "counts": str}`.
pub struct CocoRleArg(pub CocoRle);

impl<'a, 'py> FromPyObject<'a, 'py> for CocoRleArg {
    type Error = PyErr;
    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        let shape_error =
            || PyTypeError::new_err("rle must be a COCO RLE: {\"size\": [h, w], \"counts\": str}");
        let size: Vec<u32> = obj
            .get_item("size")
            .and_then(|s| s.extract())
            .map_err(|_| shape_error())?;
        let counts: String = obj
            .get_item("counts")
            .and_then(|c| c.extract())
            .map_err(|_| shape_error())?;
        let [h, w] = size[..] else {
            return Err(PyValueError::new_err(format!(
                "size must be [h, w], got {size:?}"
            )));
        };
        Ok(Self(CocoRle {
            size: [h, w],
            counts,
        }))
    }
}

/// A number that must be finite (a NaN learning rate would turn every embedding into NaN, silently).
pub fn finite(keyword: &str, value: f64) -> PyResult<f64> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(PyValueError::new_err(format!(
            "{keyword} must be finite, got {value}"
        )))
    }
}

/// `after=` / `before=`: text (`YYYY-MM-DD` or RFC 3339), a `datetime.date`, or a `datetime.datetime` (one
/// without a timezone read as UTC), handed on as the ISO text the library's one parser reads.
pub struct WhenArg(pub String);

impl<'a, 'py> FromPyObject<'a, 'py> for WhenArg {
    type Error = PyErr;
    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        if let Ok(text) = obj.extract::<String>() {
            return Ok(Self(text));
        }
        let datetime = obj.py().import("datetime")?;
        if obj.is_instance(&datetime.getattr("date")?)? {
            return Ok(Self(obj.call_method0("isoformat")?.extract()?));
        }
        Err(PyTypeError::new_err(format!(
            "a date is text (YYYY-MM-DD or RFC 3339), a datetime.date or a datetime.datetime, not {}",
            obj.get_type().name()?
        )))
    }
}

/// `near=`: `(lat, lon, km)`, handed on as the `LAT,LON,KM` text the library's one parser reads (Rust's
/// shortest round-trip formatting keeps every bit of each number).
pub struct NearArg(pub String);

impl<'a, 'py> FromPyObject<'a, 'py> for NearArg {
    type Error = PyErr;
    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        let (lat, lon, km): (f64, f64, f64) = obj.extract().map_err(|_| {
            PyTypeError::new_err("near is a (latitude, longitude, km) tuple of numbers")
        })?;
        Ok(Self(format!("{lat},{lon},{km}")))
    }
}

/// `text=` / `minus=` of a region search: one text or a list of them, each `TEXT` or `W:TEXT`.
pub struct TextsArg(pub Vec<String>);

impl<'a, 'py> FromPyObject<'a, 'py> for TextsArg {
    type Error = PyErr;
    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        if let Ok(one) = obj.extract::<String>() {
            return Ok(Self(vec![one]));
        }
        obj.extract::<Vec<String>>()
            .map(Self)
            .map_err(|_| PyTypeError::new_err("text and minus take a string or a list of strings"))
    }
}
