//! YCbCr to RGB as Pillow 13's AVIF plugin gets it: libavif hands 8-bit pictures to libyuv (`I420ToRGB24MatrixFilter`
//! and friends, bilinear chroma upsampling), whose fixed-point arithmetic this reproduces to the bit. Checked
//! against Pillow on every subsampling, odd and even sizes, full and limited range and each matrix libavif gives
//! to libyuv (tests/fixtures/make_decode.py).

/// libyuv's `YuvConstants` for one matrix and range: luma gain `yg` (×64×256×256/257) and bias `yb`, and the
/// chroma weights ×64.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Matrix {
    yg: i32,
    yb: i32,
    ub: i32,
    ug: i32,
    vg: i32,
    vr: i32,
}

const fn matrix(yg: i32, yb: i32, ub: i32, ug: i32, vg: i32, vr: i32) -> Matrix {
    Matrix {
        yg,
        yb,
        ub,
        ug,
        vg,
        vr,
    }
}

const BT601_FULL: Matrix = matrix(16320, 32, 113, 22, 46, 90);
const BT601_LIMITED: Matrix = matrix(18997, -1160, 128, 25, 52, 102);
const BT709_FULL: Matrix = matrix(16320, 32, 119, 12, 30, 101);
const BT709_LIMITED: Matrix = matrix(18997, -1160, 128, 14, 34, 115);
const BT2020_FULL: Matrix = matrix(16320, 32, 120, 11, 37, 94);
const BT2020_LIMITED: Matrix = matrix(19003, -1160, 128, 12, 42, 107);

/// The constants libavif picks for an image's matrix coefficients and colour primaries (ISO/IEC 23091-2 code
/// points), or None where libavif converts without libyuv.
pub(crate) fn libavif_matrix(
    coefficients: u16,
    primaries: u16,
    full_range: bool,
) -> Option<Matrix> {
    let (bt601, bt709, bt2020) = if full_range {
        (BT601_FULL, BT709_FULL, BT2020_FULL)
    } else {
        (BT601_LIMITED, BT709_LIMITED, BT2020_LIMITED)
    };
    match coefficients {
        1 => Some(bt709),
        // BT.470BG, BT.601 and unspecified.
        2 | 5 | 6 => Some(bt601),
        9 => Some(bt2020),
        // Chroma-derived: by the primaries.
        12 => match primaries {
            1 | 2 => Some(bt709),
            5 | 6 => Some(bt601),
            9 => Some(bt2020),
            _ => None,
        },
        _ => None,
    }
}

/// An 8-bit plane: `width` samples per row, rows `stride` bytes apart.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plane<'a> {
    pub data: &'a [u8],
    pub width: usize,
    pub height: usize,
    pub stride: usize,
}

impl Plane<'_> {
    fn row(&self, y: usize) -> &[u8] {
        &self.data[y * self.stride..y * self.stride + self.width]
    }

    fn holds(&self) -> bool {
        self.width > 0
            && self.height > 0
            && self.stride >= self.width
            && self.data.len() >= (self.height - 1) * self.stride + self.width
    }
}

/// How the chroma planes are subsampled against luma.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Subsampling {
    /// 4:4:4
    None,
    /// 4:2:2, half width
    Horizontal,
    /// 4:2:0, half width and height
    Both,
}

/// Interleaved RGB of a `width`×`height` picture, or why the planes do not make one.
pub(crate) fn to_rgb(
    y: Plane,
    u: Plane,
    v: Plane,
    subsampling: Subsampling,
    m: Matrix,
) -> Result<Vec<u8>, String> {
    let (w, h) = (y.width, y.height);
    let (cw, ch) = match subsampling {
        Subsampling::None => (w, h),
        Subsampling::Horizontal => (w.div_ceil(2), h),
        Subsampling::Both => (w.div_ceil(2), h.div_ceil(2)),
    };
    for p in [u, v] {
        if p.width != cw || p.height != ch || !p.holds() {
            return Err(format!(
                "its chroma planes are {}x{}, not the {cw}x{ch} a {w}x{h} picture needs",
                p.width, p.height
            ));
        }
    }
    if !y.holds() {
        return Err("its luma plane is shorter than its size".into());
    }
    let mut rgb = vec![0u8; w * h * 3];
    let mut u_row = vec![0u8; w];
    let mut v_row = vec![0u8; w];
    let mut u_next = vec![0u8; w];
    let mut v_next = vec![0u8; w];
    let out_row = |rgb: &mut [u8], row: usize, u_row: &[u8], v_row: &[u8]| {
        convert_row(
            y.row(row),
            u_row,
            v_row,
            &mut rgb[row * w * 3..(row + 1) * w * 3],
            m,
        )
    };
    match subsampling {
        Subsampling::None => {
            for row in 0..h {
                out_row(&mut rgb, row, u.row(row), v.row(row));
            }
        }
        Subsampling::Horizontal => {
            for row in 0..h {
                upsample_linear(u.row(row), &mut u_row);
                upsample_linear(v.row(row), &mut v_row);
                out_row(&mut rgb, row, &u_row, &v_row);
            }
        }
        Subsampling::Both => {
            // libyuv's I420ToRGB24MatrixBilinear: the first row from the first chroma row alone, then pairs of
            // rows between chroma rows c and c+1, and for an even height the last row from the last chroma row.
            upsample_linear(u.row(0), &mut u_row);
            upsample_linear(v.row(0), &mut v_row);
            out_row(&mut rgb, 0, &u_row, &v_row);
            let mut row = 1;
            let mut c = 0;
            while row + 1 < h {
                upsample_bilinear(u.row(c), u.row(c + 1), &mut u_row, &mut u_next);
                upsample_bilinear(v.row(c), v.row(c + 1), &mut v_row, &mut v_next);
                out_row(&mut rgb, row, &u_row, &v_row);
                out_row(&mut rgb, row + 1, &u_next, &v_next);
                row += 2;
                c += 1;
            }
            if h % 2 == 0 && h > 1 {
                upsample_linear(u.row(c), &mut u_row);
                upsample_linear(v.row(c), &mut v_row);
                out_row(&mut rgb, h - 1, &u_row, &v_row);
            }
        }
    }
    Ok(rgb)
}

