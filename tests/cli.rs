//! The `regionseek` binary as a user runs it.

mod common;

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
    let p: Vec<f64> = labels.iter().map(|l| l["p"].as_f64().unwrap()).collect();
    assert!(p.windows(2).all(|w| w[0] >= w[1]), "best first: {p:?}");
    assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-4);
    assert!(regions[1]["error"]
        .as_str()
        .unwrap()
        .contains("empty or inverted"));
}
