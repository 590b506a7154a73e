//! SAM's geometry, exactly as `segment_anything`'s `ResizeLongestSide` and `SamPredictor` do it: the photo is
//! resized (PIL bilinear on 8-bit RGB) so that its longest side is the encoder's size, normalised with SAM's
//! pixel statistics and zero-padded at the bottom/right; boxes are scaled into that frame; the decoder's
//! 256×256 logits are brought back to the photo (bilinear to the padded square, crop to the resized photo,
//! bilinear to the original size) and thresholded at 0.

use image::RgbImage;

use crate::masks::BinaryMask;
use crate::resample::{bilinear_taps, resize_u8_pil, Filter};

/// SAM's pixel mean and std on 0–255 values (segment_anything's `Sam` defaults).
pub const PIXEL_MEAN: [f32; 3] = [123.675, 116.28, 103.53];
pub const PIXEL_STD: [f32; 3] = [58.395, 57.12, 57.375];

/// The size of the photo inside the encoder's square: `ResizeLongestSide.get_preprocess_shape`
/// (scale in f64, round half up by `int(x + 0.5)`). Returns (height, width).
pub fn preprocess_shape(height: usize, width: usize, long_side: usize) -> (usize, usize) {
    let scale = long_side as f64 / height.max(width) as f64;
    let h = (height as f64 * scale + 0.5) as usize;
    let w = (width as f64 * scale + 0.5) as usize;
    (h.max(1), w.max(1))
}

/// The photo resized as `ResizeLongestSide.apply_image` does (torchvision's PIL path: bilinear, antialiased
/// when shrinking, 8-bit between passes).
pub fn resize_longest_side(image: &RgbImage, long_side: usize) -> RgbImage {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let (rh, rw) = preprocess_shape(h, w, long_side);
    let data = resize_u8_pil(image.as_raw(), w, h, 3, rw, rh, Filter::Bilinear);
    RgbImage::from_raw(rw as u32, rh as u32, data).expect("resize returns a full buffer")
}

/// The encoder's input `[3, size, size]` (row-major planes): `(x - mean) / std` on the resized photo, zeros
/// in the padding, as `Sam.preprocess`.
pub fn encoder_input(resized: &RgbImage, size: usize) -> Vec<f32> {
    let (w, h) = (resized.width() as usize, resized.height() as usize);
    let mut out = vec![0f32; 3 * size * size];
    for y in 0..h.min(size) {
        for x in 0..w.min(size) {
            let p = resized.get_pixel(x as u32, y as u32).0;
            for c in 0..3 {
                out[(c * size + y) * size + x] = (p[c] as f32 - PIXEL_MEAN[c]) / PIXEL_STD[c];
            }
        }
    }
    out
}

/// A box `[x0, y0, x1, y1]` in original pixels, mapped into the encoder's frame (`apply_boxes`: scaled per
/// axis in f64, then handed to the model as f32).
pub fn box_to_model_frame(
    bbox: [f32; 4],
    original: (usize, usize),
    resized: (usize, usize),
) -> [f32; 4] {
    let (oh, ow) = original;
    let (rh, rw) = resized;
    let sx = rw as f64 / ow as f64;
    let sy = rh as f64 / oh as f64;
    [
        (bbox[0] as f64 * sx) as f32,
        (bbox[1] as f64 * sy) as f32,
        (bbox[2] as f64 * sx) as f32,
        (bbox[3] as f64 * sy) as f32,
    ]
}

/// Why a box prompt was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BoxError {
    #[error("box {0:?} has a non-finite coordinate")]
    NotFinite([f32; 4]),
    #[error("box {0:?} is empty or inverted (need x0 < x1 and y0 < y1)")]
    Empty([f32; 4]),
    #[error("box {bbox:?} lies outside the {width}x{height} image")]
    OffImage {
        bbox: [f32; 4],
        width: usize,
        height: usize,
    },
}

/// A box as the predictor gets it: checked, and clipped to the image (a detector's box may overhang).
pub fn clip_box(bbox: [f32; 4], width: usize, height: usize) -> Result<[f32; 4], BoxError> {
    if bbox.iter().any(|v| !v.is_finite()) {
        return Err(BoxError::NotFinite(bbox));
    }
    if bbox[2] <= bbox[0] || bbox[3] <= bbox[1] {
        return Err(BoxError::Empty(bbox));
    }
    let (w, h) = (width as f32, height as f32);
    let clipped = [
        bbox[0].clamp(0.0, w),
        bbox[1].clamp(0.0, h),
        bbox[2].clamp(0.0, w),
        bbox[3].clamp(0.0, h),
    ];
    if clipped[2] <= clipped[0] || clipped[3] <= clipped[1] {
        return Err(BoxError::OffImage {
            bbox,
            width,
            height,
        });
    }
    Ok(clipped)
}

