//! Region embeddings without inversion, in the same CLIP space, for comparison (`--method`, `eval`):
//! the whole image's CLS token, a box crop, a masked image, MaskCLIP-style mask pooling, a red ellipse
//! drawn around the region, and FGVP-style background blur.

use candle_core::{Result, Tensor};
use image::{Rgb, RgbImage};
use serde::Serialize;

use crate::clip::{preprocess, ClipModel};
use crate::masks::BinaryMask;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Baseline {
    /// The whole image's CLS embedding (the same for every region).
    Cls,
    /// The region's bounding box cut out and squash-resized (nothing of the region is cropped away).
    Crop,
    /// The full image with pixels outside the mask set to the dataset mean colour.
    MaskedCrop,
    /// MaskCLIP: last-block value path of the patch tokens, averaged inside the mask, then ln_post and proj.
    MaskPool,
    /// A red ellipse drawn around the region's box on the full image.
    RedCircle,
    /// FGVP: the background outside the mask Gaussian-blurred.
    Blur,
}

crate::choice::named_choice!(Baseline, "method", {
    Cls => "cls", Crop => "crop", MaskedCrop => "masked-crop", MaskPool => "mask-pool",
    RedCircle => "red-circle", Blur => "blur",
});

fn mean_colour(model: &ClipModel) -> Rgb<u8> {
    let m = model.config.normalization.mean;
    Rgb([
        (m[0] * 255.0).round() as u8,
        (m[1] * 255.0).round() as u8,
        (m[2] * 255.0).round() as u8,
    ])
}

fn masked(img: &RgbImage, mask: &BinaryMask, outside: impl Fn(u32, u32) -> Rgb<u8>) -> RgbImage {
    let mut out = img.clone();
    for (x, y, p) in out.enumerate_pixels_mut() {
        if mask.data[y as usize * mask.width + x as usize] == 0 {
            *p = outside(x, y);
        }
    }
    out
}

fn red_ellipse(img: &RgbImage, bbox: [usize; 4]) -> RgbImage {
    let mut out = img.clone();
    let (cx, cy) = (
        (bbox[0] + bbox[2]) as f64 / 2.0,
        (bbox[1] + bbox[3]) as f64 / 2.0,
    );
    // The ellipse circumscribes the box (axes ×√2), as in the red-circle prompting paper.
    let (rx, ry) = (
        (bbox[2] - bbox[0]) as f64 / 2.0 * 2f64.sqrt(),
        (bbox[3] - bbox[1]) as f64 / 2.0 * 2f64.sqrt(),
    );
    let thickness = (img.width().max(img.height()) as f64 / 112.0).max(1.0);
    for (x, y, p) in out.enumerate_pixels_mut() {
        let (dx, dy) = (
            (x as f64 + 0.5 - cx) / rx.max(1.0),
            (y as f64 + 0.5 - cy) / ry.max(1.0),
        );
        let r = (dx * dx + dy * dy).sqrt();
        // Distance to the ellipse, approximately, in pixels.
        if ((r - 1.0) * rx.min(ry).max(1.0)).abs() <= thickness / 2.0 {
            *p = Rgb([255, 0, 0]);
        }
    }
    out
}

/// The per-patch fraction of the mask on the S×S grid of the squash-resized image `[g²]`.
fn patch_weights(mask: &BinaryMask, grid: usize) -> Vec<f32> {
    let mut w = vec![0f32; grid * grid];
    let mut count = vec![0f32; grid * grid];
    for y in 0..mask.height {
        let gy = (y * grid / mask.height).min(grid - 1);
        for x in 0..mask.width {
            let gx = (x * grid / mask.width).min(grid - 1);
            count[gy * grid + gx] += 1.0;
            w[gy * grid + gx] += mask.data[y * mask.width + x] as f32;
        }
    }
    w.iter()
        .zip(&count)
        .map(|(a, c)| if *c > 0.0 { a / c } else { 0.0 })
        .collect()
}

