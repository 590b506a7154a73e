//! `regionseek classify` (zero-shot labels for regions of one photo) and `regionseek eval coco` (the paper's
//! class retrieval, Acc@1/5/10 per method).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use regionseek::masks::BinaryMask;
use regionseek::pipeline::{self, query, EmbedStage, MaskStage, RegionInput, RegionShape};
use regionseek::sam::MaskFrom;
use serde_json::json;

use super::args::{InversionArgs, ModelArgs};
use super::invert_cmd::MethodChoice;
use super::output::{print_json, write_atomic};
use super::sam_cmd::{parse_box, SamModelArgs};

fn stage(m: MethodChoice) -> EmbedStage {
    match m.0 {
        None => EmbedStage::Invert,
        Some(b) => EmbedStage::Baseline(b),
    }
}

#[derive(clap::Args)]
pub struct ClassifyArgs {
    image: PathBuf,
    /// A mask PNG at the photo's size (repeat).
    #[arg(long = "mask")]
    masks: Vec<PathBuf>,
    /// A box `x0,y0,x1,y1` (repeat): its mask comes from --mask-from (SAM with --sam DIR, or the box).
    #[arg(long = "box", value_parser = parse_box, allow_hyphen_values = true)]
    boxes: Vec<[f32; 4]>,
    /// Comma-separated class names, prompted as "a photo of a {}.".
    #[arg(long, value_delimiter = ',', required = true)]
    labels: Vec<String>,
    #[arg(long, value_parser = super::invert_cmd::parse_method, default_value = "maskinversion")]
    method: MethodChoice,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    sam: SamModelArgs,
    #[command(flatten)]
    inversion: InversionArgs,
    /// How many labels to print per region.
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// Turn the photo upright by its EXIF orientation first (default: its stored frame, as Pillow opens it).
    #[arg(long)]
    exif_rotate: bool,
    #[arg(long)]
    json: bool,
}

pub fn classify(a: ClassifyArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        !a.masks.is_empty() || !a.boxes.is_empty(),
        "give regions with --mask and/or --box"
    );
    let image = super::load_photo(&a.image, a.exif_rotate)?;
    let mut names = Vec::new();
    let mut masks: Vec<Result<BinaryMask, String>> = Vec::new();
    for m in &a.masks {
        names.push(m.display().to_string());
        masks.push(BinaryMask::read(m).map_err(|e| format!("{}: {e}", m.display())));
    }
    if !a.boxes.is_empty() {
        // The same mask stage the index pipelines run, on regions that are only boxes.
        let mut sam = a.sam.load()?;
        let stage = match a.sam.mask_from {
            MaskFrom::Sam => MaskStage::Sam,
            MaskFrom::Box => MaskStage::Box,
        };
        let regions: Vec<RegionInput> = a
            .boxes
            .iter()
            .enumerate()
            .map(|(i, b)| RegionInput {
                id: i.to_string(),
                bbox: Some(*b),
                shape: RegionShape::Box,
                label: None,
            })
            .collect();
        names.extend(a.boxes.iter().map(|b| format!("box {b:?}")));
        masks.extend(pipeline::run::make_masks(
            &image,
            &regions,
            stage,
            sam.as_mut(),
            a.sam.options(),
        ));
    }
    let model = a.model.load()?;
    let texts = query::text_embeddings(
        &model,
        &a.labels
            .iter()
            .map(|l| query::prompt(l))
            .collect::<Vec<_>>(),
    )?;
    let good: Vec<BinaryMask> = masks
        .iter()
        .filter_map(|m| m.as_ref().ok().cloned())
        .collect();
    let mut embs = if good.is_empty() {
        Vec::new()
    } else {
        pipeline::run::embed_masks(
            &model,
            &image,
            &good,
            stage(a.method),
            &a.inversion.config(),
        )
        .map_err(anyhow::Error::msg)?
    }
    .into_iter();
    let mut regions = Vec::new();
    let mut failed = 0;
    for (name, m) in names.iter().zip(&masks) {
        let result = match m {
            Err(e) => Err(e.clone()),
            Ok(_) => embs.next().expect("one result per good mask"),
        };
        match result {
            Ok(emb) => {
                let ranked = query::rank_labels(&model, &emb, &a.labels, &texts);
                if !a.json {
                    let top: Vec<String> = ranked
                        .iter()
                        .take(a.top)
                        .map(|(l, p)| format!("{l} {p:.3}"))
                        .collect();
                    println!("{name}: {}", top.join(", "));
                }
                regions.push(json!({"region": name, "labels": ranked.iter().take(a.top).map(|(l, p)| json!({"label": l, "prob": p})).collect::<Vec<_>>()}));
            }
            Err(e) => {
                failed += 1;
                eprintln!("{name}: {e}");
                regions.push(json!({"region": name, "error": e}));
            }
        }
    }
    if a.json {
        print_json(
            &json!({"image": a.image, "model": model.id(), "method": stage(a.method).name(), "regions": regions}),
        )?;
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

#[derive(clap::Subcommand)]
pub enum EvalCommand {
    /// Class retrieval on COCO: each object mask against "a photo of a {}." of every category.
    Coco(EvalCocoArgs),
}

#[derive(clap::Args)]
pub struct EvalCocoArgs {
    #[arg(long)]
    images: PathBuf,
    #[arg(long)]
    coco: PathBuf,
    /// Comma-separated: maskinversion, cls, crop, masked-crop, mask-pool, red-circle, blur.
    #[arg(long, value_delimiter = ',', value_parser = super::invert_cmd::parse_method,
          default_value = "maskinversion,masked-crop,crop,cls,mask-pool,red-circle,blur")]
    methods: Vec<MethodChoice>,
    /// Only the first N photos.
    #[arg(long)]
    limit: Option<usize>,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    inversion: InversionArgs,
    /// Also write the table as JSON here.
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

