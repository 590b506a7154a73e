//! The first stage of a run: photos hashed, checked against what the index already holds, and decoded, in
//! parallel on CPU threads, ahead of the model through a bounded queue.

use std::collections::{HashMap, HashSet};
use std::sync::mpsc::SyncSender;

use image::RgbImage;
use rayon::prelude::*;
use sha2::{Digest, Sha256};

use crate::cancel::Cancel;
use crate::decode::DecodeOptions;
use crate::index::{PhotoMeta, RegionIndex};
use crate::pipeline::photo_meta::photo_meta;

use super::{file_hash, frame_conflict};
use crate::pipeline::inputs::{ImageInput, RegionInput};

/// A photo as the model stage receives it.
pub(super) struct Decoded {
    pub input: ImageInput,
    /// The content hash, or why the photo fails before decoding (stage, message).
    pub hash: Result<String, (&'static str, String)>,
    /// None when every region of the photo is indexed already; else the photo with what its EXIF says.
    pub image: Option<Result<(RgbImage, PhotoMeta), String>>,
    /// Its regions not yet in the index.
    pub todo: Vec<RegionInput>,
}

/// What the index holds for this run's method, as the decoder knows it: what was committed when the run
/// began, plus what this run has since handed to the model. Only this run writes the index (it holds the
/// lock), so the decoder needs no access to the index the writer is appending to; and a photo met twice in
/// one run (a copy in another folder) is embedded once. Keys are 128 bits of a sha256, not the strings: a
/// resume of millions of rows would otherwise hold every key twice (here and in the writer).
pub(super) struct AlreadyIndexed {
    regions: HashSet<u128>,
    /// Per photo: whether its regions were indexed turned upright by its EXIF orientation.
    frames: HashMap<u128, bool>,
}

fn key(photo_hash: &str, region_id: Option<&str>) -> u128 {
    let mut h = Sha256::new();
    h.update(photo_hash.as_bytes());
    if let Some(id) = region_id {
        // A separator no hash contains, so that ("ab", "c") and ("a", "bc") differ.
        h.update([0u8]);
        h.update(id.as_bytes());
    }
    u128::from_le_bytes(
        h.finalize()[..16]
            .try_into()
            .expect("a sha256 has 32 bytes"),
    )
}

impl AlreadyIndexed {
    pub fn of(index: &RegionIndex, method: &str) -> Self {
        let mut regions = HashSet::new();
        let mut frames = HashMap::new();
        let rows = index.rows().iter().enumerate();
        // A deleted row's region is not indexed: its photo is embedded again if it comes back.
        for (_, row) in rows.filter(|(id, r)| r.method.name == method && !index.is_deleted(*id)) {
            regions.insert(key(&row.image_hash, Some(&row.region_id)));
            frames.insert(key(&row.image_hash, None), row.exif_rotated);
        }
        Self { regions, frames }
    }

    fn contains(&self, hash: &str, region_id: &str) -> bool {
        self.regions.contains(&key(hash, Some(region_id)))
    }

    fn frame(&self, hash: &str) -> Option<bool> {
        self.frames.get(&key(hash, None)).copied()
    }

    /// Marks a photo's regions as on their way into the index.
    fn claim(&mut self, hash: &str, regions: &[RegionInput], upright: bool) {
        self.frames.entry(key(hash, None)).or_insert(upright);
        for r in regions {
            self.regions.insert(key(hash, Some(&r.id)));
        }
    }
}

/// A photo decoded, with the metadata its rows carry (read from the same bytes, once per photo).
pub(crate) fn load_photo(
    path: &std::path::Path,
    options: &DecodeOptions,
) -> Result<(RgbImage, PhotoMeta), String> {
    let (image, tags) = crate::decode::load_photo_with(path, options).map_err(|e| e.to_string())?;
    let meta = photo_meta(&tags, image.width(), image.height());
    Ok((image, meta))
}

pub(super) struct DecodeStage<'a> {
    pub already: AlreadyIndexed,
    /// The mask stage finds the regions in the photo (the input lists none).
    pub finds_regions: bool,
    pub decode: DecodeOptions,
    /// Photos hashed and decoded together.
    pub batch: usize,
    pub cancel: &'a Cancel,
}

