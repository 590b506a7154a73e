//! What a run indexes: photos and their regions, from a COCO instances file, a boxes JSON file, or a folder
//! of mask PNGs. Regions are plain data here; masks are made per photo when it is processed.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::masks::{BinaryMask, CocoDataset, Rle};

use super::photo_path::{check_photo_name, resolve_under_canonical, PhotoPathError};

/// How a region's mask is known before the mask stage.
#[derive(Debug, Clone)]
pub enum RegionShape {
    /// A COCO mask (decoded when the photo is processed).
    Rle(Rle),
    /// A mask PNG at the photo's resolution.
    MaskFile(PathBuf),
    /// Only a box: the mask comes from SAM or the box itself.
    Box,
}

#[derive(Debug, Clone)]
pub struct RegionInput {
    pub id: String,
    /// `[x0, y0, x1, y1]` in pixels; for masks without a box, the mask's bounding box once decoded.
    pub bbox: Option<[f32; 4]>,
    pub shape: RegionShape,
    pub label: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ImageInput {
    /// Path as given by the input (relative to the images folder).
    pub name: String,
    pub path: PathBuf,
    /// COCO image id, when the input has one (for COCO-style result export).
    pub coco_id: Option<i64>,
    pub regions: Vec<RegionInput>,
}

/// A problem with one input item, reported and skipped.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InputIssue {
    pub item: String,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{path}: {message}")]
    File { path: String, message: String },
}

