//! Photos decode to the very bytes Pillow 13 gives (`Image.open(p).convert("RGB")`), the reference's view of
//! them: tests/fixtures/make_decode.py writes the expected hashes (and the small photos in every layout).

use std::path::{Path, PathBuf};

use regionseek::decode::{decode_rgb, load_rgb_with, DecodeOptions};
use serde_json::Value;
use sha2::{Digest, Sha256};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn sha(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

fn check_against(expected: &serde_json::Map<String, Value>, dir: &Path) -> (usize, Vec<String>) {
    let mut checked = 0;
    let mut wrong = Vec::new();
    for (name, want) in expected {
        let path = dir.join(name);
        let stored = load_rgb_with(&path, &DecodeOptions::default());
        if let Some(reason) = want.get("error").and_then(Value::as_str) {
            match stored {
                Ok(_) => wrong.push(format!(
                    "{name}: decoded, but Pillow-side expectation is a refusal ({reason})"
                )),
                Err(e) => {
                    let msg = e.to_string();
                    if !msg.contains(reason) || !msg.contains(name.as_str()) {
                        wrong.push(format!(
                            "{name}: error {msg:?} should name the file and say {reason:?}"
                        ));
                    }
                }
            }
            checked += 1;
            continue;
        }
        let size: Vec<u64> = want["size"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        match stored {
            Err(e) => wrong.push(format!("{name} ({}): {e}", want["mode"])),
            Ok(img) => {
                if [img.width() as u64, img.height() as u64] != size[..] {
                    wrong.push(format!(
                        "{name}: size {:?}, Pillow {size:?}",
                        img.dimensions()
                    ));
                } else if sha(img.as_raw()) != want["sha256"].as_str().unwrap() {
                    wrong.push(format!(
                        "{name} ({}): pixels differ from Pillow's",
                        want["mode"]
                    ));
                }
            }
        }
        let upright_want = want.get("exif_rotated").unwrap_or(want);
        let upright = load_rgb_with(
            &path,
            &DecodeOptions {
                exif_rotate: true,
                ..Default::default()
            },
        );
        match upright {
            Err(e) => wrong.push(format!("{name} upright: {e}")),
            Ok(img) => {
                if sha(img.as_raw()) != upright_want["sha256"].as_str().unwrap() {
                    wrong.push(format!(
                        "{name}: with --exif-rotate, pixels differ from ImageOps.exif_transpose's"
                    ));
                }
            }
        }
        checked += 1;
    }
    (checked, wrong)
}

#[test]
fn every_fixture_layout_decodes_to_pillows_bytes_or_is_refused_by_name() {
    let dir = root().join("tests/fixtures/decode");
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let files = expected["files"].as_object().unwrap();
    let (checked, wrong) = check_against(files, &dir);
    assert!(
        wrong.is_empty(),
        "{} of {checked} differ:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    assert_eq!(checked, 123, "every photo expected.json lists");
}

#[test]
fn every_shared_photo_decodes_to_pillows_bytes() {
    let data = std::env::var_os("REGIONSEEK_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("../shared/data"));
    if !data.join("coco128/images").is_dir() {
        eprintln!(
            "SKIPPED: no shared data at {} (the COCO128 photos)",
            data.display()
        );
        return;
    }
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/fixtures/decode_shared.json")).unwrap(),
    )
    .unwrap();
    let files = expected.as_object().unwrap();
    let (checked, wrong) = check_against(files, &data);
    assert!(
        wrong.is_empty(),
        "{} of {checked} differ:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    assert_eq!(
        checked, 134,
        "128 COCO128 photos and the 6 reference examples"
    );
}

/// A header that declares more pixels than the limit is refused before any pixel buffer exists, whatever the
/// format (JPEG and PNG are covered with the real binary in tests/reliability.rs).
#[test]
fn forged_sizes_in_gif_and_bmp_headers_are_refused_from_the_header() {
    let dir = root().join("tests/fixtures/decode");
    let mut gif = std::fs::read(dir.join("gif_still.gif")).unwrap();
    gif[6..10].copy_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF]);
    let mut bmp = std::fs::read(dir.join("bmp_rgb.bmp")).unwrap();
    bmp[18..22].copy_from_slice(&60_000i32.to_le_bytes());
    bmp[22..26].copy_from_slice(&60_000i32.to_le_bytes());
    for (name, bytes) in [("forged.gif", gif), ("forged.bmp", bmp)] {
        let e = decode_rgb(&bytes, Path::new(name), &DecodeOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(name) && e.contains("over the limit"),
            "{name}: {e}"
        );
    }
    // A lower limit refuses an ordinary photo the same way.
    let small = DecodeOptions {
        max_pixels: 1000,
        ..Default::default()
    };
    for name in [
        "jpeg_420.jpg",
        "png_rgb.png",
        "webp_lossy.webp",
        "tiff_lzw.tif",
    ] {
        let e = load_rgb_with(&dir.join(name), &small)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("67x45 = 3015 pixels is over the limit of 1000"),
            "{name}: {e}"
        );
    }
}

/// Damaged photos never stop a run: every fixture, cut short at several points and with bytes overwritten (a
/// fixed-seed generator, so a failure replays), is either decoded or refused with a message naming the file,
/// and a photo that decodes has as many pixels as its size says. The fuzz target `decode` (fuzz/) explores the
/// same function without a bound.
#[test]
fn damaged_variants_of_every_fixture_are_decoded_or_refused_never_a_crash() {
    let dir = root().join("tests/fixtures/decode");
    let options = DecodeOptions {
        max_pixels: 1 << 22,
        exif_rotate: true,
    };
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e != "json"))
        .collect();
    files.sort();
    let (mut decoded, mut refused) = (0usize, 0usize);
    for path in &files {
        let bytes = std::fs::read(path).unwrap();
        if bytes.is_empty() {
            continue;
        }
        let mut variants: Vec<Vec<u8>> = [
            bytes.len() / 4,
            bytes.len() / 2,
            bytes.len() * 9 / 10,
            bytes.len() - 1,
        ]
        .iter()
        .map(|&cut| bytes[..cut].to_vec())
        .collect();
        for _ in 0..24 {
            let mut v = bytes.clone();
            // Most damage lands in the first bytes, where the headers that steer a decoder are.
            for _ in 0..1 + next() % 4 {
                let span = if next() % 2 == 0 {
                    v.len().min(64)
                } else {
                    v.len()
                };
                let at = (next() % span as u64) as usize;
                v[at] = next() as u8;
            }
            variants.push(v);
        }
        for v in &variants {
            let name = path.with_extension(format!(
                "{}.damaged",
                path.extension().unwrap().to_string_lossy()
            ));
            match decode_rgb(v, &name, &options) {
                Ok(img) => {
                    assert_eq!(
                        img.as_raw().len(),
                        img.width() as usize * img.height() as usize * 3,
                        "{}",
                        path.display()
                    );
                    decoded += 1;
                }
                Err(e) => {
                    assert!(e.to_string().contains(".damaged"), "{e}");
                    refused += 1;
                }
            }
        }
    }
    eprintln!(
        "{} fixtures: {decoded} damaged variants decoded, {refused} refused",
        files.len()
    );
    assert!(
        decoded > 0 && refused > 0,
        "{decoded} decoded, {refused} refused"
    );
}
