//! COCO instances JSON: images, categories and annotations (polygons, uncompressed and compressed RLE,
//! crowd regions). The file is read as a stream: only one annotation is held as a JSON tree at a time, and
//! each malformed item becomes an [`ItemError`] naming it while the rest of the file is still read.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io::{BufReader, Read};
use std::path::Path;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Serialize;
use serde_json::Value;

use crate::{polygon, CocoRle, MaskError, Rle};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CocoImage {
    pub id: i64,
    pub file_name: String,
    pub width: u32,
    pub height: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CocoCategory {
    pub id: i64,
    pub name: String,
    pub supercategory: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Segmentation {
    Polygons(Vec<Vec<f64>>),
    /// Uncompressed RLE (`counts` as a list), as crowd annotations carry it.
    Counts {
        size: [u32; 2],
        counts: Vec<u32>,
    },
    Compressed(CocoRle),
}

#[derive(Debug, Clone, PartialEq)]
pub struct CocoAnnotation {
    pub id: i64,
    pub image_id: i64,
    pub category_id: i64,
    /// `[x, y, width, height]` in pixels.
    pub bbox: [f64; 4],
    pub area: Option<f64>,
    pub iscrowd: bool,
    pub segmentation: Option<Segmentation>,
}

impl CocoAnnotation {
    /// The mask as pycocotools' `COCO.annToRLE` makes it for an image of `height × width`.
    pub fn to_rle(&self, height: u32, width: u32) -> Result<Rle, MaskError> {
        match &self.segmentation {
            None => Err(MaskError::Polygon("annotation has no segmentation".into())),
            Some(Segmentation::Polygons(polys)) => polygon::rasterize_all(polys, height, width),
            Some(Segmentation::Counts { size, counts }) => {
                Rle::from_counts(size[0], size[1], counts.clone())
            }
            Some(Segmentation::Compressed(c)) => Rle::from_coco(c),
        }
    }

    /// `[x0, y0, x1, y1]`.
    pub fn xyxy(&self) -> [f64; 4] {
        let [x, y, w, h] = self.bbox;
        [x, y, x + w, y + h]
    }
}

/// One malformed entry of the file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ItemError {
    /// "image", "annotation" or "category".
    pub kind: &'static str,
    /// Position in its list (0-based), for entries whose id is missing or unreadable.
    pub index: usize,
    pub id: Option<i64>,
    pub message: String,
}

impl fmt::Display for ItemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.id {
            Some(id) => write!(
                f,
                "{} {id} (entry {}): {}",
                self.kind, self.index, self.message
            ),
            None => write!(f, "{} entry {}: {}", self.kind, self.index, self.message),
        }
    }
}

#[derive(Debug, Default, Clone)]
pub struct CocoDataset {
    pub images: Vec<CocoImage>,
    pub categories: Vec<CocoCategory>,
    /// Only the well-formed annotations; the rest are in `errors`.
    pub annotations: Vec<CocoAnnotation>,
    pub errors: Vec<ItemError>,
}

#[derive(Debug, thiserror::Error)]
pub enum CocoError {
    #[error("cannot read COCO file {path}: {message}")]
    Io { path: String, message: String },
    #[error("{path} is not a COCO instances file: {message}")]
    Format { path: String, message: String },
}

impl CocoDataset {
    pub fn read(path: &Path) -> Result<Self, CocoError> {
        let name = path.display().to_string();
        let file = std::fs::File::open(path).map_err(|e| CocoError::Io {
            path: name.clone(),
            message: e.to_string(),
        })?;
        Self::from_reader(BufReader::new(file), &name)
    }

    /// Parses from any reader; `name` labels the errors.
    pub fn from_reader<R: Read>(reader: R, name: &str) -> Result<Self, CocoError> {
        let mut de = serde_json::Deserializer::from_reader(reader);
        let mut raw = Raw::default();
        let format = |message: String| CocoError::Format {
            path: name.to_string(),
            message,
        };
        TopLevel(&mut raw)
            .deserialize(&mut de)
            .map_err(|e| format(e.to_string()))?;
        de.end().map_err(|e| format(e.to_string()))?;
        if !raw.saw_images || !raw.saw_annotations {
            return Err(format(
                "the top-level object needs \"images\" and \"annotations\" lists".into(),
            ));
        }
        Ok(raw.validate())
    }

    pub fn image(&self, id: i64) -> Option<&CocoImage> {
        self.images.iter().find(|i| i.id == id)
    }

    pub fn category_names(&self) -> HashMap<i64, &str> {
        self.categories
            .iter()
            .map(|c| (c.id, c.name.as_str()))
            .collect()
    }

    /// Annotations grouped by image id, in file order.
    pub fn annotations_by_image(&self) -> HashMap<i64, Vec<&CocoAnnotation>> {
        let mut by: HashMap<i64, Vec<&CocoAnnotation>> = HashMap::new();
        for a in &self.annotations {
            by.entry(a.image_id).or_default().push(a);
        }
        by
    }
}

