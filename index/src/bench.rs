//! Synthetic benchmark of the vector index: clustered unit vectors, build rate, query latency, recall@10
//! against exact search, memory per vector, dump and reload time.

use std::path::Path;
use std::time::Instant;

use crate::kernels::dot;
use serde::Serialize;

use crate::engine::{exact_top_k, HnswParams, Keep};
use crate::files::graph_files;
use crate::graph::{FrozenGraph, GraphBuilder};
use crate::kernels::simd_backend;
use crate::manifest::checksum;
use crate::IndexError;

/// The synthetic corpora `bench-index` measures on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Dataset {
    /// Isotropic clusters in all 512 dimensions: the hard case (near-ties everywhere, no structure to exploit).
    Clustered,
    /// What CLIP region embeddings look like: a shared mean direction (CLIP's embeddings sit in a narrow cone),
    /// most of the variance in a few dozen directions with a decaying spectrum, concepts as clusters inside
    /// that subspace, and a little isotropic noise.
    LowDim,
}

impl Dataset {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "clustered" => Some(Self::Clustered),
            "low-dim" => Some(Self::LowDim),
            _ => None,
        }
    }

    /// `n` unit vectors; base and query sets drawn with different seeds share the same centres and subspace.
    pub fn generate(self, n: usize, dim: usize, clusters: usize, sample_seed: u64) -> Vec<f32> {
        match self {
            Self::Clustered => clustered(n, dim, clusters, 0.6, sample_seed),
            Self::LowDim => low_dim(n, dim, clusters, sample_seed),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct IndexBenchResult {
    pub engine: &'static str,
    /// How the graph stores vectors for its walk (exact f32 vectors re-rank the results).
    pub codec: &'static str,
    /// The SIMD back end the distance kernels dispatched to on this CPU.
    pub simd: &'static str,
    pub dataset: Dataset,
    pub vectors: usize,
    pub dim: usize,
    pub m: usize,
    pub ef_construction: usize,
    pub ef_search: usize,
    /// The share of rows a filter keeps (every 10th or 100th row), for filtered-search rows; None: no filter.
    pub filter_keeps: Option<f64>,
    pub threads: usize,
    pub build_s: f64,
    pub build_per_s: f64,
    pub queries: usize,
    pub query_p50_ms: f64,
    pub query_p99_ms: f64,
    pub recall_at_10: f64,
    /// What searching keeps in memory per vector: its code and its links.
    pub graph_bytes_per_vector: f64,
    /// Resident memory the build added, per vector (the exact f32 vectors included).
    pub rss_bytes_per_vector: Option<f64>,
    pub dump_s: f64,
    /// Opening the dump: links read and checked, vectors read.
    pub reload_s: f64,
    /// The CRC-32 of both files (`regionseek verify`; opening an index checks the links' and the vectors' size).
    pub reload_checksum_s: f64,
    /// Memory of its own (RssAnon) per vector that the reloaded graph holds after answering every query at
    /// the widest beam: the f32 vectors and codes (read into memory, not mapped), the links and the search's
    /// scratch.
    pub reload_anon_bytes_per_vector: Option<f64>,
    /// Exact top-10 by a parallel scan (what `search` runs by default up to 200k candidates).
    pub exact_p50_ms: f64,
    pub exact_p99_ms: f64,
}

/// A tiny deterministic generator (SplitMix64 + Box–Muller) so that runs are comparable across machines.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn normal(&mut self) -> f32 {
        let (u, v) = (self.uniform().max(1e-300), self.uniform());
        ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()) as f32
    }
}

fn unit(mut v: Vec<f32>) -> Vec<f32> {
    let n = dot(&v, &v).sqrt();
    v.iter_mut().for_each(|x| *x /= n);
    v
}

/// `n` unit vectors around `clusters` random centres, like region embeddings of a corpus; `noise` is the
/// norm of the offset relative to the unit centre (0.6: members at cosine ≈ 0.86 to their centre).
pub fn clustered(n: usize, dim: usize, clusters: usize, noise: f32, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    let noise = noise / (dim as f32).sqrt();
    let centres: Vec<Vec<f32>> = (0..clusters)
        .map(|_| unit((0..dim).map(|_| rng.normal()).collect()))
        .collect();
    let mut out = Vec::with_capacity(n * dim);
    for _ in 0..n {
        let c = &centres[(rng.next_u64() % clusters as u64) as usize];
        out.extend(unit(c.iter().map(|x| x + noise * rng.normal()).collect()));
    }
    out
}

