//! OpenAPI descriptions of the library's types that serve answers with but that live in crates which know
//! nothing of HTTP (the index's `Hit` and `MethodInfo`, the masks' `CocoRle`): schema-only mirrors, never
//! built, named as the types they describe. Each must list the fields its original serialises;
//! `tests/serve.rs` holds them to the live answers. (They derive `Serialize` only for utoipa to read their
//! serde renames.)

#![allow(dead_code)]

use utoipa::ToSchema;

/// A search result, in the shape referring-expression tools consume.
#[derive(serde::Serialize, ToSchema)]
pub struct Hit {
    /// The photo's path as indexed (relative to the images folder).
    pub image: String,
    pub region_id: String,
    /// `[x0, y0, x1, y1]` in pixels of the photo.
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
    pub mask_rle: CocoRle,
    /// Cosine similarity to the query.
    pub score: f32,
    pub method: String,
    pub source: String,
    pub label: Option<String>,
    /// Row number in the region table (`/api/regions/{row}`).
    pub row: u64,
    /// The frame `box` and `mask_rle` are in: true when the photo was turned upright by its EXIF orientation.
    pub exif_rotated: bool,
    /// When the photo was taken, as its camera wrote it (ISO 8601, with the offset when it recorded one).
    pub taken_at: Option<String>,
    /// The camera's make and model, from the photo's EXIF.
    pub camera: Option<String>,
    /// With `group_by=photo`: how many more of this photo's regions matched (the hit is the best of them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub other_matches: Option<u32>,
}

/// A mask in COCO's compressed run-length encoding.
#[derive(serde::Serialize, ToSchema)]
pub struct CocoRle {
    /// `[height, width]`.
    pub size: [u32; 2],
    pub counts: String,
}

/// How a region's embedding was made. Baselines leave the inversion parameters empty.
#[derive(serde::Serialize, ToSchema)]
pub struct MethodInfo {
    pub name: String,
    pub steps: Option<u32>,
    pub lr: Option<f32>,
    pub alpha: Option<f32>,
    pub resolution: Option<u32>,
    /// A model folder by its name only.
    pub model_id: String,
    pub weights_hash: String,
}
