//! An index run as its front doors ask for it (the CLI's `index`, the Python binding's `index_photos`):
//! a pipeline by name, photos and where their regions come from, an output folder. Everything between the
//! request and [`IndexRun`] lives here once.

use std::path::PathBuf;
use std::sync::Arc;

use crate::cancel::Cancel;
use crate::clip::ClipModel;
use crate::decode::DecodeOptions;
use crate::index::{LockWait, WriterLock};
use crate::sam::{SamDevice, SamModel};

use super::inputs::{from_boxes, from_coco, from_mask_dir, scan_photo_folder, SkippedFiles};
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
     folder use the library pipeline (the default without those), auto-sam (with a SAM model) or auto-grid"
)]
pub struct NeedsRegions {
    pub pipeline: String,
}

/// A mistake in what an index run was asked, found before the lock is taken or any model is loaded.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("the images folder {0} does not exist")]
    NoImagesFolder(PathBuf),
    #[error(
        "{0} is not a folder: give the folder the photos are in (their names are relative to it)"
    )]
    ImagesNotAFolder(PathBuf),
    #[error(
        "pipeline {pipeline} embeds the masks it is given, and a boxes file gives boxes only: use the boxes \
         pipeline (each box is its own mask) or boxes-sam (SAM's mask for each box)"
    )]
    BoxesNeedABoxPipeline { pipeline: String },
    #[error("nothing to index: {0}")]
    Nothing(String),
}

/// The pipeline to use when none is named: the one that fits where the regions come from.
pub fn default_pipeline(regions: &RegionSource, has_sam: bool) -> &'static str {
    match regions {
        RegionSource::Boxes(_) if has_sam => "boxes-sam",
        RegionSource::Boxes(_) => "boxes",
        RegionSource::FindThem => "library",
        _ => "gt-masks",
    }
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

/// One of `count` disjoint parts of a corpus, chosen by photo: a photo belongs to the shard its name's
/// sha256 points to, so the split is the same on every machine, in every run and in every input order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    pub fn new(index: usize, count: usize) -> Result<Self, String> {
        if count == 0 || index >= count {
            return Err(format!(
                "shard {index}/{count}: the shard must be 0..{count} and the count at least 1"
            ));
        }
        Ok(Self { index, count })
    }

    /// Parses `K/N`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (k, n) = text
            .split_once('/')
            .ok_or_else(|| format!("shard `{text}`: write it as K/N, e.g. 0/4"))?;
        let parse = |v: &str| {
            v.trim()
                .parse::<usize>()
                .map_err(|_| format!("shard `{text}`: K and N must be whole numbers"))
        };
        Self::new(parse(k)?, parse(n)?)
    }

    pub fn of(name: &str, count: usize) -> usize {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(name.as_bytes());
        let head = u64::from_be_bytes(digest[..8].try_into().expect("a sha256 has 32 bytes"));
        (head % count as u64) as usize
    }

    pub fn keeps(&self, name: &str) -> bool {
        Self::of(name, self.count) == self.index
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
    /// Only this shard's photos (after `limit`): the union of a corpus's shards is the unsharded run.
    pub shard: Option<Shard>,
    pub wait: LockWait,
    pub decode: DecodeOptions,
    pub sam: SamSetup,
    /// Told how far the run has come and what was passed over.
    pub reporter: super::SharedReporter,
    pub cancel: Cancel,
    /// Keep the rows of photos the input no longer holds (a removable drive that is not plugged in); by
    /// default a run deletes them, so that the index answers as a fresh index of the input would.
    pub keep_vanished: bool,
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
        self.check_request(&spec)?;
        let out = self.out.clone();
        // Made by this run (never by a concurrent one: only one `create_dir` of a path succeeds).
        let parent_ready = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => std::fs::create_dir_all(p).is_ok(),
            _ => true,
        };
        let created = parent_ready && std::fs::create_dir(&out).is_ok();
        let result = self.run_locked(&spec, load_model);
        if result.is_err() && created {
            remove_unused_index_folder(&out);
        }
        result
    }

    /// What can be known wrong from the request alone.
    fn check_request(&self, spec: &PipelineSpec) -> Result<(), JobError> {
        match std::fs::metadata(&self.images) {
            Err(_) => return Err(JobError::NoImagesFolder(self.images.clone())),
            Ok(m) if !m.is_dir() => return Err(JobError::ImagesNotAFolder(self.images.clone())),
            Ok(_) => {}
        }
        if matches!(self.regions, RegionSource::Boxes(_))
            && spec.mask_stage() == super::spec::MaskStage::Given
        {
            return Err(JobError::BoxesNeedABoxPipeline {
                pipeline: spec.name.clone(),
            });
        }
        Ok(())
    }

    fn run_locked(
        self,
        spec: &PipelineSpec,
        load_model: impl FnOnce() -> anyhow::Result<Arc<ClipModel>>,
    ) -> anyhow::Result<IndexRunReport> {
        let lock = WriterLock::acquire(&self.out, self.wait)?;
        let mut skipped = SkippedFiles::default();
        let (mut images, issues) = match &self.regions {
            RegionSource::Coco(c) => from_coco(&self.images, c)?,
            RegionSource::Boxes(b) => from_boxes(&self.images, b)?,
            RegionSource::MaskDir(m) => from_mask_dir(&self.images, m)?,
            RegionSource::FindThem if spec.mask_stage().finds_regions() => {
                let (images, issues, passed_over) = scan_photo_folder(&self.images)?;
                skipped = passed_over;
                (images, issues)
            }
            RegionSource::FindThem => {
                return Err(NeedsRegions {
                    pipeline: spec.name.clone(),
                }
                .into())
            }
        };
        if images.is_empty() {
            let why = match issues.first() {
                Some(first) => format!(
                    "all {} items of the input were refused (the first, {}: {})",
                    issues.len(),
                    first.item,
                    first.message
                ),
                None => nothing_found(&self.regions, &self.images),
            };
            return Err(JobError::Nothing(why).into());
        }
        if let Some(n) = self.limit {
            images.truncate(n);
        }
        let (images, issues) = match self.shard {
            Some(shard) => (
                images
                    .into_iter()
                    .filter(|i| shard.keeps(&i.name))
                    .collect(),
                issues
                    .into_iter()
                    .filter(|i| shard.keeps(&i.item))
                    .collect(),
            ),
            None => (images, issues),
        };
        for i in &issues {
            self.reporter.skipped(&i.item, &i.message);
        }
        // The library uses SAM's masks when given a SAM model and proposes boxes otherwise.
        let sam = match &self.sam.dir {
            Some(dir) if spec.mask_stage().uses_sam() => {
                Some(SamModel::load_dir(dir, self.sam.device, self.sam.threads)?)
            }
            None if spec.mask_stage().needs_sam() => anyhow::bail!(
                "pipeline {} needs a SAM model: a folder with encoder.onnx + decoder.onnx",
                spec.name
            ),
            _ => None,
        };
        let model = load_model()?;
        IndexRun {
            spec,
            model: &model,
            sam,
            out: self.out.clone(),
            reporter: self.reporter.clone(),
            sync: super::run::SyncPolicy {
                // A run that sees only the first photos cannot tell vanished ones from those it was not shown.
                delete_vanished: !self.keep_vanished && self.limit.is_none(),
                input_names_regions: !spec.mask_stage().finds_regions(),
            },
            wait: self.wait,
            lock: Some(lock),
            decode: self.decode,
            cancel: self.cancel,
            skipped,
        }
        .run(images, issues)
    }
}

