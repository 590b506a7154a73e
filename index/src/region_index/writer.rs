//! The one writer of an index directory: it holds the directory's [`WriterLock`] for its whole life, and only
//! it can append or dump the graph, so no run-time check asks whether an index may be written.
//!
//! Every change is committed the same way: new files are written under names no committed manifest uses
//! (see `files`), synced and renamed into place, then a new manifest naming them replaces the old one
//! atomically. A writer killed at any point leaves the last committed state intact; what it left half-done
//! is removed by the next writer ([`IndexWriter::collect_garbage`]), which cannot run beside it because of
//! the lock.
//!
//! Deletions follow the same rule: a new tombstones file (see `tombstones`), then the manifest naming it. A
//! compaction writes the live rows as new segments and a new graph, all under generations after the
//! manifest's, then commits one manifest naming only them and listing the old segments as retired; killed
//! before that commit the collector removes the new files, killed after it the old ones, so a reopen sees
//! either the state before or the state after, never a mix.

use std::collections::HashSet;
use std::ops::Deref;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Instant;

use super::{normalized, IndexGraph, IndexSpec, RegionIndex};
use crate::files::{self, MANIFEST};
use crate::graph::{GraphBuilder, ENGINE_NAME};
use crate::lock::{LockWait, WriterLock};
use crate::manifest::{checksum, sync_dir, FileEntry, GraphEntry, Manifest, FORMAT};
use crate::record::{RegionMeta, RegionRecord};
use crate::tiers::Liveness;
use crate::tombstones::Tombstones;
use crate::{store, IndexError};

/// Re-dump the graph once this share of the rows is not in the last dump (reopening re-inserts them)...
const REDUMP_FRACTION: f64 = 0.25;
/// ...and at least this many rows are not: below it, re-inserting them on open is quick.
const REDUMP_AT_LEAST: u64 = 50_000;
/// The share of deleted rows past which a delete compacts the index (see [`IndexWriter::maybe_compact`]).
pub const DEFAULT_COMPACT_THRESHOLD: f64 = 0.20;
/// Rows per segment a compaction writes: one segment's records are held twice while it is written.
const COMPACT_SEGMENT_ROWS: usize = 100_000;
/// Rows per graph insert during a compaction, as appends insert them.
const COMPACT_INSERT_ROWS: usize = 20_000;

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct AppendReport {
    pub added: usize,
    /// Regions already in the index (same image content, region id and method): skipped, never duplicated.
    pub duplicates: usize,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct DeleteReport {
    /// Rows this call deleted.
    pub deleted: usize,
    /// Rows asked for that were deleted already.
    pub already_deleted: usize,
    /// Deleted rows in the index after this call (0 if it compacted).
    pub dead_rows: usize,
    /// The compaction the deletion triggered (see [`IndexWriter::maybe_compact`]); row ids changed if so.
    pub compacted: Option<CompactReport>,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct CompactReport {
    pub rows_before: usize,
    pub rows_after: usize,
    /// Deleted rows the compaction removed from the table and the graph.
    pub removed: usize,
    pub segments_before: usize,
    pub segments_after: usize,
    pub seconds: f64,
}

/// An index opened for writing. Reads (lookups, searches) go through the [`RegionIndex`] it derefs to,
/// which sees every batch this writer has committed.
pub struct IndexWriter {
    index: RegionIndex,
    /// Declared after `index` so that it is released last, once nothing of the index is in use.
    lock: WriterLock,
    /// See [`Self::set_compact_threshold`].
    compact_threshold: f64,
}

impl std::fmt::Debug for IndexWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexWriter")
            .field("index", &self.index)
            .field("lock", &self.lock.path())
            .finish()
    }
}

impl Deref for IndexWriter {
    type Target = RegionIndex;

    fn deref(&self) -> &RegionIndex {
        &self.index
    }
}

impl IndexWriter {
    /// Creates an empty index (the directory may exist but must hold no index). Refuses at once when
    /// another writer holds the directory.
    pub fn create(dir: &Path, spec: &IndexSpec) -> Result<Self, IndexError> {
        std::fs::create_dir_all(dir).map_err(IndexError::io(dir))?;
        let lock = WriterLock::acquire(dir, LockWait::No)?;
        let index = Self::create_empty(dir, spec)?;
        Ok(Self::holding(index, lock))
    }

