//! Synthetic benchmark of the vector index: clustered unit vectors, build rate, query latency, recall@10
//! against exact search, memory per vector, dump and reload time.

use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use crate::engine::{dot, exact_top_k, AnnEngine, HnswEngine, HnswParams};
use crate::IndexError;

#[derive(Debug, Clone, Serialize)]
pub struct IndexBenchResult {
    pub vectors: usize,
    pub dim: usize,
    pub m: usize,
    pub ef_construction: usize,
    pub ef_search: usize,
    pub threads: usize,
    pub build_s: f64,
    pub build_per_s: f64,
    pub queries: usize,
    pub query_p50_ms: f64,
    pub query_p99_ms: f64,
    pub recall_at_10: f64,
    pub rss_bytes_per_vector: Option<f64>,
    pub dump_s: f64,
    pub reload_s: f64,
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

fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Builds once, then measures search at every beam width in `efs` (one result each).
pub fn run(
    n: usize,
    dim: usize,
    params: HnswParams,
    efs: &[usize],
    queries: usize,
    scratch: &Path,
) -> Result<Vec<IndexBenchResult>, IndexError> {
    let clusters = (n / 100).clamp(10, 10_000);
    let data = clustered(n, dim, clusters, 0.6, 7);
    let qs = clustered(queries, dim, clusters, 0.6, 7 ^ 0xABCD);
    let rss0 = rss_bytes();
    let mut engine = HnswEngine::new(params, n);
    let t = Instant::now();
    for chunk in data.chunks(dim * 10_000).enumerate() {
        let (c, slab) = chunk;
        let items: Vec<(&[f32], usize)> = slab
            .chunks_exact(dim)
            .enumerate()
            .map(|(i, v)| (v, c * 10_000 + i))
            .collect();
        engine.insert(&items);
    }
    let build_s = t.elapsed().as_secs_f64();
    let rss1 = rss_bytes();

    // Ground truth by brute force over the same vectors, once.
    let truths: Vec<std::collections::HashSet<usize>> = qs
        .chunks_exact(dim)
        .map(|q| {
            let mut all: Vec<(usize, f32)> = data
                .chunks_exact(dim)
                .enumerate()
                .map(|(i, v)| (i, dot(q, v)))
                .collect();
            all.select_nth_unstable_by(9, |a, b| b.1.total_cmp(&a.1));
            all[..10].iter().map(|x| x.0).collect()
        })
        .collect();
    let mut per_ef = Vec::new();
    for &ef in efs {
        let mut latencies = Vec::with_capacity(queries);
        let mut hits = 0usize;
        for (q, truth) in qs.chunks_exact(dim).zip(&truths) {
            let t = Instant::now();
            let found = engine.search(q, 10, ef, None);
            latencies.push(t.elapsed().as_secs_f64() * 1e3);
            hits += found.iter().filter(|(id, _)| truth.contains(id)).count();
        }
        latencies.sort_by(f64::total_cmp);
        let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
        per_ef.push((ef, pct(0.5), pct(0.99), hits as f64 / (10 * queries) as f64));
    }

    // What `search` does by default up to EXACT_BELOW rows: a parallel scan of the stored vectors.
    let points = engine.points();
    let mut exact_ms = Vec::with_capacity(queries);
    for q in qs.chunks_exact(dim) {
        let t = Instant::now();
        let found = exact_top_k(&points, q, 10, &|_| true);
        exact_ms.push(t.elapsed().as_secs_f64() * 1e3);
        std::hint::black_box(found);
    }
    drop(points);
    exact_ms.sort_by(f64::total_cmp);
    let exact_p50_ms = exact_ms[exact_ms.len() / 2];
    let exact_p99_ms = exact_ms[((exact_ms.len() - 1) as f64 * 0.99).round() as usize];

    std::fs::create_dir_all(scratch).map_err(IndexError::io(scratch))?;
    let t = Instant::now();
    engine.dump(scratch, "bench")?;
    let dump_s = t.elapsed().as_secs_f64();
    drop(engine);
    let t = Instant::now();
    let reloaded = HnswEngine::load(scratch, "bench", n)?;
    let reload_s = t.elapsed().as_secs_f64();
    drop(reloaded);
    for ext in ["hnsw.graph", "hnsw.data"] {
        let _ = std::fs::remove_file(scratch.join(format!("bench.{ext}")));
    }
    Ok(per_ef
        .into_iter()
        .map(|(ef, p50, p99, recall)| IndexBenchResult {
            vectors: n,
            dim,
            m: params.m,
            ef_construction: params.ef_construction,
            ef_search: ef,
            threads: rayon::current_num_threads(),
            build_s,
            build_per_s: n as f64 / build_s,
            queries,
            query_p50_ms: p50,
            query_p99_ms: p99,
            recall_at_10: recall,
            rss_bytes_per_vector: rss0
                .zip(rss1)
                .map(|(a, b)| b.saturating_sub(a) as f64 / n as f64),
            dump_s,
            reload_s,
            exact_p50_ms,
            exact_p99_ms,
        })
        .collect())
}
