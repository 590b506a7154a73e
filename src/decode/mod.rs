//! Reading photos exactly as the reference sees them: `Image.open(path).convert("RGB")` in Pillow 13.
//!
//! JPEG goes through libjpeg-turbo, the library inside Pillow, so the pixels are the same bytes (tested over
//! every COCO128 photo and every layout in tests/fixtures/decode). PNG, GIF and TIFF are read as raw samples
//! and converted with Pillow's own rules (`pil`); WebP and BMP through the `image` crate, whose output for them
//! is Pillow's too (the same fixtures check it). HEIC and AVIF go through libheif (`heif`, the default `heif`
//! feature), as pillow-heif and Pillow's AVIF plugin show them.
//!
//! Photos are taken in their stored frame, as Pillow opens them and as COCO's boxes and masks are drawn;
//! `DecodeOptions::exif_rotate` turns them upright first (`ImageOps.exif_transpose`).
//!
//! A photo is untrusted input: its header is read and its pixel count checked before any pixel buffer is
//! allocated (a forged 65535×65535 header is refused, not decoded into 12 GB), and a JPEG whose data ends
//! before its end-of-image marker is refused as Pillow refuses it, rather than padded with grey.

pub mod exif;
mod formats;
#[cfg(feature = "heif")]
mod heif;
mod jpeg;
pub mod pil;
#[cfg(feature = "heif")]
mod yuv;

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
    /// Turn the photo upright by its EXIF orientation (off: the stored frame, as Pillow and the reference).
    pub exif_rotate: bool,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        Self {
            max_pixels: DEFAULT_MAX_PIXELS,
            exif_rotate: false,
        }
    }
}

impl DecodeOptions {
    /// The most bytes one decode of an allowed photo needs (16-bit RGBA is the widest layout decoded), handed
    /// to the decoders as their allocation limit as a second guard behind the header check.
    fn alloc_limit(&self) -> u64 {
        self.max_pixels.saturating_mul(8).max(64 << 20)
    }

    fn check(&self, w: u32, h: u32) -> Result<(), String> {
        let pixels = w as u64 * h as u64;
        if pixels == 0 {
            return Err("the image is empty".into());
        }
        if pixels > self.max_pixels {
            return Err(format!(
                "{w}x{h} = {pixels} pixels is over the limit of {} (a decompression bomb or a forged header; \
                 raise --max-pixels to read it)",
                self.max_pixels
            ));
        }
        if pixels > PIL_WARN_PIXELS {
            tracing::warn!("{w}x{h} = {pixels} pixels, more than Pillow reads without a warning");
        }
        Ok(())
    }
}

/// The containers regionseek reads, told apart by their first bytes (never by the file's extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhotoFormat {
    Jpeg,
    Png,
    Gif,
    WebP,
    Tiff,
    Bmp,
    /// HEIC/HEIF and AVIF: ISO base media files of still images.
    Heif,
}

#[cfg(feature = "heif")]
const READS: &str = "JPEG, PNG, WebP, TIFF, BMP, GIF, HEIC, AVIF";
#[cfg(not(feature = "heif"))]
const READS: &str = "JPEG, PNG, WebP, TIFF, BMP, GIF";

pub fn sniff(b: &[u8]) -> Result<PhotoFormat, String> {
    if b.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return Ok(PhotoFormat::Jpeg);
    }
    if b.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Ok(PhotoFormat::Png);
    }
    if b.starts_with(b"GIF87a") || b.starts_with(b"GIF89a") {
        return Ok(PhotoFormat::Gif);
    }
    if b.len() >= 12 && &b[..4] == b"RIFF" && &b[8..12] == b"WEBP" {
        return Ok(PhotoFormat::WebP);
    }
    // Classic TIFF, then BigTIFF (64-bit offsets), which Pillow 13 also reads.
    if b.starts_with(b"II*\0")
        || b.starts_with(b"MM\0*")
        || b.starts_with(b"II+\0")
        || b.starts_with(b"MM\0+")
    {
        return Ok(PhotoFormat::Tiff);
    }
    if b.starts_with(b"BM") && b.len() >= 26 {
        return Ok(PhotoFormat::Bmp);
    }
    if b.len() >= 12 && &b[4..8] == b"ftyp" {
        let brand = &b[8..12];
        let kind = match brand {
            b"heic" | b"heix" | b"hevc" | b"hevx" | b"heim" | b"heis" | b"mif1" | b"msf1" => {
                "HEIC/HEIF"
            }
            b"avif" | b"avis" => "AVIF",
            _ => {
                return Err(format!(
                    "not a photo in a format regionseek reads ({READS}): an ISO media file of brand \"{}\" \
                     (a video?)",
                    String::from_utf8_lossy(brand)
                ))
            }
        };
        if cfg!(feature = "heif") {
            return Ok(PhotoFormat::Heif);
        }
        return Err(format!(
            "this regionseek was built without {kind} support (the `heif` feature; it reads {READS}): \
             rebuild it with default features, or convert the photo to JPEG or PNG"
        ));
    }
    Err(format!(
        "not a photo in a format regionseek reads ({READS})"
    ))
}

