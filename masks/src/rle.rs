//! COCO run-length encoding, bit-for-bit as pycocotools' `maskApi.c`: runs over the column-major (Fortran
//! order) pixel sequence, starting with a background run; the compressed string is pycocotools' LEB128-like
//! code (6 bits per character, ASCII 48..111, runs after the second stored as differences).

use serde::{Deserialize, Serialize};

use crate::{BinaryMask, MaskError};

/// Images larger than this are refused before anything is allocated for them (a corrupt size field must
/// not turn into a 100 GB allocation).
pub const MAX_PIXELS: u64 = 1 << 31;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rle {
    pub height: u32,
    pub width: u32,
    /// Alternating background/foreground run lengths; they sum to `height·width`.
    pub counts: Vec<u32>,
}

/// The JSON form COCO files and results use: `{"size": [h, w], "counts": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CocoRle {
    pub size: [u32; 2],
    pub counts: String,
}

fn check_size(height: u64, width: u64) -> Result<(), MaskError> {
    if height.saturating_mul(width) > MAX_PIXELS {
        return Err(MaskError::Rle(format!(
            "size {height}x{width} exceeds {MAX_PIXELS} pixels"
        )));
    }
    Ok(())
}

impl Rle {
    /// Runs given as they are (COCO's "uncompressed RLE", e.g. crowd annotations): kept verbatim, zero-length
    /// runs included, as pycocotools does; they must sum to `height·width`.
    pub fn from_counts(height: u32, width: u32, counts: Vec<u32>) -> Result<Self, MaskError> {
        check_size(height as u64, width as u64)?;
        let total: u64 = counts.iter().map(|&c| c as u64).sum();
        let want = height as u64 * width as u64;
        if total != want {
            return Err(MaskError::Rle(format!(
                "run lengths sum to {total}, but a {height}x{width} mask has {want} pixels"
            )));
        }
        Ok(Self {
            height,
            width,
            counts,
        })
    }

    /// `rleEncode`: runs of the column-major pixel sequence.
    pub fn encode(mask: &BinaryMask) -> Self {
        let (w, h) = (mask.width, mask.height);
        let mut counts = Vec::new();
        let (mut prev, mut run) = (0u8, 0u32);
        for x in 0..w {
            for y in 0..h {
                let v = mask.data[y * w + x];
                if v != prev {
                    counts.push(run);
                    run = 0;
                    prev = v;
                }
                run += 1;
            }
        }
        counts.push(run);
        Self {
            height: h as u32,
            width: w as u32,
            counts,
        }
    }

    /// `rleDecode` to a row-major mask.
    pub fn decode(&self) -> BinaryMask {
        let (w, h) = (self.width as usize, self.height as usize);
        let mut data = vec![0u8; w * h];
        let mut pos = 0usize;
        let mut value = 0u8;
        for &run in &self.counts {
            for _ in 0..run {
                if pos >= w * h {
                    break;
                }
                // Column-major position -> row-major index.
                let (x, y) = (pos / h, pos % h);
                data[y * w + x] = value;
                pos += 1;
            }
            value ^= 1;
        }
        BinaryMask {
            width: w,
            height: h,
            data,
        }
    }

    /// The mask sampled every `step` pixels (each side `ceil(side / step)`, the pixel nearest each cell's
    /// centre), straight from the runs: a picture of a 48-megapixel photo's region drawn at 1/8 never holds
    /// the full-size mask.
    pub fn decode_sampled(&self, step: u32) -> BinaryMask {
        let step = step.max(1) as usize;
        let (w, h) = (self.width as usize, self.height as usize);
        let (sw, sh) = (w.div_ceil(step), h.div_ceil(step));
        let mut data = vec![0u8; sw * sh];
        let pick = |cell: usize, n: usize| (cell * step + step / 2).min(n - 1);
        let rows: Vec<usize> = (0..sh).map(|k| pick(k, h)).collect();
        let (mut pos, mut foreground) = (0usize, false);
        for &run in &self.counts {
            let (start, end) = (pos, (pos + run as usize).min(w * h));
            if foreground && end > start {
                let (first_col, last_col) = (start / h, (end - 1) / h);
                for x in first_col..=last_col {
                    let cell = x / step;
                    if cell >= sw || pick(cell, w) != x {
                        continue;
                    }
                    let y0 = if x == first_col { start % h } else { 0 };
                    let y1 = if x == last_col { (end - 1) % h + 1 } else { h };
                    let k0 = rows.partition_point(|&y| y < y0);
                    for (k, _) in rows
                        .iter()
                        .enumerate()
                        .skip(k0)
                        .take_while(|(_, &y)| y < y1)
                    {
                        data[k * sw + cell] = 1;
                    }
                }
            }
            pos = end;
            foreground = !foreground;
        }
        BinaryMask {
            width: sw,
            height: sh,
            data,
        }
    }

