//! `index_photos`: an index run, as `regionseek index` runs it (same files, same resume, same report).

use std::path::PathBuf;
use std::sync::Arc;

use pyo3::exceptions::{PyKeyboardInterrupt, PyValueError};
use pyo3::prelude::*;

use regionseek::cancel::Cancel;
use regionseek::clip::ClipModel;
use regionseek::decode::{DecodeOptions, DEFAULT_MAX_PIXELS};
use regionseek::index::LockWait;
use regionseek::pipeline::bar::Bar;
use regionseek::pipeline::{
    default_pipeline, IndexJob, NeedsRegions, RegionSource, SamSetup, SharedReporter,
};

use crate::convert::{DeviceArg, ModelArg, ShardArg};
use crate::errors::{anyhow_error, runtime_error, RegionseekError};
use crate::interrupt::interruptible;

/// Where the regions come from: at most one of the files, or found in every photo by the pipeline.
fn region_source(
    coco: Option<PathBuf>,
    boxes: Option<PathBuf>,
    masks: Option<PathBuf>,
) -> PyResult<RegionSource> {
    match (coco, boxes, masks) {
        (Some(c), None, None) => Ok(RegionSource::Coco(c)),
        (None, Some(b), None) => Ok(RegionSource::Boxes(b)),
        (None, None, Some(m)) => Ok(RegionSource::MaskDir(m)),
        (None, None, None) => Ok(RegionSource::FindThem),
        _ => Err(PyValueError::new_err(
            "give at most one of coco=, boxes=, masks=",
        )),
    }
}

/// The run's failure in this front door's keywords where the fix is to pass another one.
fn job_error(e: anyhow::Error) -> PyErr {
    match e.downcast_ref::<NeedsRegions>() {
        Some(needs) => RegionseekError::new_err(format!(
            "pipeline {} takes its regions from coco=, boxes= or masks=; for a plain photo folder use \
             pipeline=\"auto-sam\" (with sam=DIR) or pipeline=\"auto-grid\"",
            needs.pipeline
        )),
        None => anyhow_error(e),
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
                    model = None, device = DeviceArg::cpu(), sam = None, limit = None, shard = None, progress = true,
                    wait = false, exif_rotate = false, max_pixels = None, keep_vanished = false))]
#[allow(clippy::too_many_arguments)]
pub fn index_photos<'py>(
    py: Python<'py>,
    images: PathBuf,
    out: PathBuf,
    coco: Option<PathBuf>,
    boxes: Option<PathBuf>,
    masks: Option<PathBuf>,
    pipeline: Option<String>,
    model: Option<ModelArg>,
    device: DeviceArg,
    sam: Option<PathBuf>,
    limit: Option<usize>,
    shard: Option<ShardArg>,
    progress: bool,
    wait: bool,
    exif_rotate: bool,
    max_pixels: Option<u64>,
    keep_vanished: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let regions = region_source(coco, boxes, masks)?;
    let pipeline =
        pipeline.unwrap_or_else(|| default_pipeline(&regions, sam.is_some()).to_string());
    // A spec is loaded only once the run holds the index's lock, as the CLI does: a run refused for a held
    // lock or bad inputs does not spend the load.
    let model =
        model.unwrap_or_else(|| ModelArg::Spec(regionseek::clip::DEFAULT_MODEL.to_string()));
    let device = device.0;
    let cancel = Cancel::default();
    let job = IndexJob {
        images,
        regions,
        pipeline,
        out,
        limit,
        shard: shard.map(|s| s.0),
        wait: LockWait::forever_if(wait),
        decode: DecodeOptions {
            max_pixels: max_pixels.unwrap_or(DEFAULT_MAX_PIXELS),
            exif_rotate,
        },
        sam: SamSetup {
            dir: sam,
            ..Default::default()
        },
        reporter: SharedReporter::new(Bar::new(progress)),
        cancel: cancel.clone(),
        keep_vanished,
    };
    let report = interruptible(py, &cancel, move || {
        job.run(|| match model {
            ModelArg::Loaded(clip) => Ok(clip),
            ModelArg::Spec(spec) => Ok(Arc::new(ClipModel::load_spec(&spec, &device)?)),
        })
    })?
    .map_err(job_error)?;
    if report.interrupted {
        return Err(PyKeyboardInterrupt::new_err(format!(
            "indexing interrupted: {} regions committed; rerun to resume",
            report.regions_added
        )));
    }
    // The report is a plain record of numbers and lists that grows with the CLI's; JSON keeps the two equal.
    let text = serde_json::to_string(&report).map_err(runtime_error)?;
    py.import("json")?.call_method1("loads", (text,))
}
