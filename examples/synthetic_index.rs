//! A region index of any size for measuring the server and the index where no real corpus here reaches:
//! COCO128's real masks (from the test fixture) reused over and over, clustered random unit embeddings,
//! in the embedding space of the built-in random ViT-B/32 so that `regionseek serve` accepts it.
//!
//! `cargo run --release --example synthetic_index -- DIR ROWS [BATCH]`

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use regionseek::index::bench::clustered;
use regionseek::index::{
    CocoRle, HnswParams, IndexSpec, IndexWriter, LockWait, MethodInfo, RegionMeta, RegionRecord,
};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(
        args.next()
            .context("usage: synthetic_index DIR ROWS [BATCH]")?,
    );
    let rows: usize = args.next().context("ROWS")?.parse()?;
    let batch: usize = args
        .next()
        .map(|b| b.parse())
        .transpose()?
        .unwrap_or(100_000);
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/coco128_rle.json");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&fixture)?)?;
    let masks: Vec<(i64, CocoRle)> = v["annotations"]
        .as_array()
        .context("annotations")?
        .iter()
        .map(|a| {
            let size = a["size"].as_array().unwrap();
            (
                a["image_id"].as_i64().unwrap(),
                CocoRle {
                    size: [
                        size[0].as_u64().unwrap() as u32,
                        size[1].as_u64().unwrap() as u32,
                    ],
                    counts: a["rle"].as_str().unwrap().to_string(),
                },
            )
        })
        .collect();
    // The id the built-in model reports (with its seed), so that `serve` accepts the index.
    let model_id = regionseek::clip::ModelSource::parse("random:vit-b-32")?.id();
    let model = model_id.as_str();
    let dim = 512;
    let spec = IndexSpec {
        dim,
        model_id: model.into(),
        weights_hash: model.into(),
        hnsw: HnswParams::default(),
    };
    let mut index = IndexWriter::open_or_create(&dir, &spec, LockWait::No)?;
    let t = Instant::now();
    let mut made = index.len();
    while made < rows {
        let n = batch.min(rows - made);
        let vectors = clustered(n, dim, 1000, 0.35, made as u64 + 1);
        let records: Vec<RegionRecord> = (0..n)
            .map(|i| {
                let row = made + i;
                let (image_id, mask) = &masks[row % masks.len()];
                // A "photo" per 8 regions, as COCO has about 7 per image.
                let photo = row / 8;
                let rle = regionseek::masks::Rle::from_coco(mask).expect("fixture RLE");
                let b = rle.bbox();
                RegionRecord {
                    meta: RegionMeta {
                        image: format!("synthetic/{photo:08}_{image_id}.jpg"),
                        image_hash: format!("{photo:064x}"),
                        region_id: format!("{}", row % 8),
                        bbox: [
                            b[0] as f32,
                            b[1] as f32,
                            (b[0] + b[2]) as f32,
                            (b[1] + b[3]) as f32,
                        ],
                        mask: mask.clone(),
                        source: "gt".into(),
                        method: MethodInfo {
                            name: "maskinversion".into(),
                            steps: Some(10),
                            lr: Some(0.5),
                            alpha: Some(0.0),
                            resolution: Some(448),
                            model_id: model.into(),
                            weights_hash: model.into(),
                        },
                        label: Some(format!("class{}", row % 80)),
                        created_at_ms: 0,
                        exif_rotated: false,
                        photo: Default::default(),
                    },
                    embedding: vectors[i * dim..(i + 1) * dim].to_vec(),
                }
            })
            .collect();
        index.append(records)?;
        made += n;
        eprintln!("{made} rows ({:.0} s)", t.elapsed().as_secs_f64());
    }
    index.save_graph()?;
    println!(
        "{}",
        serde_json::json!({"dir": dir, "rows": index.len(), "seconds": t.elapsed().as_secs_f64()})
    );
    Ok(())
}
