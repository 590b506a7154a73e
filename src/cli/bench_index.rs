//! `regionseek bench-index`: the vector index on synthetic clustered vectors (no model involved); one JSON
//! line per corpus size. With `--delete-fraction`, instead: an index built through the writer, that share of
//! its rows deleted, then compacted (time, peak memory, search before and after).

use std::path::PathBuf;
use std::process::ExitCode;

use regionseek_index::bench::{self, BenchSetup, CompactionSetup, Dataset};
use regionseek_index::{Codec, HnswParams};

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
    /// How the graph stores vectors for its walk (comma-separated, one graph each): f16, i8 or f32.
    #[arg(long, value_delimiter = ',', default_value = "i8")]
    codec: Vec<String>,
    /// Search beam widths (comma-separated; the graph is built once).
    #[arg(long, value_delimiter = ',', default_value = "64,128,256")]
    ef: Vec<usize>,
    /// Queries timed (each also searched exactly for recall).
    #[arg(long, default_value_t = 200)]
    queries: usize,
    /// Synthetic corpora (comma-separated): `clustered` (isotropic clusters in all dimensions, the hard case)
    /// and `low-dim` (a narrow cone with a few dozen dominant directions, like CLIP region embeddings).
    #[arg(long, value_delimiter = ',', default_value = "clustered")]
    data: Vec<String>,
    /// Also write each corpus as .npy (base, queries, exact top-10) into DIR/<data>-<vectors>/, for
    /// `bench/ann_side_by_side.py` to run hnswlib and faiss on the very same vectors.
    #[arg(long)]
    export: Option<PathBuf>,
    /// Where the graph is dumped and reloaded from.
    #[arg(long, default_value = "target/bench-index")]
    scratch: PathBuf,
    /// Measure deletion and compaction instead: build an index (segments, graph) of each size, delete this
    /// share of its rows (e.g. 0.1), compact, and report compaction seconds, peak RSS and search latency and
    /// recall@10 before and after (HNSW at the widest --ef, and exact). Needs disk for the index in --scratch.
    #[arg(long)]
    delete_fraction: Option<f64>,
    /// Also write all rows as a JSON array to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Rows are always JSON; accepted for symmetry with the other commands.
    #[arg(long)]
    json: bool,
}

pub fn run(args: BenchIndexArgs) -> anyhow::Result<ExitCode> {
    let codecs: Vec<Codec> = args
        .codec
        .iter()
        .map(|c| {
            Codec::parse(c)
                .ok_or_else(|| anyhow::anyhow!("unknown --codec {c:?}: use f16, i8 or f32"))
        })
        .collect::<anyhow::Result<_>>()?;
    let datasets: Vec<Dataset> = args
        .data
        .iter()
        .map(|d| {
            Dataset::parse(d)
                .ok_or_else(|| anyhow::anyhow!("unknown --data {d:?}: use clustered or low-dim"))
        })
        .collect::<anyhow::Result<_>>()?;
    if let Some(fraction) = args.delete_fraction {
        if !(0.0..1.0).contains(&fraction) {
            anyhow::bail!("--delete-fraction {fraction}: give a share in [0, 1)");
        }
        let codec = codecs
            .first()
            .copied()
            .unwrap_or(regionseek_index::DEFAULT_CODEC);
        return run_compaction(&args, &datasets, codec, fraction);
    }
    let mut rows = Vec::new();
    for &dataset in &datasets {
        for &n in &args.vectors {
            let export = args.export.as_ref().map(|dir| {
                let name = serde_json::to_value(dataset)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from));
                dir.join(format!("{}-{n}", name.unwrap_or_default()))
            });
            for (i, &codec) in codecs.iter().enumerate() {
                let setup = BenchSetup {
                    dataset,
                    vectors: n,
                    dim: args.dim,
                    params: HnswParams {
                        m: args.m,
                        ef_construction: args.ef_construction,
                        codec,
                    },
                    efs: &args.ef,
                    queries: args.queries,
                    scratch: &args.scratch,
                    // One export per corpus: the vectors do not depend on the codec.
                    export: export.as_deref().filter(|_| i == 0),
                };
                for result in bench::run(&setup)? {
                    println!("{}", serde_json::to_string(&result)?);
                    rows.push(result);
                }
            }
        }
    }
    if let Some(out) = &args.out {
        write_atomic(out, serde_json::to_string_pretty(&rows)?.as_bytes())?;
    }
    Ok(ExitCode::SUCCESS)
}

/// One JSON line per dataset and size: see `--delete-fraction`.
fn run_compaction(
    args: &BenchIndexArgs,
    datasets: &[Dataset],
    codec: Codec,
    fraction: f64,
) -> anyhow::Result<ExitCode> {
    let mut rows = Vec::new();
    for &dataset in datasets {
        for &n in &args.vectors {
            let setup = CompactionSetup {
                dataset,
                vectors: n,
                dim: args.dim,
                params: HnswParams {
                    m: args.m,
                    ef_construction: args.ef_construction,
                    codec,
                },
                delete_fraction: fraction,
                ef: args.ef.iter().copied().max().unwrap_or(64),
                queries: args.queries,
                scratch: &args.scratch,
            };
            let result = bench::run_compaction(&setup)?;
            println!("{}", serde_json::to_string(&result)?);
            rows.push(result);
        }
    }
    if let Some(out) = &args.out {
        write_atomic(out, serde_json::to_string_pretty(&rows)?.as_bytes())?;
    }
    Ok(ExitCode::SUCCESS)
}
