//! Malformed COCO files: every bad entry is reported with its id while the rest is read; broken JSON is one
//! clear file-level error. Nothing panics.

use regionseek_masks::{CocoDataset, CocoError, Segmentation};

fn parse(json: &str) -> Result<CocoDataset, CocoError> {
    CocoDataset::from_reader(json.as_bytes(), "test.json")
}

const GOOD_POLY: &str = "[[1,1, 1,4, 4,4, 4,1]]";

#[test]
fn each_malformed_annotation_is_reported_and_the_rest_is_kept() {
    // Annotations come before images here: nothing may depend on the file's key order.
    let json = format!(
        r#"{{
        "annotations": [
          {{"id": 1, "image_id": 7, "category_id": 3, "bbox": [1,1,3,3], "iscrowd": 0, "segmentation": {GOOD_POLY}}},
          {{"id": 2, "image_id": 7, "category_id": 3, "bbox": [1,1,3,3], "segmentation": [[1,1, 1,4, 4,4, 4]]}},
          {{"id": 3, "image_id": 7, "category_id": 3, "bbox": [1,1,3,3], "iscrowd": 1,
            "segmentation": {{"size": [8, 10], "counts": [5, 10, 60]}}}},
          {{"id": 4, "image_id": 7, "category_id": 3, "bbox": [5,5,30,3], "segmentation": {GOOD_POLY}}},
          {{"id": 5, "image_id": 99, "category_id": 3, "bbox": [1,1,3,3], "segmentation": {GOOD_POLY}}},
          {{"id": 6, "image_id": 7, "category_id": 3, "bbox": [1,1,3], "segmentation": {GOOD_POLY}}},
          {{"id": 1, "image_id": 7, "category_id": 3, "bbox": [1,1,3,3], "segmentation": {GOOD_POLY}}},
          {{"id": 8, "image_id": 7, "category_id": 42, "bbox": [1,1,3,3], "segmentation": {GOOD_POLY}}},
          {{"id": 9, "image_id": 7, "category_id": 3, "bbox": [1,1,3,3],
            "segmentation": {{"size": [8, 10], "counts": "5:e2"}}}},
          {{"image_id": 7, "category_id": 3, "bbox": [1,1,3,3], "segmentation": {GOOD_POLY}}},
          "not an object",
          {{"id": 12, "image_id": 7, "category_id": 3, "bbox": [0,0,2,2], "iscrowd": 1,
            "segmentation": {{"size": [8, 10], "counts": [5, 10, 65]}}}},
          {{"id": 13, "image_id": 7, "category_id": 3, "bbox": [1,1,3,3], "segmentation": [[1,1, 1e300,4, 4,4]]}},
          {{"id": 14, "image_id": 7, "category_id": 3, "bbox": [1,1,3,3], "segmentation": [[1,1, "x",4, 4,4]]}}
        ],
        "images": [
          {{"id": 7, "file_name": "a.jpg", "width": 10, "height": 8}},
          {{"id": 8, "file_name": "b.jpg", "width": -3, "height": 8}},
          {{"id": 7, "file_name": "c.jpg", "width": 10, "height": 8}}
        ],
        "categories": [{{"id": 3, "name": "cat"}}, {{"id": 3, "name": "again"}}],
        "info": {{"anything": [1, 2, {{"nested": true}}]}}
    }}"#
    );
    let coco = parse(&json).unwrap();
    let kept: Vec<i64> = coco.annotations.iter().map(|a| a.id).collect();
    assert_eq!(kept, vec![1, 12]);
    assert!(matches!(
        coco.annotations[1].segmentation,
        Some(Segmentation::Counts { .. })
    ));
    assert_eq!(coco.images.len(), 1);
    assert_eq!(coco.categories.len(), 1);
    let find = |kind: &str, id: Option<i64>| {
        coco.errors
            .iter()
            .find(|e| e.kind == kind && e.id == id)
            .unwrap_or_else(|| panic!("no error for {kind} {id:?} in {:#?}", coco.errors))
            .message
            .clone()
    };
    assert!(find("annotation", Some(2)).contains("odd number of coordinates"));
    assert!(find("annotation", Some(3)).contains("sum to 75"));
    assert!(find("annotation", Some(4)).contains("outside the 10x8 image"));
    assert!(find("annotation", Some(5)).contains("unknown image id 99"));
    assert!(find("annotation", Some(6)).contains("4 numbers"));
    assert!(find("annotation", Some(1)).contains("duplicate annotation id"));
    assert!(find("annotation", Some(8)).contains("unknown category id 42"));
    assert!(
        find("annotation", Some(9)).contains("RLE size 8x10")
            || find("annotation", Some(9)).contains("sum")
    );
    assert!(find("annotation", None).contains("missing \"id\""));
    assert!(find("annotation", Some(13)).contains("far outside"));
    assert!(find("annotation", Some(14)).contains("not a finite number"));
    assert!(find("image", Some(8)).contains("positive integer"));
    assert!(find("image", Some(7)).contains("duplicate image id"));
    assert!(find("category", Some(3)).contains("duplicate category id"));
    // "not an object" is the 11th annotation entry (index 10): reported by position.
    assert!(coco
        .errors
        .iter()
        .any(|e| e.kind == "annotation" && e.index == 10));
    let text = coco
        .errors
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        text.contains("annotation 2 (entry 1): invalid polygon: odd number of coordinates (7)"),
        "{text}"
    );
}

#[test]
fn broken_files_are_one_clear_error() {
    for (json, want) in [
        ("", "EOF"),
        ("[1, 2]", "JSON object"),
        (r#"{"images": [], "annotations": [{"id": 1"#, "EOF"),
        (r#"{"images": []}"#, "\"annotations\""),
        (r#"{"images": [], "annotations": {}}"#, "a list"),
        (r#"{"images": [], "annotations": []} trailing"#, "trailing"),
    ] {
        let err = parse(json).unwrap_err().to_string();
        assert!(
            err.starts_with("test.json is not a COCO instances file"),
            "{err}"
        );
        assert!(err.contains(want), "{json:?}: {err}");
    }
    let missing =
        CocoDataset::read(std::path::Path::new("/nonexistent/instances.json")).unwrap_err();
    assert!(missing.to_string().contains("/nonexistent/instances.json"));
}