/// Low intrinsic dimension: `unit(mean + B·(centre + spread) + noise)` with B a random dim×32 basis whose
/// k-th direction has scale 1/sqrt(1+k) (a decaying spectrum, as PCA of CLIP embeddings shows). The structure
/// (mean, basis, centres) comes from a fixed seed; `sample_seed` only draws the members.
pub fn low_dim(n: usize, dim: usize, clusters: usize, sample_seed: u64) -> Vec<f32> {
    const RANK: usize = 32;
    let mut rng = Rng::new(0x5EED_C11B);
    let mean = unit((0..dim).map(|_| rng.normal()).collect());
    let basis: Vec<Vec<f32>> = (0..RANK)
        .map(|k| {
            let scale = 1.0 / (1.0 + k as f32).sqrt();
            unit((0..dim).map(|_| rng.normal()).collect())
                .into_iter()
                .map(|x| x * scale)
                .collect()
        })
        .collect();
    let centres: Vec<Vec<f32>> = (0..clusters)
        .map(|_| (0..RANK).map(|_| rng.normal()).collect())
        .collect();
    let mut rng = Rng::new(sample_seed);
    let isotropic = 1.0 / (dim as f32).sqrt();
    let mut out = Vec::with_capacity(n * dim);
    for _ in 0..n {
        let c = &centres[(rng.next_u64() % clusters as u64) as usize];
        let z: Vec<f32> = c.iter().map(|x| x + rng.normal()).collect();
        let mut v: Vec<f32> = mean
            .iter()
            .map(|m| 2.0 * m + isotropic * rng.normal())
            .collect();
        for (b, zk) in basis.iter().zip(&z) {
            for (vi, bi) in v.iter_mut().zip(b) {
                *vi += zk * bi;
            }
        }
        out.extend(unit(v));
    }
    out
}

/// A C-order float32 or int64 array in NumPy's `.npy` format (version 1.0), written whole then renamed.
pub fn write_npy(path: &Path, shape: &[usize], data: NpyData<'_>) -> Result<(), IndexError> {
    let (descr, bytes): (&str, Vec<u8>) = match data {
        NpyData::F32(v) => ("<f4", v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        NpyData::I64(v) => ("<i8", v.iter().flat_map(|x| x.to_le_bytes()).collect()),
    };
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_text = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_text}, }}");
    // Magic (6) + version (2) + header length (2) + header, padded with spaces to a multiple of 64, then '\n'.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + bytes.len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&bytes);
    let tmp = path.with_extension("npy.part");
    std::fs::write(&tmp, &out).map_err(IndexError::io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(IndexError::io(path))
}

pub enum NpyData<'a> {
    F32(&'a [f32]),
    I64(&'a [i64]),
}

fn rss_bytes() -> Option<u64> {
    status_bytes("VmRSS:")
}

/// A memory figure of this process from /proc/self/status (`VmRSS:`, `RssAnon:`, `RssFile:`).
fn status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// What one `run` measures on.
pub struct BenchSetup<'a> {
    pub dataset: Dataset,
    pub vectors: usize,
    pub dim: usize,
    pub params: HnswParams,
    pub efs: &'a [usize],
    pub queries: usize,
    pub scratch: &'a Path,
    /// Write `base.npy`, `queries.npy`, `truth.npy` (exact top-10 row ids, best first) and `setup.json` here,
    /// for `bench/ann_side_by_side.py` to measure other libraries on the very same vectors.
    pub export: Option<&'a Path>,
}

