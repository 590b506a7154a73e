//! Helpers shared by the integration tests: fixture paths and vector comparisons.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

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
    let out = Command::new(env!("CARGO_BIN_EXE_regionseek"))
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

/// A response read off a real socket.
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}: body is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// One HTTP/1.1 exchange with raw bytes as the request target, so that tests can send what no client
/// library would (invalid UTF-8, huge queries).
pub fn http_raw(
    addr: &str,
    method: &str,
    target: &[u8],
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connecting to the server");
    s.set_read_timeout(Some(std::time::Duration::from_secs(120)))
        .unwrap();
    let mut req = Vec::new();
    req.extend_from_slice(method.as_bytes());
    req.push(b' ');
    req.extend_from_slice(target);
    req.extend_from_slice(b" HTTP/1.1\r\nConnection: close\r\n");
    // Host: localhost unless the test names another.
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.extend_from_slice(b"Host: localhost\r\n");
    }
    for (k, v) in headers {
        req.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    let given_length = headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-length"));
    if (!body.is_empty() || method == "POST") && !given_length {
        req.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    req.extend_from_slice(body);
    // The server may answer (413, 414) before reading all of a large request.
    let _ = s.write_all(&req);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP response: {:?}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("a status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
                break;
            };
            let size = usize::from_str_radix(
                String::from_utf8_lossy(&rest[..eol])
                    .split(';')
                    .next()
                    .unwrap()
                    .trim(),
                16,
            )
            .unwrap_or(0);
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[eol + 2..eol + 2 + size]);
            rest = &rest[eol + 2 + size + 2..];
        }
        body = out;
    }
    HttpResponse {
        status,
        headers,
        body,
    }
}

pub fn http_get(addr: &str, target: &str) -> HttpResponse {
    http_raw(addr, "GET", target.as_bytes(), &[], b"")
}

/// The fused map ops' definitions written with generic products (the twin of `explain::fused`):
/// `colsum[m, j] = Σ_h Σ_i ReLU(U_h V_hᵀ)[i, j]` for `u` `[M, N, H·Dh]`, `v` `[H, N, Dh]`.
pub fn dense_relu_colsum(u: &Tensor, v: &Tensor) -> Tensor {
    let g = dense_products(u, v);
    let (m, n, _) = u.dims3().unwrap();
    let h = v.dim(0).unwrap();
    g.relu()
        .unwrap()
        .reshape((h, m, n, n))
        .unwrap()
        .sum(2)
        .unwrap()
        .sum(0)
        .unwrap()
}

/// The twin of `explain::fused::relu_colsum_backward`.
pub fn dense_relu_colsum_backward(u: &Tensor, v: &Tensor, w: &Tensor) -> Tensor {
    let g = dense_products(u, v);
    let (m, n, c) = u.dims3().unwrap();
    let h = v.dim(0).unwrap();
    let positive = g
        .gt(0f32)
        .unwrap()
        .to_dtype(candle_core::DType::F32)
        .unwrap()
        .reshape((h, m, n, n))
        .unwrap();
    let dg = positive
        .broadcast_mul(&w.reshape((1, m, 1, n)).unwrap())
        .unwrap()
        .reshape((h, m * n, n))
        .unwrap();
    dg.matmul(&v.contiguous().unwrap())
        .unwrap()
        .transpose(0, 1)
        .unwrap()
        .reshape((m, n, c))
        .unwrap()
}

fn dense_products(u: &Tensor, v: &Tensor) -> Tensor {
    let (m, n, c) = u.dims3().unwrap();
    let h = v.dim(0).unwrap();
    let uh = u
        .reshape((m * n, h, c / h))
        .unwrap()
        .transpose(0, 1)
        .unwrap()
        .contiguous()
        .unwrap();
    uh.matmul(&v.transpose(1, 2).unwrap().contiguous().unwrap())
        .unwrap()
}

/// ‖a − b‖ / ‖b‖ over all elements (f64).
pub fn relative_error(a: &Tensor, b: &Tensor) -> f64 {
    let a: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
    let b: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(a.len(), b.len());
    let diff: f64 = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
        .sum();
    let norm: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (diff / norm.max(1e-300)).sqrt()
}

