//! What the index asks of its nearest-neighbour search, whichever way it runs: the graph's parameters, the
//! filter a search takes, and the exact scan the graph approximates.

use serde::{Deserialize, Serialize};

use crate::kernels::{dot, Codec};

/// The `k` best of rows `0..rows` by dot product with `q` among the ids `keep` accepts, best first (ties by
/// id): a parallel scan, the exact answer the graph approximates.
pub fn exact_top_k<'a>(
    rows: usize,
    vector: &(dyn Fn(usize) -> &'a [f32] + Sync),
    q: &[f32],
    k: usize,
    keep: &(dyn Fn(usize) -> bool + Sync),
) -> Vec<(usize, f32)> {
    use rayon::prelude::*;
    if k == 0 {
        return Vec::new();
    }
    let order = |a: &(usize, f32), b: &(usize, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    // Each thread keeps its own k best of a contiguous run of rows, so memory stays O(k) per thread.
    let best_of = |range: std::ops::Range<usize>| {
        let mut best: Vec<(usize, f32)> = Vec::with_capacity(2 * k);
        for id in range.filter(|&id| keep(id)) {
            best.push((id, dot(q, vector(id))));
            if best.len() == 2 * k {
                best.select_nth_unstable_by(k - 1, order);
                best.truncate(k);
            }
        }
        best
    };
    let chunk = 4096;
    let mut all: Vec<(usize, f32)> = (0..rows.div_ceil(chunk))
        .into_par_iter()
        .map(|c| best_of(c * chunk..((c + 1) * chunk).min(rows)))
        .reduce(Vec::new, |mut a, b| {
            a.extend(b);
            a
        });
    all.sort_by(order);
    all.truncate(k);
    all
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HnswParams {
    /// Links per node.
    pub m: usize,
    pub ef_construction: usize,
    /// How the graph stores vectors for its own distances (exact f32 vectors re-rank the results).
    /// Manifests from before the field held f32 graphs; those are rebuilt anyway (see `GraphEntry::engine`).
    #[serde(default = "default_codec")]
    pub codec: Codec,
}

fn default_codec() -> Codec {
    DEFAULT_CODEC
}

/// The codec new indexes use (see the README's measurements).
pub const DEFAULT_CODEC: Codec = Codec::I8;

impl Default for HnswParams {
    fn default() -> Self {
        Self {
            m: 16,
            ef_construction: 100,
            codec: DEFAULT_CODEC,
        }
    }
}

/// What a filtered search keeps: the predicate, and how many rows it accepts (the engine picks between
/// walking the graph and scanning the kept rows from it).
#[derive(Clone, Copy)]
pub struct Keep<'a> {
    pub accepts: &'a (dyn Fn(usize) -> bool + Sync),
    pub count: usize,
}
