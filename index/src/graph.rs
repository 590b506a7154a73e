//! regionseek's HNSW graph: flat arrays instead of per-node allocations, compressed codes for the distances
//! the graph walks on, exact f32 vectors beside them for the final ranking, parallel insertion with a lock
//! per node, and a file layout that reloads by mapping the vectors instead of deserialising them.
//!
//! Layout. Node `i`'s level-0 links are `level0[i·(1+2M) ..]`: a count, then up to 2M ids. A node of level
//! L ≥ 1 also owns L blocks of (1+M) in `upper`, starting at `upper_at[i]`. Links are atomics, so a search
//! running while another thread rewrites a list reads valid ids (from the old list or the new one) without
//! taking the list's lock; every vector a link can name is written before linking starts.

use std::cell::RefCell;
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering as Mem};
use std::sync::Mutex;

use rayon::prelude::*;

use crate::engine::{AnnEngine, HnswParams, Keep};
use crate::files;
use crate::kernels::{dot, Codec, Quantizer};
use crate::IndexError;

/// The name `GraphEntry::engine` records for graphs written by this module.
pub const ENGINE_NAME: &str = "regionseek-hnsw/1";
const LINKS_MAGIC: &[u8; 8] = b"RSHNSWL1";
const VECTORS_MAGIC: &[u8; 8] = b"RSHNSWV1";
const HEADER: usize = 64;
const NO_UPPER: u64 = u64::MAX;
const MAX_LEVEL: u8 = 15;
/// A filtered search scans the rows the filter keeps instead of walking the graph when kept² ≤ this ·
/// ef · rows: a walk visits about ef / selectivity nodes, each with 2M neighbours, which for a filter keeping
/// few rows costs more than comparing every kept row once (and the scan is exact). Measured on 100k
/// vectors: keeping 1%, the scan takes 0.3 ms against the walk's 9.5 ms (ef 64); keeping 10%, 3 ms against
/// 1.4 ms at ef 64 (recall 0.875 on the clustered set) and 4.7 ms at ef 256.
const SCAN_FACTOR: f64 = 32.0;
/// How many of the beam's best the exact vectors re-rank: measured on 100k clustered vectors (ef 768, i8),
/// re-ranking the best 50 instead of all 768 gives the same recall@10 (0.961–0.966 across builds) in 75% of
/// the time, the rest being 4-byte reads of vectors that cannot make the top 10.
const RERANK_PER_HIT: usize = 5;
const RERANK_AT_LEAST: usize = 50;
/// Batches smaller than this are linked on the calling thread.
const PARALLEL_FROM: usize = 64;

/// A node and its similarity to the query (higher is closer); ordered by similarity, then by id.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Cand {
    sim: f32,
    id: u32,
}

impl Eq for Cand {}
impl Ord for Cand {
    fn cmp(&self, other: &Self) -> Ordering {
        self.sim
            .total_cmp(&other.sim)
            .then_with(|| other.id.cmp(&self.id))
    }
}
impl PartialOrd for Cand {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Which nodes a search has reached: a stamp per node, so that starting a search costs nothing.
struct Visited {
    stamps: Vec<u32>,
    epoch: u32,
}

impl Visited {
    fn start(&mut self, nodes: usize) {
        if self.stamps.len() < nodes {
            self.stamps.resize(nodes.next_power_of_two(), 0);
        }
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.stamps.fill(0);
            self.epoch = 1;
        }
    }

    /// True the first time `id` is seen in this search.
    #[inline]
    fn first_visit(&mut self, id: u32) -> bool {
        let stamp = &mut self.stamps[id as usize];
        let first = *stamp != self.epoch;
        *stamp = self.epoch;
        first
    }
}

thread_local! {
    static VISITED: RefCell<Visited> = const { RefCell::new(Visited { stamps: Vec::new(), epoch: 0 }) };
}

/// The vectors: the exact f32 rows and their codes. Rows of a reloaded graph are read from the dumped file into memory;
/// rows added since live in memory after them.
struct VectorStore {
    dim: usize,
    code_len: usize,
    loaded: Option<LoadedVectors>,
    /// f32 rows after the loaded ones.
    tail: Vec<f32>,
    /// Their codes, in u64 words so that every code starts aligned for its element type.
    tail_codes: Vec<u64>,
    tail_rows: usize,
}

/// A dumped vectors file, read into memory (8-byte words, so that every f32 row is aligned). Not a memory
/// map: a map turns a file truncated or rewritten under a serving process (`cp` over the folder, a full disk)
/// into SIGBUS at the next search, while a copy keeps answering from what was committed. The cost is one
/// sequential read at open and the rows' size as memory of the process's own (a map's pages were page cache
/// the kernel could reclaim); while a server opens a new commit beside the one it serves, both copies are held.
struct LoadedVectors {
    words: Vec<u64>,
    len: usize,
    rows: usize,
}

