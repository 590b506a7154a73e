//! The product end to end: the real binary indexes a slice of COCO128 with a random ViT-B/32, is killed and
//! resumed, searched, exported and evaluated; boxes go through the tiny SAM.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_regionseek"))
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = bin().args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json(stdout: &str) -> Value {
    serde_json::from_str(stdout.lines().last().expect("a JSON line")).expect("JSON output")
}

/// A small, fast variant of gt-masks (224 px, 3 steps), written as a user would.
fn quick_spec(dir: &Path, stages: &str, batch: usize) -> PathBuf {
    let p = dir.join("quick.toml");
    std::fs::write(
        &p,
        format!(
            "name = \"quick\"\nstages = [{stages}]\n[sam]\nmultimask = false\n[invert]\nsize = 224\nsteps = 3\n\
             lr = 0.5\nalpha = 0.0\n[index]\nbatch_images = {batch}\n"
        ),
    )
    .unwrap();
    p
}

const GT_STAGES: &str = "\"decode\", \"masks\", \"invert\", \"index\"";

fn coco128(data: &Path) -> (PathBuf, PathBuf) {
    (
        data.join("coco128/images"),
        data.join("coco128/instances.json"),
    )
}

/// Non-crowd annotations of the first `n` images of COCO128, in the file's image order.
fn expected_regions(coco: &Path, n: usize) -> usize {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(coco).unwrap()).unwrap();
    let ids: Vec<i64> = v["images"]
        .as_array()
        .unwrap()
        .iter()
        .take(n)
        .map(|i| i["id"].as_i64().unwrap())
        .collect();
    v["annotations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| {
            ids.contains(&a["image_id"].as_i64().unwrap()) && a["iscrowd"].as_i64() == Some(0)
        })
        .count()
}

