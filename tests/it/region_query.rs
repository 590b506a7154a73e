//! Query by example region: an indexed region asked again with its own box or mask finds itself first,
//! through the CLI and over HTTP (uploaded or as a row of the index), embedded with the settings the index
//! recorded (not the defaults); bad uploads are refused in words and the server stays up.

use crate::common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use common::*;
use regionseek::masks::BinaryMask;
use serde_json::Value;

/// Boxes on two of the shipped photos, inverted at settings other than the defaults (224 px, 4 steps, lr
/// 0.3): a query embedded with the defaults would not find its region at score 1.
struct Fixture {
    photos: PathBuf,
    index: PathBuf,
    dir: PathBuf,
}

const BOXES: [(&str, [f32; 4]); 4] = [
    ("000000000194.jpg", [183.0, 69.0, 366.0, 137.0]),
    ("000000000194.jpg", [20.0, 200.0, 300.0, 470.0]),
    ("000000000450.jpg", [400.0, 100.0, 600.0, 400.0]),
    ("000000000450.jpg", [0.0, 0.0, 320.0, 240.0]),
];

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("region-query-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let photos = root().join("examples/photos");
        let boxes: Vec<Value> = BOXES
            .iter()
            .enumerate()
            .map(|(i, (image, b))| serde_json::json!({"image": image, "box": b, "id": format!("b{i}")}))
            .collect();
        let boxes_file = dir.join("boxes.json");
        std::fs::write(&boxes_file, serde_json::to_vec(&boxes).unwrap()).unwrap();
        let spec = dir.join("boxes-224.toml");
        std::fs::write(
            &spec,
            "name = \"boxes-224\"\nstages = [\"decode\", \"box-mask\", \"invert\", \"index\"]\n\
             [invert]\nsize = 224\nsteps = 4\nlr = 0.3\nalpha = 0.0\n",
        )
        .unwrap();
        let index = dir.join("idx");
        let (code, _, err) = run_regionseek(&[
            "index",
            photos.to_str().unwrap(),
            "--boxes",
            boxes_file.to_str().unwrap(),
            "--pipeline",
            spec.to_str().unwrap(),
            "--model",
            "random:vit-b-32",
            "--out",
            index.to_str().unwrap(),
            "--json",
        ]);
        assert_eq!(code, 0, "{err}");
        Fixture { photos, index, dir }
    })
}

/// `regionseek search INDEX --like-image ... --json` with extra arguments: its JSON, or (code, stderr).
fn like(args: &[&str]) -> Result<Value, (i32, String)> {
    let f = fixture();
    let mut all = vec!["search", f.index.to_str().unwrap(), "--json", "--k", "3"];
    all.extend_from_slice(args);
    let (code, out, err) = run_regionseek(&all);
    if code != 0 {
        return Err((code, err));
    }
    Ok(last_json(&out))
}

fn assert_finds_itself(answer: &Value, image: &str, region_id: &str) {
    let top = &answer["hits"][0];
    assert_eq!(top["image"], image, "{answer}");
    assert_eq!(top["region_id"], region_id, "{answer}");
    let score = top["score"].as_f64().unwrap();
    assert!(score > 0.9999, "self-match scored {score}");
    // The next one is another region, well below.
    assert!(answer["hits"][1]["score"].as_f64().unwrap() < score);
}

fn box_text(b: [f32; 4]) -> String {
    format!("{},{},{},{}", b[0], b[1], b[2], b[3])
}

