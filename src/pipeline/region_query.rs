//! Query by example: a region of any photo (a mask, a box, a point SAM turns into a mask, or the whole photo)
//! embedded exactly as the index embedded its own regions, with the settings its rows recorded, so that the
//! query lives in the index's space and an indexed region asked with its own mask finds itself first. Texts
//! can be added to or taken from the region's embedding (rclip's `+`/`-` queries), each with its weight.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

use image::RgbImage;

use crate::baselines::Baseline;
use crate::cancel::Cancel;
use crate::clip::{preprocess, ClipModel};
use crate::decode::DecodeOptions;
use crate::index::{tier_rank, CocoRle, Hit, MethodInfo, RegionIndex};
use crate::invert::{validate_mask, InversionConfig};
use crate::masks::{BinaryMask, Rle};
use crate::sam::SamModel;

use super::library::IMAGE_SOURCE;
use super::query::{
    check_model, embed_queries, load_model, search_query, unit, QueryError, SearchAnswer,
    SearchOptions, SearchReport, TextQuery,
};
use super::run::embed_masks;
use super::spec::EmbedStage;

/// What part of the query photo to look for.
#[derive(Debug, Clone, PartialEq)]
pub enum RegionPrompt {
    /// The whole photo (its CLS embedding, as the library's whole-photo rows).
    WholePhoto,
    /// A mask at the photo's size.
    Mask(BinaryMask),
    /// `[x0, y0, x1, y1]` in the photo's pixels, filled as the index fills a box without SAM.
    Box([f32; 4]),
    /// `[x, y]`: SAM's best mask for one positive point there.
    Point([f32; 2]),
}

/// The largest weight a text takes (every embedding is unit length: beyond this the region is lost anyway).
pub const MAX_TEXT_WEIGHT: f32 = 100.0;
/// Texts one region query mixes in at most.
pub const MAX_TEXTS: usize = 16;

/// A text added to (positive weight) or taken from (negative) the region's embedding.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightedText {
    pub text: String,
    pub weight: f32,
}

impl FromStr for WeightedText {
    type Err = RegionQueryError;

    /// `TEXT` (weight 1) or `W:TEXT` with W a number: `0.5:red`, `-1:blurry`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (weight, text) = match s.split_once(':') {
            Some((w, t)) => match w.trim().parse::<f32>() {
                Ok(w) if w.is_finite() && w.abs() <= MAX_TEXT_WEIGHT => (w, t),
                Ok(_) => return Err(RegionQueryError::BadWeight(s.to_string())),
                Err(_) => (1.0, s),
            },
            None => (1.0, s),
        };
        if text.trim().is_empty() {
            return Err(RegionQueryError::Query(QueryError::EmptyText));
        }
        Ok(Self {
            text: text.to_string(),
            weight,
        })
    }
}

impl WeightedText {
    /// The same text with the opposite weight (a `--minus` text).
    pub fn negated(self) -> Self {
        Self {
            weight: -self.weight,
            ..self
        }
    }
}