    /// `rleArea`: the sum of the foreground runs.
    pub fn area(&self) -> u64 {
        self.counts
            .iter()
            .skip(1)
            .step_by(2)
            .map(|&c| c as u64)
            .sum()
    }

    /// `rleToBbox`: `[x, y, w, h]` with pycocotools' quirks (an RLE that spans columns widens the box to
    /// the full height; an empty mask gives all zeros).
    pub fn bbox(&self) -> [f64; 4] {
        let (h, w) = (self.height, self.width);
        let m = self.counts.len() / 2 * 2;
        if m == 0 || h == 0 {
            return [0.0; 4];
        }
        let (mut xs, mut ys, mut xe, mut ye) = (w, h, 0u32, 0u32);
        let (mut cc, mut xp) = (0u32, 0u32);
        for j in 0..m {
            cc = cc.wrapping_add(self.counts[j]);
            let t = cc.wrapping_sub((j % 2) as u32);
            let y = t % h;
            let x = (t - y) / h;
            if j % 2 == 0 {
                xp = x;
            } else if xp < x {
                ys = 0;
                ye = h - 1;
            }
            xs = xs.min(x);
            xe = xe.max(x);
            ys = ys.min(y);
            ye = ye.max(y);
        }
        [
            xs as f64,
            ys as f64,
            xe.wrapping_sub(xs).wrapping_add(1) as f64,
            ye.wrapping_sub(ys).wrapping_add(1) as f64,
        ]
    }

    /// `rleMerge` with `intersect = 0` (union) or 1 (intersection), run by run as pycocotools does, so the
    /// runs (and hence the string) are the same as its output.
    pub fn merge(rles: &[Rle], intersect: bool) -> Result<Rle, MaskError> {
        let Some(first) = rles.first() else {
            return Ok(Rle {
                height: 0,
                width: 0,
                counts: Vec::new(),
            });
        };
        let (h, w) = (first.height, first.width);
        let mut counts = first.counts.clone();
        for b in &rles[1..] {
            if (b.height, b.width) != (h, w) {
                return Err(MaskError::SizeMismatch {
                    a: (w as usize, h as usize),
                    b: (b.width as usize, b.height as usize),
                });
            }
            let a = std::mem::take(&mut counts);
            if a.is_empty() || b.counts.is_empty() {
                return Err(MaskError::Rle("cannot merge an RLE without runs".into()));
            }
            let (mut ca, mut cb) = (a[0], b.counts[0]);
            let (mut v, mut va, mut vb) = (false, false, false);
            let (mut ia, mut ib) = (1usize, 1usize);
            let (mut cc, mut ct) = (0u32, 1u32);
            while ct > 0 {
                let c = ca.min(cb);
                cc += c;
                ct = 0;
                ca -= c;
                if ca == 0 && ia < a.len() {
                    ca = a[ia];
                    ia += 1;
                    va = !va;
                }
                ct += ca;
                cb -= c;
                if cb == 0 && ib < b.counts.len() {
                    cb = b.counts[ib];
                    ib += 1;
                    vb = !vb;
                }
                ct += cb;
                let vp = v;
                v = if intersect { va && vb } else { va || vb };
                if v != vp || ct == 0 {
                    counts.push(cc);
                    cc = 0;
                }
            }
        }
        Ok(Rle {
            height: h,
            width: w,
            counts,
        })
    }

    /// `rleIou` of two masks of the same size; with `crowd` the union is the area of `self` (COCO's rule for
    /// matching a detection against a crowd region).
    pub fn iou(&self, other: &Rle, crowd: bool) -> Result<f64, MaskError> {
        if (self.height, self.width) != (other.height, other.width) {
            return Err(MaskError::SizeMismatch {
                a: (self.width as usize, self.height as usize),
                b: (other.width as usize, other.height as usize),
            });
        }
        let (mut inter, mut union) = (0u64, 0u64);
        let (mut ia, mut ib) = (0usize, 0usize);
        let (mut ca, mut cb) = (0u64, 0u64);
        let (mut va, mut vb) = (true, true); // flipped to background on the first refill
        let total = self.height as u64 * self.width as u64;
        let mut done = 0u64;
        while done < total {
            while ca == 0 && ia < self.counts.len() {
                ca = self.counts[ia] as u64;
                ia += 1;
                va = !va;
            }
            while cb == 0 && ib < other.counts.len() {
                cb = other.counts[ib] as u64;
                ib += 1;
                vb = !vb;
            }
            if ca == 0 || cb == 0 {
                break;
            }
            let c = ca.min(cb);
            if va || vb {
                union += c;
            }
            if va && vb {
                inter += c;
            }
            ca -= c;
            cb -= c;
            done += c;
        }
        if inter == 0 {
            return Ok(0.0);
        }
        let denom = if crowd { self.area() } else { union };
        Ok(inter as f64 / denom as f64)
    }