#[test]
fn an_indexed_region_asked_with_its_own_box_or_mask_finds_itself_first_through_the_cli() {
    let f = fixture();
    for (i, (image, b)) in BOXES.iter().enumerate() {
        let photo = f.photos.join(image);
        let answer = like(&[
            "--like-image",
            photo.to_str().unwrap(),
            "--box",
            &box_text(*b),
        ])
        .unwrap();
        assert_finds_itself(&answer, image, &format!("b{i}"));
        assert_eq!(answer["region"]["method"], "maskinversion");
        assert_eq!(answer["region"]["box"], serde_json::json!(b));
    }
    // The same region as a mask PNG.
    let (image, b) = BOXES[2];
    let mask = BinaryMask::from_box(640, 480, b[0] as f64, b[1] as f64, b[2] as f64, b[3] as f64);
    let mask_file = f.dir.join("b2.png");
    mask.save_png(&mask_file).unwrap();
    let photo = f.photos.join(image);
    let answer = like(&[
        "--like-image",
        photo.to_str().unwrap(),
        "--mask",
        mask_file.to_str().unwrap(),
    ])
    .unwrap();
    assert_finds_itself(&answer, image, "b2");

    // Texts mixed in move the query away from the region alone.
    let with_text = like(&[
        "--like-image",
        photo.to_str().unwrap(),
        "--mask",
        mask_file.to_str().unwrap(),
        "--text",
        "2:a red bus",
    ])
    .unwrap();
    assert!(with_text["hits"][0]["score"].as_f64().unwrap() < 0.99);
    assert_eq!(
        with_text["region"]["texts"],
        serde_json::json!([["a red bus", 2.0]])
    );

    // Without a region: the whole photo.
    let whole = like(&["--like-image", photo.to_str().unwrap()]).unwrap();
    assert_eq!(whole["region"]["method"], "image");
    assert_eq!(
        whole["region"]["box"],
        serde_json::json!([0.0, 0.0, 640.0, 480.0])
    );

    // Refusals in words.
    let cases: [(&[&str], &str); 4] = [
        (&["--box", "0,0,700,10"], "is not inside the 640x480 photo"),
        (&["--box", "1,2,3"], "a box is four numbers"),
        (&["--mask", "README.md"], "the mask"),
        (
            &["--text", "1e20:red"],
            "weight must be a number from -100 to 100",
        ),
    ];
    for (extra, says) in cases {
        let mut args = vec!["--like-image", photo.to_str().unwrap()];
        let readme = root().join("README.md");
        let extra: Vec<&str> = extra
            .iter()
            .map(|a| {
                if *a == "README.md" {
                    readme.to_str().unwrap()
                } else {
                    a
                }
            })
            .collect();
        args.extend(extra.iter().copied());
        let (code, err) = like(&args).unwrap_err();
        assert_ne!(code, 0);
        assert!(err.contains(says), "{err:?} should say {says:?}");
    }
    let readme = root().join("README.md");
    let (_, err) = like(&["--like-image", readme.to_str().unwrap()]).unwrap_err();
    assert!(err.contains("not a photo"), "{err}");
}

