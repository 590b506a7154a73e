//! What users do to an index: two writers at once, readers during writes, a lost manifest, damaged
//! segments and graphs, searching before anything was committed.

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use regionseek_index::{
    repair, verify, CocoRle, Filter, HnswParams, IndexError, IndexSpec, IndexWriter, LockWait,
    MethodInfo, RegionIndex, RegionMeta, RegionRecord, SearchMode,
};

const DIM: usize = 16;
/// Batch size of the writers here: a reader that ever sees a row count that is not a multiple of it has
/// seen half a commit.
const BATCH: usize = 10;

fn spec() -> IndexSpec {
    IndexSpec {
        dim: DIM,
        model_id: "random:tiny".into(),
        weights_hash: "abc123".into(),
        hnsw: HnswParams::default(),
    }
}

fn record(i: usize) -> RegionRecord {
    let embedding: Vec<f32> = (0..DIM)
        .map(|k| {
            (((i * 31 + k * 17) % 23) as f32 - 11.0) * 0.1 + if k == i % DIM { 2.0 } else { 0.0 }
        })
        .collect();
    RegionRecord {
        meta: RegionMeta {
            image: format!("img{}.jpg", i / 5),
            image_hash: format!("hash{}", i / 5),
            region_id: format!("{}", i % 5),
            bbox: [0.0, 0.0, 10.0, 10.0],
            mask: CocoRle {
                size: [4, 5],
                counts: "5:e2".into(),
            },
            source: "gt".into(),
            method: MethodInfo {
                name: "maskinversion".into(),
                steps: Some(10),
                lr: Some(0.5),
                alpha: Some(0.0),
                resolution: Some(448),
                model_id: "random:tiny".into(),
                weights_hash: "abc123".into(),
            },
            label: Some(format!("class{}", i % 3)),
            created_at_ms: 1_700_000_000_000,
            exif_rotated: false,
            photo: Default::default(),
        },
        embedding,
    }
}

fn write_range(index: &mut IndexWriter, from: usize, to: usize, pause: Duration) {
    for start in (from..to).step_by(BATCH) {
        index
            .append((start..(start + BATCH).min(to)).map(record).collect())
            .unwrap();
        if (start / BATCH) % 7 == 6 {
            index.save_graph().unwrap();
        }
        std::thread::sleep(pause);
    }
    index.save_graph().unwrap();
}

/// The child half of the two-writer test: writes records FROM..TO, exits 3 when refused the lock.
#[test]
fn concurrent_child_writer() {
    let Some(dir) = std::env::var_os("REGIONSEEK_WRITER_DIR") else {
        return;
    };
    let range: Vec<usize> = std::env::var("REGIONSEEK_WRITER_RANGE")
        .unwrap()
        .split('-')
        .map(|x| x.parse().unwrap())
        .collect();
    let wait = if std::env::var_os("REGIONSEEK_WRITER_WAIT").is_some() {
        LockWait::Forever
    } else {
        LockWait::No
    };
    match IndexWriter::open_or_create(Path::new(&dir), &spec(), wait) {
        Ok(mut index) => write_range(&mut index, range[0], range[1], Duration::from_millis(2)),
        Err(IndexError::Locked { holder, .. }) => {
            println!("LOCKED by {holder}");
            std::process::exit(3);
        }
        Err(e) => panic!("{e}"),
    }
}

