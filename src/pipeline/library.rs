//! The library pipeline (`pipelines/library.toml`): a plain photo folder made searchable in two tiers within
//! one run, both committing as they go so that `search` and `serve` see the library grow and sharpen.
//!
//! 1. **Quick**: one image forward per photo (batched) gives its whole-photo row (the CLS embedding, method
//!    `image`) and, from the same forward, its regions — boxes proposed from the patch embeddings, or SAM's
//!    automatic masks when a SAM model is given — each embedded by mask pooling (method `mask-pool`).
//! 2. **Refined**: every quick region not yet inverted gets its MaskInversion LET (method `maskinversion`),
//!    photos with the most regions waiting first. The index keeps one live row per region, the best tier
//!    (see `regionseek_index::tier_rank`), so a search never returns a region twice.
//!
//! The index itself is the resume state: a photo with its whole-photo row is searchable, a region with its
//! MaskInversion row is refined. A rerun continues where the last one stopped; on a fully refined library it
//! does nothing.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use candle_core::Tensor;
use image::RgbImage;
use rayon::prelude::*;

use crate::baselines::{self, Baseline};
use crate::clip::{preprocess, ClipModel};
use crate::index::{IndexWriter, MethodInfo, PhotoMeta, RegionIndex, RegionMeta, RegionRecord};
use crate::invert::{invert_images, InversionConfig};
use crate::masks::{BinaryMask, Rle};
use crate::sam::box_mask;

use super::inputs::{ImageInput, InputIssue};
use super::propose::{propose_boxes, ProposeParams};
use super::run::load_photo;
use super::run::{file_hash, frame_conflict, method_info, IndexRun, IndexRunReport, ItemFailure};
use super::spec::EmbedStage;

/// The region id and method of a photo's whole-photo row.
pub const IMAGE_REGION: &str = "image";
pub const IMAGE_METHOD: &str = "image";
/// The `source` of the whole-photo row, of proposed boxes, of SAM's masks.
pub const IMAGE_SOURCE: &str = "image";
pub const BOX_SOURCE: &str = "auto-box";
pub const SAM_SOURCE: &str = "auto-sam";

/// Photos per quick forward (and per commit of the quick tier).
const QUICK_BATCH: usize = 16;
/// The refining pass commits at least this often, so that a search sees refined regions soon.
const REFINE_COMMIT_EVERY: Duration = Duration::from_secs(10);

/// What each tier did in this run.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct TierReport {
    /// Photos of the folder searchable after the run (their whole-photo row is in the index).
    pub searchable_photos: usize,
    /// Photos made searchable by this run, with their regions' quick rows.
    pub quick_photos: usize,
    pub quick_regions: usize,
    pub quick_seconds: f64,
    /// Photos per second of the quick pass (decode, forward, proposals, commit).
    pub quick_photos_per_second: f64,
    /// Regions given their MaskInversion row by this run, and their photos.
    pub refined_regions: usize,
    pub refined_photos: usize,
    pub refine_seconds: f64,
    pub refined_regions_per_second: f64,
    /// Quick regions of the folder's photos still waiting for MaskInversion (0: fully refined).
    pub regions_to_refine: usize,
    /// Where the regions come from: `auto-box` (proposed boxes) or `auto-sam`.
    pub regions_from: &'static str,
}

/// A photo the refining pass works on: its file and its quick rows not yet refined.
struct Pending {
    name: String,
    path: PathBuf,
    rows: Vec<RegionMeta>,
}