    /// Opens an existing index, then removes leftovers of interrupted writes.
    pub fn open(dir: &Path, wait: LockWait) -> Result<Self, IndexError> {
        if !dir.is_dir() {
            return Err(IndexError::NotFound(dir.to_path_buf()));
        }
        let lock = WriterLock::acquire(dir, wait)?;
        let writer = Self::holding(RegionIndex::load(dir, Manifest::read(dir)?)?, lock);
        writer.collect_garbage()?;
        Ok(writer)
    }

    /// Opens the index at `dir` if there is one (refusing another embedding space), otherwise creates it,
    /// then removes leftovers of interrupted writes. The writer lock is taken first, so the state opened is
    /// the one the previous writer committed last.
    pub fn open_or_create(
        dir: &Path,
        spec: &IndexSpec,
        wait: LockWait,
    ) -> Result<Self, IndexError> {
        std::fs::create_dir_all(dir).map_err(IndexError::io(dir))?;
        let lock = WriterLock::acquire(dir, wait)?;
        Self::open_or_create_holding(dir, spec, lock)
    }

    /// [`Self::open_or_create`] with a lock the caller took earlier (e.g. before loading a model, so that a
    /// second writer is told at once rather than after minutes of loading).
    pub fn open_or_create_holding(
        dir: &Path,
        spec: &IndexSpec,
        lock: WriterLock,
    ) -> Result<Self, IndexError> {
        if lock.dir() != dir {
            return Err(IndexError::Mismatch(format!(
                "the writer lock held is for {}, not {}",
                lock.dir().display(),
                dir.display()
            )));
        }
        let index = match Manifest::read(dir) {
            Ok(m) => {
                let index = RegionIndex::load(dir, m)?;
                index.check_space(spec.dim, &spec.model_id, &spec.weights_hash)?;
                index
            }
            Err(IndexError::NotFound(_)) => Self::create_empty(dir, spec)?,
            Err(e) => return Err(e),
        };
        let writer = Self::holding(index, lock);
        writer.collect_garbage()?;
        Ok(writer)
    }

    /// The writer `repair` continues with once it has committed a consistent manifest.
    pub(crate) fn from_repair(
        dir: &Path,
        manifest: Manifest,
        lock: WriterLock,
    ) -> Result<Self, IndexError> {
        Ok(Self::holding(RegionIndex::load(dir, manifest)?, lock))
    }

    fn holding(mut index: RegionIndex, lock: WriterLock) -> Self {
        index.graph = index.graph.growing();
        Self {
            index,
            lock,
            compact_threshold: DEFAULT_COMPACT_THRESHOLD,
        }
    }

    /// Commits the manifest of an empty index; the caller holds the lock.
    fn create_empty(dir: &Path, spec: &IndexSpec) -> Result<RegionIndex, IndexError> {
        if dir.join(MANIFEST).exists() {
            return Err(IndexError::Exists(dir.to_path_buf()));
        }
        // Segments without a manifest are someone's data: never start over on top of them.
        if files::holds_index_files(dir) {
            return Err(IndexError::Orphaned(dir.to_path_buf()));
        }
        if spec.dim == 0 {
            return Err(IndexError::Mismatch(
                "embedding dimension must be positive".into(),
            ));
        }
        let manifest = Manifest {
            format: FORMAT.into(),
            dim: spec.dim,
            model_id: spec.model_id.clone(),
            weights_hash: spec.weights_hash.clone(),
            metric: "cosine".into(),
            rows: 0,
            generation: 0,
            segments: Vec::new(),
            graph: None,
            hnsw: spec.hnsw,
            tombstones: None,
            retired: Vec::new(),
        };
        manifest.write(dir)?;
        Ok(RegionIndex {
            dir: dir.to_path_buf(),
            graph: IndexGraph::Growing(GraphBuilder::new(spec.dim, spec.hnsw)),
            manifest,
            meta: Vec::new(),
            liveness: Liveness::default(),
            deleted: Tombstones::default(),
            keys: OnceLock::new(),
            images: OnceLock::new(),
        })
    }

