//! Similarity kernels and the compressed forms vectors take inside the graph. Public: the codec a graph uses
//! and the SIMD back end the kernels run on (reported by the CLI and the Python module); the rest is the
//! graph's.
//!
//! Every kernel is SimSIMD's, dispatched at run time (AVX2+FMA+F16C, AVX-512 where the CPU has it, NEON and
//! SVE on ARM), so one binary is fast everywhere without `target-cpu=native`.

use serde::{Deserialize, Serialize};
use simsimd::SpatialSimilarity;

/// Dot product of two equal-length f32 vectors.
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    f32::dot(a, b).unwrap_or(0.0) as f32
}

/// How the graph stores a vector for the distances it computes while building and searching; the exact
/// f32 vector is kept beside it and re-ranks the final candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    F32,
    F16,
    /// One signed byte per dimension on a scale shared by the whole graph.
    I8,
}

impl Codec {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "f32" => Some(Self::F32),
            "f16" => Some(Self::F16),
            "i8" => Some(Self::I8),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::I8 => "i8",
        }
    }

    pub fn bytes_per_dim(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 => 2,
            Self::I8 => 1,
        }
    }

    pub(crate) fn id(self) -> u8 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::I8 => 2,
        }
    }

    pub(crate) fn from_id(id: u8) -> Option<Self> {
        [Self::F32, Self::F16, Self::I8]
            .into_iter()
            .find(|c| c.id() == id)
    }
}

/// A codec with its parameters: what turns an f32 unit vector into its code and compares two codes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Quantizer {
    pub codec: Codec,
    /// i8 only: code = round(x · scale), clamped to ±127.
    pub scale: f32,
}

impl Quantizer {
    /// For i8 the scale maps the largest magnitude in `sample` (`rows` vectors) to 127: unit vectors spread
    /// their mass over all dimensions, so a scale taken from the vectors (not from the bound 1) keeps most of
    /// the 8 bits. Later vectors beyond it are clamped, which only blurs the walk (the exact vectors rank the
    /// results); a small sample gets headroom because it has seen few of the extremes.
    pub fn fit(codec: Codec, sample: &[f32], rows: usize) -> Self {
        let scale = match codec {
            Codec::I8 => {
                let peak = sample.iter().fold(0f32, |m, x| m.max(x.abs()));
                let headroom = if rows < 1000 { 1.5 } else { 1.0 };
                if peak > 0.0 && peak.is_finite() {
                    127.0 / (peak * headroom).min(1.0)
                } else {
                    127.0
                }
            }
            _ => 1.0,
        };
        Self { codec, scale }
    }

    pub fn code_len(&self, dim: usize) -> usize {
        dim * self.codec.bytes_per_dim()
    }

    /// Writes `v`'s code into `out` (`code_len` bytes).
    pub fn encode(&self, v: &[f32], out: &mut [u8]) {
        match self.codec {
            Codec::F32 => {
                for (x, o) in v.iter().zip(out.chunks_exact_mut(4)) {
                    o.copy_from_slice(&x.to_le_bytes());
                }
            }
            Codec::F16 => {
                for (x, o) in v.iter().zip(out.chunks_exact_mut(2)) {
                    o.copy_from_slice(&simsimd::f16::from_f32(*x).0.to_le_bytes());
                }
            }
            Codec::I8 => {
                for (x, o) in v.iter().zip(out.iter_mut()) {
                    *o = (x * self.scale).round().clamp(-127.0, 127.0) as i8 as u8;
                }
            }
        }
    }

    /// The similarity of two codes: monotone in the dot product of the vectors they encode (for i8, the
    /// integer dot product; only comparisons among codes of one graph are ever made).
    #[inline]
    pub fn similarity(&self, a: &[u8], b: &[u8]) -> f32 {
        debug_assert_eq!(a.len(), b.len());
        // SAFETY (all arms): codes are stored at offsets that are multiples of their element size inside
        // buffers aligned to 64 bytes (see `VectorStore`), and the lengths are whole elements.
        match self.codec {
            Codec::F32 => {
                let (a, b) = unsafe { (cast::<f32>(a), cast::<f32>(b)) };
                f32::dot(a, b).unwrap_or(0.0) as f32
            }
            Codec::F16 => {
                let (a, b) = unsafe { (cast::<simsimd::f16>(a), cast::<simsimd::f16>(b)) };
                simsimd::f16::dot(a, b).unwrap_or(0.0) as f32
            }
            Codec::I8 => {
                let (a, b) = unsafe { (cast::<i8>(a), cast::<i8>(b)) };
                i8::dot(a, b).unwrap_or(0.0) as f32
            }
        }
    }
}

