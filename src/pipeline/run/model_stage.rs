//! The middle stage of a run, on the calling thread: per decoded photo its masks (given, boxes, SAM, or found
//! in the photo), then the embeddings of photos batched into one image forward, as rows for the commit
//! stage.

use std::sync::mpsc::{Receiver, SyncSender};
use std::time::Instant;

use image::RgbImage;

use crate::cancel::Cancel;
use crate::clip::ClipModel;
use crate::index::{MethodInfo, PhotoMeta, RegionMeta, RegionRecord};
use crate::invert::InversionConfig;
use crate::masks::{BinaryMask, Rle};
use crate::sam::{SamModel, SamOptions};

use super::decode_stage::Decoded;
use super::embed::embed_photos;
use super::regions::{find_regions, make_masks};
use super::{clip_box, ItemFailure};
use crate::pipeline::inputs::RegionInput;
use crate::pipeline::spec::{EmbedStage, MaskStage, PipelineSpec};
use crate::pipeline::SharedReporter;

/// What the model stage needs to know; fixed for the run.
pub(super) struct ModelStage<'a> {
    pub model: &'a ClipModel,
    pub sam: Option<&'a mut SamModel>,
    pub spec: &'a PipelineSpec,
    pub mask_stage: MaskStage,
    pub embed_stage: EmbedStage,
    pub sam_options: SamOptions,
    pub cfg: &'a InversionConfig,
    pub method: &'a MethodInfo,
    pub exif_rotated: bool,
    pub cancel: &'a Cancel,
    pub reporter: SharedReporter,
    /// Photos per image forward.
    pub forward_batch: usize,
    /// Photos per commit.
    pub commit_every: usize,
    /// Regions the input lists (0 when the mask stage finds them).
    pub total_regions: usize,
}

/// What the model stage did, each count counted once, where the photo's fate was decided.
#[derive(Debug, Default)]
pub(super) struct ModelOutcome {
    /// Photos whose regions were all embedded or failed (not those a stop left for the rerun).
    pub images_processed: usize,
    pub images_skipped: usize,
    pub images_without_regions: usize,
    pub regions_already_indexed: usize,
    pub failures: Vec<ItemFailure>,
    /// Stopped by the cancel flag: what was embedded is committed, the rest left for the rerun.
    pub interrupted: bool,
    /// Wall time spent in the model.
    pub embed_seconds: f64,
}

/// A photo whose masks are made, waiting for its embedding pass.
struct Ready {
    name: String,
    hash: String,
    image: RgbImage,
    photo: PhotoMeta,
    regions: Vec<RegionInput>,
    masks: Vec<BinaryMask>,
}

/// The stage's state while it runs.
struct Work {
    ready: Vec<Ready>,
    /// Rows embedded and not yet handed to the commit stage.
    records: Vec<RegionRecord>,
    /// Rows handed to the commit stage so far.
    sent: usize,
    outcome: ModelOutcome,
}

