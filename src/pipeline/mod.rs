//! The product's pipeline: inputs (COCO, boxes, mask PNGs) → masks (given, SAM, box) → embeddings
//! (MaskInversion or a baseline) → the region index; and the queries against it (search, classify, eval).
//! Specs live in `pipelines/*.toml`.

#[cfg(feature = "progress-bar")]
pub mod bar;
pub mod inputs;
pub mod job;
pub mod library;
pub mod photo_meta;
pub mod photo_path;
pub mod propose;
pub mod query;
pub mod region_query;
pub mod render;
pub mod report;
pub mod run;
pub mod spec;

pub use inputs::{
    from_boxes, from_coco, from_mask_dir, from_photo_folder, scan_photo_folder, ImageInput,
    InputIssue, RegionInput, RegionShape, SkippedFiles,
};
pub use job::{default_pipeline, IndexJob, JobError, NeedsRegions, RegionSource, SamSetup, Shard};
pub use report::{Quiet, Reporter, SharedReporter};
pub use run::{IndexRun, IndexRunReport, ItemFailure};
pub use spec::{EmbedStage, MaskStage, PipelineSpec, SpecError, Stage};

/// Writes a file so that it is either absent or complete (one implementation for every file regionseek
/// writes: the index crate's).
pub use crate::index::write_atomic;
