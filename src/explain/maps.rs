//! The small dense operations on a relevance map: bilinear ×patch upsampling, min-max normalisation and
//! the bilinear resize to a mask's resolution (torch `interpolate(mode="bilinear", align_corners=False)`),
//! each with its exact backward.

use crate::resample::{bilinear_taps, LinearTap};

/// Separable bilinear resize of a row-major `[in_h, in_w]` map to `[out_h, out_w]`.
#[derive(Debug, Clone)]
pub struct Bilinear {
    pub in_h: usize,
    pub in_w: usize,
    pub out_h: usize,
    pub out_w: usize,
    ty: Vec<LinearTap>,
    tx: Vec<LinearTap>,
}

impl Bilinear {
    pub fn new(in_h: usize, in_w: usize, out_h: usize, out_w: usize) -> Self {
        Self {
            in_h,
            in_w,
            out_h,
            out_w,
            ty: bilinear_taps(in_h, out_h),
            tx: bilinear_taps(in_w, out_w),
        }
    }

    pub fn forward(&self, src: &[f32]) -> Vec<f32> {
        debug_assert_eq!(src.len(), self.in_h * self.in_w);
        // Rows first at input height (cheap), then columns.
        let mut tmp = vec![0f32; self.in_h * self.out_w];
        for y in 0..self.in_h {
            let row = &src[y * self.in_w..(y + 1) * self.in_w];
            let out = &mut tmp[y * self.out_w..(y + 1) * self.out_w];
            for (o, t) in out.iter_mut().zip(&self.tx) {
                *o = (1.0 - t.frac) * row[t.lo] + t.frac * row[t.hi];
            }
        }
        let mut out = vec![0f32; self.out_h * self.out_w];
        for (yo, t) in self.ty.iter().enumerate() {
            let a = &tmp[t.lo * self.out_w..(t.lo + 1) * self.out_w];
            let b = &tmp[t.hi * self.out_w..(t.hi + 1) * self.out_w];
            let dst = &mut out[yo * self.out_w..(yo + 1) * self.out_w];
            for ((d, &va), &vb) in dst.iter_mut().zip(a).zip(b) {
                *d = (1.0 - t.frac) * va + t.frac * vb;
            }
        }
        out
    }

    /// The transpose: maps a gradient on the output grid back to the input grid.
    pub fn backward(&self, d_out: &[f32]) -> Vec<f32> {
        debug_assert_eq!(d_out.len(), self.out_h * self.out_w);
        let mut tmp = vec![0f32; self.in_h * self.out_w];
        for (yo, t) in self.ty.iter().enumerate() {
            let src = &d_out[yo * self.out_w..(yo + 1) * self.out_w];
            for (x, &v) in src.iter().enumerate() {
                tmp[t.lo * self.out_w + x] += (1.0 - t.frac) * v;
                tmp[t.hi * self.out_w + x] += t.frac * v;
            }
        }
        let mut out = vec![0f32; self.in_h * self.in_w];
        for y in 0..self.in_h {
            for (xo, t) in self.tx.iter().enumerate() {
                let v = tmp[y * self.out_w + xo];
                out[y * self.in_w + t.lo] += (1.0 - t.frac) * v;
                out[y * self.in_w + t.hi] += t.frac * v;
            }
        }
        out
    }
}

/// The g×g patch map upsampled ×patch to S×S, then min-max normalised over S×S.
#[derive(Debug, Clone)]
pub struct PatchUpsample {
    pub up: Bilinear,
}

/// A normalised map and what its backward needs.
#[derive(Debug, Clone)]
pub struct NormalizedMap {
    /// E = (X − min)/(max − min) on S×S; all zeros when the map is flat.
    pub values: Vec<f32>,
    argmin: usize,
    argmax: usize,
    range: f32,
}

impl NormalizedMap {
    /// False when max = min: the reference divides by zero there (NaN); we keep zeros and no gradient.
    pub fn is_valid(&self) -> bool {
        self.range > 0.0 && self.range.is_finite()
    }
}

impl PatchUpsample {
    pub fn new(grid: usize, patch: usize) -> Self {
        let s = grid * patch;
        Self {
            up: Bilinear::new(grid, grid, s, s),
        }
    }

    pub fn size(&self) -> usize {
        self.up.out_h
    }

