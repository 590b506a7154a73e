//! The index directory: segments + graph dump + manifest, opened, appended to and searched.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::engine::{exact_top_k, HnswParams, Keep};
use crate::files::{self, MANIFEST};
use crate::graph::{FrozenGraph, GraphBuilder, ENGINE_NAME};
use crate::lock::{LockWait, WriterLock};
use crate::manifest::{
    checksum, sync_dir, verify, verify_size, FileEntry, GraphEntry, Manifest, FORMAT,
};
use crate::record::{Filter, Hit, RegionMeta, RegionRecord};
use crate::tiers::Liveness;
use crate::{store, IndexError};

/// What an index is for: one embedding space. Appending vectors or querying from another model is refused.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexSpec {
    pub dim: usize,
    pub model_id: String,
    pub weights_hash: String,
    pub hnsw: HnswParams,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchMode {
    /// Exact up to [`EXACT_BELOW`] candidate rows (a parallel scan is fast there), HNSW with
    /// [`DEFAULT_EF`] beyond.
    Auto,
    Exact,
    Approximate {
        ef: usize,
    },
}

/// How a search actually ran, for the caller to report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SearchRun {
    /// `"exact"` or `"hnsw"`.
    pub mode: &'static str,
    /// The beam width, for HNSW.
    pub ef: Option<usize>,
    /// Rows the filter keeps (all rows without a filter).
    pub candidates: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct AppendReport {
    pub added: usize,
    /// Regions already in the index (same image content, region id and method): skipped, never duplicated.
    pub duplicates: usize,
}

/// Up to this many candidate rows `Auto` scans them all: exact, and tens of milliseconds on two cores.
pub const EXACT_BELOW: usize = 200_000;
/// `Auto`'s beam beyond [`EXACT_BELOW`]: wide, because region embeddings of one class are near-ties and a
/// narrow beam misses them (recall@10 ~0.6 at ef 64 on 28.8k COCO regions).
pub const DEFAULT_EF: usize = 512;
/// How often a reader re-reads a manifest that moved while it was opening the files it named.
const READ_RETRIES: usize = 3;
/// Re-dump the graph once this share of the rows is not in the last dump (reopening re-inserts them).
const REDUMP_FRACTION: f64 = 0.25;

pub struct RegionIndex {
    dir: PathBuf,
    manifest: Manifest,
    meta: Vec<RegionMeta>,
    /// Built on first use: writers need it for every batch, a reader that serves searches never does, and at
    /// a million rows it costs hundreds of megabytes.
    keys: OnceLock<HashSet<(String, String, String)>>,
    /// (image content hash, method) of every row: whether a photo has been through a method at all.
    images: OnceLock<HashMap<(String, String), bool>>,
    /// Which rows searches return: one per region, the best tier (see `tiers`).
    liveness: Liveness,
    graph: IndexGraph,
    /// Held by writers for their whole life; None for readers.
    lock: Option<WriterLock>,
}

impl std::fmt::Debug for RegionIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegionIndex")
            .field("dir", &self.dir)
            .field("rows", &self.manifest.rows)
            .field("dim", &self.manifest.dim)
            .finish()
    }
}

/// The graph in the form its holder needs: frozen for a reader, open to inserts for a writer.
enum IndexGraph {
    Frozen(FrozenGraph),
    Growing(GraphBuilder),
}

impl IndexGraph {
    fn frozen(self) -> Self {
        match self {
            Self::Growing(b) => Self::Frozen(b.freeze()),
            frozen => frozen,
        }
    }

    fn growing(self) -> Self {
        match self {
            Self::Frozen(f) => Self::Growing(f.thaw()),
            growing => growing,
        }
    }

    /// The graph open to inserts, thawed first if it is frozen.
    fn builder(&mut self) -> &mut GraphBuilder {
        if let Self::Frozen(f) = self {
            let placeholder = GraphBuilder::new(0, HnswParams::default()).freeze();
            *self = Self::Growing(std::mem::replace(f, placeholder).thaw());
        }
        match self {
            Self::Growing(b) => b,
            Self::Frozen(_) => unreachable!("thawed above"),
        }
    }