    /// Appends a batch as one new segment and commits it. Regions already present are skipped; invalid
    /// records (wrong dimension, another model, a zero or non-finite vector) refuse the whole batch before
    /// anything is written.
    pub fn append(&mut self, records: Vec<RegionRecord>) -> Result<AppendReport, IndexError> {
        let (fresh, duplicates) = self.admit(records)?;
        let mut report = AppendReport {
            added: 0,
            duplicates,
        };
        if fresh.is_empty() {
            return Ok(report);
        }
        self.commit_segment(&fresh)?;
        report.added = fresh.len();
        self.take_in(fresh);
        let rows = self.index.manifest.rows;
        let unsaved = rows - self.graph_rows();
        if unsaved as f64 > REDUMP_FRACTION * rows as f64 && unsaved >= REDUMP_AT_LEAST {
            self.save_graph()?;
        }
        Ok(report)
    }

    /// The records of a batch to add, normalised, and how many were duplicates (of a row or of each other);
    /// an error for the first invalid record.
    fn admit(&self, records: Vec<RegionRecord>) -> Result<(Vec<RegionRecord>, usize), IndexError> {
        let manifest = &self.index.manifest;
        let mut duplicates = 0;
        let mut fresh = Vec::with_capacity(records.len());
        let mut batch_keys = HashSet::new();
        for mut r in records {
            let key = r.meta.key();
            let label = format!(
                "{}#{} ({})",
                r.meta.image, r.meta.region_id, r.meta.method.name
            );
            if r.embedding.len() != manifest.dim {
                return Err(IndexError::Mismatch(format!(
                    "region {label}: a {}-d embedding for an index of {}-d embeddings",
                    r.embedding.len(),
                    manifest.dim
                )));
            }
            if r.meta.method.model_id != manifest.model_id {
                return Err(IndexError::Mismatch(format!(
                    "region {label}: made with model {}, the index holds {}",
                    r.meta.method.model_id, manifest.model_id
                )));
            }
            r.embedding = normalized(&r.embedding).ok_or_else(|| IndexError::InvalidRecord {
                key: label.clone(),
                message: "the embedding is zero or not finite".into(),
            })?;
            if self.index.key_set().contains(&key) || !batch_keys.insert(key) {
                duplicates += 1;
                continue;
            }
            fresh.push(r);
        }
        Ok((fresh, duplicates))
    }

    /// Writes `fresh` as the next generation's segment and commits the manifest that names it.
    fn commit_segment(&mut self, fresh: &[RegionRecord]) -> Result<(), IndexError> {
        let index = &mut self.index;
        let generation = index.manifest.generation + 1;
        let segment = write_segment(&index.dir, generation, fresh, index.manifest.dim)?;
        let mut next = index.manifest.clone();
        next.generation = generation;
        next.rows += fresh.len() as u64;
        next.segments.push(segment);
        next.write(&index.dir)?;
        index.manifest = next;
        Ok(())
    }

    /// Adds committed rows to what the index holds in memory: the graph, the rows, the lookup sets.
    fn take_in(&mut self, fresh: Vec<RegionRecord>) {
        let index = &mut self.index;
        let items: Vec<&[f32]> = fresh.iter().map(|r| r.embedding.as_slice()).collect();
        index.graph.builder().insert(&items);
        // Sets not built yet are built from `meta` when first asked, these rows included.
        for r in fresh {
            if let Some(keys) = index.keys.get_mut() {
                keys.insert(r.meta.key());
            }
            if let Some(images) = index.images.get_mut() {
                images.insert(
                    (r.meta.image_hash.clone(), r.meta.method.name.clone()),
                    r.meta.exif_rotated,
                );
            }
            index.liveness.push(index.meta.len(), &r.meta);
            index.meta.push(r.meta);
        }
    }

