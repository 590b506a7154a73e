//! PNG, GIF and TIFF from their raw samples, converted to RGB by Pillow's rules (`pil`), with the EXIF block
//! each carries. Every decoder is told the header's pixel count is acceptable before it allocates pixels.

use std::borrow::Cow;
use std::io::Cursor;

use super::pil;

pub struct Raw {
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
    /// The EXIF block (TIFF-structured bytes), when the file carries one.
    pub exif: Option<Vec<u8>>,
}

pub fn png(
    data: &[u8],
    max_bytes: usize,
    check: impl FnOnce(u32, u32) -> Result<(), String>,
) -> Result<Raw, String> {
    use png::{BitDepth, ColorType};
    let mut decoder =
        png::Decoder::new_with_limits(Cursor::new(data), png::Limits { bytes: max_bytes });
    decoder.set_transformations(png::Transformations::IDENTITY);
    let mut reader = decoder.read_info().map_err(png_error)?;
    let info = reader.info();
    let (w, h) = (info.width, info.height);
    check(w, h)?;
    let (color, depth) = (info.color_type, info.bit_depth);
    let palette: Option<Vec<u8>> = info.palette.as_ref().map(|p| p.to_vec());
    let exif = info.exif_metadata.as_ref().map(|e| e.to_vec());
    let size = reader
        .output_buffer_size()
        .ok_or("the PNG's pixel buffer would not fit in memory")?;
    let mut buf = vec![0u8; size];
    let frame = reader.next_frame(&mut buf).map_err(png_error)?;
    buf.truncate(frame.buffer_size());
    let (wu, hu) = (w as usize, h as usize);
    let wide = || -> Vec<u16> {
        buf.chunks_exact(2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .collect()
    };
    let rgb = match (color, depth) {
        (ColorType::Grayscale, BitDepth::Sixteen) => pil::gray16_to_rgb(&wide()),
        (ColorType::Grayscale, BitDepth::Eight) => pil::gray_to_rgb(&buf),
        (ColorType::Grayscale, d) => {
            let bits = d as u8;
            let mut g = pil::unpack_bits(&buf, wu, hu, bits);
            pil::scale_low_bit_gray(&mut g, bits);
            pil::gray_to_rgb(&g)
        }
        (ColorType::GrayscaleAlpha, BitDepth::Sixteen) => {
            pil::gray_alpha_to_rgb(&pil::high_bytes(&wide()), 2)
        }
        (ColorType::GrayscaleAlpha, _) => pil::gray_alpha_to_rgb(&buf, 2),
        (ColorType::Rgb, BitDepth::Sixteen) => pil::high_bytes(&wide()),
        (ColorType::Rgb, _) => buf,
        (ColorType::Rgba, BitDepth::Sixteen) => pil::take_rgb(&pil::high_bytes(&wide()), 4),
        (ColorType::Rgba, _) => pil::take_rgb(&buf, 4),
        (ColorType::Indexed, d) => {
            let palette = palette.ok_or("a palette PNG without its palette (PLTE)")?;
            let indices = if d == BitDepth::Eight {
                buf
            } else {
                pil::unpack_bits(&buf, wu, hu, d as u8)
            };
            pil::palette_to_rgb(&indices, &palette)
        }
    };
    Ok(Raw {
        width: w,
        height: h,
        rgb,
        exif,
    })
}

fn png_error(e: png::DecodingError) -> String {
    let eof = matches!(&e, png::DecodingError::IoError(io) if is_eof(io));
    without_debug_names(&corrupt("PNG", e, eof))
}

/// The png crate's messages with its Rust debug text put in words: a chunk type's debug struct
/// (`ChunkType { type: tEXt, critical: false, ... }`) becomes `chunk "tEXt"`, a deflate error's variant name
/// a plain sentence.
fn without_debug_names(message: &str) -> String {
    const CHUNK: &str = "ChunkType { type: ";
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find(CHUNK) {
        out.push_str(&rest[..at]);
        let after = &rest[at + CHUNK.len()..];
        let name_end = after.find(", ").unwrap_or(after.len());
        let close = after.find('}').map_or(after.len(), |c| c + 1);
        out.push_str(&format!("chunk \"{}\"", &after[..name_end.min(close)]));
        rest = &after[close.max(name_end.min(after.len()))..];
    }
    out.push_str(rest);
    match out.find("Corrupt deflate stream.") {
        Some(at) => format!("{}its compressed image data is damaged", &out[..at]),
        None => out,
    }
}

pub const TRUNCATED: &str = "the image data is truncated (the file ends before its last pixel row)";

fn is_eof(io: &std::io::Error) -> bool {
    io.kind() == std::io::ErrorKind::UnexpectedEof
}

/// What a decoder's error tells a user: "truncated" when the data ran out, else the decoder's own words.
fn corrupt(format: &str, e: impl std::fmt::Display, eof: bool) -> String {
    if eof {
        TRUNCATED.into()
    } else {
        format!("corrupt {format}: {e}")
    }
}

/// A simple lossless WebP 16384 pixels wide or tall (the VP8L maximum), rewrapped as an extended WebP whose VP8X
/// chunk states the size: image-webp 0.2.4 reads a simple file's size as `(1 + field) & 0x3FFF`, which makes
/// 16384 zero ("the image is empty"), while it reads the VP8X size and the VP8L stream's own correctly. None
/// for every other file, which is decoded as it is.
pub fn webp_lossless_at_the_limit(data: &[u8]) -> Option<Vec<u8>> {
    if data.get(12..16)? != b"VP8L" || *data.get(20)? != 0x2f {
        return None;
    }
    let header = u32::from_le_bytes(data.get(21..25)?.try_into().ok()?);
    let (w1, h1) = (header & 0x3FFF, (header >> 14) & 0x3FFF);
    if w1 != 0x3FFF && h1 != 0x3FFF {
        return None;
    }
    let alpha = (header >> 28) & 1 == 1;
    let chunks = data.get(12..)?;
    let mut out = Vec::with_capacity(data.len() + 18);
    out.extend_from_slice(b"RIFF");
    let riff_size = u32::try_from(chunks.len()).ok()?.checked_add(4 + 18)?;
    out.extend_from_slice(&riff_size.to_le_bytes());
    out.extend_from_slice(b"WEBPVP8X");
    out.extend_from_slice(&10u32.to_le_bytes());
    out.extend_from_slice(&[if alpha { 0x10 } else { 0 }, 0, 0, 0]);
    out.extend_from_slice(&w1.to_le_bytes()[..3]);
    out.extend_from_slice(&h1.to_le_bytes()[..3]);
    out.extend_from_slice(chunks);
    Some(out)
}

fn le_u16(b: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(i..i.checked_add(2)?)?.try_into().ok()?,
    ))
}

