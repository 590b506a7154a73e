//! Many indexes of one embedding space into one (the shards of a distributed run): rows copied with their stored
//! embeddings (no model, no re-embedding), one graph over all of them. Rerunning resumes: rows already in the
//! output are skipped by their key, as any append skips them.

use std::path::{Path, PathBuf};

use crate::manifest::Manifest;
use crate::{IndexError, IndexSpec, IndexWriter, LockWait, RegionIndex, RegionRecord};

/// Rows per committed segment of the output.
const BATCH: usize = 20_000;

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct MergeReport {
    pub sources: Vec<PathBuf>,
    pub rows_read: usize,
    pub added: usize,
    /// Rows whose region (image content, region id, method) the output already held.
    pub duplicates: usize,
    /// Rows the sources had deleted: not copied.
    pub deleted_skipped: usize,
    pub rows_total: usize,
}

/// The indexes a merge reads: each path that is an index, or else every immediate subfolder of it that is one
/// (a sharded dataset's `shard-0000`, `shard-0001`, …), in name order.
pub fn find_sources(paths: &[PathBuf]) -> Result<Vec<PathBuf>, IndexError> {
    let mut out = Vec::new();
    for p in paths {
        if Manifest::read(p).is_ok() {
            out.push(p.clone());
            continue;
        }
        let mut subs: Vec<PathBuf> = std::fs::read_dir(p)
            .map_err(IndexError::io(p))?
            .flatten()
            .map(|e| e.path())
            .filter(|s| s.is_dir() && Manifest::read(s).is_ok())
            .collect();
        if subs.is_empty() {
            return Err(IndexError::NotFound(p.clone()));
        }
        subs.sort();
        out.extend(subs);
    }
    Ok(out)
}

/// Merges `sources` (see [`find_sources`]) into the index at `out` (created if absent, taking the first
/// source's embedding space and graph parameters). Sources of another space are refused before anything is
/// written. `progress` hears the rows read so far and the total.
pub fn merge(
    sources: &[PathBuf],
    out: &Path,
    wait: LockWait,
    mut progress: impl FnMut(usize, usize),
) -> Result<MergeReport, IndexError> {
    // Every source's space is checked from its manifest before anything is written; the sources are then
    // opened one at a time, so that only one shard's rows are in memory beside the output's.
    let manifests: Vec<Manifest> = sources
        .iter()
        .map(|s| Manifest::read(s))
        .collect::<Result<_, _>>()?;
    let Some(m) = manifests.first() else {
        return Err(IndexError::Mismatch("no index to merge".into()));
    };
    let spec = IndexSpec {
        dim: m.dim,
        model_id: m.model_id.clone(),
        weights_hash: m.weights_hash.clone(),
        hnsw: m.hnsw,
    };
    for (manifest, path) in manifests.iter().zip(sources) {
        manifest.check_space(path, spec.dim, &spec.model_id, &spec.weights_hash)?;
    }
    let mut target = IndexWriter::open_or_create(out, &spec, wait)?;
    let total: usize = manifests.iter().map(|m| m.rows as usize).sum();
    let mut report = MergeReport {
        sources: sources.to_vec(),
        ..Default::default()
    };
    let mut commit =
        |batch: Vec<RegionRecord>, report: &mut MergeReport| -> Result<(), IndexError> {
            let added = target.append(batch)?;
            report.added += added.added;
            report.duplicates += added.duplicates;
            Ok(())
        };
    for source in sources {
        let ix = RegionIndex::open(source)?;
        let mut batch = Vec::with_capacity(BATCH.min(ix.len()));
        for (row, meta) in ix.rows().iter().enumerate() {
            if ix.is_deleted(row) {
                report.deleted_skipped += 1;
                report.rows_read += 1;
                continue;
            }
            let embedding = ix.embedding(row).ok_or_else(|| IndexError::InvalidRecord {
                key: format!("{}#{}", meta.image, meta.region_id),
                message: format!("row {row} of {} has no vector", ix.dir().display()),
            })?;
            batch.push(RegionRecord {
                meta: meta.clone(),
                embedding,
            });
            if batch.len() == BATCH {
                commit(std::mem::take(&mut batch), &mut report)?;
            }
            report.rows_read += 1;
            if report.rows_read % 1000 == 0 {
                progress(report.rows_read, total);
            }
        }
        if !batch.is_empty() {
            commit(batch, &mut report)?;
        }
    }
    target.save_graph()?;
    progress(report.rows_read, total);
    report.rows_total = target.len();
    Ok(report)
}
