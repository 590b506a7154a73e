//! SAM's automatic masks against segment_anything's `SamAutomaticMaskGenerator` on the same tiny model
//! (tests/fixtures/make_auto_sam.py), through a decoder exported with a batch axis and through the official
//! batch-1 export: same masks in the same order, RLE byte-identical, scores within 1e-4.

use crate::common;

use std::path::PathBuf;

use regionseek::sam::{AutoMaskParams, SamModel};
use serde_json::Value;
use sha2::{Digest, Sha256};

fn sam_dir() -> PathBuf {
    common::root().join("tests/fixtures/sam")
}

fn expected() -> Value {
    serde_json::from_str(&std::fs::read_to_string(sam_dir().join("auto_expected.json")).unwrap())
        .unwrap()
}

fn model(sub: &str) -> Option<SamModel> {
    if let Err(e) = regionseek::sam::library_path() {
        eprintln!("SKIP: {e}");
        return None;
    }
    Some(SamModel::load_dir(&sam_dir().join(sub), Default::default(), 2).expect("tiny SAM loads"))
}

fn check(sub: &str, batched: bool) {
    let Some(mut sam) = model(sub) else { return };
    assert_eq!(sam.decoder_batches, batched, "{sub}");
    for case in expected()["cases"].as_array().unwrap() {
        let params: AutoMaskParams = serde_json::from_value(case["params"].clone()).unwrap();
        let image =
            regionseek::decode::load_rgb(&sam_dir().join(case["image"].as_str().unwrap())).unwrap();
        let (found, timings) = regionseek::sam::auto::generate(&mut sam, &image, &params).unwrap();
        let want = case["masks"].as_array().unwrap();
        let label = format!("{sub} {} {}", case["image"], case["params"]);
        assert_eq!(found.len(), want.len(), "{label}: mask count");
        assert!(timings.prompts > 0);
        for (i, (got, w)) in found.iter().zip(want).enumerate() {
            let coco = got.rle.to_coco();
            let sha = format!("{:x}", Sha256::digest(coco.counts.as_bytes()));
            assert_eq!(
                sha,
                w["counts_sha256"].as_str().unwrap(),
                "{label} mask {i}: RLE"
            );
            assert_eq!(got.area, w["area"].as_u64().unwrap(), "{label} mask {i}");
            let bbox: Vec<u64> = got.bbox_xywh.iter().map(|&v| v as u64).collect();
            let want_box: Vec<u64> = w["bbox"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap())
                .collect();
            assert_eq!(bbox, want_box, "{label} mask {i}: bbox");
            let crop: Vec<u64> = got.crop_box_xywh.iter().map(|&v| v as u64).collect();
            let want_crop: Vec<u64> = w["crop_box"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap())
                .collect();
            assert_eq!(crop, want_crop, "{label} mask {i}: crop box");
            let close = |a: f64, b: &Value, tol: f64| (a - b.as_f64().unwrap()).abs() <= tol;
            assert!(
                close(got.predicted_iou as f64, &w["predicted_iou"], 1e-4),
                "{label} mask {i}: iou {} vs {}",
                got.predicted_iou,
                w["predicted_iou"]
            );
            assert!(
                close(got.stability_score as f64, &w["stability_score"], 1e-4),
                "{label} mask {i}: stability {} vs {}",
                got.stability_score,
                w["stability_score"]
            );
            assert!(close(got.point[0], &w["point_coords"][0], 1e-9));
            assert!(close(got.point[1], &w["point_coords"][1], 1e-9));
        }
    }
}

#[test]
fn automatic_masks_equal_the_reference_through_a_batched_decoder() {
    check("auto", true);
}

#[test]
fn automatic_masks_equal_the_reference_through_the_official_batch_1_decoder() {
    check("auto-b1", false);
}
