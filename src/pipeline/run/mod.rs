//! `regionseek index`: a pipeline run in three stages with their own types and channels — `decode_stage`
//! (photos hashed and decoded in parallel ahead of the model), `model_stage` (per photo the mask stage, then
//! one embedding pass for several photos' regions) and `commit_stage` (batches appended by a writer thread).
//! Rerunning skips what is indexed.

mod commit_stage;
mod decode_stage;
pub(crate) use decode_stage::load_photo;
mod embed;
mod fingerprint;
mod model_stage;
mod regions;
mod sync;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::clip::ClipModel;
use crate::decode::DecodeOptions;
use crate::index::{IndexSpec, IndexWriter, LockWait, RegionRecord, WriterLock};
use crate::invert::InversionConfig;
use crate::sam::{SamModel, SamOptions};

use super::inputs::{ImageInput, InputIssue};
use super::spec::PipelineSpec;

use commit_stage::commit_batches;
use decode_stage::{AlreadyIndexed, DecodeStage, Decoded};
use model_stage::ModelStage;

pub use embed::{embed_masks, embed_photos, method_info, PhotoEmbeddings};
pub use fingerprint::{weights_fingerprint, FINGERPRINT_CACHE};
pub use regions::{find_regions, grid_boxes, make_masks};
pub use sync::{sync_with_input, SyncPolicy, SyncReport};

/// One failed item of a run: the photo, the region (None for the whole photo), the stage, why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ItemFailure {
    pub image: String,
    pub region_id: Option<String>,
    pub stage: &'static str,
    pub error: String,
}

impl ItemFailure {
    /// An item of the input refused before any work (listed first in `errors.json`).
    pub(super) fn input(issue: &InputIssue) -> Self {
        Self {
            image: issue.item.clone(),
            region_id: None,
            stage: "input",
            error: issue.message.clone(),
        }
    }

    pub(super) fn photo(image: &str, stage: &'static str, error: String) -> Self {
        Self {
            image: image.to_string(),
            region_id: None,
            stage,
            error,
        }
    }
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct IndexRunReport {
    pub pipeline: String,
    pub images: usize,
    /// Photos whose regions were all in the index already.
    pub images_skipped: usize,
    /// Photos the input lists without any region (e.g. COCO photos with only crowd annotations).
    pub images_without_regions: usize,
    pub images_processed: usize,
    pub regions_added: usize,
    pub regions_already_indexed: usize,
    pub failures: usize,
    pub input_issues: usize,
    pub rows_total: usize,
    pub seconds: f64,
    pub images_per_second: f64,
    pub regions_per_second: f64,
    pub peak_rss_mb: Option<f64>,
    pub error_log: Option<PathBuf>,
    /// The run was cancelled: what was embedded until then is committed, a rerun resumes after it.
    pub interrupted: bool,
    /// Photos per image forward (MaskInversion's forward passes are batched over this many photos).
    pub forward_batch: usize,
    /// Share of the run's wall time the model stage spent embedding (forwards and inversions, results back
    /// on the host) rather than waiting for decoded photos or for the writer: near 1, the model is the
    /// bottleneck; well below, decoding or writing is.
    pub model_busy_fraction: f64,
    /// With `--device cuda`: the GPU's utilisation over the run from NVML (None where NVML is missing).
    pub gpu_utilisation: Option<crate::device::GpuUtilisation>,
    /// The model's weights are random (`random:ARCH`): scores and hits mean nothing, for trials only.
    pub random_model: bool,
    /// What the folder scan passed over without it being a failure (plain folders only).
    pub skipped: super::inputs::SkippedFiles,
    /// What the run changed to bring the index in line with its input (photos deleted, edited, moved).
    pub sync: SyncReport,
    /// The library pipeline's tiers (None for the other pipelines).
    pub tiers: Option<super::library::TierReport>,
}

impl IndexRunReport {
    /// The run's wall time and the rates, memory and model share that follow from it and the counts.
    pub(super) fn finish_timing(&mut self, started: Instant, embed_seconds: f64) {
        self.seconds = started.elapsed().as_secs_f64();
        let seconds = self.seconds.max(1e-9);
        self.images_per_second = self.images_processed as f64 / seconds;
        self.regions_per_second = self.regions_added as f64 / seconds;
        self.peak_rss_mb = peak_rss_mb();
        self.model_busy_fraction = embed_seconds / seconds;
    }
}

pub struct IndexRun<'a> {
    pub spec: &'a PipelineSpec,
    pub model: &'a ClipModel,
    pub sam: Option<SamModel>,
    pub out: PathBuf,
    /// Told how far the run has come (a bar in the CLI; [`super::Quiet`] by default).
    pub reporter: super::SharedReporter,
    /// What to do when another process is writing the same index.
    pub wait: LockWait,
    /// The index's writer lock, when the caller took it before loading models; else taken per `wait`.
    pub lock: Option<WriterLock>,
    pub decode: DecodeOptions,
    /// Set from elsewhere to stop after the photo being embedded (committed, resumable).
    pub cancel: crate::cancel::Cancel,
    /// What the run may delete of what its input no longer holds.
    pub sync: SyncPolicy,
    /// What the folder scan passed over (reported as it is).
    pub skipped: super::inputs::SkippedFiles,
}

