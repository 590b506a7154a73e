//! HEIC/HEIF and AVIF photos, read as the reference's Pillow 13 reads them, through libheif.
//!
//! The two formats come to Pillow by different roads, and each is followed here:
//! - **HEIC** through pillow-heif 1.9 (libheif 1.23): libheif decodes the HEVC picture, converts it to RGB and
//!   applies the file's crop, rotation and mirror boxes; pillow-heif then resets the EXIF orientation to 1, so
//!   `ImageOps.exif_transpose` leaves the picture as libheif made it. Here libheif does the same work.
//! - **AVIF** through Pillow's own plugin (libavif 1.4 with dav1d): the picture is kept in its stored frame,
//!   its rotation and mirror boxes are reported as an EXIF orientation, and the YCbCr planes are converted by
//!   libyuv with bilinear chroma upsampling. Here libheif decodes the planes (AV1 decoding is exact in every
//!   conforming decoder) without its transformations, `yuv` converts them as libyuv does, and
//!   [`avif_orientation`] maps the boxes as Pillow's `_avif.c` does.

use libheif_rs::{
    ColorSpace, DecodingOptions, HeifContext, HeifError, HeifErrorCode, ImageHandle, LibHeif,
    RgbChroma,
};

use super::yuv;

/// A decoded HEIF photo: interleaved RGB in the frame Pillow opens it in, its EXIF block, and the orientation
/// `ImageOps.exif_transpose` would apply to it.
pub(crate) struct Decoded {
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
    pub orientation: u8,
}

/// AVIF is what a file's brands say it is (libavif refuses a file without the `avif` or `avis` brand, and
/// Pillow then hands it to pillow-heif); everything else in an ISO box container is HEIF.
pub(crate) fn is_avif(bytes: &[u8]) -> bool {
    brands(bytes).any(|b| b == *b"avif" || b == *b"avis")
}

/// The major and compatible brands of a file's `ftyp` box.
fn brands(bytes: &[u8]) -> impl Iterator<Item = [u8; 4]> + '_ {
    let size = bytes
        .get(..4)
        .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]) as usize)
        .unwrap_or(0);
    let ftyp = if bytes.get(4..8) == Some(b"ftyp") {
        bytes.get(8..size.min(bytes.len())).unwrap_or(&[])
    } else {
        &[]
    };
    // The major brand, its minor version, then the compatible brands.
    let major = ftyp.get(..4).into_iter();
    let compatible = ftyp.get(8..).unwrap_or(&[]).chunks_exact(4);
    major.chain(compatible).map(|b| [b[0], b[1], b[2], b[3]])
}

fn lib() -> &'static LibHeif {
    static LIB: std::sync::OnceLock<LibHeif> = std::sync::OnceLock::new();
    LIB.get_or_init(LibHeif::new)
}

/// libheif's error in words, without its Rust debug names.
fn in_words(e: HeifError) -> String {
    let what = match e.code {
        HeifErrorCode::InputDoesNotExist => "the file is empty",
        HeifErrorCode::InvalidInput => "the file is damaged or truncated",
        HeifErrorCode::UnsupportedFileType => "the file is not a HEIF or AVIF image",
        HeifErrorCode::UnsupportedFeature => {
            "it uses a HEIF feature regionseek's libheif does not read"
        }
        HeifErrorCode::DecoderPluginError => "its picture data does not decode",
        HeifErrorCode::MemoryAllocationError => "it needs more memory than it is allowed",
        _ => "libheif cannot read it",
    };
    let detail = e.message.trim();
    if detail.is_empty() {
        what.to_string()
    } else {
        format!("{what} ({detail})")
    }
}