/// Embeddings `[d]` (unnormalised) of each mask of one image with a baseline method. Masks must be valid
/// (non-empty, at the image's size): check with [`crate::invert::validate_mask`] first.
pub fn embed_regions(
    model: &ClipModel,
    img: &RgbImage,
    masks: &[BinaryMask],
    method: Baseline,
) -> Result<Vec<Vec<f32>>> {
    let size = model.config.vision.image_size as u32;
    let norm = &model.config.normalization;
    let dev = &model.device;
    let encode_batch = |images: Vec<RgbImage>, squash: bool| -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(images.len());
        for chunk in images.chunks(16) {
            let ts = chunk
                .iter()
                .map(|im| {
                    if squash {
                        preprocess::squash(im, size, norm, dev)
                    } else {
                        preprocess::resize_center_crop(im, size, norm, dev)
                    }
                })
                .collect::<Result<Vec<_>>>()?;
            out.extend(
                model
                    .vision
                    .forward(&Tensor::cat(&ts, 0)?)?
                    .to_vec2::<f32>()?,
            );
        }
        Ok(out)
    };
    match method {
        Baseline::Cls => {
            let e = encode_batch(vec![img.clone()], false)?.remove(0);
            Ok(vec![e; masks.len()])
        }
        Baseline::Crop => {
            let crops = masks
                .iter()
                .map(|m| {
                    let b = m.bbox().unwrap_or([0, 0, m.width, m.height]);
                    image::imageops::crop_imm(
                        img,
                        b[0] as u32,
                        b[1] as u32,
                        (b[2] - b[0]) as u32,
                        (b[3] - b[1]) as u32,
                    )
                    .to_image()
                })
                .collect();
            encode_batch(crops, true)
        }
        Baseline::MaskedCrop => {
            let c = mean_colour(model);
            encode_batch(
                masks.iter().map(|m| masked(img, m, |_, _| c)).collect(),
                false,
            )
        }
        Baseline::RedCircle => encode_batch(
            masks
                .iter()
                .map(|m| red_ellipse(img, m.bbox().unwrap_or([0, 0, m.width, m.height])))
                .collect(),
            false,
        ),
        Baseline::Blur => {
            let sigma = img.width().max(img.height()) as f32 / 50.0;
            let blurred = image::imageops::blur(img, sigma.max(1.0));
            encode_batch(
                masks
                    .iter()
                    .map(|m| masked(img, m, |x, y| *blurred.get_pixel(x, y)))
                    .collect(),
                false,
            )
        }
        Baseline::MaskPool => {
            let pixels = preprocess::squash(img, size, norm, dev)?;
            let tokens = model.vision.value_path_patch_tokens(&pixels)?.squeeze(0)?; // [g², C]
            mask_pool(model, &tokens, masks)
        }
    }
}

/// Mask pooling: per mask, the value-path patch tokens `[g², C]` of its (squashed) photo averaged with the
/// share of each patch the mask covers, projected into the embedding space (unnormalised `[d]` each).
pub fn mask_pool(
    model: &ClipModel,
    tokens: &Tensor,
    masks: &[BinaryMask],
) -> Result<Vec<Vec<f32>>> {
    if masks.is_empty() {
        return Ok(Vec::new());
    }
    let grid = (tokens.dim(0)? as f64).sqrt().round() as usize;
    let mut weights = Vec::with_capacity(masks.len() * grid * grid);
    for m in masks {
        let w = patch_weights(m, grid);
        let total: f32 = w.iter().sum::<f32>().max(1e-6);
        weights.extend(w.iter().map(|v| v / total));
    }
    let weights = Tensor::from_vec(weights, (masks.len(), grid * grid), tokens.device())?;
    let pooled = weights.matmul(&tokens.to_dtype(candle_core::DType::F32)?)?;
    model.vision.project_tokens(&pooled)?.to_vec2::<f32>()
}
