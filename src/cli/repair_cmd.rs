//! `regionseek verify` and `regionseek index-repair`: check an index file by file; bring a damaged one back.
//! `regionseek merge` and `regionseek compact`: shards into one index; an index without its deleted rows.

use std::path::PathBuf;
use std::process::ExitCode;

use regionseek::index::{self, LockWait};
use serde_json::json;

use super::output::{print_json, with_wait_hint};

#[derive(clap::Args)]
pub struct VerifyArgs {
    /// The index directory.
    index: PathBuf,
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct RepairArgs {
    /// The index directory.
    index: PathBuf,
    /// When another process is writing the index: wait for it instead of exiting at once.
    #[arg(long)]
    wait: bool,
    #[arg(long)]
    json: bool,
}

fn describe(p: &index::FileProblem) -> String {
    let rows = p.rows.map(|r| format!(" ({r} rows)")).unwrap_or_default();
    format!("{}: {}{rows}", p.file, p.problem)
}

/// Exit 0 when every file is intact, 1 otherwise (including no index at all).
pub fn verify(a: VerifyArgs) -> anyhow::Result<ExitCode> {
    let report = match index::verify(&a.index) {
        Ok(r) => r,
        Err(e) => {
            if a.json {
                print_json(&json!({"dir": a.index, "ok": false, "error": e.to_string()}))?;
            } else {
                eprintln!("{}: {e}", a.index.display());
            }
            return Ok(ExitCode::FAILURE);
        }
    };
    if a.json {
        print_json(&json!(report))?;
    } else {
        println!(
            "{}: {} rows in {} segments, graph {}, {} duplicate rows",
            a.index.display(),
            report.rows,
            report.segments,
            report.graph,
            report.duplicate_rows
        );
        for p in &report.problems {
            println!("  damaged: {}", describe(p));
        }
        for f in &report.unlisted {
            println!("  not part of the index (manifest.json does not name it): {f}");
        }
        println!(
            "{}",
            if report.ok {
                "ok".to_string()
            } else {
                format!(
                    "NOT OK: `regionseek index-repair {}` rebuilds what can be rebuilt",
                    a.index.display()
                )
            }
        );
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub fn repair(a: RepairArgs) -> anyhow::Result<ExitCode> {
    let wait = LockWait::forever_if(a.wait);
    let report = index::repair(&a.index, wait).map_err(with_wait_hint)?;
    if a.json {
        print_json(&json!(report))?;
    } else {
        if !report.changed {
            println!("{}: nothing to repair", a.index.display());
        }
        for q in &report.quarantined {
            println!("  moved to quarantine/: {}", describe(q));
        }
        println!(
            "{}: manifest {}, {} rows in {} segments, graph {}; {} rows lost{}{}",
            a.index.display(),
            report.manifest,
            report.rows,
            report.segments,
            report.graph,
            report.rows_lost,
            if report.segments_lost_uncounted > 0 {
                format!(
                    " (+ {} damaged segments of unknown size)",
                    report.segments_lost_uncounted
                )
            } else {
                String::new()
            },
            if report.duplicate_rows_removed > 0 {
                format!(", {} duplicate rows removed", report.duplicate_rows_removed)
            } else {
                String::new()
            }
        );
        if report.rows_lost > 0 || report.segments_lost_uncounted > 0 {
            println!("rerun the same `regionseek index` command to embed the lost regions again");
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args)]
pub struct MergeArgs {
    /// Indexes to merge: index folders, or folders of them (a sharded dataset's `shard-0000`, `shard-0001`, … in name order).
    #[arg(required = true)]
    sources: Vec<PathBuf>,
    /// The merged index (created if absent; a rerun adds only what it lacks).
    #[arg(long)]
    out: PathBuf,
    /// When another process is writing the output: wait for it instead of exiting at once.
    #[arg(long)]
    wait: bool,
    #[arg(long)]
    json: bool,
}

/// `regionseek merge`: rows and their stored embeddings into one index with one graph, no model needed.
pub fn merge(a: MergeArgs) -> anyhow::Result<ExitCode> {
    let sources = index::find_sources(&a.sources)?;
    let bar = if a.json {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(0)
    };
    let wait = LockWait::forever_if(a.wait);
    let report = index::merge(&sources, &a.out, wait, |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })
    .map_err(with_wait_hint)?;
    bar.finish_and_clear();
    if a.json {
        print_json(&json!(report))?;
    } else {
        println!(
            "{} indexes, {} rows read: {} added, {} already there; {} rows in {}",
            report.sources.len(),
            report.rows_read,
            report.added,
            report.duplicates,
            report.rows_total,
            a.out.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args)]
pub struct CompactArgs {
    /// The index directory.
    index: PathBuf,
    /// When another process is writing the index: wait for it instead of exiting at once.
    #[arg(long)]
    wait: bool,
    #[arg(long)]
    json: bool,
}

/// `regionseek compact`: by hand what a writer does on its own once deleted rows pass
/// `DEFAULT_COMPACT_THRESHOLD`. Row ids change; readers opened before keep their snapshot.
pub fn compact(a: CompactArgs) -> anyhow::Result<ExitCode> {
    let wait = LockWait::forever_if(a.wait);
    let mut writer = index::IndexWriter::open(&a.index, wait).map_err(with_wait_hint)?;
    let report = writer.compact()?;
    drop(writer);
    if a.json {
        print_json(&json!({"dir": a.index, "report": report}))?;
    } else if report.removed == 0 {
        println!(
            "{}: no deleted rows, nothing to compact ({} rows)",
            a.index.display(),
            report.rows_before
        );
    } else {
        println!(
            "{}: {} rows -> {} ({} deleted rows removed, {} segments -> {}) in {:.1} s",
            a.index.display(),
            report.rows_before,
            report.rows_after,
            report.removed,
            report.segments_before,
            report.segments_after,
            report.seconds
        );
    }
    Ok(ExitCode::SUCCESS)
}
