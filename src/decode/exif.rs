//! The few EXIF tags search filters on: when (DateTimeOriginal and its offset), with what (Make, Model) and
//! where (the GPS position). Written here rather than taken from a crate because the block is small, already
//! cut out of each container by `formats`, and hostile: every offset a photo gives is bounds-checked, every
//! count capped, and nothing here panics or allocates more than the block's own size.

/// The tags read, as the photo wrote them (text trimmed of padding, empty text as absent).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExifTags {
    /// `YYYY:MM:DD HH:MM:SS`, the camera's wall clock when the shutter fired (0x9003).
    pub date_time_original: Option<String>,
    /// `+HH:MM`, that clock's offset from UTC (0x9011).
    pub offset_time_original: Option<String>,
    /// When the file was last changed (0x0132), for photos without DateTimeOriginal.
    pub date_time: Option<String>,
    /// Its offset (0x9010).
    pub offset_time: Option<String>,
    pub make: Option<String>,
    pub model: Option<String>,
    /// `[latitude, longitude]` in degrees, north and east positive.
    pub gps: Option<[f64; 2]>,
}

const MAKE: u16 = 0x010F;
const MODEL: u16 = 0x0110;
const DATE_TIME: u16 = 0x0132;
const EXIF_IFD: u16 = 0x8769;
const GPS_IFD: u16 = 0x8825;
const DATE_TIME_ORIGINAL: u16 = 0x9003;
const OFFSET_TIME: u16 = 0x9010;
const OFFSET_TIME_ORIGINAL: u16 = 0x9011;
const GPS_LATITUDE_REF: u16 = 1;
const GPS_LATITUDE: u16 = 2;
const GPS_LONGITUDE_REF: u16 = 3;
const GPS_LONGITUDE: u16 = 4;

/// More entries than any real directory holds: a forged count stops here instead of walking megabytes.
const MAX_ENTRIES: usize = 512;

/// Reads the tags from an EXIF block (TIFF-structured, with or without its `Exif\0\0` prefix); whatever is
/// malformed reads as absent.
pub fn read(exif: &[u8]) -> ExifTags {
    let Some(tiff) = Tiff::new(exif) else {
        return ExifTags::default();
    };
    let Some(ifd0) = tiff.u32_at(4) else {
        return ExifTags::default();
    };
    let mut tags = ExifTags::default();
    let (mut exif_ifd, mut gps_ifd) = (None, None);
    for e in tiff.entries(ifd0 as usize) {
        match e.tag {
            MAKE => tags.make = tiff.ascii(&e),
            MODEL => tags.model = tiff.ascii(&e),
            DATE_TIME => tags.date_time = tiff.ascii(&e),
            EXIF_IFD => exif_ifd = tiff.long(&e),
            GPS_IFD => gps_ifd = tiff.long(&e),
            _ => {}
        }
    }
    // Each sub-directory is followed once from IFD0, never from itself: a pointer loop cannot recur.
    if let Some(at) = exif_ifd {
        for e in tiff.entries(at as usize) {
            match e.tag {
                DATE_TIME_ORIGINAL => tags.date_time_original = tiff.ascii(&e),
                OFFSET_TIME_ORIGINAL => tags.offset_time_original = tiff.ascii(&e),
                OFFSET_TIME => tags.offset_time = tiff.ascii(&e),
                _ => {}
            }
        }
    }
    tags.gps = gps_ifd.and_then(|at| tiff.gps(at as usize));
    tags
}

/// One directory entry: its tag, type, count and where its 4-byte value-or-offset field sits.
struct Entry {
    tag: u16,
    kind: u16,
    count: u32,
    field: usize,
}

struct Tiff<'a> {
    b: &'a [u8],
    little_endian: bool,
}

impl<'a> Tiff<'a> {
    fn new(exif: &'a [u8]) -> Option<Self> {
        let b = exif.strip_prefix(b"Exif\0\0").unwrap_or(exif);
        let little_endian = match b.get(..4)? {
            b"II*\0" => true,
            b"MM\0*" => false,
            _ => return None,
        };
        Some(Self { b, little_endian })
    }

    fn u16_at(&self, i: usize) -> Option<u16> {
        let a: [u8; 2] = self.b.get(i..i.checked_add(2)?)?.try_into().ok()?;
        Some(if self.little_endian {
            u16::from_le_bytes(a)
        } else {
            u16::from_be_bytes(a)
        })
    }