/// torch's `interpolate(bilinear, align_corners=False)` of one plane, restricted to the output rows/columns
/// `[0, keep_h) × [0, keep_w)` of a full `out_h × out_w` resize (the crop after SAM's first upsampling costs
/// nothing this way). Each output is `(x00·w0 + x01·w1)·h0 + (x10·w0 + x11·w1)·h1` in f32, torch's order.
fn bilinear_plane(
    src: &[f32],
    in_h: usize,
    in_w: usize,
    out_h: usize,
    out_w: usize,
    keep_h: usize,
    keep_w: usize,
) -> Vec<f32> {
    let ty = bilinear_taps(in_h, out_h);
    let tx = bilinear_taps(in_w, out_w);
    let mut out = vec![0f32; keep_h * keep_w];
    for (yo, t) in ty.iter().take(keep_h).enumerate() {
        let (h1, h0) = (t.frac, 1.0 - t.frac);
        let r0 = &src[t.lo * in_w..(t.lo + 1) * in_w];
        let r1 = &src[t.hi * in_w..(t.hi + 1) * in_w];
        let row = &mut out[yo * keep_w..(yo + 1) * keep_w];
        for (o, s) in row.iter_mut().zip(&tx) {
            let (w1, w0) = (s.frac, 1.0 - s.frac);
            let top = r0[s.lo] * w0 + r0[s.hi] * w1;
            let bottom = r1[s.lo] * w0 + r1[s.hi] * w1;
            *o = top * h0 + bottom * h1;
        }
    }
    out
}

/// The decoder's low-resolution logits (`low_res_h × low_res_w`, 256×256 for SAM) at the original photo's
/// size, as `SamPredictor.postprocess_masks`: bilinear to the encoder's square, crop to the resized photo,
/// bilinear to the original size.
pub fn upsample_logits(
    low_res: &[f32],
    low_res_size: (usize, usize),
    encoder_size: usize,
    resized: (usize, usize),
    original: (usize, usize),
) -> Vec<f32> {
    let (lh, lw) = low_res_size;
    let (ch, cw) = (resized.0.min(encoder_size), resized.1.min(encoder_size));
    let (oh, ow) = original;
    let square = bilinear_plane(low_res, lh, lw, encoder_size, encoder_size, ch, cw);
    bilinear_plane(&square, ch, cw, oh, ow, oh, ow)
}

/// The mask SAM's predictor returns: the upsampled logits above 0.
pub fn logits_to_mask(
    low_res: &[f32],
    low_res_size: (usize, usize),
    encoder_size: usize,
    resized: (usize, usize),
    original: (usize, usize),
) -> BinaryMask {
    let full = upsample_logits(low_res, low_res_size, encoder_size, resized, original);
    BinaryMask {
        width: original.1,
        height: original.0,
        data: full.iter().map(|&v| (v > 0.0) as u8).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preprocess_shape_rounds_half_up_like_python() {
        assert_eq!(preprocess_shape(480, 639, 1024), (769, 1024));
        assert_eq!(preprocess_shape(640, 481, 1024), (1024, 770));
        assert_eq!(preprocess_shape(1000, 1400, 1024), (731, 1024));
        assert_eq!(preprocess_shape(1, 5000, 1024), (1, 1024));
    }

    #[test]
    fn boxes_are_checked_then_clipped() {
        assert_eq!(
            clip_box([-10.0, 5.0, 50.0, 200.0], 100, 80),
            Ok([0.0, 5.0, 50.0, 80.0])
        );
        assert!(matches!(
            clip_box([10.0, 10.0, 10.0, 20.0], 100, 80),
            Err(BoxError::Empty(_))
        ));
        assert!(matches!(
            clip_box([30.0, 10.0, 20.0, 20.0], 100, 80),
            Err(BoxError::Empty(_))
        ));
        assert!(matches!(
            clip_box([f32::NAN, 10.0, 20.0, 20.0], 100, 80),
            Err(BoxError::NotFinite(_))
        ));
        assert!(matches!(
            clip_box([120.0, 10.0, 200.0, 20.0], 100, 80),
            Err(BoxError::OffImage { .. })
        ));
    }

    #[test]
    fn constant_logits_give_a_full_or_empty_mask_of_the_original_size() {
        let pos = vec![0.5f32; 16 * 16];
        let m = logits_to_mask(&pos, (16, 16), 64, (48, 64), (30, 40));
        assert_eq!((m.width, m.height, m.area()), (40, 30, 1200));
        let neg = vec![-0.5f32; 16 * 16];
        assert_eq!(
            logits_to_mask(&neg, (16, 16), 64, (48, 64), (30, 40)).area(),
            0
        );
    }

    #[test]
    fn logits_outside_the_resized_photo_do_not_leak_into_the_mask() {
        // Positive only in the padding rows (bottom quarter of the square): the photo itself stays empty.
        let mut low = vec![-1.0f32; 16 * 16];
        low[13 * 16..].fill(1.0);
        let m = logits_to_mask(&low, (16, 16), 64, (48, 64), (30, 40));
        assert_eq!(m.area(), 0);
    }
}
