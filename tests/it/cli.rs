//! The `regionseek` binary as a user runs it.

use crate::common;

use std::process::Command;

use common::*;

fn regionseek(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_regionseek"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json_lines(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("every stdout line is JSON"))
        .collect()
}

#[test]
fn invert_reports_each_mask_and_keeps_going_past_a_bad_one() {
    let dir = tiny_dir();
    let (img, m1, m2) = (
        dir.join("image.png"),
        dir.join("mask_rect.png"),
        dir.join("mask_ellipse.png"),
    );
    let maps = tempfile::tempdir().unwrap();
    for method in ["maskinversion", "mask-pool", "crop"] {
        let (code, stdout, stderr) = regionseek(&[
            "invert",
            img.to_str().unwrap(),
            "--mask",
            m1.to_str().unwrap(),
            "--mask",
            "/nonexistent/mask.png",
            "--mask",
            m2.to_str().unwrap(),
            "--model",
            dir.to_str().unwrap(),
            "--size",
            "64",
            "--method",
            method,
            "--labels",
            "cat,dog",
            "--json",
            "--save-maps",
            maps.path().to_str().unwrap(),
        ]);
        assert_eq!(code, 2, "{method}: one mask failed, so exit 2\n{stderr}");
        let rows = json_lines(&stdout);
        assert_eq!(rows.len(), 4, "{method}: 3 masks + summary\n{stdout}");
        assert!(
            rows[1]["error"].as_str().unwrap().contains("nonexistent"),
            "{}",
            rows[1]
        );
        for r in [&rows[0], &rows[2]] {
            assert_eq!(r["embedding"].as_array().unwrap().len(), 32);
            assert_eq!(r["ranking"].as_array().unwrap().len(), 2);
            assert_eq!(r["method"], method);
        }
        assert_eq!(rows[3]["summary"]["failed"], 1);
    }
    // Maps are written for MaskInversion only (baselines have none).
    let written: Vec<_> = std::fs::read_dir(maps.path()).unwrap().collect();
    assert_eq!(written.len(), 2);
}

#[test]
fn unknown_method_and_model_are_refused_clearly() {
    let dir = tiny_dir();
    let img = dir.join("image.png");
    let mask = dir.join("mask_rect.png");
    let (code, _, stderr) = regionseek(&[
        "invert",
        img.to_str().unwrap(),
        "--mask",
        mask.to_str().unwrap(),
        "--method",
        "bogus",
    ]);
    assert_ne!(code, 0);
    assert!(stderr.contains("unknown method"), "{stderr}");
    let (code, _, stderr) = regionseek(&[
        "invert",
        img.to_str().unwrap(),
        "--mask",
        mask.to_str().unwrap(),
        "--model",
        "random:nope",
    ]);
    assert_eq!(code, 1);
    assert!(stderr.starts_with("error: unknown model"), "{stderr}");
    let model = dir.to_str().unwrap();
    let base = [
        "invert",
        img.to_str().unwrap(),
        "--mask",
        mask.to_str().unwrap(),
        "--model",
        model,
    ];
    let (code, _, stderr) = regionseek(&[&base[..], &["--gpu-memory", "0"]].concat());
    assert_eq!(code, 1);
    assert!(
        stderr.contains("--gpu-memory") && stderr.contains("positive"),
        "{stderr}"
    );
    let (code, _, stderr) = regionseek(&[&base[..], &["--precision", "fp8"]].concat());
    assert_ne!(code, 0);
    assert!(
        stderr.contains("fp32") && stderr.contains("bf16-jacobian"),
        "{stderr}"
    );
}

#[test]
fn weights_fetch_offline_says_where_to_put_files() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("clip");
    let (code, _, stderr) = regionseek(&[
        "weights",
        "fetch",
        "clip-vit-b-16",
        "--dir",
        target.to_str().unwrap(),
    ]);
    if code == 0 {
        eprintln!("SKIP: this machine is online; the download worked");
        return;
    }
    assert!(
        stderr.contains("cannot download") && stderr.contains(target.to_str().unwrap()),
        "{stderr}"
    );
}