    /// `rleToString`.
    pub fn to_compressed(&self) -> String {
        let mut s = String::with_capacity(self.counts.len() * 2);
        for i in 0..self.counts.len() {
            let mut x = self.counts[i] as i64;
            if i > 2 {
                x -= self.counts[i - 2] as i64;
            }
            loop {
                let mut c = (x & 0x1f) as u8;
                x >>= 5;
                let more = if c & 0x10 != 0 { x != -1 } else { x != 0 };
                if more {
                    c |= 0x20;
                }
                s.push((c + 48) as char);
                if !more {
                    break;
                }
            }
        }
        s
    }

    /// `rleFrString`, strict: every character must be in pycocotools' alphabet, no value may overflow, no
    /// run may be negative, and the runs must cover exactly `height·width` pixels. Nothing is allocated
    /// beyond the string's own length.
    pub fn from_compressed(s: &str, height: u32, width: u32) -> Result<Self, MaskError> {
        check_size(height as u64, width as u64)?;
        let bytes = s.as_bytes();
        let mut counts: Vec<u32> = Vec::with_capacity(bytes.len());
        let mut p = 0usize;
        let mut total = 0u64;
        while p < bytes.len() {
            let (mut x, mut k) = (0i64, 0u32);
            loop {
                let Some(&byte) = bytes.get(p) else {
                    return Err(MaskError::Rle(format!(
                        "compressed counts end inside a value at character {p}"
                    )));
                };
                if !(48..=111).contains(&byte) {
                    return Err(MaskError::Rle(format!(
                        "character {:?} at {p} is not in the COCO RLE alphabet",
                        byte as char
                    )));
                }
                // Seven characters carry 35 bits: more than any u32 run or difference needs.
                if k >= 7 {
                    return Err(MaskError::Rle(format!("value too long at character {p}")));
                }
                let c = (byte - 48) as i64;
                x |= (c & 0x1f) << (5 * k);
                p += 1;
                k += 1;
                if c & 0x20 == 0 {
                    if c & 0x10 != 0 {
                        x |= -1i64 << (5 * k);
                    }
                    break;
                }
            }
            let m = counts.len();
            if m > 2 {
                x += counts[m - 2] as i64;
            }
            let run = u32::try_from(x)
                .map_err(|_| MaskError::Rle(format!("run {m} has length {x}, outside 0..2^32")))?;
            total += run as u64;
            counts.push(run);
        }
        Self::from_counts(height, width, counts).map_err(|e| {
            MaskError::Rle(format!(
                "{} (runs sum to {total})",
                e.to_string().trim_start_matches("invalid RLE: ")
            ))
        })
    }

    pub fn to_coco(&self) -> CocoRle {
        CocoRle {
            size: [self.height, self.width],
            counts: self.to_compressed(),
        }
    }

    pub fn from_coco(rle: &CocoRle) -> Result<Self, MaskError> {
        Self::from_compressed(&rle.counts, rle.size[0], rle.size[1])
    }

