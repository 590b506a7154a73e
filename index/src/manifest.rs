use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::engine::HnswParams;
use crate::files::{self, MANIFEST};
use crate::IndexError;

pub const FORMAT: &str = "regionseek-index/1";
/// The format of a manifest that names a tombstones file. A build that only reads `FORMAT` would ignore
/// the field and bring deleted rows back (or drop the field in its next commit), so it must refuse such an
/// index instead; an index without deletions keeps `FORMAT` and opens in every build.
pub const FORMAT_DELETIONS: &str = "regionseek-index/2";

/// The commit point of an index directory: only files it names are part of the index, each with its size
/// and CRC-32, so a crash leaves either the previous or the new complete state and corruption is detected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub dim: usize,
    pub model_id: String,
    pub weights_hash: String,
    pub metric: String,
    pub rows: u64,
    pub generation: u64,
    pub segments: Vec<FileEntry>,
    pub graph: Option<GraphEntry>,
    pub hnsw: HnswParams,
    /// Which rows are deleted (absent: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tombstones: Option<TombstonesEntry>,
    /// Segments the last compaction replaced: removed right after its commit, and by the next writer's
    /// collector if a crash came first. Only names listed here are ever removed for being superseded, so that
    /// a segment copied in by hand is never mistaken for one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retired: Vec<String>,
}

/// The deleted-rows bitset of the first `covers` rows (rows after it were appended since, and are live).
/// `file.rows` is how many rows it marks deleted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TombstonesEntry {
    pub covers: u64,
    pub file: FileEntry,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    pub file: String,
    pub rows: u64,
    pub bytes: u64,
    pub crc32: u32,
}

/// A dump of the HNSW graph covering the first `rows` rows; rows after it are inserted again on open.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphEntry {
    /// Which engine wrote it. Manifests from before the field name hnsw_rs' dumps, which are no longer read:
    /// such a graph is rebuilt from the table's embeddings instead.
    #[serde(default = "legacy_engine")]
    pub engine: String,
    pub basename: String,
    pub rows: u64,
    /// The links.
    pub graph: FileEntry,
    /// The vectors.
    pub data: FileEntry,
}

/// What graph entries written before `GraphEntry::engine` existed hold.
pub const LEGACY_ENGINE: &str = "hnsw_rs";

fn legacy_engine() -> String {
    LEGACY_ENGINE.into()
}

impl Manifest {
    /// Refuses embeddings of another width or another model's space than the index at `dir` holds.
    pub fn check_space(
        &self,
        dir: &Path,
        dim: usize,
        model_id: &str,
        weights_hash: &str,
    ) -> Result<(), IndexError> {
        if dim != self.dim {
            return Err(IndexError::Mismatch(format!(
                "the index at {} holds {}-d embeddings, these are {dim}-d",
                dir.display(),
                self.dim
            )));
        }
        if model_id != self.model_id || weights_hash != self.weights_hash {
            return Err(IndexError::Mismatch(format!(
                "the index at {} was built with model {} (weights {}), not {model_id} (weights {weights_hash}); \
                 embeddings of different models are not comparable",
                dir.display(),
                self.model_id,
                short(&self.weights_hash),
                weights_hash = short(weights_hash),
            )));
        }
        Ok(())
    }

    /// The format this content needs (see [`FORMAT_DELETIONS`]).
    pub fn format_for(&self) -> &'static str {
        if self.tombstones.is_some() {
            FORMAT_DELETIONS
        } else {
            FORMAT
        }
    }

    pub fn read(dir: &Path) -> Result<Self, IndexError> {
        let path = dir.join(MANIFEST);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(if files::holds_index_files(dir) {
                    IndexError::Orphaned(dir.to_path_buf())
                } else {
                    IndexError::NotFound(dir.to_path_buf())
                });
            }
            Err(e) => return Err(IndexError::io(&path)(e)),
        };
        let m: Manifest =
            serde_json::from_slice(&bytes).map_err(|e| IndexError::corrupt(&path, e))?;
        if m.format != FORMAT && m.format != FORMAT_DELETIONS {
            return Err(IndexError::corrupt(
                &path,
                format!(
                    "format {:?}, this build reads {FORMAT:?} and {FORMAT_DELETIONS:?}",
                    m.format
                ),
            ));
        }
        if let Some(t) = &m.tombstones {
            if t.covers > m.rows || t.file.rows > t.covers {
                return Err(IndexError::corrupt(
                    &path,
                    format!(
                        "its tombstones cover {} rows ({} deleted) of {}",
                        t.covers, t.file.rows, m.rows
                    ),
                ));
            }
        }
        let listed: u64 = m.segments.iter().map(|s| s.rows).sum();
        if listed != m.rows {
            return Err(IndexError::corrupt(
                &path,
                format!(
                    "segments hold {listed} rows but the manifest says {}",
                    m.rows
                ),
            ));
        }
        Ok(m)
    }

    /// Atomic replace: temp file, fsync, rename, fsync the directory.
    /// The format is chosen here from the content (see [`FORMAT_DELETIONS`]), whatever `format` says.
    pub fn write(&self, dir: &Path) -> Result<(), IndexError> {
        let mut out = self.clone();
        out.format = self.format_for().into();
        let bytes = serde_json::to_vec_pretty(&out).expect("manifest serialises");
        write_atomic(&dir.join(MANIFEST), &bytes)
    }
}

pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), IndexError> {
    files::write_and_rename(path, bytes).map_err(IndexError::io(path))
}

pub fn sync_dir(dir: &Path) -> Result<(), IndexError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(IndexError::io(dir))
}

/// Size and CRC-32 of a file, streamed.
pub fn checksum(path: &Path) -> Result<(u64, u32), IndexError> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(IndexError::io(path))?;
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(IndexError::io(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((total, hasher.finalize()))
}

/// Fails with a message naming the file when it is missing, truncated or altered.
/// The cheap half of [`verify`]: the file is there with the size the manifest recorded. For the graph's
/// vectors at open time: they are read whole then, but a CRC over gigabytes would still double the open's CPU
/// time (`regionseek verify` checks it in full; damage there can only skew scores, never memory safety).
pub fn verify_size(dir: &Path, entry: &FileEntry) -> Result<(), IndexError> {
    let path = dir.join(&entry.file);
    let bytes = match std::fs::metadata(&path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(IndexError::corrupt(
                &path,
                format!("listed in {MANIFEST} but missing"),
            ))
        }
        Err(e) => return Err(IndexError::io(&path)(e)),
    };
    if bytes != entry.bytes {
        return Err(IndexError::corrupt(
            &path,
            format!(
                "{bytes} bytes, the manifest recorded {} (truncated or replaced)",
                entry.bytes
            ),
        ));
    }
    Ok(())
}

pub fn verify(dir: &Path, entry: &FileEntry) -> Result<(), IndexError> {
    verify_size(dir, entry)?;
    let path = dir.join(&entry.file);
    let (bytes, crc) = checksum(&path)?;
    if bytes != entry.bytes {
        return Err(IndexError::corrupt(
            &path,
            "changed while it was being read",
        ));
    }
    if crc != entry.crc32 {
        return Err(IndexError::corrupt(
            &path,
            "checksum differs from the manifest's",
        ));
    }
    Ok(())
}

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}
