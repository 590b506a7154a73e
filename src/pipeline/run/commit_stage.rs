//! The last stage of a run: batches of rows appended to the index (HNSW inserts, a Parquet segment, the
//! manifest's commit) on their own thread, while the model embeds the next photos.

use std::sync::mpsc::Receiver;

use crate::index::{IndexError, IndexWriter, RegionRecord};

/// What the commits of a run added.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Committed {
    pub added: usize,
    /// Rows the index held already (a photo listed twice in the input).
    pub duplicates: usize,
}

/// Appends every batch it receives until the model stage hangs up; returns the index (for the graph's save
/// and the final count) with the totals. On a failed append it stops at once: the model stage sees its
/// queue closed and stops too, and this error is the run's.
pub(super) fn commit_batches(
    mut index: IndexWriter,
    batches: Receiver<Vec<RegionRecord>>,
) -> Result<(IndexWriter, Committed), IndexError> {
    let mut committed = Committed::default();
    for records in batches {
        let r = index.append(records)?;
        committed.added += r.added;
        committed.duplicates += r.duplicates;
    }
    Ok((index, committed))
}