fn spawn_writer(dir: &Path, from: usize, to: usize, wait: bool) -> std::process::Child {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args([
        "--exact",
        "concurrent_child_writer",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("REGIONSEEK_WRITER_DIR", dir)
    .env("REGIONSEEK_WRITER_RANGE", format!("{from}-{to}"))
    .stdout(std::process::Stdio::piped());
    if wait {
        c.env("REGIONSEEK_WRITER_WAIT", "1");
    }
    c.spawn().unwrap()
}

fn assert_exactly(dir: &Path, want: usize) {
    let index = RegionIndex::open(dir).unwrap();
    let keys: HashSet<_> = index.rows().iter().map(|m| m.key()).collect();
    assert_eq!(index.len(), want, "rows");
    assert_eq!(keys.len(), want, "no duplicates");
    let v = verify(dir).unwrap();
    assert!(v.ok, "{v:?}");
}

#[test]
fn two_writers_at_once_never_lose_or_corrupt_rows() {
    let (half, total) = (200, 400);
    let mut refused = 0;
    let mut waited = 0;
    for trial in 0..20u64 {
        let dir = tempfile::tempdir().unwrap();
        // Odd trials: the second writer waits; even: it is refused and run again afterwards, as a user would.
        let wait = trial % 2 == 1;
        let mut a = spawn_writer(dir.path(), 0, half, false);
        std::thread::sleep(Duration::from_millis(trial * 7 % 60));
        let b = spawn_writer(dir.path(), half, total, wait);
        let (ra, rb) = (a.wait().unwrap(), b.wait_with_output().unwrap());
        assert!(ra.success() || ra.code() == Some(3), "writer A: {ra:?}");
        match rb.status.code() {
            Some(0) if wait => waited += 1,
            Some(0) => {}
            Some(3) => {
                refused += 1;
                let text = String::from_utf8_lossy(&rb.stdout);
                assert!(text.contains("LOCKED by pid "), "{text}");
            }
            other => panic!("writer B: {other:?}"),
        }
        // Whoever was refused runs again; the union must be there, each row once.
        if ra.code() == Some(3) {
            assert!(spawn_writer(dir.path(), 0, half, true)
                .wait()
                .unwrap()
                .success());
        }
        if rb.status.code() == Some(3) {
            assert!(spawn_writer(dir.path(), half, total, true)
                .wait()
                .unwrap()
                .success());
        }
        assert_exactly(dir.path(), total);
    }
    // On any machine the two start within milliseconds of each other while A writes for far longer.
    assert!(refused > 0, "some second writers must have been refused");
    assert!(waited > 0, "some second writers must have waited");
}

#[test]
fn readers_during_writes_see_only_whole_commits_and_never_fail() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let mut index = IndexWriter::create(&path, &spec()).unwrap();
    let writer = std::thread::spawn(move || {
        write_range(&mut index, 0, 1500, Duration::from_millis(3));
    });
    let (mut searches, mut last, mut errors) = (0, 0, Vec::new());
    let started = Instant::now();
    while (!writer.is_finished() || searches < 200) && started.elapsed() < Duration::from_secs(120)
    {
        match RegionIndex::open(&path) {
            Ok(reader) => {
                let n = reader.len();
                assert_eq!(n % BATCH, 0, "a reader saw part of a batch");
                assert!(n >= last, "rows went back from {last} to {n}");
                last = n;
                let hits = reader
                    .search(
                        &record(3).embedding,
                        5,
                        &Filter::default(),
                        SearchMode::Auto,
                    )
                    .unwrap();
                assert_eq!(hits.len(), n.min(5));
                let hits = reader
                    .search(
                        &record(3).embedding,
                        5,
                        &Filter::default(),
                        SearchMode::Approximate { ef: 32 },
                    )
                    .unwrap();
                assert_eq!(hits.len(), n.min(5));
                searches += 1;
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    writer.join().unwrap();
    assert!(
        errors.is_empty(),
        "{} errors, first: {}",
        errors.len(),
        errors[0]
    );
    assert!(searches >= 200);
}

#[test]
fn an_empty_index_answers_every_search_with_no_hits() {
    let dir = tempfile::tempdir().unwrap();
    drop(IndexWriter::create(dir.path(), &spec()).unwrap());
    let index = RegionIndex::open(dir.path()).unwrap();
    for mode in [
        SearchMode::Auto,
        SearchMode::Exact,
        SearchMode::Approximate { ef: 64 },
    ] {
        let (hits, run) = index
            .search_explained(&record(0).embedding, 10, &Filter::default(), mode)
            .unwrap();
        assert!(hits.is_empty());
        assert_eq!(run.candidates, 0);
    }
    assert!(verify(dir.path()).unwrap().ok);
}

#[test]
fn a_reader_cannot_append_and_a_second_writer_is_refused_naming_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let writer = IndexWriter::create(dir.path(), &spec()).unwrap();
    // A reader opens beside the writer; that it cannot append is checked at compile time (`RegionIndex` has
    // no `append`: see its compile_fail example).
    let reader = RegionIndex::open(dir.path()).unwrap();
    assert_eq!(reader.len(), 0);
    let err = IndexWriter::open_or_create(dir.path(), &spec(), LockWait::No).unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("pid {}", std::process::id())),
        "{err}"
    );
    drop(writer);
    IndexWriter::open_or_create(dir.path(), &spec(), LockWait::No).unwrap();
}

fn built(dir: &Path, rows: usize) {
    let mut index = IndexWriter::create(dir, &spec()).unwrap();
    write_range(&mut index, 0, rows, Duration::ZERO);
}

fn segment_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("regions-"))
        .collect();
    v.sort();
    v
}

#[test]
fn a_lost_manifest_is_refused_untouched_then_rebuilt_with_every_row() {
    let dir = tempfile::tempdir().unwrap();
    built(dir.path(), 300);
    let before = segment_files(dir.path());
    std::fs::remove_file(dir.path().join("manifest.json")).unwrap();

    let err = IndexWriter::open_or_create(dir.path(), &spec(), LockWait::No).unwrap_err();
    assert!(matches!(err, IndexError::Orphaned(_)), "{err}");
    assert!(err.to_string().contains("index-repair"), "{err}");
    assert!(matches!(
        RegionIndex::open(dir.path()).unwrap_err(),
        IndexError::Orphaned(_)
    ));
    assert_eq!(segment_files(dir.path()), before, "nothing deleted");

    let report = repair(dir.path(), LockWait::No).unwrap();
    assert_eq!(report.manifest, "rebuilt");
    assert_eq!(report.rows, 300);
    assert_eq!(report.rows_lost, 0);
    assert_eq!(report.graph, "rebuilt");
    assert_exactly(dir.path(), 300);
    let index = RegionIndex::open(dir.path()).unwrap();
    let hits = index
        .search(
            &record(42).embedding,
            1,
            &Filter::default(),
            SearchMode::Exact,
        )
        .unwrap();
    assert_eq!(hits[0].region_id, record(42).meta.region_id);
    assert_eq!(hits[0].image, record(42).meta.image);
}