/// Why a region query cannot run, in words for the person who asked.
#[derive(Debug, thiserror::Error)]
pub enum RegionQueryError {
    #[error("a box is four numbers x0,y0,x1,y1 (got `{0}`)")]
    BadBox(String),
    #[error("a point is two numbers x,y (got `{0}`)")]
    BadPoint(String),
    #[error(
        "a text's weight must be a number from -{MAX_TEXT_WEIGHT} to {MAX_TEXT_WEIGHT} (got `{0}`)"
    )]
    BadWeight(String),
    #[error("{0} texts were given; a region query mixes in at most {MAX_TEXTS}")]
    TooManyTexts(usize),
    #[error("the box [{x0}, {y0}, {x1}, {y1}] is not inside the {width}x{height} photo (x0 < x1, y0 < y1, within it)")]
    BoxOffPhoto {
        x0: f32,
        y0: f32,
        x1: f32,
        y1: f32,
        width: usize,
        height: usize,
    },
    #[error("the point ({x}, {y}) is not on the {width}x{height} photo")]
    PointOffPhoto {
        x: f32,
        y: f32,
        width: usize,
        height: usize,
    },
    #[error("the mask is {mask_width}x{mask_height}, the photo {width}x{height}: a mask must have the photo's size")]
    MaskSize {
        mask_width: usize,
        mask_height: usize,
        width: usize,
        height: usize,
    },
    #[error("the mask: {0}")]
    BadMask(String),
    #[error("a point needs a SAM model to turn it into a region (give a SAM folder: --sam DIR), or give a box or a mask")]
    NoSam,
    #[error("SAM could not segment at the point: {0}")]
    Sam(String),
    #[error("the photo: {0}")]
    Photo(String),
    /// An indexed photo that cannot be read where the index says it is.
    #[error("the photo {name}: {source}")]
    IndexedPhoto {
        name: String,
        source: super::photo_path::PhotoPathError,
    },
    #[error("embedding the region failed: {0}")]
    Embed(String),
    #[error("the query was cancelled (its time ran out)")]
    Cancelled,
    #[error("the texts cancel the region's embedding out: nothing is left to search with")]
    NothingLeft,
    #[error(transparent)]
    Query(#[from] QueryError),
}

impl RegionQueryError {
    /// The asker's mistake (a client error), not the server's.
    pub fn is_user_error(&self) -> bool {
        match self {
            Self::Embed(_) | Self::Sam(_) | Self::Cancelled => false,
            Self::Query(q) => !matches!(
                q,
                QueryError::Model { .. } | QueryError::Index(_) | QueryError::Embed(_)
            ),
            _ => true,
        }
    }
}

/// Parses `x0,y0,x1,y1`.
pub fn parse_box(text: &str) -> Result<[f32; 4], RegionQueryError> {
    parse_numbers::<4>(text).ok_or_else(|| RegionQueryError::BadBox(text.to_string()))
}

/// Parses `x,y`.
pub fn parse_point(text: &str) -> Result<[f32; 2], RegionQueryError> {
    parse_numbers::<2>(text).ok_or_else(|| RegionQueryError::BadPoint(text.to_string()))
}

fn parse_numbers<const N: usize>(text: &str) -> Option<[f32; N]> {
    let values: Vec<f32> = text
        .split(',')
        .map(|v| v.trim().parse::<f32>().ok().filter(|v| v.is_finite()))
        .collect::<Option<_>>()?;
    values.try_into().ok()
}

/// How an index embedded its regions: the method of its best tier (the library's MaskInversion rows over
/// their quick mask-pool rows), with the settings recorded in its rows, and the photo frame they are in.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexEmbedding {
    /// None: the index holds no region rows to learn from (only whole photos, or nothing yet): regions are
    /// inverted with the reference's defaults.
    pub method: Option<MethodInfo>,
    /// Its photos were turned upright by their EXIF orientation (`--exif-rotate`) when indexed.
    pub exif_rotated: bool,
}

impl IndexEmbedding {
    /// Read from the index's live rows: the best tier among its regions, the most common settings within it.
    pub fn of(index: &RegionIndex) -> Self {
        // A handful of distinct methods at most: a list is enough (MethodInfo holds floats, so no hashing).
        let mut counts: Vec<(&MethodInfo, usize)> = Vec::new();
        let (mut rotated, mut upright_unknown) = (0usize, 0usize);
        for (row, meta) in index.rows().iter().enumerate() {
            if index.is_deleted(row) {
                continue;
            }
            if meta.exif_rotated {
                rotated += 1;
            } else {
                upright_unknown += 1;
            }
            if meta.source != IMAGE_SOURCE {
                match counts.iter_mut().find(|(m, _)| **m == meta.method) {
                    Some((_, n)) => *n += 1,
                    None => counts.push((&meta.method, 1)),
                }
            }
        }
        let method = counts
            .into_iter()
            .max_by_key(|(m, n)| (tier_rank(&m.name), *n))
            .map(|(m, _)| m.clone());
        Self {
            method,
            exif_rotated: rotated > upright_unknown,
        }
    }