/// A tensor of standard-normal-like values from `seed` (the CPU's generator cannot be seeded).
pub fn seeded_randn(shape: &[usize], seed: u64, device: &Device) -> Tensor {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut uniform = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    let len: usize = shape.iter().product();
    // Box–Muller
    let values: Vec<f32> = (0..len)
        .map(|_| {
            let (a, b) = (uniform(), uniform());
            ((-2.0 * a.ln()).sqrt() * (2.0 * std::f64::consts::PI * b).cos()) as f32
        })
        .collect();
    Tensor::from_vec(values, shape, device).unwrap()
}

/// Inverts `masks` on the tiny fixture's pixels (the photo is 80×60) with `cfg`.
pub fn invert_fixture_pixels(
    model: &regionseek::clip::ClipModel,
    masks: &[regionseek::masks::BinaryMask],
    cfg: &regionseek::invert::InversionConfig,
) -> regionseek::invert::InversionOutput {
    let pixels = expected()["pixels"].unsqueeze(0).unwrap();
    regionseek::invert::invert_pixels(
        model,
        &pixels,
        80,
        60,
        masks,
        cfg,
        std::time::Instant::now(),
    )
    .unwrap()
}
pub mod readme;

/// Four photos written with hand-built EXIF (as a camera writes it) into `dir`, by file name:
/// `paris.jpg` (Canon EOS R5, 2024-05-01 14:03 +02:00, Paris), `newyork.jpg` (Nikon D850,
/// 2023-12-24 20:00 -05:00, so 2023-12-25 01:00 UTC, New York), `phone.jpg` (Apple iPhone 15, only the file's
/// DateTime 2024-07-14 10:00 without an offset, no GPS) and `bare.jpg` (no EXIF).
pub fn exif_photos(dir: &Path) {
    use regionseek::decode::exif::build::{exif_block, with_exif, Tags};
    std::fs::create_dir_all(dir).unwrap();
    let mut shipped: Vec<PathBuf> = std::fs::read_dir(root().join("examples/photos"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .collect();
    shipped.sort();
    let photos = [
        (
            "paris.jpg",
            Some(Tags {
                make: Some("Canon"),
                model: Some("Canon EOS R5"),
                date_time_original: Some("2024:05:01 14:03:00"),
                offset_time_original: Some("+02:00"),
                gps: Some([48.8566, 2.3522]),
                ..Default::default()
            }),
        ),
        (
            "newyork.jpg",
            Some(Tags {
                make: Some("NIKON CORPORATION"),
                model: Some("NIKON D850"),
                date_time_original: Some("2023:12:24 20:00:00"),
                offset_time_original: Some("-05:00"),
                gps: Some([40.7128, -74.0060]),
                ..Default::default()
            }),
        ),
        (
            "phone.jpg",
            Some(Tags {
                make: Some("Apple"),
                model: Some("iPhone 15"),
                date_time: Some("2024:07:14 10:00:00"),
                ..Default::default()
            }),
        ),
        ("bare.jpg", None),
    ];
    for ((name, tags), from) in photos.iter().zip(&shipped) {
        let jpeg = std::fs::read(from).unwrap();
        let bytes = match tags {
            Some(t) => with_exif(&jpeg, &exif_block(t)),
            None => jpeg,
        };
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

/// Debian's chromium, or None (with a SKIP line) where it is not installed.
pub fn chromium() -> Option<PathBuf> {
    let found = ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .map(|c| Path::new("/usr/bin").join(c))
        .find(|p| p.is_file());
    if found.is_none() {
        eprintln!("SKIP: no chromium in /usr/bin (Debian package chromium; .ci/run installs it)");
    }
    found
}

/// Headless Chromium with a throwaway profile, given virtual time to run the page's script.
pub fn chromium_command(browser: &Path, profile: &Path) -> Command {
    let mut c = Command::new(browser);
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--virtual-time-budget=30000",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .stdin(Stdio::null());
    c
}