fn le_u32(b: &[u8], i: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(i..i.checked_add(4)?)?.try_into().ok()?,
    ))
}

/// A 16-bit BMP (5-6-5 with BI_BITFIELDS masks, or 5-5-5 as BI_RGB or with its masks) as Pillow's `BGR;16` and
/// `BGR;15` unpackers read it: each field scaled by `v * 255 / max`, truncated (the `image` crate rounds, which
/// moves most pixels by one level). None for every other BMP, which the `image` crate reads as Pillow does.
pub fn bmp16(
    data: &[u8],
    check: impl FnOnce(u32, u32) -> Result<(), String>,
) -> Option<Result<Raw, String>> {
    let u16_at = |i: usize| le_u16(data, i);
    let u32_at = |i: usize| le_u32(data, i);
    if data.get(..2)? != b"BM" || u32_at(14)? < 40 || u16_at(28)? != 16 {
        return None;
    }
    let five_six_five = match u32_at(30)? {
        0 => false,
        3 => match (u32_at(54)?, u32_at(58)?, u32_at(62)?) {
            (0xF800, 0x07E0, 0x001F) => true,
            (0x7C00, 0x03E0, 0x001F) => false,
            _ => return None,
        },
        _ => return None,
    };
    let offset = u32_at(10)? as usize;
    let width = u32_at(18)? as i32;
    let height = u32_at(22)? as i32;
    if width <= 0 || height == 0 || height == i32::MIN {
        return None;
    }
    let (w, h) = (width as u32, height.unsigned_abs());
    Some((|| {
        check(w, h)?;
        let stride = (w as usize * 2).div_ceil(4) * 4;
        let end = offset
            .checked_add(
                stride
                    .checked_mul(h as usize)
                    .ok_or("the BMP's rows overflow")?,
            )
            .ok_or("the BMP's rows overflow")?;
        let pixels = data.get(offset..end).ok_or(TRUNCATED)?;
        let mut rgb = Vec::with_capacity(w as usize * h as usize * 3);
        for y in 0..h as usize {
            // Rows are stored bottom-up unless the height is negative.
            let stored = if height > 0 { h as usize - 1 - y } else { y };
            let row = &pixels[stored * stride..stored * stride + w as usize * 2];
            for px in row.chunks_exact(2) {
                let v = u16::from_le_bytes([px[0], px[1]]) as u32;
                let (r, g, b) = if five_six_five {
                    ((v >> 11) & 31, ((v >> 5) & 63) * 255 / 63, v & 31)
                } else {
                    ((v >> 10) & 31, ((v >> 5) & 31) * 255 / 31, v & 31)
                };
                rgb.extend_from_slice(&[(r * 255 / 31) as u8, g as u8, (b * 255 / 31) as u8]);
            }
        }
        Ok(Raw {
            width: w,
            height: h,
            rgb,
            exif: None,
        })
    })())
}