#[derive(Default)]
struct Raw {
    images: Vec<(usize, Value)>,
    categories: Vec<(usize, Value)>,
    annotations: Vec<(usize, Result<CocoAnnotation, (Option<i64>, String)>)>,
    saw_images: bool,
    saw_annotations: bool,
}

/// Which list a sequence visitor is reading.
#[derive(Clone, Copy)]
enum List {
    Images,
    Categories,
    Annotations,
}

struct TopLevel<'a>(&'a mut Raw);

impl<'de> DeserializeSeed<'de> for TopLevel<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for TopLevel<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object with images, annotations and categories")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            let list = match key.as_str() {
                "images" => {
                    self.0.saw_images = true;
                    List::Images
                }
                "categories" => List::Categories,
                "annotations" => {
                    self.0.saw_annotations = true;
                    List::Annotations
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            map.next_value_seed(ListSeed(&mut *self.0, list))?;
        }
        Ok(())
    }
}

struct ListSeed<'a>(&'a mut Raw, List);

impl<'de> DeserializeSeed<'de> for ListSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ListSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0usize;
        while let Some(item) = seq.next_element::<Value>()? {
            match self.1 {
                List::Images => self.0.images.push((index, item)),
                List::Categories => self.0.categories.push((index, item)),
                // Converted right away so that only one annotation's tree is alive at a time.
                List::Annotations => self.0.annotations.push((index, parse_annotation(&item))),
            }
            index += 1;
        }
        Ok(())
    }
}

fn id_of(v: &Value) -> Option<i64> {
    v.get("id").and_then(Value::as_i64)
}

fn field<'v>(v: &'v Value, key: &str) -> Result<&'v Value, String> {
    v.get(key).ok_or_else(|| format!("missing \"{key}\""))
}

fn int_field(v: &Value, key: &str) -> Result<i64, String> {
    let f = field(v, key)?;
    f.as_i64()
        .or_else(|| {
            f.as_f64()
                .filter(|x| x.fract() == 0.0 && x.abs() < 9e15)
                .map(|x| x as i64)
        })
        .ok_or_else(|| format!("\"{key}\" must be an integer, got {f}"))
}

fn size_field(v: &Value, key: &str) -> Result<u32, String> {
    let n = int_field(v, key)?;
    u32::try_from(n)
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("\"{key}\" must be a positive integer, got {n}"))
}

fn numbers(v: &Value, what: &str) -> Result<Vec<f64>, String> {
    let list = v
        .as_array()
        .ok_or_else(|| format!("{what} must be a list of numbers"))?;
    list.iter()
        .map(|x| {
            x.as_f64()
                .filter(|f| f.is_finite())
                .ok_or_else(|| format!("{what} holds {x}, not a finite number"))
        })
        .collect()
}

fn parse_image(v: &Value) -> Result<CocoImage, String> {
    let file_name = field(v, "file_name")?
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or("\"file_name\" must be a non-empty string")?
        .to_string();
    Ok(CocoImage {
        id: int_field(v, "id")?,
        file_name,
        width: size_field(v, "width")?,
        height: size_field(v, "height")?,
    })
}

fn parse_category(v: &Value) -> Result<CocoCategory, String> {
    Ok(CocoCategory {
        id: int_field(v, "id")?,
        name: field(v, "name")?
            .as_str()
            .ok_or("\"name\" must be a string")?
            .to_string(),
        supercategory: v
            .get("supercategory")
            .and_then(Value::as_str)
            .map(String::from),
    })
}

