//! The approximate-nearest-neighbour engine behind a trait, so that a corpus beyond one machine's RAM can be
//! served by another engine without touching the table or the CLI.

use std::path::Path;

use anndists::dist::Distance;
use hnsw_rs::api::AnnT;
use hnsw_rs::hnsw::Hnsw;
use hnsw_rs::hnswio::HnswIo;
use serde::{Deserialize, Serialize};

use crate::IndexError;

/// Cosine distance of L2-normalised vectors, clamped at 0: hnsw_rs' own `DistDot` asserts `1 − a·a ≥ 0`
/// and panics on rounding for self-matches.
#[derive(Debug, Clone, Copy, Default)]
pub struct UnitCosine;

impl Distance<f32> for UnitCosine {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        (1.0 - dot(a, b)).max(0.0)
    }
}

/// Dot product of two equal-length vectors, with the widest instructions this CPU has (AVX2+FMA on x86-64,
/// checked once at run time, so one binary runs everywhere), else a portable loop.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx2_fma() {
            // SAFETY: the CPU was checked to support AVX2 and FMA.
            return unsafe { dot_avx2_fma(a, b) };
        }
    }
    dot_portable(a, b)
}

#[cfg(target_arch = "x86_64")]
fn has_avx2_fma() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    })
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2_fma(a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    // Four independent accumulators hide the FMA latency.
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (k, acc) in acc.iter_mut().enumerate() {
            let x = _mm256_loadu_ps(pa.add(i + 8 * k));
            let y = _mm256_loadu_ps(pb.add(i + 8 * k));
            *acc = _mm256_fmadd_ps(x, y, *acc);
        }
        i += 32;
    }
    while i + 8 <= n {
        acc[0] = _mm256_fmadd_ps(
            _mm256_loadu_ps(pa.add(i)),
            _mm256_loadu_ps(pb.add(i)),
            acc[0],
        );
        i += 8;
    }
    let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let mut lanes = [0f32; 8];
    _mm256_storeu_ps(lanes.as_mut_ptr(), sum);
    let mut total: f32 = lanes.iter().sum();
    while i < n {
        total += *pa.add(i) * *pb.add(i);
        i += 1;
    }
    total
}

fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    // Eight partial sums let the compiler vectorise without fast-math.
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

