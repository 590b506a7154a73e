//! `weights list | check | fetch`.

use std::path::PathBuf;
use std::process::ExitCode;

use regionseek::clip::{manifest, ClipModel, ModelSource};
use serde_json::json;

use super::output::print_json;

#[derive(clap::Subcommand)]
pub enum WeightsCommand {
    /// The named models regionseek can download, and the built-in random architectures.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Load a model directory (or `random:<arch>`) and report its sizes; fails with the first problem.
    Check {
        model: String,
        #[arg(long)]
        json: bool,
    },
    /// Download a named model from the Hugging Face hub (needs a connection).
    Fetch {
        name: String,
        /// Target directory (default: weights/NAME).
        #[arg(long)]
        dir: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: WeightsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        WeightsCommand::List { json } => {
            let entries = manifest::entries();
            let archs: Vec<&str> = regionseek::clip::Arch::ALL
                .iter()
                .map(|a| a.name())
                .collect();
            if json {
                print_json(&json!({"models": entries, "random_architectures": archs}))?;
            } else {
                for e in &entries {
                    println!("{:<28} {:<9} {:<9} {}", e.name, e.arch, e.layout, e.repo);
                }
                println!(
                    "built-in: {}",
                    archs
                        .iter()
                        .map(|a| format!("random:{a}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        WeightsCommand::Check { model, json } => {
            let source = ModelSource::parse(&model)?;
            let m = ClipModel::load(&source, &candle_core::Device::Cpu)?;
            let c = &m.config;
            let report = json!({
                "model": m.id(), "embed_dim": c.embed_dim,
                "vision": {"width": c.vision.width, "layers": c.vision.layers, "heads": c.vision.heads,
                           "patch": c.vision.patch_size, "image_size": c.vision.image_size,
                           "activation": c.vision.activation},
                "text": {"width": c.text.width, "layers": c.text.layers, "heads": c.text.heads,
                         "vocab": c.text.vocab_size, "context": c.text.context_length},
                "tokenizer": m.tokenizer().map(|t| match t {
                    regionseek::clip::Tokenizer::HuggingFace(_) => "tokenizer.json",
                    regionseek::clip::Tokenizer::Bpe(_) => "clip-bpe",
                }).unwrap_or("missing"),
            });
            if json {
                print_json(&report)?;
            } else {
                println!("{}", serde_json::to_string_pretty(&report)?);
            }
            Ok(ExitCode::SUCCESS)
        }
        WeightsCommand::Fetch { name, dir, json } => {
            let entry = manifest::find(&name).ok_or_else(|| {
                anyhow::anyhow!("unknown model `{name}`; `regionseek weights list` shows the names")
            })?;
            let dir = dir.unwrap_or_else(|| PathBuf::from("weights").join(&entry.name));
            let files = manifest::fetch(&entry, &dir)?;
            if json {
                print_json(&json!({"model": entry.name, "dir": dir, "files": files}))?;
            } else {
                println!("{} -> {}", entry.name, dir.display());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