    fn u32_at(&self, i: usize) -> Option<u32> {
        let a: [u8; 4] = self.b.get(i..i.checked_add(4)?)?.try_into().ok()?;
        Some(if self.little_endian {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        })
    }

    /// The entries of the directory at `at`, as far as they lie inside the block.
    fn entries(&self, at: usize) -> impl Iterator<Item = Entry> + '_ {
        let n = self.u16_at(at).map_or(0, |n| n as usize).min(MAX_ENTRIES);
        (0..n).map_while(move |k| {
            let e = at.checked_add(2 + 12 * k)?;
            Some(Entry {
                tag: self.u16_at(e)?,
                kind: self.u16_at(e + 2)?,
                count: self.u32_at(e + 4)?,
                field: e + 8,
            })
        })
    }

    /// An entry's value bytes: inside its field when they fit in 4 bytes, else where the field points.
    fn value(&self, e: &Entry) -> Option<&'a [u8]> {
        let unit = match e.kind {
            1 | 2 | 6 | 7 => 1,
            3 | 8 => 2,
            4 | 9 | 11 => 4,
            5 | 10 | 12 => 8,
            _ => return None,
        };
        let len = (e.count as usize).checked_mul(unit)?;
        let start = if len <= 4 {
            e.field
        } else {
            self.u32_at(e.field)? as usize
        };
        self.b.get(start..start.checked_add(len)?)
    }

    /// An ASCII entry's text, up to its first NUL and trimmed; None when empty (or not text).
    fn ascii(&self, e: &Entry) -> Option<String> {
        if !matches!(e.kind, 2 | 7) {
            return None;
        }
        let v = self.value(e)?;
        let v = v.split(|&c| c == 0).next().unwrap_or(v);
        let text = String::from_utf8_lossy(v).trim().to_string();
        (!text.is_empty()).then_some(text)
    }

    /// A LONG (or IFD) entry's single value: a sub-directory's offset.
    fn long(&self, e: &Entry) -> Option<u32> {
        match (e.kind, e.count) {
            (4 | 13, 1) => self.u32_at(e.field),
            _ => None,
        }
    }

    /// An unsigned RATIONAL entry's values; None when any denominator is zero.
    fn rationals(&self, e: &Entry) -> Option<Vec<f64>> {
        if e.kind != 5 {
            return None;
        }
        let v = self.value(e)?;
        v.chunks_exact(8)
            .enumerate()
            .map(|(k, _)| {
                let (num, den) = (self.u32_at_in(v, 8 * k)?, self.u32_at_in(v, 8 * k + 4)?);
                (den != 0).then(|| num as f64 / den as f64)
            })
            .collect()
    }

    fn u32_at_in(&self, v: &[u8], i: usize) -> Option<u32> {
        let a: [u8; 4] = v.get(i..i + 4)?.try_into().ok()?;
        Some(if self.little_endian {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        })
    }

    /// Degrees, minutes and seconds with their hemisphere, as signed degrees.
    fn coordinate(
        &self,
        value: Option<&Entry>,
        hemisphere: Option<&Entry>,
        negative: u8,
    ) -> Option<f64> {
        let dms = self.rationals(value?)?;
        let degrees = match dms.as_slice() {
            [d] => *d,
            [d, m] => d + m / 60.0,
            [d, m, s, ..] => d + m / 60.0 + s / 3600.0,
            [] => return None,
        };
        let sign = match self
            .ascii(hemisphere?)?
            .as_bytes()
            .first()?
            .to_ascii_uppercase()
        {
            c if c == negative => -1.0,
            _ => 1.0,
        };
        Some(sign * degrees)
    }

    fn gps(&self, at: usize) -> Option<[f64; 2]> {
        let entries: Vec<Entry> = self.entries(at).collect();
        let find = |tag| entries.iter().find(|e| e.tag == tag);
        let lat = self.coordinate(find(GPS_LATITUDE), find(GPS_LATITUDE_REF), b'S')?;
        let lon = self.coordinate(find(GPS_LONGITUDE), find(GPS_LONGITUDE_REF), b'W')?;
        let on_earth = lat.abs() <= 90.0 && lon.abs() <= 180.0;
        // Cameras without a fix write zeros: a photo at exactly 0°, 0° (in the Gulf of Guinea) is that.
        let no_fix = lat == 0.0 && lon == 0.0;
        (on_earth && !no_fix).then_some([lat, lon])
    }
}

