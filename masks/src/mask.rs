//! The binary mask type: one byte per pixel at the image's own resolution, PNG in and out, geometry.

use std::io::Write;
use std::path::Path;

use image::DynamicImage;

use crate::MaskError;

/// Pillow's `DecompressionBombError` threshold, for mask images as for photos.
pub const MAX_MASK_PIXELS: u64 = 2 * 89_478_485;

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

    /// A filled rectangle `[x0, x1) × [y0, y1)` (corners rounded to pixel edges), clipped to the mask; an
    /// inverted or NaN box gives an empty mask.
    pub fn from_box(width: usize, height: usize, x0: f64, y0: f64, x1: f64, y1: f64) -> Self {
        let mut m = Self::zeros(width, height);
        let cx = |v: f64| (v.round().max(0.0) as usize).min(width);
        let cy = |v: f64| (v.round().max(0.0) as usize).min(height);
        if cx(x1) <= cx(x0) {
            return m;
        }
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

    pub fn get(&self, x: usize, y: usize) -> bool {
        self.data[y * self.width + x] != 0
    }

    /// Intersection over union; two empty masks have IoU 0 (as pycocotools), masks of different sizes are
    /// an error rather than a silent 0.
    pub fn iou(&self, other: &BinaryMask) -> Result<f64, MaskError> {
        if (self.width, self.height) != (other.width, other.height) {
            return Err(MaskError::SizeMismatch {
                a: (self.width, self.height),
                b: (other.width, other.height),
            });
        }
        let (mut inter, mut union) = (0u64, 0u64);
        for (&a, &b) in self.data.iter().zip(&other.data) {
            inter += (a & b) as u64;
            union += (a | b) as u64;
        }
        Ok(if union == 0 {
            0.0
        } else {
            inter as f64 / union as f64
        })
    }

    /// Morphological dilation by a square of side `2·radius+1` (Chebyshev distance ≤ radius), the mask-quality
    /// ablation's "grow the mask by r pixels". Separable running max, linear in the pixel count.
    pub fn dilate(&self, radius: usize) -> BinaryMask {
        self.morph(radius, true)
    }

    /// Morphological erosion by the same square; pixels outside the image count as background, so a mask
    /// touching the border also shrinks from it.
    pub fn erode(&self, radius: usize) -> BinaryMask {
        self.morph(radius, false)
    }

    fn morph(&self, radius: usize, grow: bool) -> BinaryMask {
        if radius == 0 || self.data.is_empty() {
            return self.clone();
        }
        let (w, h) = (self.width, self.height);
        // Window test via prefix sums of foreground counts: any-in-window (dilate) or all-in-window (erode).
        let pass = |src: &[u8], len: usize, stride: usize, lines: usize, line_stride: usize| {
            let mut out = vec![0u8; src.len()];
            let mut prefix = vec![0u32; len + 1];
            for line in 0..lines {
                let base = line * line_stride;
                for i in 0..len {
                    prefix[i + 1] = prefix[i] + src[base + i * stride] as u32;
                }
                for i in 0..len {
                    let lo = i.saturating_sub(radius);
                    let hi = (i + radius + 1).min(len);
                    let count = prefix[hi] - prefix[lo];
                    let on = if grow {
                        count > 0
                    } else {
                        // A window reaching past the border holds background there.
                        i >= radius && i + radius < len && count as usize == 2 * radius + 1
                    };
                    out[base + i * stride] = on as u8;
                }
            }
            out
        };
        let rows = pass(&self.data, w, 1, h, w);
        let data = pass(&rows, h, w, w, 1);
        BinaryMask {
            width: w,
            height: h,
            data,
        }
    }

    /// PNG bytes, grayscale 0/255 (what image viewers and the reference's examples use).
    pub fn to_png(&self) -> Result<Vec<u8>, MaskError> {
        let gray = image::GrayImage::from_raw(
            self.width as u32,
            self.height as u32,
            self.data.iter().map(|&v| v * 255).collect(),
        )
        .ok_or(MaskError::Size {
            width: self.width,
            height: self.height,
            len: self.data.len(),
        })?;
        let mut bytes = Vec::new();
        DynamicImage::ImageLuma8(gray)
            .write_to(
                &mut std::io::Cursor::new(&mut bytes),
                image::ImageFormat::Png,
            )
            .map_err(|e| MaskError::Encode(e.to_string()))?;
        Ok(bytes)
    }

    /// Writes the PNG through a temporary file and a rename, so a crash never leaves a truncated mask behind.
    pub fn save_png(&self, path: &Path) -> Result<(), MaskError> {
        let bytes = self.to_png()?;
        let io = |e: std::io::Error| MaskError::Write {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(".{name}.{}.part", std::process::id()));
        let mut file = std::fs::File::create(&tmp).map_err(io)?;
        file.write_all(&bytes).map_err(io)?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)?;
        Ok(())
    }

    pub fn as_f32(&self) -> Vec<f32> {
        self.data.iter().map(|&v| v as f32).collect()
    }

    /// Reads a PNG (or any decodable image) mask. Accepted encodings, as the reference's examples use:
    /// grayscale 0/255 or 0/1, palette, RGB(A) with the same value in every colour channel, or a mask carried
    /// only by the alpha channel. Foreground is any pixel above half of the file's maximum value.
    /// Reads a mask image, refusing from its header one of more than Pillow's decompression-bomb limit of
    /// pixels (a forged header must not allocate gigabytes).
    pub fn read(path: &Path) -> Result<Self, MaskError> {
        Self::read_with_limit(path, MAX_MASK_PIXELS)
    }

    pub fn read_with_limit(path: &Path, max_pixels: u64) -> Result<Self, MaskError> {
        let err = |m: String| MaskError::Read {
            path: path.to_path_buf(),
            message: m,
        };
        let reader = image::ImageReader::open(path)
            .and_then(|r| r.with_guessed_format())
            .map_err(|e| err(e.to_string()))?;
        let (w, h) = reader.into_dimensions().map_err(|e| err(e.to_string()))?;
        if w as u64 * h as u64 > max_pixels {
            return Err(err(format!(
                "{w}x{h} = {} pixels is over the limit of {max_pixels}",
                w as u64 * h as u64
            )));
        }
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
    fn erosion_and_dilation_by_a_square() {
        let m = BinaryMask::from_box(9, 7, 2.0, 2.0, 6.0, 5.0); // 4 x 3 block at (2..6, 2..5)
        let d = m.dilate(1);
        assert_eq!(d.bbox(), Some([1, 1, 7, 6]));
        assert_eq!(d.area(), 6 * 5);
        let e = m.erode(1);
        assert_eq!(e.bbox(), Some([3, 3, 5, 4]));
        assert_eq!(e.area(), 2);
        assert_eq!(m.erode(2).area(), 0);
        // Pixels beyond the border are background: a full mask erodes from its edges.
        let full = BinaryMask::new(5, 5, vec![1; 25]).unwrap();
        assert_eq!(full.erode(1).bbox(), Some([1, 1, 4, 4]));
        assert_eq!(full.dilate(3), full);
        assert_eq!(m.dilate(0), m);
    }

    #[test]
    fn iou_of_overlapping_boxes() {
        let a = BinaryMask::from_box(10, 10, 0.0, 0.0, 4.0, 4.0);
        let b = BinaryMask::from_box(10, 10, 2.0, 0.0, 6.0, 4.0);
        assert!((a.iou(&b).unwrap() - 8.0 / 24.0).abs() < 1e-12);
        assert_eq!(a.iou(&a).unwrap(), 1.0);
        assert!(a.iou(&BinaryMask::zeros(3, 3)).is_err());
    }

    #[test]
    fn png_round_trip() {
        let m = BinaryMask::from_box(13, 7, 2.0, 1.0, 9.0, 6.0);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.png");
        m.save_png(&path).unwrap();
        assert_eq!(BinaryMask::read(&path).unwrap(), m);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file left"
        );
    }

    #[test]
    fn boxes_are_clipped() {
        let m = BinaryMask::from_box(10, 8, -5.0, 2.0, 4.0, 100.0);
        assert_eq!(m.bbox(), Some([0, 2, 4, 8]));
        assert_eq!(m.area(), 4 * 6);
    }
}