/// Decodes a HEIF or AVIF photo; `check` vets its size before any pixel is decoded.
pub(crate) fn decode(
    bytes: &[u8],
    check: impl Fn(u32, u32) -> Result<(), String>,
) -> Result<Decoded, String> {
    let avif = is_avif(bytes);
    let ctx = HeifContext::read_from_bytes(bytes).map_err(in_words)?;
    let handle = if avif {
        ctx.primary_image_handle().map_err(in_words)?
    } else {
        pillow_heif_image(&ctx)?
    };
    let mut options = DecodingOptions::new().ok_or("libheif could not allocate its options")?;
    // One photo, one thread, as every other format decodes: the callers run photos in parallel.
    options.set_num_library_threads(1);
    options.set_num_codec_threads(1);
    if avif {
        options.set_ignore_transformations(true);
        let (w, h) = (handle.ispe_width(), handle.ispe_height());
        check(w.max(0) as u32, h.max(0) as u32)?;
        let (width, height, rgb) = avif_rgb(&handle, options)?;
        Ok(Decoded {
            width,
            height,
            rgb,
            orientation: avif_orientation(bytes),
        })
    } else {
        // libheif decodes the whole coded picture before cropping it: that size is the one to vet.
        let (coded_w, coded_h) = (handle.ispe_width(), handle.ispe_height());
        if coded_w > 0 && coded_h > 0 {
            check(coded_w as u32, coded_h as u32)?;
        }
        check(handle.width(), handle.height())?;
        let grey = handle.preferred_decoding_colorspace().ok() == Some(ColorSpace::Monochrome);
        let (width, height, rgb) = if grey && handle.luma_bits_per_pixel() > 8 {
            deep_grey_rgb(&handle, options)?
        } else {
            libheif_rgb(&handle, options)?
        };
        Ok(Decoded {
            width,
            height,
            rgb,
            orientation: 1,
        })
    }
}

/// The image pillow-heif opens: among the top-level images, the one marked primary, else the first (a file
/// whose primary item names nothing valid still opens, on its first image).
fn pillow_heif_image(ctx: &HeifContext) -> Result<ImageHandle, String> {
    let mut images = ctx.top_level_image_handles();
    match images.iter().position(|h| h.is_primary()) {
        Some(i) => Ok(images.swap_remove(i)),
        None if !images.is_empty() => Ok(images.swap_remove(0)),
        None => ctx.primary_image_handle().map_err(in_words),
    }
}

fn missing_decoder(e: HeifError, avif: bool) -> String {
    if matches!(e.code, HeifErrorCode::UnsupportedFeature)
        && e.message
            .to_ascii_lowercase()
            .contains("no decoding plugin")
    {
        let (codec, package) = if avif {
            ("AV1", "libdav1d-dev")
        } else {
            ("HEVC", "libde265-dev")
        };
        return format!(
            "this regionseek was built without an {codec} decoder; install {package} and rebuild it \
             (./setup.sh does both), or convert the photo to JPEG or PNG"
        );
    }
    in_words(e)
}

/// libheif's own RGB: what pillow-heif shows of a HEIC, and the fallback for AVIF layouts libavif does not
/// hand to libyuv (depths over 8 bits, unusual matrices), where the two libraries' rounding may differ.
fn libheif_rgb(
    handle: &ImageHandle,
    options: DecodingOptions,
) -> Result<(u32, u32, Vec<u8>), String> {
    let avif = options.ignore_transformations();
    let image = lib()
        .decode(handle, ColorSpace::Rgb(RgbChroma::Rgb), Some(options))
        .map_err(|e| missing_decoder(e, avif))?;
    let plane = image
        .planes()
        .interleaved
        .ok_or("libheif returned no RGB plane")?;
    let (w, h) = (plane.width as usize, plane.height as usize);
    let rows = plane_rows(plane.data, plane.stride, h, w * 3)
        .ok_or("libheif returned fewer pixels than the image declares")?;
    let mut rgb = Vec::with_capacity(w * h * 3);
    rows.for_each(|row| rgb.extend_from_slice(row));
    Ok((plane.width, plane.height, rgb))
}

/// The first `row_bytes` of each of a plane's `height` rows, `stride` bytes apart; None if the plane is shorter.
fn plane_rows(
    data: &[u8],
    stride: usize,
    height: usize,
    row_bytes: usize,
) -> Option<impl Iterator<Item = &[u8]>> {
    let need = stride
        .checked_mul(height.saturating_sub(1))?
        .checked_add(row_bytes)?;
    (stride >= row_bytes && data.len() >= need).then(|| {
        data.chunks(stride.max(1))
            .take(height)
            .map(move |r| &r[..row_bytes])
    })
}