/// `ScaleRowUp2_Linear_Any`: a row twice as wide, samples centred between their sources (3:1 weights); the
/// first and the last output take their nearest source unfiltered.
fn upsample_linear(s: &[u8], d: &mut [u8]) {
    let w = d.len();
    d[0] = s[0];
    for j in 1..w.saturating_sub(1) {
        let x = (j - 1) / 2;
        let (a, b) = (s[x] as u32, s[x + 1] as u32);
        d[j] = if (j - 1) % 2 == 0 {
            (3 * a + b + 2) >> 2
        } else {
            (a + 3 * b + 2) >> 2
        } as u8;
    }
    if w > 1 {
        d[w - 1] = s[(w - 1) / 2];
    }
}

/// `ScaleRowUp2_Bilinear_Any`: the two output rows between chroma rows `s` (above) and `t` (below), 9:3:3:1
/// weights; the first and last columns are filtered vertically only.
fn upsample_bilinear(s: &[u8], t: &[u8], d: &mut [u8], e: &mut [u8]) {
    let w = d.len();
    let edge = |near: u32, far: u32| ((3 * near + far + 2) >> 2) as u8;
    d[0] = edge(s[0] as u32, t[0] as u32);
    e[0] = edge(t[0] as u32, s[0] as u32);
    for j in 1..w.saturating_sub(1) {
        let x = (j - 1) / 2;
        let (s0, s1, t0, t1) = (s[x] as u32, s[x + 1] as u32, t[x] as u32, t[x + 1] as u32);
        if (j - 1) % 2 == 0 {
            d[j] = ((9 * s0 + 3 * s1 + 3 * t0 + t1 + 8) >> 4) as u8;
            e[j] = ((3 * s0 + s1 + 9 * t0 + 3 * t1 + 8) >> 4) as u8;
        } else {
            d[j] = ((3 * s0 + 9 * s1 + t0 + 3 * t1 + 8) >> 4) as u8;
            e[j] = ((s0 + 3 * s1 + 3 * t0 + 9 * t1 + 8) >> 4) as u8;
        }
    }
    if w > 1 {
        let x = (w - 1) / 2;
        d[w - 1] = edge(s[x] as u32, t[x] as u32);
        e[w - 1] = edge(t[x] as u32, s[x] as u32);
    }
}

/// libyuv's `YuvPixel` over a row whose chroma is already at full width.
fn convert_row(y: &[u8], u: &[u8], v: &[u8], out: &mut [u8], m: Matrix) {
    let clamp = |x: i32| (x >> 6).clamp(0, 255) as u8;
    for (((&y, &u), &v), px) in y.iter().zip(u).zip(v).zip(out.chunks_exact_mut(3)) {
        let y1 = ((y as u32 * 0x0101 * m.yg as u32) >> 16) as i32;
        let (u, v) = (u as i32 - 128, v as i32 - 128);
        px[0] = clamp(y1 + v * m.vr + m.yb);
        px[1] = clamp(y1 - u * m.ug - v * m.vg + m.yb);
        px[2] = clamp(y1 + u * m.ub + m.yb);
    }
}

/// A 4:0:0 picture as libavif's own conversion makes it (libyuv has no grey-to-RGB24 path): full range is the
/// luma itself; limited range is stretched from 16..235, rounded.
pub(crate) fn grey_to_rgb(y: Plane, full_range: bool) -> Result<Vec<u8>, String> {
    if !y.holds() {
        return Err("its luma plane is shorter than its size".into());
    }
    let mut rgb = Vec::with_capacity(y.width * y.height * 3);
    for row in 0..y.height {
        for &l in y.row(row) {
            let g = if full_range {
                l
            } else {
                let n = ((l as f32 - 16.0) / 219.0).clamp(0.0, 1.0);
                (0.5 + n * 255.0) as u8
            };
            rgb.extend_from_slice(&[g, g, g]);
        }
    }
    Ok(rgb)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plane(data: &[u8], width: usize, height: usize) -> Plane<'_> {
        Plane {
            data,
            width,
            height,
            stride: width,
        }
    }

    #[test]
    fn grey_chroma_gives_grey_pixels_and_full_range_keeps_the_luma() {
        let y = [0u8, 1, 64, 128, 200, 255];
        let c = [128u8; 6];
        let rgb = to_rgb(
            plane(&y, 6, 1),
            plane(&c, 6, 1),
            plane(&c, 6, 1),
            Subsampling::None,
            BT601_FULL,
        )
        .unwrap();
        let want: Vec<u8> = y.iter().flat_map(|&l| [l, l, l]).collect();
        assert_eq!(rgb, want);
    }

    #[test]
    fn chroma_planes_of_the_wrong_size_are_refused() {
        let y = [0u8; 12];
        let c = [128u8; 4];
        let e = to_rgb(
            plane(&y, 4, 3),
            plane(&c, 2, 2),
            plane(&c, 1, 2),
            Subsampling::Both,
            BT601_FULL,
        )
        .unwrap_err();
        assert!(e.contains("chroma"), "{e}");
    }
}
