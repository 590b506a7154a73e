//! The real binary against what users do to it: forged and truncated photos, two `index` runs on one
//! index, and every read command on empty, missing, orphaned and damaged indexes. Photos are made here
//! (small synthetic JPEGs), so nothing needs the shared data.

use crate::common;

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_regionseek"))
}

fn run(args: &[&str]) -> (i32, String, String) {
    common::run_regionseek(args)
}

fn outcome(out: Output) -> (i32, String, String) {
    common::command_outcome(out)
}

fn json(stdout: &str) -> Value {
    common::last_json(stdout)
}

fn jpeg(w: u32, h: u32, seed: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([
            ((x * 7 + seed * 13) % 256) as u8,
            ((y * 5 + seed * 29) % 256) as u8,
            ((x ^ y ^ seed) % 256) as u8,
        ])
    });
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
    out.into_inner()
}

/// A valid JPEG whose frame header claims 65535×65535 (4.3 gigapixels): decoding it naively allocates
/// 12.9 GB.
fn forged_jpeg() -> Vec<u8> {
    let mut b = jpeg(64, 48, 1);
    let sof = (0..b.len() - 1)
        .find(|&i| b[i] == 0xFF && b[i + 1] == 0xC0)
        .expect("baseline frame header");
    // FF C0, length (2), precision (1), height (2), width (2).
    b[sof + 5..sof + 9].copy_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF]);
    b
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let mut h = crc32fast::Hasher::new();
    h.update(kind);
    h.update(data);
    out.extend_from_slice(&h.finalize().to_be_bytes());
}

/// A PNG declaring 30000×30000 RGB (900 megapixels) with a valid header and little data.
fn bomb_png() -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&30000u32.to_be_bytes());
    ihdr.extend_from_slice(&30000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    png_chunk(&mut out, b"IHDR", &ihdr);
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut z, &vec![0u8; 1 << 20]).unwrap();
    png_chunk(&mut out, b"IDAT", &z.finish().unwrap());
    png_chunk(&mut out, b"IEND", &[]);
    out
}

struct Corpus {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    images: PathBuf,
    spec: PathBuf,
}

impl Corpus {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let images = root.join("photos");
        std::fs::create_dir_all(&images).unwrap();
        let spec = root.join("fast.toml");
        // The cheapest real pipeline: each box as its mask, the crop baseline, small batches.
        std::fs::write(
            &spec,
            "name = \"fast\"\nstages = [\"decode\", \"box-mask\", \"embed\", \"index\"]\n\
             [embed]\nmethod = \"crop\"\n[index]\nbatch_images = 2\n",
        )
        .unwrap();
        Self {
            _tmp: tmp,
            root,
            images,
            spec,
        }
    }

    fn photo(&self, name: &str, bytes: &[u8]) {
        std::fs::write(self.images.join(name), bytes).unwrap();
    }

    /// A boxes file with one box per photo.
    fn boxes(&self, file: &str, photos: &[String]) -> PathBuf {
        let entries: Vec<Value> = photos
            .iter()
            .map(|p| serde_json::json!({"image": p, "box": [4, 4, 40, 30], "id": "r0", "label": "thing"}))
            .collect();
        let path = self.root.join(file);
        std::fs::write(&path, serde_json::to_string(&entries).unwrap()).unwrap();
        path
    }

    fn index_args(&self, boxes: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = [
            "index",
            self.images.to_str().unwrap(),
            "--boxes",
            boxes.to_str().unwrap(),
            "--pipeline",
            self.spec.to_str().unwrap(),
            "--model",
            "random:vit-b-32",
            "--out",
            out.to_str().unwrap(),
            "--json",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    }

    fn index(&self, boxes: &Path, out: &Path, extra: &[&str]) -> (i32, String, String) {
        let a = self.index_args(boxes, out, extra);
        run(&a.iter().map(String::as_str).collect::<Vec<_>>())
    }
}

