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
    /// What the photo's EXIF says about it (all None for photos without, and for rows indexed before it was
    /// read): the same for every region of a photo.
    #[serde(default)]
    pub photo: PhotoMeta,
}

/// A photo's capture metadata, from its EXIF block. Plain data: the index never reads photos.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PhotoMeta {
    /// When the photo was taken, as the camera wrote it, in ISO 8601 (`2024-05-01T14:03:00+02:00`; without
    /// an offset when the camera recorded none).
    pub taken_at: Option<String>,
    /// The same instant in milliseconds since the Unix epoch, UTC: what date filters compare. A time without
    /// an offset is read as UTC (the camera's wall clock is all there is).
    pub taken_at_ms: Option<i64>,
    /// "Make Model" (one of them when the other is missing; the make left out when the model repeats it).
    pub camera: Option<String>,
    /// `[latitude, longitude]` in degrees, north and east positive.
    pub gps: Option<[f64; 2]>,
    /// The photo's size in pixels, in the frame its regions are in.
    pub width: Option<u32>,
    pub height: Option<u32>,
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
    /// When the photo was taken, as its camera wrote it (ISO 8601); None when its EXIF does not say.
    pub taken_at: Option<String>,
    /// The camera's make and model; None when its EXIF does not say.
    pub camera: Option<String>,
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
    /// Taken at or after this instant (ms since the epoch, UTC).
    pub after_ms: Option<i64>,
    /// Taken before this instant (ms since the epoch, UTC; the instant itself excluded).
    pub before_ms: Option<i64>,
    /// The camera's make and model contain this, ignoring case.
    pub camera: Option<String>,
    /// Taken within this many kilometres of this place: (latitude, longitude, km), great-circle distance.
    pub near: Option<(f64, f64, f64)>,
}

/// The mean Earth radius (IUGG), in km: the haversine distance is within 0.5% of the ellipsoid's.
const EARTH_RADIUS_KM: f64 = 6371.0088;

/// The great-circle distance in km between two (latitude, longitude) points in degrees.
pub fn haversine_km(a: [f64; 2], b: [f64; 2]) -> f64 {
    let (la1, la2) = (a[0].to_radians(), b[0].to_radians());
    let dlat = la2 - la1;
    let dlon = (b[1] - a[1]).to_radians();
    let h = (dlat / 2.0).sin().powi(2) + la1.cos() * la2.cos() * (dlon / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * h.sqrt().min(1.0).asin()
}

/// Whether `needle` occurs in `hay`, ignoring case; without allocating for the ASCII names cameras have.
fn contains_ignoring_case(hay: &str, needle: &str) -> bool {
    if hay.is_ascii() && needle.is_ascii() {
        let (h, n) = (hay.as_bytes(), needle.as_bytes());
        return n.is_empty() || h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n));
    }
    hay.to_lowercase().contains(&needle.to_lowercase())
}

impl Filter {
    pub fn is_empty(&self) -> bool {
        self.image.is_none()
            && self.method.is_none()
            && self.source.is_none()
            && self.label.is_none()
            && !self.asks_photo_meta()
    }

    /// Whether the filter reads the photos' metadata (which a row without it never matches).
    pub fn asks_photo_meta(&self) -> bool {
        self.after_ms.is_some()
            || self.before_ms.is_some()
            || self.camera.is_some()
            || self.near.is_some()
    }

    /// The metadata part of [`Filter::matches`].
    pub fn matches_photo(&self, p: &PhotoMeta) -> bool {
        let when = p.taken_at_ms;
        self.after_ms.is_none_or(|a| when.is_some_and(|t| t >= a))
            && self.before_ms.is_none_or(|b| when.is_some_and(|t| t < b))
            && self.camera.as_ref().is_none_or(|c| {
                p.camera
                    .as_deref()
                    .is_some_and(|have| contains_ignoring_case(have, c))
            })
            && self.near.is_none_or(|(lat, lon, km)| {
                p.gps.is_some_and(|g| haversine_km(g, [lat, lon]) <= km)
            })
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
            && self.matches_photo(&m.photo)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn photo(ms: Option<i64>, camera: Option<&str>, gps: Option<[f64; 2]>) -> PhotoMeta {
        PhotoMeta {
            taken_at_ms: ms,
            camera: camera.map(str::to_string),
            gps,
            ..Default::default()
        }
    }

    #[test]
    fn photo_filters_keep_what_they_say_and_nothing_without_metadata() {
        let p = photo(Some(1_000), Some("Canon EOS R5"), Some([48.8566, 2.3522]));
        let bare = PhotoMeta::default();
        let f = |after_ms, before_ms, camera: Option<&str>, near| Filter {
            after_ms,
            before_ms,
            camera: camera.map(str::to_string),
            near,
            ..Default::default()
        };
        assert!(f(Some(1_000), Some(1_001), None, None).matches_photo(&p));
        assert!(!f(Some(1_001), None, None, None).matches_photo(&p));
        assert!(
            !f(None, Some(1_000), None, None).matches_photo(&p),
            "before excludes its instant"
        );
        assert!(f(None, None, Some("eos r"), None).matches_photo(&p));
        assert!(!f(None, None, Some("nikon"), None).matches_photo(&p));
        // Paris to Versailles is about 17 km.
        assert!(f(None, None, None, Some((48.8049, 2.1204, 20.0))).matches_photo(&p));
        assert!(!f(None, None, None, Some((48.8049, 2.1204, 10.0))).matches_photo(&p));
        for asks in [
            f(Some(0), None, None, None),
            f(None, Some(i64::MAX), None, None),
            f(None, None, Some(""), None),
            f(None, None, None, Some((0.0, 0.0, 20_000.0))),
        ] {
            assert!(
                !asks.matches_photo(&bare),
                "{asks:?} kept a photo without metadata"
            );
            assert!(!asks.is_empty());
        }
        assert!(Filter::default().matches_photo(&bare));
    }

    #[test]
    fn haversine_agrees_with_known_distances() {
        let (paris, london) = ([48.8566, 2.3522], [51.5074, -0.1278]);
        assert!((haversine_km(paris, london) - 343.5).abs() < 1.0);
        assert!(haversine_km(paris, paris) < 1e-9);
        // Antipodes: half the circumference, no NaN from rounding past 1.
        assert!(
            (haversine_km([0.0, 0.0], [0.0, 180.0]) - std::f64::consts::PI * EARTH_RADIUS_KM).abs()
                < 1e-6
        );
    }
}
