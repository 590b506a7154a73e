//! The graph while it takes rows: parallel insertion, with a lock per node for rewriting its links and a lock
//! for raising the top level. [`GraphBuilder::freeze`] drops all of that for searching.

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering as Mem};
use std::sync::Mutex;

use rayon::prelude::*;

use super::file;
use super::frozen::FrozenGraph;
use super::links::MAX_LEVEL;
use super::walk::{Cand, Entry, Graph};
use crate::engine::{HnswParams, Keep};
use crate::kernels::Quantizer;
use crate::IndexError;

/// Batches smaller than this are linked on the calling thread.
const PARALLEL_FROM: usize = 64;

pub(crate) struct GraphBuilder {
    graph: Graph<AtomicU32>,
    /// One per node, held while its link lists are rewritten.
    locks: Vec<Mutex<()>>,
    entry: Mutex<Entry>,
    /// Held for the whole insertion of a node that raises the top level, as hnswlib does.
    raise: Mutex<()>,
}

impl GraphBuilder {
    pub fn new(dim: usize, params: HnswParams) -> Self {
        Self::from_parts(Graph::new(dim, params), None)
    }

    pub(super) fn from_parts(graph: Graph<AtomicU32>, entry: Entry) -> Self {
        Self {
            locks: (0..graph.len()).map(|_| Mutex::new(())).collect(),
            graph,
            entry: Mutex::new(entry),
            raise: Mutex::new(()),
        }
    }

    /// The read-only form of this graph, for searching.
    pub fn freeze(self) -> FrozenGraph {
        let entry = self.entry.into_inner().unwrap_or_else(|p| p.into_inner());
        FrozenGraph::from_parts(self.graph.map_links(AtomicU32::into_inner), entry)
    }

    pub fn len(&self) -> usize {
        self.graph.len()
    }

    /// Appends vectors (unit length) as rows `len()..`, in order, and links them into the graph.
    pub fn insert(&mut self, vectors: &[&[f32]]) {
        if vectors.is_empty() {
            return;
        }
        let g = &mut self.graph;
        if g.quantizer.is_none() {
            let rows = vectors.len().min(10_000);
            let sample: Vec<f32> = vectors[..rows]
                .iter()
                .flat_map(|v| v.iter().copied())
                .collect();
            g.quantizer = Some(Quantizer::fit(g.codec(), &sample, rows));
        }
        let quantizer = *g.quantizer();
        let first = g.len();
        // Every vector a link can name is stored before linking starts (see the module documentation).
        g.store.reserve(vectors.len());
        for (i, v) in vectors.iter().enumerate() {
            debug_assert_eq!(v.len(), g.dim);
            g.store.push(v, &quantizer);
            let level = level_of(first + i, g.params.m);
            g.links.push_node(level);
            self.locks.push(Mutex::new(()));
        }
        let mut next = first;
        let entry = self.entry.get_mut().unwrap_or_else(|p| p.into_inner());
        if entry.is_none() {
            *entry = Some((first as u32, self.graph.links.levels[first]));
            next += 1;
        }
        let this = &*self;
        if this.len() - next >= PARALLEL_FROM && rayon::current_num_threads() > 1 {
            (next..this.len())
                .into_par_iter()
                .for_each(|id| this.link(id));
        } else {
            (next..this.len()).for_each(|id| this.link(id));
        }
        self.reconnect();
    }

    /// Links back every node the bottom level cannot reach from the entry point. When a full neighbour list is
    /// re-selected (`connect`), the node it drops may lose its last incoming link; with parallel insertion
    /// that happens to a few nodes in a few hundred builds, and such a row is then never found by a walk
    /// however wide. Each such node gets an incoming link from the nearest reachable node with a free slot;
    /// failing that, the nearest reachable node gives up its link to the node with the most other incoming
    /// links. A few passes, because a given-up link can strand another node.
    fn reconnect(&self) {
        const PASSES: usize = 4;
        let g = &self.graph;
        let n = g.len();
        let Some((start, top)) = self.entry_point() else {
            return;
        };
        for _ in 0..PASSES {
            let mut reached = self.reachable(start as usize);
            if reached.iter().all(|&r| r) {
                return;
            }
            let mut incoming = vec![0u32; n];
            for id in 0..n {
                for nb in g.links.neighbours(id as u32, 0) {
                    incoming[nb as usize] += 1;
                }
            }
            for orphan in 0..n {
                if reached[orphan] {
                    continue;
                }
                let q = g.store.code(orphan);
                let mut cur = Cand {
                    sim: g.sim(q, start),
                    id: start,
                };
                for l in (1..=top).rev() {
                    cur = g.greedy(q, cur, l);
                }
                let near = g.search_level(q, &[cur], g.params.ef_construction, 0, None);
                let linked = near.iter().any(|c| self.append_link(c.id, orphan as u32))
                    || near
                        .first()
                        .is_some_and(|c| self.replace_link(c.id, orphan as u32, &mut incoming));
                if linked {
                    incoming[orphan] += 1;
                    reached[orphan] = true;
                }
            }
        }
    }

