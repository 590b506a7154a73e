//! Regions of a photo found from its own quick forward, for a library without annotations or SAM: boxes on
//! the patch grid scored by how much they look like one thing that stands out, then non-maximum suppression
//! down to a small budget. The scores come from the value-path patch embeddings the quick tier pools anyway
//! (MaskCLIP's dense features), so proposing costs no extra forward.
//!
//! A box scores high when (1) its patches agree with each other (coherence: the length of their mean unit
//! vector, the mean pairwise cosine), (2) they differ from the band of patches around it (contrast: one minus
//! the cosine between the box's mean and the band's), so that a box cut inside an object or spilling over its
//! edge scores lower than the object's own box, and (3) the photo's CLS embedding points at them more than at
//! the average patch (concentration of the CLS-to-patch similarity, MaskCLIP's localisation of what the
//! photo is about). The product needs no weights to tune.

use serde::{Deserialize, Serialize};

/// `[propose]` of a spec: how many regions a photo gets and how they are chosen.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProposeParams {
    /// Regions per photo at most (the whole-photo row is extra).
    pub max_regions: usize,
    /// Two kept regions overlap at most this much (intersection over union).
    pub nms_iou: f64,
    /// A box's shorter side at least this share of the patch grid (at least one patch).
    pub min_side: f64,
    /// With SAM: masks smaller than this share of the photo are dropped.
    pub min_area: f64,
}

impl Default for ProposeParams {
    fn default() -> Self {
        Self {
            max_regions: 24,
            nms_iou: 0.5,
            min_side: 0.15,
            min_area: 0.005,
        }
    }
}

impl ProposeParams {
    pub fn validate(&self) -> Result<(), String> {
        if self.max_regions == 0 || self.max_regions > 1000 {
            return Err("max_regions must be in 1..=1000".into());
        }
        if !(self.nms_iou > 0.0 && self.nms_iou <= 1.0) {
            return Err("nms_iou must be in (0, 1]".into());
        }
        if !(0.0..=1.0).contains(&self.min_side) || !(0.0..1.0).contains(&self.min_area) {
            return Err("min_side must be in [0, 1] and min_area in [0, 1)".into());
        }
        Ok(())
    }
}

/// A proposed box on the patch grid, `[x0, y0, x1, y1)` in patches, with its score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GridBox {
    pub cells: [usize; 4],
    pub score: f32,
}

impl GridBox {
    /// The box in pixels of a `width`×`height` photo squashed onto the grid.
    pub fn pixels(&self, grid: usize, width: usize, height: usize) -> [usize; 4] {
        let at = |cell: usize, len: usize| (cell * len + grid / 2) / grid;
        // At least one pixel wide and inside the photo, however small the photo is against the grid.
        let span = |c0: usize, c1: usize, len: usize| {
            let start = at(c0, len).min(len.saturating_sub(1));
            (start, at(c1, len).clamp(start + 1, len.max(1)))
        };
        let [x0, y0, x1, y1] = self.cells;
        let (px0, px1) = span(x0, x1, width);
        let (py0, py1) = span(y0, y1, height);
        [px0, py0, px1, py1]
    }
}

/// Sums over rectangles of a `g`×`g` grid of `d`-vectors in O(d) each.
struct Integral {
    g: usize,
    d: usize,
    /// `[(g+1)², d]`.
    sums: Vec<f64>,
}

impl Integral {
    fn new(values: &[f32], g: usize, d: usize) -> Self {
        let w = g + 1;
        let mut sums = vec![0f64; w * w * d];
        for y in 0..g {
            for x in 0..g {
                let at = ((y + 1) * w + x + 1) * d;
                let up = (y * w + x + 1) * d;
                let left = ((y + 1) * w + x) * d;
                let diag = (y * w + x) * d;
                let v = &values[(y * g + x) * d..(y * g + x + 1) * d];
                for k in 0..d {
                    sums[at + k] = v[k] as f64 + sums[up + k] + sums[left + k] - sums[diag + k];
                }
            }
        }
        Self { g, d, sums }
    }

