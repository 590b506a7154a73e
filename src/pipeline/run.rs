//! `regionseek index`: photos hashed and decoded in parallel ahead of the model, then per photo the mask
//! stage and one embedding pass for all its regions, appended to the index in committed batches by a
//! writer thread. Rerunning skips what is indexed.

use std::path::{Path, PathBuf};
use std::time::Instant;

use image::RgbImage;
use rayon::prelude::*;
use sha2::{Digest, Sha256};

use crate::baselines;
use crate::clip::ClipModel;
use crate::decode::DecodeOptions;
use crate::index::{
    IndexSpec, IndexWriter, LockWait, MethodInfo, RegionMeta, RegionRecord, WriterLock,
};
use crate::invert::{invert_images, validate_mask, InversionConfig};
use crate::masks::{BinaryMask, Rle};
use crate::sam::{box_mask, SamModel, SamOptions};

use super::inputs::{given_mask, ImageInput, InputIssue, RegionInput};
use super::spec::{EmbedStage, MaskStage, PipelineSpec};

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

/// The identity of a model's weights recorded in the index: the id for built-in random models, the sha256
/// of the tensor file for real ones.
/// The per-file digests of a weights folder, kept beside the weights so that opening a model does not
/// hash gigabytes each time; an entry is reused only while its file's size and modification time match.
pub const FINGERPRINT_CACHE: &str = ".regionseek-fingerprint.json";

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct FileDigest {
    name: String,
    bytes: u64,
    modified_ns: u128,
    sha256: String,
}

fn file_stamp(path: &Path) -> Option<(u64, u128)> {
    let m = std::fs::metadata(path).ok()?;
    let modified = m
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    Some((m.len(), modified.as_nanos()))
}

/// What identifies a model's weights in an index manifest: a digest over the sha256 of every
/// `.safetensors` file of its folder (the id itself for built-in random models).
pub fn weights_fingerprint(dir: Option<&Path>, id: &str) -> String {
    let Some(dir) = dir else {
        return id.to_string();
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "safetensors"));
    files.sort();
    let cache_path = dir.join(FINGERPRINT_CACHE);
    let cached: Vec<FileDigest> = std::fs::read(&cache_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let mut digests = Vec::with_capacity(files.len());
    let mut h = Sha256::new();
    for f in &files {
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let stamp = file_stamp(f);
        let reuse = stamp.and_then(|(bytes, modified_ns)| {
            cached
                .iter()
                .find(|c| c.name == name && c.bytes == bytes && c.modified_ns == modified_ns)
        });
        let sha = match reuse {
            Some(c) => Some(c.sha256.clone()),
            None => {
                tracing::info!(
                    "hashing {} (once; the digest is kept in {FINGERPRINT_CACHE})",
                    f.display()
                );
                crate::clip::manifest::sha256_file(f).ok()
            }
        };
        match (sha, stamp) {
            (Some(sha), Some((bytes, modified_ns))) => {
                h.update(sha.as_bytes());
                digests.push(FileDigest {
                    name,
                    bytes,
                    modified_ns,
                    sha256: sha,
                });
            }
            (Some(sha), None) => h.update(sha.as_bytes()),
            (None, _) => h.update(f.display().to_string().as_bytes()),
        }
    }
    if digests != cached {
        // A read-only weights folder only costs the hashing again next time.
        if let Err(e) = serde_json::to_vec_pretty(&digests)
            .map_err(std::io::Error::other)
            .and_then(|b| super::write_atomic(&cache_path, &b))
        {
            tracing::debug!("not caching the weights digests: {e}");
        }
    }
    format!("{:x}", h.finalize())
}

pub fn method_info(
    model: &ClipModel,
    weights_hash: &str,
    stage: EmbedStage,
    cfg: &InversionConfig,
) -> MethodInfo {
    let inverted = stage == EmbedStage::Invert;
    MethodInfo {
        name: stage.name().to_string(),
        steps: inverted.then_some(cfg.steps as u32),
        lr: inverted.then_some(cfg.lr as f32),
        alpha: inverted.then_some(cfg.alpha as f32),
        resolution: Some(if inverted {
            cfg.size
        } else {
            model.config.vision.image_size
        } as u32),
        model_id: model.id(),
        weights_hash: weights_hash.to_string(),
    }
}

