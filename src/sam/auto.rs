//! "Segment everything": a port of segment_anything's `SamAutomaticMaskGenerator` on the ONNX pair, so that a
//! plain photo folder gets regions without boxes. Same point grids, crop boxes, thresholds, stability score,
//! box NMS (torchvision's greedy NMS on f32 boxes, stable by score) and small-region clean-up (OpenCV's
//! 8-connected components), in the same order, so the masks are the reference's.

use image::RgbImage;
use serde::{Deserialize, Serialize};

use super::transform::{preprocess_shape, upsample_logits};
use super::{SamError, SamModel};
use crate::masks::{BinaryMask, Rle};

/// `SamAutomaticMaskGenerator`'s parameters, with its defaults.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AutoMaskParams {
    pub points_per_side: usize,
    /// Prompts per decoder run, when the decoder export has a batch axis.
    pub points_per_batch: usize,
    pub pred_iou_thresh: f32,
    pub stability_score_thresh: f32,
    pub stability_score_offset: f32,
    /// Compared in f64, as torchvision's C++ kernel takes it.
    pub box_nms_thresh: f64,
    pub crop_n_layers: usize,
    pub crop_nms_thresh: f64,
    pub crop_overlap_ratio: f64,
    pub crop_n_points_downscale_factor: usize,
    /// Holes and islands smaller than this (pixels) are removed; 0 disables the clean-up.
    pub min_mask_region_area: usize,
}

impl Default for AutoMaskParams {
    fn default() -> Self {
        Self {
            points_per_side: 32,
            points_per_batch: 64,
            pred_iou_thresh: 0.88,
            stability_score_thresh: 0.95,
            stability_score_offset: 1.0,
            box_nms_thresh: 0.7,
            crop_n_layers: 0,
            crop_nms_thresh: 0.7,
            crop_overlap_ratio: 512.0 / 1500.0,
            crop_n_points_downscale_factor: 1,
            min_mask_region_area: 0,
        }
    }
}

impl AutoMaskParams {
    pub fn validate(&self) -> Result<(), String> {
        if self.points_per_side == 0 {
            return Err("points_per_side must be at least 1".into());
        }
        if self.crop_n_points_downscale_factor == 0 {
            return Err("crop_n_points_downscale_factor must be at least 1".into());
        }
        if self.crop_n_layers > 4 {
            return Err("crop_n_layers above 4 means thousands of encoder runs per photo".into());
        }
        for (name, v) in [
            ("pred_iou_thresh", self.pred_iou_thresh as f64),
            ("stability_score_thresh", self.stability_score_thresh as f64),
            ("stability_score_offset", self.stability_score_offset as f64),
            ("box_nms_thresh", self.box_nms_thresh),
            ("crop_nms_thresh", self.crop_nms_thresh),
            ("crop_overlap_ratio", self.crop_overlap_ratio),
        ] {
            if !v.is_finite() {
                return Err(format!("{name} must be a number"));
            }
        }
        Ok(())
    }
}

/// One automatic mask, as the generator's records (`output_mode="coco_rle"`).
#[derive(Debug, Clone)]
pub struct AutoMask {
    pub rle: Rle,
    pub area: u64,
    /// `[x, y, w, h]` with `w = x1 - x0` of the inclusive pixel box, as the reference writes it.
    pub bbox_xywh: [u32; 4],
    pub predicted_iou: f32,
    /// The grid point that prompted it, in photo pixels.
    pub point: [f64; 2],
    pub stability_score: f32,
    pub crop_box_xywh: [u32; 4],
}

/// Time spent per stage of one photo (seconds).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct AutoTimings {
    pub encoder_s: f64,
    pub decoder_s: f64,
    pub postprocess_s: f64,
    pub prompts: usize,
}

/// `build_point_grid`: numpy's `linspace(offset, 1 - offset, n)` (start + i·step, last = stop) on both axes,
/// x varying fastest.
pub fn point_grid(n: usize) -> Vec<[f64; 2]> {
    let offset = 1.0 / (2 * n) as f64;
    let (start, stop) = (offset, 1.0 - offset);
    let side: Vec<f64> = if n == 1 {
        vec![start]
    } else {
        let step = (stop - start) / (n - 1) as f64;
        let mut v: Vec<f64> = (0..n).map(|i| i as f64 * step + start).collect();
        v[n - 1] = stop;
        v
    };
    let mut out = Vec::with_capacity(n * n);
    for &y in &side {
        for &x in &side {
            out.push([x, y]);
        }
    }
    out
}

