//! The region index as a user relies on it: round trip, filters, duplicates, resume after kill -9, corrupt
//! files, mismatched embedding spaces.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use regionseek_index::{
    CocoRle, Filter, HnswParams, IndexError, IndexSpec, IndexWriter, LockWait, MethodInfo,
    RegionIndex, RegionMeta, RegionRecord, SearchMode,
};

const DIM: usize = 16;

fn spec() -> IndexSpec {
    IndexSpec {
        dim: DIM,
        model_id: "random:tiny".into(),
        weights_hash: "abc123".into(),
        hnsw: HnswParams::default(),
    }
}

/// Region `i`: image `i / 5`, method alternating, a vector that is mostly axis `i % DIM`.
fn record(i: usize) -> RegionRecord {
    let mut embedding: Vec<f32> = (0..DIM)
        .map(|k| ((i * 7 + k * 3) % 11) as f32 * 0.01)
        .collect();
    embedding[i % DIM] += 3.0 + (i / DIM) as f32 * 0.1;
    RegionRecord {
        meta: RegionMeta {
            image: format!("img{}.jpg", i / 5),
            image_hash: format!("hash{}", i / 5),
            region_id: format!("{}", i % 5),
            bbox: [i as f32, 1.0, i as f32 + 10.0, 20.0],
            mask: CocoRle {
                size: [4, 5],
                counts: "5:e2".into(),
            },
            source: if i % 3 == 0 { "gt" } else { "sam" }.into(),
            method: MethodInfo {
                name: if i % 2 == 0 { "maskinversion" } else { "crop" }.into(),
                steps: (i % 2 == 0).then_some(10),
                lr: (i % 2 == 0).then_some(0.5),
                alpha: (i % 2 == 0).then_some(0.0),
                resolution: Some(448),
                model_id: "random:tiny".into(),
                weights_hash: "abc123".into(),
            },
            label: (i % 4 == 0).then(|| format!("class{}", i % 7)),
            created_at_ms: 1_700_000_000_000 + i as i64,
            exif_rotated: false,
            photo: Default::default(),
        },
        embedding,
    }
}

#[test]
fn round_trip_search_and_filters() {
    let dir = tempfile::tempdir().unwrap();
    let mut index = IndexWriter::create(dir.path(), &spec()).unwrap();
    let report = index.append((0..40).map(record).collect()).unwrap();
    assert_eq!((report.added, report.duplicates), (40, 0));
    index.append((40..60).map(record).collect()).unwrap();
    index.save_graph().unwrap();
    drop(index);

    let index = RegionIndex::open(dir.path()).unwrap();
    assert_eq!(index.len(), 60);
    for i in [0usize, 17, 59] {
        let want = record(i);
        assert_eq!(
            index.rows()[i],
            want.meta,
            "row {i} survives the round trip"
        );
        for mode in [SearchMode::Exact, SearchMode::Approximate { ef: 64 }] {
            let hits = index
                .search(&want.embedding, 3, &Filter::default(), mode)
                .unwrap();
            assert_eq!(hits[0].row, i as u64, "{mode:?}");
            assert!((hits[0].score - 1.0).abs() < 1e-5);
            assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
            assert_eq!(hits[0].image, want.meta.image);
            assert_eq!(hits[0].mask_rle, want.meta.mask);
        }
    }
    let q = record(3).embedding;
    let by_image = Filter {
        image: Some("img4.jpg".into()),
        ..Default::default()
    };
    let hits = index.search(&q, 10, &by_image, SearchMode::Auto).unwrap();
    assert_eq!(hits.len(), 5);
    assert!(hits.iter().all(|h| h.image == "img4.jpg"));
    let by_hash = Filter {
        image: Some("hash4".into()),
        ..Default::default()
    };
    assert_eq!(
        index.search(&q, 10, &by_hash, SearchMode::Auto).unwrap(),
        hits
    );
    let crops = Filter {
        method: Some("crop".into()),
        source: Some("sam".into()),
        ..Default::default()
    };
    for mode in [SearchMode::Exact, SearchMode::Approximate { ef: 64 }] {
        let hits = index.search(&q, 60, &crops, mode).unwrap();
        let want = (0..60).filter(|i| i % 2 == 1 && i % 3 != 0).count();
        assert_eq!(hits.len(), want, "{mode:?}");
        assert!(hits.iter().all(|h| h.method == "crop" && h.source == "sam"));
    }
    let none = Filter {
        method: Some("nothing".into()),
        ..Default::default()
    };
    assert!(index
        .search(&q, 5, &none, SearchMode::Auto)
        .unwrap()
        .is_empty());
}

