//! `regionseek search`: a text query against a region index.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use regionseek::index::Filter;
use regionseek::pipeline::photo_meta::{with_photo_words, PhotoWords};
use regionseek::pipeline::query::{
    self, Grouping, QueryError, SearchOptions, SearchReport, Searcher,
};

use super::choice::choice;
use serde_json::json;

use super::output::write_atomic;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// COCO-style results: `[{image_id, file_name, bbox [x, y, w, h], segmentation (RLE), score}]`.
    Coco,
}

#[derive(clap::Args)]
pub struct SearchArgs {
    index: PathBuf,
    text: String,
    #[arg(long, default_value_t = query::DEFAULT_K)]
    k: usize,
    /// Only regions of this photo (its path as indexed, or its content hash).
    #[arg(long)]
    image: Option<String>,
    /// Only regions embedded with this method (maskinversion, masked-crop, ...).
    #[arg(long)]
    method: Option<String>,
    /// Only regions with this label (e.g. a COCO category).
    #[arg(long)]
    label: Option<String>,
    /// Only regions from this source (e.g. `coco`, `auto-box`, `auto-sam`, `image` for whole photos).
    #[arg(long)]
    source: Option<String>,
    /// Only photos taken at or after DATE: `YYYY-MM-DD` (midnight UTC) or RFC 3339
    /// (`2024-05-01T14:00:00+02:00`), against the photo's EXIF capture time.
    #[arg(long, value_name = "DATE")]
    after: Option<String>,
    /// Only photos taken before DATE (the same forms as --after; the instant itself excluded).
    #[arg(long, value_name = "DATE")]
    before: Option<String>,
    /// Only photos whose camera make and model (EXIF) contain TEXT, ignoring case.
    #[arg(long, value_name = "TEXT")]
    camera: Option<String>,
    /// Only photos taken within KM kilometres of LAT,LON (EXIF GPS; degrees, north and east positive).
    #[arg(long, value_name = "LAT,LON,KM", allow_hyphen_values = true)]
    near: Option<String>,
    /// Only hits scoring at least this cosine similarity (a relevance cut-off; with random weights
    /// meaningless).
    #[arg(long, allow_hyphen_values = true)]
    min_score: Option<f32>,
    /// `photo`: the best region of each photo, with how many more of its regions matched
    /// (`other_matches`); `region` (default): every region on its own.
    #[arg(long, value_parser = choice::<Grouping>(), default_value_t = Grouping::Region)]
    group_by: Grouping,
    /// Scan every candidate region (exact). Default: exact up to 200k candidates, HNSW beyond.
    #[arg(long, conflicts_with = "ef")]
    exact: bool,
    /// Search the HNSW graph with this beam width (wider: better recall, slower).
    #[arg(long)]
    ef: Option<usize>,
    /// The model the index was built with (default: the one its manifest names).
    #[arg(long)]
    model: Option<String>,
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Write the hits in this format to --export-file (default: stdout).
    #[arg(long)]
    export: Option<ExportFormat>,
    #[arg(long)]
    export_file: Option<PathBuf>,
    /// Write each hit's region (box crop, mask as alpha) as a PNG into this folder; needs --images.
    #[arg(long)]
    crop: Option<PathBuf>,
    /// The folder the indexed photo paths are relative to (for --crop).
    #[arg(long)]
    images: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

pub fn run(a: SearchArgs) -> anyhow::Result<ExitCode> {
    let filter = Filter {
        image: a.image.clone(),
        method: a.method.clone(),
        source: a.source.clone(),
        label: a.label.clone(),
        ..Filter::default()
    };
    let filter = with_photo_words(
        filter,
        PhotoWords {
            after: a.after.as_deref(),
            before: a.before.as_deref(),
            camera: a.camera.as_deref(),
            near: a.near.as_deref(),
        },
    )?;
    let options = SearchOptions::new(a.k, filter, a.exact, a.ef)?
        .with_min_score(a.min_score)?
        .grouped(a.group_by);
    let device = regionseek::device::parse(&a.device)?;
    let searcher = Searcher::open(&a.index, a.model.as_deref(), &device).map_err(|e| match e {
        QueryError::Model { .. } => anyhow::anyhow!("{e} (pass --model DIR if it moved)"),
        other => anyhow::Error::new(other).context(format!("searching {}", a.index.display())),
    })?;
    if searcher.index().is_empty() {
        eprintln!(
            "{} holds no regions yet (an index run may still be starting)",
            a.index.display()
        );
    }
    let model = searcher.model();
    let t = std::time::Instant::now();
    let answer = searcher
        .search(&a.text, &options)
        .with_context(|| format!("searching {}", a.index.display()))?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    if answer.truncated {
        eprintln!(
            "warning: the query is {} tokens; the model reads the first {} (the rest is ignored)",
            answer.query_tokens,
            model.config().text.context_length
        );
    }
    let hits = &answer.hits;
    if let Some(dir) = &a.crop {
        let root = a
            .images
            .as_ref()
            .context("--crop needs --images DIR (where the indexed photos are)")?;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for (rank, h) in hits.iter().enumerate() {
            match regionseek::pipeline::render::region_cutout(root, h) {
                Ok(png) => {
                    let stem = std::path::Path::new(&h.image)
                        .file_stem()
                        .and_then(|s| s.to_str())
                        .unwrap_or("image");
                    let file = dir.join(format!("{rank:03}_{stem}_{}.png", h.region_id));
                    png.save(&file)
                        .with_context(|| format!("writing {}", file.display()))?;
                }
                Err(e) => eprintln!("hit {rank} ({} region {}): {e:#}", h.image, h.region_id),
            }
        }
    }
    if a.export == Some(ExportFormat::Coco) {
        let results: Vec<serde_json::Value> = hits
            .iter()
            .map(|h| {
                let stem = std::path::Path::new(&h.image)
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or("");
                json!({
                    "image_id": stem.parse::<i64>().ok(),
                    "file_name": h.image,
                    "bbox": [h.bbox[0], h.bbox[1], h.bbox[2] - h.bbox[0], h.bbox[3] - h.bbox[1]],
                    "segmentation": h.mask_rle,
                    "score": h.score,
                    "region_id": h.region_id,
                    "method": h.method,
                    "query": a.text,
                })
            })
            .collect();
        let body = serde_json::to_vec(&results)?;
        match &a.export_file {
            Some(f) => write_atomic(f, &body)?,
            None => println!("{}", String::from_utf8(body)?),
        }
        return Ok(ExitCode::SUCCESS);
    }
    if a.json {
        #[derive(serde::Serialize)]
        struct Answer<'a> {
            #[serde(flatten)]
            report: &'a SearchReport,
            model: String,
            /// Random weights: the scores carry no meaning.
            random_model: bool,
        }
        println!(
            "{}",
            serde_json::to_string(&Answer {
                report: &SearchReport::new(&a.text, answer, ms),
                model: model.id(),
                random_model: model.is_random(),
            })?
        );
    } else {
        for (rank, h) in hits.iter().enumerate() {
            println!(
                "{rank:>3}  {:.4}  {}  region {}  box [{:.0}, {:.0}, {:.0}, {:.0}]  {}{}{}",
                h.score,
                h.image,
                h.region_id,
                h.bbox[0],
                h.bbox[1],
                h.bbox[2],
                h.bbox[3],
                h.method,
                h.label
                    .as_ref()
                    .map(|l| format!("  ({l})"))
                    .unwrap_or_default(),
                h.other_matches
                    .map(|n| format!("  +{n} more regions of this photo"))
                    .unwrap_or_default()
            );
        }
        eprintln!(
            "{} hits in {ms:.1} ms ({}{}, model {}{})",
            hits.len(),
            answer.run.mode,
            answer
                .run
                .ef
                .map(|e| format!(" ef {e}"))
                .unwrap_or_default(),
            model.id(),
            if model.is_random() {
                ": random weights, the scores carry no meaning"
            } else {
                ""
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}
