//! A graph dump's two files, written and read back.
//!
//! `{basename}.links`: the [`LinksHeader`], each node's level byte (padded to 8 bytes), each node's offset
//! into the upper blocks (u64, [`NO_UPPER`] for level-0 nodes), then the level-0 blocks and the upper blocks
//! as u32 words. `{basename}.vectors`: the [`VectorsHeader`], the f32 rows, then their codes. All numbers
//! little-endian. A dump is read whole into memory (see `LoadedVectors` for why not mapped) and its links
//! checked before any search trusts them.

use std::io::{BufWriter, Write};
use std::path::Path;

use zerocopy::IntoBytes;

use super::header::{LinksFields, LinksHeader, VectorsHeader, HEADER_LEN};
use super::links::{Slot, MAX_LEVEL};
use super::vectors::LoadedVectors;
use super::walk::{Entry, Graph};
use crate::engine::HnswParams;
use crate::files;
use crate::kernels::{Codec, Quantizer};
use crate::IndexError;

/// Graphs with more links per node than this are not ours: a damaged header, refused before it sizes
/// anything.
const MAX_M: usize = 1024;

pub(super) fn pad8(n: usize) -> usize {
    n.div_ceil(8) * 8
}

/// Writes `graph`'s two files into `dir`, each synced.
pub(super) fn dump<S: Slot>(
    graph: &Graph<S>,
    entry: Entry,
    dir: &Path,
    basename: &str,
) -> Result<(), IndexError> {
    write_files(graph, entry, dir, basename)
        .map_err(|e| IndexError::Engine(format!("writing the graph to {}: {e}", dir.display())))
}

fn write_files<S: Slot>(
    graph: &Graph<S>,
    entry: Entry,
    dir: &Path,
    basename: &str,
) -> std::io::Result<()> {
    let n = graph.len();
    let codec = graph.codec();
    // An empty graph has fitted no quantizer; its header still records a valid one.
    let q = graph.quantizer.unwrap_or(Quantizer::fit(codec, &[], 0));
    let links = &graph.links;
    let (entry, top_level) = entry.unwrap_or((u32::MAX, 0));
    let header = LinksHeader::new(LinksFields {
        dim: graph.dim as u64,
        m: graph.params.m as u64,
        ef_construction: graph.params.ef_construction as u64,
        nodes: n as u64,
        upper_words: links.upper.len() as u64,
        entry,
        top_level,
        codec: codec.id(),
        scale: q.scale,
    });

    let path = dir.join(files::graph_links(basename));
    let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(&path)?);
    w.write_all(header.as_bytes())?;
    w.write_all(&links.levels)?;
    w.write_all(&vec![0u8; pad8(n) - n])?;
    for x in &links.upper_at {
        w.write_all(&x.to_le_bytes())?;
    }
    for x in links.level0.iter().chain(&links.upper) {
        w.write_all(&x.id().to_le_bytes())?;
    }
    w.into_inner().map_err(|e| e.into_error())?.sync_all()?;

    let header = VectorsHeader::new(graph.dim as u64, n as u64, codec.id());
    let path = dir.join(files::graph_vectors(basename));
    let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(&path)?);
    w.write_all(header.as_bytes())?;
    for id in 0..n {
        for x in graph.store.vector(id) {
            w.write_all(&x.to_le_bytes())?;
        }
    }
    for id in 0..n {
        w.write_all(graph.store.code(id))?;
    }
    w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(())
}

/// Reads a dump written by [`dump`], refusing one whose header, size or links do not hold together. `rows`
/// is what the manifest says the graph holds.
pub(super) fn load(
    dir: &Path,
    basename: &str,
    rows: usize,
) -> Result<(Graph<u32>, Entry), IndexError> {
    let path = dir.join(files::graph_links(basename));
    let bytes = std::fs::read(&path).map_err(IndexError::io(&path))?;
    let bad = |what: &str| IndexError::corrupt(&path, what);
    let header =
        LinksHeader::read(&bytes).ok_or_else(|| bad("not a regionseek graph (bad header)"))?;
    let (dim, m, ef_c, n, upper_len) = (
        header.dim as usize,
        header.m as usize,
        header.ef_construction as usize,
        header.nodes as usize,
        header.upper_words as usize,
    );
    let (entry, top) = (header.entry, header.top_level);
    let codec = Codec::from_id(header.codec).ok_or_else(|| bad("unknown vector codec"))?;
    if n != rows {
        return Err(bad(&format!("holds {n} vectors, the manifest says {rows}")));
    }
    // Sizes derived from a damaged header must not overflow: the vectors file's size is computed up front.
    let vectors_size = dim
        .checked_mul(4 + codec.bytes_per_dim())
        .and_then(|row| row.checked_mul(n)?.checked_add(HEADER_LEN));
    if dim == 0 || m < 2 || m > MAX_M || top > MAX_LEVEL || vectors_size.is_none() {
        return Err(bad("implausible parameters"));
    }
    let params = HnswParams {
        m,
        ef_construction: ef_c,
        codec,
    };
    let mut g = Graph::<u32>::new(dim, params);
    let w0 = g.links.level0_width();
    let expect = n
        .checked_next_multiple_of(8)
        .and_then(|levels| HEADER_LEN.checked_add(levels))
        .and_then(|x| x.checked_add(n.checked_mul(8)?))
        .and_then(|x| x.checked_add(n.checked_mul(w0)?.checked_add(upper_len)?.checked_mul(4)?));
    if expect != Some(bytes.len()) {
        return Err(bad("its size does not match its header"));
    }
    let mut at = HEADER_LEN;
    g.links.levels = bytes[at..at + n].to_vec();
    at += pad8(n);
    g.links.upper_at = bytes[at..at + 8 * n]
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect();
    at += 8 * n;
    let words = |from: usize, count: usize| -> Vec<u32> {
        bytes[from..from + 4 * count]
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect()
    };
    g.links.level0 = words(at, n * w0);
    at += 4 * n * w0;
    g.links.upper = words(at, upper_len);
    drop(bytes);
    g.links.check().map_err(bad)?;
    let entry = if n > 0 {
        if entry as usize >= n || g.links.levels[entry as usize] != top {
            return Err(bad("a bad entry node"));
        }
        Some((entry, top))
    } else {
        None
    };
    g.quantizer = Some(Quantizer {
        codec,
        scale: header.scale,
    });

    let path = dir.join(files::graph_vectors(basename));
    let vectors = LoadedVectors::read(&path)?;
    let file = vectors.bytes();
    if Some(file.len()) != vectors_size
        || !VectorsHeader::matches(file, dim as u64, n as u64, codec.id())
    {
        return Err(IndexError::corrupt(&path, "does not match its graph"));
    }
    g.store.attach(vectors, n);
    Ok((g, entry))
}