    /// Dumps the graph so that reopening does not re-insert; commits it in the manifest.
    pub fn save_graph(&mut self) -> Result<(), IndexError> {
        let rows = self.index.manifest.rows;
        if self.graph_rows() == rows || rows == 0 {
            return Ok(());
        }
        let generation = self.index.manifest.generation + 1;
        let graph = dump_graph(
            &self.index.dir,
            &self.index.graph,
            files::graph_basename(generation),
            rows,
        )?;
        let mut next = self.index.manifest.clone();
        next.generation = generation;
        next.graph = Some(graph);
        next.write(&self.index.dir)?;
        self.index.manifest = next;
        self.collect_garbage()
    }

    /// Sets the share of deleted rows past which a delete compacts (see [`Self::maybe_compact`]); 1.0 or
    /// more: never on its own.
    pub fn set_compact_threshold(&mut self, threshold: f64) {
        self.compact_threshold = threshold;
    }

    /// Rows not deleted (see [`RegionIndex::live_len`]).
    pub fn live_rows(&self) -> usize {
        self.index.live_len()
    }

    /// Deletes rows by id, committed atomically (all or none), then compacts if the deleted share passed
    /// the threshold (see [`Self::set_compact_threshold`]), which renumbers rows. An id past the table
    /// refuses the whole call before anything is written: it most likely comes from a snapshot taken before
    /// a compaction, whose ids name other rows now.
    pub fn delete_rows(&mut self, rows: &[u64]) -> Result<DeleteReport, IndexError> {
        let len = self.index.meta.len() as u64;
        if let Some(&bad) = rows.iter().find(|&&r| r >= len) {
            return Err(IndexError::Mismatch(format!(
                "row {bad} does not exist ({} holds {len} rows); nothing was deleted",
                self.index.dir.display()
            )));
        }
        let mut next = self.index.deleted.clone();
        let mut report = DeleteReport::default();
        for &row in rows {
            if next.mark(row as usize) {
                report.deleted += 1;
            } else {
                report.already_deleted += 1;
            }
        }
        if report.deleted > 0 {
            self.commit_tombstones(next)?;
            report.compacted = self.maybe_compact(self.compact_threshold)?;
        }
        report.dead_rows = self.index.dead_rows();
        Ok(report)
    }

    /// Deletes every row `doomed` picks (among rows not deleted yet): all rows of a photo by its content
    /// hash, of an image path, of a method. See [`Self::delete_rows`].
    pub fn delete_where(
        &mut self,
        doomed: impl Fn(&RegionMeta) -> bool,
    ) -> Result<DeleteReport, IndexError> {
        let rows: Vec<u64> = self
            .index
            .undeleted()
            .filter(|(_, m)| doomed(m))
            .map(|(row, _)| row as u64)
            .collect();
        self.delete_rows(&rows)
    }

    /// Commits `deleted` as the next generation's tombstones and takes it in.
    fn commit_tombstones(&mut self, deleted: Tombstones) -> Result<(), IndexError> {
        let index = &mut self.index;
        let generation = index.manifest.generation + 1;
        let entry = deleted.write(&index.dir, generation, index.manifest.rows)?;
        crash_point("delete-tombstones-written");
        let mut next = index.manifest.clone();
        next.generation = generation;
        next.tombstones = Some(entry);
        next.format = next.format_for().into();
        next.write(&index.dir)?;
        index.manifest = next;
        index.deleted = deleted;
        index.reset_lookups();
        self.collect_garbage()
    }

    /// Compacts if more than `threshold` of the rows are deleted (see [`DEFAULT_COMPACT_THRESHOLD`]).
    pub fn maybe_compact(&mut self, threshold: f64) -> Result<Option<CompactReport>, IndexError> {
        let (dead, rows) = (self.index.dead_rows(), self.index.meta.len());
        if dead == 0 || (dead as f64) <= threshold * rows as f64 {
            return Ok(None);
        }
        self.compact().map(Some)
    }