/// `generate_crop_boxes`: the whole photo, then `(2^(i+1))²` overlapping crops per layer; `[x0, y0, x1, y1]`
/// with the crop's layer.
pub fn crop_boxes(
    height: usize,
    width: usize,
    n_layers: usize,
    overlap_ratio: f64,
) -> Vec<([usize; 4], usize)> {
    let mut out = vec![([0, 0, width, height], 0)];
    let short = height.min(width) as f64;
    let crop_len = |orig: usize, n: usize, overlap: usize| -> usize {
        ((overlap as f64 * (n - 1) as f64 + orig as f64) / n as f64).ceil() as usize
    };
    for layer in 0..n_layers {
        let n = 1usize << (layer + 1);
        let overlap = (overlap_ratio * short * (2.0 / n as f64)) as usize;
        let cw = crop_len(width, n, overlap);
        let ch = crop_len(height, n, overlap);
        let x0s: Vec<usize> = (0..n).map(|i| (cw - overlap) * i).collect();
        let y0s: Vec<usize> = (0..n).map(|i| (ch - overlap) * i).collect();
        // itertools.product(x0s, y0s): x outer, y inner.
        for &x0 in &x0s {
            for &y0 in &y0s {
                out.push((
                    [x0, y0, (x0 + cw).min(width), (y0 + ch).min(height)],
                    layer + 1,
                ));
            }
        }
    }
    out
}

/// torchvision's `nms` on CPU: candidates by descending score (stable), greedy, suppressing IoU above the
/// threshold; f32 throughout. Returns the kept indices, best first.
pub fn nms(boxes: &[[f32; 4]], scores: &[f32], iou_threshold: f64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..boxes.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let area = |b: &[f32; 4]| (b[2] - b[0]) * (b[3] - b[1]);
    let mut suppressed = vec![false; boxes.len()];
    let mut keep = Vec::new();
    for (pos, &i) in order.iter().enumerate() {
        if suppressed[i] {
            continue;
        }
        keep.push(i);
        let bi = &boxes[i];
        let ai = area(bi);
        for &j in &order[pos + 1..] {
            if suppressed[j] {
                continue;
            }
            let bj = &boxes[j];
            let w = (bi[2].min(bj[2]) - bi[0].max(bj[0])).max(0.0);
            let h = (bi[3].min(bj[3]) - bi[1].max(bj[1])).max(0.0);
            let inter = w * h;
            let iou = inter / (ai + area(bj) - inter);
            if iou as f64 > iou_threshold {
                suppressed[j] = true;
            }
        }
    }
    keep
}

/// `batched_mask_to_box` of one mask: inclusive `[x0, y0, x1, y1]`, zeros when empty.
fn mask_box(data: &[u8], width: usize, height: usize) -> [u32; 4] {
    let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
    for y in 0..height {
        let row = &data[y * width..(y + 1) * width];
        if let Some(first) = row.iter().position(|&v| v != 0) {
            let last = width - 1 - row.iter().rev().position(|&v| v != 0).unwrap_or(0);
            x0 = x0.min(first);
            x1 = x1.max(last);
            y0 = y0.min(y);
            y1 = y;
        }
    }
    if x0 == usize::MAX {
        [0; 4]
    } else {
        [x0 as u32, y0 as u32, x1 as u32, y1 as u32]
    }
}

struct Candidate {
    /// Kept run-length encoded: a photo can have thousands of candidates.
    mask: Rle,
    /// In the photo's frame (uncropped), inclusive.
    bbox: [u32; 4],
    iou: f32,
    point: [f64; 2],
    stability: f32,
    crop: [usize; 4],
}

/// OpenCV's `connectedComponentsWithStats(mask, 8)` reduced to what `remove_small_regions` needs: a label per
/// pixel (0 for background) and each label's area.
fn components8(fg: &[bool], width: usize, height: usize) -> (Vec<u32>, Vec<usize>) {
    let mut labels = vec![0u32; fg.len()];
    let mut areas = vec![0usize];
    let mut stack = Vec::new();
    for start in 0..fg.len() {
        if !fg[start] || labels[start] != 0 {
            continue;
        }
        let label = areas.len() as u32;
        areas.push(0);
        labels[start] = label;
        stack.push(start);
        while let Some(p) = stack.pop() {
            areas[label as usize] += 1;
            let (x, y) = ((p % width) as isize, (p / width) as isize);
            for dy in -1..=1 {
                for dx in -1..=1 {
                    let (nx, ny) = (x + dx, y + dy);
                    if nx < 0 || ny < 0 || nx >= width as isize || ny >= height as isize {
                        continue;
                    }
                    let q = ny as usize * width + nx as usize;
                    if fg[q] && labels[q] == 0 {
                        labels[q] = label;
                        stack.push(q);
                    }
                }
            }
        }
    }
    (labels, areas)
}