/// A grey HEIC of more than 8 bits as pillow-heif and Pillow show it: pillow-heif hands over mode `I;16` with the
/// samples shifted up to 16 bits, and `convert("RGB")` clips those at 255 (it does not scale them), so all but
/// the darkest levels come out white.
fn deep_grey_rgb(
    handle: &ImageHandle,
    options: DecodingOptions,
) -> Result<(u32, u32, Vec<u8>), String> {
    let bits = handle.luma_bits_per_pixel();
    let image = lib()
        .decode(handle, ColorSpace::Monochrome, Some(options))
        .map_err(|e| missing_decoder(e, false))?;
    let plane = image.planes().y.ok_or("libheif returned no grey plane")?;
    let (w, h) = (plane.width as usize, plane.height as usize);
    let rows = plane_rows(plane.data, plane.stride, h, w * 2)
        .filter(|_| plane.storage_bits_per_pixel == 16)
        .ok_or("libheif returned a grey plane of an unexpected layout")?;
    let shift = 16u32.saturating_sub(bits as u32);
    let mut rgb = Vec::with_capacity(w * h * 3);
    for row in rows {
        for sample in row.chunks_exact(2) {
            let v = (u16::from_ne_bytes([sample[0], sample[1]]) as u32) << shift;
            let g = v.min(255) as u8;
            rgb.extend_from_slice(&[g, g, g]);
        }
    }
    Ok((plane.width, plane.height, rgb))
}

/// An AVIF's stored frame in RGB, converted as libavif converts it for Pillow.
fn avif_rgb(handle: &ImageHandle, options: DecodingOptions) -> Result<(u32, u32, Vec<u8>), String> {
    let nclx = handle.color_profile_nclx();
    // Without a colour box libavif takes the AV1 sequence header's values, which libheif reports the same way.
    let (coefficients, primaries, full_range) = nclx
        .map(|n| {
            (
                n.matrix_coefficients() as u16,
                n.color_primaries() as u16,
                n.full_range_flag() != 0,
            )
        })
        .unwrap_or((2, 2, false));
    let native = handle.preferred_decoding_colorspace().map_err(in_words)?;
    let eight_bit = handle.luma_bits_per_pixel() == 8
        && matches!(native, ColorSpace::Monochrome | ColorSpace::YCbCr(_))
        && (native == ColorSpace::Monochrome || handle.chroma_bits_per_pixel() == 8);
    let matrix = yuv::libavif_matrix(coefficients, primaries, full_range);
    let grey = native == ColorSpace::Monochrome;
    if !eight_bit || (matrix.is_none() && !grey) {
        return libheif_rgb(handle, options);
    }
    // Left to itself libheif hands YCbCr out re-encoded as BT.601 full range; the planes as coded are wanted.
    let mut options = options;
    options.set_output_image_nclx_profile(handle.color_profile_nclx());
    let image = lib()
        .decode(handle, native, Some(options))
        .map_err(|e| missing_decoder(e, true))?;
    let planes = image.planes();
    fn plane<'a>(p: Option<libheif_rs::Plane<&'a [u8]>>) -> Result<yuv::Plane<'a>, String> {
        p.map(|p| yuv::Plane {
            data: p.data,
            width: p.width as usize,
            height: p.height as usize,
            stride: p.stride,
        })
        .ok_or_else(|| "libheif returned no picture plane".to_string())
    }
    let y = plane(planes.y)?;
    let size = (y.width as u32, y.height as u32);
    if grey {
        return yuv::grey_to_rgb(y, full_range).map(|rgb| (size.0, size.1, rgb));
    }
    let subsampling = match native {
        ColorSpace::YCbCr(libheif_rs::Chroma::C444) => yuv::Subsampling::None,
        ColorSpace::YCbCr(libheif_rs::Chroma::C422) => yuv::Subsampling::Horizontal,
        _ => yuv::Subsampling::Both,
    };
    yuv::to_rgb(
        y,
        plane(planes.cb)?,
        plane(planes.cr)?,
        subsampling,
        matrix.expect("checked above"),
    )
    .map(|rgb| (size.0, size.1, rgb))
    .map_err(|e| format!("the AVIF's picture is malformed: {e}"))
}

/// The EXIF block of a HEIF or AVIF photo (its TIFF structure, without libheif's 4-byte offset prefix).
pub(crate) fn exif(bytes: &[u8]) -> Option<Vec<u8>> {
    let ctx = HeifContext::read_from_bytes(bytes).ok()?;
    let handle = if is_avif(bytes) {
        ctx.primary_image_handle().ok()?
    } else {
        pillow_heif_image(&ctx).ok()?
    };
    let mut ids = [0u32; 4];
    let n = handle.metadata_block_ids(&mut ids, b"Exif");
    let block = handle.metadata(*ids.get(..n)?.first()?).ok()?;
    let offset = u32::from_be_bytes(block.get(..4)?.try_into().ok()?) as usize;
    block.get(4usize.checked_add(offset)?..).map(<[u8]>::to_vec)
}

