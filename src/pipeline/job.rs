//! An index run as its front doors ask for it (the CLI's `index`, the Python binding's `index_photos`):
//! a pipeline by name, photos and where their regions come from, an output folder. Everything between the
//! request and [`IndexRun`] lives here once.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;

use crate::cancel::Cancel;
use crate::clip::ClipModel;
use crate::decode::DecodeOptions;
use crate::index::{LockWait, WriterLock};
use crate::sam::{SamDevice, SamModel};

use super::inputs::{from_boxes, from_coco, from_mask_dir, from_photo_folder};
use super::run::{IndexRun, IndexRunReport};
use super::spec::PipelineSpec;

/// Where the regions of an index run come from.
#[derive(Debug, Clone)]
pub enum RegionSource {
    /// A COCO instances JSON: its annotations (polygons/RLE, boxes, categories).
    Coco(PathBuf),
    /// `[{"image", "box", "id", "label"}, ...]`.
    Boxes(PathBuf),
    /// Mask PNGs named `<image stem>_<region id>.png`.
    MaskDir(PathBuf),
    /// None given: every photo under the folder, for pipelines that find regions themselves.
    FindThem,
}

/// A pipeline that embeds given regions was given none. Front doors say it in their own words (flags, keyword
/// arguments); this is the fallback.
#[derive(Debug, thiserror::Error)]
#[error(
    "pipeline {pipeline} takes its regions from a COCO file, a boxes file or a mask folder; for a plain photo \
     folder use the auto-sam pipeline (with a SAM model) or auto-grid"
)]
pub struct NeedsRegions {
    pub pipeline: String,
}

/// The SAM model a pipeline with a SAM stage loads.
#[derive(Debug, Clone)]
pub struct SamSetup {
    /// encoder.onnx + decoder.onnx.
    pub dir: Option<PathBuf>,
    pub device: SamDevice,
    /// ONNX Runtime threads.
    pub threads: usize,
}

impl Default for SamSetup {
    fn default() -> Self {
        Self {
            dir: None,
            device: SamDevice::Cpu,
            threads: 2,
        }
    }
}

#[derive(Debug, Clone)]
pub struct IndexJob {
    /// The folder the photos' paths are relative to.
    pub images: PathBuf,
    pub regions: RegionSource,
    /// A pipeline name (pipelines/NAME.toml) or a spec file's path.
    pub pipeline: String,
    /// The index folder: created if absent, resumed if not.
    pub out: PathBuf,
    /// Only the first N photos of the input.
    pub limit: Option<usize>,
    pub wait: LockWait,
    pub decode: DecodeOptions,
    pub sam: SamSetup,
    /// Draw a progress bar on stderr.
    pub progress: bool,
    pub cancel: Cancel,
}

impl IndexJob {
    /// Takes the index's writer lock before loading any model (a second writer hears at once that the index
    /// is busy), reads the inputs, loads SAM where the pipeline needs it and the CLIP model by `load_model`,
    /// and runs. Unreadable inputs are reported on stderr and in the run's error log; the run goes on.
    pub fn run(
        self,
        load_model: impl FnOnce() -> anyhow::Result<Arc<ClipModel>>,
    ) -> anyhow::Result<IndexRunReport> {
        let spec = PipelineSpec::load(&self.pipeline)?;
        let lock = WriterLock::acquire(&self.out, self.wait)?;
        let (mut images, issues) = match &self.regions {
            RegionSource::Coco(c) => from_coco(&self.images, c)?,
            RegionSource::Boxes(b) => from_boxes(&self.images, b)?,
            RegionSource::MaskDir(m) => from_mask_dir(&self.images, m)?,
            RegionSource::FindThem if spec.mask_stage().finds_regions() => {
                from_photo_folder(&self.images)?
            }
            RegionSource::FindThem => {
                return Err(NeedsRegions {
                    pipeline: spec.name.clone(),
                }
                .into())
            }
        };
        if let Some(n) = self.limit {
            images.truncate(n);
        }
        for i in &issues {
            eprintln!("skipped {}: {}", i.item, i.message);
        }
        let sam = if spec.mask_stage().needs_sam() {
            let dir = self.sam.dir.as_ref().with_context(|| {
                format!(
                    "pipeline {} needs a SAM model: a folder with encoder.onnx + decoder.onnx",
                    spec.name
                )
            })?;
            Some(SamModel::load_dir(dir, self.sam.device, self.sam.threads)?)
        } else {
            None
        };
        let model = load_model()?;
        IndexRun {
            spec: &spec,
            model: &model,
            sam,
            out: self.out.clone(),
            progress: self.progress,
            wait: self.wait,
            lock: Some(lock),
            decode: self.decode,
            cancel: self.cancel,
        }
        .run(images, issues)
    }
}