#[test]
fn rows_not_in_the_graph_dump_are_searchable_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let mut index = IndexWriter::create(dir.path(), &spec()).unwrap();
    index.append((0..30).map(record).collect()).unwrap();
    index.save_graph().unwrap();
    index.append((30..50).map(record).collect()).unwrap(); // committed, graph dump older
    drop(index);
    let index = RegionIndex::open(dir.path()).unwrap();
    assert_eq!(index.len(), 50);
    let hits = index
        .search(
            &record(45).embedding,
            1,
            &Filter::default(),
            SearchMode::Approximate { ef: 64 },
        )
        .unwrap();
    assert_eq!(hits[0].row, 45);
}

/// Indexes written before regionseek had its own graph name an hnsw_rs dump in their manifest (no `engine`
/// field). They must still open, search every row, and get a graph of the current format on the next write.
#[test]
fn an_index_with_a_legacy_graph_dump_opens_searches_and_is_upgraded_by_its_next_writer() {
    let dir = tempfile::tempdir().unwrap();
    let mut index = IndexWriter::create(dir.path(), &spec()).unwrap();
    index.append((0..40).map(record).collect()).unwrap();
    index.save_graph().unwrap();
    drop(index);
    // Rewrite the manifest as the previous format wrote it: graph files hnsw-N.hnsw.{graph,data}, no engine.
    let manifest_path = dir.path().join("manifest.json");
    let mut m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    let g = m["graph"].as_object_mut().unwrap();
    let basename = g["basename"].as_str().unwrap().to_string();
    let legacy = basename.replace("graph-", "hnsw-");
    for (key, ext, old_ext) in [
        ("graph", "hnsw.graph", "links"),
        ("data", "hnsw.data", "vectors"),
    ] {
        let name = format!("{legacy}.{ext}");
        std::fs::rename(
            dir.path().join(format!("{basename}.{old_ext}")),
            dir.path().join(&name),
        )
        .unwrap();
        g[key]["file"] = name.into();
    }
    g.remove("engine");
    g["basename"] = legacy.clone().into();
    m["hnsw"].as_object_mut().unwrap().remove("codec");
    std::fs::write(&manifest_path, serde_json::to_vec_pretty(&m).unwrap()).unwrap();

    let reader = RegionIndex::open(dir.path()).unwrap();
    assert_eq!(reader.len(), 40);
    let hits = reader
        .search(
            &record(33).embedding,
            1,
            &Filter::default(),
            SearchMode::Approximate { ef: 64 },
        )
        .unwrap();
    assert_eq!(hits[0].row, 33);
    let verified = regionseek_index::verify(dir.path()).unwrap();
    assert!(verified.ok, "a legacy graph is not damage: {verified:?}");
    drop(reader);

    let mut writer = IndexWriter::open(dir.path(), regionseek_index::LockWait::No).unwrap();
    writer.save_graph().unwrap();
    let graph = writer.manifest().graph.clone().unwrap();
    assert_eq!(graph.engine, regionseek_index::graph::ENGINE_NAME);
    assert_eq!(graph.rows, 40);
    drop(writer);
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n.starts_with(&legacy)),
        "legacy dump left behind: {names:?}"
    );
    let reopened = RegionIndex::open(dir.path()).unwrap();
    let hits = reopened
        .search(
            &record(7).embedding,
            1,
            &Filter::default(),
            SearchMode::Approximate { ef: 64 },
        )
        .unwrap();
    assert_eq!(hits[0].row, 7);
}

#[test]
fn appending_the_same_regions_again_adds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut index = IndexWriter::open_or_create(dir.path(), &spec(), LockWait::No).unwrap();
    index.append((0..10).map(record).collect()).unwrap();
    let mut again: Vec<_> = (5..15).map(record).collect();
    again.push(record(14)); // twice in one batch
    let report = index.append(again).unwrap();
    assert_eq!((report.added, report.duplicates), (5, 6));
    assert_eq!(index.len(), 15);
    assert!(index.contains("hash2", "4", "maskinversion"));
    assert!(!index.contains("hash2", "4", "crop"));
}