/// A BMP of palette indices (1, 4 or 8 bits; raw, RLE8 or RLE4) as Pillow 13's BMP plugin reads it: every header
/// size it knows (OS/2 1 and 2, Windows 3 to 5), the plane count ignored, the palette read right after the header,
/// RLE pixels that the data skips (end of line, delta, an early end) left at index 0, top-down RLE. None for
/// other BMPs (the `image` crate reads those as Pillow does) and for the grey palettes Pillow reads through an
/// unusual raw mode.
pub fn bmp_indexed(
    data: &[u8],
    check: impl FnOnce(u32, u32) -> Result<(), String>,
) -> Option<Result<Raw, String>> {
    let u16_at = |i: usize| le_u16(data, i);
    let u32_at = |i: usize| le_u32(data, i);
    if data.get(..2)? != b"BM" {
        return None;
    }
    let offset = u32_at(10)? as usize;
    let header = u32_at(14)? as usize;
    let (width, height, top_down, bits, compression, colors, padding) = match header {
        12 => (
            u16_at(18)? as u32,
            u16_at(20)? as u32,
            false,
            u16_at(24)?,
            0,
            0,
            3,
        ),
        40 | 52 | 56 | 64 | 108 | 124 => {
            let raw_height = u32_at(22)?;
            let top_down = data.get(25)? == &0xFF;
            let height = if top_down {
                raw_height.wrapping_neg()
            } else {
                raw_height
            };
            (
                u32_at(18)?,
                height,
                top_down,
                u16_at(28)?,
                u32_at(30)?,
                u32_at(46)?,
                4,
            )
        }
        _ => return None,
    };
    if !matches!(bits, 1 | 4 | 8) || compression > 2 {
        return None;
    }
    let colors = if colors == 0 {
        1usize << bits
    } else {
        colors as usize
    };
    if colors > 256 {
        return Some(Err(format!(
            "the BMP declares a palette of {colors} colours, more than the 256 one can hold"
        )));
    }
    let palette_at = 14 + header;
    let palette: Vec<[u8; 3]> = data
        .get(palette_at..)
        .unwrap_or(&[])
        .chunks_exact(padding)
        .take(colors)
        .map(|c| [c[2], c[1], c[0]])
        .collect();
    let grey_values: Vec<usize> = if colors == 2 {
        vec![0, 255]
    } else {
        (0..colors).collect()
    };
    let grey = grey_values.iter().enumerate().all(|(i, &v)| {
        palette
            .get(i)
            .is_some_and(|c| c.iter().all(|&x| x as usize == v))
    });
    // Pillow reads a grey palette as mode 1 or L straight from the samples; only 8-bit L and 1-bit black and
    // white come out as a palette lookup would.
    if grey && !((colors > 2 && bits == 8) || (colors == 2 && bits == 1 && compression == 0)) {
        return None;
    }
    // Pillow reads the pixels from where the palette ends when the header's offset is 0 or points at it.
    let pixel_at = if offset == 0 || offset == palette_at {
        offset + padding * colors
    } else {
        offset
    };
    Some((|| {
        check(width, height)?;
        let (w, h) = (width as usize, height as usize);
        let stored = data.get(pixel_at..).ok_or(TRUNCATED)?;
        let indices = match compression {
            0 => {
                let stride = ((w * bits as usize + 31) >> 3) & !3;
                // The last row's padding may be missing, as Pillow allows.
                let need = stride
                    .checked_mul(h - 1)
                    .and_then(|n| n.checked_add((w * bits as usize).div_ceil(8)))
                    .ok_or("the BMP's rows overflow")?;
                let rows = stored.get(..need).ok_or(TRUNCATED)?;
                pil::unpack_bits_any(rows, w, h, bits as u8, stride).ok_or(TRUNCATED)?
            }
            _ => bmp_rle(stored, pixel_at, w, h, compression == 2)?,
        };
        let mut rgb = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            // Bottom-up rows unless the height was negative.
            let row = if top_down { y } else { h - 1 - y };
            for &i in &indices[row * w..(row + 1) * w] {
                let c = if grey && colors > 2 {
                    [i; 3]
                } else {
                    palette.get(i as usize).copied().unwrap_or([0; 3])
                };
                rgb.extend_from_slice(&c);
            }
        }
        Ok(Raw {
            width,
            height,
            rgb,
            exif: None,
        })
    })())
}

/// RLE8/RLE4 data decoded as Pillow's `BmpRleDecoder` does, into `w * h` indices in stored row order: what the
/// data skips stays 0, a run past the row's end is cut, and data that ends before the image is full is refused
/// as Pillow refuses it ("not enough image data").
fn bmp_rle(
    src: &[u8],
    file_offset: usize,
    w: usize,
    h: usize,
    rle4: bool,
) -> Result<Vec<u8>, String> {
    let total = w.checked_mul(h).ok_or("the BMP's rows overflow")?;
    let mut out: Vec<u8> = Vec::with_capacity(total);
    let (mut at, mut x) = (0usize, 0usize);
    while out.len() < total {
        let (Some(&count), Some(&value)) = (src.get(at), src.get(at + 1)) else {
            break;
        };
        at += 2;
        if count > 0 {
            let n = if x + count as usize > w {
                w.saturating_sub(x)
            } else {
                count as usize
            };
            for k in 0..n {
                out.push(if !rle4 {
                    value
                } else if k % 2 == 0 {
                    value >> 4
                } else {
                    value & 15
                });
            }
            x += n;
            continue;
        }
        match value {
            0 => {
                while out.len() % w != 0 {
                    out.push(0);
                }
                x = 0;
            }
            1 => break,
            2 => {
                let (Some(&right), Some(&up)) = (src.get(at), src.get(at + 1)) else {
                    break;
                };
                at += 2;
                let skip = (right as usize + up as usize * w).min(total - out.len());
                out.resize(out.len() + skip, 0);
                x = out.len() % w;
            }
            n => {
                let wanted = (total - out.len()).min(n as usize);
                let byte_count = if rle4 { wanted.div_ceil(2) } else { wanted };
                let bytes = &src[at.min(src.len())..(at + byte_count).min(src.len())];
                at += bytes.len();
                if rle4 {
                    for (k, &b) in bytes.iter().enumerate() {
                        out.push(b >> 4);
                        if k * 2 + 1 < wanted {
                            out.push(b & 15);
                        }
                    }
                } else {
                    out.extend_from_slice(bytes);
                }
                if bytes.len() < byte_count || out.len() == total {
                    break;
                }
                x += n as usize;
                // Absolute runs end on a 16-bit boundary of the file.
                if (file_offset + at) % 2 != 0 {
                    at += 1;
                }
            }
        }
    }
    if out.len() < total {
        return Err("the BMP's RLE data ends before its last pixel (not enough image data)".into());
    }
    Ok(out)
}

