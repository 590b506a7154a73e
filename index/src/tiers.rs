//! One live row per region. A region (photo content, where it came from, region id) can be embedded by several
//! methods — the
//! library pipeline commits a quick embedding first and MaskInversion's later — and a search must return the
//! region once, with the best embedding there is. Superseded rows stay in the table (an append-only store);
//! searches without a method filter pass them over, a method filter still reaches every row of that method.

use std::collections::HashMap;

use crate::record::RegionMeta;
use crate::tombstones::Tombstones;

/// The method whose rows outrank every other method's for the same region.
pub const REFINED_METHOD: &str = "maskinversion";

/// How good a method's embedding of a region is, for choosing the live row: MaskInversion above every
/// baseline; between equals the later row wins.
pub fn tier_rank(method: &str) -> u8 {
    if method == REFINED_METHOD {
        2
    } else {
        1
    }
}

/// Which rows are live, kept up to date as rows are appended. Deleted rows are never live and never
/// compete: deleting a region's best row makes its next best row live again, as if the deleted one had
/// never been added.
#[derive(Debug, Default)]
pub(crate) struct Liveness {
    /// (photo content hash, source, region id) → (its live row, that row's rank). The source is part of the
    /// region: ids of different inputs (a boxes file's "0", a mask folder's "0") are different regions.
    best: HashMap<(String, String, String), (usize, u8)>,
    live: Vec<bool>,
    superseded: usize,
}

impl Liveness {
    pub(crate) fn of(rows: &[RegionMeta], deleted: &Tombstones) -> Self {
        let mut l = Self::default();
        for (row, m) in rows.iter().enumerate() {
            if deleted.is_dead(row) {
                l.live.push(false);
            } else {
                l.push(row, m);
            }
        }
        l
    }

    /// Registers the next row.
    pub(crate) fn push(&mut self, row: usize, meta: &RegionMeta) {
        debug_assert_eq!(row, self.live.len(), "rows are registered in order");
        self.live.push(true);
        let rank = tier_rank(&meta.method.name);
        let key = (
            meta.image_hash.clone(),
            meta.source.clone(),
            meta.region_id.clone(),
        );
        match self.best.get_mut(&key) {
            None => {
                self.best.insert(key, (row, rank));
            }
            Some(best) => {
                self.superseded += 1;
                if rank >= best.1 {
                    self.live[best.0] = false;
                    *best = (row, rank);
                } else {
                    self.live[row] = false;
                }
            }
        }
    }

    pub(crate) fn is_live(&self, row: usize) -> bool {
        self.live.get(row).copied().unwrap_or(false)
    }

    /// Rows a better or newer row of the same region replaced (deleted rows not counted).
    pub(crate) fn superseded(&self) -> usize {
        self.superseded
    }
}