    pub fn forward(&self, relevance: &[f32]) -> NormalizedMap {
        let x = self.up.forward(relevance);
        // First index of the extreme value, as torch's min/max.
        let (mut argmin, mut argmax) = (0, 0);
        for (i, &v) in x.iter().enumerate() {
            if v < x[argmin] {
                argmin = i;
            }
            if v > x[argmax] {
                argmax = i;
            }
        }
        let (mn, mx) = (x[argmin], x[argmax]);
        let range = mx - mn;
        let values = if range > 0.0 && range.is_finite() {
            x.iter().map(|v| (v - mn) / range).collect()
        } else {
            vec![0.0; x.len()]
        };
        NormalizedMap {
            values,
            argmin,
            argmax,
            range,
        }
    }

    /// `dL/dE` on S×S → `dL/dR` on the g×g patch grid.
    pub fn backward(&self, map: &NormalizedMap, d_e: &[f32]) -> Vec<f32> {
        if !map.is_valid() {
            return vec![0.0; self.up.in_h * self.up.in_w];
        }
        let r = map.range;
        let mut dx: Vec<f32> = d_e.iter().map(|v| v / r).collect();
        let (mut to_min, mut to_max) = (0f64, 0f64);
        for (&de, &e) in d_e.iter().zip(&map.values) {
            to_min += (de * (e - 1.0)) as f64;
            to_max -= (de * e) as f64;
        }
        dx[map.argmin] += (to_min / r as f64) as f32;
        dx[map.argmax] += (to_max / r as f64) as f32;
        self.up.backward(&dx)
    }
}

/// The S×S map resized to a mask's own resolution, folded into the mask once so that the Dice terms are
/// computed on S×S whatever the photo's size: `Σ resize(E)⊙m = Σ E⊙m̃` with `m̃ = Ryᵀ·m·Rx`, and
/// `Σ resize(E) = Σ E⊙ρ` with `ρ = (Ryᵀ1)(Rxᵀ1)ᵀ`.
#[derive(Debug, Clone)]
pub struct MapResize {
    pub resize: Bilinear,
}

impl MapResize {
    pub fn new(size: usize, mask_h: usize, mask_w: usize) -> Self {
        Self {
            resize: Bilinear::new(size, size, mask_h, mask_w),
        }
    }

    /// The map at the mask's resolution (for display and checks).
    pub fn forward(&self, map: &[f32]) -> Vec<f32> {
        self.resize.forward(map)
    }

    /// `m̃` for a mask given as 0/1 floats at the mask's resolution.
    pub fn fold_mask(&self, mask: &[f32]) -> Vec<f32> {
        self.resize.backward(mask)
    }

    /// `ρ`: the weight of each S×S pixel in the sum of the resized map.
    pub fn fold_ones(&self) -> Vec<f32> {
        self.resize
            .backward(&vec![1.0; self.resize.out_h * self.resize.out_w])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dot(a: &[f32], b: &[f32]) -> f64 {
        a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
    }

    #[test]
    fn bilinear_backward_is_the_transpose() {
        let b = Bilinear::new(5, 7, 13, 4);
        let x: Vec<f32> = (0..35).map(|i| ((i * 37) % 11) as f32 - 5.0).collect();
        let y: Vec<f32> = (0..52).map(|i| ((i * 13) % 7) as f32 - 3.0).collect();
        let lhs = dot(&b.forward(&x), &y);
        let rhs = dot(&x, &b.backward(&y));
        assert!(
            (lhs - rhs).abs() < 1e-3 * lhs.abs().max(1.0),
            "{lhs} vs {rhs}"
        );
    }

    #[test]
    fn minmax_gradient_matches_finite_differences() {
        let up = PatchUpsample::new(3, 2);
        let r: Vec<f32> = vec![0.3, 0.9, 0.1, 0.5, 0.2, 0.8, 0.05, 0.6, 0.4];
        let w: Vec<f32> = (0..36).map(|i| ((i * 7) % 5) as f32 * 0.1).collect();
        let loss = |r: &[f32]| dot(&up.forward(r).values, &w);
        let map = up.forward(&r);
        let g = up.backward(&map, &w);
        for k in 0..9 {
            let mut p = r.clone();
            p[k] += 1e-3;
            let mut m = r.clone();
            m[k] -= 1e-3;
            let fd = (loss(&p) - loss(&m)) / 2e-3;
            assert!(
                (fd - g[k] as f64).abs() < 2e-2,
                "k={k}: fd {fd} vs {}",
                g[k]
            );
        }
    }

    #[test]
    fn flat_map_is_invalid_not_nan() {
        let up = PatchUpsample::new(2, 4);
        let m = up.forward(&[0.0; 4]);
        assert!(!m.is_valid());
        assert!(m.values.iter().all(|v| *v == 0.0));
        assert!(up.backward(&m, &[1.0; 64]).iter().all(|v| *v == 0.0));
    }
}