impl LoadedVectors {
    fn read(path: &std::path::Path) -> Result<Self, IndexError> {
        use std::io::Read;
        let mut file = std::fs::File::open(path).map_err(IndexError::io(path))?;
        let len = file.metadata().map_err(IndexError::io(path))?.len() as usize;
        let mut words = vec![0u64; len.div_ceil(8)];
        // SAFETY: the words own at least `len` bytes, and every byte pattern is a valid u64.
        let bytes = unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), len) };
        file.read_exact(bytes).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                IndexError::corrupt(
                    path,
                    "shorter than when it was opened (changed while being read)",
                )
            } else {
                IndexError::io(path)(e)
            }
        })?;
        Ok(Self {
            words,
            len,
            rows: 0,
        })
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `words` holds at least `len` initialised bytes.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast::<u8>(), self.len) }
    }
}

impl VectorStore {
    fn new(dim: usize, code_len: usize) -> Self {
        Self {
            dim,
            code_len,
            loaded: None,
            tail: Vec::new(),
            tail_codes: Vec::new(),
            tail_rows: 0,
        }
    }

    fn loaded_rows(&self) -> usize {
        self.loaded.as_ref().map_or(0, |m| m.rows)
    }

    fn len(&self) -> usize {
        self.loaded_rows() + self.tail_rows
    }

    #[inline]
    fn vector(&self, id: usize) -> &[f32] {
        let base = self.loaded_rows();
        if id < base {
            let m = self.loaded.as_ref().expect("loaded rows");
            let at = HEADER + id * self.dim * 4;
            let bytes = &m.bytes()[at..at + self.dim * 4];
            // SAFETY: the buffer is 8-byte aligned and `at` a multiple of 4; f32 accepts every bit pattern.
            unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<f32>(), self.dim) }
        } else {
            let i = id - base;
            &self.tail[i * self.dim..(i + 1) * self.dim]
        }
    }

    #[inline]
    fn code(&self, id: usize) -> &[u8] {
        let base = self.loaded_rows();
        if id < base {
            let m = self.loaded.as_ref().expect("loaded rows");
            let at = HEADER + m.rows * self.dim * 4 + id * self.code_len;
            &m.bytes()[at..at + self.code_len]
        } else {
            let at = (id - base) * self.code_len;
            // SAFETY: `tail_codes` holds at least `tail_rows · code_len` initialised bytes.
            let bytes = unsafe {
                std::slice::from_raw_parts(
                    self.tail_codes.as_ptr().cast::<u8>(),
                    self.tail_rows * self.code_len,
                )
            };
            &bytes[at..at + self.code_len]
        }
    }

    fn push(&mut self, v: &[f32], quantizer: &Quantizer) {
        self.tail.extend_from_slice(v);
        let end = (self.tail_rows + 1) * self.code_len;
        self.tail_codes.resize(end.div_ceil(8), 0);
        // SAFETY: just resized to hold `end` bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts_mut(self.tail_codes.as_mut_ptr().cast::<u8>(), end)
        };
        quantizer.encode(v, &mut bytes[end - self.code_len..]);
        self.tail_rows += 1;
    }

    fn reserve(&mut self, rows: usize) {
        self.tail.reserve(rows * self.dim);
        self.tail_codes
            .reserve(((self.tail_rows + rows) * self.code_len).div_ceil(8));
    }
}

/// The graph. See the module documentation for the layout.
pub struct GraphEngine {
    dim: usize,
    params: HnswParams,
    codec: Codec,
    /// Fitted on the first batch (i8 needs its scale from data).
    quantizer: Option<Quantizer>,
    store: VectorStore,
    levels: Vec<u8>,
    upper_at: Vec<u64>,
    level0: Vec<AtomicU32>,
    upper: Vec<AtomicU32>,
    locks: Vec<Mutex<()>>,
    /// Entry node and its level.
    entry: Mutex<Option<(u32, u8)>>,
    /// Held for the whole insertion of a node that raises the top level, as hnswlib does.
    raise: Mutex<()>,
}

impl GraphEngine {
    pub fn new(dim: usize, params: HnswParams) -> Self {
        let codec = params.codec;
        let code_len = dim * codec.bytes_per_dim();
        Self {
            dim,
            params: HnswParams {
                m: params.m.max(2),
                ef_construction: params.ef_construction.max(1),
                codec,
            },
            codec,
            quantizer: None,
            store: VectorStore::new(dim, code_len),
            levels: Vec::new(),
            upper_at: Vec::new(),
            level0: Vec::new(),
            upper: Vec::new(),
            locks: Vec::new(),
            entry: Mutex::new(None),
            raise: Mutex::new(()),
        }
    }

    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// Bytes per vector of the graph itself: the code and the links (the exact f32 vectors, read into memory
    /// at open and used for the final ranking and exact scans, are not counted).
    pub fn graph_bytes_per_vector(&self) -> f64 {
        let n = self.len().max(1);
        let links = (self.level0.len() + self.upper.len()) * 4 + self.upper_at.len() * 8;
        (n * self.store.code_len + links + self.levels.len()) as f64 / n as f64
    }

