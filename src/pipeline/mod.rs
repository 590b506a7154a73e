//! The product's pipeline: inputs (COCO, boxes, mask PNGs) → masks (given, SAM, box) → embeddings
//! (MaskInversion or a baseline) → the region index; and the queries against it (search, classify, eval).
//! Specs live in `pipelines/*.toml`.

pub mod inputs;
pub mod job;
pub mod library;
pub mod photo_path;
pub mod propose;
pub mod query;
#[cfg(feature = "progress-bar")]
pub mod bar;
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

/// Writes a file so that it is either absent or complete: temp file beside it, fsync, rename. Errors name
/// the file.
pub fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_inner(path, bytes)
        .map_err(|e| std::io::Error::new(e.kind(), format!("writing {}: {e}", path.display())))
}

fn write_atomic_inner(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("out");
    let tmp = dir.join(format!(".{name}.{}.part", std::process::id()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