    /// Which nodes a walk of the bottom level from `start` can reach.
    pub(super) fn reachable(&self, start: usize) -> Vec<bool> {
        let g = &self.graph;
        let mut reached = vec![false; g.len()];
        let mut stack = vec![start];
        reached[start] = true;
        while let Some(id) = stack.pop() {
            for nb in g.links.neighbours(id as u32, 0) {
                if !std::mem::replace(&mut reached[nb as usize], true) {
                    stack.push(nb as usize);
                }
            }
        }
        reached
    }

    /// Adds `to` to `node`'s bottom-level links if a slot is free.
    fn append_link(&self, node: u32, to: u32) -> bool {
        let (count, slots) = self.graph.links.block(node as usize, 0);
        let n = (count.load(Mem::Acquire) as usize).min(slots.len());
        if n == slots.len() {
            return false;
        }
        slots[n].store(to, Mem::Relaxed);
        count.store(n as u32 + 1, Mem::Release);
        true
    }

    /// Points `node`'s bottom-level link to its best-linked neighbour (most incoming links) at `to` instead.
    fn replace_link(&self, node: u32, to: u32, incoming: &mut [u32]) -> bool {
        let (count, slots) = self.graph.links.block(node as usize, 0);
        let n = (count.load(Mem::Acquire) as usize).min(slots.len());
        let Some(slot) = slots[..n]
            .iter()
            .max_by_key(|s| incoming[s.load(Mem::Relaxed) as usize])
        else {
            return false;
        };
        let dropped = slot.swap(to, Mem::Relaxed) as usize;
        incoming[dropped] -= 1;
        true
    }

    /// A search of the graph as it stands (see `Graph::search`), for a writer's own reads.
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        keep: Option<Keep<'_>>,
    ) -> Vec<(usize, f32)> {
        self.graph.search(self.entry_point(), query, k, ef, keep)
    }

    pub fn vector(&self, id: usize) -> Option<&[f32]> {
        self.graph.vector(id)
    }

    /// Writes the graph's files (see `files::graph_files`) into `dir`.
    pub fn dump(&self, dir: &Path, basename: &str) -> Result<(), IndexError> {
        file::dump(&self.graph, self.entry_point(), dir, basename)
    }

    pub(super) fn entry_point(&self) -> Entry {
        *self.entry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Links node `id` (its vector, level and empty link blocks already exist) into the graph.
    fn link(&self, id: usize) {
        let g = &self.graph;
        let q = g.store.code(id);
        let level = g.links.levels[id];
        let (mut start, mut top) = self.entry_point().expect("an entry exists");
        let _raising = if level > top {
            let guard = self.raise.lock().unwrap_or_else(|p| p.into_inner());
            (start, top) = self.entry_point().expect("an entry exists");
            Some(guard)
        } else {
            None
        };
        let mut cur = Cand {
            sim: g.sim(q, start),
            id: start,
        };
        let mut l = top;
        while l > level {
            cur = g.greedy(q, cur, l);
            l -= 1;
        }
        let mut entry = vec![cur];
        for l in (0..=level.min(top)).rev() {
            let found = g.search_level(q, &entry, g.params.ef_construction, l, None);
            let chosen = self.select(&found, g.params.m);
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

    /// HNSW's neighbour heuristic: walk `cands` best first and keep one unless a node already kept is
    /// closer to it than the base node is, so that links spread in different directions.
    fn select(&self, cands: &[Cand], m: usize) -> Vec<Cand> {
        let g = &self.graph;
        let mut kept: Vec<Cand> = Vec::with_capacity(m);
        for &c in cands {
            if kept.len() >= m {
                break;
            }
            let code = g.store.code(c.id as usize);
            if kept.iter().all(|r| g.sim(code, r.id) < c.sim) {
                kept.push(c);
            }
        }
        kept
    }

    fn set_links(&self, id: usize, level: u8, to: &[Cand]) {
        let _guard = self.locks[id].lock().unwrap_or_else(|p| p.into_inner());
        let (count, slots) = self.graph.links.block(id, level);
        for (slot, c) in slots.iter().zip(to) {
            slot.store(c.id, Mem::Relaxed);
        }
        count.store(to.len().min(slots.len()) as u32, Mem::Release);
    }

    /// Adds `new` to `node`'s links at `level`, re-selecting them with the heuristic when full.
    fn connect(&self, node: u32, new: u32, sim: f32, level: u8) {
        let g = &self.graph;
        let _guard = self.locks[node as usize]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let (count, slots) = g.links.block(node as usize, level);
        let n = (count.load(Mem::Acquire) as usize).min(slots.len());
        if slots[..n].iter().any(|s| s.load(Mem::Relaxed) == new) {
            return;
        }
        if n < slots.len() {
            slots[n].store(new, Mem::Relaxed);
            count.store(n as u32 + 1, Mem::Release);
            return;
        }
        let base = g.store.code(node as usize);
        let mut cands: Vec<Cand> = slots[..n]
            .iter()
            .map(|s| {
                let id = s.load(Mem::Relaxed);
                Cand {
                    sim: g.sim(base, id),
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
}

/// The level a node gets: a deterministic function of its id, so rebuilding gives the same graph shape.
fn level_of(id: usize, m: usize) -> u8 {
    let mut z = (id as u64)
        .wrapping_add(0x9E37_79B9_7F4A_7C15)
        .wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let u = ((z >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
    let ml = 1.0 / (m as f64).ln();
    ((-u.ln() * ml).floor() as u64).min(MAX_LEVEL as u64) as u8
}
