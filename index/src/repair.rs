//! Checking an index directory file by file, and bringing a damaged one back: a manifest rebuilt from the
//! intact segments, damaged segments moved aside (their rows reported lost; rerunning `index` re-adds
//! them), duplicate rows dropped, and the graph, which is derived data, rebuilt from the stored embeddings.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::files::{self, generation_of, QUARANTINE};
use crate::graph::{FrozenGraph, ENGINE_NAME};
use crate::lock::{LockWait, WriterLock};
use crate::manifest::{checksum, verify as verify_file, FileEntry, Manifest, FORMAT};
use crate::record::{RegionMeta, RegionRecord};
use crate::region_index::IndexWriter;
use crate::tombstones::Tombstones;
use crate::{store, IndexError};

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FileProblem {
    pub file: String,
    pub problem: String,
    /// Rows the file held per the manifest (None when no manifest says).
    pub rows: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub dir: PathBuf,
    pub ok: bool,
    /// Rows the manifest lists.
    pub rows: u64,
    pub segments: usize,
    /// "ok", "none" (no dump yet: rows are inserted on open), or what is wrong with it.
    pub graph: String,
    /// Rows that repeat an earlier row's (image content, region id, method), deleted rows left out.
    pub duplicate_rows: usize,
    /// Rows marked deleted (0 when the tombstones file is damaged).
    pub deleted_rows: u64,
    /// "ok", "none" (nothing deleted), or what is wrong with the tombstones file.
    pub tombstones: String,
    pub problems: Vec<FileProblem>,
    /// Segment files the manifest does not name (not part of the index; reported, never deleted).
    pub unlisted: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct RepairReport {
    pub dir: PathBuf,
    /// "kept" or "rebuilt" (it was missing or unreadable).
    pub manifest: String,
    pub rows: u64,
    pub segments: usize,
    /// Rows of damaged segments, where a manifest recorded them.
    pub rows_lost: u64,
    /// Damaged segments whose row count nothing recorded.
    pub segments_lost_uncounted: usize,
    pub duplicate_rows_removed: usize,
    /// "none", "kept", "applied" (the deleted rows were dropped while segments were rewritten anyway), or
    /// "lost: …" (the file was damaged or no manifest said which applies: deleted rows are back).
    pub tombstones: String,
    pub deleted_rows_removed: usize,
    /// "kept", "rebuilt" or "none" (an empty index).
    pub graph: String,
    /// Files moved to `quarantine/`, each with what was wrong.
    pub quarantined: Vec<FileProblem>,
    pub changed: bool,
}

struct Segment {
    file: String,
    /// Its first row's id in the manifest that listed it (for the tombstones; 0 without a manifest).
    first: usize,
    rows: Vec<RegionMeta>,
    vectors: Vec<f32>,
}

fn check_segment(dir: &Path, entry: &FileEntry, dim: usize) -> Result<Segment, IndexError> {
    verify_file(dir, entry)?;
    let path = dir.join(&entry.file);
    let (rows, vectors) = store::read_segment(&path, dim, true)?;
    if rows.len() as u64 != entry.rows {
        return Err(IndexError::corrupt(
            &path,
            format!("{} rows, the manifest says {}", rows.len(), entry.rows),
        ));
    }
    if vectors.iter().any(|x| !x.is_finite()) {
        return Err(IndexError::corrupt(&path, "an embedding is not finite"));
    }
    Ok(Segment {
        file: entry.file.clone(),
        first: 0,
        rows,
        vectors,
    })
}

fn problem(file: &str, e: &IndexError, rows: Option<u64>) -> FileProblem {
    // The path is the file itself; keep only what is wrong with it.
    let text = match e {
        IndexError::Corrupt { message, .. } => message.clone(),
        other => other.to_string(),
    };
    FileProblem {
        file: file.to_string(),
        problem: text,
        rows,
    }
}

fn unlisted_segments(dir: &Path, m: &Manifest) -> Vec<String> {
    // Segments a compaction retired are the collector's to remove, not someone's data.
    let listed: HashSet<&str> = m
        .segments
        .iter()
        .map(|s| s.file.as_str())
        .chain(m.retired.iter().map(String::as_str))
        .collect();
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| files::is_segment(n) && !listed.contains(n.as_str()))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Reads every file of the index in full (checksums, Parquet decode, row counts, the graph) and reports
/// what is wrong. Read-only; runs beside a writer.
pub fn verify(dir: &Path) -> Result<VerifyReport, IndexError> {
    let m = Manifest::read(dir)?;
    let mut problems = Vec::new();
    let (deleted, tombstones) = match &m.tombstones {
        None => (Tombstones::default(), "none".to_string()),
        Some(t) => match Tombstones::read(dir, t) {
            Ok(d) => (d, "ok".to_string()),
            Err(e) => {
                let p = problem(&t.file.file, &e, None);
                let text = format!("damaged: {}", p.problem);
                problems.push(p);
                (Tombstones::default(), text)
            }
        },
    };
    let mut keys = HashSet::new();
    let mut duplicate_rows = 0;
    let mut first = 0usize;
    for entry in &m.segments {
        match check_segment(dir, entry, m.dim) {
            Ok(seg) => {
                for (i, r) in seg.rows.iter().enumerate() {
                    // A deleted region added again repeats the deleted row's key: that is no duplicate.
                    if !deleted.is_dead(first + i) && !keys.insert(r.key()) {
                        duplicate_rows += 1;
                    }
                }
            }
            Err(e) => problems.push(problem(&entry.file, &e, Some(entry.rows))),
        }
        first += entry.rows as usize;
    }
    let graph = match &m.graph {
        None => "none".to_string(),
        Some(g) if g.engine != ENGINE_NAME => {
            format!(
                "{} dump, no longer read: rebuilt from the table when the index is next opened",
                g.engine
            )
        }
        Some(g) => {
            let checked = verify_file(dir, &g.graph)
                .map_err(|e| (&g.graph.file, e))
                .and_then(|_| verify_file(dir, &g.data).map_err(|e| (&g.data.file, e)))
                .and_then(|_| {
                    FrozenGraph::load(dir, &g.basename, g.rows as usize)
                        .map(drop)
                        .map_err(|e| (&g.graph.file, e))
                });
            match checked {
                Ok(()) if g.rows <= m.rows => "ok".to_string(),
                Ok(()) => format!("covers {} rows, the table has {}", g.rows, m.rows),
                Err((file, e)) => {
                    let p = problem(file, &e, None);
                    let text = format!("damaged: {}", p.problem);
                    problems.push(p);
                    text
                }
            }
        }
    };
    let legacy_graph = m.graph.as_ref().is_some_and(|g| g.engine != ENGINE_NAME);
    let ok = problems.is_empty()
        && duplicate_rows == 0
        && (graph == "ok" || graph == "none" || legacy_graph);
    Ok(VerifyReport {
        dir: dir.to_path_buf(),
        ok,
        rows: m.rows,
        segments: m.segments.len(),
        graph,
        duplicate_rows,
        deleted_rows: deleted.count() as u64,
        tombstones,
        problems,
        unlisted: unlisted_segments(dir, &m),
    })
}

fn quarantine(dir: &Path, file: &str) -> Result<(), IndexError> {
    let from = dir.join(file);
    if !from.exists() {
        return Ok(());
    }
    let q = dir.join(QUARANTINE);
    std::fs::create_dir_all(&q).map_err(IndexError::io(&q))?;
    let mut to = q.join(file);
    let mut n = 1;
    while to.exists() {
        to = q.join(format!("{file}.{n}"));
        n += 1;
    }
    std::fs::rename(&from, &to).map_err(IndexError::io(&to))?;
    tracing::warn!("moved {} to {}", from.display(), to.display());
    Ok(())
}

/// Brings an index back to a consistent, searchable state, keeping every intact row. Takes the writer
/// lock (waiting as `wait` says). Without a manifest, every `regions-*.parquet` file in the directory is a
/// candidate; the embedding space (dimension, model, weights) held by most rows wins, and segments of another
/// space are quarantined rather than mixed in.
pub fn repair(dir: &Path, wait: LockWait) -> Result<RepairReport, IndexError> {
    if !dir.is_dir() {
        return Err(IndexError::NotFound(dir.to_path_buf()));
    }
    let lock = WriterLock::acquire(dir, wait)?;
    let mut report = RepairReport {
        dir: dir.to_path_buf(),
        ..Default::default()
    };
    let old = match Manifest::read(dir) {
        Ok(m) => Some(m),
        Err(IndexError::Orphaned(_)) => None,
        Err(IndexError::Corrupt { path, message }) if path.ends_with(files::MANIFEST) => {
            tracing::warn!(
                "{}: {message}; rebuilding it from the segments",
                path.display()
            );
            None
        }
        Err(e) => return Err(e),
    };
    // The segments to keep, in row order, and what the new manifest records about the space.
    let mut kept: Vec<Segment> = Vec::new();
    let (dim, model_id, weights_hash, hnsw, mut generation);
    let mut graph_usable = false;
    match &old {
        Some(m) => {
            report.manifest = "kept".into();
            let mut first = 0;
            for entry in &m.segments {
                let checked = check_segment(dir, entry, m.dim);
                let at = first;
                first += entry.rows as usize;
                match checked {
                    Ok(seg) => kept.push(Segment { first: at, ..seg }),
                    Err(e) => {
                        report.rows_lost += entry.rows;
                        report
                            .quarantined
                            .push(problem(&entry.file, &e, Some(entry.rows)));
                    }
                }
            }
            if let Some(g) = &m.graph {
                graph_usable = g.engine == ENGINE_NAME
                    && verify_file(dir, &g.graph).is_ok()
                    && verify_file(dir, &g.data).is_ok()
                    && FrozenGraph::load(dir, &g.basename, g.rows as usize).is_ok();
            }
            (dim, model_id, weights_hash, hnsw) =
                (m.dim, m.model_id.clone(), m.weights_hash.clone(), m.hnsw);
            generation = m.generation;
        }
        None => {
            report.manifest = "rebuilt".into();
            let mut names: Vec<String> = std::fs::read_dir(dir)
                .map_err(IndexError::io(dir))?
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| files::is_segment(n))
                .collect();
            names.sort_by_key(|n| generation_of(n).unwrap_or(0));
            generation = names
                .iter()
                .filter_map(|n| generation_of(n))
                .max()
                .unwrap_or(0);
            let mut read = Vec::new();
            for name in names {
                let path = dir.join(&name);
                let loaded = store::segment_dim(&path).and_then(|d| {
                    let (rows, vectors) = store::read_segment(&path, d, true)?;
                    if rows.is_empty() {
                        return Err(IndexError::corrupt(&path, "it holds no rows"));
                    }
                    if vectors.iter().any(|x| !x.is_finite()) {
                        return Err(IndexError::corrupt(&path, "an embedding is not finite"));
                    }
                    Ok((d, rows, vectors))
                });
                match loaded {
                    Ok((d, rows, vectors)) => read.push((
                        d,
                        Segment {
                            file: name,
                            first: 0,
                            rows,
                            vectors,
                        },
                    )),
                    Err(e) => {
                        report.segments_lost_uncounted += 1;
                        report.quarantined.push(problem(&name, &e, None));
                    }
                }
            }
            // The space most rows belong to.
            let space = |d: usize, s: &Segment| {
                let m = &s.rows[0].method;
                (d, m.model_id.clone(), m.weights_hash.clone())
            };
            let mut counts: Vec<((usize, String, String), usize)> = Vec::new();
            for (d, s) in &read {
                let key = space(*d, s);
                match counts.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, n)) => *n += s.rows.len(),
                    None => counts.push((key, s.rows.len())),
                }
            }
            counts.sort_by(|a, b| b.1.cmp(&a.1));
            let Some(((d, model, weights), _)) = counts.into_iter().next() else {
                drop(lock);
                return Err(IndexError::corrupt(
                    dir,
                    "no intact segment to rebuild an index from",
                ));
            };
            for (sd, s) in read {
                let mixed = s
                    .rows
                    .iter()
                    .any(|r| r.method.model_id != model || r.method.weights_hash != weights);
                if sd != d || mixed {
                    report.rows_lost += s.rows.len() as u64;
                    report.quarantined.push(FileProblem {
                        file: s.file.clone(),
                        problem: format!(
                            "its embeddings are of another space ({sd}-d, model {}) than the index's \
                             ({d}-d, model {model})",
                            s.rows[0].method.model_id
                        ),
                        rows: Some(s.rows.len() as u64),
                    });
                } else {
                    kept.push(s);
                }
            }
            (dim, model_id, weights_hash, hnsw) = (d, model, weights, Default::default());
        }
    }
    let deleted = match old.as_ref().and_then(|m| m.tombstones.as_ref()) {
        Some(t) => match Tombstones::read(dir, t) {
            Ok(d) => {
                report.tombstones = "kept".into();
                d
            }
            Err(e) => {
                let p = problem(&t.file.file, &e, None);
                report.tombstones = format!("lost: {}; the rows it deleted are back", p.problem);
                tracing::warn!("{}: {}", dir.display(), report.tombstones);
                report.quarantined.push(p);
                Tombstones::default()
            }
        },
        None if old.is_none() && holds_tombstones(dir) => {
            report.tombstones =
                "lost: no manifest says which tombstones file applies; deleted rows are back"
                    .into();
            tracing::warn!("{}: {}", dir.display(), report.tombstones);
            Tombstones::default()
        }
        None => {
            report.tombstones = "none".into();
            Tombstones::default()
        }
    };
    for q in &report.quarantined {
        quarantine(dir, &q.file)?;
    }

    // Rows repeating an earlier (image content, region id, method) are dropped by rewriting their segment
    // under a new generation; the original stays until the new manifest is committed.
    // Deleted rows stay deleted by their tombstones while row ids stay as they are; once segments are
    // quarantined or rewritten the ids move, so the deleted rows are dropped with the rest.
    let mut keys = HashSet::new();
    let unique: Vec<Vec<bool>> = kept
        .iter()
        .map(|seg| {
            (0..seg.rows.len())
                .map(|i| deleted.is_dead(seg.first + i) || keys.insert(seg.rows[i].key()))
                .collect()
        })
        .collect();
    let live_duplicates = unique.iter().flatten().filter(|u| !**u).count();
    let apply = old.is_none() || !report.quarantined.is_empty() || live_duplicates > 0;
    if apply && deleted.count() > 0 {
        report.tombstones = "applied".into();
    }
    let mut replaced = Vec::new();
    let mut entries = Vec::new();
    for (seg, unique) in kept.into_iter().zip(unique) {
        let dead = |i: usize| deleted.is_dead(seg.first + i);
        let keep: Vec<bool> = (0..seg.rows.len())
            .map(|i| unique[i] && !(apply && dead(i)))
            .collect();
        let dropped = keep.iter().filter(|k| !**k).count();
        let dropped_dead = (0..seg.rows.len()).filter(|&i| !keep[i] && dead(i)).count();
        report.deleted_rows_removed += dropped_dead;
        if dropped == 0 {
            let path = dir.join(&seg.file);
            let (bytes, crc32) = checksum(&path)?;
            entries.push(FileEntry {
                file: seg.file,
                rows: seg.rows.len() as u64,
                bytes,
                crc32,
            });
            continue;
        }
        report.duplicate_rows_removed += dropped - dropped_dead;
        let records: Vec<RegionRecord> = seg
            .rows
            .into_iter()
            .zip(seg.vectors.chunks_exact(dim))
            .zip(&keep)
            .filter(|(_, k)| **k)
            .map(|((meta, v), _)| RegionRecord {
                meta,
                embedding: v.to_vec(),
            })
            .collect();
        replaced.push(seg.file);
        if records.is_empty() {
            continue;
        }
        generation += 1;
        let file = files::segment(generation);
        let path = dir.join(&file);
        let tmp = dir.join(files::partial(&file));
        store::write_segment(&tmp, &records, dim)?;
        std::fs::rename(&tmp, &path).map_err(IndexError::io(&path))?;
        let (bytes, crc32) = checksum(&path)?;
        entries.push(FileEntry {
            file,
            rows: records.len() as u64,
            bytes,
            crc32,
        });
    }
    let rows: u64 = entries.iter().map(|e| e.rows).sum();
    let changed = old.is_none() || !report.quarantined.is_empty() || !replaced.is_empty();
    let keep_graph = !changed && graph_usable;
    let graph_was_listed = old.as_ref().is_some_and(|m| m.graph.is_some());
    report.changed = changed || (graph_was_listed && !graph_usable);
    report.rows = rows;
    report.segments = entries.len();
    if !report.changed {
        report.graph = if graph_was_listed { "kept" } else { "none" }.into();
        return Ok(report);
    }
    let next = Manifest {
        format: FORMAT.into(),
        dim,
        model_id,
        weights_hash,
        metric: "cosine".into(),
        rows,
        generation: generation + 1,
        segments: entries,
        graph: if keep_graph {
            old.as_ref().and_then(|m| m.graph.clone())
        } else {
            None
        },
        hnsw,
        tombstones: if apply {
            None
        } else {
            old.as_ref().and_then(|m| m.tombstones.clone())
        },
        retired: Vec::new(),
    };
    next.write(dir)?;
    for file in replaced {
        let _ = std::fs::remove_file(dir.join(file));
    }
    // The graph is derived data: rebuilt from the stored embeddings by opening the table, then dumped.
    let mut index = IndexWriter::from_repair(dir, next, lock)?;
    if rows > 0 {
        index.save_graph()?;
        report.graph = "rebuilt".into();
    } else {
        report.graph = "none".into();
    }
    Ok(report)
}

fn holds_tombstones(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|rd| {
        rd.flatten()
            .any(|e| files::is_tombstones(&e.file_name().to_string_lossy()))
    })
}