#[test]
fn shards_merge_into_one_index_with_every_region_once_and_resume() {
    let dataset = tempfile::tempdir().unwrap();
    // Three shards; rows 40..45 are in two of them (a photo indexed twice by a rerun on another worker).
    for (shard, rows) in [(0, 0..45), (1, 40..80), (2, 80..120)] {
        let mut ix =
            IndexWriter::create(&dataset.path().join(format!("shard-{shard:04}")), &spec())
                .unwrap();
        ix.append(rows.map(record).collect()).unwrap();
        ix.save_graph().unwrap();
    }
    std::fs::create_dir(dataset.path().join("not-an-index")).unwrap();
    let sources = regionseek_index::find_sources(&[dataset.path().to_path_buf()]).unwrap();
    assert_eq!(sources.len(), 3, "{sources:?}");
    let out = tempfile::tempdir().unwrap();
    let merged_dir = out.path().join("merged");
    let mut calls = 0;
    let report =
        regionseek_index::merge(&sources, &merged_dir, Default::default(), |_, _| calls += 1)
            .unwrap();
    assert!(calls > 0);
    assert_eq!(
        (report.rows_read, report.added, report.duplicates),
        (125, 120, 5)
    );
    let merged = RegionIndex::open(&merged_dir).unwrap();
    assert_eq!(merged.len(), 120);
    assert!(merged.manifest().graph.is_some(), "one graph over all rows");
    let mut keys: Vec<_> = merged.rows().iter().map(|m| m.key()).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 120);
    // Each region keeps its stored embedding: it finds itself, and the shard's search answers alike.
    let shard1 = RegionIndex::open(&sources[1]).unwrap();
    for row in [0, 7, 39] {
        let v = shard1.embedding(row).unwrap();
        let want = &shard1.rows()[row];
        let hit = &merged
            .search(&v, 1, &Filter::default(), SearchMode::Exact)
            .unwrap()[0];
        assert_eq!((&hit.image, &hit.region_id), (&want.image, &want.region_id));
        assert!((hit.score - 1.0).abs() < 1e-5);
        assert_eq!(merged.embedding(hit.row as usize).unwrap(), v);
    }
    // A rerun adds nothing; a shard of another model is refused before anything is written.
    let again =
        regionseek_index::merge(&sources, &merged_dir, Default::default(), |_, _| {}).unwrap();
    assert_eq!(
        (again.added, again.duplicates, again.rows_total),
        (0, 125, 120)
    );
    let mut foreign = spec();
    foreign.model_id = "random:other".into();
    let other = dataset.path().join("shard-0003");
    let mut ix = IndexWriter::create(&other, &foreign).unwrap();
    let mut r = record(500);
    r.meta.method.model_id = "random:other".into();
    ix.append(vec![r]).unwrap();
    drop(ix);
    let sources = regionseek_index::find_sources(&[dataset.path().to_path_buf()]).unwrap();
    let err = regionseek_index::merge(
        &sources,
        &out.path().join("fresh"),
        Default::default(),
        |_, _| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("shard-0003"), "{err}");
    assert!(!out.path().join("fresh").exists());
}

#[test]
fn another_embedding_space_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut index = IndexWriter::create(dir.path(), &spec()).unwrap();
    index.append((0..5).map(record).collect()).unwrap();

    let mut short = record(7);
    short.embedding.pop();
    let err = index.append(vec![short]).unwrap_err();
    assert!(
        matches!(err, IndexError::Mismatch(_)) && err.to_string().contains("15-d embedding"),
        "{err}"
    );
    let mut other = record(8);
    other.meta.method.model_id = "random:vit-b-32".into();
    assert!(index
        .append(vec![other])
        .unwrap_err()
        .to_string()
        .contains("random:vit-b-32"));
    let mut zero = record(9);
    zero.embedding = vec![0.0; DIM];
    assert!(matches!(
        index.append(vec![zero]).unwrap_err(),
        IndexError::InvalidRecord { .. }
    ));
    assert_eq!(index.len(), 5, "refused batches write nothing");

    let err = index
        .search(&[1.0; 8], 3, &Filter::default(), SearchMode::Auto)
        .unwrap_err();
    assert!(err.to_string().contains("8-d query"), "{err}");
    drop(index);
    let mut other_model = spec();
    other_model.model_id = "hf:openai/clip-vit-base-patch16".into();
    let err = IndexWriter::open_or_create(dir.path(), &other_model, LockWait::No).unwrap_err();
    assert!(err.to_string().contains("not comparable"), "{err}");
    let mut other_dim = spec();
    other_dim.dim = 512;
    assert!(
        IndexWriter::open_or_create(dir.path(), &other_dim, LockWait::No)
            .unwrap_err()
            .to_string()
            .contains("512-d")
    );
    assert!(matches!(
        IndexWriter::create(dir.path(), &spec()).unwrap_err(),
        IndexError::Exists(_)
    ));
}

