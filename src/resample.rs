//! Separable resampling that reproduces the reference's numerics:
//! - PIL's antialiased resize of 8-bit images (fixed-point coefficients, rounding to u8 after each pass),
//!   which is what the reference's preprocessing does to photos;
//! - torch's `interpolate(..., antialias=True, align_corners=False)` on floats, which computes the same
//!   weights in floating point (used to resample positional embeddings);
//! - torch's plain bilinear `interpolate(..., align_corners=False)`, used by the explainer's maps.

/// Interpolation kernels of PIL / torch's antialiased path (they share the formulas).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// Keys cubic with a = -0.5 (PIL's and torch-antialias's choice, not torch's non-antialiased -0.75).
    Bicubic,
    Bilinear,
}

impl Filter {
    fn support(self) -> f64 {
        match self {
            Filter::Bicubic => 2.0,
            Filter::Bilinear => 1.0,
        }
    }

    fn eval(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            Filter::Bicubic => {
                const A: f64 = -0.5;
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
            Filter::Bilinear => (1.0 - x).max(0.0),
        }
    }
}

/// The taps of one output sample: the first input index and the normalised weights from there on.
#[derive(Debug, Clone)]
pub struct Taps {
    pub start: usize,
    pub weights: Vec<f64>,
}

/// Antialiased resampling weights exactly as PIL's `precompute_coeffs` (and torch's `_aa` kernels):
/// the kernel widens by the downscale factor, taps outside the input are dropped (not clamped) and the
/// rest renormalised.
pub fn antialias_taps(in_size: usize, out_size: usize, filter: Filter) -> Vec<Taps> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let inv = 1.0 / filterscale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            // `as i64` truncates toward zero like C's (int) cast.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let mut weights: Vec<f64> = (xmin..xmax)
                .map(|x| filter.eval((x as f64 - center + 0.5) * inv))
                .collect();
            let total: f64 = weights.iter().sum();
            if total != 0.0 {
                weights.iter_mut().for_each(|w| *w /= total);
            }
            Taps {
                start: xmin,
                weights,
            }
        })
        .collect()
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

fn fixed_point(taps: &[Taps]) -> Vec<(usize, Vec<i32>)> {
    taps.iter()
        .map(|t| {
            let k = t
                .weights
                .iter()
                .map(|&w| {
                    let scaled = w * (1u32 << PRECISION_BITS) as f64;
                    if w < 0.0 {
                        (scaled - 0.5) as i32
                    } else {
                        (scaled + 0.5) as i32
                    }
                })
                .collect();
            (t.start, k)
        })
        .collect()
}

fn clip8(acc: i64) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resizes an interleaved 8-bit image (`channels` per pixel) as PIL's `Image.resize` does, bit for bit:
/// two separable passes, each rounded back to 8 bits. Pillow 13 (`ImagingResampleInner`) runs the vertical
/// pass first when the height loses more than twice as many pixels as the width, otherwise the horizontal one.
pub fn resize_u8_pil(
    src: &[u8],
    width: usize,
    height: usize,
    channels: usize,
    out_width: usize,
    out_height: usize,
    filter: Filter,
) -> Vec<u8> {
    assert_eq!(
        src.len(),
        width * height * channels,
        "buffer does not match its size"
    );
    let (lost_rows, lost_cols) = (
        height as i64 - out_height as i64,
        width as i64 - out_width as i64,
    );
    let vertical_first = lost_rows > 0 && lost_rows > lost_cols * 2;
    if vertical_first {
        let v = pass_vertical(src, width, height, channels, out_height, filter);
        pass_horizontal(&v, width, out_height, channels, out_width, filter)
    } else {
        let h = pass_horizontal(src, width, height, channels, out_width, filter);
        pass_vertical(&h, out_width, height, channels, out_height, filter)
    }
}

fn pass_horizontal(
    src: &[u8],
    width: usize,
    height: usize,
    channels: usize,
    out_width: usize,
    filter: Filter,
) -> Vec<u8> {
    if out_width == width {
        return src.to_vec();
    }
    let half = 1i64 << (PRECISION_BITS - 1);
    let taps = fixed_point(&antialias_taps(width, out_width, filter));
    let mut out = vec![0u8; out_width * height * channels];
    for y in 0..height {
        let row = &src[y * width * channels..(y + 1) * width * channels];
        for (xo, (start, k)) in taps.iter().enumerate() {
            for c in 0..channels {
                let mut acc = half;
                for (j, &w) in k.iter().enumerate() {
                    acc += row[(start + j) * channels + c] as i64 * w as i64;
                }
                out[(y * out_width + xo) * channels + c] = clip8(acc);
            }
        }
    }
    out
}

