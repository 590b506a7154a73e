//! Photo metadata: what a row records of its photo's EXIF, and the words every front door filters on it
//! with (`after`/`before` dates, `camera`, `near`), parsed here once for the CLI, the server and Python.

use crate::decode::exif::ExifTags;
use crate::index::{Filter, PhotoMeta};

/// A filter word that does not parse, in terms of the parameter it was given as.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhotoFilterError {
    #[error(
        "{name} must be a date (YYYY-MM-DD) or a date and time (RFC 3339, e.g. 2024-05-01T14:00:00+02:00), \
         not {given:?}"
    )]
    NotADate { name: &'static str, given: String },
    #[error(
        "near must be LAT,LON,KM (degrees, e.g. 48.85,2.35,10; latitude -90 to 90, longitude -180 to 180, \
         a radius above 0 km), not {0:?}"
    )]
    NotAPlace(String),
    #[error("after ({after}) is not before before ({before}): no photo can be in that range")]
    EmptyRange { after: String, before: String },
}

/// The metadata words as a front door received them (each None when not given).
#[derive(Debug, Clone, Copy, Default)]
pub struct PhotoWords<'a> {
    pub after: Option<&'a str>,
    pub before: Option<&'a str>,
    pub camera: Option<&'a str>,
    pub near: Option<&'a str>,
}

/// `filter` with the metadata words set: `after` keeps photos taken at or after its instant, `before` those
/// taken before its instant (a date alone is its midnight UTC), `camera` those whose make and model contain
/// it, `near` those within its radius.
pub fn with_photo_words(mut filter: Filter, w: PhotoWords) -> Result<Filter, PhotoFilterError> {
    let after = w.after.map(|t| parse_instant("after", t)).transpose()?;
    let before = w.before.map(|t| parse_instant("before", t)).transpose()?;
    if let (Some(a), Some(b)) = (after, before) {
        if a >= b {
            return Err(PhotoFilterError::EmptyRange {
                after: w.after.unwrap_or_default().to_string(),
                before: w.before.unwrap_or_default().to_string(),
            });
        }
    }
    filter.after_ms = after;
    filter.before_ms = before;
    filter.camera = w.camera.map(str::to_string);
    filter.near = w.near.map(parse_near).transpose()?;
    Ok(filter)
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// A run of exactly `n` ASCII digits at the start of `s`, and the rest.
fn digits(s: &str, n: usize) -> Option<(i64, &str)> {
    let head = s.get(..n)?;
    head.bytes()
        .all(|c| c.is_ascii_digit())
        .then(|| (head.parse().ok(), &s[n..]))
        .and_then(|(v, rest)| Some((v?, rest)))
}

fn expect<'s>(s: &'s str, c: char) -> Option<&'s str> {
    s.strip_prefix(c)
}

/// `YYYY-MM-DD`, optionally followed (after `T` or a space) by `HH:MM[:SS[.fff]]` and an offset (`Z`,
/// `±HH:MM`, `±HHMM`); no offset reads as UTC. Milliseconds since the epoch, UTC.
fn instant_ms(s: &str) -> Option<i64> {
    let (y, s) = digits(s, 4)?;
    let (mo, s) = digits(expect(s, '-')?, 2)?;
    let (d, s) = digits(expect(s, '-')?, 2)?;
    if !(1..=12).contains(&mo) || !(1..=days_in_month(y, mo)).contains(&d) {
        return None;
    }
    let day_ms = days_from_civil(y, mo, d) * 86_400_000;
    let Some(time) = s.strip_prefix(['T', 't', ' ']) else {
        return s.is_empty().then_some(day_ms);
    };
    let (h, s) = digits(time, 2)?;
    let (mi, mut s) = digits(expect(s, ':')?, 2)?;
    let mut sec = 0;
    let mut ms = 0;
    if let Some(rest) = s.strip_prefix(':') {
        (sec, s) = digits(rest, 2)?;
        if let Some(frac) = s.strip_prefix(['.', ',']) {
            let n = frac.bytes().take_while(u8::is_ascii_digit).count();
            if n == 0 {
                return None;
            }
            let (whole, rest) = frac.split_at(n);
            ms = whole
                .bytes()
                .chain(std::iter::repeat(b'0'))
                .take(3)
                .fold(0, |a, c| a * 10 + (c - b'0') as i64);
            s = rest;
        }
    }
    // 60 seconds is a leap second; it reads as the next minute's first.
    if h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let offset_min = match s {
        "" | "Z" | "z" => 0,
        _ => {
            let sign = match s.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (oh, rest) = digits(&s[1..], 2)?;
            let rest = rest.strip_prefix(':').unwrap_or(rest);
            let (om, rest) = if rest.is_empty() {
                (0, rest)
            } else {
                digits(rest, 2)?
            };
            if !rest.is_empty() || oh > 23 || om > 59 {
                return None;
            }
            sign * (oh * 60 + om)
        }
    };
    Some(day_ms + ((h * 60 + mi - offset_min) * 60 + sec) * 1000 + ms)
}