/// The first frame as Pillow shows it: drawn at its place on the logical screen, the rest of the screen the
/// frame's transparent index (or index 0), everything through the frame's palette (its own, else the global).
pub fn gif(
    data: &[u8],
    max_bytes: usize,
    check: impl FnOnce(u32, u32) -> Result<(), String>,
) -> Result<Raw, String> {
    // Without a global colour table, a frame without its own would be refused by the gif crate, where
    // Pillow reads its indices as grey levels (mode L): a grey global table gives the same pixels, and a frame
    // with its own table still uses that.
    let with_grey_table;
    let data = if data.len() >= 13 && data[10] & 0x80 == 0 {
        with_grey_table = with_grey_global_table(data);
        &with_grey_table[..]
    } else {
        data
    };
    let mut options = gif::DecodeOptions::new();
    options.set_color_output(gif::ColorOutput::Indexed);
    options.set_memory_limit(gif::MemoryLimit::Bytes(
        std::num::NonZeroU64::new(max_bytes.max(1) as u64).unwrap_or(std::num::NonZeroU64::MIN),
    ));
    let mut decoder = options.read_info(Cursor::new(data)).map_err(gif_error)?;
    let (w, h) = (decoder.width() as u32, decoder.height() as u32);
    check(w, h)?;
    let global = decoder.global_palette().map(|p| p.to_vec());
    let frame = decoder
        .read_next_frame()
        .map_err(gif_error)?
        .ok_or("a GIF without any frame")?;
    let palette = frame
        .palette
        .clone()
        .or(global)
        .ok_or("a GIF frame without a palette")?;
    let mut screen = vec![frame.transparent.unwrap_or(0); w as usize * h as usize];
    let (fw, fh) = (frame.width as usize, frame.height as usize);
    let (left, top) = (frame.left as usize, frame.top as usize);
    for y in 0..fh {
        let sy = top + y;
        if sy >= h as usize {
            break;
        }
        for x in 0..fw {
            let sx = left + x;
            if sx >= w as usize {
                break;
            }
            screen[sy * w as usize + sx] = frame.buffer[y * fw + x];
        }
    }
    Ok(Raw {
        width: w,
        height: h,
        rgb: pil::palette_to_rgb(&screen, &palette),
        exif: None,
    })
}

/// The GIF with a 256-entry grey global colour table after its logical screen descriptor.
fn with_grey_global_table(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 768);
    out.extend_from_slice(&data[..13]);
    out[10] |= 0x80 | 0x07;
    out.extend((0..=255u8).flat_map(|v| [v, v, v]));
    out.extend_from_slice(&data[13..]);
    out
}

fn gif_error(e: gif::DecodingError) -> String {
    let eof = matches!(&e, gif::DecodingError::Io(io) if is_eof(io));
    corrupt("GIF", e, eof)
}

/// The first image of a TIFF.
pub fn tiff(
    data: &[u8],
    max_bytes: usize,
    check: impl FnOnce(u32, u32) -> Result<(), String>,
) -> Result<Raw, String> {
    use tiff::decoder::{DecodingResult, Limits};
    use tiff::tags::Tag;
    use tiff::ColorType;
    let mut limits = Limits::default();
    limits.decoding_buffer_size = max_bytes;
    limits.intermediate_buffer_size = max_bytes;
    let mut decoder = tiff::decoder::Decoder::new(Cursor::new(data))
        .map_err(tiff_error)?
        .with_limits(limits);
    let (w, h) = decoder.dimensions().map_err(tiff_error)?;
    check(w, h)?;
    // The tiff crate has no colour type for a palette image (PhotometricInterpretation 3): read here.
    let photometric = tag_u16(&mut decoder, Tag::PhotometricInterpretation);
    let color = match decoder.colortype() {
        Ok(c) => c,
        Err(_) if photometric == Some(3) => {
            // One value per sample (index, and alpha in a PA image): the index's decides.
            let bits = decoder
                .find_tag_unsigned_vec::<u16>(Tag::BitsPerSample)
                .ok()
                .flatten()
                .and_then(|v| v.first().copied())
                .unwrap_or(1);
            match bits {
                1 | 2 | 4 | 8 => ColorType::Palette(bits as u8),
                _ => return Err(tiff_unsupported(&format!("a {bits}-bit palette"))),
            }
        }
        Err(e) => return Err(tiff_error(e)),
    };
    let compression = tag_u16(&mut decoder, Tag::Compression);
    // JPEG inside TIFF would go through another JPEG decoder than libjpeg-turbo: not the reference's pixels.
    if matches!(compression, Some(6) | Some(7)) {
        return Err(tiff_unsupported("JPEG compression"));
    }
    let exif = tiff_orientation_as_exif(&mut decoder);
    // ExtraSamples 1: the alpha is associated (the colours premultiplied by it), which Pillow undoes on load.
    let premultiplied = tag_u16(&mut decoder, Tag::ExtraSamples) == Some(1);
    // The tiff crate calls grey with an extra sample "multiband"; Pillow reads it as LA (alpha dropped).
    let color = match color {
        ColorType::Multiband {
            bit_depth: 8,
            num_samples: 2,
        } if photometric == Some(1) => ColorType::GrayA(8),
        other => other,
    };
    let fill_order = tag_u16(&mut decoder, Tag::FillOrder).unwrap_or(1);
    let bits = color.bit_depth();
    // FillOrder 2 packs a byte's pixels from its lowest bit. Pillow honours it for samples of under 8 bits
    // (its `;R` raw modes, libtiff's bit reversal) and ignores it for whole bytes, as the tiff crate does.
    let reversed_bits = fill_order == 2 && bits < 8;
    if reversed_bits && compression.is_some_and(|c| c != 1) {
        return Err(tiff_unsupported(
            "reversed bit order (FillOrder 2) in compressed strips",
        ));
    }
    if let ColorType::Palette(bits) = color {
        let map = decoder
            .get_tag_u16_vec(Tag::ColorMap)
            .map_err(|_| "corrupt TIFF: a palette image without its colour map".to_string())?;
        let indices = tiff_palette_indices(data, max_bytes, w, h, bits, reversed_bits)?;
        return Ok(Raw {
            width: w,
            height: h,
            rgb: palette16_to_rgb(&indices, &map)?,
            exif,
        });
    }
    // PlanarConfiguration 2 stores each sample in its own plane (all reds, then all greens, ...); the tiff crate
    // reads every plane into one buffer, plane after plane.
    let planar = tag_u16(&mut decoder, Tag::PlanarConfiguration) == Some(2);
    let samples = color.num_samples() as usize;
    let tiled = matches!(decoder.get_chunk_type(), tiff::decoder::ChunkType::Tile);
    if planar && samples > 1 && color.bit_depth() >= 8 && tiled {
        // The tiff crate's whole-image read trips over tiled planes; tile by tile works. Only for the layouts
        // converted below, and within the allocation limit (the buffer is sized here, not by the crate).
        if !matches!(
            color,
            ColorType::GrayA(8)
                | ColorType::RGB(8 | 16)
                | ColorType::RGBA(8 | 16)
                | ColorType::CMYK(8)
        ) {
            return Err(tiff_unsupported(&tiff_color_in_words(color)));
        }
        let bytes = (w as usize)
            .checked_mul(h as usize)
            .and_then(|n| n.checked_mul(samples))
            .and_then(|n| n.checked_mul(color.bit_depth() as usize / 8))
            .filter(|&n| n <= max_bytes);
        if bytes.is_none() {
            return Err(format!(
                "its separate colour planes need more than the {} MB a photo may take",
                max_bytes >> 20
            ));
        }
        let image = tiled_planes_interleaved(&mut decoder, w, h, samples)?;
        return tiff_samples_to_rgb(color, image, w, h, premultiplied, reversed_bits, exif);
    }
    let mut image = DecodingResult::U8(Vec::new());
    let layout = decoder
        .read_image_to_buffer(&mut image)
        .map_err(tiff_error)?;
    if image.as_buffer(0).as_bytes().len() < layout.complete_len {
        return Err(format!(
            "its separate colour planes need more than the {} MB a photo may take",
            max_bytes >> 20
        ));
    }
    if planar && samples > 1 {
        if color.bit_depth() < 8 {
            return Err(tiff_unsupported("separate planes of fewer than 8 bits"));
        }
        image = match image {
            DecodingResult::U8(v) => DecodingResult::U8(interleave_planes(&v, samples)),
            DecodingResult::U16(v) => DecodingResult::U16(interleave_planes(&v, samples)),
            other => other,
        };
    }
    tiff_samples_to_rgb(color, image, w, h, premultiplied, reversed_bits, exif)
}