    /// How to decode a query photo so that it is in the frame the index's boxes are in.
    pub fn decode_options(&self, max_pixels: u64) -> DecodeOptions {
        DecodeOptions {
            max_pixels,
            exif_rotate: self.exif_rotated,
        }
    }

    /// The method's name as hits call it (`maskinversion`, `mask-pool`, ...).
    pub fn method_name(&self) -> &str {
        self.method
            .as_ref()
            .map_or(EmbedStage::Invert.name(), |m| m.name.as_str())
    }

    fn stage(&self) -> Result<EmbedStage, RegionQueryError> {
        let name = self.method_name();
        if name == EmbedStage::Invert.name() {
            return Ok(EmbedStage::Invert);
        }
        name.parse::<Baseline>()
            .map(EmbedStage::Baseline)
            .map_err(|_| {
                RegionQueryError::Embed(format!(
                    "the index's regions were embedded by `{name}`, which a query cannot repeat"
                ))
            })
    }

    /// The inversion as the index's rows record it (the reference's defaults where they say nothing).
    pub fn inversion_config(&self, cancel: Cancel) -> InversionConfig {
        let d = InversionConfig::default();
        let m = self.method.as_ref();
        InversionConfig {
            size: m.and_then(|m| m.resolution).map_or(d.size, |v| v as usize),
            steps: m.and_then(|m| m.steps).map_or(d.steps, |v| v as usize),
            lr: m.and_then(|m| m.lr).map_or(d.lr, |v| v as f64),
            alpha: m.and_then(|m| m.alpha).map_or(d.alpha, |v| v as f64),
            cancel,
            ..d
        }
    }
}

/// The query's region on its photo: None for the whole photo.
pub fn region_mask(
    image: &RgbImage,
    prompt: &RegionPrompt,
    sam: Option<&mut SamModel>,
) -> Result<Option<BinaryMask>, RegionQueryError> {
    let (width, height) = (image.width() as usize, image.height() as usize);
    let mask = match prompt {
        RegionPrompt::WholePhoto => return Ok(None),
        RegionPrompt::Mask(mask) => {
            if (mask.width, mask.height) != (width, height) {
                return Err(RegionQueryError::MaskSize {
                    mask_width: mask.width,
                    mask_height: mask.height,
                    width,
                    height,
                });
            }
            mask.clone()
        }
        RegionPrompt::Box(b) => {
            let [x0, y0, x1, y1] = *b;
            let inside = x0 >= 0.0
                && y0 >= 0.0
                && x1 <= width as f32
                && y1 <= height as f32
                && x0 < x1
                && y0 < y1;
            let off = || RegionQueryError::BoxOffPhoto {
                x0,
                y0,
                x1,
                y1,
                width,
                height,
            };
            if !inside {
                return Err(off());
            }
            crate::sam::box_mask(*b, width, height).map_err(|_| off())?
        }
        RegionPrompt::Point([x, y]) => {
            if !(*x >= 0.0 && *y >= 0.0 && *x < width as f32 && *y < height as f32) {
                return Err(RegionQueryError::PointOffPhoto {
                    x: *x,
                    y: *y,
                    width,
                    height,
                });
            }
            let sam = sam.ok_or(RegionQueryError::NoSam)?;
            let embedding = sam
                .embed(image)
                .map_err(|e| RegionQueryError::Sam(e.to_string()))?;
            sam.predict_point(&embedding, [*x, *y])
                .map_err(|e| RegionQueryError::Sam(e.to_string()))?
                .mask
        }
    };
    validate_mask(&mask, width, height).map_err(RegionQueryError::BadMask)?;
    Ok(Some(mask))
}