impl DecodeStage<'_> {
    /// Feeds the model stage until the photos run out, the run is cancelled or the model stage stops; true
    /// when every photo was handed over (a cancel that stops it here, after the model stage's last look at
    /// the flag, must still make the run "interrupted").
    pub fn run(mut self, images: Vec<ImageInput>, to_model: SyncSender<Decoded>) -> bool {
        let mut images = images.into_iter().peekable();
        while images.peek().is_some() {
            if self.cancel.is_cancelled() {
                return false;
            }
            let chunk: Vec<ImageInput> = images.by_ref().take(self.batch).collect();
            for d in self.decode_batch(chunk) {
                if to_model.send(d).is_err() {
                    return false; // the model stage stopped (interrupted or failed)
                }
            }
        }
        true
    }

    /// Hashes a batch of photos (in parallel), works out what each has left to do, and decodes (in
    /// parallel) those with something left.
    fn decode_batch(&mut self, chunk: Vec<ImageInput>) -> Vec<Decoded> {
        let hashed: Vec<(ImageInput, Result<String, (&'static str, String)>)> = chunk
            .into_par_iter()
            .map(|input| {
                let hash = file_hash(&input.path).map_err(|e| ("decode", e));
                (input, hash)
            })
            .collect();
        // In input order, so that of two copies of a photo the first listed is the one embedded.
        let staged: Vec<(
            ImageInput,
            Result<String, (&'static str, String)>,
            Vec<RegionInput>,
            bool,
        )> = hashed
            .into_iter()
            .map(|(input, hash)| {
                let hash = hash.and_then(|h| self.same_frame(h));
                let (todo, needed) = match &hash {
                    Ok(h) => self.left_to_do(h, &input),
                    Err(_) => (Vec::new(), false),
                };
                (input, hash, todo, needed)
            })
            .collect();
        staged
            .into_par_iter()
            .map(|(input, hash, todo, needed)| {
                let image = needed.then(|| load_photo(&input.path, &self.decode));
                Decoded {
                    input,
                    hash,
                    image,
                    todo,
                }
            })
            .collect()
    }

    /// The photo's regions not yet indexed (nor on their way), and whether it needs decoding; claims them.
    fn left_to_do(&mut self, hash: &str, input: &ImageInput) -> (Vec<RegionInput>, bool) {
        let todo: Vec<RegionInput> = input
            .regions
            .iter()
            .filter(|r| !self.already.contains(hash, &r.id))
            .cloned()
            .collect();
        // A photo whose regions the mask stage finds is done once any of them is indexed: its regions are
        // committed together.
        let needed = if self.finds_regions {
            self.already.frame(hash).is_none()
        } else {
            !todo.is_empty()
        };
        if needed {
            self.already.claim(hash, &todo, self.decode.exif_rotate);
        }
        (todo, needed)
    }

    /// A photo's regions all share one frame: a rerun in the other one would add boxes and masks that do not
    /// line up with the ones already indexed.
    fn same_frame(&self, hash: String) -> Result<String, (&'static str, String)> {
        match self.already.frame(&hash) {
            Some(upright) if upright != self.decode.exif_rotate => {
                Err(("frame", frame_conflict(upright)))
            }
            _ => Ok(hash),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::inputs::RegionShape;

    fn photo(name: &str, path: &std::path::Path, regions: &[&str]) -> ImageInput {
        ImageInput {
            name: name.to_string(),
            path: path.to_path_buf(),
            coco_id: None,
            regions: regions
                .iter()
                .map(|id| RegionInput {
                    id: id.to_string(),
                    bbox: Some([0.0, 0.0, 4.0, 4.0]),
                    shape: RegionShape::Box,
                    label: None,
                })
                .collect(),
        }
    }

    fn stage(finds_regions: bool, cancel: &Cancel) -> DecodeStage<'_> {
        DecodeStage {
            already: AlreadyIndexed {
                regions: HashSet::new(),
                frames: HashMap::new(),
            },
            finds_regions,
            decode: DecodeOptions::default(),
            batch: 8,
            cancel,
        }
    }

    #[test]
    fn a_photo_met_twice_in_one_run_is_decoded_and_embedded_once() {
        let dir = tempfile::tempdir().unwrap();
        let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples/photos/000000000030.jpg");
        let (a, b) = (dir.path().join("a.jpg"), dir.path().join("copy/a.jpg"));
        std::fs::create_dir_all(b.parent().unwrap()).unwrap();
        std::fs::copy(&shipped, &a).unwrap();
        std::fs::copy(&shipped, &b).unwrap();
        let cancel = Cancel::default();
        // Given regions: the copy's regions that the first listed already carries are not done again; one it
        // adds is.
        let mut given = stage(false, &cancel);
        let out = given.decode_batch(vec![
            photo("a.jpg", &a, &["1", "2"]),
            photo("copy/a.jpg", &b, &["2", "3"]),
        ]);
        assert!(out[0].image.as_ref().is_some_and(|i| i.is_ok()));
        let ids = |d: &Decoded| d.todo.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&out[0]), ["1", "2"]);
        assert_eq!(ids(&out[1]), ["3"]);
        // Found regions: the copy is skipped whole (not decoded).
        let mut found = stage(true, &cancel);
        let out = found.decode_batch(vec![photo("a.jpg", &a, &[]), photo("copy/a.jpg", &b, &[])]);
        assert!(out[0].image.is_some());
        assert!(out[1].image.is_none(), "the copy was decoded again");
        // Across batches too: what an earlier batch handed over stays claimed.
        let again = found.decode_batch(vec![photo("later/a.jpg", &b, &[])]);
        assert!(again[0].image.is_none());
    }
}