/// Builds once, then measures search at every beam width in `efs` (one result each).
pub fn run(setup: &BenchSetup<'_>) -> Result<Vec<IndexBenchResult>, IndexError> {
    let (n, dim, params, efs, queries, scratch) = (
        setup.vectors,
        setup.dim,
        setup.params,
        setup.efs,
        setup.queries,
        setup.scratch,
    );
    let clusters = (n / 100).clamp(10, 10_000);
    let data = setup.dataset.generate(n, dim, clusters, 7);
    let qs = setup.dataset.generate(queries, dim, clusters, 7 ^ 0xABCD);
    let rss0 = rss_bytes();
    let mut builder = GraphBuilder::new(dim, params);
    let t = Instant::now();
    // Batches as an index receives them from a long run (the pipeline commits every few thousand regions).
    for slab in data.chunks(dim * 10_000) {
        let rows: Vec<&[f32]> = slab.chunks_exact(dim).collect();
        builder.insert(&rows);
    }
    let build_s = t.elapsed().as_secs_f64();
    let engine = builder.freeze();
    let rss1 = rss_bytes();
    let graph_bytes_per_vector = engine.graph_bytes_per_vector();
    let row = |i: usize| &data[i * dim..(i + 1) * dim];

    // Ground truth by brute force over the same vectors, once.
    let ranked: Vec<Vec<usize>> = qs
        .chunks_exact(dim)
        .map(|q| {
            exact_top_k(n, &row, q, 10, &|_| true)
                .into_iter()
                .map(|x| x.0)
                .collect()
        })
        .collect();
    let truths: Vec<std::collections::HashSet<usize>> =
        ranked.iter().map(|r| r.iter().copied().collect()).collect();
    if let Some(dir) = setup.export {
        std::fs::create_dir_all(dir).map_err(IndexError::io(dir))?;
        write_npy(&dir.join("base.npy"), &[n, dim], NpyData::F32(&data))?;
        write_npy(&dir.join("queries.npy"), &[queries, dim], NpyData::F32(&qs))?;
        let flat: Vec<i64> = ranked.iter().flatten().map(|&i| i as i64).collect();
        write_npy(&dir.join("truth.npy"), &[queries, 10], NpyData::I64(&flat))?;
        let about = serde_json::json!({
            "dataset": setup.dataset,
            "vectors": n,
            "dim": dim,
            "queries": queries,
            "m": params.m,
            "ef_construction": params.ef_construction,
            "ef": efs,
            "metric": "inner product of unit vectors (cosine)",
        });
        std::fs::write(dir.join("setup.json"), about.to_string()).map_err(IndexError::io(dir))?;
    }
    let mut per_ef = Vec::new();
    let measure = |engine: &FrozenGraph,
                   ef: usize,
                   keep: Option<Keep<'_>>,
                   truths: &[std::collections::HashSet<usize>]| {
        let mut latencies = Vec::with_capacity(queries);
        let mut hits = 0usize;
        for (q, truth) in qs.chunks_exact(dim).zip(truths) {
            let t = Instant::now();
            let found = engine.search(q, 10, ef, keep);
            latencies.push(t.elapsed().as_secs_f64() * 1e3);
            hits += found.iter().filter(|(id, _)| truth.contains(id)).count();
        }
        latencies.sort_by(f64::total_cmp);
        let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
        let wanted: usize = truths.iter().map(|t| t.len()).sum();
        (pct(0.5), pct(0.99), hits as f64 / wanted.max(1) as f64)
    };
    for &ef in efs {
        let (p50, p99, recall) = measure(&engine, ef, None, &truths);
        per_ef.push((ef, None, p50, p99, recall));
    }
    // Filters as users set them (a label, a method, a photo) keep a share of the rows; the search must still
    // find the best kept ones.
    for stride in [10usize, 100] {
        let accepts = move |id: usize| id % stride == 0;
        let keep = Keep {
            accepts: &accepts,
            count: n.div_ceil(stride),
        };
        let filtered_truths: Vec<std::collections::HashSet<usize>> = qs
            .chunks_exact(dim)
            .map(|q| {
                exact_top_k(n, &row, q, 10, &accepts)
                    .into_iter()
                    .map(|x| x.0)
                    .collect()
            })
            .collect();
        for &ef in efs {
            let (p50, p99, recall) = measure(&engine, ef, Some(keep), &filtered_truths);
            per_ef.push((ef, Some(1.0 / stride as f64), p50, p99, recall));
        }
    }

    // What `search` does by default up to EXACT_BELOW rows: a parallel scan of the stored vectors.
    let mut exact_ms = Vec::with_capacity(queries);
    for q in qs.chunks_exact(dim) {
        let t = Instant::now();
        let found = exact_top_k(n, &|i| engine.vector(i).unwrap_or(&[]), q, 10, &|_| true);
        exact_ms.push(t.elapsed().as_secs_f64() * 1e3);
        std::hint::black_box(found);
    }
    exact_ms.sort_by(f64::total_cmp);
    let exact_p50_ms = exact_ms[exact_ms.len() / 2];
    let exact_p99_ms = exact_ms[((exact_ms.len() - 1) as f64 * 0.99).round() as usize];

    std::fs::create_dir_all(scratch).map_err(IndexError::io(scratch))?;
    let t = Instant::now();
    engine.dump(scratch, "bench")?;
    let dump_s = t.elapsed().as_secs_f64();
    let probe: Vec<Vec<(usize, f32)>> = qs
        .chunks_exact(dim)
        .take(20)
        .map(|q| engine.search(q, 10, efs[0], None))
        .collect();
    drop(engine);
    let t = Instant::now();
    for file in graph_files("bench") {
        checksum(&scratch.join(file))?;
    }
    let reload_checksum_s = t.elapsed().as_secs_f64();
    let anon_before = status_bytes("RssAnon:");
    let t = Instant::now();
    let reloaded = FrozenGraph::load(scratch, "bench", n)?;
    let reload_s = t.elapsed().as_secs_f64();
    // The reloaded graph must be the same graph.
    for (q, before) in qs.chunks_exact(dim).zip(&probe) {
        if &reloaded.search(q, 10, efs[0], None) != before {
            return Err(IndexError::Engine(
                "the reloaded graph answers differently from the one dumped".into(),
            ));
        }
    }
    // What a reloaded graph holds in memory once it has served every query at the widest beam: the links,
    // the pages of codes the walks touched and the exact vectors the re-ranking read.
    let widest = efs.iter().copied().max().unwrap_or(64);
    for q in qs.chunks_exact(dim) {
        std::hint::black_box(reloaded.search(q, 10, widest, None));
    }
    let per_vector = |before: Option<u64>, field: &str| {
        before
            .zip(status_bytes(field))
            .map(|(a, b)| b.saturating_sub(a) as f64 / n as f64)
    };
    let reload_anon_bytes_per_vector = per_vector(anon_before, "RssAnon:");
    drop(reloaded);
    for file in graph_files("bench") {
        let _ = std::fs::remove_file(scratch.join(file));
    }
    Ok(per_ef
        .into_iter()
        .map(|(ef, filter_keeps, p50, p99, recall)| IndexBenchResult {
            engine: "regionseek",
            codec: params.codec.name(),
            simd: simd_backend(),
            dataset: setup.dataset,
            vectors: n,
            dim,
            m: params.m,
            ef_construction: params.ef_construction,
            ef_search: ef,
            filter_keeps,
            threads: rayon::current_num_threads(),
            build_s,
            build_per_s: n as f64 / build_s,
            queries,
            query_p50_ms: p50,
            query_p99_ms: p99,
            recall_at_10: recall,
            graph_bytes_per_vector,
            rss_bytes_per_vector: rss0
                .zip(rss1)
                .map(|(a, b)| b.saturating_sub(a) as f64 / n as f64),
            dump_s,
            reload_s,
            reload_checksum_s,
            reload_anon_bytes_per_vector,
            exact_p50_ms,
            exact_p99_ms,
        })
        .collect())
}