/// A TIFF's decoded samples as Pillow converts them to RGB.
fn tiff_samples_to_rgb(
    color: tiff::ColorType,
    image: tiff::decoder::DecodingResult,
    w: u32,
    h: u32,
    premultiplied: bool,
    reversed_bits: bool,
    exif: Option<Vec<u8>>,
) -> Result<Raw, String> {
    use tiff::decoder::DecodingResult;
    use tiff::ColorType;
    let (wu, hu) = (w as usize, h as usize);
    let unsupported = |what: &str| Err(tiff_unsupported(what));
    let rgb = match (color, image) {
        (ColorType::Gray(8), DecodingResult::U8(v)) => pil::gray_to_rgb(&v),
        (ColorType::Gray(16), DecodingResult::U16(v)) => pil::gray16_to_rgb(&v),
        (ColorType::Gray(b @ (1 | 2 | 4)), DecodingResult::U8(v)) => {
            let v = if reversed_bits { reverse_bits(&v) } else { v };
            let mut g = pil::unpack_bits(&v, wu, hu, b);
            pil::scale_low_bit_gray(&mut g, b);
            pil::gray_to_rgb(&g)
        }
        (ColorType::GrayA(8), DecodingResult::U8(v)) => pil::gray_alpha_to_rgb(&v, 2),
        (ColorType::RGB(8), DecodingResult::U8(v)) => v,
        (ColorType::RGB(16), DecodingResult::U16(v)) => pil::high_bytes(&v),
        (ColorType::RGBA(8), DecodingResult::U8(v)) if premultiplied => unpremultiplied_rgb(&v),
        (ColorType::RGBA(8), DecodingResult::U8(v)) => pil::take_rgb(&v, 4),
        // Pillow's `RGBa;16` unpackers un-premultiply the high bytes exactly as `RGBa` does 8-bit samples.
        (ColorType::RGBA(16), DecodingResult::U16(v)) if premultiplied => {
            unpremultiplied_rgb(&pil::high_bytes(&v))
        }
        (ColorType::RGBA(16), DecodingResult::U16(v)) => pil::take_rgb(&pil::high_bytes(&v), 4),
        // TIFF CMYK is stored as ink amounts (no Adobe inversion).
        (ColorType::CMYK(8), DecodingResult::U8(v)) => pil::cmyk_to_rgb(&v),
        (c, samples) => {
            return unsupported(&match samples {
                DecodingResult::F16(_) | DecodingResult::F32(_) | DecodingResult::F64(_) => {
                    "floating-point samples".to_string()
                }
                DecodingResult::I8(_)
                | DecodingResult::I16(_)
                | DecodingResult::I32(_)
                | DecodingResult::I64(_) => "signed integer samples".to_string(),
                _ => tiff_color_in_words(c),
            })
        }
    };
    Ok(Raw {
        width: w,
        height: h,
        rgb,
        exif,
    })
}

fn reverse_bits(v: &[u8]) -> Vec<u8> {
    v.iter().map(|b| b.reverse_bits()).collect()
}