/// A running server; killed when dropped.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(index: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_regionseek"))
            .arg("serve")
            .arg(index)
            .args(["--addr", "127.0.0.1:0", "--json"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let v: Value = serde_json::from_str(&line).expect("a JSON line with the address");
        Server {
            child,
            addr: v["listening"]["addr"].as_str().unwrap().to_string(),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const BOUNDARY: &str = "regionseek-test-boundary";

/// A multipart/form-data body: files as (name, bytes), fields as (name, text).
fn form(files: &[(&str, &[u8])], fields: &[(&str, &str)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, bytes) in files {
        body.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{name}.bin\"\r\n\
                 Content-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    for (name, text) in fields {
        body.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{text}\r\n"
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

fn post_form(addr: &str, target: &str, body: &[u8]) -> HttpResponse {
    let content_type = format!("multipart/form-data; boundary={BOUNDARY}");
    http_raw(
        addr,
        "POST",
        target.as_bytes(),
        &[("Content-Type", content_type.as_str())],
        body,
    )
}

fn refused(r: &HttpResponse, status: u16, says: &str) {
    assert_eq!(r.status, status, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["status"], status);
    let message = v["error"].as_str().unwrap();
    assert!(message.contains(says), "{message:?} should say {says:?}");
}

#[test]
fn the_region_endpoint_finds_an_uploaded_or_indexed_region_and_refuses_bad_uploads_in_words() {
    let f = fixture();
    let server = Server::start(
        &f.index,
        &[
            "--images",
            f.photos.to_str().unwrap(),
            "--max-upload-mb",
            "1",
        ],
    );
    let addr = server.addr.as_str();
    let (image, b) = BOXES[0];
    let photo = std::fs::read(f.photos.join(image)).unwrap();

    // An upload with a box (as a form field), and the same with the box in the query string.
    let r = post_form(
        addr,
        "/api/search/region?k=3",
        &form(&[("image", &photo)], &[("box", &box_text(b))]),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_finds_itself(&r.json(), image, "b0");
    let r = post_form(
        addr,
        &format!("/api/search/region?k=3&box={}", box_text(b)),
        &form(&[("image", &photo)], &[]),
    );
    assert_finds_itself(&r.json(), image, "b0");

    // A mask upload.
    let mask = BinaryMask::from_box(640, 480, b[0] as f64, b[1] as f64, b[2] as f64, b[3] as f64);
    let png = mask.to_png().unwrap();
    let r = post_form(
        addr,
        "/api/search/region?k=3",
        &form(&[("image", &photo), ("mask", &png)], &[]),
    );
    assert_finds_itself(&r.json(), image, "b0");

    // A photo already in the index: its row, no upload.
    let row = r.json()["hits"][0]["row"].as_u64().unwrap();
    let r = http_raw(
        addr,
        "POST",
        format!("/api/search/region?k=3&row={row}&box={}", box_text(b)).as_bytes(),
        &[],
        b"",
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_finds_itself(&v, image, "b0");
    assert_eq!(v["photo"], image);

    // Bad uploads and parameters: 4xx in words, and the server keeps answering.
    let bomb = {
        // A PNG whose header declares 100000 x 100000 pixels.
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
        png.extend_from_slice(&100_000u32.to_be_bytes());
        png.extend_from_slice(&100_000u32.to_be_bytes());
        png.extend_from_slice(&[8, 2, 0, 0, 0]);
        let crc = crc32(&png[12..]);
        png.extend_from_slice(&crc.to_be_bytes());
        // A first scrap of image data and the end, as a real bomb would have (its rows inflate from little).
        for (kind, data) in [
            (
                &b"IDAT"[..],
                &[0x78u8, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01][..],
            ),
            (b"IEND", &[]),
        ] {
            png.extend_from_slice(&(data.len() as u32).to_be_bytes());
            let start = png.len();
            png.extend_from_slice(kind);
            png.extend_from_slice(data);
            let crc = crc32(&png[start..]);
            png.extend_from_slice(&crc.to_be_bytes());
        }
        png
    };
    let small_mask = BinaryMask::from_box(64, 48, 0.0, 0.0, 10.0, 10.0)
        .to_png()
        .unwrap();
    let empty_mask = BinaryMask::zeros(640, 480).to_png().unwrap();
    let huge = vec![b'x'; 2 << 20];
    let cases: Vec<(Vec<u8>, &str, u16, &str)> = vec![
        (
            form(&[("image", b"not a photo")], &[]),
            "",
            400,
            "the uploaded photo",
        ),
        (form(&[("image", &bomb)], &[]), "", 400, "over the limit"),
        (
            form(&[("image", &photo)], &[("box", "0,0,641,10")]),
            "",
            400,
            "not inside the 640x480 photo",
        ),
        (
            form(&[("image", &photo)], &[("box", "a,b")]),
            "",
            400,
            "four numbers",
        ),
        (
            form(&[("image", &photo), ("mask", &empty_mask)], &[]),
            "",
            400,
            "the mask",
        ),
        (
            form(&[("image", &photo), ("mask", &small_mask)], &[]),
            "",
            400,
            "a mask must have the photo's size",
        ),
        (
            form(&[("image", &photo), ("mask", b"GIF89a")], &[]),
            "",
            400,
            "a mask must be a PNG",
        ),
        (
            form(&[("image", &photo)], &[("point", "5,5")]),
            "",
            400,
            "needs a SAM model",
        ),
        (
            form(
                &[("image", &photo)],
                &[("box", "1,1,5,5"), ("point", "5,5")],
            ),
            "",
            400,
            "give one region",
        ),
        (
            form(&[("image", &photo)], &[("colour", "red")]),
            "",
            400,
            "unknown parameter \"colour\"",
        ),
        (
            form(&[("image", &photo)], &[("k", "1"), ("k", "2")]),
            "",
            400,
            "given twice",
        ),
        (form(&[], &[("box", "1,1,5,5")]), "", 400, "no photo"),
        (form(&[("image", &photo)], &[]), "row=0&", 400, "not both"),
        (
            form(&[("image", &huge)], &[]),
            "",
            413,
            "serve --max-upload-mb",
        ),
        (
            form(&[("image", &photo)], &[]),
            "k=100000&",
            400,
            "k must be",
        ),
        (
            form(&[("image", &photo)], &[("text", "1e20:red")]),
            "",
            400,
            "a number from -100 to 100",
        ),
        (
            form(&[("image", &photo)], &[("text", "red"); 17]),
            "",
            400,
            "at most 16",
        ),
    ];
    for (body, query, status, says) in cases {
        let r = post_form(addr, &format!("/api/search/region?{query}"), &body);
        refused(&r, status, says);
    }
    let r = http_raw(addr, "POST", b"/api/search/region?row=999999", &[], b"");
    refused(&r, 404, "no row 999999");
    let r = http_get(addr, "/api/search/region");
    assert_eq!(r.status, 405);
    assert_eq!(http_get(addr, "/healthz").status, 200);
    let r = post_form(
        addr,
        "/api/search/region?k=1",
        &form(&[("image", &photo)], &[("box", &box_text(b))]),
    );
    assert_eq!(r.status, 200, "the server answers after the bad requests");
}

/// PNG's CRC-32 of a chunk's type and data.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn the_page_draws_the_region_of_an_indexed_photo_and_shows_the_regions_like_it() {
    let Some(browser) = chromium() else { return };
    let f = fixture();
    let server = Server::start(&f.index, &["--images", f.photos.to_str().unwrap()]);
    let (image, b) = BOXES[3];
    let answer = post_form(
        &server.addr,
        "/api/search/region?k=6",
        &form(
            &[("image", &std::fs::read(f.photos.join(image)).unwrap())],
            &[("box", &box_text(b))],
        ),
    )
    .json();
    let row = answer["hits"][0]["row"].as_u64().unwrap();
    let profile = tempfile::tempdir().unwrap();
    let url = format!(
        "http://{}/?region_row={row}&box={}&k=6",
        server.addr,
        box_text(b)
    );
    let out = chromium_command(&browser, profile.path())
        .arg("--dump-dom")
        .arg(&url)
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        dom.contains("data-state=\"done\""),
        "the search did not finish: {dom}"
    );
    let cards: Vec<u64> = dom
        .split("<article class=\"hit\" data-row=\"")
        .skip(1)
        .map(|c| c[..c.find('"').unwrap()].parse().unwrap())
        .collect();
    let api_rows: Vec<u64> = answer["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["row"].as_u64().unwrap())
        .collect();
    assert_eq!(
        cards, api_rows,
        "the page shows the API's hits in order: {dom}"
    );
    assert!(dom.contains("regions like the region of"), "{dom}");
    // The query photo is shown above the hits, with the region drawn (a canvas of the photo's shape).
    assert!(!dom.contains("<section id=\"region\" hidden"), "{dom}");
    assert!(dom.contains("id=\"region-canvas\" width=\""), "{dom}");

    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("page-region-search.png");
    let _ = std::fs::remove_file(&shot);
    chromium_command(&browser, profile.path())
        .arg(format!("--screenshot={}", shot.display()))
        .arg("--window-size=1280,1000")
        .arg(&url)
        .output()
        .unwrap();
    assert!(shot.is_file(), "no screenshot");
    eprintln!("screenshot of the page: {}", shot.display());
}

#[test]
fn a_click_becomes_sams_region_and_is_searched_like_a_drawn_one() {
    if let Err(e) = regionseek::sam::library_path() {
        eprintln!("SKIP: {e}");
        return;
    }
    let sam = root().join("tests/fixtures/sam");
    let f = fixture();
    let (image, b) = BOXES[2];
    let photo = f.photos.join(image);
    let point = format!("{},{}", (b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0);
    let answer = like(&[
        "--like-image",
        photo.to_str().unwrap(),
        "--point",
        &point,
        "--sam",
        sam.to_str().unwrap(),
    ])
    .unwrap();
    // SAM's mask (whatever the tiny random SAM makes of the click) is the region searched, and is reported.
    let rle = &answer["region"]["mask_rle"];
    assert_eq!(rle["size"], serde_json::json!([480, 640]), "{answer}");
    assert_eq!(answer["region"]["method"], "maskinversion");
    assert_eq!(answer["hits"].as_array().unwrap().len(), 3);
    // Without SAM a point is refused in words, before any model is loaded.
    let (code, err) =
        like(&["--like-image", photo.to_str().unwrap(), "--point", &point]).unwrap_err();
    assert_ne!(code, 0);
    assert!(err.contains("--sam"), "{err}");
}
