//! Masks as plain data: a binary mask at an image's own resolution, read from PNG files.

use std::path::{Path, PathBuf};

use image::DynamicImage;

#[derive(Debug, thiserror::Error)]
pub enum MaskError {
    #[error("cannot read mask {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("mask buffer of {len} values does not match {width}x{height}")]
    Size {
        width: usize,
        height: usize,
        len: usize,
    },
}

/// A binary mask, row-major, one byte per pixel (0 or 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinaryMask {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

impl BinaryMask {
    pub fn new(width: usize, height: usize, data: Vec<u8>) -> Result<Self, MaskError> {
        if data.len() != width * height {
            return Err(MaskError::Size {
                width,
                height,
                len: data.len(),
            });
        }
        Ok(Self {
            width,
            height,
            data: data.into_iter().map(|v| (v != 0) as u8).collect(),
        })
    }

    pub fn zeros(width: usize, height: usize) -> Self {
        Self {
            width,
            height,
            data: vec![0; width * height],
        }
    }

    /// A filled rectangle `[x0, x1) × [y0, y1)`, clipped to the mask.
    pub fn from_box(width: usize, height: usize, x0: f64, y0: f64, x1: f64, y1: f64) -> Self {
        let mut m = Self::zeros(width, height);
        let cx = |v: f64| (v.round().max(0.0) as usize).min(width);
        let cy = |v: f64| (v.round().max(0.0) as usize).min(height);
        for y in cy(y0)..cy(y1) {
            m.data[y * width + cx(x0)..y * width + cx(x1)].fill(1);
        }
        m
    }

    pub fn area(&self) -> usize {
        self.data.iter().map(|&v| v as usize).sum()
    }

    /// `[x0, y0, x1, y1)` of the foreground, None when empty.
    pub fn bbox(&self) -> Option<[usize; 4]> {
        let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
        for y in 0..self.height {
            for x in 0..self.width {
                if self.data[y * self.width + x] != 0 {
                    x0 = x0.min(x);
                    y0 = y0.min(y);
                    x1 = x1.max(x + 1);
                    y1 = y1.max(y + 1);
                }
            }
        }
        (x0 != usize::MAX).then_some([x0, y0, x1, y1])
    }

    pub fn as_f32(&self) -> Vec<f32> {
        self.data.iter().map(|&v| v as f32).collect()
    }

    /// Reads a PNG (or any decodable image) mask. Accepted encodings, as the reference's examples use:
    /// grayscale 0/255 or 0/1, palette, RGB(A) with the same value in every colour channel, or a mask carried
    /// only by the alpha channel. Foreground is any pixel above half of the file's maximum value.
    pub fn read(path: &Path) -> Result<Self, MaskError> {
        let err = |m: String| MaskError::Read {
            path: path.to_path_buf(),
            message: m,
        };
        let img = image::open(path).map_err(|e| err(e.to_string()))?;
        Ok(Self::from_image(&img))
    }

    pub fn from_image(img: &DynamicImage) -> Self {
        let rgba = img.to_rgba8();
        let (w, h) = (rgba.width() as usize, rgba.height() as usize);
        let luma: Vec<u8> = rgba.pixels().map(|p| p[0].max(p[1]).max(p[2])).collect();
        let alpha: Vec<u8> = rgba.pixels().map(|p| p[3]).collect();
        let varies = |v: &[u8]| v.iter().any(|&x| x != v[0]);
        let channel = if !varies(&luma) && varies(&alpha) {
            alpha
        } else {
            luma
        };
        let max = channel.iter().copied().max().unwrap_or(0);
        let threshold = max / 2;
        let data = channel
            .iter()
            .map(|&v| (max > 0 && v > threshold) as u8)
            .collect();
        Self {
            width: w,
            height: h,
            data,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, Luma, Rgba, RgbaImage};

    #[test]
    fn png_encodings_read_as_the_same_mask() {
        let mut g255 = GrayImage::new(4, 3);
        let mut g1 = GrayImage::new(4, 3);
        let mut rgba = RgbaImage::from_pixel(4, 3, Rgba([0, 0, 0, 255]));
        let mut alpha = RgbaImage::from_pixel(4, 3, Rgba([0, 0, 0, 0]));
        for (x, y) in [(1, 1), (2, 1), (3, 2)] {
            g255.put_pixel(x, y, Luma([255]));
            g1.put_pixel(x, y, Luma([1]));
            rgba.put_pixel(x, y, Rgba([255, 255, 255, 255]));
            alpha.put_pixel(x, y, Rgba([0, 0, 0, 255]));
        }
        let want = BinaryMask::from_image(&DynamicImage::ImageLuma8(g255));
        assert_eq!(want.area(), 3);
        assert_eq!(want.bbox(), Some([1, 1, 4, 3]));
        for other in [
            DynamicImage::ImageLuma8(g1),
            DynamicImage::ImageRgba8(rgba),
            DynamicImage::ImageRgba8(alpha),
        ] {
            assert_eq!(BinaryMask::from_image(&other), want);
        }
        assert_eq!(
            BinaryMask::from_image(&DynamicImage::ImageLuma8(GrayImage::new(4, 3))).area(),
            0
        );
    }

    #[test]
    fn boxes_are_clipped() {
        let m = BinaryMask::from_box(10, 8, -5.0, 2.0, 4.0, 100.0);
        assert_eq!(m.bbox(), Some([0, 2, 4, 8]));
        assert_eq!(m.area(), 4 * 6);
    }
}