fn rows(index: &Path) -> u64 {
    let (code, out, err) = run(&["verify", index.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    json(&out)["rows"].as_u64().unwrap()
}

#[test]
fn forged_bomb_and_truncated_photos_fail_on_their_own_with_bounded_memory() {
    let c = Corpus::new();
    c.photo("good.jpg", &jpeg(64, 48, 2));
    c.photo("forged.jpg", &forged_jpeg());
    c.photo("bomb.png", &bomb_png());
    let whole = jpeg(320, 240, 3);
    c.photo("truncated.jpg", &whole[..whole.len() * 4 / 10]);
    let names: Vec<String> = ["good.jpg", "forged.jpg", "bomb.png", "truncated.jpg"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let boxes = c.boxes("boxes.json", &names);
    let out = c.root.join("idx");
    // A virtual-memory cap: if a header ever reached the allocator again, this run fails fast instead of
    // taking the machine down.
    let args = c.index_args(&boxes, &out, &[]);
    let script = format!(
        "ulimit -v 8000000; exec \"$0\" {}",
        args.iter()
            .map(|a| format!("'{a}'"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let (code, stdout, stderr) = outcome(
        Command::new("bash")
            .args(["-c", &script, env!("CARGO_BIN_EXE_regionseek")])
            .output()
            .unwrap(),
    );
    assert_eq!(code, 2, "per-photo failures exit 2: {stderr}");
    let r = json(&stdout);
    assert_eq!(r["regions_added"], 1, "{r}");
    assert_eq!(r["failures"], 3, "{r}");
    let peak = r["peak_rss_mb"].as_f64().unwrap();
    assert!(peak < 1024.0, "peak RSS {peak} MB");
    let log: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("errors.json")).unwrap()).unwrap();
    let failures = log["failures"].as_array().unwrap();
    let why = |name: &str| -> String {
        failures
            .iter()
            .find(|f| f["image"] == name)
            .unwrap_or_else(|| panic!("{name} not in {log}"))["error"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(
        why("forged.jpg").contains("65535x65535"),
        "{}",
        why("forged.jpg")
    );
    assert!(why("forged.jpg").contains("over the limit"));
    assert!(
        why("bomb.png").contains("30000x30000"),
        "{}",
        why("bomb.png")
    );
    assert!(
        why("truncated.jpg").contains("truncated"),
        "{}",
        why("truncated.jpg")
    );
    for f in failures {
        let e = f["error"].as_str().unwrap();
        assert_eq!(e, e.trim(), "no stray whitespace in messages");
    }

    // The one-photo commands share the decoder and its limits.
    let forged = c.images.join("forged.jpg");
    let (code, _, err) = run(&[
        "sam",
        forged.to_str().unwrap(),
        "--box",
        "0,0,10,10",
        "--mask-from",
        "box",
        "--out",
        c.root.join("sam").to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("over the limit"), "{err}");
}

#[test]
fn two_index_runs_on_one_index_refuse_or_wait_and_keep_every_row() {
    let c = Corpus::new();
    let names: Vec<String> = (0..8).map(|i| format!("p{i}.jpg")).collect();
    for (i, n) in names.iter().enumerate() {
        c.photo(n, &jpeg(64, 48, 10 + i as u32));
    }
    let first = c.boxes("first.json", &names[..4]);
    let second = c.boxes("second.json", &names[4..]);
    let out = c.root.join("idx");
    let args = c.index_args(&first, &out, &[]);
    let mut a = bin().args(&args).spawn().unwrap();
    // Once the first run holds the lock (it takes it before loading its model), a second is refused at
    // once, naming the holder.
    let lock = out.join("writer.lock");
    let started = Instant::now();
    while !std::fs::read_to_string(&lock).is_ok_and(|t| t.contains("pid"))
        && started.elapsed() < Duration::from_secs(30)
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    let (code, _, err) = c.index(&second, &out, &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("is being written by another process"), "{err}");
    assert!(err.contains(&format!("pid {}", a.id())), "{err}");
    // With --wait the second run starts when the first is done. (Its boxes file lists other photos than the
    // first's: --no-delete keeps the first's rows, which a rerun would otherwise sync away as gone.)
    let b = bin()
        .args(c.index_args(&second, &out, &["--wait", "--no-delete"]))
        .output()
        .unwrap();
    assert!(a.wait().unwrap().success());
    let (code, _, err) = outcome(b);
    assert_eq!(code, 0, "{err}");
    assert_eq!(rows(&out), 8, "the union of both runs");
}

#[test]
fn every_read_command_on_empty_missing_orphaned_and_damaged_indexes_answers_without_panicking() {
    let c = Corpus::new();
    let names: Vec<String> = (0..4).map(|i| format!("p{i}.jpg")).collect();
    for (i, n) in names.iter().enumerate() {
        c.photo(n, &jpeg(64, 48, 30 + i as u32));
    }
    let boxes = c.boxes("boxes.json", &names);
    let s = |p: &Path| p.to_str().unwrap().to_string();

    // Empty: a run with --limit 0 creates the index with no rows.
    let empty = c.root.join("empty");
    assert_eq!(c.index(&boxes, &empty, &["--limit", "0"]).0, 0);
    let (code, out, err) = run(&["search", &s(&empty), "a dog", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)["hits"].as_array().unwrap().len(), 0);
    assert_eq!(run(&["verify", &s(&empty)]).0, 0);
    assert_eq!(run(&["index-repair", &s(&empty)]).0, 0);

    // Missing.
    let missing = c.root.join("missing");
    let (code, _, err) = run(&["search", &s(&missing), "a dog"]);
    assert_eq!(code, 1);
    assert!(err.contains("no index at"), "{err}");
    assert_eq!(run(&["verify", &s(&missing)]).0, 1);
    assert_eq!(run(&["index-repair", &s(&missing)]).0, 1);

    // A real one, then filters that keep nothing and an over-long query.
    let good = c.root.join("good");
    assert_eq!(c.index(&boxes, &good, &[]).0, 0);
    let (code, _, err) = run(&["search", &s(&good), "a dog", "--image", "nonexist.jpg"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("no photo \"nonexist.jpg\" is indexed"),
        "{err}"
    );
    let (code, _, err) = run(&["search", &s(&good), "a dog", "--method", "bogus"]);
    assert_eq!(code, 1);
    assert!(err.contains("(the index holds: crop)"), "{err}");
    let long = "a dog ".repeat(2000);
    let (code, out, err) = run(&["search", &s(&good), &long, "--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)["truncated"], true);
    assert!(err.contains("tokens"), "{err}");
    for (flags, mode) in [(vec!["--exact"], "exact"), (vec!["--ef", "40"], "hnsw")] {
        let mut a = vec!["search", good.to_str().unwrap(), "a dog", "--json"];
        a.extend(flags);
        let (code, out, err) = run(&a);
        assert_eq!(code, 0, "{err}");
        let r = json(&out);
        assert_eq!(r["mode"], mode);
        assert_eq!(r["hits"].as_array().unwrap().len(), 4);
    }

    // Orphaned: the manifest is gone. Nothing may delete the segments; repair brings every row back.
    let orphan = c.root.join("orphan");
    let copy = |from: &Path, to: &Path| {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            if e.path().is_file() {
                std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
            }
        }
    };
    copy(&good, &orphan);
    std::fs::remove_file(orphan.join("manifest.json")).unwrap();
    let segments = |d: &Path| {
        std::fs::read_dir(d)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("regions-")
            })
            .count()
    };
    let before = segments(&orphan);
    let (code, _, err) = run(&["search", &s(&orphan), "a dog"]);
    assert_eq!(code, 1);
    assert!(err.contains("index-repair"), "{err}");
    let (code, _, err) = c.index(&boxes, &orphan, &[]);
    assert_eq!(code, 1);
    assert!(err.contains("index-repair"), "{err}");
    assert_eq!(segments(&orphan), before, "index deleted nothing");
    assert_eq!(run(&["verify", &s(&orphan)]).0, 1);
    let (code, out, err) = run(&["index-repair", &s(&orphan), "--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)["rows"], 4);
    assert_eq!(rows(&orphan), 4);

    // Damaged: a segment cut short. Reads name the file; repair quarantines it and a rerun re-adds.
    let damaged = c.root.join("damaged");
    copy(&good, &damaged);
    let victim = std::fs::read_dir(&damaged)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("regions-")
        })
        .unwrap();
    let bytes = std::fs::read(&victim).unwrap();
    std::fs::write(&victim, &bytes[..bytes.len() / 2]).unwrap();
    let (code, _, err) = run(&["search", &s(&damaged), "a dog"]);
    assert_eq!(code, 1);
    assert!(
        err.contains(victim.file_name().unwrap().to_str().unwrap()),
        "{err}"
    );
    // The message says what to run about it.
    assert!(err.contains("regionseek index-repair"), "{err}");
    assert_eq!(run(&["verify", &s(&damaged)]).0, 1);
    let (code, out, err) = run(&["index-repair", &s(&damaged), "--json"]);
    assert_eq!(code, 0, "{err}");
    let r = json(&out);
    assert!(r["rows_lost"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(c.index(&boxes, &damaged, &[]).0, 0);
    assert_eq!(rows(&damaged), 4);
}

/// `regionseek compact` on an index with deleted rows: rows before and after, the rows removed; a second run
/// has nothing to do; a held writer lock is refused with the --wait hint.
#[test]
fn compact_removes_deleted_rows_and_says_how_many() {
    use regionseek::index::{
        CocoRle, HnswParams, IndexSpec, IndexWriter, MethodInfo, RegionIndex, RegionMeta,
        RegionRecord,
    };
    let dir = tempfile::tempdir().unwrap();
    let index = dir.path().join("index");
    let spec = IndexSpec {
        dim: 8,
        model_id: "random:tiny".into(),
        weights_hash: "abc".into(),
        hnsw: HnswParams::default(),
    };
    let record = |i: usize| RegionRecord {
        meta: RegionMeta {
            image: format!("img{i}.jpg"),
            image_hash: format!("hash{i}"),
            region_id: "0".into(),
            bbox: [0.0, 0.0, 1.0, 1.0],
            mask: CocoRle {
                size: [1, 1],
                counts: "1".into(),
            },
            source: "gt".into(),
            method: MethodInfo {
                name: "crop".into(),
                steps: None,
                lr: None,
                alpha: None,
                resolution: None,
                model_id: "random:tiny".into(),
                weights_hash: "abc".into(),
            },
            label: None,
            created_at_ms: 0,
            exif_rotated: false,
            photo: Default::default(),
        },
        embedding: (0..8)
            .map(|k| ((i * 7 + k * 3) % 11) as f32 + 0.5)
            .collect(),
    };
    let mut w = IndexWriter::create(&index, &spec).unwrap();
    w.append((0..100).map(record).collect()).unwrap();
    w.set_compact_threshold(1.0);
    w.delete_rows(&(0..100).step_by(4).collect::<Vec<u64>>())
        .unwrap();
    let s = index.to_str().unwrap();
    let (code, _, err) = run(&["compact", s]);
    assert_eq!(code, 1, "the writer still holds the lock");
    assert!(err.contains("--wait"), "{err}");
    drop(w);

    let (code, out, err) = run(&["compact", s, "--json"]);
    assert_eq!(code, 0, "{err}");
    let report = &json(&out)["report"];
    assert_eq!(report["rows_before"], 100);
    assert_eq!(report["rows_after"], 75);
    assert_eq!(report["removed"], 25);
    assert_eq!(RegionIndex::open(&index).unwrap().len(), 75);
    let (code, out, _) = run(&["compact", s]);
    assert_eq!(code, 0);
    assert!(out.contains("nothing to compact"), "{out}");
}
