//! `regionseek search`: a text query, or a region of a photo (with texts mixed in), against a region index.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use regionseek::index::Filter;
use regionseek::pipeline::photo_meta::{with_photo_words, PhotoWords};
use regionseek::pipeline::query::{
    self, Grouping, QueryError, SearchAnswer, SearchOptions, SearchReport, Searcher,
};
use regionseek::pipeline::region_query::{
    parse_box, parse_point, read_mask, RegionPrompt, RegionQuery, RegionSearchReport,
    RegionSearcher, WeightedText,
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
    /// What to look for, in words. With --like-image, a text added to the region (as --text).
    #[arg(required_unless_present = "like_image")]
    text: Option<String>,
    /// Search by example: regions like one of this photo (given by --mask, --box or --point; the whole
    /// photo without them), embedded as the index embedded its own regions.
    #[arg(long, value_name = "PHOTO")]
    like_image: Option<PathBuf>,
    /// The query region as a mask PNG of the photo's size (any non-zero pixel is in it).
    #[arg(long, value_name = "MASK.png", requires = "like_image", conflicts_with_all = ["bbox", "point"])]
    mask: Option<PathBuf>,
    /// The query region as a box in the photo's pixels.
    #[arg(
        long = "box",
        value_name = "x0,y0,x1,y1",
        requires = "like_image",
        conflicts_with = "point"
    )]
    bbox: Option<String>,
    /// The query region as SAM's mask for a click at this pixel (needs --sam DIR).
    #[arg(long, value_name = "x,y", requires_all = ["like_image", "sam"])]
    point: Option<String>,
    /// SAM model directory (encoder.onnx + decoder.onnx), for --point.
    #[arg(long, value_name = "DIR")]
    sam: Option<PathBuf>,
    /// ONNX Runtime threads for SAM.
    #[arg(long, default_value_t = 2)]
    sam_threads: usize,
    /// A text added to the region's embedding (repeat for several): `TEXT`, or `W:TEXT` with a weight W
    /// (each embedding is unit length; the region's weight is 1).
    #[arg(
        long = "text",
        value_name = "[W:]TEXT",
        requires = "like_image",
        allow_hyphen_values = true
    )]
    plus: Vec<String>,
    /// A text taken from the region's embedding (repeat for several), `[W:]TEXT` as --text.
    #[arg(
        long = "minus",
        value_name = "[W:]TEXT",
        requires = "like_image",
        allow_hyphen_values = true
    )]
    minus: Vec<String>,
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
    if a.like_image.is_some() {
        return search_by_region(&a, &options, &device);
    }
    let text = a.text.as_deref().unwrap_or_default();
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
        .search(text, &options)
        .with_context(|| format!("searching {}", a.index.display()))?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    if answer.truncated {
        eprintln!(
            "warning: the query is {} tokens; the model reads the first {} (the rest is ignored)",
            answer.query_tokens,
            model.config().text.context_length
        );
    }
    if a.export.is_none() && a.json {
        write_crops(&a, &answer)?;
        let report = SearchReport::new(text, answer, ms);
        print_json_answer(&report, model.id(), model.is_random())?;
        return Ok(ExitCode::SUCCESS);
    }
    print_answer(&a, text, &answer, ms, &model.id(), model.is_random())
}

/// `--like-image`: the region's embedding (with the texts mixed in) against the index.
fn search_by_region(
    a: &SearchArgs,
    options: &SearchOptions,
    device: &candle_core::Device,
) -> anyhow::Result<ExitCode> {
    let photo = a.like_image.as_ref().expect("checked by the caller");
    let mut texts: Vec<WeightedText> = Vec::new();
    for t in a.text.iter().chain(&a.plus) {
        texts.push(t.parse()?);
    }
    for t in &a.minus {
        texts.push(t.parse::<WeightedText>()?.negated());
    }
    let searcher =
        RegionSearcher::open(&a.index, a.model.as_deref(), device).map_err(|e| match e {
            QueryError::Model { .. } => anyhow::anyhow!("{e} (pass --model DIR if it moved)"),
            other => anyhow::Error::new(other).context(format!("searching {}", a.index.display())),
        })?;
    let max_pixels = regionseek::decode::DEFAULT_MAX_PIXELS;
    let image = searcher
        .load_photo(photo, max_pixels)
        .with_context(|| format!("reading {}", photo.display()))?;
    let (prompt, asked) = match (&a.mask, &a.bbox, &a.point) {
        (Some(m), _, _) => (
            RegionPrompt::Mask(read_mask(m, max_pixels)?),
            format!("mask {}", m.display()),
        ),
        (_, Some(b), _) => (RegionPrompt::Box(parse_box(b)?), format!("box {b}")),
        (_, _, Some(p)) => (RegionPrompt::Point(parse_point(p)?), format!("point {p}")),
        _ => (RegionPrompt::WholePhoto, "the whole photo".to_string()),
    };
    let mut sam = match (&a.sam, &a.point) {
        (Some(dir), Some(_)) => Some(
            regionseek::sam::SamModel::load_dir(dir, Default::default(), a.sam_threads)
                .with_context(|| format!("loading SAM from {}", dir.display()))?,
        ),
        _ => None,
    };
    let query = RegionQuery {
        image: &image,
        prompt,
        texts,
    };
    let t = std::time::Instant::now();
    let found = searcher
        .search(&query, options, sam.as_mut(), &Default::default())
        .with_context(|| {
            format!(
                "searching {} by a region of {}",
                a.index.display(),
                photo.display()
            )
        })?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    let description = format!("{}, {asked}", photo.display());
    let model = searcher.model();
    if a.export.is_none() && a.json {
        write_crops(a, &found.answer)?;
        let (id, random) = (model.id(), model.is_random());
        print_json_answer(
            &RegionSearchReport::new(&description, found, ms),
            id,
            random,
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    if a.export.is_none() {
        eprintln!(
            "query region: box [{:.0}, {:.0}, {:.0}, {:.0}] of {}, embedded by {} in {:.0} ms",
            found.region.bbox[0],
            found.region.bbox[1],
            found.region.bbox[2],
            found.region.bbox[3],
            photo.display(),
            found.region.method,
            found.region.embed_ms
        );
    }
    print_answer(
        a,
        &description,
        &found.answer,
        ms,
        &model.id(),
        model.is_random(),
    )
}

/// `--json`: a search's report with the model that answered it.
fn print_json_answer(
    report: &impl serde::Serialize,
    model: String,
    random_model: bool,
) -> anyhow::Result<()> {
    #[derive(serde::Serialize)]
    struct Answer<'a, R: serde::Serialize> {
        #[serde(flatten)]
        report: &'a R,
        model: String,
        /// Random weights: the scores carry no meaning.
        random_model: bool,
    }
    println!(
        "{}",
        serde_json::to_string(&Answer {
            report,
            model,
            random_model,
        })?
    );
    Ok(())
}

/// Each hit's region as a PNG into --crop's folder.
fn write_crops(a: &SearchArgs, answer: &SearchAnswer) -> anyhow::Result<()> {
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
    Ok(())
}

/// The hits as --export asks, or as lines for a person.
fn print_answer(
    a: &SearchArgs,
    query: &str,
    answer: &SearchAnswer,
    ms: f64,
    model_id: &str,
    random_model: bool,
) -> anyhow::Result<ExitCode> {
    write_crops(a, answer)?;
    let hits = &answer.hits;
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
                    "query": query,
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
    {
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
            model_id,
            if random_model {
                ": random weights, the scores carry no meaning"
            } else {
                ""
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}
