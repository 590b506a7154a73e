//! Pillow's conversions to RGB (`Image.convert("RGB")` from each mode a decoder hands it), reproduced to the
//! byte. Some are not what one would guess, and are kept because the reference sees photos through them:
//! 16-bit grey ("I;16") is clipped to 255, not scaled; other 16-bit samples keep their high byte, unrounded.

/// Pillow's `cmyk2rgb`: `255 - k` scaled by `255 - c` with its rounding division by 255.
pub fn cmyk_to_rgb(cmyk: &[u8]) -> Vec<u8> {
    let mut rgb = Vec::with_capacity(cmyk.len() / 4 * 3);
    for px in cmyk.chunks_exact(4) {
        let nk = 255 - px[3] as i32;
        for &c in &px[..3] {
            rgb.push((nk - muldiv255(c as i32, nk)).clamp(0, 255) as u8);
        }
    }
    rgb
}

/// Pillow's `MULDIV255`: a·b/255 rounded, without a division.
fn muldiv255(a: i32, b: i32) -> i32 {
    let t = a * b + 128;
    ((t >> 8) + t) >> 8
}

pub fn gray_to_rgb(gray: &[u8]) -> Vec<u8> {
    gray.iter().flat_map(|&g| [g, g, g]).collect()
}

/// "I;16" → "L" → "RGB": values above 255 become 255.
pub fn gray16_to_rgb(gray: &[u16]) -> Vec<u8> {
    gray.iter()
        .flat_map(|&g| {
            let v = g.min(255) as u8;
            [v, v, v]
        })
        .collect()
}

/// Indices through a palette of `[r, g, b]` triples; an index past its end is black, as in Pillow, whose
/// palettes are always 256 entries long and padded with zeros.
pub fn palette_to_rgb(indices: &[u8], palette: &[u8]) -> Vec<u8> {
    let mut full = [0u8; 768];
    let n = palette.len().min(768);
    full[..n].copy_from_slice(&palette[..n]);
    indices
        .iter()
        .flat_map(|&i| {
            let i = i as usize * 3;
            [full[i], full[i + 1], full[i + 2]]
        })
        .collect()
}

/// Keeps the first three of every `channels` samples (alpha is dropped, never composited).
pub fn take_rgb(samples: &[u8], channels: usize) -> Vec<u8> {
    if channels == 3 {
        return samples.to_vec();
    }
    samples
        .chunks_exact(channels)
        .flat_map(|px| [px[0], px[1], px[2]])
        .collect()
}

/// Grey with or without alpha, 8-bit: the grey replicated.
pub fn gray_alpha_to_rgb(samples: &[u8], channels: usize) -> Vec<u8> {
    samples
        .chunks_exact(channels)
        .flat_map(|px| [px[0], px[0], px[0]])
        .collect()
}

/// The high byte of 16-bit samples (Pillow's ";16B"/";16N" unpackers keep it and drop the low one).
pub fn high_bytes(samples: &[u16]) -> Vec<u8> {
    samples.iter().map(|&v| (v >> 8) as u8).collect()
}

/// Samples of 1, 2 or 4 bits packed MSB first into rows padded to a byte, unpacked to one byte each.
pub fn unpack_bits(packed: &[u8], width: usize, height: usize, bits: u8) -> Vec<u8> {
    let stride = (width * bits as usize).div_ceil(8);
    let per_byte = 8 / bits as usize;
    let mask = (1u16 << bits) as u8 - 1;
    let mut out = Vec::with_capacity(width * height);
    for row in packed.chunks(stride).take(height) {
        for x in 0..width {
            let byte = row[x / per_byte];
            let shift = 8 - bits as usize * (x % per_byte + 1);
            out.push((byte >> shift) & mask);
        }
    }
    out
}

/// Samples of 1, 2, 4 or 8 bits in rows `stride` bytes apart (MSB first), one byte each; None when the rows
/// do not hold `height` rows of `width` samples.
pub fn unpack_bits_any(
    packed: &[u8],
    width: usize,
    height: usize,
    bits: u8,
    stride: usize,
) -> Option<Vec<u8>> {
    let row_bytes = width.checked_mul(bits as usize)?.div_ceil(8);
    let need = stride
        .checked_mul(height.checked_sub(1)?)?
        .checked_add(row_bytes)?;
    if !matches!(bits, 1 | 2 | 4 | 8) || stride < row_bytes || packed.len() < need {
        return None;
    }
    Some(unpack_rows(packed, width, height, bits, stride))
}

fn unpack_rows(packed: &[u8], width: usize, height: usize, bits: u8, stride: usize) -> Vec<u8> {
    if bits == 8 {
        let mut out = Vec::with_capacity(width * height);
        for row in packed.chunks(stride).take(height) {
            out.extend_from_slice(&row[..width]);
        }
        return out;
    }
    let per_byte = 8 / bits as usize;
    let mask = (1u16 << bits) as u8 - 1;
    let mut out = Vec::with_capacity(width * height);
    for row in packed.chunks(stride).take(height) {
        for x in 0..width {
            let shift = 8 - bits as usize * (x % per_byte + 1);
            out.push((row[x / per_byte] >> shift) & mask);
        }
    }
    out
}

/// Grey samples of fewer than 8 bits scaled to 0..255 as Pillow's "L;2"/"L;4" and "1" unpackers do.
pub fn scale_low_bit_gray(values: &mut [u8], bits: u8) {
    let factor = match bits {
        1 => 255,
        2 => 85,
        4 => 17,
        _ => 1,
    };
    for v in values {
        *v *= factor;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pillow_cmyk_formula_on_its_corners_and_a_middle_value() {
        assert_eq!(cmyk_to_rgb(&[0, 0, 0, 0]), vec![255, 255, 255]);
        assert_eq!(cmyk_to_rgb(&[255, 255, 255, 0]), vec![0, 0, 0]);
        assert_eq!(cmyk_to_rgb(&[0, 0, 0, 255]), vec![0, 0, 0]);
        // nk = 155; 155 - round(100 * 155 / 255) = 155 - 61 = 94
        assert_eq!(cmyk_to_rgb(&[100, 0, 255, 100]), vec![94, 155, 0]);
    }

    #[test]
    fn packed_samples_unpack_msb_first_with_row_padding() {
        // Two rows of 3 two-bit samples: 0b00_01_10_xx, 0b11_10_01_xx
        let v = unpack_bits(&[0b0001_1000, 0b1110_0100], 3, 2, 2);
        assert_eq!(v, vec![0, 1, 2, 3, 2, 1]);
    }
}