    fn len(&self) -> usize {
        match self {
            Self::Frozen(f) => f.len(),
            Self::Growing(b) => b.len(),
        }
    }

    fn search(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        keep: Option<Keep<'_>>,
    ) -> Vec<(usize, f32)> {
        match self {
            Self::Frozen(f) => f.search(query, k, ef, keep),
            Self::Growing(b) => b.search(query, k, ef, keep),
        }
    }

    fn vector(&self, id: usize) -> Option<&[f32]> {
        match self {
            Self::Frozen(f) => f.vector(id),
            Self::Growing(b) => b.vector(id),
        }
    }

    fn dump(&self, dir: &Path, basename: &str) -> Result<(), IndexError> {
        match self {
            Self::Frozen(f) => f.dump(dir, basename),
            Self::Growing(b) => b.dump(dir, basename),
        }
    }
}

fn normalized(v: &[f32]) -> Option<Vec<f32>> {
    let norm = v
        .iter()
        .map(|x| (*x as f64) * (*x as f64))
        .sum::<f64>()
        .sqrt();
    (norm.is_finite() && norm > 0.0).then(|| v.iter().map(|x| (*x as f64 / norm) as f32).collect())
}

impl RegionIndex {
    /// Opens the last committed state of an index for searching. Never blocks on or disturbs a writer: a
    /// commit racing the open (a graph dump replaced under it) is retried on the new manifest instead of
    /// being reported as corruption.
    pub fn open(dir: &Path) -> Result<Self, IndexError> {
        let mut attempt = 0;
        loop {
            let manifest = Manifest::read(dir)?;
            match Self::load(dir, manifest.clone()) {
                Ok(mut index) => {
                    index.graph = index.graph.frozen();
                    return Ok(index);
                }
                Err(e) => {
                    attempt += 1;
                    let moved = Manifest::read(dir).map_or(true, |now| now != manifest);
                    if !moved || attempt > READ_RETRIES {
                        return Err(e);
                    }
                    tracing::debug!(
                        "{} changed while opening it ({e}); reading it again",
                        dir.display()
                    );
                }
            }
        }
    }

    /// Opens an existing index as its one writer (see [`WriterLock`]).
    pub fn open_writer(dir: &Path, wait: LockWait) -> Result<Self, IndexError> {
        if !dir.is_dir() {
            return Err(IndexError::NotFound(dir.to_path_buf()));
        }
        let lock = WriterLock::acquire(dir, wait)?;
        let mut index = Self::load(dir, Manifest::read(dir)?)?;
        index.lock = Some(lock);
        index.graph = index.graph.growing();
        index.collect_garbage()?;
        Ok(index)
    }

    /// The writer `repair` continues with once it has committed a consistent manifest.
    pub(crate) fn from_repair(
        dir: &Path,
        manifest: Manifest,
        lock: WriterLock,
    ) -> Result<Self, IndexError> {
        let mut index = Self::load(dir, manifest)?;
        index.lock = Some(lock);
        index.graph = index.graph.growing();
        Ok(index)
    }