/// Builds EXIF blocks for tests: here, and in the integration tests and examples, which write JPEGs carrying
/// them (so it cannot be `cfg(test)`).
#[doc(hidden)]
pub mod build {
    /// The tags to write; None leaves a tag out.
    #[derive(Debug, Clone, Default)]
    pub struct Tags<'a> {
        pub make: Option<&'a str>,
        pub model: Option<&'a str>,
        pub date_time_original: Option<&'a str>,
        pub offset_time_original: Option<&'a str>,
        pub date_time: Option<&'a str>,
        /// Signed degrees.
        pub gps: Option<[f64; 2]>,
    }

    /// A little-endian EXIF block (without the `Exif\0\0` prefix) holding `tags`.
    pub fn exif_block(tags: &Tags) -> Vec<u8> {
        let mut ifd0: Vec<(u16, u16, u32, Vec<u8>)> = Vec::new();
        let ascii = |s: &str| {
            let mut v = s.as_bytes().to_vec();
            v.push(0);
            (2u16, v.len() as u32, v)
        };
        let push = |dir: &mut Vec<(u16, u16, u32, Vec<u8>)>, tag, (kind, count, data)| {
            dir.push((tag, kind, count, data))
        };
        if let Some(m) = tags.make {
            push(&mut ifd0, 0x010F, ascii(m));
        }
        if let Some(m) = tags.model {
            push(&mut ifd0, 0x0110, ascii(m));
        }
        if let Some(d) = tags.date_time {
            push(&mut ifd0, 0x0132, ascii(d));
        }
        let mut exif = Vec::new();
        if let Some(d) = tags.date_time_original {
            push(&mut exif, 0x9003, ascii(d));
        }
        if let Some(o) = tags.offset_time_original {
            push(&mut exif, 0x9011, ascii(o));
        }
        let mut gps = Vec::new();
        if let Some([lat, lon]) = tags.gps {
            let dms = |v: f64| {
                let v = v.abs();
                let (d, m) = (v.trunc(), (v.fract() * 60.0).trunc());
                let s = ((v * 3600.0) - d * 3600.0 - m * 60.0) * 1000.0;
                let mut b = Vec::new();
                for (n, den) in [(d as u32, 1u32), (m as u32, 1), (s.round() as u32, 1000)] {
                    b.extend_from_slice(&n.to_le_bytes());
                    b.extend_from_slice(&den.to_le_bytes());
                }
                (5u16, 3u32, b)
            };
            push(&mut gps, 1, ascii(if lat < 0.0 { "S" } else { "N" }));
            push(&mut gps, 2, dms(lat));
            push(&mut gps, 3, ascii(if lon < 0.0 { "W" } else { "E" }));
            push(&mut gps, 4, dms(lon));
        }
        // Layout: header, IFD0, the Exif IFD, the GPS IFD, then every value too long for its field.
        let size = |d: &Vec<(u16, u16, u32, Vec<u8>)>| 2 + 12 * d.len() + 4;
        let extra = (!exif.is_empty()) as usize + (!gps.is_empty()) as usize;
        let ifd0_size = 2 + 12 * (ifd0.len() + extra) + 4;
        let exif_at = 8 + ifd0_size;
        let gps_at = exif_at + if exif.is_empty() { 0 } else { size(&exif) };
        let mut data_at = gps_at + if gps.is_empty() { 0 } else { size(&gps) };
        if !exif.is_empty() {
            ifd0.push((0x8769, 4, 1, (exif_at as u32).to_le_bytes().to_vec()));
        }
        if !gps.is_empty() {
            ifd0.push((0x8825, 4, 1, (gps_at as u32).to_le_bytes().to_vec()));
        }
        let mut out = b"II*\0\x08\0\0\0".to_vec();
        let mut data = Vec::new();
        for dir in [&ifd0, &exif, &gps] {
            if dir.is_empty() {
                continue;
            }
            out.extend_from_slice(&(dir.len() as u16).to_le_bytes());
            for (tag, kind, count, value) in dir {
                out.extend_from_slice(&tag.to_le_bytes());
                out.extend_from_slice(&kind.to_le_bytes());
                out.extend_from_slice(&count.to_le_bytes());
                if value.len() <= 4 {
                    let mut field = value.clone();
                    field.resize(4, 0);
                    out.extend_from_slice(&field);
                } else {
                    out.extend_from_slice(&(data_at as u32).to_le_bytes());
                    data.extend_from_slice(value);
                    data_at += value.len();
                }
            }
            out.extend_from_slice(&[0, 0, 0, 0]);
        }
        out.extend_from_slice(&data);
        out
    }

    /// A JPEG with `exif` as its APP1 segment, inserted right after its SOI marker.
    pub fn with_exif(jpeg: &[u8], exif: &[u8]) -> Vec<u8> {
        let len = (exif.len() + 8) as u16;
        let mut out = jpeg[..2].to_vec();
        out.extend_from_slice(&[0xFF, 0xE1]);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(b"Exif\0\0");
        out.extend_from_slice(exif);
        out.extend_from_slice(&jpeg[2..]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::build::{exif_block, Tags};
    use super::*;

    fn full() -> Tags<'static> {
        Tags {
            make: Some("Canon"),
            model: Some("Canon EOS R5"),
            date_time_original: Some("2024:05:01 14:03:00"),
            offset_time_original: Some("+02:00"),
            date_time: Some("2024:06:01 09:00:00"),
            gps: Some([48.8566, -2.3522]),
        }
    }

    #[test]
    fn reads_what_a_camera_writes() {
        let t = read(&exif_block(&full()));
        assert_eq!(t.make.as_deref(), Some("Canon"));
        assert_eq!(t.model.as_deref(), Some("Canon EOS R5"));
        assert_eq!(t.date_time_original.as_deref(), Some("2024:05:01 14:03:00"));
        assert_eq!(t.offset_time_original.as_deref(), Some("+02:00"));
        assert_eq!(t.date_time.as_deref(), Some("2024:06:01 09:00:00"));
        let [lat, lon] = t.gps.unwrap();
        assert!(
            (lat - 48.8566).abs() < 1e-6 && (lon + 2.3522).abs() < 1e-6,
            "{lat} {lon}"
        );
        // With the JPEG prefix too.
        let mut prefixed = b"Exif\0\0".to_vec();
        prefixed.extend(exif_block(&full()));
        assert_eq!(read(&prefixed), t);
    }

    #[test]
    fn big_endian_blocks_read_the_same() {
        // IFD0 with Make = "Nik" (fits in its field) and nothing else.
        let b = b"MM\0*\0\0\0\x08\0\x01\x01\x0f\0\x02\0\0\0\x04Nik\0\0\0\0\0";
        assert_eq!(read(b).make.as_deref(), Some("Nik"));
    }

    #[test]
    fn a_block_without_tags_or_with_empty_ones_reads_as_nothing() {
        assert_eq!(read(&exif_block(&Tags::default())), ExifTags::default());
        let blank = Tags {
            make: Some("   "),
            date_time_original: Some(""),
            ..Default::default()
        };
        assert_eq!(read(&exif_block(&blank)), ExifTags::default());
        // Zeros where a camera without a fix writes them.
        let nowhere = Tags {
            gps: Some([0.0, 0.0]),
            ..Default::default()
        };
        assert_eq!(read(&exif_block(&nowhere)).gps, None);
    }

    #[test]
    fn hostile_blocks_read_as_absent_without_panicking() {
        let good = exif_block(&full());
        // Every truncation of a good block.
        for n in 0..good.len() {
            let _ = read(&good[..n]);
        }
        // Every byte of it flipped in turn, and a few values poked into every position.
        for i in 0..good.len() {
            for v in [0x00, 0xFF, 0x7F, 0x80] {
                let mut b = good.clone();
                b[i] = v;
                let _ = read(&b);
            }
        }
        // Directories pointing far outside, counts of 65535, offsets near usize's end.
        let mut huge = b"II*\0\xff\xff\xff\xff".to_vec();
        assert_eq!(read(&huge), ExifTags::default());
        huge = b"II*\0\x08\0\0\0\xff\xff".to_vec();
        huge.extend(std::iter::repeat_n(0xFF, 64));
        assert_eq!(read(&huge), ExifTags::default());
        assert_eq!(read(b"garbage that is no TIFF"), ExifTags::default());
        assert_eq!(read(b""), ExifTags::default());
        // A GPS IFD pointing at IFD0 (a loop) and rationals with zero denominators.
        let mut looped =
            b"II*\0\x08\0\0\0\x01\0\x25\x88\x04\0\x01\0\0\0\x08\0\0\0\0\0\0\0".to_vec();
        assert_eq!(read(&looped).gps, None);
        looped.clear();
        let zero_den = Tags {
            gps: Some([10.0, 10.0]),
            ..Default::default()
        };
        let mut b = exif_block(&zero_den);
        let n = b.len();
        b[n - 4..].copy_from_slice(&[0, 0, 0, 0]); // the last seconds' denominator
        assert_eq!(read(&b).gps, None);
    }
}
