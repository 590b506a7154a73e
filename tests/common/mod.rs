//! Helpers shared by the integration tests: fixture paths and vector comparisons.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{Device, Tensor};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn tiny_dir() -> PathBuf {
    root().join("tests/fixtures/tiny")
}

/// `../shared/data` beside the checkout (REGIONSEEK_DATA overrides), or None with a message: tests that
/// need the real data skip on machines without it.
pub fn shared_data() -> Option<PathBuf> {
    let p = std::env::var_os("REGIONSEEK_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("../shared/data"));
    if p.is_dir() {
        Some(p)
    } else {
        eprintln!(
            "SKIP: shared data not found at {} (set REGIONSEEK_DATA)",
            p.display()
        );
        None
    }
}

pub fn expected() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(tiny_dir().join("expected.safetensors"), &Device::Cpu)
        .expect("fixture tensors")
}

pub fn expected_json() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(tiny_dir().join("expected.json")).unwrap())
        .unwrap()
}

pub fn vec1(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The `regionseek` binary with `args`: (exit code, stdout, stderr). A panic (exit 101) fails the test:
/// nothing a user passes may make the binary panic.
pub fn run_regionseek(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_regionseek"))
        .args(args)
        .output()
        .unwrap();
    command_outcome(out)
}

pub fn command_outcome(out: std::process::Output) -> (i32, String, String) {
    let (code, stdout, stderr) = (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert_ne!(code, 101, "a panic: {stderr}");
    assert!(!stderr.contains("panicked"), "a panic: {stderr}");
    (code, stdout, stderr)
}

/// The last line of a `--json` command's stdout, parsed.
pub fn last_json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout.lines().last().expect("a JSON line")).expect("JSON output")
}
