//! The SAM stage against `segment_anything.SamPredictor` on a tiny random SAM exported in the official ONNX
//! signature (tests/fixtures/make_sam.py writes the model and what Python made of each box).

use crate::common;

use std::path::PathBuf;

use image::RgbImage;
use regionseek::masks::Rle;
use regionseek::sam::transform::{box_to_model_frame, resize_longest_side, upsample_logits};
use regionseek::sam::{BoxError, SamError, SamFiles, SamModel, SamOptions};
use serde_json::Value;
use sha2::{Digest, Sha256};

fn sam_dir() -> PathBuf {
    common::root().join("tests/fixtures/sam")
}

fn expected() -> Value {
    serde_json::from_str(&std::fs::read_to_string(sam_dir().join("expected.json")).unwrap())
        .unwrap()
}

/// Must match `synthetic` in tests/fixtures/make_sam.py.
fn synthetic_image(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        let (x, y) = (x as u64, y as u64);
        image::Rgb([
            ((x * 3 + y * 5) % 256) as u8,
            (((x / 40) * 37 + (y / 60) * 91) % 256) as u8,
            (((x ^ y) * 7) % 256) as u8,
        ])
    })
}

fn case_image(name: &str) -> RgbImage {
    if let Some(size) = name.strip_prefix("synthetic:") {
        let (w, h) = size.split_once('x').unwrap();
        synthetic_image(w.parse().unwrap(), h.parse().unwrap())
    } else {
        regionseek::decode::load_rgb(&sam_dir().join(name)).unwrap()
    }
}

/// The model, or None (with a message) where ONNX Runtime is not installed: CI installs it (./setup.sh).
fn model() -> Option<SamModel> {
    if let Err(e) = regionseek::sam::library_path() {
        eprintln!("SKIP: {e}");
        return None;
    }
    Some(SamModel::load_dir(&sam_dir(), Default::default(), 2).expect("tiny SAM loads"))
}

fn boxes(case: &Value) -> Vec<[f32; 4]> {
    case["boxes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            let v: Vec<f32> = b["box"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect();
            [v[0], v[1], v[2], v[3]]
        })
        .collect()
}

#[test]
fn resize_to_the_longest_side_matches_python_bit_for_bit() {
    for case in expected()["cases"].as_array().unwrap() {
        let name = case["image"].as_str().unwrap();
        let resized = resize_longest_side(&case_image(name), 1024);
        assert_eq!(
            (resized.height() as u64, resized.width() as u64),
            (
                case["resized_height"].as_u64().unwrap(),
                case["resized_width"].as_u64().unwrap()
            ),
            "{name}"
        );
        let digest = format!("{:x}", Sha256::digest(resized.as_raw()));
        assert_eq!(
            digest,
            case["resized_sha256"].as_str().unwrap(),
            "{name}: resized pixels differ from ResizeLongestSide.apply_image"
        );
    }
}

