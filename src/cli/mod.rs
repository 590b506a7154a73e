//! Argument parsing and output formatting; the work happens in the library.

mod args;
mod bench;
mod bench_decode;
mod bench_index;
mod bench_serve;
mod choice;
mod decode_cmd;
mod embed;
mod eval_cmd;
mod index_cmd;
mod invert_cmd;
mod output;
mod repair_cmd;
pub(crate) mod sam_cmd;
mod search_cmd;
mod serve_cmd;
mod weights_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// A photo for a one-photo command: its stored frame, or upright by its EXIF orientation with `--exif-rotate`.
fn load_photo(
    path: &std::path::Path,
    exif_rotate: bool,
) -> Result<image::RgbImage, regionseek::decode::DecodeError> {
    let options = regionseek::decode::DecodeOptions {
        exif_rotate,
        ..Default::default()
    };
    regionseek::decode::load_rgb_with(path, &options)
}

#[derive(Parser)]
#[command(
    name = "regionseek",
    version,
    about = "Search photo collections by region"
)]
pub struct Cli {
    /// Log filter (also RUST_LOG), e.g. `info` or `regionseek=debug`.
    #[arg(long, global = true, default_value = "warn")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// CLIP image embedding of whole images (the CLS token).
    EmbedImage(embed::EmbedImageArgs),
    /// CLIP text embeddings.
    EmbedText(embed::EmbedTextArgs),
    /// Localized embeddings of mask regions of one image (MaskInversion or a baseline).
    Invert(invert_cmd::InvertArgs),
    /// Index a folder of photos by region with a pipeline (pipelines/*.toml); rerun to resume.
    Index(index_cmd::IndexArgs),
    /// Search a region index with a text query.
    Search(search_cmd::SearchArgs),
    /// Serve an index: a web page to search it and a JSON API (loopback by default).
    Serve(serve_cmd::ServeArgs),
    /// Check every file of an index (checksums, Parquet, graph); exit 0 when intact, 1 otherwise.
    Verify(repair_cmd::VerifyArgs),
    /// Rebuild a lost manifest from intact segments, quarantine damaged files, rebuild the graph.
    IndexRepair(repair_cmd::RepairArgs),
    /// Rewrite an index without its deleted rows (new segments and graph, one commit); renumbers rows.
    Compact(repair_cmd::CompactArgs),
    /// Merge indexes of one embedding space (e.g. a sharded run's shards) into one, without re-embedding.
    Merge(repair_cmd::MergeArgs),
    /// Zero-shot labels for regions (masks or boxes) of one photo.
    Classify(eval_cmd::ClassifyArgs),
    /// Evaluate region embedding methods (class retrieval on COCO: Acc@1/5/10).
    #[command(subcommand)]
    Eval(eval_cmd::EvalCommand),
    /// Masks from box prompts with a SAM ONNX model (or the boxes themselves), as PNGs and COCO RLE.
    Sam(sam_cmd::SamArgs),
    /// Time the forward, the Jacobian build and the inversion steps (JSON lines).
    Bench(bench::BenchArgs),
    /// How regionseek reads photos: each file's format, size and a hash of its pixels, or why it is refused.
    Decode(decode_cmd::DecodeArgs),
    /// Decode throughput (megapixels/s) of regionseek's decoder against the `image` crate's on a photo folder.
    BenchDecode(bench_decode::BenchDecodeArgs),
    /// Benchmark the vector index on synthetic clustered vectors: build rate, latency, recall@10, reload.
    BenchIndex(bench_index::BenchIndexArgs),
    /// Load-test the search server on loopback: latency of cache hits and misses, requests/s, memory.
    BenchServe(bench_serve::BenchServeArgs),
    /// List, check or download model weights.
    #[command(subcommand)]
    Weights(weights_cmd::WeightsCommand),
}

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cli.log));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::EmbedImage(a) => embed::embed_image(a),
        Command::EmbedText(a) => embed::embed_text(a),
        Command::Invert(a) => invert_cmd::run(a),
        Command::Sam(a) => sam_cmd::run(a),
        Command::Index(a) => index_cmd::run(a),
        Command::Search(a) => search_cmd::run(a),
        Command::Verify(a) => repair_cmd::verify(a),
        Command::IndexRepair(a) => repair_cmd::repair(a),
        Command::Merge(a) => repair_cmd::merge(a),
        Command::Compact(a) => repair_cmd::compact(a),
        Command::Classify(a) => eval_cmd::classify(a),
        Command::Eval(c) => eval_cmd::run(c),
        Command::Bench(a) => bench::run(a),
        Command::Decode(a) => decode_cmd::run(a),
        Command::BenchDecode(a) => bench_decode::run(a),
        Command::BenchIndex(a) => bench_index::run(a),
        Command::Serve(a) => serve_cmd::run(a),
        Command::BenchServe(a) => bench_serve::run(a),
        Command::Weights(c) => weights_cmd::run(c),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}{}", repair_hint(&e));
            ExitCode::FAILURE
        }
    }
}

/// What to run when a command stopped at a damaged index file, whichever command it was.
fn repair_hint(e: &anyhow::Error) -> String {
    e.chain()
        .find_map(|cause| match cause.downcast_ref::<regionseek::index::IndexError>() {
            Some(regionseek::index::IndexError::Corrupt { path, .. }) => {
                let dir = path.parent().unwrap_or(path).display();
                Some(format!(
                    "\n`regionseek verify {dir}` lists every damaged file; `regionseek index-repair {dir}` \
                     moves damaged segments aside and rebuilds the rest"
                ))
            }
            _ => None,
        })
        .unwrap_or_default()
}
