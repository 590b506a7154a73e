//! Benchmark support (bench/python_overhead.py): what the binding adds to an inversion, measured against the
//! library's own time for the same work.

use pyo3::prelude::*;

use regionseek::invert::{invert_image, GradChoice, InversionConfig};

use crate::convert::{GradArg, ImageLike, Masks};
use crate::errors::runtime_error;
use crate::model::Model;

/// Converts the inputs once, then times `repeats` calls of the library's `invert_image` inside Rust, as the
/// CLI makes it. Returns the seconds of each call.
#[pyfunction]
#[pyo3(signature = (model, image, masks, size = regionseek::invert::DEFAULT_SIZE, steps = regionseek::invert::DEFAULT_STEPS, grad = GradArg(GradChoice::Auto), repeats = 5))]
#[allow(clippy::too_many_arguments)]
pub fn _bench_invert(
    py: Python<'_>,
    model: &Bound<'_, Model>,
    image: ImageLike,
    masks: Masks,
    size: usize,
    steps: usize,
    grad: GradArg,
    repeats: usize,
) -> PyResult<Vec<f64>> {
    let cfg = InversionConfig {
        size,
        steps,
        grad: grad.0,
        ..Default::default()
    };
    let image = image.0;
    let masks = masks.fitted_to(&image)?;
    let model = model.get().clip();
    py.detach(|| {
        (0..repeats)
            .map(|_| {
                let started = std::time::Instant::now();
                invert_image(&model, &image, &masks, &cfg).map(|_| started.elapsed().as_secs_f64())
            })
            .collect::<Result<Vec<_>, _>>()
    })
    .map_err(runtime_error)
}
