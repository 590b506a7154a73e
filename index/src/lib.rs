//! Where region embeddings live and are searched: an Arrow/Parquet region table (append-only segments) and
//! an HNSW graph (our own, see `graph`; cosine on L2-normalised vectors) beside it, committed atomically through a
//! manifest. No model code: records arrive as plain data.

// The `regionseek bench-index` command's measurements: they need the graph's internals, which stay private,
// so they live here, compiled only for that command (and for the tests, which share its data generators).
#[cfg(any(test, feature = "bench"))]
#[doc(hidden)]
pub mod bench;
mod engine;
mod error;
mod files;
pub mod graph;
pub mod kernels;
mod lock;
mod manifest;
mod merge;
mod record;
mod region_index;
mod repair;
mod store;
mod tiers;
mod tombstones;

pub use engine::{HnswParams, DEFAULT_CODEC};
pub use error::IndexError;
pub use files::{write_atomic, LOCK as LOCK_FILE};
pub use kernels::Codec;
pub use lock::{LockWait, WriterLock};
pub use manifest::{Manifest, TombstonesEntry};
pub use merge::{find_sources, merge, MergeReport};
pub use record::{haversine_km, Filter, Hit, MethodInfo, PhotoMeta, RegionMeta, RegionRecord};
pub use region_index::{
    AppendReport, CompactReport, DeleteReport, IndexSpec, IndexWriter, RegionIndex, SearchMode,
    SearchRun, DEFAULT_COMPACT_THRESHOLD, DEFAULT_EF, EXACT_BELOW,
};
pub use regionseek_masks::CocoRle;
pub use repair::{repair, verify, FileProblem, RepairReport, VerifyReport};
pub use tiers::{tier_rank, REFINED_METHOD};
