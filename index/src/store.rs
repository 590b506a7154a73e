//! The region table as Parquet segments: one file per committed batch, the same Arrow schema in each, read
//! as-is by pyarrow, pandas, polars or duckdb.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, FixedSizeListArray, Float32Array, Float64Array,
    RecordBatch, StringArray, StructArray, TimestampMillisecondArray, UInt32Array,
};
use arrow::datatypes::{
    DataType, Field, Fields, Float32Type, Float64Type, Schema, SchemaRef, TimeUnit,
    TimestampMillisecondType, UInt32Type,
};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use regionseek_masks::CocoRle;

use crate::record::{MethodInfo, PhotoMeta, RegionMeta, RegionRecord};
use crate::IndexError;

fn item(dt: DataType) -> Arc<Field> {
    Arc::new(Field::new("item", dt, false))
}

fn mask_fields() -> Fields {
    Fields::from(vec![
        Field::new(
            "size",
            DataType::FixedSizeList(item(DataType::UInt32), 2),
            false,
        ),
        Field::new("counts", DataType::Utf8, false),
    ])
}

pub fn schema(dim: usize) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("image", DataType::Utf8, false),
        Field::new("image_hash", DataType::Utf8, false),
        Field::new("region_id", DataType::Utf8, false),
        Field::new(
            "box",
            DataType::FixedSizeList(item(DataType::Float32), 4),
            false,
        ),
        Field::new("mask_rle", DataType::Struct(mask_fields()), false),
        Field::new("source", DataType::Utf8, false),
        Field::new("method", DataType::Utf8, false),
        Field::new("steps", DataType::UInt32, true),
        Field::new("lr", DataType::Float32, true),
        Field::new("alpha", DataType::Float32, true),
        Field::new("resolution", DataType::UInt32, true),
        Field::new("model_id", DataType::Utf8, false),
        Field::new("weights_hash", DataType::Utf8, false),
        Field::new("label", DataType::Utf8, true),
        Field::new(
            "embedding",
            DataType::FixedSizeList(item(DataType::Float32), dim as i32),
            false,
        ),
        Field::new("created_at", utc_ms(), false),
        Field::new("exif_rotated", DataType::Boolean, false),
        Field::new("taken_at", DataType::Utf8, true),
        Field::new("taken_at_utc", utc_ms(), true),
        Field::new("camera", DataType::Utf8, true),
        Field::new("gps_lat", DataType::Float64, true),
        Field::new("gps_lon", DataType::Float64, true),
        Field::new("width", DataType::UInt32, true),
        Field::new("height", DataType::UInt32, true),
    ]))
}

fn utc_ms() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

/// Segments written before `exif_rotated` existed lack that column and those after it; their photos were
/// always turned upright by their EXIF orientation, which is what their rows read as.
const LEGACY_FIELDS: usize = 16;
/// Segments written before the photo metadata columns (`taken_at` .. `height`) end at `exif_rotated`; their
/// rows read as photos without metadata.
const BEFORE_PHOTO_FIELDS: usize = 17;

const EMBEDDING_COLUMN: usize = 14;

fn strings<'a>(rows: &'a [RegionRecord], f: impl Fn(&'a RegionMeta) -> &'a str) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(
        rows.iter().map(|r| f(&r.meta)),
    ))
}

fn fixed_f32(values: Vec<f32>, size: usize) -> ArrayRef {
    Arc::new(FixedSizeListArray::new(
        item(DataType::Float32),
        size as i32,
        Arc::new(Float32Array::from(values)),
        None,
    ))
}