    fn load(dir: &Path, manifest: Manifest) -> Result<Self, IndexError> {
        let dim = manifest.dim;
        for seg in &manifest.segments {
            verify(dir, seg)?;
        }
        let (mut graph, graph_rows) = match &manifest.graph {
            Some(g) if g.engine == ENGINE_NAME => {
                verify(dir, &g.graph)?;
                verify_size(dir, &g.data)?;
                let graph = FrozenGraph::load(dir, &g.basename, g.rows as usize)?;
                (IndexGraph::Frozen(graph), g.rows)
            }
            Some(g) => {
                tracing::info!(
                    "{}: the graph was written by {} (no longer read); building it again from the table",
                    dir.display(),
                    g.engine
                );
                (
                    IndexGraph::Growing(GraphBuilder::new(dim, manifest.hnsw)),
                    0,
                )
            }
            None => (
                IndexGraph::Growing(GraphBuilder::new(dim, manifest.hnsw)),
                0,
            ),
        };
        let mut meta = Vec::with_capacity(manifest.rows as usize);
        for seg in &manifest.segments {
            let first = meta.len() as u64;
            // Vectors already in the graph dump are not read again.
            let need_vectors = first + seg.rows > graph_rows;
            let path = dir.join(&seg.file);
            let (rows, vectors) = store::read_segment(&path, dim, need_vectors)?;
            if rows.len() as u64 != seg.rows {
                return Err(IndexError::corrupt(
                    &path,
                    format!("{} rows, the manifest says {}", rows.len(), seg.rows),
                ));
            }
            if need_vectors {
                let skip = graph_rows.saturating_sub(first) as usize;
                let items: Vec<&[f32]> = vectors.chunks_exact(dim).skip(skip).collect();
                graph.builder().insert(&items);
            }
            meta.extend(rows);
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            manifest,
            liveness: Liveness::of(&meta),
            meta,
            keys: OnceLock::new(),
            images: OnceLock::new(),
            graph,
            lock: None,
        })
    }

    /// Creates an empty index as its writer (the directory may exist but must hold no index).
    pub fn create(dir: &Path, spec: &IndexSpec) -> Result<Self, IndexError> {
        std::fs::create_dir_all(dir).map_err(IndexError::io(dir))?;
        let lock = WriterLock::acquire(dir, LockWait::No)?;
        let mut index = Self::create_locked(dir, spec)?;
        index.lock = Some(lock);
        index.graph = index.graph.growing();
        Ok(index)
    }

    fn create_locked(dir: &Path, spec: &IndexSpec) -> Result<Self, IndexError> {
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
        Ok(Self {
            dir: dir.to_path_buf(),
            graph: IndexGraph::Growing(GraphBuilder::new(spec.dim, spec.hnsw)),
            manifest,
            meta: Vec::new(),
            liveness: Liveness::default(),
            keys: OnceLock::new(),
            images: OnceLock::new(),
            lock: None,
        })
    }

    /// [`Self::open_or_create_with`] that refuses at once when another writer holds the index.
    pub fn open_or_create(dir: &Path, spec: &IndexSpec) -> Result<Self, IndexError> {
        Self::open_or_create_with(dir, spec, LockWait::No)
    }

    /// Opens the index at `dir` as its writer if there is one (refusing another embedding space), otherwise
    /// creates it, then removes leftovers of interrupted writes. The writer lock is taken first, so the
    /// state opened is the one the previous writer committed last.
    pub fn open_or_create_with(
        dir: &Path,
        spec: &IndexSpec,
        wait: LockWait,
    ) -> Result<Self, IndexError> {
        std::fs::create_dir_all(dir).map_err(IndexError::io(dir))?;
        let lock = WriterLock::acquire(dir, wait)?;
        Self::open_or_create_holding(dir, spec, lock)
    }

    /// [`Self::open_or_create_with`] with a lock the caller took earlier (e.g. before loading a model, so
    /// that a second writer is told at once rather than after minutes of loading).
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
        let mut index = match Manifest::read(dir) {
            Ok(m) => {
                let index = Self::load(dir, m)?;
                index.check_space(spec.dim, &spec.model_id, &spec.weights_hash)?;
                index
            }
            Err(IndexError::NotFound(_)) => Self::create_locked(dir, spec)?,
            Err(e) => return Err(e),
        };
        index.lock = Some(lock);
        index.graph = index.graph.growing();
        index.collect_garbage()?;
        Ok(index)
    }

    pub fn is_writer(&self) -> bool {
        self.lock.is_some()
    }

    pub fn check_space(
        &self,
        dim: usize,
        model_id: &str,
        weights_hash: &str,
    ) -> Result<(), IndexError> {
        self.manifest
            .check_space(&self.dir, dim, model_id, weights_hash)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn len(&self) -> usize {
        self.meta.len()
    }
    pub fn is_empty(&self) -> bool {
        self.meta.is_empty()
    }
    pub fn dim(&self) -> usize {
        self.manifest.dim
    }
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }
    pub fn rows(&self) -> &[RegionMeta] {
        &self.meta
    }

    /// Whether any region of this photo (by content hash) was indexed with `method`.
    pub fn has_image(&self, image_hash: &str, method: &str) -> bool {
        self.image_frame(image_hash, method).is_some()
    }

    /// The frame this photo's regions were indexed in with `method` (`RegionMeta::exif_rotated`), if any were.
    pub fn image_frame(&self, image_hash: &str, method: &str) -> Option<bool> {
        self.image_set()
            .get(&(image_hash.to_string(), method.to_string()))
            .copied()
    }

    fn key_set(&self) -> &HashSet<(String, String, String)> {
        self.keys
            .get_or_init(|| self.meta.iter().map(RegionMeta::key).collect())
    }

    fn image_set(&self) -> &HashMap<(String, String), bool> {
        self.images.get_or_init(|| {
            self.meta
                .iter()
                .map(|m| {
                    (
                        (m.image_hash.clone(), m.method.name.clone()),
                        m.exif_rotated,
                    )
                })
                .collect()
        })
    }

    pub fn contains(&self, image_hash: &str, region_id: &str, method: &str) -> bool {
        self.key_set().contains(&(
            image_hash.to_string(),
            region_id.to_string(),
            method.to_string(),
        ))
    }

    /// Appends a batch as one new segment and commits it. Regions already present are skipped; invalid
    /// records (wrong dimension, another model, a zero or non-finite vector) refuse the whole batch before
    /// anything is written.
    pub fn append(&mut self, records: Vec<RegionRecord>) -> Result<AppendReport, IndexError> {
        self.require_writer()?;
        let mut report = AppendReport::default();
        let mut fresh = Vec::with_capacity(records.len());
        let mut batch_keys = HashSet::new();
        for mut r in records {
            let key = r.meta.key();
            let label = format!(
                "{}#{} ({})",
                r.meta.image, r.meta.region_id, r.meta.method.name
            );
            if r.embedding.len() != self.manifest.dim {
                return Err(IndexError::Mismatch(format!(
                    "region {label}: a {}-d embedding for an index of {}-d embeddings",
                    r.embedding.len(),
                    self.manifest.dim
                )));
            }
            if r.meta.method.model_id != self.manifest.model_id {
                return Err(IndexError::Mismatch(format!(
                    "region {label}: made with model {}, the index holds {}",
                    r.meta.method.model_id, self.manifest.model_id
                )));
            }
            r.embedding = normalized(&r.embedding).ok_or_else(|| IndexError::InvalidRecord {
                key: label.clone(),
                message: "the embedding is zero or not finite".into(),
            })?;
            if self.key_set().contains(&key) || !batch_keys.insert(key) {
                report.duplicates += 1;
                continue;
            }
            fresh.push(r);
        }
        if fresh.is_empty() {
            return Ok(report);
        }
        let generation = self.manifest.generation + 1;
        let file = files::segment(generation);
        let path = self.dir.join(&file);
        let tmp = self.dir.join(files::partial(&file));
        store::write_segment(&tmp, &fresh, self.manifest.dim)?;
        std::fs::rename(&tmp, &path).map_err(IndexError::io(&path))?;
        let (bytes, crc32) = checksum(&path)?;
        let mut next = self.manifest.clone();
        next.generation = generation;
        next.rows += fresh.len() as u64;
        next.segments.push(FileEntry {
            file,
            rows: fresh.len() as u64,
            bytes,
            crc32,
        });
        next.write(&self.dir)?;
        self.manifest = next;

        let items: Vec<&[f32]> = fresh.iter().map(|r| r.embedding.as_slice()).collect();
        self.graph.builder().insert(&items);
        report.added = fresh.len();
        // Sets not built yet are built from `meta` when first asked, these rows included.
        for r in fresh {
            if let Some(keys) = self.keys.get_mut() {
                keys.insert(r.meta.key());
            }
            if let Some(images) = self.images.get_mut() {
                images.insert(
                    (r.meta.image_hash.clone(), r.meta.method.name.clone()),
                    r.meta.exif_rotated,
                );
            }
            self.liveness.push(self.meta.len(), &r.meta);
            self.meta.push(r.meta);
        }
        let unsaved = self.manifest.rows - self.graph_rows();
        if unsaved as f64 > REDUMP_FRACTION * self.manifest.rows as f64 && unsaved >= 50_000 {
            self.save_graph()?;
        }
        Ok(report)
    }

    /// Dumps the graph so that reopening does not re-insert; commits it in the manifest.
    pub fn save_graph(&mut self) -> Result<(), IndexError> {
        self.require_writer()?;
        let rows = self.manifest.rows;
        if self.graph_rows() == rows || rows == 0 {
            return Ok(());
        }
        let generation = self.manifest.generation + 1;
        let basename = files::graph_basename(generation);
        let staging = self.dir.join(files::staging(&basename));
        std::fs::create_dir_all(&staging).map_err(IndexError::io(&staging))?;
        let dumped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.graph.dump(&staging, &basename)
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
            let to = self.dir.join(&name);
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
        sync_dir(&self.dir)?;
        let data = entries.pop().expect("two entries");
        let graph = entries.pop().expect("two entries");
        let mut next = self.manifest.clone();
        next.generation = generation;
        next.graph = Some(GraphEntry {
            engine: ENGINE_NAME.into(),
            basename,
            rows,
            graph,
            data,
        });
        next.write(&self.dir)?;
        self.manifest = next;
        self.collect_garbage()
    }

    /// Rows the committed graph dump covers (none for a dump this build does not read).
    fn graph_rows(&self) -> u64 {
        self.manifest
            .graph
            .as_ref()
            .filter(|g| g.engine == ENGINE_NAME)
            .map_or(0, |g| g.rows)
    }

    fn require_writer(&self) -> Result<(), IndexError> {
        match self.lock {
            Some(_) => Ok(()),
            None => Err(IndexError::ReadOnly(self.dir.clone())),
        }
    }

    /// Removes what interrupted writes of this index left: temp files, segments and graph dumps of
    /// generations after the last commit, and graph dumps the last commit superseded. A segment that the
    /// manifest does not name but that predates its generation was not left by an interrupted write (a
    /// manifest restored from a backup, a file copied in): it is kept and reported, never deleted.
    fn collect_garbage(&self) -> Result<(), IndexError> {
        let mut keep: HashSet<String> = self
            .manifest
            .segments
            .iter()
            .map(|s| s.file.clone())
            .collect();
        if let Some(g) = &self.manifest.graph {
            keep.insert(g.graph.file.clone());
            keep.insert(g.data.file.clone());
        }
        let committed = self.manifest.generation;
        let entries = std::fs::read_dir(&self.dir).map_err(IndexError::io(&self.dir))?;
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

    /// How many rows `filter` keeps: live rows only (one per region, its best tier), unless the filter names
    /// a method, which reaches every row of that method.
    pub fn count_matching(&self, filter: &Filter) -> usize {
        if filter.is_empty() {
            self.meta.len() - self.liveness.superseded()
        } else {
            (0..self.meta.len())
                .filter(|&id| self.keeps(id, filter))
                .count()
        }
    }

    /// Rows a better tier of the same region replaced (kept in the table, passed over by searches).
    pub fn superseded_rows(&self) -> usize {
        self.liveness.superseded()
    }

    /// Whether row `id` is the one a search returns for its region (see [`crate::tier_rank`]).
    pub fn is_live(&self, id: usize) -> bool {
        self.liveness.is_live(id)
    }

    fn keeps(&self, id: usize, filter: &Filter) -> bool {
        self.meta.get(id).is_some_and(|m| {
            filter.matches(m) && (filter.method.is_some() || self.liveness.is_live(id))
        })
    }

    /// Whether a search needs a row test at all.
    fn keeps_all(&self, filter: &Filter) -> bool {
        filter.is_empty() && self.liveness.superseded() == 0
    }

    /// The `k` regions most similar to `query` (any scale; normalised here) among those `filter` keeps.
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        filter: &Filter,
        mode: SearchMode,
    ) -> Result<Vec<Hit>, IndexError> {
        self.search_explained(query, k, filter, mode)
            .map(|(hits, _)| hits)
    }

    /// [`Self::search`], also saying how the search ran.
    pub fn search_explained(
        &self,
        query: &[f32],
        k: usize,
        filter: &Filter,
        mode: SearchMode,
    ) -> Result<(Vec<Hit>, SearchRun), IndexError> {
        if query.len() != self.manifest.dim {
            return Err(IndexError::Mismatch(format!(
                "a {}-d query for an index of {}-d embeddings (built with {})",
                query.len(),
                self.manifest.dim,
                self.manifest.model_id
            )));
        }
        let q = normalized(query)
            .ok_or_else(|| IndexError::Mismatch("the query vector is zero or not finite".into()))?;
        let candidates = self.count_matching(filter);
        let exact = match mode {
            SearchMode::Exact => true,
            SearchMode::Approximate { .. } => false,
            SearchMode::Auto => candidates <= EXACT_BELOW,
        };
        let ef = match mode {
            SearchMode::Approximate { ef } => ef.max(k),
            _ => DEFAULT_EF.max(k),
        };
        let run = SearchRun {
            mode: if exact { "exact" } else { "hnsw" },
            ef: (!exact).then_some(ef),
            candidates,
        };
        if candidates == 0 || k == 0 || self.graph.len() == 0 {
            return Ok((Vec::new(), run));
        }
        let found = if exact {
            self.exact(&q, k, filter)
        } else if self.keeps_all(filter) {
            self.graph.search(&q, k, ef, None)
        } else {
            let accepts = |id: usize| self.keeps(id, filter);
            let keep = Keep {
                accepts: &accepts,
                count: candidates,
            };
            self.graph.search(&q, k, ef, Some(keep))
        };
        let hits = found
            .into_iter()
            .filter(|&(id, _)| id < self.meta.len())
            .map(|(id, score)| self.hit(id, score))
            .collect();
        Ok((hits, run))
    }

    /// A row's stored (unit) embedding.
    pub fn embedding(&self, row: usize) -> Option<Vec<f32>> {
        if row >= self.meta.len() {
            return None;
        }
        self.graph.vector(row).map(<[f32]>::to_vec)
    }

    /// A row as a hit (score 1: the region itself).
    pub fn region(&self, row: usize) -> Option<Hit> {
        (row < self.meta.len()).then(|| self.hit(row, 1.0))
    }

    /// The `k` regions most like a stored one (its own row left out), among those `filter` keeps.
    pub fn similar(
        &self,
        row: usize,
        k: usize,
        filter: &Filter,
        mode: SearchMode,
    ) -> Result<Option<(Vec<Hit>, SearchRun)>, IndexError> {
        let Some(v) = self.embedding(row) else {
            return Ok(None);
        };
        let (mut hits, run) = self.search_explained(&v, k.saturating_add(1), filter, mode)?;
        hits.retain(|h| h.row != row as u64);
        hits.truncate(k);
        Ok(Some((hits, run)))
    }

    fn exact(&self, q: &[f32], k: usize, filter: &Filter) -> Vec<(usize, f32)> {
        let all = self.keeps_all(filter);
        let keep = |id: usize| all || self.keeps(id, filter);
        let vector = |id: usize| self.graph.vector(id).unwrap_or(&[]);
        exact_top_k(self.graph.len(), &vector, q, k, &keep)
    }

    fn hit(&self, id: usize, score: f32) -> Hit {
        let m = &self.meta[id];
        Hit {
            image: m.image.clone(),
            region_id: m.region_id.clone(),
            bbox: m.bbox,
            mask_rle: m.mask.clone(),
            score,
            method: m.method.name.clone(),
            source: m.source.clone(),
            label: m.label.clone(),
            row: id as u64,
            exif_rotated: m.exif_rotated,
        }
    }
}