/// A date or date-time as the `after`/`before` words take it (see [`instant_ms`]).
pub fn parse_instant(name: &'static str, text: &str) -> Result<i64, PhotoFilterError> {
    instant_ms(text.trim()).ok_or_else(|| PhotoFilterError::NotADate {
        name,
        given: text.to_string(),
    })
}

/// `LAT,LON,KM`.
pub fn parse_near(text: &str) -> Result<(f64, f64, f64), PhotoFilterError> {
    let bad = || PhotoFilterError::NotAPlace(text.to_string());
    let parts: Vec<f64> = text
        .split(',')
        .map(|p| p.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|_| bad())?;
    let [lat, lon, km] = parts[..] else {
        return Err(bad());
    };
    check_near(lat, lon, km).ok_or_else(bad)
}

/// A place and radius that make sense on Earth.
pub fn check_near(lat: f64, lon: f64, km: f64) -> Option<(f64, f64, f64)> {
    let ok = (-90.0..=90.0).contains(&lat)
        && (-180.0..=180.0).contains(&lon)
        && km.is_finite()
        && km > 0.0;
    ok.then_some((lat, lon, km))
}

/// An EXIF date and time (`YYYY:MM:DD HH:MM:SS`) with its offset (`±HH:MM`), as ISO 8601 and as ms since
/// the epoch; None for the blanks and zeros cameras without a clock write.
fn taken_at(date_time: &str, offset: Option<&str>) -> Option<(String, i64)> {
    let b = date_time.as_bytes();
    if b.len() < 19 || b[4] != b':' || b[7] != b':' {
        return None;
    }
    let part = |r: std::ops::Range<usize>| date_time.get(r);
    let mut iso = format!(
        "{}-{}-{}T{}",
        part(0..4)?,
        part(5..7)?,
        part(8..10)?,
        part(11..19)?
    );
    if let Some(o) = offset.filter(|o| instant_ms(&format!("{iso}{o}")).is_some()) {
        iso.push_str(o);
    }
    let ms = instant_ms(&iso)?;
    Some((iso, ms))
}

/// "Make Model", the make left out where the model already starts with it ("Canon" "Canon EOS R5").
fn camera(make: Option<&str>, model: Option<&str>) -> Option<String> {
    match (make, model) {
        (Some(make), Some(model))
            if model
                .get(..make.len())
                .is_some_and(|m| m.eq_ignore_ascii_case(make)) =>
        {
            Some(model.to_string())
        }
        (Some(make), Some(model)) => Some(format!("{make} {model}")),
        (one, other) => one.or(other).map(str::to_string),
    }
}