/// The graph's vectors are memory-mapped and only their size is checked at open (a CRC would read
/// gigabytes); a flipped byte there must still be found by `verify` and mended by `repair`.
#[test]
fn a_flipped_byte_in_the_mapped_vectors_is_found_by_verify_and_repaired() {
    let dir = tempfile::tempdir().unwrap();
    built(dir.path(), 120);
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("manifest.json")).unwrap())
            .unwrap();
    let vectors = manifest["graph"]["data"]["file"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(vectors.ends_with(".vectors"), "{vectors}");
    let mut bytes = std::fs::read(dir.path().join(&vectors)).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(dir.path().join(&vectors), bytes).unwrap();

    assert_eq!(RegionIndex::open(dir.path()).unwrap().len(), 120);
    let v = verify(dir.path()).unwrap();
    assert!(!v.ok);
    assert!(v.graph.starts_with("damaged"), "{}", v.graph);
    let report = repair(dir.path(), LockWait::No).unwrap();
    assert_eq!((report.rows, report.rows_lost), (120, 0));
    assert_eq!(report.graph, "rebuilt");
    assert!(verify(dir.path()).unwrap().ok);
    assert_exactly(dir.path(), 120);
}

#[test]
fn a_damaged_graph_is_rebuilt_and_a_damaged_segment_quarantined_with_its_rows_reported() {
    let dir = tempfile::tempdir().unwrap();
    built(dir.path(), 200);
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("manifest.json")).unwrap())
            .unwrap();
    let graph = manifest["graph"]["graph"]["file"]
        .as_str()
        .unwrap()
        .to_string();
    let mut bytes = std::fs::read(dir.path().join(&graph)).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(dir.path().join(&graph), bytes).unwrap();

    let v = verify(dir.path()).unwrap();
    assert!(!v.ok);
    assert!(v.graph.starts_with("damaged"), "{}", v.graph);
    assert!(RegionIndex::open(dir.path()).is_err());
    let report = repair(dir.path(), LockWait::No).unwrap();
    assert_eq!((report.rows, report.rows_lost), (200, 0));
    assert_eq!(report.graph, "rebuilt");
    assert_exactly(dir.path(), 200);

    // One segment (10 rows) cut short: its rows are reported lost, the rest stay searchable.
    let victim = &segment_files(dir.path())[3];
    let p = dir.path().join(victim);
    let len = std::fs::metadata(&p).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let v = verify(dir.path()).unwrap();
    assert_eq!(v.problems.len(), 1);
    assert_eq!(v.problems[0].file, *victim);
    let report = repair(dir.path(), LockWait::No).unwrap();
    assert_eq!(report.rows_lost, BATCH as u64);
    assert_eq!(report.quarantined.len(), 1);
    assert!(dir.path().join("quarantine").join(victim).exists());
    assert_exactly(dir.path(), 200 - BATCH);

    // Rerunning the writer re-adds exactly the lost rows.
    let mut index = IndexWriter::open_or_create(dir.path(), &spec(), LockWait::No).unwrap();
    let added = index.append((0..200).map(record).collect()).unwrap();
    assert_eq!(added.added, BATCH);
    drop(index);
    assert_exactly(dir.path(), 200);

    // An intact index needs nothing.
    let report = repair(dir.path(), LockWait::No).unwrap();
    assert!(!report.changed, "{report:?}");
}

#[test]
fn opening_never_deletes_a_segment_the_manifest_does_not_name_from_its_past() {
    let dir = tempfile::tempdir().unwrap();
    built(dir.path(), 50);
    // The manifest loses its first segment (a manifest restored from an older backup looks like this).
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("manifest.json")).unwrap())
            .unwrap();
    let segs = m["segments"].as_array_mut().unwrap();
    let dropped = segs.remove(0);
    let rows = m["rows"].as_u64().unwrap() - dropped["rows"].as_u64().unwrap();
    m["rows"] = rows.into();
    m["graph"] = serde_json::Value::Null;
    std::fs::write(dir.path().join("manifest.json"), m.to_string()).unwrap();
    let dropped_file = dropped["file"].as_str().unwrap().to_string();
    drop(IndexWriter::open_or_create(dir.path(), &spec(), LockWait::No).unwrap());
    assert!(dir.path().join(&dropped_file).exists(), "left as it is");
    let v = verify(dir.path()).unwrap();
    assert_eq!(v.unlisted, vec![dropped_file]);
}