/// The colour indices of a palette TIFF, one byte each. The tiff crate does not decode colour-mapped images, so
/// the file is decoded as the grey image it is underneath: the same strips, its PhotometricInterpretation
/// rewritten from 3 (palette) to 1 (grey) in a copy of its first directory.
fn tiff_palette_indices(
    data: &[u8],
    max_bytes: usize,
    w: u32,
    h: u32,
    bits: u8,
    reversed_bits: bool,
) -> Result<Vec<u8>, String> {
    use tiff::decoder::{DecodingResult, Limits};
    let mut grey = data.to_vec();
    let at = photometric_entry(&grey)
        .ok_or("corrupt TIFF: its palette tag is not where its directory says")?;
    let one = if grey[0] == b'I' { [1, 0] } else { [0, 1] };
    grey[at..at + 2].copy_from_slice(&one);
    let mut limits = Limits::default();
    limits.decoding_buffer_size = max_bytes;
    limits.intermediate_buffer_size = max_bytes;
    let mut decoder = tiff::decoder::Decoder::new(Cursor::new(&grey[..]))
        .map_err(tiff_error)?
        .with_limits(limits);
    // A palette image with alpha (Pillow's PA) stores index and alpha side by side; the alpha is dropped.
    let samples = tag_u16(&mut decoder, tiff::tags::Tag::SamplesPerPixel).unwrap_or(1);
    let planar = tag_u16(&mut decoder, tiff::tags::Tag::PlanarConfiguration) == Some(2);
    let pixels = w as usize * h as usize;
    match decoder.read_image().map_err(tiff_error)? {
        // Separate planes: the crate reads the first, the indices.
        DecodingResult::U8(v) if bits == 8 && samples == 2 && planar && v.len() >= pixels => {
            Ok(v[..pixels].to_vec())
        }
        DecodingResult::U8(v) if bits == 8 && samples == 2 => {
            Ok(v.into_iter().step_by(2).collect())
        }
        DecodingResult::U8(v) if bits == 8 && samples == 1 => Ok(v),
        DecodingResult::U8(_) if samples != 1 => {
            Err(tiff_unsupported("a palette with extra samples"))
        }
        DecodingResult::U8(v) => {
            let v = if reversed_bits { reverse_bits(&v) } else { v };
            Ok(pil::unpack_bits(&v, w as usize, h as usize, bits))
        }
        _ => Err(tiff_unsupported(&format!("a {bits}-bit palette"))),
    }
}

/// Where the value of PhotometricInterpretation (tag 262, one SHORT) sits in the first directory of a classic
/// TIFF or a BigTIFF.
fn photometric_entry(b: &[u8]) -> Option<usize> {
    let le = b.first()? == &b'I';
    let uint_at = |i: usize, n: usize| -> Option<u64> {
        let bytes = b.get(i..i.checked_add(n)?)?;
        let fold = |acc: u64, &x: &u8| acc << 8 | x as u64;
        Some(if le {
            bytes.iter().rev().fold(0, fold)
        } else {
            bytes.iter().fold(0, fold)
        })
    };
    let u16_at = |i: usize| uint_at(i, 2).map(|v| v as u16);
    let u32_at = |i: usize| uint_at(i, 4).map(|v| v as u32);
    let u64_at = |i: usize| uint_at(i, 8);
    let big = u16_at(2)? == 43;
    let (count, first, entry, value) = if big {
        let ifd = usize::try_from(u64_at(8)?).ok()?;
        (usize::try_from(u64_at(ifd)?).ok()?, ifd + 8, 20, 12)
    } else {
        let ifd = u32_at(4)? as usize;
        (u16_at(ifd)? as usize, ifd + 2, 12, 8)
    };
    (0..count.min(4096))
        .map(|i| first + i * entry)
        .find(|&e| u16_at(e) == Some(262) && u16_at(e + 2) == Some(3))
        .map(|e| e + value)
        .filter(|&at| at + 2 <= b.len())
}

/// Palette indices to RGB as Pillow's TIFF plugin builds its palette: the high byte of each 16-bit colour-map
/// entry (`ColorMap` holds all reds, then all greens, then all blues, a third of its length each), an index past
/// the palette black.
fn palette16_to_rgb(indices: &[u8], map: &[u16]) -> Result<Vec<u8>, String> {
    let n = map.len() / 3;
    if n == 0 || n > 256 {
        return Err(format!(
            "corrupt TIFF: its colour map has {} entries, where a palette holds 3 × 1 to 256",
            map.len()
        ));
    }
    let mut rgb = Vec::with_capacity(indices.len() * 3);
    for &i in indices {
        let i = i as usize;
        if i < n {
            rgb.extend_from_slice(&[
                (map[i] >> 8) as u8,
                (map[n + i] >> 8) as u8,
                (map[2 * n + i] >> 8) as u8,
            ]);
        } else {
            rgb.extend_from_slice(&[0, 0, 0]);
        }
    }
    Ok(rgb)
}

/// A tiled TIFF with separate planes (8 or 16 bits), read tile by tile into interleaved pixels.
fn tiled_planes_interleaved(
    decoder: &mut tiff::decoder::Decoder<Cursor<&[u8]>>,
    w: u32,
    h: u32,
    samples: usize,
) -> Result<tiff::decoder::DecodingResult, String> {
    use tiff::decoder::DecodingResult;
    let (tw, th) = decoder.chunk_dimensions();
    if tw == 0 || th == 0 {
        return Err("corrupt TIFF: a tile of zero size".into());
    }
    let (across, down) = (w.div_ceil(tw), h.div_ceil(th));
    let (wu, hu) = (w as usize, h as usize);
    let mut out: Option<DecodingResult> = None;
    for plane in 0..samples {
        for ty in 0..down {
            for tx in 0..across {
                let index = plane as u32 * across * down + ty * across + tx;
                let chunk = decoder.read_chunk(index).map_err(tiff_error)?;
                let (x0, y0) = ((tx * tw) as usize, (ty * th) as usize);
                let (dw, dh) = ((tw as usize).min(wu - x0), (th as usize).min(hu - y0));
                macro_rules! place {
                    ($variant:ident, $v:expr) => {{
                        let out = out.get_or_insert_with(|| DecodingResult::$variant(vec![0; wu * hu * samples]));
                        let DecodingResult::$variant(dst) = out else {
                            return Err("corrupt TIFF: tiles of different sample types".into());
                        };
                        if $v.len() < dw * dh {
                            return Err(TRUNCATED.into());
                        }
                        for r in 0..dh {
                            for c in 0..dw {
                                dst[((y0 + r) * wu + x0 + c) * samples + plane] = $v[r * dw + c];
                            }
                        }
                    }};
                }
                match chunk {
                    DecodingResult::U8(v) => place!(U8, v),
                    DecodingResult::U16(v) => place!(U16, v),
                    _ => return Err(tiff_unsupported("separate planes of this sample type")),
                }
            }
        }
    }
    out.ok_or_else(|| "corrupt TIFF: no tiles".into())
}

