//! A plain photo folder, no annotation file: `index --pipeline auto-sam` finds the regions with SAM's automatic
//! masks (the tiny fixture SAM) and `auto-grid` without a model; both resume without redoing photos; `sam
//! --auto` writes the same masks as files.

use crate::common;

use std::path::{Path, PathBuf};

use serde_json::Value;

fn run(args: &[&str]) -> (i32, String, String) {
    common::run_regionseek(args)
}

fn json(stdout: &str) -> Value {
    common::last_json(stdout)
}

fn sam_fixture() -> Option<PathBuf> {
    if let Err(e) = regionseek::sam::library_path() {
        eprintln!("SKIP: {e}");
        return None;
    }
    Some(common::root().join("tests/fixtures/sam"))
}

/// The fixture photos in a folder tree (one in a subfolder: the listing is recursive) plus a non-photo.
fn photo_folder(root: &Path) -> PathBuf {
    let photos = root.join("photos");
    std::fs::create_dir_all(photos.join("trip")).unwrap();
    let sam = common::root().join("tests/fixtures/sam");
    std::fs::copy(sam.join("landscape.png"), photos.join("trip/landscape.png")).unwrap();
    std::fs::copy(sam.join("portrait.png"), photos.join("portrait.png")).unwrap();
    std::fs::write(photos.join("notes.txt"), "not a photo").unwrap();
    photos
}

fn spec(root: &Path, stage: &str, table: &str) -> PathBuf {
    let p = root.join(format!("{stage}.toml"));
    std::fs::write(
        &p,
        format!(
            "name = \"{stage}-test\"\nstages = [\"decode\", \"{stage}\", \"embed\", \"index\"]\n{table}\n\
             [embed]\nmethod = \"crop\"\n[index]\nbatch_images = 1\n"
        ),
    )
    .unwrap();
    p
}