/// The region's embedding (any scale) by the index's method; the whole photo's CLS without a mask.
pub fn embed_region(
    model: &ClipModel,
    how: &IndexEmbedding,
    image: &RgbImage,
    mask: Option<&BinaryMask>,
    cancel: &Cancel,
) -> Result<Vec<f32>, RegionQueryError> {
    let Some(mask) = mask else {
        return photo_cls(model, image);
    };
    let cfg = how.inversion_config(cancel.clone());
    let found = embed_masks(model, image, std::slice::from_ref(mask), how.stage()?, &cfg);
    // A cancelled inversion fails with the inverter's own words: it is a cancellation, not a failure.
    if cancel.is_cancelled() {
        return Err(RegionQueryError::Cancelled);
    }
    found
        .map_err(RegionQueryError::Embed)?
        .pop()
        .ok_or_else(|| RegionQueryError::Embed("no embedding came back".into()))?
        .map_err(RegionQueryError::Embed)
}

/// The photo's CLS embedding at the model's resolution, squashed: the library's whole-photo rows.
fn photo_cls(model: &ClipModel, image: &RgbImage) -> Result<Vec<f32>, RegionQueryError> {
    let forward = || -> candle_core::Result<Vec<f32>> {
        let size = model.config.vision.image_size as u32;
        let pixels = preprocess::squash(image, size, &model.config.normalization, &model.device)?;
        let (cls, _) = model.vision.forward_cls_and_patch_tokens(&pixels)?;
        cls.get(0)?.to_vec1::<f32>()
    };
    forward().map_err(|e| RegionQueryError::Embed(e.to_string()))
}

/// The region's unit embedding plus each text's unit embedding times its weight, as one query.
pub fn mix_texts(
    model: &ClipModel,
    region: &[f32],
    texts: &[WeightedText],
) -> Result<TextQuery, RegionQueryError> {
    let mut mixed: Vec<f64> = unit(region).into_iter().map(f64::from).collect();
    for (t, q) in texts.iter().zip(embed_texts(model, texts)?) {
        for (m, v) in mixed.iter_mut().zip(&q.embedding) {
            *m += t.weight as f64 * *v as f64;
        }
    }
    let norm = mixed.iter().map(|v| v * v).sum::<f64>().sqrt();
    if !(norm > 1e-4) {
        return Err(RegionQueryError::NothingLeft);
    }
    let mixed: Vec<f32> = mixed.iter().map(|v| (v / norm) as f32).collect();
    Ok(TextQuery::from_vector(&mixed, region.len())?)
}

/// The texts' query embeddings (checked for their number first).
fn embed_texts(
    model: &ClipModel,
    texts: &[WeightedText],
) -> Result<Vec<TextQuery>, RegionQueryError> {
    if texts.len() > MAX_TEXTS {
        return Err(RegionQueryError::TooManyTexts(texts.len()));
    }
    if texts.is_empty() {
        return Ok(Vec::new());
    }
    let words: Vec<String> = texts.iter().map(|t| t.text.clone()).collect();
    Ok(embed_queries(model, &words)?)
}

/// A region query: what to look for on which photo, and the texts mixed in.
pub struct RegionQuery<'a> {
    pub image: &'a RgbImage,
    pub prompt: RegionPrompt,
    pub texts: Vec<WeightedText>,
}

/// What a region query searched with, for the asker to see beside the hits.
#[derive(Debug, Clone, serde::Serialize)]
#[cfg_attr(feature = "serve", derive(utoipa::ToSchema))]
pub struct QueryRegionReport {
    /// How the region was embedded (the index's method) or `image` for the whole photo.
    pub method: String,
    /// The region's box in the query photo, `[x0, y0, x1, y1]` (the whole photo without a region).
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
    /// The region's mask (COCO RLE), so that a SAM point's region can be shown.
    #[cfg_attr(feature = "serve", schema(value_type = Object))]
    pub mask_rle: Option<CocoRle>,
    pub width: u32,
    pub height: u32,
    /// Time to embed the region (SAM and the inversion included), in milliseconds.
    pub embed_ms: f64,
    /// The texts mixed in, with their weights.
    pub texts: Vec<(String, f32)>,
}