pub(super) fn frame_conflict(indexed_upright: bool) -> String {
    if indexed_upright {
        "this photo's regions are already indexed turned upright by its EXIF orientation (--exif-rotate); \
         rerun with --exif-rotate, or index into another --out"
            .into()
    } else {
        "this photo's regions are already indexed in its stored frame (without --exif-rotate); rerun without \
         --exif-rotate, or index into another --out"
            .into()
    }
}

/// A box as stored and exported: inside the photo (a prompt may overhang it; the region cannot).
pub fn clip_box(b: [f32; 4], width: u32, height: u32) -> [f32; 4] {
    let (w, h) = (width as f32, height as f32);
    let c = |v: f32, hi: f32| if v.is_finite() { v.clamp(0.0, hi) } else { 0.0 };
    [c(b[0], w), c(b[1], h), c(b[2], w), c(b[3], h)]
}

/// A photo's content hash. Remembered for the process by path, size and modification time: a run hashes its
/// photos once to bring the index in line with the folder and again as it decodes them, and reading a large
/// library twice would double the cost of a rerun that has nothing to embed.
pub(super) fn file_hash(path: &Path) -> Result<String, String> {
    type Stamp = (u64, std::time::SystemTime);
    static KNOWN: std::sync::OnceLock<std::sync::Mutex<HashMap<PathBuf, (Stamp, String)>>> =
        std::sync::OnceLock::new();
    let stamp = std::fs::metadata(path)
        .ok()
        .and_then(|m| Some((m.len(), m.modified().ok()?)));
    let known = KNOWN.get_or_init(Default::default);
    if let Some(stamp) = stamp {
        let cached = known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(path)
            .cloned();
        if let Some((seen, hash)) = cached {
            if seen == stamp {
                return Ok(hash);
            }
        }
    }
    let hash =
        crate::clip::manifest::sha256_file(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if let Some(stamp) = stamp {
        known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(path.to_path_buf(), (stamp, hash.clone()));
    }
    Ok(hash)
}

fn peak_rss_mb() -> Option<f64> {
    crate::device::process_memory_kib("VmHWM:").map(|kib| kib as f64 / 1024.0)
}

impl IndexRun<'_> {
    /// Opens (or creates) the index for this model, with the lock taken earlier if any; also the weights'
    /// fingerprint recorded with every row.
    pub(super) fn open_index(&mut self) -> anyhow::Result<(IndexWriter, String)> {
        let weights_hash = weights_fingerprint(self.model.dir.as_deref(), &self.model.id());
        let spec = IndexSpec {
            dim: self.model.config.embed_dim,
            model_id: self.model.id(),
            weights_hash: weights_hash.clone(),
            hnsw: Default::default(),
        };
        let index = match self.lock.take() {
            Some(lock) => IndexWriter::open_or_create_holding(&self.out, &spec, lock)?,
            None => IndexWriter::open_or_create(&self.out, &spec, self.wait)?,
        };
        Ok((index, weights_hash))
    }

    /// Writes `errors.json`: every failed item of the run, input issues first.
    pub(super) fn write_error_log(&self, failures: &mut [ItemFailure]) -> anyhow::Result<PathBuf> {
        for f in failures.iter_mut() {
            f.error = f.error.trim().to_string();
        }
        let log = self.out.join("errors.json");
        let body = serde_json::to_vec_pretty(
            &serde_json::json!({"pipeline": self.spec.name, "failures": failures}),
        )?;
        crate::pipeline::write_atomic(&log, &body)?;
        Ok(log)
    }

    /// Runs the pipeline over the photos in three stages, so that the model never waits on the disk or the
    /// graph: decode (CPU threads, ahead through a bounded queue), model (this thread: masks and
    /// embeddings), commit (a writer thread appending batches while the next photos are embedded).
    pub fn run(
        mut self,
        images: Vec<ImageInput>,
        issues: Vec<InputIssue>,
    ) -> anyhow::Result<IndexRunReport> {
        if self.spec.mask_stage() == super::spec::MaskStage::Propose {
            return super::library::run(self, images, issues);
        }
        let started = Instant::now();
        let utilisation = crate::device::UtilisationSampler::start(&self.model.device);
        let cfg = InversionConfig {
            cancel: self.cancel.clone(),
            ..self.spec.inversion_config()
        };
        let (mut index, weights_hash) = self.open_index()?;
        let synced = sync_with_input(&mut index, &images, self.sync)?;
        let method = method_info(self.model, &weights_hash, self.spec.embed_stage(), &cfg);
        let mut report = IndexRunReport {
            pipeline: self.spec.name.clone(),
            images: images.len(),
            input_issues: issues.len(),
            forward_batch: self.spec.forward_batch(&self.model.device).max(1),
            sync: synced,
            ..Default::default()
        };
        self.reporter.phase("photos", images.len() as u64);
        let batch = self.spec.batch_images().max(1);
        let decoder = DecodeStage {
            already: AlreadyIndexed::of(&index, &method.name),
            finds_regions: self.spec.mask_stage().finds_regions(),
            decode: self.decode,
            batch,
            cancel: &self.cancel,
        };
        let mut model_stage = ModelStage {
            model: self.model,
            sam: self.sam.as_mut(),
            spec: self.spec,
            mask_stage: self.spec.mask_stage(),
            embed_stage: self.spec.embed_stage(),
            sam_options: SamOptions {
                multimask: self.spec.sam.as_ref().is_some_and(|s| s.multimask),
            },
            cfg: &cfg,
            method: &method,
            exif_rotated: self.decode.exif_rotate,
            cancel: &self.cancel,
            reporter: self.reporter.clone(),
            forward_batch: report.forward_batch,
            commit_every: batch,
            total_regions: images.iter().map(|i| i.regions.len()).sum(),
        };
        let (outcome, committed) = std::thread::scope(|scope| {
            let (photo_tx, photo_rx) = std::sync::mpsc::sync_channel::<Decoded>(2 * batch);
            let (records_tx, records_rx) = std::sync::mpsc::sync_channel::<Vec<RegionRecord>>(2);
            let feeder = scope.spawn(move || decoder.run(images, photo_tx));
            let committer = scope.spawn(move || commit_batches(index, records_rx));
            let mut outcome = model_stage.run(photo_rx, &records_tx);
            drop(records_tx);
            // Photos the decoder never handed over are left for the rerun, like those the model stage left.
            if !feeder.join().unwrap_or(false) {
                outcome.interrupted = true;
            }
            let committed = committer
                .join()
                .map_err(|_| anyhow::anyhow!("the index writer thread panicked"));
            (outcome, committed)
        });
        let (mut index, committed) = committed??;
        index.save_graph()?;
        self.reporter.finish();
        let mut failures: Vec<ItemFailure> = issues.iter().map(ItemFailure::input).collect();
        failures.extend(outcome.failures);
        report.images_processed = outcome.images_processed;
        report.images_skipped = outcome.images_skipped;
        report.images_without_regions = outcome.images_without_regions;
        report.regions_already_indexed = outcome.regions_already_indexed + committed.duplicates;
        report.regions_added = committed.added;
        report.interrupted = outcome.interrupted;
        report.failures = failures.len() - issues.len();
        report.rows_total = index.len();
        report.finish_timing(started, outcome.embed_seconds);
        report.gpu_utilisation = utilisation.and_then(|u| u.finish());
        report.random_model = self.model.is_random();
        report.skipped = self.skipped;
        report.error_log = Some(self.write_error_log(&mut failures)?);
        Ok(report)
    }
}
