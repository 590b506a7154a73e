//! `regionseek bench-index`: the vector index on synthetic clustered vectors (no model involved); one JSON
//! line per corpus size.

use std::path::PathBuf;
use std::process::ExitCode;

use regionseek_index::{bench, HnswParams};

use super::output::write_atomic;

#[derive(clap::Args)]
pub struct BenchIndexArgs {
    /// Corpus sizes (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "100000,1000000")]
    vectors: Vec<usize>,
    #[arg(long, default_value_t = 512)]
    dim: usize,
    /// HNSW links per node.
    #[arg(long, default_value_t = 16)]
    m: usize,
    #[arg(long, default_value_t = 100)]
    ef_construction: usize,
    /// Search beam widths (comma-separated; the graph is built once).
    #[arg(long, value_delimiter = ',', default_value = "64,128,256")]
    ef: Vec<usize>,
    /// Queries timed (each also searched exactly for recall).
    #[arg(long, default_value_t = 200)]
    queries: usize,
    /// Where the graph is dumped and reloaded from.
    #[arg(long, default_value = "target/bench-index")]
    scratch: PathBuf,
    /// Also write all rows as a JSON array to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Rows are always JSON; accepted for symmetry with the other commands.
    #[arg(long)]
    json: bool,
}

pub fn run(args: BenchIndexArgs) -> anyhow::Result<ExitCode> {
    let params = HnswParams {
        m: args.m,
        ef_construction: args.ef_construction,
    };
    let mut rows = Vec::new();
    for &n in &args.vectors {
        for result in bench::run(n, args.dim, params, &args.ef, args.queries, &args.scratch)? {
            println!("{}", serde_json::to_string(&result)?);
            rows.push(result);
        }
    }
    if let Some(out) = &args.out {
        write_atomic(out, serde_json::to_string_pretty(&rows)?.as_bytes())?;
    }
    Ok(ExitCode::SUCCESS)
}
