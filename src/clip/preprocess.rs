//! Turning an RGB photo into the model's input tensor, exactly as the reference does.

use candle_core::{Device, Result, Tensor};
use image::RgbImage;

use super::config::Normalization;
use crate::resample::{resize_u8_pil, Filter};

/// PIL-identical bicubic resize of an RGB image to `width`×`height` (no aspect preservation).
pub fn resize_rgb(img: &RgbImage, width: u32, height: u32) -> RgbImage {
    if img.width() == width && img.height() == height {
        return img.clone();
    }
    let out = resize_u8_pil(
        img.as_raw(),
        img.width() as usize,
        img.height() as usize,
        3,
        width as usize,
        height as usize,
        Filter::Bicubic,
    );
    RgbImage::from_raw(width, height, out).expect("resize produced a buffer of the requested size")
}

/// `[1, 3, H, W]` tensor: /255, then (x − mean)/std per channel.
pub fn to_tensor(img: &RgbImage, norm: &Normalization, device: &Device) -> Result<Tensor> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let raw = img.as_raw();
    let mut planar = vec![0f32; 3 * h * w];
    for c in 0..3 {
        let (m, s) = (norm.mean[c], norm.std[c]);
        for i in 0..h * w {
            planar[c * h * w + i] = (raw[i * 3 + c] as f32 / 255.0 - m) / s;
        }
    }
    Tensor::from_vec(planar, (1, 3, h, w), device)
}

/// The MaskInversion input: squash-resize to S×S with PIL bicubic, normalise.
pub fn squash(img: &RgbImage, size: u32, norm: &Normalization, device: &Device) -> Result<Tensor> {
    to_tensor(&resize_rgb(img, size, size), norm, device)
}

/// CLIP's usual evaluation transform: the short side to S (torchvision's rounding), then centre crop S×S.
pub fn resize_center_crop_image(img: &RgbImage, size: u32) -> RgbImage {
    let (w, h) = (img.width(), img.height());
    let (nw, nh) = if w <= h {
        (size, ((size as u64 * h as u64) / w as u64) as u32)
    } else {
        (((size as u64 * w as u64) / h as u64) as u32, size)
    };
    let resized = resize_rgb(img, nw.max(size), nh.max(size));
    let left = ((resized.width() - size) as f64 / 2.0).round() as u32;
    let top = ((resized.height() - size) as f64 / 2.0).round() as u32;
    image::imageops::crop_imm(&resized, left, top, size, size).to_image()
}

pub fn resize_center_crop(
    img: &RgbImage,
    size: u32,
    norm: &Normalization,
    device: &Device,
) -> Result<Tensor> {
    to_tensor(&resize_center_crop_image(img, size), norm, device)
}
