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