/// Writes one segment to `path` (the caller renames it into place and commits it in the manifest).
pub fn write_segment(path: &Path, rows: &[RegionRecord], dim: usize) -> Result<(), IndexError> {
    let schema = schema(dim);
    let mask_size = FixedSizeListArray::new(
        item(DataType::UInt32),
        2,
        Arc::new(UInt32Array::from_iter_values(
            rows.iter().flat_map(|r| r.meta.mask.size),
        )),
        None,
    );
    let mask = StructArray::new(
        mask_fields(),
        vec![
            Arc::new(mask_size) as ArrayRef,
            strings(rows, |m| &m.mask.counts),
        ],
        None,
    );
    let columns: Vec<ArrayRef> = vec![
        strings(rows, |m| &m.image),
        strings(rows, |m| &m.image_hash),
        strings(rows, |m| &m.region_id),
        fixed_f32(rows.iter().flat_map(|r| r.meta.bbox).collect(), 4),
        Arc::new(mask),
        strings(rows, |m| &m.source),
        strings(rows, |m| &m.method.name),
        Arc::new(UInt32Array::from_iter(
            rows.iter().map(|r| r.meta.method.steps),
        )),
        Arc::new(Float32Array::from_iter(
            rows.iter().map(|r| r.meta.method.lr),
        )),
        Arc::new(Float32Array::from_iter(
            rows.iter().map(|r| r.meta.method.alpha),
        )),
        Arc::new(UInt32Array::from_iter(
            rows.iter().map(|r| r.meta.method.resolution),
        )),
        strings(rows, |m| &m.method.model_id),
        strings(rows, |m| &m.method.weights_hash),
        Arc::new(StringArray::from_iter(
            rows.iter().map(|r| r.meta.label.as_deref()),
        )),
        fixed_f32(
            rows.iter()
                .flat_map(|r| r.embedding.iter().copied())
                .collect(),
            dim,
        ),
        Arc::new(
            TimestampMillisecondArray::from_iter_values(rows.iter().map(|r| r.meta.created_at_ms))
                .with_timezone("UTC"),
        ),
        Arc::new(BooleanArray::from_iter(
            rows.iter().map(|r| Some(r.meta.exif_rotated)),
        )),
        Arc::new(StringArray::from_iter(
            rows.iter().map(|r| r.meta.photo.taken_at.as_deref()),
        )),
        Arc::new(
            TimestampMillisecondArray::from_iter(rows.iter().map(|r| r.meta.photo.taken_at_ms))
                .with_timezone("UTC"),
        ),
        Arc::new(StringArray::from_iter(
            rows.iter().map(|r| r.meta.photo.camera.as_deref()),
        )),
        Arc::new(Float64Array::from_iter(
            rows.iter().map(|r| r.meta.photo.gps.map(|g| g[0])),
        )),
        Arc::new(Float64Array::from_iter(
            rows.iter().map(|r| r.meta.photo.gps.map(|g| g[1])),
        )),
        Arc::new(UInt32Array::from_iter(
            rows.iter().map(|r| r.meta.photo.width),
        )),
        Arc::new(UInt32Array::from_iter(
            rows.iter().map(|r| r.meta.photo.height),
        )),
    ];
    let batch = RecordBatch::try_new(schema.clone(), columns)
        .map_err(|e| IndexError::Engine(format!("building the region table batch: {e}")))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(1).expect("level 1 is valid"),
        ))
        // Float vectors do not repeat; trying a dictionary for them only costs time.
        .set_dictionary_enabled(false)
        .build();
    let file = std::fs::File::create(path).map_err(IndexError::io(path))?;
    let parquet_err = |e: parquet::errors::ParquetError| {
        IndexError::Engine(format!("writing {}: {e}", path.display()))
    };
    let mut writer = ArrowWriter::try_new(file, schema, Some(props)).map_err(parquet_err)?;
    writer.write(&batch).map_err(parquet_err)?;
    let file = writer.into_inner().map_err(parquet_err)?;
    file.sync_all().map_err(IndexError::io(path))?;
    Ok(())
}

/// The embedding dimension a segment's schema declares (for rebuilding a lost manifest).
pub fn segment_dim(path: &Path) -> Result<usize, IndexError> {
    let file = std::fs::File::open(path).map_err(IndexError::io(path))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| IndexError::corrupt(path, e.to_string()))?;
    match builder
        .schema()
        .field_with_name("embedding")
        .map(|f| f.data_type().clone())
    {
        Ok(DataType::FixedSizeList(_, n)) if n > 0 => Ok(n as usize),
        _ => Err(IndexError::corrupt(
            path,
            "it has no fixed-size `embedding` column: not a region table segment",
        )),
    }
}

