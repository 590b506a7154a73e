//! The index directory: segments + graph dump + manifest, opened and searched by [`RegionIndex`], appended
//! to by [`IndexWriter`].
//!
//! Deleted rows (see `tombstones`) stay in the table and in the graph, where they still route walks, until
//! a compaction rewrites both without them; until then nothing a reader offers returns them: no search,
//! count, lookup or row accessor. A compaction renumbers rows (row ids are positions), so a row id is only
//! meaningful within the snapshot that produced it. A reader holds its snapshot in memory from `open` on:
//! a compaction committed later neither disturbs nor changes what it answers.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::engine::{exact_top_k, HnswParams, Keep};
use crate::graph::{FrozenGraph, GraphBuilder, ENGINE_NAME};
use crate::manifest::{verify, verify_size, Manifest};
use crate::record::{Filter, Hit, RegionMeta};
use crate::tiers::Liveness;
use crate::tombstones::Tombstones;
use crate::{store, IndexError};

mod writer;

pub use writer::{
    AppendReport, CompactReport, DeleteReport, IndexWriter, DEFAULT_COMPACT_THRESHOLD,
};

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

/// Up to this many candidate rows `Auto` scans them all: exact, and tens of milliseconds on two cores.
pub const EXACT_BELOW: usize = 200_000;
/// `Auto`'s beam beyond [`EXACT_BELOW`]: wide, because region embeddings of one class are near-ties and a
/// narrow beam misses them (recall@10 ~0.6 at ef 64 on 28.8k COCO regions).
pub const DEFAULT_EF: usize = 512;
/// How often a reader re-reads a manifest that moved while it was opening the files it named.
const READ_RETRIES: usize = 3;

/// An index opened for reading: the last committed state when it was opened, searched by any number of
/// threads. It cannot be written (see [`IndexWriter`]), so this does not compile:
///
/// ```compile_fail
/// # fn f(reader: &mut regionseek_index::RegionIndex) {
/// reader.append(Vec::new());
/// # }
/// ```
pub struct RegionIndex {
    dir: PathBuf,
    manifest: Manifest,
    meta: Vec<RegionMeta>,
    /// Built on first use: writers need it for every batch, a reader that serves searches never does, and at
    /// a million rows it costs hundreds of megabytes.
    keys: OnceLock<HashSet<(String, String, String)>>,
    /// (image content hash, method) of every row: whether a photo has been through a method at all.
    images: OnceLock<HashMap<(String, String), bool>>,
    /// Which rows searches return: one per region, the best tier (see `tiers`), never a deleted one.
    liveness: Liveness,
    deleted: Tombstones,
    graph: IndexGraph,
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

    /// The state `manifest` commits, its graph in whichever form reading it left it.
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
        let deleted = Tombstones::of(dir, manifest.tombstones.as_ref())?;
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
            liveness: Liveness::of(&meta, &deleted),
            deleted,
            meta,
            keys: OnceLock::new(),
            images: OnceLock::new(),
            graph,
        })
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
    /// Every row of the table, deleted ones included (see [`Self::is_deleted`]): row ids index it.
    pub fn rows(&self) -> &[RegionMeta] {
        &self.meta
    }

    /// Whether row `row` was deleted (it stays in the table until a compaction). Rows that do not exist
    /// are not deleted.
    pub fn is_deleted(&self, row: usize) -> bool {
        self.deleted.is_dead(row)
    }

    /// Rows deleted and not yet compacted away.
    pub fn dead_rows(&self) -> usize {
        self.deleted.count()
    }

    /// Rows not deleted (superseded rows included: a method filter still reaches them).
    pub fn live_len(&self) -> usize {
        self.meta.len() - self.deleted.count()
    }

    /// The rows not deleted, with their ids.
    fn undeleted(&self) -> impl Iterator<Item = (usize, &RegionMeta)> {
        self.meta
            .iter()
            .enumerate()
            .filter(|(row, _)| !self.deleted.is_dead(*row))
    }

    /// Drops the lookup sets after rows were deleted or renumbered; they are rebuilt when next asked.
    fn reset_lookups(&mut self) {
        self.keys = OnceLock::new();
        self.images = OnceLock::new();
        self.liveness = Liveness::of(&self.meta, &self.deleted);
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
            .get_or_init(|| self.undeleted().map(|(_, m)| m.key()).collect())
    }

    fn image_set(&self) -> &HashMap<(String, String), bool> {
        self.images.get_or_init(|| {
            self.undeleted()
                .map(|(_, m)| {
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

    /// How many rows `filter` keeps: live rows only (one per region, its best tier), unless the filter names
    /// a method, which reaches every row of that method.
    pub fn count_matching(&self, filter: &Filter) -> usize {
        if filter.is_empty() {
            self.live_len() - self.liveness.superseded()
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
            !self.deleted.is_dead(id)
                && filter.matches(m)
                && (filter.method.is_some() || self.liveness.is_live(id))
        })
    }

    /// Whether a search needs a row test at all.
    fn keeps_all(&self, filter: &Filter) -> bool {
        filter.is_empty() && self.liveness.superseded() == 0 && self.deleted.count() == 0
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
            // The graph keeps deleted nodes for routing; the filters above never accept them, this is the
            // last guard.
            .filter(|&(id, _)| id < self.meta.len() && !self.deleted.is_dead(id))
            .map(|(id, score)| self.hit(id, score))
            .collect();
        Ok((hits, run))
    }

    /// A row's stored (unit) embedding; None for a deleted row.
    pub fn embedding(&self, row: usize) -> Option<Vec<f32>> {
        if row >= self.meta.len() || self.deleted.is_dead(row) {
            return None;
        }
        self.graph.vector(row).map(<[f32]>::to_vec)
    }

    /// A row as a hit (score 1: the region itself); None for a deleted row.
    pub fn region(&self, row: usize) -> Option<Hit> {
        (row < self.meta.len() && !self.deleted.is_dead(row)).then(|| self.hit(row, 1.0))
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
            taken_at: m.photo.taken_at.clone(),
            camera: m.photo.camera.clone(),
            other_matches: None,
        }
    }
}