pub fn run(c: EvalCommand) -> anyhow::Result<ExitCode> {
    let EvalCommand::Coco(a) = c;
    let (mut images, issues) = pipeline::from_coco(&a.images, &a.coco)?;
    if let Some(n) = a.limit {
        images.truncate(n);
    }
    for i in &issues {
        eprintln!("skipped {}: {}", i.item, i.message);
    }
    let dataset = regionseek::masks::CocoDataset::read(&a.coco).context("reading categories")?;
    let categories: Vec<String> = dataset.categories.iter().map(|c| c.name.clone()).collect();
    let model = a.model.load()?;
    let methods: Vec<EmbedStage> = a.methods.iter().map(|m| stage(*m)).collect();
    let bar = if a.json {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(images.len() as u64)
    };
    let started = std::time::Instant::now();
    let scores = query::eval_class_retrieval(
        &model,
        &images,
        &categories,
        &methods,
        &a.inversion.config(),
        |_, _| bar.inc(1),
    )?;
    bar.finish_and_clear();
    let table = json!({
        "dataset": a.coco, "images": images.len(), "categories": categories.len(), "model": model.id(),
        "random_weights": model.is_random(), "inversion": {"size": a.inversion.size, "steps": a.inversion.steps,
        "lr": a.inversion.lr, "alpha": a.inversion.alpha}, "seconds": started.elapsed().as_secs_f64(), "methods": scores,
    });
    if let Some(out) = &a.out {
        write_atomic(out, &serde_json::to_vec_pretty(&table)?)?;
    }
    if a.json {
        print_json(&table)?;
    } else {
        println!(
            "{:<14} {:>8} {:>7} {:>7} {:>7} {:>9} {:>7}",
            "method", "regions", "Acc@1", "Acc@5", "Acc@10", "ms/region", "failed"
        );
        for s in &scores {
            println!(
                "{:<14} {:>8} {:>7.2} {:>7.2} {:>7.2} {:>9.1} {:>7}",
                s.method, s.regions, s.acc_at_1, s.acc_at_5, s.acc_at_10, s.ms_per_region, s.failed
            );
        }
        if model.is_random() {
            println!(
                "(model {} has random weights: the accuracies carry no meaning)",
                model.id()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
