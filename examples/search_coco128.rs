//! Index the shared COCO128 photos by region with the library's pipeline, then run a few text queries.
//! `cargo run --release --example search_coco128 [MODEL] [INDEX_DIR]` (defaults: `random:vit-b-32`,
//! `target/coco128-index`). With random weights the rankings carry no meaning; pass a model directory.
//! A second run resumes the index instead of starting over.

use std::path::PathBuf;

use regionseek::clip::ClipModel;
use regionseek::index::RegionIndex;
use regionseek::pipeline::query::{SearchOptions, Searcher};
use regionseek::pipeline::{self, IndexRun, PipelineSpec};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let model_spec = args.next().unwrap_or_else(|| "random:vit-b-32".into());
    let out = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/coco128-index"));
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/coco128");
    anyhow::ensure!(
        data.is_dir(),
        "{} not found: this example reads the shared COCO128 photos",
        data.display()
    );

    let spec = PipelineSpec::load("gt-masks")?;
    let model = ClipModel::load_spec(&model_spec, &candle_core::Device::Cpu)?;
    let (images, issues) = pipeline::from_coco(&data.join("images"), &data.join("instances.json"))?;
    let report = IndexRun {
        spec: &spec,
        model: &model,
        sam: None,
        out: out.clone(),
        reporter: Default::default(),
        sync: pipeline::run::SyncPolicy {
            delete_vanished: true,
            input_names_regions: true,
        },
        wait: regionseek::index::LockWait::Forever,
        lock: None,
        decode: Default::default(),
        cancel: Default::default(),
        skipped: Default::default(),
    }
    .run(images, issues)?;
    println!(
        "indexed {} regions ({} already there) in {:.1} s; {} rows in {}",
        report.regions_added,
        report.regions_already_indexed,
        report.seconds,
        report.rows_total,
        out.display()
    );

    let searcher = Searcher::with_model(RegionIndex::open(&out)?, std::sync::Arc::new(model))?;
    let top3 = SearchOptions {
        k: 3,
        ..Default::default()
    };
    for text in [
        "a dog on a sofa",
        "a red car",
        "a person holding an umbrella",
    ] {
        println!("\n{text}");
        for h in searcher.search(text, &top3)?.hits {
            println!(
                "  {:.4}  {} region {} ({})",
                h.score,
                h.image,
                h.region_id,
                h.label.unwrap_or_default()
            );
        }
    }
    Ok(())
}