/// Per photo, its masks' embeddings or why the photo failed; per mask, its embedding or why not.
pub type PhotoEmbeddings = Result<Vec<Result<Vec<f32>, String>>, String>;

/// Embeddings of masks of one photo with the chosen method; each mask succeeds or fails on its own.
pub fn embed_masks(
    model: &ClipModel,
    image: &RgbImage,
    masks: &[BinaryMask],
    stage: EmbedStage,
    cfg: &InversionConfig,
) -> PhotoEmbeddings {
    embed_photos(model, &[(image, masks)], stage, cfg)
        .pop()
        .expect("one photo in, one result out")
}

/// As [`embed_masks`] for several photos; MaskInversion batches their image forwards into one.
pub fn embed_photos(
    model: &ClipModel,
    photos: &[(&RgbImage, &[BinaryMask])],
    stage: EmbedStage,
    cfg: &InversionConfig,
) -> Vec<PhotoEmbeddings> {
    match stage {
        EmbedStage::Invert => match invert_images(model, photos, cfg) {
            Ok(outputs) => outputs
                .into_iter()
                .map(|r| {
                    r.map(|out| {
                        out.masks
                            .into_iter()
                            .map(|m| m.map(|r| r.embedding))
                            .collect()
                    })
                    .map_err(|e| e.to_string())
                })
                .collect(),
            Err(e) => vec![Err(e.to_string()); photos.len()],
        },
        EmbedStage::Baseline(b) => photos
            .iter()
            .map(|(image, masks)| embed_baseline(model, image, masks, b))
            .collect(),
    }
}

fn embed_baseline(
    model: &ClipModel,
    image: &RgbImage,
    masks: &[BinaryMask],
    baseline: baselines::Baseline,
) -> PhotoEmbeddings {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let checks: Vec<Result<(), String>> = masks.iter().map(|m| validate_mask(m, w, h)).collect();
    let valid: Vec<BinaryMask> = masks
        .iter()
        .zip(&checks)
        .filter(|(_, c)| c.is_ok())
        .map(|(m, _)| m.clone())
        .collect();
    let mut embs = if valid.is_empty() {
        Vec::new()
    } else {
        baselines::embed_regions(model, image, &valid, baseline).map_err(|e| e.to_string())?
    }
    .into_iter();
    Ok(checks
        .into_iter()
        .map(|c| c.map(|_| embs.next().expect("one embedding per valid mask")))
        .collect())
}

/// The masks of one photo's regions from the spec's mask stage (per region: the mask or why not).
pub fn make_masks(
    image: &RgbImage,
    regions: &[RegionInput],
    stage: MaskStage,
    sam: Option<&mut SamModel>,
    sam_options: SamOptions,
) -> Vec<Result<BinaryMask, String>> {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let need_box = |r: &RegionInput| r.bbox.ok_or_else(|| "region has no box".to_string());
    match stage {
        MaskStage::Given => regions.iter().map(|r| given_mask(r, w, h)).collect(),
        MaskStage::Box => regions
            .iter()
            .map(|r| need_box(r).and_then(|b| box_mask(b, w, h).map_err(|e| e.to_string())))
            .collect(),
        MaskStage::AutoSam | MaskStage::AutoGrid | MaskStage::Propose => regions
            .iter()
            .map(|_| Err("this mask stage finds its own regions (find_regions)".to_string()))
            .collect(),
        MaskStage::Sam => {
            let Some(sam) = sam else {
                return regions
                    .iter()
                    .map(|_| Err("no SAM model loaded (--sam DIR)".to_string()))
                    .collect();
            };
            let embedding = match sam.embed(image) {
                Ok(e) => e,
                Err(e) => return regions.iter().map(|_| Err(e.to_string())).collect(),
            };
            regions
                .iter()
                .map(|r| {
                    need_box(r).and_then(|b| {
                        sam.predict_box(&embedding, b, sam_options)
                            .map(|m| m.mask)
                            .map_err(|e| e.to_string())
                    })
                })
                .collect()
        }
    }
}