/// Whether the index will take an embedding (it refuses a whole batch for one zero or non-finite vector).
fn usable(embedding: &[f32]) -> bool {
    embedding.iter().all(|v| v.is_finite()) && embedding.iter().any(|v| *v != 0.0)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The methods of the three kinds of rows, as recorded in the index.
struct Methods {
    image: MethodInfo,
    quick: MethodInfo,
    refined: MethodInfo,
}

impl Methods {
    fn new(model: &ClipModel, weights_hash: &str, cfg: &InversionConfig) -> Self {
        let quick = method_info(
            model,
            weights_hash,
            EmbedStage::Baseline(Baseline::MaskPool),
            cfg,
        );
        let image = MethodInfo {
            name: IMAGE_METHOD.into(),
            ..quick.clone()
        };
        Self {
            image,
            quick,
            refined: method_info(model, weights_hash, EmbedStage::Invert, cfg),
        }
    }
}

/// A decoded photo of the quick pass.
struct QuickPhoto {
    name: String,
    hash: String,
    image: RgbImage,
    photo: PhotoMeta,
}

struct Library<'r, 'a> {
    run: &'r mut IndexRun<'a>,
    params: ProposeParams,
    methods: Methods,
    cfg: InversionConfig,
    failures: Vec<ItemFailure>,
}

pub(super) fn run(
    mut run: IndexRun,
    images: Vec<ImageInput>,
    issues: Vec<InputIssue>,
) -> anyhow::Result<IndexRunReport> {
    let started = Instant::now();
    let cfg = InversionConfig {
        cancel: run.cancel.clone(),
        ..run.spec.inversion_config()
    };
    let (mut index, weights_hash) = run.open_index()?;
    let synced = super::run::sync_with_input(&mut index, &images, run.sync)?;
    let methods = Methods::new(run.model, &weights_hash, &cfg);
    let mut report = IndexRunReport {
        pipeline: run.spec.name.clone(),
        images: images.len(),
        input_issues: issues.len(),
        forward_batch: run.spec.forward_batch(&run.model.device).max(1),
        sync: synced,
        ..Default::default()
    };
    let failures = issues.iter().map(ItemFailure::input).collect();
    let params = run.spec.propose.clone().unwrap_or_default();
    let mut lib = Library {
        run: &mut run,
        params,
        methods,
        cfg,
        failures,
    };
    let mut tiers = TierReport {
        regions_from: if lib.run.sam.is_some() {
            SAM_SOURCE
        } else {
            BOX_SOURCE
        },
        ..Default::default()
    };
    let mut embed_seconds = 0.0;
    let photos = lib.quick_pass(
        &mut index,
        images,
        &mut report,
        &mut tiers,
        &mut embed_seconds,
    )?;
    tiers.searchable_photos = photos
        .keys()
        .filter(|h| index.has_image(h, IMAGE_METHOD))
        .count();
    let pending = pending_refinements(&index, &photos);
    if !report.interrupted {
        lib.refine_pass(
            &mut index,
            &pending,
            &mut report,
            &mut tiers,
            &mut embed_seconds,
        )?;
    }
    // Every refined row added was one of these regions' (refined ones are never pending).
    tiers.regions_to_refine =
        pending.iter().map(|p| p.rows.len()).sum::<usize>() - tiers.refined_regions;
    index.save_graph()?;
    lib.run.reporter.finish();
    let mut failures = std::mem::take(&mut lib.failures);
    report.failures = failures.len() - issues.len();
    report.rows_total = index.len();
    report.finish_timing(started, embed_seconds);
    report.random_model = run.model.is_random();
    report.skipped = run.skipped;
    report.tiers = Some(tiers);
    report.error_log = Some(run.write_error_log(&mut failures)?);
    Ok(report)
}

/// Every quick region of the folder's photos (`photos`: content hash → name, path) without its MaskInversion
/// row, grouped by photo, photos with the most waiting regions first (then by name).
fn pending_refinements(
    index: &RegionIndex,
    photos: &HashMap<String, (String, PathBuf)>,
) -> Vec<Pending> {
    let mut by_photo: HashMap<&str, Vec<RegionMeta>> = HashMap::new();
    for (row, m) in index.rows().iter().enumerate() {
        // A deleted row's region is gone (its photo vanished, changed or moved: a moved photo's rows live
        // on under its new path).
        if index.is_deleted(row)
            || m.method.name != Baseline::MaskPool.name()
            || !(m.source == BOX_SOURCE || m.source == SAM_SOURCE)
            || !photos.contains_key(&m.image_hash)
            || index.contains(&m.image_hash, &m.region_id, crate::index::REFINED_METHOD)
        {
            continue;
        }
        by_photo.entry(&m.image_hash).or_default().push(m.clone());
    }
    let mut pending: Vec<Pending> = by_photo
        .into_iter()
        .map(|(hash, rows)| {
            let (name, path) = photos[hash].clone();
            Pending { name, path, rows }
        })
        .collect();
    pending.sort_by(|a, b| {
        b.rows
            .len()
            .cmp(&a.rows.len())
            .then_with(|| a.name.cmp(&b.name))
    });
    pending
}

impl Library<'_, '_> {
    /// Makes every photo searchable: per batch, hash, decode, one forward, regions, commit. Returns the
    /// folder's photos by content hash (the refining pass works on these).
    fn quick_pass(
        &mut self,
        index: &mut IndexWriter,
        images: Vec<ImageInput>,
        report: &mut IndexRunReport,
        tiers: &mut TierReport,
        embed_seconds: &mut f64,
    ) -> anyhow::Result<HashMap<String, (String, PathBuf)>> {
        let started = Instant::now();
        let rotate = self.run.decode.exif_rotate;
        let decode = self.run.decode;
        self.run
            .reporter
            .phase("photos searchable", images.len() as u64);
        let mut photos: HashMap<String, (String, PathBuf)> = HashMap::new();
        for chunk in images.chunks(QUICK_BATCH) {
            if self.run.cancel.is_cancelled() {
                report.interrupted = true;
                break;
            }
            let hashes: Vec<Result<String, String>> =
                chunk.par_iter().map(|i| file_hash(&i.path)).collect();
            let mut todo = Vec::new();
            for (input, hash) in chunk.iter().zip(hashes) {
                self.run.reporter.advance(1);
                let hash = match hash {
                    Ok(h) => h,
                    Err(e) => {
                        self.failures
                            .push(ItemFailure::photo(&input.name, "decode", e));
                        continue;
                    }
                };
                if photos.contains_key(&hash) {
                    // The same photo twice (a copy): indexed once, under its first name.
                    report.images_skipped += 1;
                    continue;
                }
                match index.image_frame(&hash, IMAGE_METHOD) {
                    // Left out of `photos` too: its regions are in the other frame, never refined in this one.
                    Some(frame) if frame != rotate => {
                        self.failures.push(ItemFailure::photo(
                            &input.name,
                            "frame",
                            frame_conflict(frame),
                        ));
                        continue;
                    }
                    Some(_) => report.images_skipped += 1,
                    None => todo.push((input, hash.clone())),
                }
                photos.insert(hash, (input.name.clone(), input.path.clone()));
            }
            let decoded: Vec<(&ImageInput, String, Result<(RgbImage, PhotoMeta), String>)> = todo
                .into_par_iter()
                .map(|(input, hash)| {
                    let image = load_photo(&input.path, &decode);
                    (input, hash, image)
                })
                .collect();
            let mut batch = Vec::new();
            for (input, hash, image) in decoded {
                match image {
                    Ok((image, photo)) => batch.push(QuickPhoto {
                        name: input.name.clone(),
                        hash,
                        image,
                        photo,
                    }),
                    Err(e) => self
                        .failures
                        .push(ItemFailure::photo(&input.name, "decode", e)),
                }
            }
            if batch.is_empty() {
                continue;
            }
            let t = Instant::now();
            let records = self.quick_records(&batch);
            *embed_seconds += t.elapsed().as_secs_f64();
            let mut rows = Vec::new();
            for (photo, r) in batch.iter().zip(records) {
                match r {
                    Ok(r) => {
                        report.images_processed += 1;
                        tiers.quick_photos += 1;
                        tiers.quick_regions += r.len() - 1;
                        rows.extend(r);
                    }
                    Err(e) => self
                        .failures
                        .push(ItemFailure::photo(&photo.name, "embed", e)),
                }
            }
            let added = index.append(rows)?;
            report.regions_added += added.added;
            report.regions_already_indexed += added.duplicates;
            self.run
                .reporter
                .status(format!("{} regions", tiers.quick_regions));
        }
        tiers.quick_seconds = started.elapsed().as_secs_f64();
        tiers.quick_photos_per_second = tiers.quick_photos as f64 / tiers.quick_seconds.max(1e-9);
        Ok(photos)
    }

    /// The quick rows of a batch of photos: per photo its whole-photo row first, then its regions', or why
    /// the photo failed.
    fn quick_records(&mut self, batch: &[QuickPhoto]) -> Vec<Result<Vec<RegionRecord>, String>> {
        let forward = || -> candle_core::Result<(Vec<Vec<f32>>, Tensor, Tensor)> {
            let model = self.run.model;
            let size = model.config.vision.image_size as u32;
            let pixels = batch
                .iter()
                .map(|p| {
                    preprocess::squash(&p.image, size, &model.config.normalization, &model.device)
                })
                .collect::<candle_core::Result<Vec<_>>>()?;
            let (cls, tokens) = model
                .vision
                .forward_cls_and_patch_tokens(&Tensor::cat(&pixels, 0)?)?;
            let projected = model.vision.project_tokens(&tokens)?;
            Ok((cls.to_vec2::<f32>()?, tokens, projected))
        };
        let (cls, tokens, projected) = match forward() {
            Ok(f) => f,
            Err(e) => return vec![Err(e.to_string()); batch.len()],
        };
        batch
            .iter()
            .enumerate()
            .map(|(i, photo)| {
                let tokens = tokens.get(i).map_err(|e| e.to_string())?;
                let patches = projected
                    .get(i)
                    .and_then(|p| p.flatten_all()?.to_vec1::<f32>())
                    .map_err(|e| e.to_string())?;
                let (regions, source) = self.regions_of(&photo.image, &patches, &cls[i])?;
                let masks: Vec<BinaryMask> = regions.iter().map(|(_, m)| m.clone()).collect();
                let pooled = baselines::mask_pool(self.run.model, &tokens, &masks)
                    .map_err(|e| e.to_string())?;
                let (w, h) = (photo.image.width(), photo.image.height());
                let whole =
                    BinaryMask::from_box(w as usize, h as usize, 0.0, 0.0, w as f64, h as f64);
                let created_at_ms = now_ms();
                let row = |region_id: &str,
                           mask: &BinaryMask,
                           source: &str,
                           method: &MethodInfo,
                           embedding| {
                    let bbox = mask.bbox().map_or([0.0; 4], |b| b.map(|v| v as f32));
                    RegionRecord {
                        meta: RegionMeta {
                            image: photo.name.clone(),
                            image_hash: photo.hash.clone(),
                            region_id: region_id.to_string(),
                            bbox: super::run::clip_box(bbox, w, h),
                            mask: Rle::encode(mask).to_coco(),
                            source: source.to_string(),
                            method: method.clone(),
                            label: None,
                            created_at_ms,
                            exif_rotated: self.run.decode.exif_rotate,
                            photo: photo.photo.clone(),
                        },
                        embedding,
                    }
                };
                if !usable(&cls[i]) {
                    return Err("the model gave this photo a zero or non-finite embedding".into());
                }
                let mut records = vec![row(
                    IMAGE_REGION,
                    &whole,
                    IMAGE_SOURCE,
                    &self.methods.image,
                    cls[i].clone(),
                )];
                for ((id, mask), embedding) in regions.iter().zip(pooled) {
                    if usable(&embedding) {
                        records.push(row(id, mask, source, &self.methods.quick, embedding));
                    } else {
                        self.failures.push(ItemFailure {
                            image: photo.name.clone(),
                            region_id: Some(id.clone()),
                            stage: "embed",
                            error: "a zero or non-finite embedding".into(),
                        });
                    }
                }
                Ok(records)
            })
            .collect()
    }

    /// A photo's regions (id, mask) and their `source`: SAM's automatic masks when a SAM model is loaded,
    /// else boxes proposed from the quick forward's patch embeddings `[g²·d]` and CLS embedding `[d]`.
    fn regions_of(
        &mut self,
        image: &RgbImage,
        patches: &[f32],
        cls: &[f32],
    ) -> Result<(Vec<(String, BinaryMask)>, &'static str), String> {
        let (w, h) = (image.width() as usize, image.height() as usize);
        if let Some(sam) = self.run.sam.as_mut() {
            let params = self.run.spec.auto_sam.unwrap_or_default();
            let (found, _) =
                crate::sam::auto::generate(sam, image, &params).map_err(|e| e.to_string())?;
            return Ok((sam_regions(found, w, h, &self.params), SAM_SOURCE));
        }
        let grid = (patches.len() / cls.len().max(1)) as f64;
        let grid = grid.sqrt().round() as usize;
        // On a photo smaller than the grid several boxes land on the same pixels: each counts once.
        let mut seen = std::collections::HashSet::new();
        let regions = propose_boxes(patches, cls, grid, &self.params)
            .into_iter()
            .filter_map(|b| {
                let [x0, y0, x1, y1] = b.pixels(grid, w, h);
                let id = format!("box-{}x{}+{x0}+{y0}", x1 - x0, y1 - y0);
                if !seen.insert(id.clone()) {
                    return None;
                }
                let mask = box_mask([x0 as f32, y0 as f32, x1 as f32, y1 as f32], w, h).ok()?;
                Some((id, mask))
            })
            .collect();
        Ok((regions, BOX_SOURCE))
    }

    /// Replaces quick regions by their MaskInversion LETs, photos with the most regions waiting first,
    /// `forward_batch` photos per image forward, committing every `batch_images` photos or
    /// [`REFINE_COMMIT_EVERY`], whichever comes first.
    fn refine_pass(
        &mut self,
        index: &mut IndexWriter,
        pending: &[Pending],
        report: &mut IndexRunReport,
        tiers: &mut TierReport,
        embed_seconds: &mut f64,
    ) -> anyhow::Result<()> {
        let started = Instant::now();
        let total: usize = pending.iter().map(|p| p.rows.len()).sum();
        if total == 0 {
            return Ok(());
        }
        self.run.reporter.phase("regions refined", total as u64);
        let forward_batch = self.run.spec.forward_batch(&self.run.model.device).max(1);
        let commit_photos = self.run.spec.batch_images().max(1);
        let decode = self.run.decode;
        let mut waiting: Vec<RegionRecord> = Vec::new();
        let (mut photos_waiting, mut last_commit) = (0usize, Instant::now());
        for group in pending.chunks(forward_batch) {
            if self.run.cancel.is_cancelled() {
                report.interrupted = true;
                break;
            }
            let loaded: Vec<(&Pending, Result<(RgbImage, Vec<BinaryMask>), String>)> = group
                .par_iter()
                .map(|p| {
                    let image =
                        crate::decode::load_rgb_with(&p.path, &decode).map_err(|e| e.to_string());
                    let masks = image.and_then(|image| {
                        let masks = p
                            .rows
                            .iter()
                            .map(|m| {
                                Rle::from_coco(&m.mask)
                                    .map(|r| r.decode())
                                    .map_err(|e| format!("region {}: {e}", m.region_id))
                            })
                            .collect::<Result<Vec<_>, _>>()?;
                        Ok((image, masks))
                    });
                    (p, masks)
                })
                .collect();
            let mut ready = Vec::new();
            for (p, l) in loaded {
                match l {
                    Ok(l) => ready.push((p, l)),
                    Err(e) => {
                        self.failures.push(ItemFailure::photo(&p.name, "decode", e));
                        self.run.reporter.advance(p.rows.len() as u64);
                    }
                }
            }
            let pairs: Vec<(&RgbImage, &[BinaryMask])> =
                ready.iter().map(|(_, (i, m))| (i, m.as_slice())).collect();
            let t = Instant::now();
            let outcomes: Vec<Result<_, String>> =
                match invert_images(self.run.model, &pairs, &self.cfg) {
                    Ok(o) => o
                        .into_iter()
                        .map(|r| r.map_err(|e| e.to_string()))
                        .collect(),
                    Err(e) => pairs.iter().map(|_| Err(e.to_string())).collect(),
                };
            *embed_seconds += t.elapsed().as_secs_f64();
            let cut_short = self.run.cancel.is_cancelled();
            for ((p, _), outcome) in ready.iter().zip(outcomes) {
                let masks = match outcome {
                    Ok(out) => out.masks,
                    // Cut short, not wrong: left for the rerun.
                    Err(_) if cut_short => continue,
                    Err(e) => {
                        self.failures.push(ItemFailure::photo(&p.name, "embed", e));
                        self.run.reporter.advance(p.rows.len() as u64);
                        continue;
                    }
                };
                let created_at_ms = now_ms();
                let mut refined = 0;
                for (meta, m) in p.rows.iter().zip(masks) {
                    let m = m.and_then(|m| {
                        if usable(&m.embedding) {
                            Ok(m)
                        } else {
                            Err("a zero or non-finite embedding".to_string())
                        }
                    });
                    match m {
                        Ok(m) => {
                            refined += 1;
                            waiting.push(RegionRecord {
                                meta: RegionMeta {
                                    // The photo's path now, whatever path its quick row was made under.
                                    image: p.name.clone(),
                                    method: self.methods.refined.clone(),
                                    created_at_ms,
                                    ..meta.clone()
                                },
                                embedding: m.embedding,
                            });
                        }
                        Err(e) if !cut_short => self.failures.push(ItemFailure {
                            image: p.name.clone(),
                            region_id: Some(meta.region_id.clone()),
                            stage: "embed",
                            error: e,
                        }),
                        Err(_) => {}
                    }
                }
                if refined > 0 {
                    tiers.refined_photos += 1;
                    photos_waiting += 1;
                }
                self.run.reporter.advance(p.rows.len() as u64);
            }
            if cut_short {
                report.interrupted = true;
            }
            if photos_waiting >= commit_photos
                || last_commit.elapsed() >= REFINE_COMMIT_EVERY
                || cut_short
            {
                self.commit_refined(index, &mut waiting, report, tiers)?;
                (photos_waiting, last_commit) = (0, Instant::now());
            }
            if cut_short {
                break;
            }
        }
        self.commit_refined(index, &mut waiting, report, tiers)?;
        tiers.refine_seconds = started.elapsed().as_secs_f64();
        tiers.refined_regions_per_second =
            tiers.refined_regions as f64 / tiers.refine_seconds.max(1e-9);
        Ok(())
    }

    fn commit_refined(
        &mut self,
        index: &mut IndexWriter,
        waiting: &mut Vec<RegionRecord>,
        report: &mut IndexRunReport,
        tiers: &mut TierReport,
    ) -> anyhow::Result<()> {
        if waiting.is_empty() {
            return Ok(());
        }
        let added = index.append(std::mem::take(waiting))?;
        report.regions_added += added.added;
        report.regions_already_indexed += added.duplicates;
        tiers.refined_regions += added.added;
        self.run
            .reporter
            .status(format!("{} committed", tiers.refined_regions));
        Ok(())
    }
}

/// SAM's automatic masks for the library: those covering at least `min_area` of the photo, best first by
/// predicted IoU times stability, at most `max_regions`; ids keep the generator's order (stable per photo,
/// model and parameters).
fn sam_regions(
    found: Vec<crate::sam::auto::AutoMask>,
    width: usize,
    height: usize,
    params: &ProposeParams,
) -> Vec<(String, BinaryMask)> {
    let min_area = params.min_area * (width * height) as f64;
    let mut ranked: Vec<(usize, crate::sam::auto::AutoMask)> = found
        .into_iter()
        .enumerate()
        .filter(|(_, m)| m.area as f64 >= min_area)
        .collect();
    ranked.sort_by(|(ia, a), (ib, b)| {
        (b.predicted_iou * b.stability_score)
            .total_cmp(&(a.predicted_iou * a.stability_score))
            .then(ia.cmp(ib))
    });
    ranked.truncate(params.max_regions);
    ranked
        .into_iter()
        .map(|(i, m)| (format!("auto-{i:04}"), m.rle.decode()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sam::auto::AutoMask;

    fn found(area_iou_stability: &[(usize, f32, f32)]) -> Vec<AutoMask> {
        area_iou_stability
            .iter()
            .map(|&(area, predicted_iou, stability_score)| {
                let mut data = vec![0u8; 100 * 100];
                data[..area].fill(1);
                let mask = BinaryMask::new(100, 100, data).unwrap();
                AutoMask {
                    rle: Rle::encode(&mask),
                    area: area as u64,
                    bbox_xywh: [0, 0, 100, 1],
                    predicted_iou,
                    point: [0.0, 0.0],
                    stability_score,
                    crop_box_xywh: [0, 0, 100, 100],
                }
            })
            .collect()
    }

    #[test]
    fn sam_masks_are_filtered_by_area_ranked_by_quality_and_capped() {
        let params = ProposeParams {
            max_regions: 2,
            min_area: 0.01, // 100 of the 10,000 pixels
            ..Default::default()
        };
        let masks = found(&[
            (500, 0.90, 0.90),  // 0.81
            (50, 0.99, 0.99),   // the best, but too small
            (800, 0.95, 0.95),  // 0.9025
            (300, 0.70, 0.99),  // 0.693
            (2000, 0.85, 0.96), // 0.816
        ]);
        let kept = sam_regions(masks, 100, 100, &params);
        let ids: Vec<&str> = kept.iter().map(|(id, _)| id.as_str()).collect();
        // Ids are the generator's order, so a rerun with the same model and parameters finds the same regions.
        assert_eq!(ids, ["auto-0002", "auto-0004"]);
        assert_eq!(kept[0].1.data.iter().filter(|&&v| v > 0).count(), 800);
    }
}
