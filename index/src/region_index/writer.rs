//! The one writer of an index directory: it holds the directory's [`WriterLock`] for its whole life, and only
//! it can append or dump the graph, so no run-time check asks whether an index may be written.
//!
//! Every change is committed the same way: new files are written under names no committed manifest uses
//! (see `files`), synced and renamed into place, then a new manifest naming them replaces the old one
//! atomically. A writer killed at any point leaves the last committed state intact; what it left half-done
//! is removed by the next writer ([`IndexWriter::collect_garbage`]), which cannot run beside it because of
//! the lock.

use std::collections::HashSet;
use std::ops::Deref;
use std::path::Path;
use std::sync::OnceLock;

use super::{normalized, IndexGraph, IndexSpec, RegionIndex};
use crate::files::{self, MANIFEST};
use crate::graph::{GraphBuilder, ENGINE_NAME};
use crate::lock::{LockWait, WriterLock};
use crate::manifest::{checksum, sync_dir, FileEntry, GraphEntry, Manifest, FORMAT};
use crate::record::RegionRecord;
use crate::tiers::Liveness;
use crate::{store, IndexError};

/// Re-dump the graph once this share of the rows is not in the last dump (reopening re-inserts them)...
const REDUMP_FRACTION: f64 = 0.25;
/// ...and at least this many rows are not: below it, re-inserting them on open is quick.
const REDUMP_AT_LEAST: u64 = 50_000;

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct AppendReport {
    pub added: usize,
    /// Regions already in the index (same image content, region id and method): skipped, never duplicated.
    pub duplicates: usize,
}

/// An index opened for writing. Reads (lookups, searches) go through the [`RegionIndex`] it derefs to,
/// which sees every batch this writer has committed.
pub struct IndexWriter {
    index: RegionIndex,
    /// Declared after `index` so that it is released last, once nothing of the index is in use.
    lock: WriterLock,
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
        Self { index, lock }
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
        };
        manifest.write(dir)?;
        Ok(RegionIndex {
            dir: dir.to_path_buf(),
            graph: IndexGraph::Growing(GraphBuilder::new(spec.dim, spec.hnsw)),
            manifest,
            meta: Vec::new(),
            liveness: Liveness::default(),
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
        let file = files::segment(generation);
        let path = index.dir.join(&file);
        let tmp = index.dir.join(files::partial(&file));
        store::write_segment(&tmp, fresh, index.manifest.dim)?;
        std::fs::rename(&tmp, &path).map_err(IndexError::io(&path))?;
        let (bytes, crc32) = checksum(&path)?;
        let mut next = index.manifest.clone();
        next.generation = generation;
        next.rows += fresh.len() as u64;
        next.segments.push(FileEntry {
            file,
            rows: fresh.len() as u64,
            bytes,
            crc32,
        });
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
        let graph = self.dump_graph(files::graph_basename(generation), rows)?;
        let mut next = self.index.manifest.clone();
        next.generation = generation;
        next.graph = Some(graph);
        next.write(&self.index.dir)?;
        self.index.manifest = next;
        self.collect_garbage()
    }

    /// Writes the graph's files under `basename` (in a staging folder, then renamed into place and synced)
    /// and describes them for the manifest, which does not name them yet.
    fn dump_graph(&self, basename: String, rows: u64) -> Result<GraphEntry, IndexError> {
        let dir = &self.index.dir;
        let staging = dir.join(files::staging(&basename));
        std::fs::create_dir_all(&staging).map_err(IndexError::io(&staging))?;
        // A panic while dumping fails this commit like an I/O error would; the staging folder is left for
        // the collector.
        let dumped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.index.graph.dump(&staging, &basename)
        }))
        .map_err(|_| {
            IndexError::Engine(format!("the HNSW dump into {} failed", staging.display()))
        })?;
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
            let old_graph =
                files::is_any_graph_dump(&name) && generation.is_some_and(|g| g <= committed);
            if !(temp || uncommitted || old_graph) {
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