/// The EXIF orientation Pillow 13's AVIF plugin reports for the primary item's rotation (`irot`, quarter turns
/// anticlockwise) and mirror (`imir`, axis) boxes, libavif's mapping: one quarter turn anticlockwise is 8, three
/// are 6 (checked on fixtures where the file's EXIF block carries no orientation of its own).
pub(crate) fn avif_orientation(bytes: &[u8]) -> u8 {
    let (irot, imir) = transforms(bytes).unwrap_or((None, None));
    match (irot.filter(|&a| a != 0), imir) {
        (None, None) => 1,
        (None, Some(axis)) => {
            if axis == 0 {
                4
            } else {
                2
            }
        }
        (Some(1), None) => 8,
        (Some(1), Some(axis)) => {
            if axis == 0 {
                5
            } else {
                7
            }
        }
        (Some(2), None) => 3,
        (Some(2), Some(axis)) => {
            if axis == 0 {
                2
            } else {
                4
            }
        }
        (_, None) => 6,
        (_, Some(axis)) => {
            if axis == 0 {
                7
            } else {
                5
            }
        }
    }
}

/// An ISO base media box: its four-character type and its payload.
fn boxes(mut b: &[u8]) -> impl Iterator<Item = ([u8; 4], &[u8])> {
    std::iter::from_fn(move || {
        let head = b.get(..8)?;
        let kind = [head[4], head[5], head[6], head[7]];
        let (size, header) = match u32::from_be_bytes([head[0], head[1], head[2], head[3]]) {
            0 => (b.len(), 8),
            1 => {
                let large = u64::from_be_bytes(b.get(8..16)?.try_into().ok()?);
                (usize::try_from(large).ok()?, 16)
            }
            n => (n as usize, 8),
        };
        if size < header || size > b.len() {
            b = &[];
            return None;
        }
        let payload = &b[header..size];
        b = &b[size..];
        Some((kind, payload))
    })
}

fn child<'a>(b: &'a [u8], kind: &[u8; 4]) -> Option<&'a [u8]> {
    boxes(b).find(|(k, _)| k == kind).map(|(_, p)| p)
}

/// The rotation angle and mirror axis boxes associated with the primary item, from `meta`'s `pitm`, `ipco`
/// and `ipma`.
fn transforms(bytes: &[u8]) -> Option<(Option<u8>, Option<u8>)> {
    // `meta` and `pitm` are full boxes: a version byte and three flag bytes first.
    let meta = child(bytes, b"meta")?.get(4..)?;
    let pitm = child(meta, b"pitm")?;
    let primary = match pitm.first()? {
        0 => u16::from_be_bytes(pitm.get(4..6)?.try_into().ok()?) as u32,
        _ => u32::from_be_bytes(pitm.get(4..8)?.try_into().ok()?),
    };
    let iprp = child(meta, b"iprp")?;
    let properties: Vec<([u8; 4], &[u8])> = boxes(child(iprp, b"ipco")?).collect();
    let (mut irot, mut imir) = (None, None);
    for (_, ipma) in boxes(iprp).filter(|(k, _)| k == b"ipma") {
        let (version, wide_index) = (*ipma.first()?, ipma.get(3)? & 1 == 1);
        let count = u32::from_be_bytes(ipma.get(4..8)?.try_into().ok()?);
        let mut at = 8;
        for _ in 0..count {
            let item = if version < 1 {
                at += 2;
                u16::from_be_bytes(ipma.get(at - 2..at)?.try_into().ok()?) as u32
            } else {
                at += 4;
                u32::from_be_bytes(ipma.get(at - 4..at)?.try_into().ok()?)
            };
            let associations = *ipma.get(at)? as usize;
            at += 1;
            for _ in 0..associations {
                let index = if wide_index {
                    at += 2;
                    (u16::from_be_bytes(ipma.get(at - 2..at)?.try_into().ok()?) & 0x7fff) as usize
                } else {
                    at += 1;
                    (ipma.get(at - 1)? & 0x7f) as usize
                };
                if item != primary || index == 0 {
                    continue;
                }
                match properties.get(index - 1) {
                    Some((k, p)) if k == b"irot" => irot = Some(p.first()? & 3),
                    Some((k, p)) if k == b"imir" => imir = Some(p.first()? & 1),
                    _ => {}
                }
            }
        }
    }
    Some((irot, imir))
}