/// `remove_small_regions`: fills holes (`holes = true`) or drops islands smaller than `area`; says whether
/// the mask changed.
pub fn remove_small_regions(mask: &BinaryMask, area: usize, holes: bool) -> (BinaryMask, bool) {
    let (w, h) = (mask.width, mask.height);
    let working: Vec<bool> = mask.data.iter().map(|&v| (v != 0) != holes).collect();
    let (labels, sizes) = components8(&working, w, h);
    let small: Vec<bool> = sizes
        .iter()
        .enumerate()
        .map(|(l, &s)| l > 0 && (s as f64) < area as f64)
        .collect();
    if !small.iter().any(|&s| s) {
        return (mask.clone(), false);
    }
    // Labels whose pixels end up in the mask.
    let fill: Vec<bool> = if holes {
        (0..sizes.len()).map(|l| l == 0 || small[l]).collect()
    } else {
        let mut f: Vec<bool> = (0..sizes.len()).map(|l| l != 0 && !small[l]).collect();
        if !f.iter().any(|&x| x) {
            // Every island is small: keep the largest (first on ties, as np.argmax).
            let mut best = 1;
            for l in 1..sizes.len() {
                if sizes[l] > sizes[best] {
                    best = l;
                }
            }
            f[best] = true;
        }
        f
    };
    let data = labels.iter().map(|&l| fill[l as usize] as u8).collect();
    (
        BinaryMask {
            width: w,
            height: h,
            data,
        },
        true,
    )
}