/// The regions a photo's own content gives (`auto-sam`, `auto-grid`): ids stable for the same photo, model
/// and parameters (the mask's rank in the generator's order, or the box's geometry), with their masks.
pub fn find_regions(
    image: &RgbImage,
    stage: MaskStage,
    sam: Option<&mut SamModel>,
    spec: &PipelineSpec,
) -> Result<(Vec<RegionInput>, Vec<Result<BinaryMask, String>>), String> {
    let (w, h) = (image.width() as usize, image.height() as usize);
    match stage {
        MaskStage::AutoSam => {
            let sam = sam.ok_or("no SAM model loaded (--sam DIR)")?;
            let params = spec.auto_sam.unwrap_or_default();
            let (found, _) =
                crate::sam::auto::generate(sam, image, &params).map_err(|e| e.to_string())?;
            Ok(found
                .into_iter()
                .enumerate()
                .map(|(i, m)| {
                    let [x, y, bw, bh] = m.bbox_xywh;
                    let region = RegionInput {
                        id: format!("auto-{i:04}"),
                        // The reference's inclusive pixel box, as an [x0, y0, x1, y1] edge box.
                        bbox: Some([x as f32, y as f32, (x + bw + 1) as f32, (y + bh + 1) as f32]),
                        shape: super::inputs::RegionShape::Box,
                        label: None,
                    };
                    (region, Ok(m.rle.decode()))
                })
                .unzip())
        }
        MaskStage::AutoGrid => {
            let params = spec.auto_grid.clone().unwrap_or_default();
            Ok(grid_boxes(w, h, &params)
                .into_iter()
                .map(|b| {
                    let bbox = b.map(|v| v as f32);
                    let region = RegionInput {
                        id: format!("grid-{}x{}+{}+{}", b[2] - b[0], b[3] - b[1], b[0], b[1]),
                        bbox: Some(bbox),
                        shape: super::inputs::RegionShape::Box,
                        label: None,
                    };
                    (region, box_mask(bbox, w, h).map_err(|e| e.to_string()))
                })
                .unzip())
        }
        other => Err(format!("mask stage {other:?} needs regions from the input")),
    }
}

/// Sliding boxes `[x0, y0, x1, y1]` per scale (side = scale × shorter side), the last row and column flush
/// with the photo's edges; a box repeated across scales appears once.
pub fn grid_boxes(
    width: usize,
    height: usize,
    params: &super::spec::AutoGridParams,
) -> Vec<[usize; 4]> {
    let mut out: Vec<[usize; 4]> = Vec::new();
    let short = width.min(height);
    if short == 0 {
        return out;
    }
    for &scale in &params.scales {
        let side = ((scale * short as f64).round() as usize).clamp(1, short);
        let stride = ((side as f64 * (1.0 - params.overlap)).round() as usize).max(1);
        let starts = |len: usize| -> Vec<usize> {
            let mut v: Vec<usize> = (0..)
                .map(|i| i * stride)
                .take_while(|&s| s + side <= len)
                .collect();
            if v.last().is_none_or(|&last| last + side < len) {
                v.push(len - side);
            }
            v
        };
        for y in starts(height) {
            for x in starts(width) {
                let b = [x, y, x + side, y + side];
                if !out.contains(&b) {
                    out.push(b);
                }
            }
        }
    }
    out
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
    /// What the folder scan passed over (reported as it is).
    pub skipped: super::inputs::SkippedFiles,
}

/// A photo whose masks are made, waiting for its embedding pass.
struct Ready {
    name: String,
    hash: String,
    image: RgbImage,
    regions: Vec<RegionInput>,
    masks: Vec<BinaryMask>,
}