fn corrupt_copy(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
}

#[test]
fn corrupt_or_truncated_files_are_named_in_the_error() {
    let base = tempfile::tempdir().unwrap();
    let good = base.path().join("good");
    let mut index = IndexWriter::create(&good, &spec()).unwrap();
    index.append((0..20).map(record).collect()).unwrap();
    index.save_graph().unwrap();
    let manifest = index.manifest().clone();
    drop(index);
    let segment = manifest.segments[0].file.clone();
    let graph = manifest.graph.as_ref().unwrap().graph.file.clone();
    let data = manifest.graph.as_ref().unwrap().data.file.clone();

    let cases: Vec<(&str, Box<dyn Fn(&Path)>, String)> = vec![
        (
            "truncated segment",
            Box::new(|d: &Path| {
                let p = d.join(&segment);
                let len = std::fs::metadata(&p).unwrap().len();
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&p)
                    .unwrap()
                    .set_len(len / 2)
                    .unwrap();
            }),
            segment.clone(),
        ),
        (
            "flipped byte in the graph",
            Box::new(|d: &Path| {
                let p = d.join(&graph);
                let mut b = std::fs::read(&p).unwrap();
                let mid = b.len() / 2;
                b[mid] ^= 0xff;
                std::fs::write(&p, b).unwrap();
            }),
            graph.clone(),
        ),
        (
            "missing data file",
            Box::new(|d: &Path| std::fs::remove_file(d.join(&data)).unwrap()),
            data.clone(),
        ),
        (
            "garbage manifest",
            Box::new(|d: &Path| {
                std::fs::write(d.join("manifest.json"), b"{\"format\": 3").unwrap()
            }),
            "manifest.json".into(),
        ),
    ];
    for (name, damage, file) in cases {
        let dir = base.path().join(name.replace(' ', "_"));
        corrupt_copy(&good, &dir);
        damage(&dir);
        let err = RegionIndex::open(&dir).unwrap_err();
        assert!(matches!(err, IndexError::Corrupt { .. }), "{name}: {err}");
        assert!(err.to_string().contains(&file), "{name}: {err}");
    }
    let err = RegionIndex::open(&base.path().join("nothing")).unwrap_err();
    assert!(matches!(err, IndexError::NotFound(_)), "{err}");
}