/// The masks SAM finds in a photo without any prompt from the user, best first per the reference's order.
pub fn generate(
    sam: &mut SamModel,
    image: &RgbImage,
    params: &AutoMaskParams,
) -> Result<(Vec<AutoMask>, AutoTimings), SamError> {
    params.validate().map_err(|m| SamError::Run {
        stage: "automatic masks",
        message: m,
    })?;
    let (ow, oh) = (image.width() as usize, image.height() as usize);
    let mut timings = AutoTimings::default();
    let grids: Vec<Vec<[f64; 2]>> = (0..=params.crop_n_layers)
        .map(|i| {
            point_grid(
                (params.points_per_side as f64
                    / (params.crop_n_points_downscale_factor as f64).powi(i as i32))
                    as usize,
            )
        })
        .collect();
    let crops = crop_boxes(oh, ow, params.crop_n_layers, params.crop_overlap_ratio);
    let mut all: Vec<Candidate> = Vec::new();
    for &(crop, layer) in &crops {
        let [x0, y0, x1, y1] = crop;
        let (cw, chh) = (x1 - x0, y1 - y0);
        if cw == 0 || chh == 0 {
            continue;
        }
        let cropped = image::imageops::crop_imm(image, x0 as u32, y0 as u32, cw as u32, chh as u32)
            .to_image();
        let t = std::time::Instant::now();
        let embedding = sam.embed(&cropped)?;
        timings.encoder_s += t.elapsed().as_secs_f64();
        let (rh, rw) = preprocess_shape(chh, cw, sam.image_size);
        let points: Vec<[f64; 2]> = grids[layer.min(grids.len() - 1)]
            .iter()
            .map(|p| [p[0] * cw as f64, p[1] * chh as f64])
            .collect();
        // The reference hands the decoder f64 coordinates and adds 0.5 before casting to f32; the ONNX graph
        // adds 0.5 to f32 input. Passing (f32(x + 0.5) - 0.5), exact in f32, gives the graph the same value.
        let model_points: Vec<[f32; 2]> = points
            .iter()
            .map(|p| {
                let x = p[0] * (rw as f64 / cw as f64);
                let y = p[1] * (rh as f64 / chh as f64);
                [((x + 0.5) as f32) - 0.5, ((y + 0.5) as f32) - 0.5]
            })
            .collect();
        let mut in_crop: Vec<Candidate> = Vec::new();
        // Batch by batch, as the reference does: all 1024 prompts' logits at once would be a gigabyte.
        let batch = params.points_per_batch.max(1);
        for (chunk_points, chunk_model) in points.chunks(batch).zip(model_points.chunks(batch)) {
            let t = std::time::Instant::now();
            let predictions = sam.predict_points(&embedding, chunk_model, batch)?;
            timings.decoder_s += t.elapsed().as_secs_f64();
            timings.prompts += predictions.len();
            let t = std::time::Instant::now();
            for (p, pred) in chunk_points.iter().zip(&predictions) {
                let n = pred.iou_predictions.len();
                if n < 2 {
                    return Err(SamError::Run {
                    stage: "automatic masks",
                    message: "the decoder returns a single mask; automatic masks need the multimask export \
                              (weights/export_sam.py)"
                        .into(),
                });
                }
                // predict_torch(multimask_output=True) keeps the multimask outputs, after the single-mask one.
                let first = if n == 4 { 1 } else { 0 };
                let plane = pred.low_res_size.0 * pred.low_res_size.1;
                for m in first..n {
                    let iou = pred.iou_predictions[m];
                    if params.pred_iou_thresh > 0.0 && !(iou > params.pred_iou_thresh) {
                        continue;
                    }
                    let logits = upsample_logits(
                        &pred.low_res[m * plane..(m + 1) * plane],
                        pred.low_res_size,
                        sam.image_size,
                        (rh, rw),
                        (chh, cw),
                    );
                    let hi = params.stability_score_offset;
                    let inter = logits.iter().filter(|&&v| v > hi).count();
                    let union = logits.iter().filter(|&&v| v > -hi).count();
                    let stability = inter as f32 / union as f32;
                    if params.stability_score_thresh > 0.0
                        && !(stability >= params.stability_score_thresh)
                    {
                        continue;
                    }
                    let data: Vec<u8> = logits.iter().map(|&v| (v > 0.0) as u8).collect();
                    let b = mask_box(&data, cw, chh);
                    let uncropped = [
                        b[0] + x0 as u32,
                        b[1] + y0 as u32,
                        b[2] + x0 as u32,
                        b[3] + y0 as u32,
                    ];
                    // Masks touching a crop's inner edge are cut off by it: dropped (never for the whole photo).
                    let near = |v: u32, edge: usize| (v as f32 - edge as f32).abs() <= 20.0;
                    let crop_edges = [x0, y0, x1, y1];
                    let photo_edges = [0, 0, ow, oh];
                    if (0..4).any(|k| {
                        near(uncropped[k], crop_edges[k]) && !near(uncropped[k], photo_edges[k])
                    }) {
                        continue;
                    }
                    let mut full = BinaryMask::zeros(ow, oh);
                    for y in 0..chh {
                        full.data[(y + y0) * ow + x0..(y + y0) * ow + x0 + cw]
                            .copy_from_slice(&data[y * cw..(y + 1) * cw]);
                    }
                    in_crop.push(Candidate {
                        mask: Rle::encode(&full),
                        bbox: uncropped,
                        iou,
                        point: [p[0] + x0 as f64, p[1] + y0 as f64],
                        stability,
                        crop,
                    });
                }
            }
            timings.postprocess_s += t.elapsed().as_secs_f64();
        }
        let t = std::time::Instant::now();
        // Within a crop, NMS runs on boxes in the crop's frame (the same IoUs as uncropped).
        let boxes: Vec<[f32; 4]> = in_crop
            .iter()
            .map(|c| {
                [
                    (c.bbox[0] as usize - x0) as f32,
                    (c.bbox[1] as usize - y0) as f32,
                    (c.bbox[2] as usize - x0) as f32,
                    (c.bbox[3] as usize - y0) as f32,
                ]
            })
            .collect();
        let scores: Vec<f32> = in_crop.iter().map(|c| c.iou).collect();
        let keep = nms(&boxes, &scores, params.box_nms_thresh);
        let mut slots: Vec<Option<Candidate>> = in_crop.into_iter().map(Some).collect();
        all.extend(keep.into_iter().filter_map(|i| slots[i].take()));
        timings.postprocess_s += t.elapsed().as_secs_f64();
    }
    let t = std::time::Instant::now();
    if crops.len() > 1 {
        // Between crops, prefer masks from smaller crops.
        let boxes: Vec<[f32; 4]> = all.iter().map(|c| c.bbox.map(|v| v as f32)).collect();
        let scores: Vec<f32> = all
            .iter()
            .map(|c| 1.0 / ((c.crop[2] - c.crop[0]) * (c.crop[3] - c.crop[1])) as f32)
            .collect();
        let keep = nms(&boxes, &scores, params.crop_nms_thresh);
        let mut slots: Vec<Option<Candidate>> = all.into_iter().map(Some).collect();
        all = keep.into_iter().filter_map(|i| slots[i].take()).collect();
    }
    if params.min_mask_region_area > 0 && !all.is_empty() {
        let area = params.min_mask_region_area;
        let mut unchanged = Vec::with_capacity(all.len());
        let mut cleaned = Vec::with_capacity(all.len());
        for c in &all {
            let (m, holes_changed) = remove_small_regions(&c.mask.decode(), area, true);
            let (m, islands_changed) = remove_small_regions(&m, area, false);
            unchanged.push(!(holes_changed || islands_changed));
            cleaned.push(m);
        }
        let boxes: Vec<[f32; 4]> = cleaned
            .iter()
            .map(|m| mask_box(&m.data, m.width, m.height).map(|v| v as f32))
            .collect();
        let scores: Vec<f32> = unchanged.iter().map(|&u| u as u8 as f32).collect();
        let keep = nms(
            &boxes,
            &scores,
            params.box_nms_thresh.max(params.crop_nms_thresh),
        );
        let mut slots: Vec<Option<(Candidate, BinaryMask)>> =
            all.into_iter().zip(cleaned).map(Some).collect();
        all = keep
            .into_iter()
            .filter_map(|i| {
                let (mut c, m) = slots[i].take()?;
                if !unchanged[i] {
                    c.bbox = mask_box(&m.data, m.width, m.height);
                    c.mask = Rle::encode(&m);
                }
                Some(c)
            })
            .collect();
    }
    let out = all
        .into_iter()
        .map(|c| {
            let rle = c.mask;
            AutoMask {
                area: rle.area(),
                rle,
                bbox_xywh: [
                    c.bbox[0],
                    c.bbox[1],
                    c.bbox[2] - c.bbox[0],
                    c.bbox[3] - c.bbox[1],
                ],
                predicted_iou: c.iou,
                point: c.point,
                stability_score: c.stability,
                crop_box_xywh: [
                    c.crop[0] as u32,
                    c.crop[1] as u32,
                    (c.crop[2] - c.crop[0]) as u32,
                    (c.crop[3] - c.crop[1]) as u32,
                ],
            }
        })
        .collect();
    timings.postprocess_s += t.elapsed().as_secs_f64();
    Ok((out, timings))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_point_grid_is_numpys_linspace_x_fastest() {
        let g = point_grid(4);
        assert_eq!(g.len(), 16);
        assert_eq!(g[0], [0.125, 0.125]);
        assert_eq!(g[1], [0.375, 0.125]);
        assert_eq!(g[15], [0.875, 0.875]);
        assert_eq!(point_grid(1), vec![[0.5, 0.5]]);
    }

    #[test]
    fn crop_boxes_match_the_reference_layout() {
        // generate_crop_boxes((480, 640), 1, 512 / 1500) in segment_anything.
        let c = crop_boxes(480, 640, 1, 512.0 / 1500.0);
        assert_eq!(c[0], ([0, 0, 640, 480], 0));
        let overlap = (512.0 / 1500.0 * 480.0) as usize; // 163
        let cw = ((overlap as f64 + 640.0) / 2.0).ceil() as usize;
        let ch = ((overlap as f64 + 480.0) / 2.0).ceil() as usize;
        assert_eq!(c.len(), 5);
        assert_eq!(c[1], ([0, 0, cw, ch], 1));
        assert_eq!(c[2], ([0, ch - overlap, cw, 480], 1));
        assert_eq!(c[3], ([cw - overlap, 0, 640, ch], 1));
    }

    #[test]
    fn nms_keeps_the_best_of_overlapping_boxes_in_score_order() {
        let boxes = [
            [0.0, 0.0, 10.0, 10.0],
            [1.0, 1.0, 10.0, 10.0],
            [20.0, 20.0, 30.0, 30.0],
            [0.0, 0.0, 10.0, 9.0],
        ];
        let keep = nms(&boxes, &[0.5, 0.9, 0.7, 0.9], 0.7);
        // 1 (0.9) suppresses 0 (IoU 0.81); 3 (0.9, after 1 by stability) has IoU 0.72 with 1: suppressed.
        assert_eq!(keep, vec![1, 2]);
    }

    #[test]
    fn small_holes_are_filled_and_small_islands_dropped() {
        let mut m = BinaryMask::zeros(10, 10);
        for y in 1..8 {
            for x in 1..8 {
                m.data[y * 10 + x] = 1;
            }
        }
        m.data[4 * 10 + 4] = 0; // a 1-pixel hole
        m.data[9 * 10 + 9] = 1; // a 1-pixel island
        let (filled, changed) = remove_small_regions(&m, 3, true);
        assert!(changed);
        assert_eq!(filled.data[44], 1);
        let (clean, changed) = remove_small_regions(&filled, 3, false);
        assert!(changed);
        assert_eq!(clean.data[99], 0);
        assert_eq!(clean.area(), 49);
        let (same, changed) = remove_small_regions(&clean, 3, false);
        assert!(!changed);
        assert_eq!(same, clean);
    }
}