    /// Rewrites the rows not deleted as new segments with a new graph over them, committed by one manifest,
    /// then removes the old files; rows are renumbered (in their order). Readers opened before keep their
    /// snapshot (held in memory); readers opened after see the compacted index. Killed at any moment, the
    /// next open sees the index before or after, never a mix (see the module comment).
    pub fn compact(&mut self) -> Result<CompactReport, IndexError> {
        let started = Instant::now();
        let index = &self.index;
        let mut report = CompactReport {
            rows_before: index.meta.len(),
            rows_after: index.meta.len(),
            segments_before: index.manifest.segments.len(),
            segments_after: index.manifest.segments.len(),
            ..Default::default()
        };
        if index.dead_rows() == 0 {
            report.seconds = started.elapsed().as_secs_f64();
            return Ok(report);
        }
        let live: Vec<usize> = index.undeleted().map(|(row, _)| row).collect();
        let vector = |row: usize| {
            index
                .graph
                .vector(row)
                .ok_or_else(|| IndexError::Engine(format!("row {row} has no vector in the graph")))
        };
        let mut generation = index.manifest.generation;
        let mut segments = Vec::new();
        for chunk in live.chunks(COMPACT_SEGMENT_ROWS) {
            generation += 1;
            let records = chunk
                .iter()
                .map(|&row| {
                    Ok(RegionRecord {
                        meta: index.meta[row].clone(),
                        embedding: vector(row)?.to_vec(),
                    })
                })
                .collect::<Result<Vec<_>, IndexError>>()?;
            segments.push(write_segment(
                &index.dir,
                generation,
                &records,
                index.manifest.dim,
            )?);
            crash_point("compact-segment-written");
        }
        let mut builder = GraphBuilder::new(index.manifest.dim, index.manifest.hnsw);
        for chunk in live.chunks(COMPACT_INSERT_ROWS) {
            let items = chunk
                .iter()
                .map(|&row| vector(row))
                .collect::<Result<Vec<_>, IndexError>>()?;
            builder.insert(&items);
        }
        let graph = IndexGraph::Growing(builder);
        let graph_entry = if live.is_empty() {
            None
        } else {
            generation += 1;
            let basename = files::graph_basename(generation);
            Some(dump_graph(&index.dir, &graph, basename, live.len() as u64)?)
        };
        crash_point("compact-graph-written");
        let mut next = index.manifest.clone();
        next.generation = generation + 1;
        next.rows = live.len() as u64;
        next.retired = next.segments.iter().map(|s| s.file.clone()).collect();
        next.segments = segments;
        next.graph = graph_entry;
        next.tombstones = None;
        next.format = next.format_for().into();
        next.write(&index.dir)?;
        crash_point("compact-committed");

        let index = &mut self.index;
        let deleted = std::mem::take(&mut index.deleted);
        index.meta = std::mem::take(&mut index.meta)
            .into_iter()
            .enumerate()
            .filter(|(row, _)| !deleted.is_dead(*row))
            .map(|(_, m)| m)
            .collect();
        index.manifest = next;
        index.graph = graph;
        index.reset_lookups();
        report.rows_after = index.meta.len();
        report.removed = report.rows_before - report.rows_after;
        report.segments_after = index.manifest.segments.len();
        self.collect_garbage()?;
        report.seconds = started.elapsed().as_secs_f64();
        tracing::info!(
            "compacted {}: {} rows to {} in {:.1} s",
            self.index.dir.display(),
            report.rows_before,
            report.rows_after,
            report.seconds
        );
        Ok(report)
    }

    /// Rows the committed graph dump covers (none for a dump this build does not read).
    fn graph_rows(&self) -> u64 {
        self.index
            .manifest
            .graph
            .as_ref()
            .filter(|g| g.engine == ENGINE_NAME)
            .map_or(0, |g| g.rows)
    }