fn parse_segmentation(v: &Value) -> Result<Segmentation, String> {
    match v {
        Value::Array(parts) => {
            let polys = parts
                .iter()
                .enumerate()
                .map(|(i, p)| numbers(p, &format!("polygon {i}")))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Segmentation::Polygons(polys))
        }
        Value::Object(_) => {
            let size = numbers(field(v, "size")?, "RLE size")?;
            let [h, w] = size[..] else {
                return Err(format!(
                    "RLE size must be [height, width], got {} numbers",
                    size.len()
                ));
            };
            let dim = |x: f64| {
                (x >= 0.0 && x.fract() == 0.0 && x <= u32::MAX as f64)
                    .then_some(x as u32)
                    .ok_or_else(|| format!("RLE size {x} is not a pixel count"))
            };
            let size = [dim(h)?, dim(w)?];
            match field(v, "counts")? {
                Value::String(s) => Ok(Segmentation::Compressed(CocoRle {
                    size,
                    counts: s.clone(),
                })),
                counts @ Value::Array(_) => {
                    let counts = numbers(counts, "RLE counts")?
                        .into_iter()
                        .map(|c| {
                            (c >= 0.0 && c.fract() == 0.0 && c <= u32::MAX as f64)
                                .then_some(c as u32)
                                .ok_or_else(|| format!("RLE run {c} is not a pixel count"))
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    Ok(Segmentation::Counts { size, counts })
                }
                other => Err(format!(
                    "RLE counts must be a string or a list, got {other}"
                )),
            }
        }
        other => Err(format!("segmentation must be polygons or RLE, got {other}")),
    }
}

fn parse_annotation(v: &Value) -> Result<CocoAnnotation, (Option<i64>, String)> {
    let id = id_of(v);
    let inner = || -> Result<CocoAnnotation, String> {
        let bbox = numbers(field(v, "bbox")?, "bbox")?;
        let [x, y, w, h] = bbox[..] else {
            return Err(format!("bbox must have 4 numbers, got {}", bbox.len()));
        };
        let iscrowd = match v.get("iscrowd") {
            None => false,
            Some(c) => match c.as_i64() {
                Some(0) => false,
                Some(1) => true,
                _ => return Err(format!("\"iscrowd\" must be 0 or 1, got {c}")),
            },
        };
        Ok(CocoAnnotation {
            id: int_field(v, "id")?,
            image_id: int_field(v, "image_id")?,
            category_id: int_field(v, "category_id")?,
            bbox: [x, y, w, h],
            area: v.get("area").and_then(Value::as_f64),
            iscrowd,
            segmentation: v.get("segmentation").map(parse_segmentation).transpose()?,
        })
    };
    inner().map_err(|m| (id, m))
}

/// Checks that need the whole file: ids, sizes against the image, and the segmentation itself.
fn check_annotation(a: &CocoAnnotation, image: &CocoImage) -> Result<(), String> {
    let [x, y, w, h] = a.bbox;
    if w < 0.0 || h < 0.0 {
        return Err(format!("bbox {:?} has a negative size", a.bbox));
    }
    // One pixel of slack: annotation tools round box edges outward.
    let (iw, ih) = (image.width as f64, image.height as f64);
    if x < -1.0 || y < -1.0 || x + w > iw + 1.0 || y + h > ih + 1.0 {
        return Err(format!(
            "bbox {:?} lies outside the {}x{} image",
            a.bbox, image.width, image.height
        ));
    }
    match &a.segmentation {
        None => Ok(()),
        Some(Segmentation::Polygons(polys)) => {
            polygon::rasterize_all(polys, image.height, image.width)
                .map(drop)
                .map_err(|e| e.to_string())
        }
        Some(Segmentation::Counts { size, .. })
        | Some(Segmentation::Compressed(CocoRle { size, .. }))
            if *size != [image.height, image.width] =>
        {
            Err(format!(
                "RLE size {}x{} differs from the {}x{} image",
                size[0], size[1], image.height, image.width
            ))
        }
        Some(_) => a
            .to_rle(image.height, image.width)
            .map(drop)
            .map_err(|e| e.to_string()),
    }
}

/// Parses a list of entries, reporting unreadable ones and repeated ids as item errors.
fn parse_unique<T>(
    kind: &'static str,
    entries: Vec<(usize, Value)>,
    parse: fn(&Value) -> Result<T, String>,
    id: fn(&T) -> i64,
    errors: &mut Vec<ItemError>,
) -> Vec<T> {
    let mut seen = HashSet::new();
    let mut kept = Vec::new();
    for (index, v) in entries {
        match parse(&v) {
            Ok(item) if !seen.insert(id(&item)) => errors.push(ItemError {
                kind,
                index,
                id: Some(id(&item)),
                message: format!("duplicate {kind} id"),
            }),
            Ok(item) => kept.push(item),
            Err(message) => errors.push(ItemError {
                kind,
                index,
                id: id_of(&v),
                message,
            }),
        }
    }
    kept
}

impl Raw {
    fn validate(self) -> CocoDataset {
        let mut out = CocoDataset::default();
        out.images = parse_unique("image", self.images, parse_image, |i| i.id, &mut out.errors);
        out.categories = parse_unique(
            "category",
            self.categories,
            parse_category,
            |c| c.id,
            &mut out.errors,
        );
        let images: HashMap<i64, &CocoImage> = out.images.iter().map(|i| (i.id, i)).collect();
        let categories: HashSet<i64> = out.categories.iter().map(|c| c.id).collect();
        let mut seen = HashSet::new();
        let mut annotations = Vec::new();
        for (index, parsed) in self.annotations {
            let checked = parsed.and_then(|a| {
                let fail = |m: String| (Some(a.id), m);
                if !seen.insert(a.id) {
                    return Err(fail("duplicate annotation id".into()));
                }
                let Some(image) = images.get(&a.image_id) else {
                    return Err(fail(format!("unknown image id {}", a.image_id)));
                };
                if !categories.is_empty() && !categories.contains(&a.category_id) {
                    return Err(fail(format!("unknown category id {}", a.category_id)));
                }
                check_annotation(&a, image).map_err(fail)?;
                Ok(a)
            });
            match checked {
                Ok(a) => annotations.push(a),
                Err((id, message)) => out.errors.push(ItemError {
                    kind: "annotation",
                    index,
                    id,
                    message,
                }),
            }
        }
        out.annotations = annotations;
        out
    }
}