/// Samples stored plane after plane (`planes` of equal length) as interleaved pixels.
fn interleave_planes<T: Copy + Default>(v: &[T], planes: usize) -> Vec<T> {
    let n = v.len() / planes;
    let mut out = vec![T::default(); n * planes];
    for (p, plane) in v.chunks_exact(n).take(planes).enumerate() {
        for (i, &x) in plane.iter().enumerate() {
            out[i * planes + p] = x;
        }
    }
    out
}

/// Premultiplied RGBA as Pillow's `RGBa` unpacker reads it: each colour `v * 255 / alpha`, truncated and
/// clipped at 255; a pixel of zero alpha is black.
fn unpremultiplied_rgb(rgba: &[u8]) -> Vec<u8> {
    rgba.chunks_exact(4)
        .flat_map(|p| {
            let a = p[3] as u32;
            let undo = |v: u8| match a {
                0 => 0,
                255 => v,
                _ => (v as u32 * 255 / a).min(255) as u8,
            };
            [undo(p[0]), undo(p[1]), undo(p[2])]
        })
        .collect()
}

/// A TIFF keeps its orientation as a tag of its own first directory; handed on as a one-entry EXIF block so
/// that every format goes through the same orientation code.
fn tiff_orientation_as_exif<R: std::io::Read + std::io::Seek>(
    d: &mut tiff::decoder::Decoder<R>,
) -> Option<Vec<u8>> {
    let o = tag_u16(d, tiff::tags::Tag::Orientation)?;
    let mut b = b"II*\0\x08\0\0\0\x01\0\x12\x01\x03\0\x01\0\0\0".to_vec();
    b.extend_from_slice(&o.to_le_bytes());
    b.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    Some(b)
}

/// A tag holding one SHORT, or None where it is absent or holds something else.
fn tag_u16<R: std::io::Read + std::io::Seek>(
    d: &mut tiff::decoder::Decoder<R>,
    tag: tiff::tags::Tag,
) -> Option<u16> {
    d.find_tag(tag).ok().flatten()?.into_u16().ok()
}

fn tiff_error(e: tiff::TiffError) -> String {
    if let tiff::TiffError::UnsupportedError(u) = &e {
        return tiff_unsupported(&tiff_feature_in_words(u));
    }
    let eof = matches!(&e, tiff::TiffError::IoError(io) if is_eof(io));
    corrupt("TIFF", e, eof)
}

/// A TIFF that is fine but uses something regionseek does not read: said so, with what to do.
fn tiff_unsupported(what: &str) -> String {
    format!(
        "this TIFF uses {what}, which regionseek does not read; convert it to PNG or an 8/16-bit RGB TIFF \
         (e.g. `magick in.tif out.png`, or any photo editor)"
    )
}