/// What a row records of its photo: the EXIF tags read from it and its size as decoded.
pub fn photo_meta(tags: &ExifTags, width: u32, height: u32) -> PhotoMeta {
    let original = tags
        .date_time_original
        .as_deref()
        .and_then(|d| taken_at(d, tags.offset_time_original.as_deref()));
    let when = original.or_else(|| {
        tags.date_time
            .as_deref()
            .and_then(|d| taken_at(d, tags.offset_time.as_deref()))
    });
    let (taken_at, taken_at_ms) = when.unzip();
    PhotoMeta {
        taken_at,
        taken_at_ms,
        camera: camera(tags.make.as_deref(), tags.model.as_deref()),
        gps: tags.gps,
        width: Some(width),
        height: Some(height),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;

    #[test]
    fn dates_and_times_read_as_utc_instants() {
        let at = |s| parse_instant("after", s);
        assert_eq!(at("1970-01-01"), Ok(0));
        assert_eq!(at("1970-01-02"), Ok(DAY));
        assert_eq!(at("1969-12-31"), Ok(-DAY));
        assert_eq!(at("2000-03-01"), Ok(11_017 * DAY));
        assert_eq!(at("2024-05-01T14:03:00+02:00"), at("2024-05-01T12:03:00Z"));
        assert_eq!(at("2024-05-01 12:03:00"), at("2024-05-01T12:03:00z"));
        assert_eq!(at("2024-05-01T12:03"), at("2024-05-01T12:03:00"));
        assert_eq!(
            at("2024-05-01T12:03:00.5-0130").unwrap(),
            at("2024-05-01T13:33:00Z").unwrap() + 500
        );
        for bad in [
            "",
            "2024",
            "2024-5-1",
            "2024-13-01",
            "2023-02-29",
            "2024-05-01T25:00",
            "2024-05-01T12",
            "2024-05-01X",
            "2024-05-01T12:00+2",
            "yesterday",
            "2024-05-01T12:00:00.Z",
            "２０２４-05-01",
        ] {
            assert!(at(bad).is_err(), "{bad:?} parsed");
        }
        assert_eq!(at("2024-02-29").map(|ms| ms % DAY), Ok(0));
    }

    #[test]
    fn near_takes_a_place_and_a_radius() {
        assert_eq!(parse_near("48.85, 2.35 ,10"), Ok((48.85, 2.35, 10.0)));
        for bad in [
            "", "1,2", "1,2,3,4", "91,0,1", "0,181,1", "0,0,0", "0,0,-1", "0,0,inf", "a,b,c",
            "NaN,0,1",
        ] {
            assert!(parse_near(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn words_set_the_filter_and_an_empty_range_is_refused() {
        let f = with_photo_words(
            Filter::default(),
            PhotoWords {
                after: Some("2024-01-01"),
                before: Some("2024-02-01"),
                camera: Some("canon"),
                near: Some("0,0,1"),
            },
        )
        .unwrap();
        assert_eq!(f.after_ms, Some(19_723 * DAY));
        assert_eq!(f.before_ms, Some(19_754 * DAY));
        assert_eq!(f.camera.as_deref(), Some("canon"));
        assert_eq!(f.near, Some((0.0, 0.0, 1.0)));
        let empty = PhotoWords {
            after: Some("2024-02-01"),
            before: Some("2024-02-01"),
            ..Default::default()
        };
        assert!(matches!(
            with_photo_words(Filter::default(), empty),
            Err(PhotoFilterError::EmptyRange { .. })
        ));
    }

    #[test]
    fn a_rows_metadata_comes_from_the_exif_tags() {
        let tags = ExifTags {
            date_time_original: Some("2024:05:01 14:03:00".into()),
            offset_time_original: Some("+02:00".into()),
            date_time: Some("2025:01:01 00:00:00".into()),
            make: Some("Canon".into()),
            model: Some("Canon EOS R5".into()),
            gps: Some([1.0, 2.0]),
            ..Default::default()
        };
        let m = photo_meta(&tags, 640, 480);
        assert_eq!(m.taken_at.as_deref(), Some("2024-05-01T14:03:00+02:00"));
        assert_eq!(
            m.taken_at_ms,
            parse_instant("after", "2024-05-01T12:03:00Z").ok()
        );
        assert_eq!(m.camera.as_deref(), Some("Canon EOS R5"));
        assert_eq!(
            (m.gps, m.width, m.height),
            (Some([1.0, 2.0]), Some(640), Some(480))
        );
        // No original time: the file's time; a bad offset is left out rather than losing the time.
        let fallback = ExifTags {
            date_time: Some("2025:01:01 00:00:00".into()),
            offset_time: Some("+99:99".into()),
            make: Some("NIKON CORPORATION".into()),
            model: Some("NIKON D850".into()),
            ..Default::default()
        };
        let m = photo_meta(&fallback, 1, 1);
        assert_eq!(m.taken_at.as_deref(), Some("2025-01-01T00:00:00"));
        assert_eq!(m.camera.as_deref(), Some("NIKON CORPORATION NIKON D850"));
        // Blank clocks read as no time.
        for blank in ["    :  :     :  :  ", "0000:00:00 00:00:00", "2024:05:01"] {
            let t = ExifTags {
                date_time_original: Some(blank.into()),
                model: Some("X100V".into()),
                ..Default::default()
            };
            let m = photo_meta(&t, 1, 1);
            assert_eq!(m.taken_at, None, "{blank:?}");
            assert_eq!(m.camera.as_deref(), Some("X100V"));
        }
    }
}