/// What [`run_compaction`] measures on.
pub struct CompactionSetup<'a> {
    pub dataset: Dataset,
    pub vectors: usize,
    pub dim: usize,
    pub params: HnswParams,
    /// The share of rows deleted before compacting.
    pub delete_fraction: f64,
    /// The HNSW beam searches use before and after.
    pub ef: usize,
    pub queries: usize,
    /// The index is built in a folder under it, removed at the end.
    pub scratch: &'a Path,
}

/// Search figures at one moment: HNSW at the setup's beam and an exact scan, recall@10 against the exact
/// top 10 of the rows not deleted.
#[derive(Debug, Clone, Serialize)]
pub struct SearchFigures {
    pub hnsw_p50_ms: f64,
    pub hnsw_p99_ms: f64,
    pub hnsw_recall_at_10: f64,
    pub exact_p50_ms: f64,
    pub exact_p99_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CompactionBenchResult {
    pub dataset: Dataset,
    pub vectors: usize,
    pub dim: usize,
    pub m: usize,
    pub ef_construction: usize,
    pub ef_search: usize,
    pub threads: usize,
    pub deleted: usize,
    /// Building the index through `IndexWriter` (segments written, graph dumped).
    pub build_s: f64,
    /// Committing the deletions (the tombstones file and the manifest).
    pub delete_s: f64,
    pub compact_s: f64,
    /// Resident memory when the compaction started, and its peak (VmHWM, reset just before) during it.
    pub rss_before_compact_bytes: Option<u64>,
    pub peak_rss_compact_bytes: Option<u64>,
    pub segments_before: usize,
    pub segments_after: usize,
    /// Searches with the deleted rows still in the table and graph (skipped), then after compaction.
    pub before: SearchFigures,
    pub after: SearchFigures,
}

fn bench_record(i: usize, embedding: &[f32]) -> crate::RegionRecord {
    crate::RegionRecord {
        meta: crate::RegionMeta {
            image: format!("bench/img{}.jpg", i / 8),
            image_hash: format!("{:016x}", i / 8),
            region_id: format!("{}", i % 8),
            bbox: [0.0, 0.0, 10.0, 10.0],
            mask: regionseek_masks::CocoRle {
                size: [4, 5],
                counts: "5:e2".into(),
            },
            source: "bench".into(),
            method: crate::MethodInfo {
                name: "bench".into(),
                steps: None,
                lr: None,
                alpha: None,
                resolution: None,
                model_id: "bench".into(),
                weights_hash: "bench".into(),
            },
            label: None,
            created_at_ms: 0,
            exif_rotated: false,
            photo: Default::default(),
        },
        embedding: embedding.to_vec(),
    }
}

/// Clears the kernel's peak-RSS mark (VmHWM) so that the next reading is the peak from now on.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted
        .get(((sorted.len().max(1) - 1) as f64 * p).round() as usize)
        .copied()
        .unwrap_or(f64::NAN)
}