/// A region query's answer.
#[derive(Debug, Clone)]
pub struct RegionAnswer {
    pub answer: SearchAnswer,
    pub region: QueryRegionReport,
    /// Time to search once the query was embedded, in milliseconds.
    pub search_ms: f64,
}

/// Embeds the query's region (and texts) as the index embeds its regions, then searches the index.
pub fn search_region(
    index: &RegionIndex,
    how: &IndexEmbedding,
    model: &ClipModel,
    query: &RegionQuery,
    options: &SearchOptions,
    sam: Option<&mut SamModel>,
    cancel: &Cancel,
) -> Result<RegionAnswer, RegionQueryError> {
    let t = Instant::now();
    if query.texts.len() > MAX_TEXTS {
        return Err(RegionQueryError::TooManyTexts(query.texts.len()));
    }
    let mask = region_mask(query.image, &query.prompt, sam)?;
    let embedding = embed_region(model, how, query.image, mask.as_ref(), cancel)?;
    let mixed = mix_texts(model, &embedding, &query.texts)?;
    let embed_ms = t.elapsed().as_secs_f64() * 1e3;
    let (w, h) = query.image.dimensions();
    let region = QueryRegionReport {
        method: if mask.is_some() {
            how.method_name().to_string()
        } else {
            IMAGE_SOURCE.to_string()
        },
        bbox: mask
            .as_ref()
            .and_then(|m| m.bbox())
            .map_or([0.0, 0.0, w as f32, h as f32], |b| b.map(|v| v as f32)),
        mask_rle: mask.as_ref().map(|m| Rle::encode(m).to_coco()),
        width: w,
        height: h,
        embed_ms,
        texts: query
            .texts
            .iter()
            .map(|t| (t.text.clone(), t.weight))
            .collect(),
    };
    let t = Instant::now();
    let answer = search_query(index, &mixed, options)?;
    Ok(RegionAnswer {
        answer,
        region,
        search_ms: t.elapsed().as_secs_f64() * 1e3,
    })
}

/// A region query's answer as front doors report it (the CLI's `search --like-image --json`, serve's
/// `/api/search/region`): the search's report, what the region was, and the time the search itself took.
#[derive(Debug, Clone, serde::Serialize)]
#[cfg_attr(feature = "serve", derive(utoipa::ToSchema))]
pub struct RegionSearchReport {
    #[serde(flatten)]
    pub report: SearchReport,
    pub region: QueryRegionReport,
    /// Time to search with the embedded region, in milliseconds (`ms` is the whole query).
    pub search_ms: f64,
}

impl RegionSearchReport {
    /// `query` names what was asked (e.g. `photo.jpg, box 10,20,80,90`).
    pub fn new(query: &str, answer: RegionAnswer, ms: f64) -> Self {
        Self {
            report: SearchReport::new(query, answer.answer, ms),
            region: answer.region,
            search_ms: answer.search_ms,
        }
    }
}

/// An index opened for region queries, with its whole model (the vision tower embeds the region, the text
/// tower the texts mixed in) and how its regions were embedded: what the CLI and Python search with.
pub struct RegionSearcher {
    index: RegionIndex,
    model: Arc<ClipModel>,
    how: IndexEmbedding,
}

impl RegionSearcher {
    /// Opens the index and its model (`model` overrides the one its manifest names).
    pub fn open(
        dir: &Path,
        model: Option<&str>,
        device: &candle_core::Device,
    ) -> Result<Self, QueryError> {
        let index = RegionIndex::open(dir)?;
        let loaded = load_model(&index, model, device)?;
        Self::with_model(index, Arc::new(loaded))
    }