impl ModelStage<'_> {
    /// Embeds every photo the decode stage sends, handing rows to the commit stage every `commit_every`
    /// photos; stops early on cancel or when the commit stage has failed (its error is the run's).
    pub fn run(
        &mut self,
        photos: Receiver<Decoded>,
        to_commit: &SyncSender<Vec<RegionRecord>>,
    ) -> ModelOutcome {
        let started = Instant::now();
        let mut work = Work {
            ready: Vec::new(),
            records: Vec::new(),
            sent: 0,
            outcome: ModelOutcome::default(),
        };
        let mut photos_since_commit = 0;
        for d in photos.iter() {
            if self.cancel.is_cancelled() {
                work.outcome.interrupted = true;
                break;
            }
            if photos_since_commit == self.commit_every {
                photos_since_commit = 0;
                if !self.embed_ready(&mut work) {
                    work.outcome.interrupted = true;
                    break;
                }
                if !hand_over(&mut work, to_commit) {
                    break; // the commit stage failed
                }
            }
            photos_since_commit += 1;
            self.report_progress(&work, started);
            self.take_photo(d, &mut work);
            if work.ready.len() >= self.forward_batch && !self.embed_ready(&mut work) {
                work.outcome.interrupted = true;
                break;
            }
        }
        if !work.outcome.interrupted && !self.embed_ready(&mut work) {
            work.outcome.interrupted = true;
        }
        // Stops the decoder at its next photo; what this stage embedded is still committed.
        drop(photos);
        hand_over(&mut work, to_commit);
        work.outcome
    }

    fn report_progress(&self, work: &Work, started: Instant) {
        self.reporter.advance(1);
        let regions_done = work.sent + work.records.len();
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        let of_total = if self.total_regions > 0 {
            format!("/{}", self.total_regions)
        } else {
            String::new() // found in the photos as they come
        };
        self.reporter.status(format!(
            "{regions_done}{of_total} regions ({:.2} regions/s)",
            regions_done as f64 / secs
        ));
    }

    /// A decoded photo's masks, queued for the next embedding pass, or why it has none to embed.
    fn take_photo(&mut self, d: Decoded, work: &mut Work) {
        let out = &mut work.outcome;
        let hash = match d.hash {
            Ok(h) => h,
            Err((stage, e)) => {
                out.failures
                    .push(ItemFailure::photo(&d.input.name, stage, e));
                return;
            }
        };
        out.regions_already_indexed += d.input.regions.len() - d.todo.len();
        let finds_regions = self.mask_stage.finds_regions();
        let (image, photo) = match d.image {
            None if d.input.regions.is_empty() && !finds_regions => {
                out.images_without_regions += 1;
                return;
            }
            None => {
                out.images_skipped += 1;
                return;
            }
            Some(Ok(decoded)) => decoded,
            Some(Err(e)) => {
                out.failures
                    .push(ItemFailure::photo(&d.input.name, "decode", e));
                return;
            }
        };
        let (todo, masks) = if finds_regions {
            match find_regions(&image, self.mask_stage, self.sam.as_deref_mut(), self.spec) {
                Ok(found) => found,
                Err(e) => {
                    out.images_processed += 1;
                    out.failures
                        .push(ItemFailure::photo(&d.input.name, "mask", e));
                    return;
                }
            }
        } else {
            let masks = make_masks(
                &image,
                &d.todo,
                self.mask_stage,
                self.sam.as_deref_mut(),
                self.sam_options,
            );
            (d.todo, masks)
        };
        if todo.is_empty() {
            out.images_processed += 1;
            out.images_without_regions += 1;
            return;
        }
        let mut regions = Vec::new();
        let mut good_masks = Vec::new();
        for (r, m) in todo.into_iter().zip(masks) {
            match m {
                Ok(m) => {
                    regions.push(r);
                    good_masks.push(m);
                }
                Err(e) => out.failures.push(ItemFailure {
                    image: d.input.name.clone(),
                    region_id: Some(r.id.clone()),
                    stage: "mask",
                    error: e,
                }),
            }
        }
        if good_masks.is_empty() {
            out.images_processed += 1;
            return;
        }
        work.ready.push(Ready {
            name: d.input.name,
            hash,
            image,
            photo,
            regions,
            masks: good_masks,
        });
    }

    /// Embeds the ready photos — MaskInversion's forward passes batched into one — into rows. False when the
    /// run was cancelled meanwhile: the photos it cut short are left for the rerun (the finished ones kept).
    fn embed_ready(&self, work: &mut Work) -> bool {
        if work.ready.is_empty() {
            return true;
        }
        let photos: Vec<Ready> = std::mem::take(&mut work.ready);
        let pairs: Vec<(&RgbImage, &[BinaryMask])> = photos
            .iter()
            .map(|p| (&p.image, p.masks.as_slice()))
            .collect();
        let t = Instant::now();
        let outcomes = embed_photos(self.model, &pairs, self.embed_stage, self.cfg);
        work.outcome.embed_seconds += t.elapsed().as_secs_f64();
        drop(pairs);
        let cut_short = self.cancel.is_cancelled() && outcomes.iter().any(|o| o.is_err());
        for (p, o) in photos.into_iter().zip(outcomes) {
            match o {
                Ok(embeddings) => {
                    work.outcome.images_processed += 1;
                    self.push_rows(p, embeddings, work);
                }
                Err(_) if cut_short => {
                    tracing::debug!("{}: interrupted, left for the rerun", p.name);
                }
                Err(e) => {
                    work.outcome.images_processed += 1;
                    for r in &p.regions {
                        work.outcome.failures.push(ItemFailure {
                            image: p.name.clone(),
                            region_id: Some(r.id.clone()),
                            stage: "embed",
                            error: e.clone(),
                        });
                    }
                }
            }
        }
        !cut_short
    }

    fn push_rows(&self, p: Ready, embeddings: Vec<Result<Vec<f32>, String>>, work: &mut Work) {
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
                    work.records.push(RegionRecord {
                        meta: RegionMeta {
                            image: p.name.clone(),
                            image_hash: p.hash.clone(),
                            region_id: r.id.clone(),
                            bbox,
                            mask: Rle::encode(mask).to_coco(),
                            source: self.mask_stage.source().to_string(),
                            method: self.method.clone(),
                            label: r.label.clone(),
                            created_at_ms,
                            exif_rotated: self.exif_rotated,
                            photo: p.photo.clone(),
                        },
                        embedding,
                    });
                }
                Err(e) => work.outcome.failures.push(ItemFailure {
                    image: p.name.clone(),
                    region_id: Some(r.id.clone()),
                    stage: "embed",
                    error: e,
                }),
            }
        }
    }
}

/// Hands the rows embedded so far to the commit stage; false when it has stopped (failed).
fn hand_over(work: &mut Work, to_commit: &SyncSender<Vec<RegionRecord>>) -> bool {
    if work.records.is_empty() {
        return true;
    }
    let batch = std::mem::take(&mut work.records);
    let n = batch.len();
    if to_commit.send(batch).is_err() {
        return false;
    }
    work.sent += n;
    true
}
