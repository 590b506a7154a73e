//! Deleting rows and compacting them away: what searches, lookups and reopened indexes see, that compaction
//! gives the index a fresh build of the remaining rows would, that a reader opened before it keeps
//! answering, and that a writer killed at any step of it leaves the state before or the state after.

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;

use regionseek_index::{
    merge, repair, verify, CocoRle, Filter, Hit, HnswParams, IndexSpec, IndexWriter, LockWait,
    MethodInfo, RegionIndex, RegionMeta, RegionRecord, SearchMode, DEFAULT_COMPACT_THRESHOLD,
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

/// Region `i`: image `i / 4`, method alternating, a pseudo-random vector (clustered by `i % 7`).
fn record(i: usize) -> RegionRecord {
    let mut state = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut next = || {
        state ^= state >> 29;
        state = state.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        ((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    };
    let mut embedding: Vec<f32> = (0..DIM).map(|_| next()).collect();
    embedding[i % 7] += 1.5;
    RegionRecord {
        meta: RegionMeta {
            image: format!("img{}.jpg", i / 4),
            image_hash: format!("hash{}", i / 4),
            region_id: format!("{}", i % 4),
            bbox: [i as f32, 1.0, i as f32 + 10.0, 20.0],
            mask: CocoRle {
                size: [4, 5],
                counts: "5:e2".into(),
            },
            source: "gt".into(),
            method: MethodInfo {
                name: if i % 2 == 0 { "maskinversion" } else { "crop" }.into(),
                steps: None,
                lr: None,
                alpha: None,
                resolution: Some(448),
                model_id: "random:tiny".into(),
                weights_hash: "abc123".into(),
            },
            label: Some(format!("class{}", i % 3)),
            created_at_ms: 1_700_000_000_000 + i as i64,
            exif_rotated: false,
            photo: Default::default(),
        },
        embedding,
    }
}

fn build(dir: &Path, rows: usize) -> IndexWriter {
    let mut w = IndexWriter::create(dir, &spec()).unwrap();
    for start in (0..rows).step_by(100) {
        w.append((start..(start + 100).min(rows)).map(record).collect())
            .unwrap();
    }
    w.save_graph().unwrap();
    w
}

fn filters() -> Vec<Filter> {
    vec![
        Filter::default(),
        Filter {
            method: Some("crop".into()),
            ..Default::default()
        },
        Filter {
            label: Some("class1".into()),
            ..Default::default()
        },
    ]
}

const MODES: [SearchMode; 2] = [SearchMode::Exact, SearchMode::Approximate { ef: 64 }];

fn key_of(h: &Hit, index: &RegionIndex) -> (String, String, String) {
    index.rows()[h.row as usize].key()
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn deleted_rows_are_never_returned_and_k_live_hits_still_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = build(dir.path(), 1000);
    assert!(!std::fs::read_to_string(dir.path().join("manifest.json"))
        .unwrap()
        .contains("tombstones"));
    // 10% of the rows, below the compaction threshold: they stay in the table and the graph.
    let doomed: Vec<u64> = (0..1000).filter(|i| i % 10 == 3).collect();
    let report = w.delete_rows(&doomed).unwrap();
    assert_eq!((report.deleted, report.already_deleted), (100, 0));
    assert!(report.compacted.is_none());
    assert_eq!((w.dead_rows(), w.live_rows(), w.len()), (100, 900, 1000));
    // A whole photo by its content hash: 4 rows, one of them deleted already.
    let photo = w.delete_where(|m| m.image_hash == "hash0").unwrap();
    assert_eq!(photo.deleted, 3);
    assert_eq!(w.delete_rows(&[3]).unwrap().already_deleted, 1);
    assert!(w.delete_rows(&[1000]).is_err(), "a row past the table");
    assert_eq!(w.dead_rows(), 103);
    let dead: HashSet<usize> = (0..1000).filter(|&r| w.is_deleted(r)).collect();
    assert_eq!(dead.len(), 103);

    for index in [&*w, &RegionIndex::open(dir.path()).unwrap()] {
        assert_eq!(index.dead_rows(), 103, "reopening sees the tombstones");
        for filter in filters() {
            let live = (0..1000)
                .filter(|r| !dead.contains(r) && filter.matches(&index.rows()[*r]))
                .count();
            assert_eq!(index.count_matching(&filter), live);
            for mode in MODES {
                // Queries aimed at deleted rows: their nearest neighbour is the deleted row itself.
                for q in [3usize, 13, 1, 503] {
                    let hits = index
                        .search(&record(q).embedding, 10, &filter, mode)
                        .unwrap();
                    assert_eq!(hits.len(), 10, "{mode:?} {filter:?} q{q}");
                    assert!(
                        hits.iter().all(|h| !dead.contains(&(h.row as usize))),
                        "{mode:?} {filter:?} q{q}: {hits:?}"
                    );
                    assert!(hits
                        .iter()
                        .all(|h| filter.matches(&index.rows()[h.row as usize])));
                }
            }
        }
        assert!(index.region(13).is_none() && index.embedding(13).is_none());
        assert!(index.region(14).is_some() && index.embedding(14).is_some());
        assert!(index
            .similar(13, 5, &Filter::default(), SearchMode::Exact)
            .unwrap()
            .is_none());
        let similar = index
            .similar(14, 5, &Filter::default(), SearchMode::Exact)
            .unwrap()
            .unwrap()
            .0;
        assert!(similar.iter().all(|h| !dead.contains(&(h.row as usize))));
        // A deleted photo is no longer indexed: the pipeline indexes it again.
        assert!(!index.has_image("hash0", "maskinversion") && index.has_image("hash1", "crop"));
        assert!(!index.contains("hash0", "0", "maskinversion"));
        assert!(index.contains("hash1", "1", "crop"));
    }
    let again = w.append((0..4).map(record).collect()).unwrap();
    assert_eq!((again.added, again.duplicates), (4, 0));
    assert!(w.has_image("hash0", "maskinversion"));
    let hits = w
        .search(
            &record(0).embedding,
            1,
            &Filter::default(),
            SearchMode::Exact,
        )
        .unwrap();
    assert_eq!(hits[0].row, 1000, "the re-added row, not the deleted one");
    drop(w);
    let report = verify(dir.path()).unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!((report.deleted_rows, report.duplicate_rows), (103, 0));
    assert_eq!(report.tombstones, "ok");
}

/// The live records of `0..rows` after deleting `dead`, in row order.
fn fresh_index(dir: &Path, rows: usize, dead: &HashSet<usize>) -> RegionIndex {
    let mut w = IndexWriter::create(dir, &spec()).unwrap();
    let live: Vec<usize> = (0..rows).filter(|r| !dead.contains(r)).collect();
    for chunk in live.chunks(100) {
        w.append(chunk.iter().map(|&i| record(i)).collect())
            .unwrap();
    }
    w.save_graph().unwrap();
    drop(w);
    RegionIndex::open(dir).unwrap()
}

#[test]
fn compaction_gives_what_a_fresh_index_of_the_live_rows_gives() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = build(dir.path(), 1000);
    let before_files = files_in(dir.path());
    let reader = RegionIndex::open(dir.path()).unwrap();
    let probe = reader
        .search(
            &record(5).embedding,
            10,
            &Filter::default(),
            SearchMode::Exact,
        )
        .unwrap();

    // 30% deleted: past the default threshold, the delete compacts.
    const _: () = assert!(0.3 > DEFAULT_COMPACT_THRESHOLD);
    let dead: HashSet<usize> = (0..1000).filter(|i| i % 10 < 3).collect();
    let doomed: Vec<u64> = dead.iter().map(|&r| r as u64).collect();
    let report = w.delete_rows(&doomed).unwrap();
    let compacted = report.compacted.expect("compacted");
    assert_eq!((compacted.rows_before, compacted.rows_after), (1000, 700));
    assert_eq!(compacted.removed, 300);
    assert_eq!((w.len(), w.dead_rows(), report.dead_rows), (700, 0, 0));
    drop(w);

    // The reader opened before keeps answering from its snapshot, old row ids included.
    let again = reader
        .search(
            &record(5).embedding,
            10,
            &Filter::default(),
            SearchMode::Exact,
        )
        .unwrap();
    assert_eq!(again, probe);
    assert_eq!(reader.region(999).unwrap().image, record(999).meta.image);

    let fresh_dir = tempfile::tempdir().unwrap();
    let fresh = fresh_index(fresh_dir.path(), 1000, &dead);
    let compacted = RegionIndex::open(dir.path()).unwrap();
    assert_eq!(compacted.len(), 700);
    assert_eq!(
        compacted.rows(),
        fresh.rows(),
        "every live row's meta, in order"
    );
    for row in 0..700 {
        assert_eq!(compacted.embedding(row), fresh.embedding(row), "row {row}");
    }
    for filter in filters() {
        assert_eq!(
            compacted.count_matching(&filter),
            fresh.count_matching(&filter)
        );
        for q in [0usize, 5, 17, 999] {
            let a = compacted
                .search(&record(q).embedding, 10, &filter, SearchMode::Exact)
                .unwrap();
            let b = fresh
                .search(&record(q).embedding, 10, &filter, SearchMode::Exact)
                .unwrap();
            assert_eq!(a, b, "{filter:?} q{q}");
            let approx = compacted
                .search(
                    &record(q).embedding,
                    10,
                    &filter,
                    SearchMode::Approximate { ef: 64 },
                )
                .unwrap();
            let found: HashSet<_> = approx.iter().map(|h| key_of(h, &compacted)).collect();
            let exact: HashSet<_> = a.iter().map(|h| key_of(h, &compacted)).collect();
            assert!(found.intersection(&exact).count() >= 8, "{filter:?} q{q}");
        }
    }
    // No old file is left, and the manifest is readable by builds that know no deletions.
    let after = files_in(dir.path());
    assert!(
        before_files
            .iter()
            .filter(|f| f.starts_with("regions-") || f.starts_with("graph-"))
            .all(|f| !after.contains(f)),
        "{before_files:?} → {after:?}"
    );
    assert!(!after
        .iter()
        .any(|f| f.starts_with("tombstones-") || f.starts_with('.')));
    let manifest = std::fs::read_to_string(dir.path().join("manifest.json")).unwrap();
    assert!(manifest.contains("\"regionseek-index/1\""), "{manifest}");
    let report = verify(dir.path()).unwrap();
    assert!(report.ok && report.unlisted.is_empty(), "{report:?}");
}

#[test]
fn merging_drops_deleted_rows_and_repair_keeps_tombstones() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = build(dir.path(), 300);
    w.delete_where(|m| m.label.as_deref() == Some("class0") && m.image_hash.as_str() < "hash3")
        .unwrap();
    let dead = w.dead_rows();
    assert!(dead > 0 && w.live_rows() == 300 - dead);
    drop(w);
    let repaired = repair(dir.path(), LockWait::No).unwrap();
    assert!(!repaired.changed, "{repaired:?}");
    assert_eq!(repaired.tombstones, "kept");

    let out = tempfile::tempdir().unwrap();
    let report = merge(
        &[dir.path().to_path_buf()],
        out.path(),
        LockWait::No,
        |_, _| {},
    )
    .unwrap();
    assert_eq!(
        (report.deleted_skipped, report.rows_total),
        (dead, 300 - dead)
    );
    let merged = RegionIndex::open(out.path()).unwrap();
    let source = RegionIndex::open(dir.path()).unwrap();
    let want: Vec<&RegionMeta> = (0..300)
        .filter(|&r| !source.is_deleted(r))
        .map(|r| &source.rows()[r])
        .collect();
    assert_eq!(merged.rows().iter().collect::<Vec<_>>(), want);

    // A damaged tombstones file: verify names it; repair cannot know what was deleted and says so.
    let name = files_in(dir.path())
        .into_iter()
        .find(|f| f.starts_with("tombstones-"))
        .unwrap();
    let path = dir.path().join(&name);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    let checked = verify(dir.path()).unwrap();
    assert!(
        !checked.ok && checked.tombstones.starts_with("damaged"),
        "{checked:?}"
    );
    assert!(RegionIndex::open(dir.path()).is_err());
    let repaired = repair(dir.path(), LockWait::No).unwrap();
    assert!(repaired.tombstones.starts_with("lost"), "{repaired:?}");
    let index = RegionIndex::open(dir.path()).unwrap();
    assert_eq!((index.len(), index.dead_rows()), (300, 0));
}

/// The child half of the crash test: deletes 50 of the 300 rows and compacts, aborting at the step
/// `REGIONSEEK_INDEX_CRASH_AT` names.
#[test]
fn crash_child_compactor() {
    let Some(dir) = std::env::var_os("REGIONSEEK_COMPACT_CHILD_DIR") else {
        return;
    };
    let mut w = IndexWriter::open(Path::new(&dir), LockWait::No).unwrap();
    w.delete_rows(&(0..100).step_by(2).collect::<Vec<u64>>())
        .unwrap();
    w.compact().unwrap();
}

#[test]
fn a_writer_killed_at_any_step_of_a_delete_or_compaction_leaves_one_whole_state() {
    // (step, rows and dead rows a reopen must see)
    let steps = [
        ("delete-tombstones-written", 300, 0),
        ("compact-segment-written", 300, 50),
        ("compact-graph-written", 300, 50),
        ("compact-committed", 250, 0),
    ];
    for (step, rows, dead) in steps {
        let dir = tempfile::tempdir().unwrap();
        drop(build(dir.path(), 300));
        let status = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "crash_child_compactor",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("REGIONSEEK_COMPACT_CHILD_DIR", dir.path())
            .env("REGIONSEEK_INDEX_CRASH_AT", step)
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(!status.success(), "{step}: the child was stopped there");

        let index = RegionIndex::open(dir.path()).unwrap();
        assert_eq!((index.len(), index.dead_rows()), (rows, dead), "{step}");
        let live: HashSet<_> = (0..index.len())
            .filter(|&r| !index.is_deleted(r))
            .map(|r| index.rows()[r].key())
            .collect();
        let want: HashSet<_> = (0..300)
            .filter(|&i| dead == 0 && rows == 300 || i >= 100 || i % 2 == 1)
            .map(|i| record(i).meta.key())
            .collect();
        assert_eq!(live, want, "{step}");
        let hits = index
            .search(
                &record(0).embedding,
                5,
                &Filter::default(),
                SearchMode::Approximate { ef: 32 },
            )
            .unwrap();
        assert_eq!(hits.len(), 5, "{step}");
        drop(index);

        // The next writer removes whatever the dead one left, and finishes the job.
        let mut w = IndexWriter::open(dir.path(), LockWait::No).unwrap();
        let manifest = w.manifest().clone();
        let mut named: Vec<String> = manifest.segments.iter().map(|s| s.file.clone()).collect();
        if let Some(g) = &manifest.graph {
            named.extend([g.graph.file.clone(), g.data.file.clone()]);
        }
        if let Some(t) = &manifest.tombstones {
            named.push(t.file.file.clone());
        }
        named.extend(["manifest.json".to_string(), "writer.lock".to_string()]);
        named.sort();
        assert_eq!(files_in(dir.path()), named, "{step}");
        w.compact().unwrap();
        drop(w);
        let report = verify(dir.path()).unwrap();
        assert!(
            report.ok && report.unlisted.is_empty(),
            "{step}: {report:?}"
        );
    }
}

#[test]
fn searches_running_through_a_compaction_each_see_one_whole_state() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = build(dir.path(), 2000);
    // Under the threshold: deleted, not yet compacted.
    let dead: Vec<u64> = (0..2000u64).filter(|i| i % 10 == 0).collect();
    w.set_compact_threshold(0.5);
    w.delete_rows(&dead).unwrap();
    let dead_keys: HashSet<(String, String, String)> = dead
        .iter()
        .map(|&i| record(i as usize).meta.key())
        .collect();
    let done = std::sync::atomic::AtomicBool::new(false);
    let searches = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let searcher = scope.spawn(|| {
            // Bounded: at most 2,000 opens and searches, or until the compaction is over and one more ran.
            for i in 0..2000usize {
                let finished = done.load(std::sync::atomic::Ordering::SeqCst);
                let reader = RegionIndex::open(dir.path()).expect("a reader opens at any moment");
                let query = record((i * 37) % 2000).embedding;
                for mode in MODES {
                    let hits = reader
                        .search(&query, 10, &Filter::default(), mode)
                        .expect("a search answers at any moment");
                    assert_eq!(hits.len(), 10, "{mode:?}");
                    for h in &hits {
                        let key = key_of(h, &reader);
                        assert!(
                            !dead_keys.contains(&key),
                            "a deleted row came back: {key:?}"
                        );
                    }
                }
                searches.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if finished {
                    break;
                }
            }
        });
        let report = w.compact().unwrap();
        assert_eq!(report.removed, dead.len());
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        searcher.join().unwrap();
    });
    assert!(
        searches.into_inner() >= 2,
        "the searches ran alongside the compaction"
    );
    let after = RegionIndex::open(dir.path()).unwrap();
    assert_eq!((after.len(), after.dead_rows()), (1800, 0));
}