fn manifest_rows(index: &Path) -> u64 {
    std::fs::read_to_string(index.join("manifest.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .and_then(|v| v["rows"].as_u64())
        .unwrap_or(0)
}

#[test]
fn index_resume_search_and_export_on_a_coco128_slice() {
    let Some(data) = shared_data() else { return };
    let (images, coco) = coco128(&data);
    let tmp = tempfile::tempdir().unwrap();
    let spec = quick_spec(tmp.path(), GT_STAGES, 2);
    let index = tmp.path().join("idx");
    let args = |limit: &str| {
        vec![
            "index".to_string(),
            images.display().to_string(),
            "--coco".into(),
            coco.display().to_string(),
            "--pipeline".into(),
            spec.display().to_string(),
            "--model".into(),
            "random:vit-b-32".into(),
            "--out".into(),
            index.display().to_string(),
            "--limit".into(),
            limit.into(),
            "--json".into(),
        ]
    };
    let want = expected_regions(&coco, 5);
    let a: Vec<String> = args("5");
    let (code, out, err) = run(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 0, "{err}");
    let r = json(&out);
    assert_eq!(r["regions_added"].as_u64().unwrap() as usize, want);
    assert_eq!(r["rows_total"].as_u64().unwrap() as usize, want);
    assert_eq!(r["failures"], 0);
    // The model stage's share of the run: most of it on a CPU run, never more than all of it.
    let busy = r["model_busy_fraction"].as_f64().unwrap();
    assert!(busy > 0.2 && busy <= 1.0, "model busy {busy}");
    assert!(r["gpu_utilisation"].is_null(), "no GPU to sample: {r}");
    let log: Value =
        serde_json::from_str(&std::fs::read_to_string(index.join("errors.json")).unwrap()).unwrap();
    assert_eq!(log["failures"].as_array().unwrap().len(), 0);

    // A rerun adds nothing and decodes nothing; a longer rerun adds only the new photos.
    let (_, out, _) = run(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let r = json(&out);
    assert_eq!(
        (r["regions_added"].as_u64(), r["images_skipped"].as_u64()),
        (Some(0), Some(5))
    );
    assert_eq!(r["model_busy_fraction"], 0.0, "nothing was embedded");
    let a7 = args("7");
    let (_, out, _) = run(&a7.iter().map(String::as_str).collect::<Vec<_>>());
    let r = json(&out);
    assert_eq!(
        r["rows_total"].as_u64().unwrap() as usize,
        expected_regions(&coco, 7)
    );
    assert_eq!(
        r["regions_added"].as_u64().unwrap() as usize,
        expected_regions(&coco, 7) - want
    );

    // Search: k hits, best first, each the shape referring-expression tools read.
    let idx = index.display().to_string();
    let (code, out, err) = run(&["search", &idx, "a photo of a dog", "--k", "4", "--json"]);
    assert_eq!(code, 0, "{err}");
    let hits = json(&out)["hits"].as_array().unwrap().clone();
    assert_eq!(hits.len(), 4);
    for w in hits.windows(2) {
        assert!(w[0]["score"].as_f64() >= w[1]["score"].as_f64());
    }
    for h in &hits {
        for key in ["image", "region_id", "box", "mask_rle", "score", "method"] {
            assert!(!h[key].is_null(), "{key} missing in {h}");
        }
        assert_eq!(h["method"], "maskinversion");
    }
    let one = hits[0]["image"].as_str().unwrap();
    let (_, out, _) = run(&[
        "search", &idx, "a dog", "--k", "50", "--image", one, "--json",
    ]);
    let only = json(&out)["hits"].as_array().unwrap().clone();
    assert!(!only.is_empty() && only.iter().all(|h| h["image"] == one));

    // COCO-style export: boxes as [x, y, w, h], RLE masks of the photo's size.
    let export = tmp.path().join("hits.json");
    let (code, _, err) = run(&[
        "search",
        &idx,
        "a dog",
        "--k",
        "3",
        "--export",
        "coco",
        "--export-file",
        export.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let results: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(&export).unwrap()).unwrap();
    assert_eq!(results.len(), 3);
    for r in &results {
        let rle: regionseek::masks::CocoRle =
            serde_json::from_value(r["segmentation"].clone()).unwrap();
        let mask = regionseek::masks::Rle::from_coco(&rle).unwrap();
        let bbox: Vec<f64> = r["bbox"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert!(bbox[2] > 0.0 && bbox[3] > 0.0 && bbox[0] + bbox[2] <= mask.width as f64 + 1.0);
        assert!(
            r["image_id"].as_i64().is_some(),
            "COCO file names carry the image id"
        );
    }

    // Crops: one PNG per hit, the box's size.
    let crops = tmp.path().join("crops");
    let (code, _, err) = run(&[
        "search",
        &idx,
        "a dog",
        "--k",
        "2",
        "--crop",
        crops.to_str().unwrap(),
        "--images",
        images.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read_dir(&crops).unwrap().count(), 2);
}

#[test]
fn batched_forward_passes_give_the_rows_of_one_photo_at_a_time() {
    let Some(data) = shared_data() else { return };
    let (images, coco) = coco128(&data);
    let tmp = tempfile::tempdir().unwrap();
    let tiny = tiny_dir();
    let mut rows = Vec::new();
    // 4 photos per forward, committed every 5: groups cut across commits and the last one is short.
    for forward_batch in [1, 4] {
        let spec = tmp.path().join(format!("fb{forward_batch}.toml"));
        std::fs::write(
            &spec,
            format!(
                "name = \"fb\"\nstages = [{GT_STAGES}]\n[invert]\nsize = 64\nsteps = 3\n\
                 forward_batch = {forward_batch}\n[index]\nbatch_images = 5\n"
            ),
        )
        .unwrap();
        let out = tmp.path().join(format!("idx{forward_batch}"));
        let (code, stdout, err) = run(&[
            "index",
            images.to_str().unwrap(),
            "--coco",
            coco.to_str().unwrap(),
            "--pipeline",
            spec.to_str().unwrap(),
            "--model",
            tiny.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--limit",
            "11",
            "--json",
        ]);
        assert_eq!(code, 0, "{err}");
        let report = json(&stdout);
        assert_eq!(
            report["rows_total"].as_u64(),
            Some(expected_regions(&coco, 11) as u64)
        );
        assert_eq!(report["forward_batch"].as_u64(), Some(forward_batch));
        let index = regionseek::index::RegionIndex::open(&out).unwrap();
        let got: Vec<(String, String, Vec<f32>)> = (0..index.len())
            .map(|i| {
                let m = &index.rows()[i];
                (
                    m.image.clone(),
                    m.region_id.clone(),
                    index.embedding(i).unwrap(),
                )
            })
            .collect();
        rows.push(got);
    }
    assert_eq!(rows[0].len(), rows[1].len());
    for (a, b) in rows[0].iter().zip(&rows[1]) {
        assert_eq!((&a.0, &a.1), (&b.0, &b.1), "rows in another order");
        let cos = cosine(&a.2, &b.2);
        assert!(
            cos > 0.999999,
            "{} {}: batched forward changed the LET (cosine {cos})",
            a.0,
            a.1
        );
    }
}

#[test]
fn an_interrupted_run_resumes_to_the_same_rows_as_an_uninterrupted_one() {
    let Some(data) = shared_data() else { return };
    let (images, coco) = coco128(&data);
    let tmp = tempfile::tempdir().unwrap();
    let spec = quick_spec(tmp.path(), GT_STAGES, 1);
    let index = tmp.path().join("idx");
    let n = 12;
    let want = expected_regions(&coco, n) as u64;
    let args = [
        "index",
        images.to_str().unwrap(),
        "--coco",
        coco.to_str().unwrap(),
        "--pipeline",
        spec.to_str().unwrap(),
        "--model",
        "random:vit-b-32",
        "--out",
        index.to_str().unwrap(),
        "--limit",
        "12",
        "--json",
    ];
    let mut child = bin()
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    while manifest_rows(&index) == 0 {
        assert!(Instant::now() < deadline, "no batch committed in 300 s");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be interrupted"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL: no chance to clean up
    child.wait().unwrap();
    let at_kill = manifest_rows(&index);
    assert!(
        at_kill > 0 && at_kill < want,
        "killed after {at_kill} of {want} rows"
    );

    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "{err}");
    let r = json(&out);
    assert_eq!(
        r["rows_total"].as_u64(),
        Some(want),
        "resumed run must end where an uninterrupted one does"
    );
    assert_eq!(r["regions_added"].as_u64(), Some(want - at_kill));
    // no leftovers of the killed writer
    let stray: Vec<String> = std::fs::read_dir(&index)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str().map(String::from))
        .filter(|n| n.ends_with(".part") || n.ends_with(".tmp"))
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
}

#[test]
fn boxes_through_the_tiny_sam_are_indexed_and_bad_items_are_logged() {
    if regionseek::sam::library_path().is_err() {
        eprintln!("SKIP: ONNX Runtime not installed (./setup.sh)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    std::fs::copy(
        root().join("tests/fixtures/sam/landscape.png"),
        photos.join("landscape.png"),
    )
    .unwrap();
    std::fs::write(photos.join("broken.jpg"), b"not a jpeg").unwrap();
    let boxes = tmp.path().join("boxes.json");
    std::fs::write(
        &boxes,
        r#"[{"image": "landscape.png", "box": [10, 40, 150, 230], "label": "cat"},
            {"image": "landscape.png", "box": [150, 20, 300, 235], "id": "dog"},
            {"image": "landscape.png", "box": [50, 50, 20, 80]},
            {"image": "broken.jpg", "box": [0, 0, 10, 10]},
            {"image": "landscape.png", "box": [1, 2, 3]}]"#,
    )
    .unwrap();
    let spec = quick_spec(tmp.path(), "\"decode\", \"sam\", \"invert\", \"index\"", 4);
    let index = tmp.path().join("idx");
    let (code, out, err) = run(&[
        "index",
        photos.to_str().unwrap(),
        "--boxes",
        boxes.to_str().unwrap(),
        "--pipeline",
        spec.to_str().unwrap(),
        "--sam",
        root().join("tests/fixtures/sam").to_str().unwrap(),
        "--model",
        "random:vit-b-32",
        "--out",
        index.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(code, 2, "failures exit 2: {err}");
    let r = json(&out);
    assert_eq!(r["regions_added"], 2);
    assert_eq!(r["failures"], 2, "{r}");
    assert_eq!(r["input_issues"], 1);
    let log: Value =
        serde_json::from_str(&std::fs::read_to_string(index.join("errors.json")).unwrap()).unwrap();
    let f = log["failures"].as_array().unwrap();
    assert!(
        f.iter()
            .any(|x| x["stage"] == "decode" && x["image"] == "broken.jpg"),
        "{log}"
    );
    assert!(
        f.iter()
            .any(|x| x["stage"] == "mask" && x["region_id"] == "2"),
        "{log}"
    );
    assert!(f.iter().any(|x| x["stage"] == "input"), "{log}");
    let (_, out, _) = run(&[
        "search",
        index.to_str().unwrap(),
        "a cat",
        "--k",
        "5",
        "--json",
    ]);
    let hits = json(&out)["hits"].as_array().unwrap().clone();
    assert_eq!(hits.len(), 2);
    assert!(hits.iter().all(|h| h["source"] == "sam"));
    assert!(hits.iter().any(|h| h["region_id"] == "dog"));
}

#[test]
fn eval_coco_gives_every_method_a_complete_row() {
    let Some(data) = shared_data() else { return };
    let coco = data.join("coco128/instances.json");
    let (code, out, err) = run(&[
        "eval",
        "coco",
        "--images",
        data.join("coco128/images").to_str().unwrap(),
        "--coco",
        coco.to_str().unwrap(),
        "--limit",
        "2",
        "--methods",
        "maskinversion,masked-crop,cls,mask-pool",
        "--model",
        "random:vit-b-32",
        "--size",
        "224",
        "--steps",
        "2",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let t = json(&out);
    let methods = t["methods"].as_array().unwrap();
    let names: Vec<&str> = methods
        .iter()
        .map(|m| m["method"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["maskinversion", "masked-crop", "cls", "mask-pool"]);
    let want = expected_regions(&coco, 2) as u64;
    for m in methods {
        assert_eq!(m["regions"].as_u64(), Some(want), "{m}");
        for k in ["acc_at_1", "acc_at_5", "acc_at_10"] {
            let v = m[k].as_f64().unwrap();
            assert!((0.0..=100.0).contains(&v));
        }
        assert!(
            m["acc_at_1"].as_f64() <= m["acc_at_5"].as_f64()
                && m["acc_at_5"].as_f64() <= m["acc_at_10"].as_f64()
        );
    }
    assert_eq!(t["categories"], 80);
}

#[test]
fn a_spec_with_an_unknown_key_is_refused_with_its_line() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = tmp.path().join("bad.toml");
    std::fs::write(&spec, "name = \"bad\"\nstages = [\"decode\", \"masks\", \"invert\", \"index\"]\n[invert]\nstep = 3\n").unwrap();
    let (code, _, err) = run(&[
        "index",
        tmp.path().to_str().unwrap(),
        "--masks",
        tmp.path().to_str().unwrap(),
        "--pipeline",
        spec.to_str().unwrap(),
        "--out",
        tmp.path().join("idx").to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("line 4") && err.contains("step"), "{err}");
    let (code, _, err) = run(&[
        "index",
        ".",
        "--masks",
        ".",
        "--pipeline",
        "no-such-pipeline",
        "--out",
        "/tmp/x",
    ]);
    assert_eq!(code, 1);
    assert!(
        err.contains("gt-masks") && err.contains("boxes-sam"),
        "lists the available pipelines: {err}"
    );
}

/// A phone photo (EXIF orientation 6: stored 67x45, upright 45x67) is indexed in its stored frame by default,
/// as Pillow and COCO see it, or upright with --exif-rotate; each row says which, the region's pictures are cut
/// from the photo in that frame, and a rerun in the other frame is refused for that photo instead of mixing.
#[test]
fn a_phone_photo_is_indexed_in_its_stored_frame_or_upright_never_both() {
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    std::fs::copy(
        root().join("tests/fixtures/decode/jpeg_exif_6.jpg"),
        photos.join("phone.jpg"),
    )
    .unwrap();
    let boxes = tmp.path().join("boxes.json");
    std::fs::write(
        &boxes,
        r#"[{"image": "phone.jpg", "box": [2, 3, 40, 41], "id": "r"}]"#,
    )
    .unwrap();
    let spec = quick_spec(
        tmp.path(),
        "\"decode\", \"box-mask\", \"invert\", \"index\"",
        4,
    );
    let index_with = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "index",
            photos.to_str().unwrap(),
            "--boxes",
            boxes.to_str().unwrap(),
            "--pipeline",
            spec.to_str().unwrap(),
            "--model",
            "random:vit-b-32",
            "--out",
            out.to_str().unwrap(),
            "--json",
        ];
        args.extend_from_slice(extra);
        run(&args)
    };
    let first_hit = |index: &Path| -> Value {
        let (code, out, err) = run(&["search", index.to_str().unwrap(), "a photo", "--json"]);
        assert_eq!(code, 0, "{err}");
        json(&out)["hits"][0].clone()
    };

    let stored = tmp.path().join("stored");
    let (code, out, err) = index_with(&stored, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)["regions_added"], 1);
    let hit = first_hit(&stored);
    assert_eq!(hit["exif_rotated"], false, "{hit}");
    assert_eq!(
        hit["mask_rle"]["size"],
        serde_json::json!([45, 67]),
        "stored frame is 67 wide, 45 high"
    );

    let (code, out, _) = index_with(&stored, &["--exif-rotate"]);
    assert_eq!(code, 2, "the other frame is a per-photo failure");
    let r = json(&out);
    assert_eq!(
        (r["regions_added"].as_u64(), r["failures"].as_u64()),
        (Some(0), Some(1)),
        "{r}"
    );
    let log: Value =
        serde_json::from_str(&std::fs::read_to_string(stored.join("errors.json")).unwrap())
            .unwrap();
    let f = &log["failures"][0];
    assert_eq!(
        (f["stage"].as_str(), f["image"].as_str()),
        (Some("frame"), Some("phone.jpg")),
        "{log}"
    );
    assert!(
        f["error"].as_str().unwrap().contains("stored frame"),
        "{log}"
    );
    assert_eq!(manifest_rows(&stored), 1);

    let upright = tmp.path().join("upright");
    let (code, _, err) = index_with(&upright, &["--exif-rotate"]);
    assert_eq!(code, 0, "{err}");
    let hit = first_hit(&upright);
    assert_eq!(hit["exif_rotated"], true, "{hit}");
    assert_eq!(
        hit["mask_rle"]["size"],
        serde_json::json!([67, 45]),
        "upright: 45 wide, 67 high"
    );

    // The cut-out follows the row's frame: the upright mask on the upright photo (a frame mismatch would be
    // refused as a photo that changed since indexing).
    let crops = tmp.path().join("crops");
    let (code, _, err) = run(&[
        "search",
        upright.to_str().unwrap(),
        "a photo",
        "--crop",
        crops.to_str().unwrap(),
        "--images",
        photos.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let crop = std::fs::read_dir(&crops)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let img = image::open(&crop).unwrap();
    assert_eq!((img.width(), img.height()), (38, 38), "{}", crop.display());
}

/// A phone's library mixes formats: a JPEG, a HEIC and an AVIF, each written with EXIF orientation 6, are all
/// indexed, in the frame Pillow opens each in (the HEIC already turned by its irot box, as pillow-heif shows
/// it) or upright with --exif-rotate, and the camera named in the HEIC's and the AVIF's EXIF is searchable.
#[test]
fn a_folder_of_jpeg_heic_and_avif_phone_photos_is_indexed_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    for (fixture, name) in [
        ("jpeg_exif_6.jpg", "phone.jpg"),
        ("heic_exif_orientation_6.heic", "phone.heic"),
        ("avif_exif_orientation_6.avif", "phone.avif"),
    ] {
        std::fs::copy(
            root().join("tests/fixtures/decode").join(fixture),
            photos.join(name),
        )
        .unwrap();
    }
    let spec = small_library_spec(tmp.path());
    let frames: [(&[&str], [(&str, (u32, u32)); 3]); 2] = [
        (
            &[],
            [
                ("phone.avif", (61, 37)),
                ("phone.heic", (36, 60)),
                ("phone.jpg", (67, 45)),
            ],
        ),
        (
            &["--exif-rotate"],
            [
                ("phone.avif", (37, 61)),
                ("phone.heic", (36, 60)),
                ("phone.jpg", (45, 67)),
            ],
        ),
    ];
    for (extra, sizes) in frames {
        let out = tmp.path().join(format!("index{}", extra.len()));
        let mut args = library_index_args(&photos, &out, &spec);
        args.extend(extra.iter().map(|s| s.to_string()));
        let (code, stdout, err) = run(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(code, 0, "{extra:?}: {err}");
        assert_eq!(json(&stdout)["failures"], 0, "{stdout}");
        let (names, _) = photos_found(&out, &[]).unwrap();
        assert_eq!(
            names,
            ["phone.avif", "phone.heic", "phone.jpg"],
            "{extra:?}"
        );
        let index = regionseek::index::RegionIndex::open(&out).unwrap();
        for row in index.rows() {
            let want = sizes.iter().find(|(n, _)| *n == row.image).unwrap().1;
            assert_eq!(
                (row.photo.width, row.photo.height),
                (Some(want.0), Some(want.1)),
                "{} {extra:?}",
                row.image
            );
        }
        let (apple, _) = photos_found(&out, &["--camera", "iphone 15"]).unwrap();
        assert_eq!(apple, ["phone.avif", "phone.heic"], "{extra:?}");
    }
}

/// A small library spec: the shipped `library` with MaskInversion at 64 px and 3 steps, for the tiny model.
pub(crate) fn small_library_spec(dir: &Path) -> PathBuf {
    let shipped = std::fs::read_to_string(root().join("pipelines/library.toml")).unwrap();
    let text = shipped
        .replace("size = 448", "size = 64")
        .replace("steps = 10", "steps = 3")
        .replace("name = \"library\"", "name = \"small-library\"");
    let p = dir.join("small-library.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// The first `n` photos shipped in examples/photos, copied into `dir` (created).
fn copy_shipped_photos(dir: &Path, n: usize) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    let mut shipped: Vec<PathBuf> = std::fs::read_dir(root().join("examples/photos"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .collect();
    shipped.sort();
    shipped.truncate(n);
    for p in &shipped {
        std::fs::copy(p, dir.join(p.file_name().unwrap())).unwrap();
    }
    shipped
}

/// `regionseek index PHOTOS --out OUT --pipeline SPEC --model random:tiny --json`.
pub(crate) fn library_index_args(photos: &Path, out: &Path, spec: &Path) -> Vec<String> {
    [
        "index",
        photos.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--pipeline",
        spec.to_str().unwrap(),
        "--model",
        "random:tiny",
        "--json",
    ]
    .map(String::from)
    .to_vec()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let n = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (n(a) * n(b))
}

/// The first embedding of `regionseek invert IMAGE --mask MASK ... --json`.
fn cli_embedding(image: &Path, mask: &Path, extra: &[&str]) -> Vec<f32> {
    let mut args = vec![
        "invert",
        image.to_str().unwrap(),
        "--mask",
        mask.to_str().unwrap(),
        "--model",
        "random:tiny",
        "--json",
    ];
    args.extend_from_slice(extra);
    let (code, stdout, err) = run(&args);
    assert_eq!(code, 0, "{err}");
    let row: Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    row["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect()
}

#[test]
fn a_plain_folder_becomes_a_library_searchable_first_then_refined_once() {
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("library");
    let nested = photos.join("2024/summer");
    let shipped = copy_shipped_photos(&photos, 2);
    let mut deeper = copy_shipped_photos(&nested, 4);
    // Two photos at the top, the next two in a nested folder.
    for p in deeper.drain(..2) {
        std::fs::remove_file(nested.join(p.file_name().unwrap())).unwrap();
    }
    let shipped: Vec<PathBuf> = shipped.into_iter().chain(deeper).collect();
    // What a real folder also holds: sidecars, a video, a hidden file, a damaged photo, a way out.
    std::fs::write(photos.join("notes.txt"), "not a photo").unwrap();
    std::fs::write(nested.join("clip.mp4"), b"\x00\x00\x00\x18ftypmp42").unwrap();
    std::fs::copy(&shipped[0], photos.join(".thumbnail.jpg")).unwrap();
    std::fs::write(nested.join("damaged.jpg"), b"\xff\xd8\xff\xe0 truncated").unwrap();
    let outside = tmp.path().join("elsewhere.jpg");
    std::fs::copy(&shipped[1], &outside).unwrap();
    std::os::unix::fs::symlink(&outside, photos.join("link.jpg")).unwrap();

    let out = tmp.path().join("index");
    let index_args = library_index_args(&photos, &out, &small_library_spec(tmp.path()));
    let index_args: Vec<&str> = index_args.iter().map(String::as_str).collect();
    let (code, stdout, err) = run(&index_args);
    assert_eq!(code, 2, "the damaged photo fails, the rest goes on: {err}");
    let report = json(&stdout);
    let tiers = &report["tiers"];
    assert_eq!(report["images"], 5, "{report}");
    assert_eq!(report["failures"], 1, "{report}");
    assert_eq!(report["input_issues"], 1, "the symlink out: {report}");
    assert_eq!(report["skipped"]["non_photos"], 2, "{report}");
    assert_eq!(report["skipped"]["hidden"], 1, "{report}");
    assert_eq!(report["random_model"], true);
    assert_eq!(tiers["quick_photos"], 4, "{report}");
    assert_eq!(tiers["searchable_photos"], 4, "{report}");
    let quick = tiers["quick_regions"].as_u64().unwrap();
    assert!((4..=4 * 24).contains(&quick), "{report}");
    assert_eq!(
        tiers["refined_regions"].as_u64().unwrap(),
        quick,
        "{report}"
    );
    assert_eq!(tiers["regions_to_refine"], 0, "{report}");
    let log: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("errors.json")).unwrap()).unwrap();
    let failed: Vec<&str> = log["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["image"].as_str().unwrap())
        .collect();
    assert!(failed.iter().any(|f| f.ends_with("damaged.jpg")), "{log}");
    assert!(failed.iter().any(|f| f.ends_with("link.jpg")), "{log}");

    // Searches see each region once, with its best tier, and say which.
    let (code, stdout, err) = run(&[
        "search",
        out.to_str().unwrap(),
        "a dog",
        "--k",
        "500",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let hits = json(&stdout)["hits"].as_array().unwrap().clone();
    assert_eq!(hits.len() as u64, quick + 4, "every region and photo once");
    let mut seen = std::collections::HashSet::new();
    for h in &hits {
        let key = (h["image"].to_string(), h["region_id"].to_string());
        assert!(seen.insert(key), "{h} returned twice");
        let method = h["method"].as_str().unwrap();
        match h["region_id"].as_str().unwrap() {
            "image" => assert_eq!(method, "image", "{h}"),
            _ => assert_eq!(method, "maskinversion", "{h}"),
        }
    }

    // The refined tier is MaskInversion itself, and the quick tier mask pooling itself.
    let index = regionseek::index::RegionIndex::open(&out).unwrap();
    let row = (0..index.len())
        .find(|&r| index.rows()[r].method.name == "maskinversion")
        .unwrap();
    let meta = index.rows()[row].clone();
    let quick_row = (0..index.len())
        .find(|&r| {
            let m = &index.rows()[r];
            m.method.name == "mask-pool"
                && m.region_id == meta.region_id
                && m.image_hash == meta.image_hash
        })
        .unwrap();
    let mask = regionseek::masks::Rle::from_coco(&meta.mask)
        .unwrap()
        .decode();
    let mask_png = tmp.path().join("region.png");
    image::GrayImage::from_raw(
        mask.width as u32,
        mask.height as u32,
        mask.data.iter().map(|&v| v * 255).collect(),
    )
    .unwrap()
    .save(&mask_png)
    .unwrap();
    let photo = photos.join(&meta.image);
    let refined = cli_embedding(&photo, &mask_png, &["--size", "64", "--steps", "3"]);
    let stored = index.embedding(row).unwrap();
    assert!(
        cosine(&refined, &stored) > 0.999_999,
        "{}",
        cosine(&refined, &stored)
    );
    let pooled = cli_embedding(&photo, &mask_png, &["--method", "mask-pool"]);
    let stored = index.embedding(quick_row).unwrap();
    assert!(
        cosine(&pooled, &stored) > 0.999_99,
        "{}",
        cosine(&pooled, &stored)
    );
    drop(index);

    // A rerun on a fully refined library does nothing.
    let (_, stdout, _) = run(&index_args);
    let again = json(&stdout);
    assert_eq!(again["regions_added"], 0, "{again}");
    assert_eq!(again["images_processed"], 0, "{again}");
    assert_eq!(again["tiers"]["refined_regions"], 0, "{again}");
}

#[test]
fn a_library_run_stopped_part_way_continues_where_it_stopped() {
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("library");
    copy_shipped_photos(&photos, 3);
    let spec = small_library_spec(tmp.path());
    let out = tmp.path().join("index");
    let args = |limit: Option<&'static str>| {
        let mut a = library_index_args(&photos, &out, &spec);
        if let Some(n) = limit {
            a.extend(["--limit".to_string(), n.to_string()]);
        }
        a
    };
    fn argv(a: &[String]) -> Vec<&str> {
        a.iter().map(String::as_str).collect()
    }
    let (code, stdout, err) = run(&argv(&args(Some("1"))));
    assert_eq!(code, 0, "{err}");
    let first = json(&stdout);
    let (code, stdout, err) = run(&argv(&args(None)));
    assert_eq!(code, 0, "{err}");
    let rest = json(&stdout);
    assert_eq!(rest["images_skipped"], 1, "{rest}");
    assert_eq!(rest["tiers"]["quick_photos"], 2, "{rest}");
    assert_eq!(
        rest["tiers"]["refined_regions"], rest["tiers"]["quick_regions"],
        "only the new photos' regions are refined: {rest}"
    );
    let index = regionseek::index::RegionIndex::open(&out).unwrap();
    let total_regions = first["tiers"]["quick_regions"].as_u64().unwrap()
        + rest["tiers"]["quick_regions"].as_u64().unwrap();
    assert_eq!(index.len() as u64, 3 + 2 * total_regions);
    assert_eq!(index.superseded_rows() as u64, total_regions);
}

/// The committed row count of an index (0 before its first commit).
fn committed_rows(index: &Path) -> u64 {
    std::fs::read_to_string(index.join("manifest.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .and_then(|m| m["rows"].as_u64())
        .unwrap_or(0)
}

/// Waits until the index at `out` has committed more than `rows` rows; returns how many it has.
fn wait_for_rows_beyond(out: &Path, rows: u64, started: Instant) -> u64 {
    loop {
        let now = committed_rows(out);
        if now > rows {
            return now;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no commit beyond {rows} rows"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_library_run_stopped_by_ctrl_c_or_killed_while_refining_is_finished_by_the_next_run() {
    let tmp = tempfile::tempdir().unwrap();
    // Four shipped photos, refined at 224 px with B/32 and committed photo by photo: slow enough to be stopped
    // between two commits of the refining pass.
    let spec = tmp.path().join("refine-often.toml");
    std::fs::write(
        &spec,
        std::fs::read_to_string(root().join("pipelines/library.toml"))
            .unwrap()
            .replace("size = 448", "size = 224")
            .replace("batch_images = 8", "batch_images = 1"),
    )
    .unwrap();
    let photos = tmp.path().join("photos");
    copy_shipped_photos(&photos, 4);
    let out = tmp.path().join("index");
    let mut args = library_index_args(&photos, &out, &spec);
    let model_at = args.len() - 2;
    args[model_at] = "random:vit-b-32".into();
    let spawn = || {
        bin()
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };

    // Ctrl-C after the first refined commit: the run stops at a safe point, commits and reports (exit 130).
    let started = Instant::now();
    let child = spawn();
    let quick_rows = wait_for_rows_beyond(&out, 0, started);
    wait_for_rows_beyond(&out, quick_rows, started);
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let stopped = child.wait_with_output().unwrap();
    assert_eq!(stopped.status.code(), Some(130));
    let report = json(&String::from_utf8_lossy(&stopped.stdout));
    assert_eq!(report["interrupted"], true, "{report}");
    let regions = quick_rows - 4;
    let refined_first = report["tiers"]["refined_regions"].as_u64().unwrap();
    assert!(refined_first > 0 && refined_first < regions, "{report}");
    assert_eq!(committed_rows(&out), quick_rows + refined_first);

    // kill -9 after the next refined commit: what was committed stays.
    let mut child = spawn();
    wait_for_rows_beyond(&out, quick_rows + refined_first, Instant::now());
    child.kill().unwrap();
    child.wait().unwrap();
    let refined_before = committed_rows(&out) - quick_rows;
    assert!(
        refined_before < regions,
        "the run finished before it was killed"
    );

    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, stdout, err) = run(&argv);
    assert_eq!(code, 0, "{err}");
    let again = json(&stdout);
    assert_eq!(again["tiers"]["quick_photos"], 0, "{again}");
    assert_eq!(again["images_skipped"], 4, "{again}");
    assert_eq!(
        again["tiers"]["refined_regions"].as_u64().unwrap(),
        regions - refined_before,
        "only what the stopped runs had not committed: {again}"
    );
    assert_eq!(again["tiers"]["regions_to_refine"], 0, "{again}");
    let index = regionseek::index::RegionIndex::open(&out).unwrap();
    assert_eq!(index.len() as u64, 4 + 2 * regions);
    assert_eq!(index.superseded_rows() as u64, regions);
}

/// Every live region of an index as search returns it: (photo, region, method, source, box, score), sorted.
fn every_region(index: &Path) -> Vec<(String, String, String, String, String, String)> {
    let (code, stdout, err) = run(&[
        "search",
        index.to_str().unwrap(),
        "a photo",
        "--k",
        "1000",
        "--exact",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let mut rows: Vec<_> = json(&stdout)["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            let field = |k: &str| h[k].to_string();
            (
                field("image"),
                field("region_id"),
                field("method"),
                field("source"),
                field("box"),
                field("score"),
            )
        })
        .collect();
    rows.sort();
    rows
}

/// A nested folder of 7 photos indexed (returned: the folder, the spec, the index), then changed: two
/// deleted, one edited (new content under its path), two moved, one added. `name(i)` is shipped photo i's name.
struct ChangedLibrary {
    photos: PathBuf,
    spec: PathBuf,
    indexed_before: PathBuf,
    shipped: Vec<PathBuf>,
}

impl ChangedLibrary {
    fn name(&self, i: usize) -> String {
        self.shipped[i]
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_string()
    }

    fn index(&self, out: &Path, extra: &[&str], crash_at: Option<&str>) -> (i32, String, String) {
        let mut args = library_index_args(&self.photos, out, &self.spec);
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut cmd = bin();
        cmd.args(&args);
        if let Some(step) = crash_at {
            cmd.env("REGIONSEEK_INDEX_CRASH_AT", step);
        }
        let out = cmd.output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn new(tmp: &Path) -> Self {
        let photos = tmp.join("photos");
        let shipped = copy_shipped_photos(&tmp.join("all"), 10);
        let lib = ChangedLibrary {
            photos: photos.clone(),
            spec: small_library_spec(tmp),
            indexed_before: tmp.join("before"),
            shipped,
        };
        for (i, p) in lib.shipped[..7].iter().enumerate() {
            let folder = if i % 2 == 0 { "2024/summer" } else { "2025" };
            lib.place(p, &format!("{folder}/{}", lib.name(i)));
        }
        let (code, _, err) = lib.index(&lib.indexed_before, &[], None);
        assert_eq!(code, 0, "{err}");
        std::fs::remove_file(photos.join("2024/summer").join(lib.name(0))).unwrap();
        std::fs::remove_file(photos.join("2025").join(lib.name(1))).unwrap();
        lib.place(&lib.shipped[7], &format!("2024/summer/{}", lib.name(2)));
        std::fs::rename(
            photos.join("2025").join(lib.name(3)),
            photos.join("2024/summer/renamed.jpg"),
        )
        .unwrap();
        std::fs::create_dir_all(photos.join("archive")).unwrap();
        std::fs::rename(
            photos.join("2024/summer").join(lib.name(4)),
            photos.join("archive").join(lib.name(4)),
        )
        .unwrap();
        lib.place(&lib.shipped[8], &format!("2025/{}", lib.name(8)));
        lib
    }

    fn place(&self, from: &Path, to: &str) {
        let dest = self.photos.join(to);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(from, dest).unwrap();
    }

    /// A copy of the index as it was before the changes.
    fn index_before(&self, at: &Path) -> PathBuf {
        std::fs::create_dir_all(at).unwrap();
        for e in std::fs::read_dir(&self.indexed_before).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), at.join(e.file_name())).unwrap();
        }
        at.to_path_buf()
    }
}

#[test]
fn a_rerun_on_a_changed_folder_answers_as_a_fresh_index_of_it() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = ChangedLibrary::new(tmp.path());
    let out = lib.index_before(&tmp.path().join("index"));
    let (code, stdout, err) = lib.index(&out, &[], None);
    assert_eq!(code, 0, "{err}");
    let report = json(&stdout);
    let sync = &report["sync"];
    assert_eq!(sync["deleted_photos"], 2, "{report}");
    assert_eq!(sync["edited_photos"], 1, "{report}");
    assert_eq!(sync["moved_photos"], 2, "{report}");
    assert!(sync["rows_moved"].as_u64().unwrap() > 0, "{report}");
    // Only the edited and the added photo were embedded; the moved ones kept their rows.
    assert_eq!(report["tiers"]["quick_photos"], 2, "{report}");

    let fresh = tmp.path().join("fresh");
    let (code, _, err) = lib.index(&fresh, &[], None);
    assert_eq!(code, 0, "{err}");
    assert_eq!(every_region(&out), every_region(&fresh));
    let (code, _, err) = run(&["verify", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");

    // With --no-delete a vanished photo's rows stay.
    std::fs::remove_file(lib.photos.join("archive").join(lib.name(4))).unwrap();
    let (code, stdout, err) = lib.index(&out, &["--no-delete"], None);
    assert_eq!(code, 0, "{err}");
    let kept = json(&stdout);
    assert_eq!(kept["sync"]["kept_vanished_photos"], 1, "{kept}");
    assert!(every_region(&out)
        .iter()
        .any(|r| r.0.contains(&format!("archive/{}", lib.name(4)))));
}

#[test]
fn a_sync_killed_at_any_step_ends_as_a_fresh_index_once_rerun() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = ChangedLibrary::new(tmp.path());
    let fresh = tmp.path().join("fresh");
    let (code, _, err) = lib.index(&fresh, &[], None);
    assert_eq!(code, 0, "{err}");
    let want = every_region(&fresh);
    // The deletions' commit, then each step of the compaction they set off (over a fifth of the rows go).
    for step in [
        "delete-tombstones-written",
        "compact-segment-written",
        "compact-graph-written",
        "compact-committed",
    ] {
        let out = lib.index_before(&tmp.path().join(step));
        let (code, _, err) = lib.index(&out, &[], Some(step));
        assert_ne!(code, 0, "{step}: the run was not stopped: {err}");
        let (code, _, err) = run(&["verify", out.to_str().unwrap()]);
        assert_eq!(code, 0, "{step}: {err}");
        let manifest_after_crash = std::fs::read_to_string(out.join("manifest.json")).unwrap();
        let (code, rerun, err) = lib.index(&out, &[], None);
        assert_eq!(code, 0, "{step}: {err}");
        let got = every_region(&out);
        let missing: Vec<_> = want.iter().filter(|r| !got.contains(r)).take(3).collect();
        let extra: Vec<_> = got.iter().filter(|r| !want.contains(r)).take(3).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{step}: missing {missing:?}, extra {extra:?} (of {} and {}); the rerun: {rerun}\nafter the crash: {manifest_after_crash}\nafter the rerun: {}",
            want.len(),
            got.len(),
            std::fs::read_to_string(out.join("manifest.json")).unwrap()
        );
    }
}

#[test]
fn watch_syncs_each_change_of_the_folder_until_stopped() {
    use std::io::BufRead;
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("photos");
    let shipped = copy_shipped_photos(&tmp.path().join("all"), 3);
    std::fs::create_dir_all(&photos).unwrap();
    std::fs::copy(&shipped[0], photos.join("first.jpg")).unwrap();
    let out = tmp.path().join("index");
    let mut args = library_index_args(&photos, &out, &small_library_spec(tmp.path()));
    args.push("--watch".into());
    let mut child = bin()
        .args(&args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (tx, reports) = std::sync::mpsc::channel::<Value>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                let _ = tx.send(v);
            }
        }
    });
    let next = || {
        reports
            .recv_timeout(Duration::from_secs(120))
            .expect("a report within 2 minutes")
    };
    let first = next();
    assert_eq!(first["images"], 1, "{first}");

    // A photo added, then one moved: each is one more run, the move carried over without embedding.
    std::fs::copy(&shipped[1], photos.join("second.jpg")).unwrap();
    let added = next();
    assert_eq!(added["images"], 2, "{added}");
    assert_eq!(added["tiers"]["quick_photos"], 1, "{added}");
    std::fs::create_dir_all(photos.join("moved")).unwrap();
    std::fs::rename(photos.join("first.jpg"), photos.join("moved/first.jpg")).unwrap();
    let moved = next();
    assert_eq!(moved["sync"]["moved_photos"], 1, "{moved}");
    assert_eq!(moved["tiers"]["quick_photos"], 0, "{moved}");

    // SIGTERM ends the watch.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.code().is_some(), "{status:?}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "still watching after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `regionseek search INDEX "a photo" --group-by photo --json` with `extra`: the photos hit (sorted) and
/// the hits, or the exit code and stderr.
fn photos_found(index: &Path, extra: &[&str]) -> Result<(Vec<String>, Vec<Value>), (i32, String)> {
    let mut args = vec![
        "search",
        index.to_str().unwrap(),
        "a photo",
        "--k",
        "100",
        "--group-by",
        "photo",
        "--json",
    ];
    args.extend_from_slice(extra);
    let (code, stdout, err) = run(&args);
    if code != 0 {
        return Err((code, err));
    }
    let hits = json(&stdout)["hits"].as_array().unwrap().clone();
    let mut names: Vec<String> = hits
        .iter()
        .map(|h| h["image"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    Ok((names, hits))
}

#[test]
fn searches_filter_on_the_exif_a_camera_wrote_and_hits_carry_when_and_with_what() {
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("photos");
    exif_photos(&photos);
    let out = tmp.path().join("index");
    let args = library_index_args(&photos, &out, &small_library_spec(tmp.path()));
    let (code, _, err) = run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 0, "{err}");

    let found = |extra: &[&str]| photos_found(&out, extra).unwrap().0;
    assert_eq!(
        found(&[]),
        ["bare.jpg", "newyork.jpg", "paris.jpg", "phone.jpg"]
    );
    // Dates: midnight UTC for a date alone; New York's evening of the 24th is the 25th in UTC.
    assert_eq!(
        found(&["--after", "2024-01-01"]),
        ["paris.jpg", "phone.jpg"]
    );
    assert_eq!(found(&["--before", "2024-01-01"]), ["newyork.jpg"]);
    assert_eq!(
        found(&["--after", "2023-12-25", "--before", "2024-06-01"]),
        ["newyork.jpg", "paris.jpg"]
    );
    assert_eq!(
        found(&["--after", "2023-12-25T02:00:00Z"]),
        ["paris.jpg", "phone.jpg"]
    );
    assert_eq!(
        found(&[
            "--before",
            "2024-05-01T12:03:00.001Z",
            "--after",
            "2024-05-01T14:03:00+02:00"
        ]),
        ["paris.jpg"],
        "the offset the camera wrote places the photo at 12:03 UTC"
    );
    // Camera: any case, make or model.
    assert_eq!(found(&["--camera", "nikon"]), ["newyork.jpg"]);
    assert_eq!(found(&["--camera", "EOS r5"]), ["paris.jpg"]);
    assert_eq!(
        found(&["--camera", "iphone", "--after", "2024-07-01"]),
        ["phone.jpg"]
    );
    // Near: Versailles is ~17 km from Paris; New York is far from both.
    assert_eq!(found(&["--near", "48.8049,2.1204,20"]), ["paris.jpg"]);
    assert_eq!(found(&["--near", "40.7,-74.0,50"]), ["newyork.jpg"]);

    // Hits carry the capture time as the camera wrote it and the camera; the bare photo's are null.
    let (_, hits) = photos_found(&out, &[]).unwrap();
    let hit = |name: &str| hits.iter().find(|h| h["image"] == name).unwrap().clone();
    assert_eq!(hit("paris.jpg")["taken_at"], "2024-05-01T14:03:00+02:00");
    assert_eq!(hit("paris.jpg")["camera"], "Canon EOS R5");
    assert_eq!(hit("newyork.jpg")["camera"], "NIKON CORPORATION NIKON D850");
    assert_eq!(hit("phone.jpg")["taken_at"], "2024-07-14T10:00:00");
    assert_eq!(hit("bare.jpg")["taken_at"], Value::Null);
    assert_eq!(hit("bare.jpg")["camera"], Value::Null);

    // Every row of a photo holds its metadata, its size included.
    let index = regionseek::index::RegionIndex::open(&out).unwrap();
    for row in index.rows() {
        let p = &row.photo;
        let img = image::open(photos.join(&row.image)).unwrap();
        assert_eq!(
            (p.width, p.height),
            (Some(img.width()), Some(img.height())),
            "{}",
            row.image
        );
        assert_eq!(
            p.gps.is_some(),
            ["paris.jpg", "newyork.jpg"].contains(&row.image.as_str())
        );
    }

    // A filter that keeps nothing says why, with what the photos hold; a bad word is refused in words.
    let (code, err) = photos_found(&out, &["--camera", "leica"]).unwrap_err();
    assert_ne!(code, 0);
    assert!(
        err.contains("Canon EOS R5") && err.contains("leica"),
        "{err}"
    );
    let (_, err) = photos_found(&out, &["--near", "0,0,1"]).unwrap_err();
    assert!(err.contains("nearest"), "{err}");
    let (_, err) = photos_found(&out, &["--after", "2030-01-01"]).unwrap_err();
    assert!(err.contains("2023-12-24T20:00:00-05:00"), "{err}");
    for (flag, bad) in [
        ("--after", "May 1st"),
        ("--before", "2024-02-30"),
        ("--near", "91,0,1"),
    ] {
        let (code, err) = photos_found(&out, &[flag, bad]).unwrap_err();
        assert_ne!(code, 0);
        assert!(err.contains(bad), "{flag} {bad}: {err}");
    }
    let (_, err) =
        photos_found(&out, &["--after", "2024-02-01", "--before", "2024-01-01"]).unwrap_err();
    assert!(err.contains("is not before"), "{err}");
}