/// Searches every query; `original` maps a row id of `index` to the row of the generated data it holds.
fn search_figures(
    index: &crate::RegionIndex,
    qs: &[f32],
    dim: usize,
    ef: usize,
    truths: &[std::collections::HashSet<usize>],
    original: &dyn Fn(usize) -> usize,
) -> Result<SearchFigures, IndexError> {
    let filter = crate::Filter::default();
    let (mut hnsw, mut exact, mut found) = (Vec::new(), Vec::new(), 0usize);
    for (q, truth) in qs.chunks_exact(dim).zip(truths) {
        let t = Instant::now();
        let hits = index.search(q, 10, &filter, crate::SearchMode::Approximate { ef })?;
        hnsw.push(t.elapsed().as_secs_f64() * 1e3);
        found += hits
            .iter()
            .filter(|h| truth.contains(&original(h.row as usize)))
            .count();
        let t = Instant::now();
        std::hint::black_box(index.search(q, 10, &filter, crate::SearchMode::Exact)?);
        exact.push(t.elapsed().as_secs_f64() * 1e3);
    }
    hnsw.sort_by(f64::total_cmp);
    exact.sort_by(f64::total_cmp);
    let wanted: usize = truths.iter().map(|t| t.len()).sum();
    Ok(SearchFigures {
        hnsw_p50_ms: percentile(&hnsw, 0.5),
        hnsw_p99_ms: percentile(&hnsw, 0.99),
        hnsw_recall_at_10: found as f64 / wanted.max(1) as f64,
        exact_p50_ms: percentile(&exact, 0.5),
        exact_p99_ms: percentile(&exact, 0.99),
    })
}

