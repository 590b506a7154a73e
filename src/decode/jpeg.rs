//! JPEG through libjpeg-turbo itself (the TurboJPEG 3 API), which is what Pillow links: the same ISLOW inverse
//! DCT, the same fancy chroma upsampling and the same YCbCr→RGB tables give the same bytes, which no other
//! decoder promises (zune-jpeg differs by up to 3 levels, enough to move a LET by cosine 0.003).

use std::ffi::{c_int, CStr};

use turbojpeg_sys as tj;

use super::pil;

/// What the header says, read before any pixel buffer exists.
#[derive(Debug, Clone, Copy)]
struct JpegHeader {
    width: u32,
    height: u32,
    precision: c_int,
    colorspace: c_int,
}

/// One TurboJPEG decompressor. Not shared between threads (the handle keeps per-call state).
struct Handle(tj::tjhandle);

impl Handle {
    fn new() -> Result<Self, String> {
        let h = unsafe { tj::tj3Init(tj::TJINIT_TJINIT_DECOMPRESS as c_int) };
        if h.is_null() {
            return Err("libjpeg-turbo could not start a decompressor (out of memory?)".into());
        }
        Ok(Self(h))
    }

    fn message(&self) -> String {
        let s = unsafe { CStr::from_ptr(tj::tj3GetErrorStr(self.0)) };
        s.to_string_lossy().into_owned()
    }

    /// libjpeg-turbo reports a recoverable problem (extraneous bytes before a marker, say) as a failed call
    /// with the warning code, after writing every pixel; Pillow ignores libjpeg's warnings, so do we.
    fn is_warning(&self) -> bool {
        unsafe { tj::tj3GetErrorCode(self.0) == tj::TJERR_TJERR_WARNING as c_int }
    }

    fn get(&self, param: tj::TJPARAM) -> c_int {
        unsafe { tj::tj3Get(self.0, param as c_int) }
    }

    fn header(&mut self, data: &[u8]) -> Result<JpegHeader, String> {
        let rc = unsafe { tj::tj3DecompressHeader(self.0, data.as_ptr(), data.len() as _) };
        if rc != 0 && !self.is_warning() {
            return Err(self.message());
        }
        let width = self.get(tj::TJPARAM_TJPARAM_JPEGWIDTH);
        let height = self.get(tj::TJPARAM_TJPARAM_JPEGHEIGHT);
        if width <= 0 || height <= 0 {
            return Err("the JPEG header declares no pixels".into());
        }
        Ok(JpegHeader {
            width: width as u32,
            height: height as u32,
            precision: self.get(tj::TJPARAM_TJPARAM_PRECISION),
            colorspace: self.get(tj::TJPARAM_TJPARAM_COLORSPACE),
        })
    }

    fn decompress(
        &mut self,
        data: &[u8],
        out: &mut [u8],
        pitch: usize,
        format: tj::TJPF,
    ) -> Result<(), String> {
        let rc = unsafe {
            tj::tj3Decompress8(
                self.0,
                data.as_ptr(),
                data.len() as _,
                out.as_mut_ptr(),
                pitch as c_int,
                format as c_int,
            )
        };
        if rc != 0 && !self.is_warning() {
            return Err(self.message());
        }
        Ok(())
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        unsafe { tj::tj3Destroy(self.0) }
    }
}

/// Decodes to RGB as `Image.open(path).convert("RGB")` does. `check` sees the header first and may refuse the
/// photo before its pixels are allocated. With `reduce` 2, 4 or 8 the picture is made at that fraction of its
/// size, as `Image.draft` asks of libjpeg: the inverse DCT itself makes the smaller picture, so neither the
/// time nor the memory of the full size is spent (each side `ceil(side / reduce)`); for pictures shown to
/// people only, never for embeddings, which need Pillow's full-size pixels (`reduce` 1).
pub fn decode_reduced(
    data: &[u8],
    check: impl FnOnce(u32, u32) -> Result<(), String>,
    reduce: u32,
) -> Result<(u32, u32, Vec<u8>), String> {
    let mut h = Handle::new()?;
    let mut head = h.header(data)?;
    if head.precision != 8 {
        return Err(format!(
            "{}-bit JPEG samples are not supported (only 8-bit JPEG, as Pillow reads)",
            head.precision
        ));
    }
    check(head.width, head.height)?;
    if reduce > 1 {
        if !matches!(reduce, 2 | 4 | 8) {
            return Err(format!(
                "a JPEG can be decoded at 1/2, 1/4 or 1/8, not 1/{reduce}"
            ));
        }
        let factor = tj::tjscalingfactor {
            num: 1,
            denom: reduce as c_int,
        };
        if unsafe { tj::tj3SetScalingFactor(h.0, factor) } != 0 {
            return Err(h.message());
        }
        head.width = head.width.div_ceil(reduce);
        head.height = head.height.div_ceil(reduce);
    }
    decode_pixels(&mut h, data, head)
}

/// The pixels at the size `head` says (the header's, or the scaled size set on the handle).
fn decode_pixels(
    h: &mut Handle,
    data: &[u8],
    head: JpegHeader,
) -> Result<(u32, u32, Vec<u8>), String> {
    let (w, hgt) = (head.width as usize, head.height as usize);
    let cmyk = head.colorspace == tj::TJCS_TJCS_CMYK as c_int
        || head.colorspace == tj::TJCS_TJCS_YCCK as c_int;
    if cmyk {
        // Pillow reads 4-component JPEGs as CMYK (libjpeg turns YCCK into CMYK), always with Adobe's inverted
        // polarity, then converts to RGB with its own formula.
        let mut raw = vec![0u8; w * hgt * 4];
        h.decompress(data, &mut raw, w * 4, tj::TJPF_TJPF_CMYK)?;
        for v in raw.iter_mut() {
            *v = 255 - *v;
        }
        Ok((head.width, head.height, pil::cmyk_to_rgb(&raw)))
    } else {
        // Grey is replicated into the three channels by libjpeg, exactly as Pillow's L→RGB does.
        let mut rgb = vec![0u8; w * hgt * 3];
        h.decompress(data, &mut rgb, w * 3, tj::TJPF_TJPF_RGB)?;
        Ok((head.width, head.height, rgb))
    }
}