/// Why an input listed no photo, with where to look.
fn nothing_found(regions: &RegionSource, images: &std::path::Path) -> String {
    match regions {
        RegionSource::Coco(c) => format!("{} lists no photos", c.display()),
        RegionSource::Boxes(b) => format!("{} lists no boxes", b.display()),
        RegionSource::MaskDir(m) => format!(
            "no mask PNG in {} is named after a photo in {} (<photo stem>_<region id>.png)",
            m.display(),
            images.display()
        ),
        RegionSource::FindThem => format!(
            "no photo under {} (searched recursively for {})",
            images.display(),
            super::inputs::PHOTO_EXTENSIONS
                .map(|e| format!(".{e}"))
                .join(" ")
        ),
    }
}

/// A run that failed before it committed anything leaves no folder behind that looks like an index: the
/// lock file (and the error log) it made go, and the folder too once empty. Only for folders this run made.
fn remove_unused_index_folder(out: &std::path::Path) {
    // Under the lock, so that nobody who has started writing there since loses the file they lock.
    let Ok(lock) = WriterLock::acquire(out, LockWait::No) else {
        return;
    };
    if out.join("manifest.json").exists() {
        return;
    }
    let _ = std::fs::remove_file(out.join("errors.json"));
    lock.remove();
    let _ = std::fs::remove_dir(out);
}

#[cfg(test)]
mod tests {
    use super::Shard;

    #[test]
    fn shards_split_photos_into_disjoint_balanced_parts() {
        let names: Vec<String> = (0..4000).map(|i| format!("photos/{i:06}.jpg")).collect();
        let shards: Vec<Shard> = (0..4).map(|k| Shard::new(k, 4).unwrap()).collect();
        let mut sizes = [0usize; 4];
        for n in &names {
            let owners: Vec<usize> = (0..4).filter(|&k| shards[k].keeps(n)).collect();
            assert_eq!(owners.len(), 1, "{n} belongs to {owners:?}");
            sizes[owners[0]] += 1;
        }
        assert!(sizes.iter().all(|&s| (800..1200).contains(&s)), "{sizes:?}");
        // The split is a property of the name alone, never of the order or the run.
        assert_eq!(
            Shard::of("photos/000123.jpg", 4),
            Shard::of("photos/000123.jpg", 4)
        );
    }

    #[test]
    fn shard_specs_are_checked() {
        assert_eq!(Shard::parse("1/4"), Ok(Shard { index: 1, count: 4 }));
        for bad in ["4/4", "0/0", "x/2", "3", "-1/2"] {
            assert!(Shard::parse(bad).is_err(), "{bad} accepted");
        }
    }
}