/// # Safety
/// `bytes` must be aligned for `T` and hold a whole number of `T`s, every bit pattern of which is valid.
unsafe fn cast<T>(bytes: &[u8]) -> &[T] {
    debug_assert_eq!(bytes.as_ptr() as usize % std::mem::align_of::<T>(), 0);
    std::slice::from_raw_parts(
        bytes.as_ptr().cast::<T>(),
        bytes.len() / std::mem::size_of::<T>(),
    )
}

/// Which SIMD back end the kernels run on here (for benchmark reports).
pub fn simd_backend() -> &'static str {
    use simsimd::capabilities as c;
    if c::uses_sapphire() || c::uses_genoa() || c::uses_ice() || c::uses_skylake() {
        "avx512"
    } else if c::uses_haswell() {
        "avx2+fma+f16c"
    } else if c::uses_sve() {
        "sve"
    } else if c::uses_neon() {
        "neon"
    } else {
        "portable"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(rng: &mut crate::bench::Rng, n: usize) -> Vec<f32> {
        let v: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / norm).collect()
    }

    /// 64-byte aligned storage, as the graph keeps its codes.
    fn aligned(bytes: &[u8]) -> Vec<u64> {
        let mut out = vec![0u64; bytes.len().div_ceil(8)];
        unsafe { std::slice::from_raw_parts_mut(out.as_mut_ptr().cast::<u8>(), bytes.len()) }
            .copy_from_slice(bytes);
        out
    }

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
            let got = dot(&a, &b);
            assert!(
                (got as f64 - exact).abs() <= 1e-5 * scale.max(1.0),
                "n={n}: {got} vs {exact}"
            );
        }
    }

    #[test]
    fn every_codec_orders_pairs_as_the_exact_dot_product_does_up_to_its_precision() {
        let mut rng = crate::bench::Rng::new(11);
        let dim = 512;
        let vs: Vec<Vec<f32>> = (0..40).map(|_| unit(&mut rng, dim)).collect();
        let sample: Vec<f32> = vs.iter().flatten().copied().collect();
        for (codec, tolerance) in [(Codec::F32, 1e-6), (Codec::F16, 2e-3), (Codec::I8, 3e-2)] {
            let q = Quantizer::fit(codec, &sample, 40);
            let codes: Vec<Vec<u64>> = vs
                .iter()
                .map(|v| {
                    let mut c = vec![0u8; q.code_len(dim)];
                    q.encode(v, &mut c);
                    aligned(&c)
                })
                .collect();
            let bytes = |c: &Vec<u64>| unsafe {
                std::slice::from_raw_parts(c.as_ptr().cast::<u8>(), q.code_len(dim))
            };
            let unscale = if codec == Codec::I8 {
                q.scale * q.scale
            } else {
                1.0
            };
            for i in 0..vs.len() {
                for j in 0..vs.len() {
                    let exact = dot(&vs[i], &vs[j]);
                    let approx = q.similarity(bytes(&codes[i]), bytes(&codes[j])) / unscale;
                    assert!(
                        (approx - exact).abs() <= tolerance,
                        "{codec:?} ({i},{j}): {approx} vs {exact}"
                    );
                }
            }
        }
    }

    #[test]
    fn i8_codes_clamp_values_beyond_the_fitted_scale() {
        let q = Quantizer::fit(Codec::I8, &[0.5, -0.25], 1000);
        let mut out = [0u8; 3];
        q.encode(&[0.5, -0.9, 0.0], &mut out);
        assert_eq!(out.map(|b| b as i8), [127, -127, 0]);
    }
}