    /// An opened index with its model already loaded (checked to embed into the index's space).
    pub fn with_model(index: RegionIndex, model: Arc<ClipModel>) -> Result<Self, QueryError> {
        check_model(&index, model.as_ref()).map_err(|e| QueryError::Space(format!("{e:#}")))?;
        let how = IndexEmbedding::of(&index);
        Ok(Self { index, model, how })
    }

    pub fn index(&self) -> &RegionIndex {
        &self.index
    }

    pub fn model(&self) -> &ClipModel {
        &self.model
    }

    pub fn embedding(&self) -> &IndexEmbedding {
        &self.how
    }

    /// Reads a query photo from a file in the frame the index's regions are in.
    pub fn load_photo(&self, path: &Path, max_pixels: u64) -> Result<RgbImage, RegionQueryError> {
        crate::decode::load_rgb_with(path, &self.how.decode_options(max_pixels))
            .map_err(|e| RegionQueryError::Photo(e.message))
    }

    pub fn search(
        &self,
        query: &RegionQuery,
        options: &SearchOptions,
        sam: Option<&mut SamModel>,
        cancel: &Cancel,
    ) -> Result<RegionAnswer, RegionQueryError> {
        search_region(
            &self.index,
            &self.how,
            &self.model,
            query,
            options,
            sam,
            cancel,
        )
    }
}

/// The photo an indexed region is on, read from `images_root` (never from outside it) in the frame the
/// region was indexed in: what a query about a photo already in the index starts from.
pub fn indexed_photo(
    images_root: &Path,
    hit: &Hit,
    max_pixels: u64,
) -> Result<RgbImage, RegionQueryError> {
    let unreadable = |source| RegionQueryError::IndexedPhoto {
        name: hit.image.clone(),
        source,
    };
    let mut file = super::photo_path::open_photo(images_root, &hit.image).map_err(unreadable)?;
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut file, &mut bytes)
        .map_err(|e| RegionQueryError::Photo(format!("cannot read {}: {}", hit.image, e.kind())))?;
    let options = DecodeOptions {
        max_pixels,
        exif_rotate: hit.exif_rotated,
    };
    crate::decode::decode_rgb(&bytes, Path::new(&hit.image), &options)
        .map_err(|e| RegionQueryError::Photo(format!("{}: {}", hit.image, e.message)))
}

/// Reads a mask PNG (any non-zero pixel is in the region), refusing one over `max_pixels`.
pub fn read_mask(path: &Path, max_pixels: u64) -> Result<BinaryMask, RegionQueryError> {
    BinaryMask::read_with_limit(path, max_pixels)
        .map_err(|e| RegionQueryError::BadMask(format!("{}: {e}", path.display())))
}