/// Where embedded photos become rows (and failed regions, failures).
struct RecordSink<'a> {
    model: &'a ClipModel,
    stage: EmbedStage,
    cfg: &'a InversionConfig,
    cancel: &'a crate::cancel::Cancel,
    source: &'a str,
    method: &'a MethodInfo,
    exif_rotated: bool,
    records: Vec<RegionRecord>,
    failures: Vec<ItemFailure>,
    /// Photos whose embedding the cancel flag cut short (left for the rerun).
    unfinished: usize,
    /// Wall time spent in the model.
    embed_seconds: f64,
}

/// Embeds the ready photos — MaskInversion's forward passes batched into one — into rows. False when the
/// run was cancelled meanwhile: those photos are left for the rerun.
fn embed_ready(ready: &mut Vec<Ready>, sink: &mut RecordSink) -> bool {
    if ready.is_empty() {
        return true;
    }
    let photos: Vec<Ready> = std::mem::take(ready);
    let pairs: Vec<(&RgbImage, &[BinaryMask])> = photos
        .iter()
        .map(|p| (&p.image, p.masks.as_slice()))
        .collect();
    let t = Instant::now();
    let outcomes = embed_photos(sink.model, &pairs, sink.stage, sink.cfg);
    sink.embed_seconds += t.elapsed().as_secs_f64();
    drop(pairs);
    if sink.cancel.is_cancelled() && outcomes.iter().any(|o| o.is_err()) {
        // Cut short, not wrong: the photos are left for the rerun (the ones that finished are kept).
        for (p, o) in photos.iter().zip(&outcomes) {
            if o.is_err() {
                sink.unfinished += 1;
                tracing::debug!("{}: interrupted, left for the rerun", p.name);
            }
        }
        for (p, o) in photos.into_iter().zip(outcomes) {
            if let Ok(embeddings) = o {
                sink.push(p, embeddings);
            }
        }
        return false;
    }
    for (p, o) in photos.into_iter().zip(outcomes) {
        match o {
            Ok(embeddings) => sink.push(p, embeddings),
            Err(e) => {
                for r in &p.regions {
                    sink.failures.push(ItemFailure {
                        image: p.name.clone(),
                        region_id: Some(r.id.clone()),
                        stage: "embed",
                        error: e.clone(),
                    });
                }
            }
        }
    }
    true
}

impl RecordSink<'_> {
    fn push(&mut self, p: Ready, embeddings: Vec<Result<Vec<f32>, String>>) {
        let created_at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        for ((r, mask), emb) in p.regions.iter().zip(&p.masks).zip(embeddings) {
            match emb {
                Ok(embedding) => {
                    let bbox = clip_box(
                        r.bbox.unwrap_or_else(|| {
                            mask.bbox()
                                .map(|b| [b[0] as f32, b[1] as f32, b[2] as f32, b[3] as f32])
                                .unwrap_or([0.0; 4])
                        }),
                        p.image.width(),
                        p.image.height(),
                    );
                    self.records.push(RegionRecord {
                        meta: RegionMeta {
                            image: p.name.clone(),
                            image_hash: p.hash.clone(),
                            region_id: r.id.clone(),
                            bbox,
                            mask: Rle::encode(mask).to_coco(),
                            source: self.source.to_string(),
                            method: self.method.clone(),
                            label: r.label.clone(),
                            created_at_ms,
                            exif_rotated: self.exif_rotated,
                        },
                        embedding,
                    });
                }
                Err(e) => self.failures.push(ItemFailure {
                    image: p.name.clone(),
                    region_id: Some(r.id.clone()),
                    stage: "embed",
                    error: e,
                }),
            }
        }
    }
}