/// The `k` best of `points` by dot product with `q` among the ids `keep` accepts, best first (ties by id):
/// a parallel scan, the exact answer the graph approximates.
pub fn exact_top_k(
    points: &[(usize, &[f32])],
    q: &[f32],
    k: usize,
    keep: &(dyn Fn(usize) -> bool + Sync),
) -> Vec<(usize, f32)> {
    use rayon::prelude::*;
    let mut scored: Vec<(usize, f32)> = points
        .par_iter()
        .filter(|(id, _)| keep(*id))
        .map(|&(id, v)| (id, dot(q, v)))
        .collect();
    let k = k.min(scored.len());
    if k == 0 {
        return Vec::new();
    }
    let order = |a: &(usize, f32), b: &(usize, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    scored.select_nth_unstable_by(k - 1, order);
    scored.truncate(k);
    scored.sort_by(order);
    scored
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HnswParams {
    /// Links per node.
    pub m: usize,
    pub ef_construction: usize,
}

impl Default for HnswParams {
    fn default() -> Self {
        Self {
            m: 16,
            ef_construction: 100,
        }
    }
}

pub trait AnnEngine: Send + Sync {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Inserts `(vector, id)` pairs; vectors are unit length.
    fn insert(&mut self, items: &[(&[f32], usize)]);
    /// The `k` nearest ids with their cosine similarity, best first; `keep` restricts the ids considered.
    fn search(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        keep: Option<&(dyn Fn(usize) -> bool + Sync)>,
    ) -> Vec<(usize, f32)>;
    /// Every stored `(id, vector)`, for exact search.
    fn points(&self) -> Vec<(usize, &[f32])>;
    fn dump(&self, dir: &Path, basename: &str) -> Result<(), IndexError>;
}

pub struct HnswEngine {
    hnsw: Hnsw<'static, f32, UnitCosine>,
    count: usize,
}

impl HnswEngine {
    pub fn new(params: HnswParams, expected: usize) -> Self {
        let max_layer = 16;
        let hnsw = Hnsw::new(
            params.m,
            expected.max(10_000),
            max_layer,
            params.ef_construction,
            UnitCosine,
        );
        Self { hnsw, count: 0 }
    }

    /// Loads a dump written by [`AnnEngine::dump`]. The caller verifies the files' checksums first: hnsw_rs
    /// asserts on malformed input, and a panic is caught here as a last guard.
    pub fn load(dir: &Path, basename: &str, count: usize) -> Result<Self, IndexError> {
        // hnsw_rs ties the graph's lifetime to its loader; the loader is a few paths and options, so it is
        // leaked once per load rather than making the index self-referential.
        let loaded = std::panic::catch_unwind(|| {
            let io: &'static mut HnswIo = Box::leak(Box::new(HnswIo::new(dir, basename)));
            io.load_hnsw::<f32, UnitCosine>()
        });
        let path = dir.join(format!("{basename}.hnsw.graph"));
        let mut hnsw = match loaded {
            Ok(Ok(h)) => h,
            Ok(Err(e)) => return Err(IndexError::corrupt(path, e)),
            Err(_) => return Err(IndexError::corrupt(path, "the HNSW loader rejected it")),
        };
        hnsw.set_searching_mode(false);
        if hnsw.get_nb_point() != count {
            return Err(IndexError::corrupt(
                path,
                format!(
                    "holds {} vectors, the manifest says {count}",
                    hnsw.get_nb_point()
                ),
            ));
        }
        Ok(Self { hnsw, count })
    }
}

impl AnnEngine for HnswEngine {
    fn len(&self) -> usize {
        self.count
    }

    fn insert(&mut self, items: &[(&[f32], usize)]) {
        if items.len() > 64 {
            self.hnsw.parallel_insert_slice(&items.to_vec());
        } else {
            for &(v, id) in items {
                self.hnsw.insert_slice((v, id));
            }
        }
        self.count += items.len();
    }

    fn search(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        keep: Option<&(dyn Fn(usize) -> bool + Sync)>,
    ) -> Vec<(usize, f32)> {
        if self.count == 0 || k == 0 {
            return Vec::new();
        }
        let found = match keep {
            None => self.hnsw.search(query, k, ef.max(k)),
            Some(keep) => {
                let filter = |id: &usize| keep(*id);
                self.hnsw.search_filter(query, k, ef.max(k), Some(&filter))
            }
        };
        found
            .into_iter()
            .map(|n| (n.d_id, 1.0 - n.distance))
            .collect()
    }

    fn points(&self) -> Vec<(usize, &[f32])> {
        if self.count == 0 {
            return Vec::new();
        }
        let mut out = Vec::with_capacity(self.count);
        for point in self.hnsw.get_point_indexation() {
            // The iterator hands out Arcs owned by the graph; the slices live as long as `self`.
            let v: &[f32] = point.get_v();
            let v: &[f32] = unsafe { std::slice::from_raw_parts(v.as_ptr(), v.len()) };
            out.push((point.get_origin_id(), v));
        }
        out
    }

    fn dump(&self, dir: &Path, basename: &str) -> Result<(), IndexError> {
        self.hnsw.file_dump(dir, basename).map(drop).map_err(|e| {
            IndexError::Engine(format!("dumping the HNSW graph to {}: {e}", dir.display()))
        })
    }
}

#[cfg(test)]
mod dot_tests {
    use super::*;

    #[test]
    fn the_dispatched_dot_agrees_with_a_double_precision_sum_at_every_length() {
        let mut rng = crate::bench::Rng::new(7);
        for n in [0usize, 1, 7, 8, 9, 31, 32, 33, 63, 64, 100, 512, 768, 1025] {
            let a: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
            let b: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
            let exact: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
            let scale: f64 = a
                .iter()
                .zip(&b)
                .map(|(x, y)| (*x as f64 * *y as f64).abs())
                .sum();
            for (name, got) in [
                ("dispatched", dot(&a, &b)),
                ("portable", dot_portable(&a, &b)),
            ] {
                let err = (got as f64 - exact).abs();
                assert!(
                    err <= 1e-5 * scale.max(1.0),
                    "{name} n={n}: {got} vs {exact}"
                );
            }
        }
    }
}
