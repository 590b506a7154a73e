//! Reading photos: any format the `image` crate decodes, EXIF orientation applied, converted to RGB.
//!
//! A photo is untrusted input: its header is read and its pixel count checked before any pixel buffer is
//! allocated (a forged 65535×65535 header is refused, not decoded into 12 GB), and a JPEG whose data ends
//! before its end-of-image marker is refused as Pillow refuses it, rather than padded with grey.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, RgbImage};

/// Pillow's `DecompressionBombWarning` threshold (`Image.MAX_IMAGE_PIXELS`).
pub const PIL_WARN_PIXELS: u64 = 89_478_485;
/// Pillow's `DecompressionBombError` threshold: twice the warning.
pub const DEFAULT_MAX_PIXELS: u64 = 2 * PIL_WARN_PIXELS;

#[derive(Debug, thiserror::Error)]
#[error("cannot decode image {path}: {message}")]
pub struct DecodeError {
    pub path: PathBuf,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeOptions {
    /// Photos with more pixels than this are refused from their header.
    pub max_pixels: u64,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        Self {
            max_pixels: DEFAULT_MAX_PIXELS,
        }
    }
}

impl DecodeOptions {
    /// The most bytes one decode of an allowed photo needs (16-bit RGBA is the widest layout `image` decodes
    /// to), handed to the decoder as its allocation limit as a second guard behind the header check.
    fn alloc_limit(&self) -> u64 {
        self.max_pixels.saturating_mul(8).max(64 << 20)
    }
}

/// Decodes an image file upright (EXIF orientation applied) as 8-bit RGB, with the default limits.
pub fn load_rgb(path: &Path) -> Result<RgbImage, DecodeError> {
    load_rgb_with(path, &DecodeOptions::default())
}

/// How many pixels a photo's header declares, without decoding it.
pub fn header_dimensions(path: &Path) -> Result<(u32, u32), DecodeError> {
    let err = |message: String| DecodeError {
        path: path.to_path_buf(),
        message,
    };
    ImageReader::open(path)
        .map_err(|e| err(e.to_string()))?
        .with_guessed_format()
        .map_err(|e| err(e.to_string()))?
        .into_dimensions()
        .map_err(|e| err(e.to_string()))
}

pub fn load_rgb_with(path: &Path, options: &DecodeOptions) -> Result<RgbImage, DecodeError> {
    let err = |message: String| DecodeError {
        path: path.to_path_buf(),
        message,
    };
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let mut reader = ImageReader::new(Cursor::new(bytes.as_slice()))
        .with_guessed_format()
        .map_err(|e| err(e.to_string()))?;
    let format = reader
        .format()
        .ok_or_else(|| err("not a photo in a format regionseek reads (JPEG, PNG)".to_string()))?;
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(options.alloc_limit());
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(|e| err(e.to_string()))?;
    let (w, h) = decoder.dimensions();
    let pixels = w as u64 * h as u64;
    if pixels > options.max_pixels {
        return Err(err(format!(
            "{w}x{h} = {pixels} pixels is over the limit of {} (a decompression bomb or a forged header; \
             raise --max-pixels to read it)",
            options.max_pixels
        )));
    }
    if pixels > PIL_WARN_PIXELS {
        tracing::warn!(
            "{}: {w}x{h} = {pixels} pixels, more than Pillow reads without a warning",
            path.display()
        );
    }
    if format == ImageFormat::Jpeg {
        jpeg_complete(&bytes).map_err(err)?;
    }
    // A broken EXIF block should not cost the photo: keep its stored orientation.
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| err(describe(e)))?;
    img.apply_orientation(orientation);
    if img.width() == 0 || img.height() == 0 {
        return Err(err("the image is empty".into()));
    }
    Ok(img.to_rgb8())
}

fn describe(e: image::ImageError) -> String {
    match &e {
        image::ImageError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            "the image data is truncated (the file ends before its last pixel row)".into()
        }
        _ => e.to_string(),
    }
}

/// Walks a JPEG's marker segments and entropy-coded scans to its end-of-image marker. Data that ends before
/// it is truncated: Pillow (libjpeg) refuses such a file ("image file is truncated"), while the `image`
/// crate's decoder pads the missing rows with grey. Bytes after the end-of-image marker are allowed, as
/// Pillow allows them.
pub fn jpeg_complete(b: &[u8]) -> Result<(), String> {
    const TRUNCATED: &str = "the JPEG data is truncated (it ends before its end-of-image marker)";
    if b.len() < 2 || b[0] != 0xFF || b[1] != 0xD8 {
        return Err("not a JPEG (no start-of-image marker)".into());
    }
    let mut i = 2;
    loop {
        // libjpeg skips stray bytes before a marker with a warning; so do we.
        while i < b.len() && b[i] != 0xFF {
            i += 1;
        }
        while i < b.len() && b[i] == 0xFF {
            i += 1;
        }
        let Some(&marker) = b.get(i) else {
            return Err(TRUNCATED.into());
        };
        i += 1;
        match marker {
            0xD9 => return Ok(()),
            0x01 | 0xD0..=0xD8 => continue,
            _ => {}
        }
        if i + 2 > b.len() {
            return Err(TRUNCATED.into());
        }
        let len = u16::from_be_bytes([b[i], b[i + 1]]) as usize;
        if len < 2 {
            return Err(format!(
                "corrupt JPEG: marker 0x{marker:02X} has length {len}"
            ));
        }
        i += len;
        if i > b.len() {
            return Err(TRUNCATED.into());
        }
        if marker == 0xDA {
            // Entropy-coded data runs to the next marker that is neither a stuffed 0xFF00 nor a restart.
            loop {
                if i + 1 >= b.len() {
                    return Err(TRUNCATED.into());
                }
                if b[i] == 0xFF {
                    match b[i + 1] {
                        0x00 | 0xD0..=0xD7 => i += 2,
                        0xFF => i += 1,
                        _ => break,
                    }
                } else {
                    i += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_jpeg() -> Vec<u8> {
        let img = RgbImage::from_fn(32, 24, |x, y| {
            image::Rgb([(x * 8) as u8, (y * 10) as u8, 77])
        });
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, ImageFormat::Jpeg).unwrap();
        out.into_inner()
    }

    #[test]
    fn a_truncated_png_is_refused_as_truncated() {
        let img = RgbImage::from_fn(64, 48, |x, y| {
            image::Rgb([(x * 4) as u8, (y * 5) as u8, (x ^ y) as u8])
        });
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, ImageFormat::Png).unwrap();
        let bytes = out.into_inner();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cut.png");
        std::fs::write(&path, &bytes[..bytes.len() * 4 / 10]).unwrap();
        let e = load_rgb(&path).unwrap_err().to_string();
        assert!(e.contains("truncated") && e.contains("cut.png"), "{e}");
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(load_rgb(&path).unwrap().dimensions(), (64, 48));
    }

    #[test]
    fn a_complete_jpeg_passes_the_marker_walk_and_every_truncation_fails_it() {
        let b = tiny_jpeg();
        jpeg_complete(&b).unwrap();
        let mut trailing = b.clone();
        trailing.extend_from_slice(b"trailing bytes");
        jpeg_complete(&trailing).unwrap();
        for cut in 1..b.len() {
            assert!(
                jpeg_complete(&b[..cut]).is_err(),
                "cut at {cut} of {}",
                b.len()
            );
        }
    }
}
