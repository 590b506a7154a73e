//! The graph as readers hold it: plain links, no locks, searched from any number of threads at once.

use std::path::Path;
use std::sync::atomic::AtomicU32;

use super::builder::GraphBuilder;
use super::file;
use super::walk::{Entry, Graph};
use crate::engine::Keep;
use crate::IndexError;

pub(crate) struct FrozenGraph {
    graph: Graph<u32>,
    entry: Entry,
}

impl FrozenGraph {
    pub(super) fn from_parts(graph: Graph<u32>, entry: Entry) -> Self {
        Self { graph, entry }
    }

    /// Opens a graph written by [`Self::dump`] or `GraphBuilder::dump`: links and vectors are read into
    /// memory and every link is checked. `rows` is what the manifest says the graph holds.
    pub fn load(dir: &Path, basename: &str, rows: usize) -> Result<Self, IndexError> {
        let (graph, entry) = file::load(dir, basename, rows)?;
        Ok(Self::from_parts(graph, entry))
    }

    /// The same graph, open to inserts.
    pub fn thaw(self) -> GraphBuilder {
        GraphBuilder::from_parts(self.graph.map_links(AtomicU32::new), self.entry)
    }

    pub fn len(&self) -> usize {
        self.graph.len()
    }

    /// The `k` nearest rows to `query` (unit length) with their cosine similarity, best first; `keep`
    /// restricts the rows considered.
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        keep: Option<Keep<'_>>,
    ) -> Vec<(usize, f32)> {
        self.graph.search(self.entry, query, k, ef, keep)
    }

    /// A row's stored vector.
    pub fn vector(&self, id: usize) -> Option<&[f32]> {
        self.graph.vector(id)
    }

    /// Writes the graph's files (see `files::graph_files`) into `dir`.
    pub fn dump(&self, dir: &Path, basename: &str) -> Result<(), IndexError> {
        file::dump(&self.graph, self.entry, dir, basename)
    }

    /// See `Graph::graph_bytes_per_vector`.
    #[cfg(any(test, feature = "bench"))]
    pub fn graph_bytes_per_vector(&self) -> f64 {
        self.graph.graph_bytes_per_vector()
    }
}
