//! Every name inside an index directory, so that the writer that makes a file, the garbage collector that
//! removes leftovers and `repair` that recognises segments all agree on it.
//!
//! Committed files carry the generation of the commit that wrote them (`regions-00000012.parquet`,
//! `graph-00000012.links`): the collector tells an interrupted write (a generation after the manifest's) from
//! a superseded one by that number alone. Work in progress starts with a dot and ends in `.part` or `.tmp`,
//! so that nothing a crash leaves behind can pass for a committed file.

use std::path::Path;

/// The commit point (see `Manifest`).
pub const MANIFEST: &str = "manifest.json";
/// The writer lock (see `WriterLock`).
pub const LOCK: &str = "writer.lock";
/// Where `repair` moves damaged files, inside the index directory.
pub const QUARANTINE: &str = "quarantine";

const SEGMENT_PREFIX: &str = "regions-";
const SEGMENT_SUFFIX: &str = ".parquet";
const GRAPH_PREFIX: &str = "graph-";
const LINKS_SUFFIX: &str = ".links";
const VECTORS_SUFFIX: &str = ".vectors";
const TOMBSTONES_PREFIX: &str = "tombstones-";
const TOMBSTONES_SUFFIX: &str = ".bits";
/// Graph dumps of the engine before ours (hnsw_rs): never read, but still recognised so that they are
/// cleaned up and never mistaken for foreign data.
const LEGACY_GRAPH_PREFIX: &str = "hnsw-";
const LEGACY_GRAPH_INFIX: &str = ".hnsw.";
const PART_SUFFIX: &str = ".part";
const STAGING_SUFFIX: &str = ".tmp";

/// The segment a commit of generation `generation` adds.
pub fn segment(generation: u64) -> String {
    format!("{SEGMENT_PREFIX}{generation:08}{SEGMENT_SUFFIX}")
}

/// The basename of the graph dump a commit of generation `generation` writes.
pub fn graph_basename(generation: u64) -> String {
    format!("{GRAPH_PREFIX}{generation:08}")
}

/// The deleted-rows bitset a commit of generation `generation` writes (see `tombstones`).
pub fn tombstones(generation: u64) -> String {
    format!("{TOMBSTONES_PREFIX}{generation:08}{TOMBSTONES_SUFFIX}")
}

/// A tombstones file of any generation.
pub fn is_tombstones(name: &str) -> bool {
    name.starts_with(TOMBSTONES_PREFIX)
        && name.ends_with(TOMBSTONES_SUFFIX)
        && generation_of(name).is_some()
}

/// A graph dump's two files: the links, then the vectors.
pub fn graph_files(basename: &str) -> [String; 2] {
    [graph_links(basename), graph_vectors(basename)]
}

pub fn graph_links(basename: &str) -> String {
    format!("{basename}{LINKS_SUFFIX}")
}

pub fn graph_vectors(basename: &str) -> String {
    format!("{basename}{VECTORS_SUFFIX}")
}

/// Where a file is written before it is renamed into place under `name`.
pub fn partial(name: &str) -> String {
    format!(".{name}{PART_SUFFIX}")
}

/// The folder a graph dump is written into before its files are renamed into place.
pub fn staging(basename: &str) -> String {
    format!(".{basename}{STAGING_SUFFIX}")
}

/// Whether `name` is work in progress (see [`partial`], [`staging`]).
pub fn is_unfinished(name: &str) -> bool {
    name.starts_with('.') && (name.ends_with(PART_SUFFIX) || name.ends_with(STAGING_SUFFIX))
}

/// The generation number in a segment or graph file name (`regions-00000012.parquet` → 12).
pub fn generation_of(name: &str) -> Option<u64> {
    let rest = name
        .strip_prefix(SEGMENT_PREFIX)
        .or_else(|| name.strip_prefix(LEGACY_GRAPH_PREFIX))
        .or_else(|| name.strip_prefix(GRAPH_PREFIX))
        .or_else(|| name.strip_prefix(TOMBSTONES_PREFIX))?;
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

pub fn is_segment(name: &str) -> bool {
    name.starts_with(SEGMENT_PREFIX)
        && name.ends_with(SEGMENT_SUFFIX)
        && generation_of(name).is_some()
}

/// A graph dump's file (`graph-00000012.links`, `graph-00000012.vectors`).
pub fn is_graph(name: &str) -> bool {
    name.starts_with(GRAPH_PREFIX)
        && (name.ends_with(LINKS_SUFFIX) || name.ends_with(VECTORS_SUFFIX))
        && generation_of(name).is_some()
}

/// Anything a graph dump of any engine left, by its prefix alone (staging folders of our engine included).
pub fn is_any_graph_dump(name: &str) -> bool {
    name.starts_with(LEGACY_GRAPH_PREFIX) || name.starts_with(GRAPH_PREFIX)
}

fn is_legacy_graph(name: &str) -> bool {
    name.starts_with(LEGACY_GRAPH_PREFIX) && name.contains(LEGACY_GRAPH_INFIX)
}

/// Whether `dir` holds committed-looking index files (segments or graph dumps).
pub fn holds_index_files(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten().any(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                is_segment(&name) || is_legacy_graph(&name) || is_graph(&name)
            })
        })
        .unwrap_or(false)
}

/// Writes a file so that it is either absent or complete, also after a power cut: a temporary file beside
/// it (named per process, so that two processes writing the same file never share one), fsync, rename, and
/// fsync of the folder so that the rename itself is durable. Errors name the file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_and_rename(path, bytes)
        .map_err(|e| std::io::Error::new(e.kind(), format!("writing {}: {e}", path.display())))
}

/// As [`write_atomic`], with the error as the system gave it (for callers that name the file themselves).
pub(crate) fn write_and_rename(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("out");
    let tmp = dir.join(partial(&format!("{name}.{}", std::process::id())));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    match std::fs::File::open(dir)?.sync_all() {
        // Some filesystems (network and FUSE mounts) cannot sync a folder: the file itself is synced.
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::InvalidInput | std::io::ErrorKind::Unsupported
            ) =>
        {
            Ok(())
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_ones_existing_indexes_hold() {
        assert_eq!(segment(12), "regions-00000012.parquet");
        assert_eq!(graph_basename(7), "graph-00000007");
        assert_eq!(
            graph_files("graph-00000007"),
            ["graph-00000007.links", "graph-00000007.vectors"]
        );
        assert_eq!(
            partial("regions-00000012.parquet"),
            ".regions-00000012.parquet.part"
        );
        assert_eq!(staging("graph-00000007"), ".graph-00000007.tmp");
        assert!(is_unfinished(".manifest.json.part") && is_unfinished(".graph-00000007.tmp"));
        assert!(!is_unfinished("manifest.json"));
        assert_eq!(generation_of("regions-00000012.parquet"), Some(12));
        assert_eq!(generation_of("hnsw-00000003.hnsw.graph"), Some(3));
        assert_eq!(generation_of("graph-00000004.links"), Some(4));
        assert!(is_segment("regions-00000012.parquet") && !is_segment("regions-x.parquet"));
        assert!(is_graph("graph-00000004.vectors") && !is_graph("graph-00000004.tmp"));
        assert!(is_legacy_graph("hnsw-00000003.hnsw.data"));
        assert_eq!(tombstones(9), "tombstones-00000009.bits");
        assert_eq!(generation_of("tombstones-00000009.bits"), Some(9));
        assert!(is_tombstones("tombstones-00000009.bits") && !is_tombstones("tombstones-x.bits"));
    }
}