fn rows(index: &Path) -> Vec<Value> {
    let (code, out, err) = run(&[
        "search",
        index.to_str().unwrap(),
        "a photo",
        "--k",
        "1000",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    json(&out)["hits"].as_array().unwrap().clone()
}

/// `regionseek sam PHOTO --auto` with the loosened thresholds the tests index with (4 points per side, predicted
/// IoU 0.3, stability 0.2): the number of masks and their records (`<stem>_auto.json` in `out`).
fn loose_auto_masks(photo: &Path, sam: &Path, out: &Path) -> (u64, Vec<Value>) {
    let (code, stdout, err) = run(&[
        "sam",
        photo.to_str().unwrap(),
        "--auto",
        "--points-per-side",
        "4",
        "--pred-iou-thresh",
        "0.3",
        "--stability-score-thresh",
        "0.2",
        "--sam",
        sam.join("auto").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let n = json(&stdout)["masks"].as_u64().unwrap();
    let stem = photo.file_stem().unwrap().to_str().unwrap();
    let records = serde_json::from_str(
        &std::fs::read_to_string(out.join(format!("{stem}_auto.json"))).unwrap(),
    )
    .unwrap();
    (n, records)
}

#[test]
fn a_plain_folder_is_indexed_by_automatic_sam_masks_and_resumes() {
    let Some(sam) = sam_fixture() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let photos = photo_folder(tmp.path());
    // The sharpened tiny SAM (make_auto_sam.py) with loosened thresholds: a random model's masks never pass
    // the reference's 0.88 / 0.95.
    let spec = spec(
        tmp.path(),
        "auto-sam",
        "[auto_sam]\npoints_per_side = 4\npred_iou_thresh = 0.3\nstability_score_thresh = 0.2\n",
    );
    let index = tmp.path().join("idx");
    let sam_auto = sam.join("auto");
    let args = [
        "index",
        photos.to_str().unwrap(),
        "--pipeline",
        spec.to_str().unwrap(),
        "--sam",
        sam_auto.to_str().unwrap(),
        "--model",
        "random:vit-b-32",
        "--out",
        index.to_str().unwrap(),
        "--json",
    ];
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "{err}");
    let r = json(&out);
    assert_eq!(r["images"], 2, "two photos, the text file ignored: {r}");
    assert_eq!(r["images_processed"], 2, "{r}");
    let added = r["regions_added"].as_u64().unwrap();
    assert!(added >= 2, "{r}");
    let hits = rows(&index);
    assert_eq!(hits.len() as u64, added);
    assert!(hits.iter().all(|h| h["source"] == "auto-sam"));
    assert!(hits
        .iter()
        .all(|h| h["region_id"].as_str().unwrap().starts_with("auto-")));
    assert!(hits.iter().any(|h| h["image"] == "trip/landscape.png"));

    // A rerun decodes nothing and adds nothing.
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "{err}");
    let r = json(&out);
    assert_eq!(
        (r["regions_added"].as_u64(), r["images_skipped"].as_u64()),
        (Some(0), Some(2))
    );

    // `sam --auto` gives the same masks for the same parameters.
    let masks_dir = tmp.path().join("masks");
    let (n, records) = loose_auto_masks(&photos.join("trip/landscape.png"), &sam, &masks_dir);
    let indexed = hits.iter().filter(|h| h["image"] == "trip/landscape.png");
    assert_eq!(indexed.clone().count() as u64, n);
    assert_eq!(records.len() as u64, n);
    for h in indexed {
        let i: usize = h["region_id"].as_str().unwrap()[5..].parse().unwrap();
        assert_eq!(h["mask_rle"], records[i]["segmentation"], "region {i}");
        assert!(masks_dir
            .join(format!("landscape_auto-{i:04}.png"))
            .is_file());
    }
}

#[test]
fn auto_grid_needs_no_model_and_a_boxless_pipeline_says_what_to_use() {
    let Some(_) = sam_fixture() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let photos = photo_folder(tmp.path());
    let spec = spec(
        tmp.path(),
        "auto-grid",
        "[auto_grid]\nscales = [1.0, 0.5]\noverlap = 0.5\n",
    );
    let index = tmp.path().join("grid");
    let (code, out, err) = run(&[
        "index",
        photos.to_str().unwrap(),
        "--pipeline",
        spec.to_str().unwrap(),
        "--model",
        "random:vit-b-32",
        "--out",
        index.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let r = json(&out);
    // landscape 320x240: side 240 (x at 0, 80) + side 120 (x 0, 60, 120, 180, 200; y 0, 60, 120) = 2 + 5·3;
    // portrait 190x250: side 190 (y 0, 60) + side 95 (x 0, 48, 95; y 0, 48, 96, 144, 155) = 2 + 3·5.
    assert_eq!(r["regions_added"], 17 + 17, "{r}");
    for h in rows(&index) {
        assert_eq!(h["source"], "auto-grid");
        let b: Vec<f64> = h["box"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let (w, hgt) = if h["image"] == "portrait.png" {
            (190.0, 250.0)
        } else {
            (320.0, 240.0)
        };
        assert!(
            b[0] >= 0.0 && b[1] >= 0.0 && b[2] <= w && b[3] <= hgt,
            "{b:?}"
        );
    }

    // A pipeline that needs annotations, given none, says what to do.
    let (code, _, err) = run(&[
        "index",
        photos.to_str().unwrap(),
        "--pipeline",
        "gt-masks",
        "--out",
        tmp.path().join("x").to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("--pipeline auto-sam"), "{err}");
}

#[test]
fn the_library_with_sam_takes_its_regions_from_the_automatic_masks() {
    let Some(sam) = sam_fixture() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let photos = photo_folder(tmp.path());
    let spec = tmp.path().join("library-sam.toml");
    std::fs::write(
        &spec,
        std::fs::read_to_string(common::root().join("pipelines/library.toml"))
            .unwrap()
            .replace("size = 448", "size = 64")
            .replace("steps = 10", "steps = 2")
            + "\n[auto_sam]\npoints_per_side = 4\npred_iou_thresh = 0.3\nstability_score_thresh = 0.2\n",
    )
    .unwrap();
    let index = tmp.path().join("idx");
    let sam_auto = sam.join("auto");
    let (code, out, err) = run(&[
        "index",
        photos.to_str().unwrap(),
        "--pipeline",
        spec.to_str().unwrap(),
        "--sam",
        sam_auto.to_str().unwrap(),
        "--model",
        "random:tiny",
        "--out",
        index.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let r = json(&out);
    assert_eq!(r["tiers"]["regions_from"], "auto-sam", "{r}");
    assert_eq!(r["tiers"]["searchable_photos"], 2, "{r}");
    assert_eq!(r["tiers"]["regions_to_refine"], 0, "{r}");
    let hits = rows(&index);
    let regions: Vec<&Value> = hits.iter().filter(|h| h["source"] == "auto-sam").collect();
    assert_eq!(
        regions.len() as u64,
        r["tiers"]["quick_regions"].as_u64().unwrap()
    );
    assert!(!regions.is_empty());
    assert!(regions.iter().all(|h| h["method"] == "maskinversion"));

    // The same masks as `sam --auto` with the same parameters, under the generator's ids.
    let masks_dir = tmp.path().join("masks");
    let (_, records) = loose_auto_masks(&photos.join("trip/landscape.png"), &sam, &masks_dir);
    for h in regions
        .iter()
        .filter(|h| h["image"] == "trip/landscape.png")
    {
        let i: usize = h["region_id"].as_str().unwrap()[5..].parse().unwrap();
        assert_eq!(h["mask_rle"], records[i]["segmentation"], "region {i}");
    }
}