    fn m0(&self) -> usize {
        2 * self.params.m
    }

    fn quantizer(&self) -> &Quantizer {
        self.quantizer
            .as_ref()
            .expect("fitted before any node exists")
    }

    /// The level a node gets: a deterministic function of its id, so rebuilding gives the same graph shape.
    fn level_of(&self, id: usize) -> u8 {
        let mut z = (id as u64)
            .wrapping_add(0x9E37_79B9_7F4A_7C15)
            .wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let u = ((z >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        let ml = 1.0 / (self.params.m as f64).ln();
        ((-u.ln() * ml).floor() as u64).min(MAX_LEVEL as u64) as u8
    }

    /// The (count, ids) slots of `id`'s links at `level`.
    #[inline]
    fn links(&self, id: usize, level: u8) -> (&AtomicU32, &[AtomicU32]) {
        let block = if level == 0 {
            let w = 1 + self.m0();
            &self.level0[id * w..(id + 1) * w]
        } else {
            let w = 1 + self.params.m;
            let at = self.upper_at[id] as usize + (level as usize - 1) * w;
            &self.upper[at..at + w]
        };
        (&block[0], &block[1..])
    }

    #[inline]
    fn sim(&self, a: &[u8], id: u32) -> f32 {
        self.quantizer().similarity(a, self.store.code(id as usize))
    }

    /// Asks for a code's cache lines ahead of use: the walk is bound by memory latency, and fetching the
    /// codes of all fresh neighbours at once overlaps their misses.
    #[inline]
    fn prefetch(&self, id: u32) {
        #[cfg(target_arch = "x86_64")]
        {
            let code = self.store.code(id as usize);
            for line in (0..code.len()).step_by(64) {
                // SAFETY: a prefetch hint on an address inside a live slice has no architectural effect.
                unsafe {
                    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
                    _mm_prefetch(code.as_ptr().add(line).cast::<i8>(), _MM_HINT_T0);
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = id;
    }

    fn greedy(&self, q: &[u8], mut cur: Cand, level: u8) -> Cand {
        loop {
            let (count, slots) = self.links(cur.id as usize, level);
            let n = (count.load(Mem::Acquire) as usize).min(slots.len());
            let mut moved = false;
            for slot in &slots[..n] {
                let nb = slot.load(Mem::Relaxed);
                let s = self.sim(q, nb);
                if s > cur.sim {
                    cur = Cand { sim: s, id: nb };
                    moved = true;
                }
            }
            if !moved {
                return cur;
            }
        }
    }

    /// Beam search of one level from `entry`: the `ef` best nodes `keep` accepts, best first. Nodes the
    /// filter rejects are still walked through, so the beam crosses them to reach kept ones.
    fn search_level(
        &self,
        q: &[u8],
        entry: &[Cand],
        ef: usize,
        level: u8,
        keep: Option<&(dyn Fn(usize) -> bool + Sync)>,
    ) -> Vec<Cand> {
        VISITED.with(|visited| {
            let mut visited = visited.borrow_mut();
            visited.start(self.len());
            let mut frontier: BinaryHeap<Cand> = BinaryHeap::with_capacity(ef * 4);
            let mut best: BinaryHeap<std::cmp::Reverse<Cand>> = BinaryHeap::with_capacity(ef + 1);
            let accepts = |id: u32| keep.is_none_or(|k| k(id as usize));
            let mut fresh: Vec<u32> = Vec::with_capacity(self.m0());
            for &c in entry {
                if visited.first_visit(c.id) {
                    frontier.push(c);
                    if accepts(c.id) {
                        best.push(std::cmp::Reverse(c));
                        if best.len() > ef {
                            best.pop();
                        }
                    }
                }
            }
            while let Some(c) = frontier.pop() {
                if best.len() >= ef && best.peek().is_some_and(|w| c.sim < w.0.sim) {
                    break;
                }
                let (count, slots) = self.links(c.id as usize, level);
                let n = (count.load(Mem::Acquire) as usize).min(slots.len());
                fresh.clear();
                for slot in &slots[..n] {
                    let nb = slot.load(Mem::Relaxed);
                    if visited.first_visit(nb) {
                        self.prefetch(nb);
                        fresh.push(nb);
                    }
                }
                for &nb in &fresh {
                    let s = self.sim(q, nb);
                    let worst = best.peek().map_or(f32::NEG_INFINITY, |w| w.0.sim);
                    if best.len() < ef || s > worst {
                        let cand = Cand { sim: s, id: nb };
                        frontier.push(cand);
                        if accepts(nb) {
                            best.push(std::cmp::Reverse(cand));
                            if best.len() > ef {
                                best.pop();
                            }
                        }
                    }
                }
            }
            let mut out: Vec<Cand> = best.into_iter().map(|r| r.0).collect();
            out.sort_unstable_by(|a, b| b.cmp(a));
            out
        })
    }

    /// HNSW's neighbour heuristic: walk `cands` best first and keep one unless a node already kept is
    /// closer to it than the base node is, so that links spread in different directions.
    fn select(&self, cands: &[Cand], m: usize) -> Vec<Cand> {
        let mut kept: Vec<Cand> = Vec::with_capacity(m);
        for &c in cands {
            if kept.len() >= m {
                break;
            }
            let code = self.store.code(c.id as usize);
            if kept.iter().all(|r| self.sim(code, r.id) < c.sim) {
                kept.push(c);
            }
        }
        kept
    }

    fn set_links(&self, id: usize, level: u8, to: &[Cand]) {
        let _guard = self.locks[id].lock().unwrap_or_else(|p| p.into_inner());
        let (count, slots) = self.links(id, level);
        for (slot, c) in slots.iter().zip(to) {
            slot.store(c.id, Mem::Relaxed);
        }
        count.store(to.len().min(slots.len()) as u32, Mem::Release);
    }

    /// Adds `new` to `node`'s links at `level`, re-selecting them with the heuristic when full.
    fn connect(&self, node: u32, new: u32, sim: f32, level: u8) {
        let _guard = self.locks[node as usize]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let (count, slots) = self.links(node as usize, level);
        let n = (count.load(Mem::Acquire) as usize).min(slots.len());
        if slots[..n].iter().any(|s| s.load(Mem::Relaxed) == new) {
            return;
        }
        if n < slots.len() {
            slots[n].store(new, Mem::Relaxed);
            count.store(n as u32 + 1, Mem::Release);
            return;
        }
        let base = self.store.code(node as usize);
        let mut cands: Vec<Cand> = slots[..n]
            .iter()
            .map(|s| {
                let id = s.load(Mem::Relaxed);
                Cand {
                    sim: self.sim(base, id),
                    id,
                }
            })
            .collect();
        cands.push(Cand { sim, id: new });
        cands.sort_unstable_by(|a, b| b.cmp(a));
        let kept = self.select(&cands, slots.len());
        for (slot, c) in slots.iter().zip(&kept) {
            slot.store(c.id, Mem::Relaxed);
        }
        count.store(kept.len() as u32, Mem::Release);
    }

    /// Links node `id` (its vector, level and empty link blocks already exist) into the graph.
    fn link(&self, id: usize) {
        let q = self.store.code(id);
        let level = self.levels[id];
        let (mut start, mut top) = self.entry_point().expect("an entry exists");
        let _raising = if level > top {
            let guard = self.raise.lock().unwrap_or_else(|p| p.into_inner());
            (start, top) = self.entry_point().expect("an entry exists");
            Some(guard)
        } else {
            None
        };
        let mut cur = Cand {
            sim: self.sim(q, start),
            id: start,
        };
        let mut l = top;
        while l > level {
            cur = self.greedy(q, cur, l);
            l -= 1;
        }
        let mut entry = vec![cur];
        for l in (0..=level.min(top)).rev() {
            let found = self.search_level(q, &entry, self.params.ef_construction, l, None);
            let chosen = self.select(&found, self.params.m);
            self.set_links(id, l, &chosen);
            for c in &chosen {
                self.connect(c.id, id as u32, c.sim, l);
            }
            entry = found;
        }
        if level > top {
            let mut e = self.entry.lock().unwrap_or_else(|p| p.into_inner());
            if e.is_none_or(|(_, t)| level > t) {
                *e = Some((id as u32, level));
            }
        }
    }

    fn entry_point(&self) -> Option<(u32, u8)> {
        *self.entry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Exact ranking of the rows `keep` accepts (for filters that keep few rows).
    fn scan(
        &self,
        q: &[f32],
        k: usize,
        keep: &(dyn Fn(usize) -> bool + Sync),
    ) -> Vec<(usize, f32)> {
        crate::engine::exact_top_k(self.len(), &|id| self.store.vector(id), q, k, keep)
    }

    /// Writes the graph as `{basename}.links` (read into memory on load) and `{basename}.vectors` (read into memory too).
    fn write_files(&self, dir: &Path, basename: &str) -> std::io::Result<()> {
        let n = self.len();
        let q = self.quantizer.unwrap_or(Quantizer::fit(self.codec, &[], 0));
        let mut head = Vec::with_capacity(HEADER);
        head.extend_from_slice(LINKS_MAGIC);
        for x in [
            self.dim as u64,
            self.params.m as u64,
            self.params.ef_construction as u64,
            n as u64,
        ] {
            head.extend_from_slice(&x.to_le_bytes());
        }
        head.extend_from_slice(&(self.upper.len() as u64).to_le_bytes());
        let (entry, top) = self.entry_point().map_or((u32::MAX, 0), |(e, t)| (e, t));
        head.extend_from_slice(&entry.to_le_bytes());
        head.push(top);
        head.push(self.codec.id());
        head.extend_from_slice(&q.scale.to_le_bytes());
        head.resize(HEADER, 0);

        let path = dir.join(files::graph_links(basename));
        let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(&path)?);
        w.write_all(&head)?;
        w.write_all(&self.levels)?;
        w.write_all(&vec![0u8; pad8(n) - n])?;
        for x in &self.upper_at {
            w.write_all(&x.to_le_bytes())?;
        }
        for x in self.level0.iter().chain(&self.upper) {
            w.write_all(&x.load(Mem::Relaxed).to_le_bytes())?;
        }
        w.into_inner().map_err(|e| e.into_error())?.sync_all()?;

        let mut head = Vec::with_capacity(HEADER);
        head.extend_from_slice(VECTORS_MAGIC);
        head.extend_from_slice(&(self.dim as u64).to_le_bytes());
        head.extend_from_slice(&(n as u64).to_le_bytes());
        head.push(self.codec.id());
        head.resize(HEADER, 0);
        let path = dir.join(files::graph_vectors(basename));
        let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(&path)?);
        w.write_all(&head)?;
        for id in 0..n {
            for x in self.store.vector(id) {
                w.write_all(&x.to_le_bytes())?;
            }
        }
        for id in 0..n {
            w.write_all(self.store.code(id))?;
        }
        w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        Ok(())
    }

    /// Opens a graph written by [`AnnEngine::dump`]: the links are read, the vectors read. `rows` is what
    /// the manifest says the graph holds.
    pub fn load(dir: &Path, basename: &str, rows: usize) -> Result<Self, IndexError> {
        let path = dir.join(files::graph_links(basename));
        let bytes = std::fs::read(&path).map_err(IndexError::io(&path))?;
        let bad = |what: &str| IndexError::corrupt(&path, what);
        if bytes.len() < HEADER || &bytes[..8] != LINKS_MAGIC {
            return Err(bad("not a regionseek graph (bad header)"));
        }
        let word = |i: usize| u64::from_le_bytes(bytes[8 + 8 * i..16 + 8 * i].try_into().unwrap());
        let (dim, m, ef_c, n, upper_len) = (
            word(0) as usize,
            word(1) as usize,
            word(2) as usize,
            word(3) as usize,
            word(4) as usize,
        );
        let entry = u32::from_le_bytes(bytes[48..52].try_into().unwrap());
        let top = bytes[52];
        let codec = Codec::from_id(bytes[53]).ok_or_else(|| bad("unknown vector codec"))?;
        let scale = f32::from_le_bytes(bytes[54..58].try_into().unwrap());
        if n != rows {
            return Err(bad(&format!("holds {n} vectors, the manifest says {rows}")));
        }
        if dim == 0 || m < 2 || m > 1024 || top > MAX_LEVEL {
            return Err(bad("implausible parameters"));
        }
        let params = HnswParams {
            m,
            ef_construction: ef_c,
            codec,
        };
        let mut g = Self::new(dim, params);
        let w0 = 1 + 2 * m;
        let expect = HEADER
            .checked_add(pad8(n))
            .and_then(|x| x.checked_add(n.checked_mul(8)?))
            .and_then(|x| {
                x.checked_add(n.checked_mul(w0)?.checked_add(upper_len)?.checked_mul(4)?)
            });
        if expect != Some(bytes.len()) {
            return Err(bad("its size does not match its header"));
        }
        let mut at = HEADER;
        g.levels = bytes[at..at + n].to_vec();
        at += pad8(n);
        g.upper_at = bytes[at..at + 8 * n]
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        at += 8 * n;
        let words = |from: usize, count: usize| -> Vec<AtomicU32> {
            bytes[from..from + 4 * count]
                .chunks_exact(4)
                .map(|c| AtomicU32::new(u32::from_le_bytes(c.try_into().unwrap())))
                .collect()
        };
        g.level0 = words(at, n * w0);
        at += 4 * n * w0;
        g.upper = words(at, upper_len);
        drop(bytes);
        // Every id and every block must lie inside the arrays: searching trusts them.
        let w = 1 + m;
        for id in 0..n {
            let level = g.levels[id];
            if level > MAX_LEVEL {
                return Err(bad("a node level out of range"));
            }
            let blocks = if level == 0 {
                if g.upper_at[id] != NO_UPPER {
                    return Err(bad("a level-0 node with upper links"));
                }
                0
            } else {
                let end = (g.upper_at[id] as usize).checked_add(level as usize * w);
                if end.is_none_or(|e| e > upper_len) {
                    return Err(bad("upper links out of range"));
                }
                level
            };
            for l in 0..=blocks {
                let (count, slots) = g.links(id, l);
                let c = count.load(Mem::Relaxed) as usize;
                if c > slots.len()
                    || slots[..c]
                        .iter()
                        .any(|s| s.load(Mem::Relaxed) as usize >= n)
                {
                    return Err(bad("a link to a node that does not exist"));
                }
                // A walk at level l follows links into their targets' level-l blocks.
                if slots[..c]
                    .iter()
                    .any(|s| g.levels[s.load(Mem::Relaxed) as usize] < l)
                {
                    return Err(bad("a link to a node below its level"));
                }
            }
        }
        if n > 0 {
            if entry as usize >= n || g.levels[entry as usize] != top {
                return Err(bad("a bad entry node"));
            }
            *g.entry.get_mut().unwrap() = Some((entry, top));
        }
        g.quantizer = Some(Quantizer { codec, scale });
        g.locks = (0..n).map(|_| Mutex::new(())).collect();

        let path = dir.join(files::graph_vectors(basename));
        let mut vectors = LoadedVectors::read(&path)?;
        let code_len = g.store.code_len;
        let map = vectors.bytes();
        if map.len() != HEADER + n * (dim * 4 + code_len)
            || &map[..8] != VECTORS_MAGIC
            || u64::from_le_bytes(map[8..16].try_into().unwrap()) != dim as u64
            || u64::from_le_bytes(map[16..24].try_into().unwrap()) != n as u64
            || map[24] != codec.id()
        {
            return Err(IndexError::corrupt(&path, "does not match its graph"));
        }
        vectors.rows = n;
        g.store.loaded = Some(vectors);
        Ok(g)
    }
}

fn pad8(n: usize) -> usize {
    n.div_ceil(8) * 8
}

impl AnnEngine for GraphEngine {
    fn len(&self) -> usize {
        self.store.len()
    }

    fn insert(&mut self, vectors: &[&[f32]]) {
        if vectors.is_empty() {
            return;
        }
        if self.quantizer.is_none() {
            let rows = vectors.len().min(10_000);
            let sample: Vec<f32> = vectors[..rows]
                .iter()
                .flat_map(|v| v.iter().copied())
                .collect();
            self.quantizer = Some(Quantizer::fit(self.codec, &sample, rows));
        }
        let quantizer = *self.quantizer();
        let first = self.len();
        let (w0, w) = (1 + self.m0(), 1 + self.params.m);
        self.store.reserve(vectors.len());
        for (i, v) in vectors.iter().enumerate() {
            debug_assert_eq!(v.len(), self.dim);
            let id = first + i;
            self.store.push(v, &quantizer);
            let level = self.level_of(id);
            self.levels.push(level);
            if level > 0 {
                self.upper_at.push(self.upper.len() as u64);
                self.upper
                    .extend((0..level as usize * w).map(|_| AtomicU32::new(0)));
            } else {
                self.upper_at.push(NO_UPPER);
            }
            self.level0.extend((0..w0).map(|_| AtomicU32::new(0)));
            self.locks.push(Mutex::new(()));
        }
        let mut next = first;
        if self
            .entry
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .is_none()
        {
            *self.entry.get_mut().unwrap_or_else(|p| p.into_inner()) =
                Some((first as u32, self.levels[first]));
            next += 1;
        }
        let this = &*self;
        if self.len() - next >= PARALLEL_FROM && rayon::current_num_threads() > 1 {
            (next..this.len())
                .into_par_iter()
                .for_each(|id| this.link(id));
        } else {
            (next..this.len()).for_each(|id| this.link(id));
        }
    }

    fn search(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        keep: Option<Keep<'_>>,
    ) -> Vec<(usize, f32)> {
        let n = self.len();
        if n == 0 || k == 0 || query.len() != self.dim {
            return Vec::new();
        }
        if let Some(keep) = &keep {
            if keep.count == 0 {
                return Vec::new();
            }
            // The walk visits about ef·n/count nodes with 2M neighbours each; the scan compares every kept row.
            let kept = keep.count as f64;
            if kept * kept <= SCAN_FACTOR * ef.max(k) as f64 * n as f64 {
                return self.scan(query, k, keep.accepts);
            }
        }
        let quantizer = self.quantizer();
        let mut code = vec![0u64; quantizer.code_len(self.dim).div_ceil(8)];
        // SAFETY: the buffer holds at least code_len bytes.
        let q = unsafe {
            std::slice::from_raw_parts_mut(
                code.as_mut_ptr().cast::<u8>(),
                quantizer.code_len(self.dim),
            )
        };
        quantizer.encode(query, q);
        let q = &*q;
        let (start, top) = self.entry_point().expect("non-empty graph has an entry");
        let mut cur = Cand {
            sim: self.sim(q, start),
            id: start,
        };
        for l in (1..=top).rev() {
            cur = self.greedy(q, cur, l);
        }
        let found = self.search_level(q, &[cur], ef.max(k), 0, keep.as_ref().map(|k| k.accepts));
        // The codes chose the candidates; the exact vectors rank the best of them (the codes' order is right
        // but for near-ties, so only the head of the beam needs the exact vectors' 4-byte reads).
        let mut ranked: Vec<(usize, f32)> = found
            .iter()
            .take((RERANK_PER_HIT * k).max(RERANK_AT_LEAST))
            .map(|c| (c.id as usize, dot(query, self.store.vector(c.id as usize))))
            .collect();
        ranked.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        ranked.truncate(k);
        ranked
    }

    fn vector(&self, id: usize) -> Option<&[f32]> {
        (id < self.len()).then(|| self.store.vector(id))
    }

    fn dump(&self, dir: &Path, basename: &str) -> Result<(), IndexError> {
        self.write_files(dir, basename)
            .map_err(|e| IndexError::Engine(format!("writing the graph to {}: {e}", dir.display())))
    }

    fn files(&self, basename: &str) -> [String; 2] {
        files::graph_files(basename)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::{clustered, Rng};

    fn build(data: &[f32], dim: usize, codec: Codec, batch: usize) -> GraphEngine {
        let mut g = GraphEngine::new(
            dim,
            HnswParams {
                m: 12,
                ef_construction: 80,
                codec,
            },
        );
        for chunk in data.chunks(dim * batch) {
            let rows: Vec<&[f32]> = chunk.chunks_exact(dim).collect();
            g.insert(&rows);
        }
        g
    }

    fn recall(g: &GraphEngine, data: &[f32], queries: &[f32], dim: usize, ef: usize) -> f64 {
        let mut hits = 0;
        for q in queries.chunks_exact(dim) {
            let truth: Vec<usize> = crate::engine::exact_top_k(
                data.len() / dim,
                &|i| &data[i * dim..(i + 1) * dim],
                q,
                10,
                &|_| true,
            )
            .into_iter()
            .map(|x| x.0)
            .collect();
            let found = g.search(q, 10, ef, None);
            hits += found.iter().filter(|(id, _)| truth.contains(id)).count();
        }
        hits as f64 / (10 * queries.len() / dim) as f64
    }

    #[test]
    fn every_codec_finds_the_true_neighbours_of_a_clustered_set() {
        let dim = 64;
        let data = clustered(3000, dim, 30, 0.6, 1);
        let queries = clustered(50, dim, 30, 0.6, 2);
        for codec in [Codec::F32, Codec::F16, Codec::I8] {
            // Small batches link one at a time, big ones in parallel: both must give a usable graph.
            for batch in [7, 1000] {
                let g = build(&data, dim, codec, batch);
                assert_eq!(g.len(), 3000);
                // Near-ties in 64-d clusters need a beam of 200 for 0.95 (an exact-distance graph gets 0.99).
                let r = recall(&g, &data, &queries, dim, 200);
                assert!(r >= 0.95, "{codec:?} batch {batch}: recall@10 {r}");
            }
        }
    }

    #[test]
    fn scores_are_exact_dot_products_best_first_and_a_vector_finds_itself() {
        let dim = 32;
        let data = clustered(500, dim, 10, 0.6, 3);
        let g = build(&data, dim, Codec::I8, 100);
        for id in [0usize, 17, 499] {
            let v = &data[id * dim..(id + 1) * dim];
            let found = g.search(v, 5, 64, None);
            assert_eq!(found[0].0, id);
            for w in found.windows(2) {
                assert!(w[0].1 >= w[1].1);
            }
            for (i, s) in &found {
                assert_eq!(*s, dot(v, &data[i * dim..(i + 1) * dim]));
            }
        }
    }

    #[test]
    fn filtered_search_returns_only_kept_rows_and_finds_the_best_of_them() {
        let dim = 32;
        let data = clustered(4000, dim, 40, 0.6, 4);
        let g = build(&data, dim, Codec::F16, 500);
        let mut rng = Rng::new(5);
        for stride in [2usize, 10, 100] {
            let accepts = move |id: usize| id % stride == 1;
            let keep = Keep {
                accepts: &accepts,
                count: (4000 + stride - 2) / stride,
            };
            for _ in 0..10 {
                let q = &data[(rng.next_u64() % 4000) as usize * dim..][..dim];
                let truth = crate::engine::exact_top_k(
                    4000,
                    &|i| &data[i * dim..(i + 1) * dim],
                    q,
                    10,
                    &accepts,
                );
                let found = g.search(q, 10, 100, Some(Keep { ..keep }));
                assert!(found.iter().all(|(id, _)| id % stride == 1));
                let hits = found
                    .iter()
                    .filter(|f| truth.iter().any(|t| t.0 == f.0))
                    .count();
                assert!(hits >= 9, "stride {stride}: {hits}/10");
            }
        }
    }

    #[test]
    fn a_dumped_graph_reloads_loaded_answers_alike_and_takes_more_rows() {
        let dim = 48;
        let data = clustered(2000, dim, 20, 0.6, 6);
        let g = build(&data, dim, Codec::F16, 400);
        let dir = tempfile::tempdir().unwrap();
        g.dump(dir.path(), "g").unwrap();
        let mut back = GraphEngine::load(dir.path(), "g", 2000).unwrap();
        for q in data.chunks_exact(dim).step_by(97) {
            assert_eq!(g.search(q, 10, 64, None), back.search(q, 10, 64, None));
        }
        assert_eq!(back.vector(1999), g.vector(1999));
        // Rows after a reload go after the loaded ones and are found.
        let more = clustered(300, dim, 20, 0.6, 7);
        let rows: Vec<&[f32]> = more.chunks_exact(dim).collect();
        back.insert(&rows);
        assert_eq!(back.len(), 2300);
        let found = back.search(&more[..dim], 1, 64, None);
        assert_eq!(found[0].0, 2000);
        back.dump(dir.path(), "h").unwrap();
        let again = GraphEngine::load(dir.path(), "h", 2300).unwrap();
        assert_eq!(again.vector(2100), back.vector(2100));
        assert!(GraphEngine::load(dir.path(), "h", 2299).is_err());
    }

    #[test]
    fn a_damaged_graph_file_is_refused_not_trusted() {
        let dim = 16;
        let data = clustered(300, dim, 5, 0.6, 8);
        let g = build(&data, dim, Codec::F32, 300);
        let dir = tempfile::tempdir().unwrap();
        g.dump(dir.path(), "g").unwrap();
        let links = dir.path().join("g.links");
        let good = std::fs::read(&links).unwrap();
        // A link pointing past the last node.
        let mut bad = good.clone();
        let at = HEADER + pad8(300) + 8 * 300 + 4;
        bad[at..at + 4].copy_from_slice(&5000u32.to_le_bytes());
        std::fs::write(&links, &bad).unwrap();
        let err = GraphEngine::load(dir.path(), "g", 300)
            .err()
            .expect("refused");
        assert!(err.to_string().contains("does not exist"), "{err}");
        // An upper-level link to a node that has no upper levels.
        let (levels_at, upper_start) = (HEADER, HEADER + pad8(300) + 8 * 300 + 4 * 300 * 25);
        let low = good[levels_at..levels_at + 300]
            .iter()
            .position(|&l| l == 0)
            .unwrap();
        let high = good[levels_at..levels_at + 300]
            .iter()
            .position(|&l| l > 0)
            .unwrap();
        let upper_at = HEADER + pad8(300) + 8 * high;
        let block = u64::from_le_bytes(good[upper_at..upper_at + 8].try_into().unwrap()) as usize;
        let mut bad = good.clone();
        let slot = upper_start + 4 * block;
        bad[slot..slot + 4].copy_from_slice(&1u32.to_le_bytes());
        bad[slot + 4..slot + 8].copy_from_slice(&(low as u32).to_le_bytes());
        std::fs::write(&links, &bad).unwrap();
        let err = GraphEngine::load(dir.path(), "g", 300)
            .err()
            .expect("refused");
        assert!(err.to_string().contains("below its level"), "{err}");
        // Truncated.
        std::fs::write(&links, &good[..good.len() - 4]).unwrap();
        assert!(GraphEngine::load(dir.path(), "g", 300).is_err());
        std::fs::write(&links, &good).unwrap();
        let vectors = dir.path().join("g.vectors");
        let v = std::fs::read(&vectors).unwrap();
        std::fs::write(&vectors, &v[..v.len() - 1]).unwrap();
        assert!(GraphEngine::load(dir.path(), "g", 300).is_err());
    }
}