#[test]
fn sam_writes_one_mask_per_good_box_and_reports_the_bad_one() {
    if regionseek::sam::library_path().is_err() {
        eprintln!("SKIP: ONNX Runtime not installed (./setup.sh)");
        return;
    }
    let fixtures = root().join("tests/fixtures/sam");
    let out = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = regionseek(&[
        "sam",
        fixtures.join("landscape.png").to_str().unwrap(),
        "--box",
        "10,40,150,230",
        "--box",
        "50,50,20,80",
        "--box",
        "250,-30,400,100",
        "--sam",
        fixtures.to_str().unwrap(),
        "--out",
        out.path().to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(code, 2, "partial failure exits 2: {stderr}");
    assert!(stderr.contains("empty or inverted"), "{stderr}");
    let v = &json_lines(&stdout)[0];
    let regions = v["regions"].as_array().unwrap();
    assert_eq!(regions.len(), 2);
    assert_eq!(v["errors"][0]["index"], 1);
    // the overhanging box was clipped to the image before prompting
    assert_eq!(
        regions[1]["prompt_box"],
        serde_json::json!([250.0, 0.0, 320.0, 100.0])
    );
    for r in regions {
        let png = regionseek::masks::BinaryMask::read(std::path::Path::new(
            r["mask_png"].as_str().unwrap(),
        ))
        .unwrap();
        assert_eq!((png.width, png.height), (320, 240));
        assert_eq!(png.area() as u64, r["area"].as_u64().unwrap());
        let rle: regionseek::masks::CocoRle =
            serde_json::from_value(r["mask_rle"].clone()).unwrap();
        assert_eq!(
            regionseek::masks::Rle::from_coco(&rle).unwrap().decode(),
            png
        );
    }
}

#[test]
fn sam_without_onnx_runtime_says_how_to_install_it() {
    let out = tempfile::tempdir().unwrap();
    let fixtures = root().join("tests/fixtures/sam");
    let output = Command::new(env!("CARGO_BIN_EXE_regionseek"))
        .args([
            "sam",
            fixtures.join("landscape.png").to_str().unwrap(),
            "--box",
            "10,40,150,230",
            "--sam",
            fixtures.to_str().unwrap(),
            "--out",
            out.path().to_str().unwrap(),
        ])
        .env("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr.contains("ONNX Runtime library not found"),
        "{stderr}"
    );
    assert!(
        stderr.contains("setup.sh") && stderr.contains("ORT_DYLIB_PATH"),
        "{stderr}"
    );
}

#[test]
fn sam_box_mode_needs_no_model_and_fills_the_clipped_box() {
    let out = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = regionseek(&[
        "sam",
        root()
            .join("tests/fixtures/sam/portrait.png")
            .to_str()
            .unwrap(),
        "--box",
        "-5,10,50,60",
        "--mask-from",
        "box",
        "--out",
        out.path().to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let v = &json_lines(&stdout)[0];
    assert_eq!(v["regions"][0]["area"], 50 * 50);
    assert_eq!(
        v["regions"][0]["mask_rle"]["size"],
        serde_json::json!([250, 190])
    );
}

#[test]
fn classify_ranks_every_label_per_region_and_reports_a_bad_box() {
    let (code, stdout, stderr) = regionseek(&[
        "classify",
        root()
            .join("tests/fixtures/sam/landscape.png")
            .to_str()
            .unwrap(),
        "--box",
        "10,40,150,230",
        "--box",
        "50,50,20,80",
        "--mask-from",
        "box",
        "--labels",
        "cat,dog,car",
        "--model",
        "random:vit-b-32",
        "--size",
        "224",
        "--steps",
        "2",
        "--json",
    ]);
    assert_eq!(code, 2, "a failed region exits 2: {stderr}");
    let v = &json_lines(&stdout)[0];
    let regions = v["regions"].as_array().unwrap();
    assert_eq!(regions.len(), 2);
    let labels = regions[0]["labels"].as_array().unwrap();
    assert_eq!(labels.len(), 3);
    let p: Vec<f64> = labels.iter().map(|l| l["prob"].as_f64().unwrap()).collect();
    assert!(p.windows(2).all(|w| w[0] >= w[1]), "best first: {p:?}");
    assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-4);
    assert!(regions[1]["error"]
        .as_str()
        .unwrap()
        .contains("empty or inverted"));
}

/// Subcommands that have their own subcommands (`weights list`).
const NESTED: &[&str] = &["weights", "eval"];

/// What is wrong with the README's command lines: commands that do not exist, flags their `--help` does not
/// list, and bracketed values that differ from the default `--help` prints.
fn readme_problems(text: &str) -> Vec<String> {
    use std::collections::HashMap;
    let lines = readme::command_lines(text, NESTED);
    assert!(
        lines.len() > 20,
        "the README's command lines were not found: {lines:?}"
    );
    let mut helps: HashMap<Vec<String>, Option<HashMap<String, Option<String>>>> = HashMap::new();
    let mut problems = Vec::new();
    for line in &lines {
        let defaults = helps.entry(line.words.clone()).or_insert_with(|| {
            let mut args: Vec<&str> = line.words.iter().map(String::as_str).collect();
            args.push("--help");
            let (code, out, _) = regionseek(&args);
            (code == 0).then(|| readme::help_defaults(&out))
        });
        let Some(defaults) = defaults else {
            problems.push(format!(
                "`regionseek {}` is not a command: {}",
                line.words.join(" "),
                line.text
            ));
            continue;
        };
        for flag in readme::flags(line) {
            if !defaults.contains_key(&flag) {
                problems.push(format!(
                    "`regionseek {}` has no {flag}: {}",
                    line.words.join(" "),
                    line.text
                ));
            }
        }
        for (flag, value) in readme::bracketed_values(line) {
            if let Some(Some(default)) = defaults.get(&flag) {
                if *default != value {
                    problems.push(format!(
                        "the README shows [{flag} {value}] but the default of `regionseek {}` is {default}",
                        line.words.join(" ")
                    ));
                }
            }
        }
    }
    problems
}

#[test]
fn the_readme_names_only_commands_and_flags_that_exist_with_the_defaults_help_gives() {
    let problems = readme_problems(&readme::readme());
    assert!(
        problems.is_empty(),
        "the README is wrong:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_readme_check_finds_a_wrong_line() {
    let text = readme::readme();
    for (wrong, says) in [
        ("`regionseek index-verify INDEX_DIR`", "not a command"),
        (
            "`regionseek search INDEX_DIR \"a dog\" [--kk 3]`",
            "has no --kk",
        ),
        (
            "`regionseek search INDEX_DIR \"a dog\" [--k 12]`",
            "default",
        ),
        ("`regionseek bench-index [--ef 64]`", "default"),
    ] {
        let problems = readme_problems(&format!("{text}\n{wrong}\n"));
        assert_eq!(problems.len(), 1, "{wrong}: {problems:?}");
        assert!(problems[0].contains(says), "{wrong}: {problems:?}");
    }
}

#[test]
fn index_mistakes_are_caught_before_any_work_and_leave_no_folder() {
    let dir = tempfile::tempdir().unwrap();
    let photos = tiny_dir();
    let boxes = dir.path().join("b.json");
    std::fs::write(
        &boxes,
        r#"[{"image": "image.png", "box": [4, 4, 40, 40], "label": "thing"}]"#,
    )
    .unwrap();
    let out = dir.path().join("idx");
    let out_s = out.to_str().unwrap();
    // Boxes with a pipeline that needs masks: refused at once, naming the flag that fixes it.
    let t = std::time::Instant::now();
    let (code, _, err) = regionseek(&[
        "index",
        photos.to_str().unwrap(),
        "--boxes",
        boxes.to_str().unwrap(),
        "--pipeline",
        "gt-masks",
        "--out",
        out_s,
        "--model",
        "random:vit-b-32",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--pipeline boxes"), "{err}");
    assert!(
        t.elapsed() < std::time::Duration::from_secs(5),
        "the model was loaded first"
    );
    assert!(!out.exists(), "a refused run left {out_s} behind");
    // A missing images folder.
    let (code, _, err) = regionseek(&[
        "index",
        dir.path().join("nowhere").to_str().unwrap(),
        "--boxes",
        boxes.to_str().unwrap(),
        "--out",
        out_s,
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("IMAGES_DIR") && err.contains("does not exist"),
        "{err}"
    );
    assert!(!out.exists());
    // A folder without photos.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    std::fs::write(empty.join("notes.txt"), "not a photo").unwrap();
    let (code, _, err) = regionseek(&[
        "index",
        empty.to_str().unwrap(),
        "--pipeline",
        "auto-grid",
        "--out",
        out_s,
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("nothing to index") && err.contains(".jpg"),
        "{err}"
    );
    assert!(
        !out.exists(),
        "no lock file or folder is left after a failed run"
    );
    // Without --pipeline, boxes get the box pipeline.
    let (code, stdout, err) = regionseek(&[
        "index",
        photos.to_str().unwrap(),
        "--boxes",
        boxes.to_str().unwrap(),
        "--out",
        out_s,
        "--model",
        "random:vit-b-32",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let report = last_json(&stdout);
    assert_eq!(report["pipeline"], "boxes", "{report}");
    assert_eq!(report["regions_added"], 1, "{report}");
}

/// `regionseek decode` tells a user how each photo is read: the format by its content, the size in the chosen
/// frame and the same pixel hash Pillow gives (tests/fixtures/decode/expected.json), the RGB bytes on request,
/// and a refusal in words with exit 2 while the other files are still read.
#[test]
fn decode_reports_each_photo_as_pillow_reads_it_and_refuses_a_bad_one_in_words() {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/decode");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let out = tempfile::tempdir().unwrap();
    let names = [
        "avif_exif_orientation_6.avif",
        "heic_420.heic",
        "not_a_photo.jpg",
    ];
    let paths: Vec<String> = names
        .iter()
        .map(|n| dir.join(n).to_string_lossy().into_owned())
        .collect();
    let mut args = vec![
        "decode",
        "--json",
        "--exif-rotate",
        "--rgb-out",
        out.path().to_str().unwrap(),
    ];
    args.extend(paths.iter().map(String::as_str));
    let (code, stdout, stderr) = regionseek(&args);
    assert_eq!(code, 2, "one refusal: {stderr}");
    let rows = json_lines(&stdout);
    assert_eq!(rows.len(), 3, "{stdout}");
    let avif = &expected["files"]["avif_exif_orientation_6.avif"]["exif_rotated"];
    assert_eq!(rows[0]["format"], "AVIF");
    assert_eq!(
        rows[0]["sha256"], avif["sha256"],
        "upright as exif_transpose makes it"
    );
    assert_eq!(
        serde_json::json!([rows[0]["width"], rows[0]["height"]]),
        avif["size"]
    );
    assert_eq!(rows[1]["format"], "HEIC");
    assert_eq!(
        rows[1]["sha256"],
        expected["files"]["heic_420.heic"]["sha256"]
    );
    let rgb = std::fs::read(out.path().join("heic_420.heic.rgb")).unwrap();
    assert_eq!(
        rgb.len() as u64,
        rows[1]["width"].as_u64().unwrap() * rows[1]["height"].as_u64().unwrap() * 3
    );
    let error = rows[2]["error"].as_str().unwrap();
    assert!(
        error.contains("not_a_photo.jpg")
            && error.contains("not a photo in a format regionseek reads"),
        "{error}"
    );
}