/// A mask sent as PNG bytes (an upload), refusing one over `max_pixels` before it is decoded.
pub fn mask_from_png(bytes: &[u8], max_pixels: u64) -> Result<BinaryMask, RegionQueryError> {
    use image::ImageDecoder;
    let unreadable =
        |e: image::ImageError| RegionQueryError::BadMask(format!("not a readable PNG ({e})"));
    if image::guess_format(bytes).ok() != Some(image::ImageFormat::Png) {
        return Err(RegionQueryError::BadMask(
            "a mask must be a PNG (white or any non-zero pixel inside the region)".into(),
        ));
    }
    let decoder =
        image::codecs::png::PngDecoder::new(std::io::Cursor::new(bytes)).map_err(unreadable)?;
    let (w, h) = decoder.dimensions();
    if w as u64 * h as u64 > max_pixels {
        return Err(RegionQueryError::BadMask(format!(
            "{w}x{h} is over the limit of {max_pixels} pixels"
        )));
    }
    let img = image::DynamicImage::from_decoder(decoder).map_err(unreadable)?;
    Ok(BinaryMask::from_image(&img))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_texts_read_an_optional_number_before_a_colon() {
        let t: WeightedText = "red".parse().unwrap();
        assert_eq!((t.text.as_str(), t.weight), ("red", 1.0));
        let t: WeightedText = "0.5:red car".parse().unwrap();
        assert_eq!((t.text.as_str(), t.weight), ("red car", 0.5));
        let t: WeightedText = "-1:blurry".parse().unwrap();
        assert_eq!((t.text.as_str(), t.weight), ("blurry", -1.0));
        // A colon after words is part of the text.
        let t: WeightedText = "time: noon".parse().unwrap();
        assert_eq!((t.text.as_str(), t.weight), ("time: noon", 1.0));
        assert!("inf:red".parse::<WeightedText>().is_err());
        assert!("1e20:red".parse::<WeightedText>().is_err());
        assert_eq!("-100:red".parse::<WeightedText>().unwrap().weight, -100.0);
        assert!("2: ".parse::<WeightedText>().is_err());
        assert_eq!(
            "2:x".parse::<WeightedText>().unwrap().negated().weight,
            -2.0
        );
    }

    #[test]
    fn boxes_and_points_are_numbers_and_must_lie_on_the_photo() {
        assert_eq!(parse_box("1, 2,3.5,4").unwrap(), [1.0, 2.0, 3.5, 4.0]);
        assert!(parse_box("1,2,3").is_err());
        assert!(parse_box("1,2,3,nan").is_err());
        assert_eq!(parse_point("5,6").unwrap(), [5.0, 6.0]);
        assert!(parse_point("5").is_err());
        let image = RgbImage::new(40, 30);
        let inside = region_mask(&image, &RegionPrompt::Box([10.0, 5.0, 20.0, 15.0]), None)
            .unwrap()
            .unwrap();
        assert_eq!(inside.area(), 100);
        for off in [
            [-1.0, 0.0, 10.0, 10.0],
            [0.0, 0.0, 41.0, 10.0],
            [10.0, 10.0, 10.0, 20.0],
            [20.0, 0.0, 10.0, 10.0],
        ] {
            let e = region_mask(&image, &RegionPrompt::Box(off), None).unwrap_err();
            assert!(matches!(e, RegionQueryError::BoxOffPhoto { .. }), "{e}");
        }
        let e = region_mask(&image, &RegionPrompt::Point([3.0, 3.0]), None).unwrap_err();
        assert!(matches!(e, RegionQueryError::NoSam), "{e}");
        let e = region_mask(&image, &RegionPrompt::Point([40.0, 3.0]), None).unwrap_err();
        assert!(matches!(e, RegionQueryError::PointOffPhoto { .. }), "{e}");
        let e =
            region_mask(&image, &RegionPrompt::Mask(BinaryMask::zeros(30, 40)), None).unwrap_err();
        assert!(matches!(e, RegionQueryError::MaskSize { .. }), "{e}");
        let e =
            region_mask(&image, &RegionPrompt::Mask(BinaryMask::zeros(40, 30)), None).unwrap_err();
        assert!(matches!(e, RegionQueryError::BadMask(_)), "{e}");
        assert_eq!(
            region_mask(&image, &RegionPrompt::WholePhoto, None).unwrap(),
            None
        );
    }

    #[test]
    fn a_mask_upload_must_be_a_png_within_the_pixel_limit() {
        let mask = BinaryMask::from_box(8, 6, 1.0, 1.0, 4.0, 3.0);
        let png = mask.to_png().unwrap();
        assert_eq!(mask_from_png(&png, 1000).unwrap(), mask);
        assert!(matches!(
            mask_from_png(&png, 47),
            Err(RegionQueryError::BadMask(m)) if m.contains("over the limit")
        ));
        assert!(mask_from_png(b"not a png at all", 1000).is_err());
    }
}
