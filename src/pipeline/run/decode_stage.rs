//! The first stage of a run: photos hashed, checked against what the index already holds, and decoded, in
//! parallel on CPU threads, ahead of the model through a bounded queue.

use std::collections::{HashMap, HashSet};
use std::sync::mpsc::SyncSender;

use image::RgbImage;
use rayon::prelude::*;

use crate::cancel::Cancel;
use crate::decode::DecodeOptions;
use crate::index::RegionIndex;

use super::{file_hash, frame_conflict};
use crate::pipeline::inputs::{ImageInput, RegionInput};

/// A photo as the model stage receives it.
pub(super) struct Decoded {
    pub input: ImageInput,
    /// The content hash, or why the photo fails before decoding (stage, message).
    pub hash: Result<String, (&'static str, String)>,
    /// None when every region of the photo is indexed already.
    pub image: Option<Result<RgbImage, String>>,
    /// Its regions not yet in the index.
    pub todo: Vec<RegionInput>,
}

/// What the index held for this run's method when the run began. Only this run writes the index (it holds
/// the lock), so what it adds itself is new by construction: the decoder needs no access to the index the
/// writer is appending to (a photo listed twice is embedded twice and its second rows dropped as duplicates).
pub(super) struct AlreadyIndexed {
    regions: HashSet<(String, String)>,
    /// Per photo: whether its regions were indexed turned upright by its EXIF orientation.
    frames: HashMap<String, bool>,
}

impl AlreadyIndexed {
    pub fn of(index: &RegionIndex, method: &str) -> Self {
        let mut regions = HashSet::new();
        let mut frames = HashMap::new();
        for row in index.rows().iter().filter(|r| r.method.name == method) {
            regions.insert((row.image_hash.clone(), row.region_id.clone()));
            frames.insert(row.image_hash.clone(), row.exif_rotated);
        }
        Self { regions, frames }
    }

    fn contains(&self, hash: &str, region_id: &str) -> bool {
        self.regions
            .contains(&(hash.to_string(), region_id.to_string()))
    }
}

pub(super) struct DecodeStage<'a> {
    pub already: &'a AlreadyIndexed,
    /// The mask stage finds the regions in the photo (the input lists none).
    pub finds_regions: bool,
    pub decode: DecodeOptions,
    /// Photos hashed and decoded together.
    pub batch: usize,
    pub cancel: &'a Cancel,
}

impl DecodeStage<'_> {
    /// Feeds the model stage until the photos run out, the run is cancelled or the model stage stops.
    pub fn run(&self, images: Vec<ImageInput>, to_model: SyncSender<Decoded>) {
        let mut images = images.into_iter().peekable();
        while images.peek().is_some() && !self.cancel.is_cancelled() {
            let chunk: Vec<ImageInput> = images.by_ref().take(self.batch).collect();
            for d in self.decode_batch(chunk) {
                if to_model.send(d).is_err() {
                    return; // the model stage stopped (interrupted or failed)
                }
            }
        }
    }

    /// Hashes a batch of photos and decodes, in parallel, those with something left to do.
    fn decode_batch(&self, chunk: Vec<ImageInput>) -> Vec<Decoded> {
        chunk
            .into_par_iter()
            .map(|input| {
                let hash = file_hash(&input.path)
                    .map_err(|e| ("decode", e))
                    .and_then(|h| self.same_frame(h));
                let todo: Vec<RegionInput> = match &hash {
                    Ok(h) => input
                        .regions
                        .iter()
                        .filter(|r| !self.already.contains(h, &r.id))
                        .cloned()
                        .collect(),
                    Err(_) => Vec::new(),
                };
                // A photo whose regions the mask stage finds is done once any of them is indexed: its
                // regions are committed together.
                let needed = match &hash {
                    Ok(h) if self.finds_regions => !self.already.frames.contains_key(h),
                    Ok(_) => !todo.is_empty(),
                    Err(_) => false,
                };
                let image = needed.then(|| {
                    crate::decode::load_rgb_with(&input.path, &self.decode)
                        .map_err(|e| e.to_string())
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

    /// A photo's regions all share one frame: a rerun in the other one would add boxes and masks that do not
    /// line up with the ones already indexed.
    fn same_frame(&self, hash: String) -> Result<String, (&'static str, String)> {
        match self.already.frames.get(&hash) {
            Some(&upright) if upright != self.decode.exif_rotate => {
                Err(("frame", frame_conflict(upright)))
            }
            _ => Ok(hash),
        }
    }
}