fn pass_vertical(
    src: &[u8],
    width: usize,
    height: usize,
    channels: usize,
    out_height: usize,
    filter: Filter,
) -> Vec<u8> {
    if out_height == height {
        return src.to_vec();
    }
    let half = 1i64 << (PRECISION_BITS - 1);
    let taps = fixed_point(&antialias_taps(height, out_height, filter));
    let stride = width * channels;
    let mut out = vec![0u8; out_height * stride];
    for (yo, (start, k)) in taps.iter().enumerate() {
        for i in 0..stride {
            let mut acc = half;
            for (j, &w) in k.iter().enumerate() {
                acc += src[(start + j) * stride + i] as i64 * w as i64;
            }
            out[yo * stride + i] = clip8(acc);
        }
    }
    out
}

/// Antialiased resize of planar float data `[planes, height, width]`, as torch's
/// `interpolate(mode=bicubic|bilinear, antialias=True, align_corners=False)` with an explicit size.
pub fn resize_planes_antialias(
    src: &[f32],
    planes: usize,
    height: usize,
    width: usize,
    out_height: usize,
    out_width: usize,
    filter: Filter,
) -> Vec<f32> {
    assert_eq!(
        src.len(),
        planes * height * width,
        "buffer does not match its size"
    );
    let tx = antialias_taps(width, out_width, filter);
    let ty = antialias_taps(height, out_height, filter);
    let mut tmp = vec![0f32; planes * height * out_width];
    for p in 0..planes {
        for y in 0..height {
            let row = &src[(p * height + y) * width..(p * height + y + 1) * width];
            for (xo, t) in tx.iter().enumerate() {
                let v: f64 = t
                    .weights
                    .iter()
                    .enumerate()
                    .map(|(j, w)| w * row[t.start + j] as f64)
                    .sum();
                tmp[(p * height + y) * out_width + xo] = v as f32;
            }
        }
    }
    let mut out = vec![0f32; planes * out_height * out_width];
    for p in 0..planes {
        for (yo, t) in ty.iter().enumerate() {
            for x in 0..out_width {
                let v: f64 = t
                    .weights
                    .iter()
                    .enumerate()
                    .map(|(j, w)| w * tmp[(p * height + t.start + j) * out_width + x] as f64)
                    .sum();
                out[(p * out_height + yo) * out_width + x] = v as f32;
            }
        }
    }
    out
}

/// One output sample of torch's plain bilinear interpolation (align_corners=False): two source indices
/// and the weight of the second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinearTap {
    pub lo: usize,
    pub hi: usize,
    pub frac: f32,
}

/// Taps of torch's non-antialiased bilinear resize along one axis: source = (o + 0.5)·in/out − 0.5,
/// clamped at 0, two neighbours.
pub fn bilinear_taps(in_size: usize, out_size: usize) -> Vec<LinearTap> {
    let scale = in_size as f32 / out_size as f32;
    (0..out_size)
        .map(|o| {
            let src = ((o as f32 + 0.5) * scale - 0.5).max(0.0);
            let lo = (src.floor() as usize).min(in_size - 1);
            let hi = (lo + 1).min(in_size - 1);
            LinearTap {
                lo,
                hi,
                frac: src - lo as f32,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taps_sum_to_one_and_stay_inside() {
        for (i, o) in [(14, 28), (28, 14), (639, 224), (224, 448), (5, 3)] {
            for f in [Filter::Bicubic, Filter::Bilinear] {
                for t in antialias_taps(i, o, f) {
                    let s: f64 = t.weights.iter().sum();
                    assert!((s - 1.0).abs() < 1e-12);
                    assert!(t.start + t.weights.len() <= i);
                }
            }
        }
    }

    #[test]
    fn constant_image_stays_constant() {
        let src = vec![77u8; 10 * 7 * 3];
        let out = resize_u8_pil(&src, 10, 7, 3, 4, 9, Filter::Bicubic);
        assert!(out.iter().all(|&v| v == 77));
        let planes = vec![0.25f32; 2 * 4 * 4];
        let out = resize_planes_antialias(&planes, 2, 4, 4, 8, 8, Filter::Bicubic);
        assert!(out.iter().all(|&v| (v - 0.25).abs() < 1e-6));
    }

    #[test]
    fn bilinear_taps_match_torch_half_pixel_convention() {
        // torch: interpolate(arange(4), size=8, bilinear, align_corners=False)
        // = [0, .25, .75, 1.25, 1.75, 2.25, 2.75, 3]
        let taps = bilinear_taps(4, 8);
        let vals: Vec<f32> = taps
            .iter()
            .map(|t| t.lo as f32 * (1.0 - t.frac) + t.hi as f32 * t.frac)
            .collect();
        let want = [0.0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3.0];
        for (v, w) in vals.iter().zip(want) {
            assert!((v - w).abs() < 1e-6, "{vals:?}");
        }
    }
}