fn file_error(path: &Path, message: impl std::fmt::Display) -> InputError {
    InputError::File {
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

/// The images folder with its symlinks resolved, against which every photo an input names is checked.
struct ImagesRoot {
    given: PathBuf,
    canonical: Option<PathBuf>,
}

impl ImagesRoot {
    fn new(images_dir: &Path) -> Self {
        Self {
            given: images_dir.to_path_buf(),
            canonical: images_dir.canonicalize().ok(),
        }
    }

    /// Where the photo an input names is read from. A name that leaves the folder (absolute, `..`, or a
    /// symlink out of it) is refused here, before any work; a photo that does not exist yet is left for the
    /// decode stage to report, as before.
    fn photo(&self, name: &str) -> Result<PathBuf, PhotoPathError> {
        check_photo_name(name)?;
        match &self.canonical {
            Some(root) => match resolve_under_canonical(root, name) {
                Ok(p) => Ok(p),
                // Absent for now: the decode stage says so for this photo. A dangling symlink is not
                // absent, and could come to point anywhere: refused.
                Err(PhotoPathError::Missing(_))
                    if std::fs::symlink_metadata(self.given.join(name)).is_err() =>
                {
                    Ok(self.given.join(name))
                }
                Err(PhotoPathError::Missing(_)) => {
                    Err(PhotoPathError::LeavesRoot(name.to_string()))
                }
                Err(e) => Err(e),
            },
            None => Ok(self.given.join(name)),
        }
    }
}

/// A COCO instances file: every well-formed, non-crowd annotation is a region with its mask and category.
/// Crowd regions are skipped (they are not single objects); malformed entries are issues.
pub fn from_coco(
    images_dir: &Path,
    coco_path: &Path,
) -> Result<(Vec<ImageInput>, Vec<InputIssue>), InputError> {
    let coco = CocoDataset::read(coco_path).map_err(|e| file_error(coco_path, e))?;
    let mut issues: Vec<InputIssue> = coco
        .errors
        .iter()
        .map(|e| InputIssue {
            item: match e.id {
                Some(id) => format!("{} #{} (id {id})", e.kind, e.index),
                None => format!("{} #{}", e.kind, e.index),
            },
            message: e.message.clone(),
        })
        .collect();
    let names = coco.category_names();
    let by_image = coco.annotations_by_image();
    let root = ImagesRoot::new(images_dir);
    let mut out = Vec::new();
    for img in &coco.images {
        let path = match root.photo(&img.file_name) {
            Ok(p) => p,
            Err(e) => {
                issues.push(InputIssue {
                    item: format!("image {} (id {})", img.file_name, img.id),
                    message: e.to_string(),
                });
                continue;
            }
        };
        let mut regions = Vec::new();
        for a in by_image.get(&img.id).map(|v| v.as_slice()).unwrap_or(&[]) {
            if a.iscrowd {
                continue;
            }
            match a.to_rle(img.height, img.width) {
                Ok(rle) => {
                    let b = a.xyxy();
                    regions.push(RegionInput {
                        id: a.id.to_string(),
                        bbox: Some([b[0] as f32, b[1] as f32, b[2] as f32, b[3] as f32]),
                        shape: RegionShape::Rle(rle),
                        label: names.get(&a.category_id).map(|s| s.to_string()),
                    });
                }
                Err(e) => issues.push(InputIssue {
                    item: format!("annotation {} of {}", a.id, img.file_name),
                    message: e.to_string(),
                }),
            }
        }
        out.push(ImageInput {
            name: img.file_name.clone(),
            path,
            coco_id: Some(img.id),
            regions,
        });
    }
    Ok((out, issues))
}

/// One entry of a boxes file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BoxEntry {
    image: String,
    #[serde(rename = "box")]
    bbox: Vec<f64>,
    #[serde(default)]
    id: Option<serde_json::Value>,
    #[serde(default)]
    label: Option<String>,
}

/// A boxes file: a JSON array of `{"image": "a.jpg", "box": [x0, y0, x1, y1], "id": "r1", "label": "dog"}`
/// (`id` defaults to the box's position among its image's boxes; `label` is optional).
pub fn from_boxes(
    images_dir: &Path,
    boxes_path: &Path,
) -> Result<(Vec<ImageInput>, Vec<InputIssue>), InputError> {
    let text = std::fs::read_to_string(boxes_path).map_err(|e| file_error(boxes_path, e))?;
    let raw: Vec<serde_json::Value> = serde_json::from_str(&text).map_err(|e| {
        file_error(
            boxes_path,
            format!("expected a JSON array of box entries: {e}"),
        )
    })?;
    let mut issues = Vec::new();
    let root = ImagesRoot::new(images_dir);
    let mut by_image: BTreeMap<String, (PathBuf, Vec<RegionInput>)> = BTreeMap::new();
    for (i, v) in raw.into_iter().enumerate() {
        let entry: BoxEntry = match serde_json::from_value(v) {
            Ok(e) => e,
            Err(e) => {
                issues.push(InputIssue {
                    item: format!("box entry #{i}"),
                    message: e.to_string(),
                });
                continue;
            }
        };
        if entry.bbox.len() != 4 {
            issues.push(InputIssue {
                item: format!("box entry #{i} ({})", entry.image),
                message: format!(
                    "box has {} numbers, expected [x0, y0, x1, y1]",
                    entry.bbox.len()
                ),
            });
            continue;
        }
        let regions = match by_image.entry(entry.image.clone()) {
            std::collections::btree_map::Entry::Occupied(o) => &mut o.into_mut().1,
            std::collections::btree_map::Entry::Vacant(v) => match root.photo(&entry.image) {
                Ok(path) => &mut v.insert((path, Vec::new())).1,
                Err(e) => {
                    issues.push(InputIssue {
                        item: format!("box entry #{i} ({})", entry.image),
                        message: e.to_string(),
                    });
                    continue;
                }
            },
        };
        let id = match entry.id {
            Some(serde_json::Value::String(s)) => s,
            Some(other) => other.to_string(),
            None => regions.len().to_string(),
        };
        // The region id is the resume key: two boxes under one id would silently become one region.
        if regions.iter().any(|r| r.id == id) {
            issues.push(InputIssue {
                item: format!("box entry #{i} ({} region {id})", entry.image),
                message: format!(
                    "region id {id} is used twice for {}; the first box with it is kept",
                    entry.image
                ),
            });
            continue;
        }
        let b = &entry.bbox;
        regions.push(RegionInput {
            id,
            bbox: Some([b[0] as f32, b[1] as f32, b[2] as f32, b[3] as f32]),
            shape: RegionShape::Box,
            label: entry.label,
        });
    }
    Ok((
        by_image
            .into_iter()
            .map(|(name, (path, regions))| ImageInput {
                path,
                name,
                coco_id: None,
                regions,
            })
            .collect(),
        issues,
    ))
}

/// Extensions (any case) of the files a photo folder is read for. HEIC and AVIF are listed so that such photos
/// fail by name ("unsupported format") instead of being passed over in silence.
pub const PHOTO_EXTENSIONS: [&str; 13] = [
    "jpg", "jpeg", "jpe", "jfif", "png", "webp", "tif", "tiff", "bmp", "gif", "heic", "heif",
    "avif",
];

fn is_photo(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| PHOTO_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Whether a file found in a folder is a symlink to somewhere outside it (or cannot be resolved at all).
fn leaves(root: Option<&Path>, file: &Path) -> bool {
    match (root, file.canonicalize()) {
        (Some(root), Ok(target)) => !target.starts_with(root),
        _ => true,
    }
}

/// What a folder scan passed over without it being a failure.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SkippedFiles {
    /// Files that are not photos by their extension (videos, text, sidecars, ...).
    pub non_photos: usize,
    /// Hidden files and folders (names starting with a dot), not entered.
    pub hidden: usize,
}

/// Every photo under a folder, recursively (sorted, symlinked folders not followed), each with no regions: for
/// pipelines whose mask stage finds the regions (`library`, `auto-sam`, `auto-grid`). Names are relative to the
/// folder.
pub fn from_photo_folder(
    images_dir: &Path,
) -> Result<(Vec<ImageInput>, Vec<InputIssue>), InputError> {
    scan_photo_folder(images_dir).map(|(images, issues, _)| (images, issues))
}

/// [`from_photo_folder`], also counting what it passed over: hidden entries (not entered) and files that are
/// not photos. A symlink leading out of the folder is an issue, never followed.
pub fn scan_photo_folder(
    images_dir: &Path,
) -> Result<(Vec<ImageInput>, Vec<InputIssue>, SkippedFiles), InputError> {
    let mut found = Vec::new();
    let mut issues = Vec::new();
    let mut skipped = SkippedFiles::default();
    let root = images_dir.canonicalize().ok();
    let mut stack = vec![images_dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if dir == images_dir => return Err(file_error(images_dir, e)),
            Err(e) => {
                issues.push(InputIssue {
                    item: dir.display().to_string(),
                    message: format!("cannot list this folder: {e}"),
                });
                continue;
            }
        };
        for e in entries.flatten() {
            let p = e.path();
            if e.file_name().to_string_lossy().starts_with('.') {
                skipped.hidden += 1;
                continue;
            }
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(p),
                Ok(t) if t.is_symlink() && p.is_file() && is_photo(&p) => {
                    match leaves(root.as_deref(), &p) {
                        false => found.push(p),
                        true => issues.push(InputIssue {
                            item: p.display().to_string(),
                            message: "a symlink that leads outside the folder: not followed".into(),
                        }),
                    }
                }
                Ok(_) if p.is_file() && is_photo(&p) => found.push(p),
                Ok(t) if t.is_file() => skipped.non_photos += 1,
                _ => {}
            }
        }
    }
    found.sort();
    let images = found
        .into_iter()
        .map(|p| {
            let name = p
                .strip_prefix(images_dir)
                .unwrap_or(&p)
                .to_string_lossy()
                .into_owned();
            ImageInput {
                name,
                path: p,
                coco_id: None,
                regions: Vec::new(),
            }
        })
        .collect();
    Ok((images, issues, skipped))
}