    /// Removes what interrupted writes of this index left: temp files, segments and graph dumps of
    /// generations after the last commit, and graph dumps the last commit superseded. A segment that the
    /// manifest does not name but that predates its generation was not left by an interrupted write (a
    /// manifest restored from a backup, a file copied in): it is kept and reported, never deleted.
    fn collect_garbage(&self) -> Result<(), IndexError> {
        let (dir, manifest) = (&self.index.dir, &self.index.manifest);
        let mut keep: HashSet<String> = manifest.segments.iter().map(|s| s.file.clone()).collect();
        if let Some(g) = &manifest.graph {
            keep.insert(g.graph.file.clone());
            keep.insert(g.data.file.clone());
        }
        if let Some(t) = &manifest.tombstones {
            keep.insert(t.file.file.clone());
        }
        let retired: HashSet<&str> = manifest.retired.iter().map(String::as_str).collect();
        let committed = manifest.generation;
        let entries = std::fs::read_dir(dir).map_err(IndexError::io(dir))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if keep.contains(&name) {
                continue;
            }
            let temp = files::is_unfinished(&name);
            let generation = files::generation_of(&name);
            let uncommitted = generation.is_some_and(|g| g > committed);
            // Graphs and tombstones are derived from or about the segments: a committed one the manifest
            // no longer names was superseded.
            let superseded = (files::is_any_graph_dump(&name) || files::is_tombstones(&name))
                && generation.is_some_and(|g| g <= committed);
            if !(temp || uncommitted || superseded || retired.contains(name.as_str())) {
                if files::is_segment(&name) {
                    tracing::warn!(
                        "{} is not part of the index ({MANIFEST} does not name it); left as it is",
                        entry.path().display()
                    );
                }
                continue;
            }
            let path = entry.path();
            let removed = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            match removed {
                Ok(()) => tracing::debug!("removed leftover {}", path.display()),
                Err(e) => tracing::warn!("could not remove leftover {}: {e}", path.display()),
            }
        }
        Ok(())
    }
}

/// Writes the graph's files under `basename` (in a staging folder, then renamed into place and synced)
/// and describes them for the manifest, which does not name them yet.
fn dump_graph(
    dir: &Path,
    graph: &IndexGraph,
    basename: String,
    rows: u64,
) -> Result<GraphEntry, IndexError> {
    let staging = dir.join(files::staging(&basename));
    std::fs::create_dir_all(&staging).map_err(IndexError::io(&staging))?;
    // A panic while dumping fails this commit like an I/O error would; the staging folder is left for
    // the collector.
    let dumped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        graph.dump(&staging, &basename)
    }))
    .map_err(|_| IndexError::Engine(format!("the HNSW dump into {} failed", staging.display())))?;
    dumped?;
    let mut entries = Vec::new();
    for name in files::graph_files(&basename) {
        let from = staging.join(&name);
        std::fs::File::open(&from)
            .and_then(|f| f.sync_all())
            .map_err(IndexError::io(&from))?;
        let to = dir.join(&name);
        std::fs::rename(&from, &to).map_err(IndexError::io(&to))?;
        let (bytes, crc32) = checksum(&to)?;
        entries.push(FileEntry {
            file: name,
            rows,
            bytes,
            crc32,
        });
    }
    let _ = std::fs::remove_dir_all(&staging);
    sync_dir(dir)?;
    let Ok([graph, data]) = <[FileEntry; 2]>::try_from(entries) else {
        unreachable!("graph_files names two files");
    };
    Ok(GraphEntry {
        engine: ENGINE_NAME.into(),
        basename,
        rows,
        graph,
        data,
    })
}

/// Writes `records` as the segment of generation `generation` (renamed into place; no manifest names it
/// yet) and describes it for the manifest.
fn write_segment(
    dir: &Path,
    generation: u64,
    records: &[RegionRecord],
    dim: usize,
) -> Result<FileEntry, IndexError> {
    let file = files::segment(generation);
    let path = dir.join(&file);
    let tmp = dir.join(files::partial(&file));
    store::write_segment(&tmp, records, dim)?;
    std::fs::rename(&tmp, &path).map_err(IndexError::io(&path))?;
    let (bytes, crc32) = checksum(&path)?;
    Ok(FileEntry {
        file,
        rows: records.len() as u64,
        bytes,
        crc32,
    })
}

/// Where the crash tests stop a writer: with `REGIONSEEK_INDEX_CRASH_AT` naming `step`, the process aborts
/// there, as abruptly as kill -9 (no destructor, no flush). Read once; unset, it costs a load per step.
fn crash_point(step: &str) {
    static AT: OnceLock<Option<String>> = OnceLock::new();
    let at = AT.get_or_init(|| std::env::var("REGIONSEEK_INDEX_CRASH_AT").ok());
    if at.as_deref() == Some(step) {
        std::process::abort();
    }
}