#[test]
fn boxes_map_into_the_encoder_frame_like_apply_boxes() {
    for case in expected()["cases"].as_array().unwrap() {
        let original = (
            case["height"].as_u64().unwrap() as usize,
            case["width"].as_u64().unwrap() as usize,
        );
        let resized = (
            case["resized_height"].as_u64().unwrap() as usize,
            case["resized_width"].as_u64().unwrap() as usize,
        );
        for b in case["boxes"].as_array().unwrap() {
            let clipped: Vec<f32> = b["clipped"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            let ours = box_to_model_frame(
                [clipped[0], clipped[1], clipped[2], clipped[3]],
                original,
                resized,
            );
            for (o, want) in ours.iter().zip(b["sam_frame"].as_array().unwrap()) {
                assert_eq!(*o, want.as_f64().unwrap() as f32, "{:?}", b["box"]);
            }
        }
    }
}

#[test]
fn image_embeddings_match_the_torch_encoder() {
    let Some(mut sam) = model() else { return };
    for case in expected()["cases"].as_array().unwrap() {
        let name = case["image"].as_str().unwrap();
        let emb = sam.embed(&case_image(name)).unwrap();
        assert_eq!(emb.shape, vec![1, 32, 64, 64]);
        let (c, hw) = (32usize, 64 * 64);
        for (ch, want) in case["embedding_channel_means"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
        {
            let mean = emb.data[ch * hw..(ch + 1) * hw]
                .iter()
                .map(|&v| v as f64)
                .sum::<f64>()
                / hw as f64;
            let want = want.as_f64().unwrap();
            assert!(
                (mean - want).abs() < 1e-4 * (1.0 + want.abs()),
                "{name} channel {ch}: {mean} vs {want}"
            );
        }
        let coords = [
            (0usize, 0usize, 0usize),
            (5, 10, 20),
            (31, 63, 63),
            (17, 40, 3),
        ];
        for ((ch, y, x), want) in coords
            .iter()
            .zip(case["embedding_samples"].as_array().unwrap())
        {
            let v = emb.data[(ch * 64 + y) * 64 + x] as f64;
            let want = want.as_f64().unwrap();
            assert!(
                (v - want).abs() < 1e-4 * (1.0 + want.abs()),
                "{name} [{ch},{y},{x}]: {v} vs {want}"
            );
        }
        assert!(c * hw == emb.data.len());
    }
}

/// ONNX Runtime and torch round differently in the last bits, so a pixel whose upsampled logit lies within
/// float noise of the threshold may come out either way; every other pixel must be equal.
const BOUNDARY_NOISE: f32 = 1e-4;

#[test]
fn masks_equal_the_python_predictor_pixel_for_pixel() {
    let Some(mut sam) = model() else { return };
    let mut checked = 0;
    let mut boundary_flips = 0;
    for case in expected()["cases"].as_array().unwrap() {
        let name = case["image"].as_str().unwrap();
        let image = case_image(name);
        let (h, w) = (image.height(), image.width());
        let embedding = sam.embed(&image).unwrap();
        for multimask in [false, true] {
            let options = SamOptions { multimask };
            let results = sam.segment(&image, &boxes(case), options).unwrap();
            for ((b, got), bbox) in case["boxes"]
                .as_array()
                .unwrap()
                .iter()
                .zip(results)
                .zip(boxes(case))
            {
                let got = got.unwrap();
                let want = &b[if multimask { "multimask" } else { "single" }];
                let want_mask = Rle::from_compressed(want["rle"].as_str().unwrap(), h, w)
                    .unwrap()
                    .decode();
                let differing: Vec<usize> = (0..got.mask.data.len())
                    .filter(|&i| got.mask.data[i] != want_mask.data[i])
                    .collect();
                let iou = got.mask.iou(&want_mask).unwrap();
                eprintln!(
                    "{name} {:?} multimask={multimask}: IoU {iou}, {} pixels differ, iou_prediction {} vs {}",
                    b["box"], differing.len(), got.iou_prediction, want["iou_prediction"]
                );
                if !differing.is_empty() {
                    let logits = sam.predict_box_logits(&embedding, bbox, options).unwrap();
                    let full = upsample_logits(
                        &logits.low_res,
                        logits.low_res_size,
                        1024,
                        embedding.resized,
                        embedding.original,
                    );
                    for &i in &differing {
                        assert!(
                            full[i].abs() < BOUNDARY_NOISE,
                            "{name} {:?}: pixel {i} differs with logit {}",
                            b["box"],
                            full[i]
                        );
                    }
                    assert!(
                        differing.len() * 100_000 <= got.mask.data.len(),
                        "{name}: {} boundary pixels",
                        differing.len()
                    );
                    boundary_flips += differing.len();
                }
                assert_eq!(
                    got.mask_index as u64,
                    want["low_res_index"].as_u64().unwrap()
                );
                let want_iou = want["iou_prediction"].as_f64().unwrap() as f32;
                assert!(
                    (got.iou_prediction - want_iou).abs() < 1e-4,
                    "{} vs {want_iou}",
                    got.iou_prediction
                );
                checked += 1;
            }
        }
    }
    eprintln!("{checked} masks, {boundary_flips} pixels flipped at |logit| < {BOUNDARY_NOISE}");
    assert_eq!(checked, 18);
}

#[test]
fn bad_boxes_fail_one_by_one_and_the_rest_are_segmented() {
    let Some(mut sam) = model() else { return };
    let image = case_image("landscape.png");
    let results = sam
        .segment(
            &image,
            &[
                [f32::NAN, 0.0, 10.0, 10.0],
                [50.0, 50.0, 20.0, 80.0],
                [400.0, 10.0, 500.0, 50.0],
                [10.0, 40.0, 150.0, 230.0],
            ],
            SamOptions::default(),
        )
        .unwrap();
    assert!(matches!(
        results[0],
        Err(SamError::Box(BoxError::NotFinite(_)))
    ));
    assert!(matches!(results[1], Err(SamError::Box(BoxError::Empty(_)))));
    assert!(matches!(
        results[2],
        Err(SamError::Box(BoxError::OffImage { .. }))
    ));
    let ok = results[3].as_ref().unwrap();
    assert_eq!((ok.mask.width, ok.mask.height), (320, 240));
}

#[test]
fn a_decoder_with_the_wrong_signature_is_refused_naming_the_missing_input() {
    if regionseek::sam::library_path().is_err() {
        eprintln!("SKIP: ONNX Runtime not installed");
        return;
    }
    let files = SamFiles {
        encoder: sam_dir().join("encoder.onnx"),
        decoder: sam_dir().join("encoder.onnx"),
    };
    let err = SamModel::load(files, Default::default(), 1)
        .err()
        .expect("must be refused");
    let text = err.to_string();
    assert!(matches!(err, SamError::Signature { .. }), "{text}");
    assert!(text.contains("missing input `image_embeddings`"), "{text}");
    assert!(text.contains("encoder.onnx"), "{text}");
}
