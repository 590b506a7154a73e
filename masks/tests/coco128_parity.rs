//! Every COCO128 annotation rasterised exactly as pycocotools 2.0.11 does (fixture written by
//! tests/fixtures/make_coco_rle.py): byte-identical RLE strings, equal areas and boxes, round trips.

use std::path::{Path, PathBuf};

use regionseek_masks::{BinaryMask, CocoDataset, Rle};
use serde_json::Value;

fn data_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("REGIONSEEK_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"));
    if dir.join("coco128/instances.json").exists() {
        Some(dir)
    } else {
        eprintln!(
            "SKIP: {} has no coco128/instances.json (the shared data folder is absent)",
            dir.display()
        );
        None
    }
}

fn expected() -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/coco128_rle.json");
    let v: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    v["annotations"].as_array().unwrap().clone()
}

#[test]
fn coco128_rle_is_identical_to_pycocotools() {
    let Some(data) = data_dir() else { return };
    let coco = CocoDataset::read(&data.join("coco128/instances.json")).unwrap();
    assert!(coco.errors.is_empty(), "{:?}", coco.errors);
    assert_eq!(
        (
            coco.images.len(),
            coco.annotations.len(),
            coco.categories.len()
        ),
        (128, 939, 80)
    );
    let want = expected();
    assert_eq!(want.len(), 939);
    let mut crowd = 0;
    let by_id: std::collections::HashMap<i64, _> =
        coco.annotations.iter().map(|a| (a.id, a)).collect();
    for exp in &want {
        let ann = by_id[&exp["id"].as_i64().unwrap()];
        let img = coco.image(ann.image_id).unwrap();
        let rle = ann.to_rle(img.height, img.width).unwrap();
        let id = ann.id;
        assert_eq!(
            rle.to_compressed(),
            exp["rle"].as_str().unwrap(),
            "annotation {id}"
        );
        assert_eq!(rle.area(), exp["area"].as_u64().unwrap(), "annotation {id}");
        let bbox: Vec<f64> = exp["bbox"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(rle.bbox().to_vec(), bbox, "annotation {id}");

        // Decode and re-encode: the canonical runs, and the mask's own area and box.
        let mask = rle.decode();
        assert_eq!(mask.area() as u64, rle.area());
        let again = Rle::encode(&mask);
        let canonical = exp["canonical"]
            .as_str()
            .unwrap_or(exp["rle"].as_str().unwrap());
        assert_eq!(again.to_compressed(), canonical, "annotation {id}");
        assert_eq!(
            Rle::from_compressed(canonical, img.height, img.width).unwrap(),
            again
        );

        // The annotation's box as a mask, through pycocotools' frBbox.
        let boxed = Rle::from_bbox(ann.bbox, img.height, img.width).unwrap();
        assert_eq!(
            boxed.to_compressed(),
            exp["box_rle"].as_str().unwrap(),
            "box of {id}"
        );
        assert_eq!(
            boxed.area(),
            exp["box_area"].as_u64().unwrap(),
            "box of {id}"
        );
        crowd += ann.iscrowd as usize;
    }
    assert_eq!(crowd, 10);
}

#[test]
fn png_masks_of_the_reference_examples_survive_an_rle_round_trip() {
    let Some(data) = data_dir() else { return };
    for name in [
        "cat_mask.png",
        "dog_mask.png",
        "dress_mask.png",
        "flower_mask.png",
    ] {
        let mask = BinaryMask::read(&data.join("maskinversion-examples").join(name)).unwrap();
        assert!(mask.area() > 100, "{name} read as (almost) empty");
        let rle = Rle::encode(&mask);
        let coco = rle.to_coco();
        assert_eq!(Rle::from_coco(&coco).unwrap().decode(), mask, "{name}");
        assert_eq!(rle.area(), mask.area() as u64);
    }
}