/// What a TIFF uses that the decoder refused, in words (the tiff crate's own text shows Rust debug names).
fn tiff_feature_in_words(u: &tiff::TiffUnsupportedError) -> String {
    use tiff::tags::{
        CompressionMethod, PhotometricInterpretation, PlanarConfiguration, SampleFormat,
    };
    use tiff::TiffUnsupportedError as U;
    let samples = |formats: &[SampleFormat]| {
        if formats.contains(&SampleFormat::IEEEFP) {
            "floating-point samples".to_string()
        } else if formats.contains(&SampleFormat::Int) {
            "signed integer samples".to_string()
        } else {
            "samples of an unknown number format".to_string()
        }
    };
    match u {
        U::UnsupportedCompressionMethod(m) => match m {
            CompressionMethod::Huffman => "CCITT modified Huffman (fax) compression".into(),
            CompressionMethod::Fax3 => "CCITT Group 3 fax compression".into(),
            CompressionMethod::Fax4 => "CCITT Group 4 fax compression".into(),
            CompressionMethod::JPEG | CompressionMethod::ModernJPEG => "JPEG compression".into(),
            other => format!("compression method {}", other.to_u16()),
        },
        U::UnknownCompressionMethod => {
            "a compression method the TIFF standard does not define".into()
        }
        U::UnsupportedSampleFormat(f) => samples(f),
        U::FloatingPointPredictor(_) => "a floating-point predictor".into(),
        U::HorizontalPredictor(_) => "a horizontal predictor on this sample layout".into(),
        U::UnsupportedInterpretation(i) | U::InterpretationWithBits(i, _) => match i {
            PhotometricInterpretation::CIELab => "CIELab colour".into(),
            PhotometricInterpretation::YCbCr => "YCbCr colour".into(),
            PhotometricInterpretation::TransparencyMask => "a transparency mask".into(),
            other => format!("photometric interpretation {}", other.to_u16()),
        },
        U::UnknownInterpretation => "an unknown photometric interpretation".into(),
        U::UnsupportedPlanarConfig(Some(PlanarConfiguration::Planar)) => {
            "separate colour planes (planar configuration 2)".into()
        }
        U::UnsupportedPlanarConfig(_) => "an unknown planar configuration".into(),
        U::UnsupportedSampleDepth(n) => format!("{n} samples per pixel"),
        U::UnsupportedBitsPerChannel(n) => format!("{n} bits per sample"),
        U::InconsistentBitsPerSample(bits) => format!(
            "different bit depths per channel ({})",
            bits.iter()
                .map(u8::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        U::UnsupportedColorType(c) => tiff_color_in_words(*c),
        _ => "a layout".into(),
    }
}

fn tiff_color_in_words(c: tiff::ColorType) -> String {
    use tiff::ColorType as C;
    match c {
        C::Gray(b) => format!("{b}-bit grey"),
        C::GrayA(b) => format!("{b}-bit grey with alpha"),
        C::RGB(b) => format!("{b}-bit RGB"),
        C::RGBA(b) => format!("{b}-bit RGB with alpha"),
        C::CMYK(b) => format!("{b}-bit CMYK"),
        C::CMYKA(b) => format!("{b}-bit CMYK with alpha"),
        C::YCbCr(b) => format!("{b}-bit YCbCr"),
        C::Palette(b) => format!("a {b}-bit palette"),
        _ => "a colour layout".into(),
    }
}

/// The orientation (1..=8) in an EXIF block, 1 when it says nothing usable.
pub fn exif_orientation(exif: &[u8]) -> u8 {
    let exif = exif.strip_prefix(b"Exif\0\0").unwrap_or(exif);
    let le = match exif.get(..4) {
        Some(b"II*\0") => true,
        Some(b"MM\0*") => false,
        _ => return 1,
    };
    let u16_at = |i: usize| -> Option<u16> {
        let b = exif.get(i..i + 2)?;
        Some(if le {
            u16::from_le_bytes([b[0], b[1]])
        } else {
            u16::from_be_bytes([b[0], b[1]])
        })
    };
    let u32_at = |i: usize| -> Option<u32> {
        let b = exif.get(i..i + 4)?;
        let a = [b[0], b[1], b[2], b[3]];
        Some(if le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        })
    };
    let find = || -> Option<u8> {
        let ifd = u32_at(4)? as usize;
        let n = u16_at(ifd)? as usize;
        for k in 0..n.min(1000) {
            let e = ifd + 2 + 12 * k;
            if u16_at(e)? == 0x0112 {
                let v = u16_at(e + 8)?;
                return (1..=8).contains(&v).then_some(v as u8);
            }
        }
        None
    };
    find().unwrap_or(1)
}

/// The marker segments of a JPEG before its first scan, as (marker, body); stops at anything malformed.
fn jpeg_segments(b: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    let mut i = 2;
    std::iter::from_fn(move || loop {
        if i + 4 > b.len() || b[i] != 0xFF {
            return None;
        }
        let marker = b[i + 1];
        if marker == 0xFF {
            i += 1;
            continue;
        }
        if marker == 0xD8 || marker == 0x01 || (0xD0..=0xD7).contains(&marker) {
            i += 2;
            continue;
        }
        if marker == 0xDA || marker == 0xD9 {
            return None;
        }
        let len = u16::from_be_bytes([b[i + 2], b[i + 3]]) as usize;
        let body = b.get(i + 4..(i + 2 + len).max(i + 4))?;
        i += 2 + len;
        return Some((marker, body));
    })
}

/// The EXIF block of a JPEG (its APP1 "Exif" segment).
pub fn jpeg_exif(b: &[u8]) -> Option<Cow<'_, [u8]>> {
    jpeg_segments(b)
        .find(|(marker, body)| *marker == 0xE1 && body.starts_with(b"Exif\0\0"))
        .map(|(_, body)| Cow::Borrowed(&body[6..]))
}

/// The size a JPEG's start-of-frame declares (libjpeg refuses sides over 65500 with a message that does not
/// say what the photo claims; the pixel limit is checked on this first).
pub fn jpeg_frame_size(b: &[u8]) -> Option<(u32, u32)> {
    let (_, body) = jpeg_segments(b)
        .find(|(m, _)| matches!(m, 0xC0..=0xCF) && !matches!(m, 0xC4 | 0xC8 | 0xCC))?;
    let h = u16::from_be_bytes([*body.get(1)?, *body.get(2)?]) as u32;
    let w = u16::from_be_bytes([*body.get(3)?, *body.get(4)?]) as u32;
    Some((w, h))
}

/// The EXIF block of a PNG (its `eXIf` chunk), found without decoding: the chunks are walked by their
/// lengths, and a length running past the end stops the walk.
pub fn png_exif(b: &[u8]) -> Option<Cow<'_, [u8]>> {
    let mut i = 8;
    while i + 8 <= b.len() {
        let len = u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]) as usize;
        let id = &b[i + 4..i + 8];
        let body = b.get(i + 8..(i + 8).checked_add(len)?)?;
        match id {
            b"eXIf" => return Some(Cow::Borrowed(body)),
            b"IEND" => return None,
            _ => i = i + 12 + len,
        }
    }
    None
}

/// The EXIF block of a WebP (its RIFF "EXIF" chunk).
pub fn webp_exif(b: &[u8]) -> Option<Cow<'_, [u8]>> {
    let mut i = 12;
    while i + 8 <= b.len() {
        let id = &b[i..i + 4];
        let len = u32::from_le_bytes([b[i + 4], b[i + 5], b[i + 6], b[i + 7]]) as usize;
        let body = b.get(i + 8..i + 8 + len)?;
        if id == b"EXIF" {
            return Some(Cow::Borrowed(body));
        }
        i += 8 + len + (len & 1);
    }
    None
}
