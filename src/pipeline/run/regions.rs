//! A photo's regions as masks: given ones checked, boxes drawn or prompted to SAM, or found in the photo
//! (`auto-sam`, `auto-grid`).

use image::RgbImage;

use crate::masks::BinaryMask;
use crate::sam::{box_mask, SamModel, SamOptions};

use crate::pipeline::inputs::{given_mask, RegionInput};
use crate::pipeline::spec::{MaskStage, PipelineSpec};

/// The masks of one photo's regions from the spec's mask stage (per region: the mask or why not).
pub fn make_masks(
    image: &RgbImage,
    regions: &[RegionInput],
    stage: MaskStage,
    sam: Option<&mut SamModel>,
    sam_options: SamOptions,
) -> Vec<Result<BinaryMask, String>> {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let need_box = |r: &RegionInput| r.bbox.ok_or_else(|| "region has no box".to_string());
    match stage {
        MaskStage::Given => regions.iter().map(|r| given_mask(r, w, h)).collect(),
        MaskStage::Box => regions
            .iter()
            .map(|r| need_box(r).and_then(|b| box_mask(b, w, h).map_err(|e| e.to_string())))
            .collect(),
        MaskStage::AutoSam | MaskStage::AutoGrid | MaskStage::Propose => regions
            .iter()
            .map(|_| Err("this mask stage finds its own regions (find_regions)".to_string()))
            .collect(),
        MaskStage::Sam => {
            let Some(sam) = sam else {
                return regions
                    .iter()
                    .map(|_| Err("no SAM model loaded (--sam DIR)".to_string()))
                    .collect();
            };
            let embedding = match sam.embed(image) {
                Ok(e) => e,
                Err(e) => return regions.iter().map(|_| Err(e.to_string())).collect(),
            };
            regions
                .iter()
                .map(|r| {
                    need_box(r).and_then(|b| {
                        sam.predict_box(&embedding, b, sam_options)
                            .map(|m| m.mask)
                            .map_err(|e| e.to_string())
                    })
                })
                .collect()
        }
    }
}

/// The regions a photo's own content gives (`auto-sam`, `auto-grid`): ids stable for the same photo, model
/// and parameters (the mask's rank in the generator's order, or the box's geometry), with their masks.
pub fn find_regions(
    image: &RgbImage,
    stage: MaskStage,
    sam: Option<&mut SamModel>,
    spec: &PipelineSpec,
) -> Result<(Vec<RegionInput>, Vec<Result<BinaryMask, String>>), String> {
    let (w, h) = (image.width() as usize, image.height() as usize);
    match stage {
        MaskStage::AutoSam => {
            let sam = sam.ok_or("no SAM model loaded (--sam DIR)")?;
            let params = spec.auto_sam.unwrap_or_default();
            let (found, _) =
                crate::sam::auto::generate(sam, image, &params).map_err(|e| e.to_string())?;
            Ok(found
                .into_iter()
                .enumerate()
                .map(|(i, m)| {
                    let [x, y, bw, bh] = m.bbox_xywh;
                    let region = RegionInput {
                        id: format!("auto-{i:04}"),
                        // The reference's inclusive pixel box, as an [x0, y0, x1, y1] edge box.
                        bbox: Some([x as f32, y as f32, (x + bw + 1) as f32, (y + bh + 1) as f32]),
                        shape: crate::pipeline::inputs::RegionShape::Box,
                        label: None,
                    };
                    (region, Ok(m.rle.decode()))
                })
                .unzip())
        }
        MaskStage::AutoGrid => {
            let params = spec.auto_grid.clone().unwrap_or_default();
            Ok(grid_boxes(w, h, &params)
                .into_iter()
                .map(|b| {
                    let bbox = b.map(|v| v as f32);
                    let region = RegionInput {
                        id: format!("grid-{}x{}+{}+{}", b[2] - b[0], b[3] - b[1], b[0], b[1]),
                        bbox: Some(bbox),
                        shape: crate::pipeline::inputs::RegionShape::Box,
                        label: None,
                    };
                    (region, box_mask(bbox, w, h).map_err(|e| e.to_string()))
                })
                .unzip())
        }
        other => Err(format!("mask stage {other:?} needs regions from the input")),
    }
}

/// Sliding boxes `[x0, y0, x1, y1]` per scale (side = scale × shorter side), the last row and column flush
/// with the photo's edges; a box repeated across scales appears once.
pub fn grid_boxes(
    width: usize,
    height: usize,
    params: &crate::pipeline::spec::AutoGridParams,
) -> Vec<[usize; 4]> {
    let mut out: Vec<[usize; 4]> = Vec::new();
    let short = width.min(height);
    if short == 0 {
        return out;
    }
    for &scale in &params.scales {
        let side = ((scale * short as f64).round() as usize).clamp(1, short);
        let stride = ((side as f64 * (1.0 - params.overlap)).round() as usize).max(1);
        let starts = |len: usize| -> Vec<usize> {
            let mut v: Vec<usize> = (0..)
                .map(|i| i * stride)
                .take_while(|&s| s + side <= len)
                .collect();
            if v.last().is_none_or(|&last| last + side < len) {
                v.push(len - side);
            }
            v
        };
        for y in starts(height) {
            for x in starts(width) {
                let b = [x, y, x + side, y + side];
                if !out.contains(&b) {
                    out.push(b);
                }
            }
        }
    }
    out
}