/// The name of a photo's format as its first bytes tell it (AVIF and HEIC told apart by their brands), or None
/// for a file regionseek does not read.
pub fn format_name(bytes: &[u8]) -> Option<&'static str> {
    Some(match sniff(bytes).ok()? {
        PhotoFormat::Jpeg => "JPEG",
        PhotoFormat::Png => "PNG",
        PhotoFormat::Gif => "GIF",
        PhotoFormat::WebP => "WebP",
        PhotoFormat::Tiff => "TIFF",
        PhotoFormat::Bmp => "BMP",
        #[cfg(feature = "heif")]
        PhotoFormat::Heif if heif::is_avif(bytes) => "AVIF",
        PhotoFormat::Heif => "HEIC",
    })
}

/// Decodes a photo file as 8-bit RGB in its stored frame, with the default limits.
pub fn load_rgb(path: &Path) -> Result<RgbImage, DecodeError> {
    load_rgb_with(path, &DecodeOptions::default())
}

pub fn load_rgb_with(path: &Path, options: &DecodeOptions) -> Result<RgbImage, DecodeError> {
    let bytes = std::fs::read(path).map_err(|e| DecodeError {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    decode_rgb(&bytes, path, options)
}

/// [`load_rgb_with`], with the EXIF tags the photo carries (read from the same bytes).
pub fn load_photo_with(
    path: &Path,
    options: &DecodeOptions,
) -> Result<(RgbImage, exif::ExifTags), DecodeError> {
    let bytes = std::fs::read(path).map_err(|e| DecodeError {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let image = decode_rgb(&bytes, path, options)?;
    Ok((image, photo_exif(&bytes)))
}

/// The EXIF tags of a photo in any container that carries them (JPEG APP1, PNG eXIf, WebP EXIF, a TIFF's
/// own directories); none for the others or a photo without.
pub fn photo_exif(bytes: &[u8]) -> exif::ExifTags {
    let block = match sniff(bytes) {
        Ok(PhotoFormat::Jpeg) => formats::jpeg_exif(bytes),
        Ok(PhotoFormat::Png) => formats::png_exif(bytes),
        Ok(PhotoFormat::WebP) => formats::webp_exif(bytes),
        // A TIFF is itself the structure an EXIF block borrows: Make, Model and the sub-directories sit
        // in its first directory.
        Ok(PhotoFormat::Tiff) => Some(std::borrow::Cow::Borrowed(bytes)),
        #[cfg(feature = "heif")]
        Ok(PhotoFormat::Heif) => heif::exif(bytes).map(std::borrow::Cow::Owned),
        _ => None,
    };
    block.map(|b| exif::read(&b)).unwrap_or_default()
}

/// A photo held in memory at 1/`reduce` of its size (1, 2, 4 or 8; each side `ceil(side / reduce)`, in the
/// frame `options` asks for), for pictures shown to people: a JPEG is decoded at that size by libjpeg-turbo
/// itself, other formats are decoded whole and shrunk. Never for embeddings, whose pixels must be Pillow's
/// full-size ones.
pub fn decode_rgb_reduced(
    bytes: &[u8],
    name: &Path,
    options: &DecodeOptions,
    reduce: u32,
) -> Result<RgbImage, DecodeError> {
    let img = decode_rgb_at(bytes, name, options, reduce)?;
    let reduce = reduce.max(1);
    let (w, h) = img.dimensions();
    if reduce == 1 || sniff(bytes) == Ok(PhotoFormat::Jpeg) {
        return Ok(img);
    }
    Ok(image::imageops::resize(
        &img,
        w.div_ceil(reduce),
        h.div_ceil(reduce),
        image::imageops::FilterType::Triangle,
    ))
}

/// The size a JPEG's header declares, in its stored frame (None for other formats or a header not found):
/// what a picture drawn from a reduced decode checks its mask against, at full precision.
pub fn stored_jpeg_size(bytes: &[u8]) -> Option<(u32, u32)> {
    formats::jpeg_frame_size(bytes)
}

/// Decodes a photo held in memory; `name` is what errors call it.
pub fn decode_rgb(
    bytes: &[u8],
    name: &Path,
    options: &DecodeOptions,
) -> Result<RgbImage, DecodeError> {
    decode_rgb_at(bytes, name, options, 1)
}

/// [`decode_rgb`], with a JPEG's pixels made at 1/`reduce` of its size (see [`decode_rgb_reduced`]).
fn decode_rgb_at(
    bytes: &[u8],
    name: &Path,
    options: &DecodeOptions,
    reduce: u32,
) -> Result<RgbImage, DecodeError> {
    let err = |message: String| DecodeError {
        path: name.to_path_buf(),
        message: with_advice(message),
    };
    let format = sniff(bytes).map_err(err)?;
    let max_bytes = options.alloc_limit().min(usize::MAX as u64) as usize;
    let check = |w, h| options.check(w, h);
    // What `ImageOps.exif_transpose` would do to the photo as Pillow opens it, mostly its EXIF orientation.
    let orientation_of = |exif: Option<&[u8]>| exif.map(formats::exif_orientation).unwrap_or(1);
    let (w, h, rgb, orientation) = match format {
        PhotoFormat::Jpeg => {
            if let Some((w, h)) = formats::jpeg_frame_size(bytes) {
                options.check(w, h).map_err(err)?;
            }
            jpeg_complete(bytes).map_err(err)?;
            let (w, h, rgb) = jpeg::decode_reduced(bytes, check, reduce.max(1)).map_err(err)?;
            (
                w,
                h,
                rgb,
                orientation_of(formats::jpeg_exif(bytes).as_deref()),
            )
        }
        PhotoFormat::Png => {
            let r = formats::png(bytes, max_bytes, check).map_err(err)?;
            (r.width, r.height, r.rgb, orientation_of(r.exif.as_deref()))
        }
        PhotoFormat::Gif => {
            let r = formats::gif(bytes, max_bytes, check).map_err(err)?;
            (r.width, r.height, r.rgb, orientation_of(r.exif.as_deref()))
        }
        PhotoFormat::Tiff => {
            // Pillow 13's TIFF plugin turns the image by its Orientation tag on load (exif_transpose then
            // finds nothing left to do): the stored frame of a TIFF is its upright one.
            let r = guarded("TIFF", || formats::tiff(bytes, max_bytes, check)).map_err(err)?;
            let orientation = orientation_of(r.exif.as_deref());
            let img = RgbImage::from_raw(r.width, r.height, r.rgb).ok_or_else(|| {
                err("the decoder returned fewer pixels than its header declares".into())
            })?;
            let img = upright(img, orientation);
            (img.width(), img.height(), img.into_raw(), 1)
        }
        PhotoFormat::WebP => {
            let rewrapped = formats::webp_lossless_at_the_limit(bytes);
            let webp = rewrapped.as_deref().unwrap_or(bytes);
            let (w, h, rgb) = guarded("WebP", || via_image_crate(webp, ImageFormat::WebP, options))
                .map_err(err)?;
            (
                w,
                h,
                rgb,
                orientation_of(formats::webp_exif(bytes).as_deref()),
            )
        }
        PhotoFormat::Bmp => {
            match formats::bmp16(bytes, check).or_else(|| formats::bmp_indexed(bytes, check)) {
                Some(r) => {
                    let r = r.map_err(err)?;
                    (r.width, r.height, r.rgb, 1)
                }
                None => {
                    let (w, h, rgb) =
                        guarded("BMP", || via_image_crate(bytes, ImageFormat::Bmp, options))
                            .map_err(err)?;
                    (w, h, rgb, 1)
                }
            }
        }
        #[cfg(feature = "heif")]
        PhotoFormat::Heif => {
            let r = heif::decode(bytes, check).map_err(err)?;
            (r.width, r.height, r.rgb, r.orientation)
        }
        #[cfg(not(feature = "heif"))]
        PhotoFormat::Heif => {
            return Err(err(
                "this regionseek was built without HEIC/AVIF support (the `heif` feature)".into(),
            ))
        }
    };
    let img = RgbImage::from_raw(w, h, rgb)
        .ok_or_else(|| err("the decoder returned fewer pixels than its header declares".into()))?;
    if !options.exif_rotate {
        return Ok(img);
    }
    Ok(upright(img, orientation))
}

/// A refusal for damage says what to do about it (the others already name a conversion).
fn with_advice(message: String) -> String {
    let damaged = ["corrupt ", "truncated", "damaged", "not enough image data"];
    if damaged.iter().any(|d| message.contains(d)) {
        format!("{message}; if another program still opens the photo, re-save it from there as PNG or JPEG")
    } else {
        message
    }
}

/// Runs a third-party decoder that may panic on a hostile file (the tiff crate asserts on some layouts) and
/// turns a panic into a refusal: a photo never stops a run.
fn guarded<T>(format: &str, decode: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(decode)).unwrap_or_else(|_| {
        Err(format!(
            "the {format} decoder failed on this file (damaged, or a layout it cannot handle); convert it to PNG"
        ))
    })
}

/// `ImageOps.exif_transpose`: 2 mirrors, 3 turns 180°, 4 flips, 5 transposes, 6 turns 90° clockwise,
/// 7 transverses, 8 turns 90° counter-clockwise.
fn upright(img: RgbImage, orientation: u8) -> RgbImage {
    let Some(o) = image::metadata::Orientation::from_exif(orientation) else {
        return img;
    };
    let mut d = DynamicImage::ImageRgb8(img);
    d.apply_orientation(o);
    d.into_rgb8()
}

fn via_image_crate(
    bytes: &[u8],
    format: ImageFormat,
    options: &DecodeOptions,
) -> Result<(u32, u32, Vec<u8>), String> {
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(options.alloc_limit());
    reader.limits(limits);
    let decoder = reader.into_decoder().map_err(|e| e.to_string())?;
    let (w, h) = decoder.dimensions();
    options.check(w, h)?;
    let img = DynamicImage::from_decoder(decoder).map_err(describe)?;
    let rgb = match img {
        DynamicImage::ImageRgb8(i) => i.into_raw(),
        DynamicImage::ImageRgba8(i) => pil::take_rgb(i.as_raw(), 4),
        DynamicImage::ImageLuma8(i) => pil::gray_to_rgb(i.as_raw()),
        DynamicImage::ImageLumaA8(i) => pil::gray_alpha_to_rgb(i.as_raw(), 2),
        other => {
            return Err(format!(
                "unsupported {format:?} layout ({:?})",
                other.color()
            ))
        }
    };
    Ok((w, h, rgb))
}

fn describe(e: image::ImageError) -> String {
    match &e {
        image::ImageError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            formats::TRUNCATED.into()
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

    /// A PNG chunk with its CRC.
    fn png_chunk(kind: &[u8; 4], payload: &[u8]) -> Vec<u8> {
        let mut crc = !0u32;
        for &b in kind.iter().chain(payload) {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        let mut c = (payload.len() as u32).to_be_bytes().to_vec();
        c.extend_from_slice(kind);
        c.extend_from_slice(payload);
        c.extend_from_slice(&(!crc).to_be_bytes());
        c
    }

    #[test]
    fn a_damaged_png_is_refused_in_words_without_the_decoders_debug_text() {
        // A text chunk before the header: the png crate names the chunk by its Rust debug struct.
        let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
        bytes.extend(png_chunk(b"tEXt", b"Comment\0hello"));
        let mut ihdr = 8u32.to_be_bytes().to_vec();
        ihdr.extend_from_slice(&8u32.to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
        bytes.extend(png_chunk(b"IHDR", &ihdr));
        bytes.extend(png_chunk(b"IEND", b""));
        let e = decode_rgb(
            &bytes,
            Path::new("early-text.png"),
            &DecodeOptions::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("chunk \"tEXt\""), "{e}");
        assert!(!e.contains("ChunkType") && !e.contains("critical:"), "{e}");
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