    /// `rleFrBbox`: the box `[x, y, w, h]` rasterised as the polygon of its corners.
    pub fn from_bbox(bbox: [f64; 4], height: u32, width: u32) -> Result<Self, MaskError> {
        let [x, y, w, h] = bbox;
        let (xe, ye) = (x + w, y + h);
        crate::polygon::rasterize(&[x, y, x, ye, xe, ye, xe, y], height, width)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask(w: usize, h: usize, on: &[(usize, usize)]) -> BinaryMask {
        let mut m = BinaryMask::zeros(w, h);
        for &(x, y) in on {
            m.data[y * w + x] = 1;
        }
        m
    }

    #[test]
    fn a_sampled_decode_is_the_full_decode_sampled_at_cell_centres() {
        // A pseudo-random blob over sizes that do and do not divide by the step.
        for (w, h) in [(37usize, 23usize), (64, 48), (9, 17)] {
            let on: Vec<(usize, usize)> = (0..w * h)
                .filter(|i| (i * 7919 + i / 5) % 3 == 0)
                .map(|i| (i % w, i / w))
                .collect();
            let full = mask(w, h, &on);
            let rle = Rle::encode(&full);
            for step in [1u32, 2, 4, 8] {
                let s = step as usize;
                let got = rle.decode_sampled(step);
                assert_eq!((got.width, got.height), (w.div_ceil(s), h.div_ceil(s)));
                for y in 0..got.height {
                    for x in 0..got.width {
                        let (fx, fy) = ((x * s + s / 2).min(w - 1), (y * s + s / 2).min(h - 1));
                        assert_eq!(
                            got.get(x, y),
                            full.get(fx, fy),
                            "{w}x{h} step {step} at {x},{y}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn runs_are_column_major_starting_with_background() {
        let m = mask(3, 2, &[(0, 0), (1, 1), (2, 1)]);
        let r = Rle::encode(&m);
        // Column-major sequence: (0,0)=1 (0,1)=0 (1,0)=0 (1,1)=1 (2,0)=0 (2,1)=1
        assert_eq!(r.counts, vec![0, 1, 2, 1, 1, 1]);
        assert_eq!(r.area(), 3);
        assert_eq!(r.decode(), m);
        assert_eq!(Rle::from_compressed(&r.to_compressed(), 2, 3).unwrap(), r);
    }

    #[test]
    fn string_code_matches_pycocotools_examples() {
        // Values checked with pycocotools 2.0.11: encode(np.asfortranarray(...))["counts"].
        let r = Rle::from_counts(10, 10, vec![5, 10, 85]).unwrap();
        assert_eq!(r.to_compressed(), "5:e2");
        // A stored difference that is negative: the fourth run is 3 + (−8) ... here 10 + (−8) = 2.
        let r = Rle::from_compressed("5:3H", 4, 5).unwrap();
        assert_eq!(r.counts, vec![5, 10, 3, 2]);
        let big = Rle::from_counts(1000, 1000, vec![123_456, 400_000, 476_544]).unwrap();
        let s = big.to_compressed();
        assert_eq!(Rle::from_compressed(&s, 1000, 1000).unwrap(), big);
    }

    #[test]
    fn malformed_strings_are_errors() {
        assert!(Rle::from_compressed("5:e2", 10, 11).is_err(), "wrong total");
        assert!(
            Rle::from_compressed("5:e", 10, 10).is_err(),
            "runs short of the pixel count"
        );
        assert!(
            Rle::from_compressed("5:e2\u{7f}", 10, 10).is_err(),
            "outside the alphabet"
        );
        assert!(
            Rle::from_compressed("o", 10, 10).is_err(),
            "continuation at the end"
        );
        assert!(
            Rle::from_compressed("ooooooo1", 10, 10).is_err(),
            "value too long"
        );
        assert!(
            Rle::from_compressed("0", 100_000, 100_000).is_err(),
            "absurd size"
        );
        assert!(
            Rle::from_compressed("533H", 10, 10).is_err(),
            "negative run: 3 + (−8)"
        );
    }

    #[test]
    fn merge_and_iou() {
        let a = Rle::encode(&mask(4, 4, &[(0, 0), (1, 0), (1, 1)]));
        let b = Rle::encode(&mask(4, 4, &[(1, 1), (2, 2)]));
        let u = Rle::merge(&[a.clone(), b.clone()], false).unwrap();
        assert_eq!(u.decode().area(), 4);
        assert_eq!(u, Rle::encode(&u.decode()));
        let i = Rle::merge(&[a.clone(), b.clone()], true).unwrap();
        assert_eq!(i.area(), 1);
        assert!((a.iou(&b, false).unwrap() - 0.25).abs() < 1e-12);
        assert!((a.iou(&b, true).unwrap() - 1.0 / 3.0).abs() < 1e-12);
        let e = Rle::encode(&BinaryMask::zeros(4, 4));
        assert_eq!(e.iou(&e, false).unwrap(), 0.0);
    }

    #[test]
    fn bbox_as_pycocotools() {
        let r = Rle::encode(&mask(5, 4, &[(1, 1), (3, 2)]));
        assert_eq!(r.bbox(), [1.0, 1.0, 3.0, 2.0]);
        assert_eq!(Rle::encode(&BinaryMask::zeros(5, 4)).bbox(), [0.0; 4]);
    }
}