/// Hashes a batch of photos and decodes, in parallel, those with something left to do.
fn stage_and_decode(
    chunk: Vec<ImageInput>,
    index: &std::sync::Mutex<IndexWriter>,
    method_name: &str,
    finds_regions: bool,
    decode: &DecodeOptions,
) -> Vec<Decoded> {
    let rotate = decode.exif_rotate;
    let hashed: Vec<(ImageInput, Result<String, (&'static str, String)>)> = chunk
        .into_par_iter()
        .map(|input| {
            let hash = file_hash(&input.path).map_err(|e| ("decode", e));
            (input, hash)
        })
        .collect();
    // One short hold of the index for the whole batch's lookups (the writer holds it while appending).
    let staged: Vec<(
        ImageInput,
        Result<String, (&'static str, String)>,
        Vec<RegionInput>,
        bool,
    )> = {
        let index = index.lock().unwrap_or_else(|e| e.into_inner());
        hashed
            .into_iter()
            .map(|(input, hash)| {
                // A photo's regions all share one frame: a rerun in the other one would add boxes and masks
                // that do not line up with the ones already indexed.
                let hash = hash.and_then(|h| match index.image_frame(&h, method_name) {
                    Some(frame) if frame != rotate => Err(("frame", frame_conflict(frame))),
                    _ => Ok(h),
                });
                let todo: Vec<RegionInput> = match &hash {
                    Ok(h) => input
                        .regions
                        .iter()
                        .filter(|r| !index.contains(h, &r.id, method_name))
                        .cloned()
                        .collect(),
                    Err(_) => Vec::new(),
                };
                // A photo whose regions the mask stage finds is done once any of them is indexed: its
                // regions are committed together.
                let needed = match &hash {
                    Ok(h) if finds_regions => !index.has_image(h, method_name),
                    Ok(_) => !todo.is_empty(),
                    Err(_) => false,
                };
                (input, hash, todo, needed)
            })
            .collect()
    };
    staged
        .into_par_iter()
        .map(|(input, hash, todo, needed)| {
            let image = needed.then(|| {
                crate::decode::load_rgb_with(&input.path, decode).map_err(|e| e.to_string())
            });
            Decoded {
                input,
                hash,
                image,
                todo,
            }
        })
        .collect()
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

struct Decoded {
    input: ImageInput,
    /// The content hash, or why the photo fails before decoding (stage, message).
    hash: Result<String, (&'static str, String)>,
    /// None when every region of the photo is indexed already.
    image: Option<Result<RgbImage, String>>,
    todo: Vec<RegionInput>,
}

/// A box as stored and exported: inside the photo (a prompt may overhang it; the region cannot).
pub fn clip_box(b: [f32; 4], width: u32, height: u32) -> [f32; 4] {
    let (w, h) = (width as f32, height as f32);
    let c = |v: f32, hi: f32| if v.is_finite() { v.clamp(0.0, hi) } else { 0.0 };
    [c(b[0], w), c(b[1], h), c(b[2], w), c(b[3], h)]
}

pub(super) fn file_hash(path: &Path) -> Result<String, String> {
    crate::clip::manifest::sha256_file(path).map_err(|e| format!("{}: {e}", path.display()))
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
        let embed_stage = self.spec.embed_stage();
        let mask_stage = self.spec.mask_stage();
        let sam_options = SamOptions {
            multimask: self.spec.sam.as_ref().is_some_and(|s| s.multimask),
        };
        let (index, weights_hash) = self.open_index()?;
        let method = method_info(self.model, &weights_hash, embed_stage, &cfg);
        let source = mask_stage.source();
        let mut report = IndexRunReport {
            pipeline: self.spec.name.clone(),
            images: images.len(),
            input_issues: issues.len(),
            ..Default::default()
        };
        let mut failures: Vec<ItemFailure> = issues.iter().map(ItemFailure::input).collect();
        let total_regions: usize = images.iter().map(|i| i.regions.len()).sum();
        let reporter = self.reporter.clone();
        reporter.phase("photos", images.len() as u64);
        let batch = self.spec.batch_images().max(1);
        let finds_regions = mask_stage.finds_regions();
        let decode = self.decode;
        let index = std::sync::Mutex::new(index);
        let added = std::sync::atomic::AtomicUsize::new(0);
        let duplicates = std::sync::atomic::AtomicUsize::new(0);
        // Three stages so that the model never waits on the disk or the graph: CPU threads hash and decode
        // photos ahead through a bounded queue, this thread runs the mask stage and the model, and a writer
        // thread appends (HNSW inserts, Parquet commit) while the next photos are embedded.
        let mut embed_seconds = 0.0;
        let appended: anyhow::Result<()> = std::thread::scope(|scope| {
            let (photo_tx, photo_rx) = std::sync::mpsc::sync_channel::<Decoded>(2 * batch);
            let (records_tx, records_rx) = std::sync::mpsc::sync_channel::<Vec<RegionRecord>>(2);
            let (index, method, cancel) = (&index, &method, &self.cancel);
            scope.spawn(move || {
                let mut images = images.into_iter().peekable();
                while images.peek().is_some() && !cancel.is_cancelled() {
                    let chunk: Vec<ImageInput> = images.by_ref().take(batch).collect();
                    for d in stage_and_decode(chunk, index, &method.name, finds_regions, &decode) {
                        if photo_tx.send(d).is_err() {
                            return; // the model stage stopped (interrupted or failed)
                        }
                    }
                }
            });
            let (added, duplicates) = (&added, &duplicates);
            let writer = scope.spawn(move || -> Result<(), crate::index::IndexError> {
                for records in records_rx {
                    let r = index
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .append(records)?;
                    added.fetch_add(r.added, std::sync::atomic::Ordering::Relaxed);
                    duplicates.fetch_add(r.duplicates, std::sync::atomic::Ordering::Relaxed);
                }
                Ok(())
            });
            let mut ready: Vec<Ready> = Vec::new();
            let mut sink = RecordSink {
                model: self.model,
                stage: embed_stage,
                cfg: &cfg,
                cancel: &self.cancel,
                source,
                method,
                exif_rotated: decode.exif_rotate,
                records: Vec::new(),
                failures: Vec::new(),
                unfinished: 0,
                embed_seconds: 0.0,
            };
            let forward_batch = self.spec.forward_batch(&self.model.device).max(1);
            report.forward_batch = forward_batch;
            let mut photos_since_commit = 0;
            for d in photo_rx.iter() {
                if self.cancel.is_cancelled() {
                    report.interrupted = true;
                    break;
                }
                if photos_since_commit == batch {
                    photos_since_commit = 0;
                    if !embed_ready(&mut ready, &mut sink) {
                        report.interrupted = true;
                        break;
                    }
                    if !sink.records.is_empty()
                        && records_tx.send(std::mem::take(&mut sink.records)).is_err()
                    {
                        break; // the writer failed: its error is reported below
                    }
                }
                photos_since_commit += 1;
                reporter.advance(1);
                // Regions embedded so far: committed by the writer, or on their way to it.
                let regions_done =
                    added.load(std::sync::atomic::Ordering::Relaxed) + sink.records.len();
                let secs = started.elapsed().as_secs_f64().max(1e-9);
                let of_total = if total_regions > 0 {
                    format!("/{total_regions}")
                } else {
                    String::new() // found in the photos as they come
                };
                reporter.status(format!(
                    "{regions_done}{of_total} regions ({:.2} regions/s)",
                    regions_done as f64 / secs
                ));
                let hash = match d.hash {
                    Ok(h) => h,
                    Err((stage, e)) => {
                        failures.push(ItemFailure::photo(&d.input.name, stage, e));
                        continue;
                    }
                };
                report.regions_already_indexed += d.input.regions.len() - d.todo.len();
                let image = match d.image {
                    None if d.input.regions.is_empty() && !finds_regions => {
                        report.images_without_regions += 1;
                        continue;
                    }
                    None => {
                        report.images_skipped += 1;
                        continue;
                    }
                    Some(Ok(i)) => i,
                    Some(Err(e)) => {
                        failures.push(ItemFailure::photo(&d.input.name, "decode", e));
                        continue;
                    }
                };
                report.images_processed += 1;
                let (todo, masks) = if finds_regions {
                    match find_regions(&image, mask_stage, self.sam.as_mut(), self.spec) {
                        Ok(found) => found,
                        Err(e) => {
                            failures.push(ItemFailure::photo(&d.input.name, "mask", e));
                            continue;
                        }
                    }
                } else {
                    let masks =
                        make_masks(&image, &d.todo, mask_stage, self.sam.as_mut(), sam_options);
                    (d.todo.clone(), masks)
                };
                if todo.is_empty() {
                    report.images_without_regions += 1;
                    continue;
                }
                let mut ok_regions = Vec::new();
                let mut ok_masks = Vec::new();
                for (r, m) in todo.iter().zip(masks) {
                    match m {
                        Ok(m) => {
                            ok_regions.push(r);
                            ok_masks.push(m);
                        }
                        Err(e) => failures.push(ItemFailure {
                            image: d.input.name.clone(),
                            region_id: Some(r.id.clone()),
                            stage: "mask",
                            error: e,
                        }),
                    }
                }
                if ok_masks.is_empty() {
                    continue;
                }
                ready.push(Ready {
                    name: d.input.name.clone(),
                    hash,
                    image,
                    regions: ok_regions.into_iter().cloned().collect(),
                    masks: ok_masks,
                });
                if ready.len() >= forward_batch && !embed_ready(&mut ready, &mut sink) {
                    report.interrupted = true;
                    break;
                }
            }
            if !report.interrupted && !embed_ready(&mut ready, &mut sink) {
                report.interrupted = true;
            }
            // Photos cut short, or whose masks were made but never embedded, are left for the rerun and not
            // counted as processed.
            report.images_processed -= sink.unfinished + ready.len();
            embed_seconds = sink.embed_seconds;
            let records = std::mem::take(&mut sink.records);
            failures.append(&mut sink.failures);
            // Stops the decoder at its next photo; what this stage embedded is still committed.
            drop(photo_rx);
            if !records.is_empty() {
                // A failed writer has dropped its queue; its own error is the one to report.
                let _ = records_tx.send(records);
            }
            drop(records_tx);
            writer
                .join()
                .map_err(|_| anyhow::anyhow!("the index writer thread panicked"))??;
            Ok(())
        });
        appended?;
        report.regions_added += added.into_inner();
        report.regions_already_indexed += duplicates.into_inner();
        let mut index = index.into_inner().unwrap_or_else(|e| e.into_inner());
        index.save_graph()?;
        reporter.finish();
        report.failures = failures.len() - issues.len();
        report.rows_total = index.len();
        report.finish_timing(started, embed_seconds);
        report.gpu_utilisation = utilisation.and_then(|u| u.finish());
        report.random_model = self.model.is_random();
        report.skipped = self.skipped;
        report.error_log = Some(self.write_error_log(&mut failures)?);
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha_hex(bytes: &[u8]) -> String {
        format!("{:x}", Sha256::digest(bytes))
    }

    #[test]
    fn weights_are_hashed_once_and_again_only_when_a_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let weights = dir.path().join("model.safetensors");
        std::fs::write(&weights, b"first weights").unwrap();
        let expect = |content: &[u8]| {
            let mut h = Sha256::new();
            h.update(sha_hex(content).as_bytes());
            format!("{:x}", h.finalize())
        };
        let first = weights_fingerprint(Some(dir.path()), "x");
        assert_eq!(first, expect(b"first weights"));
        let cache_path = dir.path().join(FINGERPRINT_CACHE);
        let cached: Vec<FileDigest> =
            serde_json::from_slice(&std::fs::read(&cache_path).unwrap()).unwrap();
        assert_eq!(cached.len(), 1);
        assert_eq!(cached[0].sha256, sha_hex(b"first weights"));

        // The cached digest is what is used while the file's size and time match: a planted digest
        // shows through, proving the file was not read again.
        let mut planted = cached.clone();
        planted[0].sha256 = sha_hex(b"planted");
        std::fs::write(&cache_path, serde_json::to_vec(&planted).unwrap()).unwrap();
        assert_eq!(
            weights_fingerprint(Some(dir.path()), "x"),
            expect(b"planted")
        );

        // A changed file is hashed again.
        std::fs::write(&weights, b"second, longer weights").unwrap();
        assert_eq!(
            weights_fingerprint(Some(dir.path()), "x"),
            expect(b"second, longer weights")
        );
        // Built-in models are their id.
        assert_eq!(
            weights_fingerprint(None, "random:vit-b-32"),
            "random:vit-b-32"
        );
    }
}
