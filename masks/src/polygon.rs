//! COCO polygon rasterisation exactly as pycocotools' `rleFrPoly`: the boundary is walked densely on a 5×
//! upsampled grid, its crossings of pixel-centre columns become run boundaries, and the runs are built from
//! the sorted crossings. Coordinates are truncated toward zero after `+0.5` as C's `(int)` cast does.

use crate::{MaskError, Rle};

const SCALE: f64 = 5.0;

/// How far outside the image a vertex may lie. pycocotools accepts anything, but the dense boundary walk is
/// linear in the polygon's length, so an absurd coordinate (a corrupt file, a fuzzer) would cost gigabytes.
/// Real annotations stay within a pixel or two of the image.
fn coordinate_limit(height: u32, width: u32) -> f64 {
    4.0 * (height.max(width) as f64) + 64.0
}

/// Rasterises one polygon `[x0, y0, x1, y1, ...]` at `height × width`.
pub fn rasterize(xy: &[f64], height: u32, width: u32) -> Result<Rle, MaskError> {
    if xy.len() % 2 != 0 {
        return Err(MaskError::Polygon(format!(
            "odd number of coordinates ({})",
            xy.len()
        )));
    }
    if xy.len() < 6 {
        return Err(MaskError::Polygon(format!(
            "a polygon needs at least 3 points, got {}",
            xy.len() / 2
        )));
    }
    if height == 0 || width == 0 {
        return Err(MaskError::Polygon(format!(
            "image size {height}x{width} is empty"
        )));
    }
    let limit = coordinate_limit(height, width);
    if let Some(bad) = xy.iter().find(|v| !v.is_finite() || v.abs() > limit) {
        return Err(MaskError::Polygon(format!(
            "coordinate {bad} is not finite or lies far outside the {width}x{height} image"
        )));
    }
    let (h, w) = (height as i64, width as i64);
    let k = xy.len() / 2;
    let cast = |v: f64| (SCALE * v + 0.5) as i32 as i64; // C's (int): toward zero
    let mut x: Vec<i64> = (0..k).map(|j| cast(xy[2 * j])).collect();
    let mut y: Vec<i64> = (0..k).map(|j| cast(xy[2 * j + 1])).collect();
    x.push(x[0]);
    y.push(y[0]);

    // Dense boundary points.
    let total: usize = (0..k)
        .map(|j| (x[j] - x[j + 1]).abs().max((y[j] - y[j + 1]).abs()) as usize + 1)
        .sum();
    let mut u = Vec::with_capacity(total);
    let mut v = Vec::with_capacity(total);
    for j in 0..k {
        let (mut xs, mut xe, mut ys, mut ye) = (x[j], x[j + 1], y[j], y[j + 1]);
        let dx = (xe - xs).abs();
        let dy = (ys - ye).abs();
        let flip = (dx >= dy && xs > xe) || (dx < dy && ys > ye);
        if flip {
            std::mem::swap(&mut xs, &mut xe);
            std::mem::swap(&mut ys, &mut ye);
        }
        if dx >= dy {
            let s = if dx == 0 {
                0.0
            } else {
                (ye - ys) as f64 / dx as f64
            };
            for d in 0..=dx {
                let t = if flip { dx - d } else { d };
                u.push(t + xs);
                v.push((ys as f64 + s * t as f64 + 0.5) as i32 as i64);
            }
        } else {
            let s = (xe - xs) as f64 / dy as f64;
            for d in 0..=dy {
                let t = if flip { dy - d } else { d };
                v.push(t + ys);
                u.push((xs as f64 + s * t as f64 + 0.5) as i32 as i64);
            }
        }
    }

    // Crossings of pixel-centre columns, downsampled to pixel coordinates.
    let mut starts: Vec<u32> = Vec::new();
    for j in 1..u.len() {
        if u[j] == u[j - 1] {
            continue;
        }
        let xd = (if u[j] < u[j - 1] { u[j] } else { u[j] - 1 }) as f64;
        let xd = (xd + 0.5) / SCALE - 0.5;
        if xd.floor() != xd || xd < 0.0 || xd > (w - 1) as f64 {
            continue;
        }
        let yd = (if v[j] < v[j - 1] { v[j] } else { v[j - 1] }) as f64;
        let yd = ((yd + 0.5) / SCALE - 0.5).clamp(0.0, h as f64).ceil();
        starts.push((xd as i64 * h + yd as i64) as u32);
    }
    starts.push((h * w) as u32);
    starts.sort_unstable();

    // Differences, with zero-length runs folded into their neighbours as pycocotools does.
    let mut prev = 0u32;
    for a in starts.iter_mut() {
        let t = *a;
        *a -= prev;
        prev = t;
    }
    let mut counts = Vec::with_capacity(starts.len());
    let mut j = 0usize;
    counts.push(starts[j]);
    j += 1;
    while j < starts.len() {
        if starts[j] > 0 {
            counts.push(starts[j]);
            j += 1;
        } else {
            j += 1;
            if j < starts.len() {
                *counts.last_mut().expect("counts starts non-empty") += starts[j];
                j += 1;
            }
        }
    }
    Ok(Rle {
        height,
        width,
        counts,
    })
}

/// A COCO polygon segmentation (several parts) as pycocotools' `annToRLE` makes it: each part rasterised,
/// then the union by `rleMerge`.
pub fn rasterize_all(polygons: &[Vec<f64>], height: u32, width: u32) -> Result<Rle, MaskError> {
    if polygons.is_empty() {
        return Err(MaskError::Polygon("segmentation has no polygon".into()));
    }
    let parts = polygons
        .iter()
        .enumerate()
        .map(|(i, p)| {
            rasterize(p, height, width).map_err(|e| match e {
                MaskError::Polygon(m) if polygons.len() > 1 => {
                    MaskError::Polygon(format!("part {i}: {m}"))
                }
                other => other,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Rle::merge(&parts, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_square_covers_the_pixels_whose_centres_it_contains() {
        // pycocotools: frPyObjects([[1,1, 1,4, 4,4, 4,1]], 6, 6) -> a 3x3 block at x,y in 1..=3.
        let r = rasterize(&[1.0, 1.0, 1.0, 4.0, 4.0, 4.0, 4.0, 1.0], 6, 6).unwrap();
        let m = r.decode();
        assert_eq!(m.bbox(), Some([1, 1, 4, 4]));
        assert_eq!(r.area(), 9);
        assert_eq!(r.to_compressed(), "733000;");
    }

    #[test]
    fn malformed_polygons_are_errors() {
        assert!(rasterize(&[1.0, 2.0, 3.0], 5, 5).is_err());
        assert!(rasterize(&[1.0, 2.0, 3.0, 4.0], 5, 5).is_err());
        assert!(rasterize(&[0.0, 0.0, f64::NAN, 1.0, 2.0, 2.0], 5, 5).is_err());
        assert!(rasterize(&[0.0, 0.0, 1e12, 1.0, 2.0, 2.0], 5, 5).is_err());
        assert!(rasterize(&[0.0, 0.0, 1.0, 1.0, 2.0, 2.0], 0, 5).is_err());
        assert!(rasterize_all(&[], 5, 5).is_err());
    }

    #[test]
    fn polygons_partly_off_the_image_are_clipped() {
        let r = rasterize(&[-3.0, -3.0, -3.0, 2.0, 2.0, 2.0, 2.0, -3.0], 6, 6).unwrap();
        assert_eq!(r.counts.iter().map(|&c| c as u64).sum::<u64>(), 36);
        assert_eq!(r.decode().bbox(), Some([0, 0, 2, 2]));
    }
}