/// The child half of the crash test: appends batches of 25 until killed.
#[test]
fn crash_child_writer() {
    let Some(dir) = std::env::var_os("REGIONSEEK_CRASH_CHILD_DIR") else {
        return;
    };
    let mut index = IndexWriter::open_or_create(Path::new(&dir), &spec(), LockWait::No).unwrap();
    let mut i = index.len();
    loop {
        index.append((i..i + 25).map(record).collect()).unwrap();
        i += 25;
        if i % 100 == 0 {
            index.save_graph().unwrap();
        }
        // Paced so that the parent's kill lands mid-run on slow and fast machines alike.
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn killed_mid_write_then_resumed_adds_exactly_the_missing_regions() {
    let dir = tempfile::tempdir().unwrap();
    let total = 10_000;
    let mut rows_at_kill = Vec::new();
    for delay_ms in [150u64, 400] {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "crash_child_writer",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("REGIONSEEK_CRASH_CHILD_DIR", dir.path())
            .spawn()
            .unwrap();
        // Start the clock once the child has an index, however slowly it started.
        let started = std::time::Instant::now();
        while !dir.path().join("manifest.json").exists()
            && started.elapsed() < Duration::from_secs(60)
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().unwrap(); // SIGKILL: no destructor, no flush
        child.wait().unwrap();
        let index = RegionIndex::open(dir.path()).unwrap();
        assert_eq!(index.len() % 25, 0, "only whole batches are committed");
        rows_at_kill.push(index.len());
    }
    assert!(rows_at_kill[1] >= rows_at_kill[0]);
    assert!(
        rows_at_kill[1] < total,
        "the child was killed before finishing"
    );

    // The resumed run offers every region; only the missing ones are added.
    let mut index = IndexWriter::open_or_create(dir.path(), &spec(), LockWait::No).unwrap();
    let before = index.len();
    let report = index.append((0..total).map(record).collect()).unwrap();
    assert_eq!(report.added, total - before);
    assert_eq!(report.duplicates, before);
    index.save_graph().unwrap();
    drop(index);
    let index = RegionIndex::open(dir.path()).unwrap();
    assert_eq!(index.len(), total);
    let keys: std::collections::HashSet<_> = index.rows().iter().map(|m| m.key()).collect();
    assert_eq!(keys.len(), total, "no duplicates");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".part") || n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let hits = index
        .search(
            &record(1234).embedding,
            1,
            &Filter::default(),
            SearchMode::Approximate { ef: 64 },
        )
        .unwrap();
    assert_eq!(
        hits[0].row as usize,
        index
            .rows()
            .iter()
            .position(|m| m.key() == record(1234).meta.key())
            .unwrap()
    );
}

#[test]
fn the_region_table_is_readable_by_pyarrow_and_duckdb() {
    let python = std::env::var("REGIONSEEK_PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = Command::new(&python)
        .args(["-c", "import pyarrow, duckdb"])
        .output();
    if !probe.as_ref().is_ok_and(|o| o.status.success()) {
        eprintln!(
            "SKIP: {python} lacks pyarrow/duckdb (.ci/run installs them; set REGIONSEEK_PYTHON)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut index = IndexWriter::create(dir.path(), &spec()).unwrap();
    index.append((0..30).map(record).collect()).unwrap();
    index.append((30..45).map(record).collect()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/readers.py");
    let out = Command::new(&python)
        .arg(script)
        .arg(dir.path())
        .args(["45", &DIM.to_string()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["rows"], 45);
    assert_eq!(v["methods"], 2);
    assert_eq!(v["first_image"], "img0.jpg");
    assert_eq!(v["mask_height"], 4);
}

/// `record(i)` embedded again by `method`, with its vector nudged so that both rows are near any query.
fn retiered(i: usize, method: &str) -> RegionRecord {
    let mut r = record(i);
    r.meta.method.name = method.into();
    r.embedding[(i + 1) % DIM] += 0.05;
    r
}

#[test]
fn a_region_embedded_by_several_methods_is_found_once_with_its_best_tier() {
    let dir = tempfile::tempdir().unwrap();
    let mut index = IndexWriter::create(dir.path(), &spec()).unwrap();
    // Region 1 (a "crop" row) gets a quick tier, then MaskInversion; region 2 (a MaskInversion row) gets a
    // quick row that must not displace it.
    index.append((0..10).map(record).collect()).unwrap();
    index.append(vec![retiered(1, "mask-pool")]).unwrap();
    index.append(vec![retiered(1, "maskinversion")]).unwrap();
    index.append(vec![retiered(2, "mask-pool")]).unwrap();
    assert_eq!(index.len(), 13);
    assert_eq!(index.superseded_rows(), 3);
    let check = |index: &RegionIndex| {
        for mode in [SearchMode::Exact, SearchMode::Approximate { ef: 64 }] {
            for i in [1usize, 2] {
                let hits = index
                    .search(&record(i).embedding, 13, &Filter::default(), mode)
                    .unwrap();
                let of_region: Vec<&str> = hits
                    .iter()
                    .filter(|h| {
                        h.image == record(i).meta.image && h.region_id == record(i).meta.region_id
                    })
                    .map(|h| h.method.as_str())
                    .collect();
                assert_eq!(of_region, ["maskinversion"], "region {i}, {mode:?}");
                assert_eq!(hits.len(), 10, "one hit per region, {mode:?}");
            }
            // A method filter reaches the rows a better tier replaced.
            let quick = Filter {
                method: Some("mask-pool".into()),
                ..Default::default()
            };
            let hits = index.search(&record(1).embedding, 5, &quick, mode).unwrap();
            assert_eq!(hits.len(), 2, "{mode:?}");
        }
        assert_eq!(index.count_matching(&Filter::default()), 10);
    };
    check(&index);
    index.save_graph().unwrap();
    drop(index);
    check(&RegionIndex::open(dir.path()).unwrap());
}