/// Builds an index through `IndexWriter`, deletes a share of its rows, then compacts it: compaction time and
/// peak memory, and search latency and recall before and after.
pub fn run_compaction(setup: &CompactionSetup<'_>) -> Result<CompactionBenchResult, IndexError> {
    let (n, dim) = (setup.vectors, setup.dim);
    let clusters = (n / 100).clamp(10, 10_000);
    let data = setup.dataset.generate(n, dim, clusters, 7);
    let qs = setup
        .dataset
        .generate(setup.queries, dim, clusters, 7 ^ 0xABCD);
    let dir = setup.scratch.join(format!("compaction-{n}"));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(IndexError::io(&dir))?;
    }
    let spec = crate::IndexSpec {
        dim,
        model_id: "bench".into(),
        weights_hash: "bench".into(),
        hnsw: setup.params,
    };
    let t = Instant::now();
    let mut writer = crate::IndexWriter::create(&dir, &spec)?;
    // Never on its own: the compaction is the measured step.
    writer.set_compact_threshold(f64::INFINITY);
    for (c, slab) in data.chunks(dim * 10_000).enumerate() {
        let first = c * 10_000;
        let batch = slab
            .chunks_exact(dim)
            .enumerate()
            .map(|(i, v)| bench_record(first + i, v))
            .collect();
        writer.append(batch)?;
    }
    writer.save_graph()?;
    let build_s = t.elapsed().as_secs_f64();

    let mut rng = Rng::new(0xDE1E7E);
    let doomed: Vec<u64> = (0..n as u64)
        .filter(|_| rng.uniform() < setup.delete_fraction)
        .collect();
    let t = Instant::now();
    writer.delete_rows(&doomed)?;
    let delete_s = t.elapsed().as_secs_f64();
    let dead: std::collections::HashSet<usize> = doomed.iter().map(|&r| r as usize).collect();
    let live: Vec<usize> = (0..n).filter(|r| !dead.contains(r)).collect();
    let row = |i: usize| &data[i * dim..(i + 1) * dim];
    let truths: Vec<std::collections::HashSet<usize>> = qs
        .chunks_exact(dim)
        .map(|q| {
            exact_top_k(n, &row, q, 10, &|i| !dead.contains(&i))
                .into_iter()
                .map(|x| x.0)
                .collect()
        })
        .collect();
    let before = search_figures(&writer, &qs, dim, setup.ef, &truths, &|r| r)?;
    let segments_before = writer.manifest().segments.len();
    let rss_before_compact_bytes = rss_bytes();
    reset_peak_rss();
    let report = writer.compact()?;
    let peak_rss_compact_bytes = status_bytes("VmHWM:");
    let after = search_figures(&writer, &qs, dim, setup.ef, &truths, &|r| {
        live.get(r).copied().unwrap_or(usize::MAX)
    })?;
    let segments_after = writer.manifest().segments.len();
    drop(writer);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(CompactionBenchResult {
        dataset: setup.dataset,
        vectors: n,
        dim,
        m: setup.params.m,
        ef_construction: setup.params.ef_construction,
        ef_search: setup.ef,
        threads: rayon::current_num_threads(),
        deleted: doomed.len(),
        build_s,
        delete_s,
        compact_s: report.seconds,
        rss_before_compact_bytes,
        peak_rss_compact_bytes,
        segments_before,
        segments_after,
        before,
        after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_files_carry_numpys_header_and_the_raw_little_endian_data() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.npy");
        write_npy(&p, &[2, 3], NpyData::F32(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.5])).unwrap();
        let b = std::fs::read(&p).unwrap();
        assert_eq!(&b[..8], b"\x93NUMPY\x01\x00");
        let hlen = u16::from_le_bytes([b[8], b[9]]) as usize;
        assert_eq!((10 + hlen) % 64, 0, "data aligned to 64 bytes");
        let header = std::str::from_utf8(&b[10..10 + hlen]).unwrap();
        assert!(
            header.starts_with("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"),
            "{header}"
        );
        assert!(header.ends_with('\n'));
        assert_eq!(&b[10 + hlen + 20..], &6.5f32.to_le_bytes());
    }

    #[test]
    fn the_low_dim_set_concentrates_its_variance_in_few_directions() {
        // Mean pairwise cosine far above the isotropic set's ~0: the cone CLIP embeddings live in.
        let dim = 64;
        let v = low_dim(200, dim, 10, 1);
        let iso = clustered(200, dim, 10, 0.6, 1);
        let mean_cos = |x: &[f32]| {
            let rows: Vec<&[f32]> = x.chunks_exact(dim).collect();
            let mut s = 0.0;
            for i in 0..rows.len() {
                for j in 0..i {
                    s += dot(rows[i], rows[j]) as f64;
                }
            }
            s / (rows.len() * (rows.len() - 1) / 2) as f64
        };
        assert!(mean_cos(&v) > 0.3, "{}", mean_cos(&v));
        assert!(mean_cos(&iso).abs() < 0.1, "{}", mean_cos(&iso));
    }

    #[test]
    fn the_compaction_bench_finds_the_live_rows_before_and_after() {
        let scratch = tempfile::tempdir().unwrap();
        let r = run_compaction(&CompactionSetup {
            dataset: Dataset::Clustered,
            vectors: 3_000,
            dim: 16,
            params: HnswParams::default(),
            delete_fraction: 0.1,
            ef: 64,
            queries: 20,
            scratch: scratch.path(),
        })
        .unwrap();
        assert!(r.deleted > 200 && r.deleted < 400, "{r:?}");
        assert!(
            r.before.hnsw_recall_at_10 > 0.9 && r.after.hnsw_recall_at_10 > 0.9,
            "{r:?}"
        );
        assert!(!scratch.path().join("compaction-3000").exists());
    }
}
