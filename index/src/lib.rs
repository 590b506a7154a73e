//! Region store and vector index. Filled by the index issue.