/// A folder of mask PNGs named `<image stem>_<region id>.png` (what `regionseek sam --out` writes), for the
/// photos of `images_dir`.
pub fn from_mask_dir(
    images_dir: &Path,
    masks_dir: &Path,
) -> Result<(Vec<ImageInput>, Vec<InputIssue>), InputError> {
    let list = |dir: &Path| -> Result<Vec<PathBuf>, InputError> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| file_error(dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        v.sort();
        Ok(v)
    };
    let root = images_dir.canonicalize().ok();
    let mut issues = Vec::new();
    let images: Vec<PathBuf> = list(images_dir)?
        .into_iter()
        .filter(|p| is_photo(p))
        .filter(|p| {
            let out = p.is_symlink() && leaves(root.as_deref(), p);
            if out {
                issues.push(InputIssue {
                    item: p.display().to_string(),
                    message: "a symlink that leads outside the images folder: not followed".into(),
                });
            }
            !out
        })
        .collect();
    let masks: Vec<PathBuf> = list(masks_dir)?
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    let mut by_stem: HashMap<String, Vec<RegionInput>> = HashMap::new();
    let stems: Vec<String> = images
        .iter()
        .filter_map(|p| p.file_stem()?.to_str().map(String::from))
        .collect();
    for m in masks {
        let name = m
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        // The longest image stem that prefixes the mask's name owns it (stems may contain '_').
        let owner = stems
            .iter()
            .filter(|s| {
                name.len() > s.len() + 1
                    && name.starts_with(s.as_str())
                    && name.as_bytes()[s.len()] == b'_'
            })
            .max_by_key(|s| s.len());
        match owner {
            Some(stem) => by_stem.entry(stem.clone()).or_default().push(RegionInput {
                id: name[stem.len() + 1..].to_string(),
                bbox: None,
                shape: RegionShape::MaskFile(m.clone()),
                label: None,
            }),
            None => issues.push(InputIssue {
                item: m.display().to_string(),
                message: "no photo in the images folder has this mask's stem (expected <image stem>_<region>.png)".into(),
            }),
        }
    }
    Ok((
        images
            .into_iter()
            .filter_map(|p| {
                let stem = p.file_stem()?.to_str()?.to_string();
                let regions = by_stem.remove(&stem)?;
                Some(ImageInput {
                    name: p.file_name()?.to_str()?.to_string(),
                    path: p,
                    coco_id: None,
                    regions,
                })
            })
            .collect(),
        issues,
    ))
}

/// The given mask of a region, at the photo's size.
pub fn given_mask(region: &RegionInput, width: usize, height: usize) -> Result<BinaryMask, String> {
    let mask = match &region.shape {
        RegionShape::Rle(rle) => rle.decode(),
        RegionShape::MaskFile(p) => {
            BinaryMask::read(p).map_err(|e| format!("{}: {e}", p.display()))?
        }
        RegionShape::Box => {
            return Err(
                "this region has only a box: use a pipeline with a sam or box-mask stage".into(),
            )
        }
    };
    if mask.width != width || mask.height != height {
        return Err(format!(
            "mask is {}x{}, the photo {width}x{height}",
            mask.width, mask.height
        ));
    }
    Ok(mask)
}
