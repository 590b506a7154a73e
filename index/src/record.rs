use regionseek_masks::CocoRle;
use serde::{Deserialize, Serialize};

/// How a region's embedding was made. Baselines leave the inversion parameters empty.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodInfo {
    pub name: String,
    pub steps: Option<u32>,
    pub lr: Option<f32>,
    pub alpha: Option<f32>,
    pub resolution: Option<u32>,
    pub model_id: String,
    pub weights_hash: String,
}

/// One region as the pipeline hands it to the index.
#[derive(Debug, Clone, PartialEq)]
pub struct RegionRecord {
    pub meta: RegionMeta,
    /// Any scale; the index L2-normalises it (cosine search).
    pub embedding: Vec<f32>,
}

/// Everything about a region except its vector: what the index keeps in memory to answer with hits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegionMeta {
    pub image: String,
    /// sha256 of the image file's bytes: the resume key, stable across renames and machines.
    pub image_hash: String,
    pub region_id: String,
    /// `[x0, y0, x1, y1]` in pixels of the original image.
    pub bbox: [f32; 4],
    pub mask: CocoRle,
    /// "gt", "box" or "sam".
    pub source: String,
    pub method: MethodInfo,
    /// A class name the region came with (a COCO category), when known.
    pub label: Option<String>,
    pub created_at_ms: i64,
    /// Whether the photo was turned upright by its EXIF orientation before its region was read: the frame the
    /// box and the mask are in (false: the stored frame, as Pillow opens the file).
    #[serde(default)]
    pub exif_rotated: bool,
}

impl RegionMeta {
    /// Regions are unique per (image content, region id, method).
    pub fn key(&self) -> (String, String, String) {
        (
            self.image_hash.clone(),
            self.region_id.clone(),
            self.method.name.clone(),
        )
    }
}

/// A search result, in the shape referring-expression tools consume.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hit {
    pub image: String,
    pub region_id: String,
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
    pub mask_rle: CocoRle,
    pub score: f32,
    pub method: String,
    pub source: String,
    pub label: Option<String>,
    /// Row number in the region table.
    pub row: u64,
    /// The frame `box` and `mask_rle` are in: true when the photo was turned upright by its EXIF orientation
    /// (indexed with `--exif-rotate`), false for the photo as stored (as Pillow opens it).
    pub exif_rotated: bool,
    /// With hits grouped by photo: how many more of this photo's regions matched the query (the hit is the
    /// best of them). Absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub other_matches: Option<u32>,
}

/// Restricts a search; every set field must match.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    /// The image path as indexed, or its content hash.
    pub image: Option<String>,
    pub method: Option<String>,
    pub source: Option<String>,
    pub label: Option<String>,
}

impl Filter {
    pub fn is_empty(&self) -> bool {
        self.image.is_none()
            && self.method.is_none()
            && self.source.is_none()
            && self.label.is_none()
    }

    pub fn matches(&self, m: &RegionMeta) -> bool {
        self.image
            .as_ref()
            .is_none_or(|i| *i == m.image || *i == m.image_hash)
            && self.method.as_ref().is_none_or(|x| *x == m.method.name)
            && self.source.as_ref().is_none_or(|x| *x == m.source)
            && self
                .label
                .as_ref()
                .is_none_or(|x| m.label.as_ref() == Some(x))
    }
}