    fn rect(&self, [x0, y0, x1, y1]: [usize; 4], out: &mut [f64]) {
        let w = self.g + 1;
        let (a, b, c, e) = (
            (y1 * w + x1) * self.d,
            (y0 * w + x1) * self.d,
            (y1 * w + x0) * self.d,
            (y0 * w + x0) * self.d,
        );
        for k in 0..self.d {
            out[k] = self.sums[a + k] - self.sums[b + k] - self.sums[c + k] + self.sums[e + k];
        }
    }
}

fn unit(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 && n.is_finite() {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa > 0.0 && bb > 0.0 {
        ab / (aa * bb).sqrt()
    } else {
        0.0
    }
}

pub fn iou(a: [usize; 4], b: [usize; 4]) -> f64 {
    let ix = a[2].min(b[2]).saturating_sub(a[0].max(b[0]));
    let iy = a[3].min(b[3]).saturating_sub(a[1].max(b[1]));
    let inter = (ix * iy) as f64;
    let area = |r: [usize; 4]| ((r[2] - r[0]) * (r[3] - r[1])) as f64;
    let union = area(a) + area(b) - inter;
    if union > 0.0 {
        inter / union
    } else {
        0.0
    }
}

/// Boxes for one photo from its patch embeddings `[g², d]` (projected, any scale) and its CLS embedding `[d]`:
/// every box on the grid but the whole photo, scored (see the module), best first, non-redundant, at most
/// `params.max_regions`.
pub fn propose_boxes(
    patches: &[f32],
    cls: &[f32],
    grid: usize,
    params: &ProposeParams,
) -> Vec<GridBox> {
    let d = cls.len();
    if grid == 0 || d == 0 || patches.len() != grid * grid * d {
        return Vec::new();
    }
    let mut units = patches.to_vec();
    units.chunks_exact_mut(d).for_each(unit);
    let mut c = cls.to_vec();
    unit(&mut c);
    // Concentration: the CLS-to-patch similarity, shifted to be positive, as a share of the photo's.
    let sim: Vec<f32> = units
        .chunks_exact(d)
        .map(|p| p.iter().zip(&c).map(|(a, b)| a * b).sum::<f32>())
        .collect();
    let low = sim.iter().copied().fold(f32::INFINITY, f32::min);
    let weight: Vec<f32> = sim.iter().map(|s| s - low + 1e-3).collect();
    let total_weight: f64 = weight.iter().map(|&w| w as f64).sum();
    let features = Integral::new(&units, grid, d);
    let saliency = Integral::new(&weight, grid, 1);
    let min_side = ((params.min_side * grid as f64).round() as usize).max(1);
    let (mut inside, mut outer, mut band, mut mass) =
        (vec![0f64; d], vec![0f64; d], vec![0f64; d], [0f64]);
    let mut scored = Vec::new();
    for y0 in 0..grid {
        for y1 in (y0 + min_side)..=grid {
            for x0 in 0..grid {
                for x1 in (x0 + min_side)..=grid {
                    let cells = [x0, y0, x1, y1];
                    if cells == [0, 0, grid, grid] {
                        continue; // the whole photo has its own row
                    }
                    let area = ((x1 - x0) * (y1 - y0)) as f64;
                    features.rect(cells, &mut inside);
                    let coherence = inside.iter().map(|v| v * v).sum::<f64>().sqrt() / area;
                    // The band around the box, as wide as a quarter of its shorter side (a patch at least).
                    let r = ((x1 - x0).min(y1 - y0) / 4).max(1);
                    let grown = [
                        x0.saturating_sub(r),
                        y0.saturating_sub(r),
                        (x1 + r).min(grid),
                        (y1 + r).min(grid),
                    ];
                    features.rect(grown, &mut outer);
                    band.iter_mut()
                        .zip(outer.iter().zip(&inside))
                        .for_each(|(b, (o, i))| *b = o - i);
                    let contrast = if band.iter().all(|v| *v == 0.0) {
                        0.0 // touches every edge: nothing around it to stand out from
                    } else {
                        (1.0 - cosine(&inside, &band)).max(0.0)
                    };
                    saliency.rect(cells, &mut mass);
                    let concentration = (mass[0] / total_weight) / (area / (grid * grid) as f64);
                    let score = coherence * contrast * concentration;
                    scored.push(GridBox {
                        cells,
                        score: score as f32,
                    });
                }
            }
        }
    }
    // Best first; ties broken by position so that the choice never depends on the sort's internals.
    scored.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| a.cells.cmp(&b.cells))
    });
    let mut kept: Vec<GridBox> = Vec::new();
    for b in scored {
        if kept.len() == params.max_regions {
            break;
        }
        if !b.score.is_finite() || b.score <= 0.0 {
            continue;
        }
        if kept.iter().all(|k| iou(k.cells, b.cells) <= params.nms_iou) {
            kept.push(b);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 10×10 grid of background vectors (slowly varying) with one object of identical vectors at
    /// cells [3, 2, 7, 5), and a CLS embedding that points at the object.
    fn scene() -> (Vec<f32>, Vec<f32>, usize) {
        let g = 10;
        let mut patches = Vec::new();
        for y in 0..g {
            for x in 0..g {
                let object = (3..7).contains(&x) && (2..5).contains(&y);
                let v: Vec<f32> = if object {
                    vec![0.0, 0.0, 0.0, 0.0, 1.0, 0.9, 0.1, 0.0]
                } else {
                    vec![
                        1.0,
                        0.3 * x as f32 / g as f32,
                        0.3 * y as f32 / g as f32,
                        0.2,
                        0.0,
                        0.0,
                        0.0,
                        0.1,
                    ]
                };
                patches.extend(v);
            }
        }
        let cls = vec![0.2, 0.0, 0.0, 0.0, 1.0, 0.8, 0.1, 0.0];
        (patches, cls, g)
    }

    #[test]
    fn the_object_is_the_best_box_and_kept_boxes_do_not_repeat_each_other() {
        let (patches, cls, g) = scene();
        let params = ProposeParams {
            max_regions: 6,
            ..Default::default()
        };
        let boxes = propose_boxes(&patches, &cls, g, &params);
        assert_eq!(boxes[0].cells, [3, 2, 7, 5], "{boxes:?}");
        assert!(boxes.len() <= 6 && boxes.len() >= 2, "{boxes:?}");
        for (i, a) in boxes.iter().enumerate() {
            assert_ne!(a.cells, [0, 0, g, g]);
            for b in &boxes[i + 1..] {
                assert!(iou(a.cells, b.cells) <= 0.5, "{a:?} {b:?}");
                assert!(a.score >= b.score);
            }
        }
        // Deterministic: the same photo gives the same regions (their ids are how a rerun finds them).
        assert_eq!(boxes, propose_boxes(&patches, &cls, g, &params));
    }

    #[test]
    fn boxes_map_onto_the_photo_inside_its_bounds() {
        let b = GridBox {
            cells: [0, 3, 7, 7],
            score: 1.0,
        };
        assert_eq!(b.pixels(7, 640, 480), [0, 206, 640, 480]);
        for (w, h) in [(5, 5), (1, 1), (2, 3), (640, 1)] {
            for cells in [[6, 6, 7, 7], [0, 0, 1, 1], [3, 2, 7, 5]] {
                let p = GridBox { cells, score: 1.0 }.pixels(7, w, h);
                assert!(
                    p[0] < p[2] && p[1] < p[3] && p[2] <= w && p[3] <= h,
                    "{cells:?} on {w}x{h}: {p:?}"
                );
            }
        }
    }

    #[test]
    fn bad_inputs_give_no_boxes_and_budgets_are_checked() {
        assert!(propose_boxes(&[1.0; 10], &[1.0; 4], 3, &ProposeParams::default()).is_empty());
        assert!(ProposeParams {
            max_regions: 0,
            ..Default::default()
        }
        .validate()
        .is_err());
        assert!(ProposeParams::default().validate().is_ok());
    }
}