/// Reads a segment's metadata and, when asked, its (normalised) embeddings as one flat `rows × dim` buffer.
pub fn read_segment(
    path: &Path,
    dim: usize,
    with_embeddings: bool,
) -> Result<(Vec<RegionMeta>, Vec<f32>), IndexError> {
    let corrupt = |m: String| IndexError::corrupt(path, m);
    let file = std::fs::File::open(path).map_err(IndexError::io(path))?;
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| corrupt(e.to_string()))?;
    let want = schema(dim);
    let have = builder.schema();
    let legacy = have.fields().len() == LEGACY_FIELDS;
    let known_width = [LEGACY_FIELDS, BEFORE_PHOTO_FIELDS, want.fields().len()];
    if !known_width.contains(&have.fields().len())
        || have
            .fields()
            .iter()
            .zip(want.fields())
            .any(|(a, b)| a.name() != b.name() || a.data_type() != b.data_type())
    {
        return Err(corrupt(format!(
            "its schema is not the region table's for {dim}-d embeddings"
        )));
    }
    let columns: Vec<usize> = (0..have.fields().len())
        .filter(|&i| with_embeddings || i != EMBEDDING_COLUMN)
        .collect();
    let mask = ProjectionMask::roots(builder.parquet_schema(), columns.iter().copied());
    let reader = builder
        .with_projection(mask)
        .with_batch_size(8192)
        .build()
        .map_err(|e| corrupt(e.to_string()))?;
    let mut metas = Vec::new();
    let mut embeddings = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| corrupt(e.to_string()))?;
        let col = |name: &str| {
            batch
                .column_by_name(name)
                .expect("projected column present")
        };
        let s = |name: &str| col(name).as_string::<i32>().clone();
        let (image, hash, region, source, method) = (
            s("image"),
            s("image_hash"),
            s("region_id"),
            s("source"),
            s("method"),
        );
        let (model, weights, label) = (s("model_id"), s("weights_hash"), s("label"));
        let boxes = col("box")
            .as_fixed_size_list()
            .values()
            .as_primitive::<Float32Type>()
            .clone();
        let mask = col("mask_rle").as_struct().clone();
        let mask_size = mask
            .column(0)
            .as_fixed_size_list()
            .values()
            .as_primitive::<UInt32Type>()
            .clone();
        let mask_counts = mask.column(1).as_string::<i32>().clone();
        let steps = col("steps").as_primitive::<UInt32Type>().clone();
        let lr = col("lr").as_primitive::<Float32Type>().clone();
        let alpha = col("alpha").as_primitive::<Float32Type>().clone();
        let resolution = col("resolution").as_primitive::<UInt32Type>().clone();
        let created = col("created_at")
            .as_primitive::<TimestampMillisecondType>()
            .clone();
        let exif_rotated = (!legacy).then(|| col("exif_rotated").as_boolean().clone());
        let photo = PhotoColumns::of(&batch);
        let opt_u32 = |a: &UInt32Array, i: usize| a.is_valid(i).then(|| a.value(i));
        let opt_f32 = |a: &Float32Array, i: usize| a.is_valid(i).then(|| a.value(i));
        for i in 0..batch.num_rows() {
            metas.push(RegionMeta {
                image: image.value(i).to_string(),
                image_hash: hash.value(i).to_string(),
                region_id: region.value(i).to_string(),
                bbox: std::array::from_fn(|k| boxes.value(4 * i + k)),
                mask: CocoRle {
                    size: [mask_size.value(2 * i), mask_size.value(2 * i + 1)],
                    counts: mask_counts.value(i).to_string(),
                },
                source: source.value(i).to_string(),
                method: MethodInfo {
                    name: method.value(i).to_string(),
                    steps: opt_u32(&steps, i),
                    lr: opt_f32(&lr, i),
                    alpha: opt_f32(&alpha, i),
                    resolution: opt_u32(&resolution, i),
                    model_id: model.value(i).to_string(),
                    weights_hash: weights.value(i).to_string(),
                },
                label: label.is_valid(i).then(|| label.value(i).to_string()),
                created_at_ms: created.value(i),
                exif_rotated: exif_rotated.as_ref().is_none_or(|a| a.value(i)),
                photo: photo.as_ref().map(|p| p.row(i)).unwrap_or_default(),
            });
        }
        if with_embeddings {
            let e = col("embedding").as_fixed_size_list();
            embeddings.extend_from_slice(e.values().as_primitive::<Float32Type>().values());
        }
    }
    Ok((metas, embeddings))
}

/// The photo metadata columns of a batch; None for segments written before they existed.
struct PhotoColumns {
    taken_at: StringArray,
    taken_at_utc: TimestampMillisecondArray,
    camera: StringArray,
    gps_lat: Float64Array,
    gps_lon: Float64Array,
    width: UInt32Array,
    height: UInt32Array,
}

impl PhotoColumns {
    fn of(batch: &RecordBatch) -> Option<Self> {
        let col = |name: &str| batch.column_by_name(name);
        Some(Self {
            taken_at: col("taken_at")?.as_string::<i32>().clone(),
            taken_at_utc: col("taken_at_utc")?
                .as_primitive::<TimestampMillisecondType>()
                .clone(),
            camera: col("camera")?.as_string::<i32>().clone(),
            gps_lat: col("gps_lat")?.as_primitive::<Float64Type>().clone(),
            gps_lon: col("gps_lon")?.as_primitive::<Float64Type>().clone(),
            width: col("width")?.as_primitive::<UInt32Type>().clone(),
            height: col("height")?.as_primitive::<UInt32Type>().clone(),
        })
    }

    fn row(&self, i: usize) -> PhotoMeta {
        let text = |a: &StringArray| a.is_valid(i).then(|| a.value(i).to_string());
        let gps = (self.gps_lat.is_valid(i) && self.gps_lon.is_valid(i))
            .then(|| [self.gps_lat.value(i), self.gps_lon.value(i)]);
        PhotoMeta {
            taken_at: text(&self.taken_at),
            taken_at_ms: self
                .taken_at_utc
                .is_valid(i)
                .then(|| self.taken_at_utc.value(i)),
            camera: text(&self.camera),
            gps,
            width: self.width.is_valid(i).then(|| self.width.value(i)),
            height: self.height.is_valid(i).then(|| self.height.value(i)),
        }
    }
}
