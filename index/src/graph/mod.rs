//! regionseek's HNSW graph: flat arrays instead of per-node allocations, compressed codes for the distances
//! the graph walks on, exact f32 vectors beside them for the final ranking, and a file layout that reloads by
//! reading the vectors in one pass instead of deserialising them.
//!
//! Two forms of one graph. A [`GraphBuilder`] takes inserts, several threads linking nodes at once with a
//! lock per node; [`GraphBuilder::freeze`] turns it into a [`FrozenGraph`], which only answers searches and
//! holds neither the locks nor atomics; [`FrozenGraph::thaw`] turns it back to take more rows. Both walk
//! the graph with the same code (`walk`), over their own kind of link slot (`links::Slot`).
//!
//! Layout. Node `i`'s level-0 links are `level0[i·(1+2M) ..]`: a count, then up to 2M ids. A node of level
//! L ≥ 1 also owns L blocks of (1+M) in `upper`, starting at `upper_at[i]`. While building, links are
//! atomics, so a search running while another thread rewrites a list reads valid ids (from the old list or
//! the new one) without taking the list's lock; every vector a link can name is written before linking
//! starts.

mod builder;
mod file;
mod frozen;
mod header;
mod links;
mod vectors;
mod walk;

#[cfg(test)]
mod tests;

pub(crate) use builder::GraphBuilder;
pub(crate) use frozen::FrozenGraph;

/// The name `GraphEntry::engine` records for graphs written by this module.
pub const ENGINE_NAME: &str = "regionseek-hnsw/1";
