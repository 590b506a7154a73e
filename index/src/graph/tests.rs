use super::file::pad8;
use super::header::HEADER_LEN as HEADER;
use super::*;
use crate::bench::{clustered, Rng};
use crate::engine::{HnswParams, Keep};
use crate::kernels::{dot, Codec};

fn build(data: &[f32], dim: usize, codec: Codec, batch: usize) -> FrozenGraph {
    let mut g = GraphBuilder::new(
        dim,
        HnswParams {
            m: 12,
            ef_construction: 80,
            codec,
        },
    );
    for chunk in data.chunks(dim * batch) {
        let rows: Vec<&[f32]> = chunk.chunks_exact(dim).collect();
        g.insert(&rows);
    }
    g.freeze()
}

fn recall(g: &FrozenGraph, data: &[f32], queries: &[f32], dim: usize, ef: usize) -> f64 {
    let mut hits = 0;
    for q in queries.chunks_exact(dim) {
        let truth: Vec<usize> = crate::engine::exact_top_k(
            data.len() / dim,
            &|i| &data[i * dim..(i + 1) * dim],
            q,
            10,
            &|_| true,
        )
        .into_iter()
        .map(|x| x.0)
        .collect();
        let found = g.search(q, 10, ef, None);
        hits += found.iter().filter(|(id, _)| truth.contains(id)).count();
    }
    hits as f64 / (10 * queries.len() / dim) as f64
}

#[test]
fn every_codec_finds_the_true_neighbours_of_a_clustered_set() {
    let dim = 64;
    let data = clustered(3000, dim, 30, 0.6, 1);
    let queries = clustered(50, dim, 30, 0.6, 2);
    for codec in [Codec::F32, Codec::F16, Codec::I8] {
        // Small batches link one at a time, big ones in parallel: both must give a usable graph.
        for batch in [7, 1000] {
            let g = build(&data, dim, codec, batch);
            assert_eq!(g.len(), 3000);
            // Near-ties in 64-d clusters need a beam of 200 for 0.95 (an exact-distance graph gets 0.99).
            let r = recall(&g, &data, &queries, dim, 200);
            assert!(r >= 0.95, "{codec:?} batch {batch}: recall@10 {r}");
        }
    }
}

#[test]
fn scores_are_exact_dot_products_best_first_and_a_vector_finds_itself() {
    let dim = 32;
    let data = clustered(500, dim, 10, 0.6, 3);
    let g = build(&data, dim, Codec::I8, 100);
    for id in [0usize, 17, 499] {
        let v = &data[id * dim..(id + 1) * dim];
        let found = g.search(v, 5, 64, None);
        assert_eq!(found[0].0, id);
        for w in found.windows(2) {
            assert!(w[0].1 >= w[1].1);
        }
        for (i, s) in &found {
            assert_eq!(*s, dot(v, &data[i * dim..(i + 1) * dim]));
        }
    }
}

#[test]
fn filtered_search_returns_only_kept_rows_and_finds_the_best_of_them() {
    let dim = 32;
    let data = clustered(4000, dim, 40, 0.6, 4);
    let g = build(&data, dim, Codec::F16, 500);
    let mut rng = Rng::new(5);
    for stride in [2usize, 10, 100] {
        let accepts = move |id: usize| id % stride == 1;
        let keep = Keep {
            accepts: &accepts,
            count: (4000 + stride - 2) / stride,
        };
        for _ in 0..10 {
            let q = &data[(rng.next_u64() % 4000) as usize * dim..][..dim];
            let truth = crate::engine::exact_top_k(
                4000,
                &|i| &data[i * dim..(i + 1) * dim],
                q,
                10,
                &accepts,
            );
            let found = g.search(q, 10, 100, Some(Keep { ..keep }));
            assert!(found.iter().all(|(id, _)| id % stride == 1));
            let hits = found
                .iter()
                .filter(|f| truth.iter().any(|t| t.0 == f.0))
                .count();
            assert!(hits >= 9, "stride {stride}: {hits}/10");
        }
    }
}

#[test]
fn a_dumped_graph_reloads_loaded_answers_alike_and_takes_more_rows() {
    let dim = 48;
    let data = clustered(2000, dim, 20, 0.6, 6);
    let g = build(&data, dim, Codec::F16, 400);
    let dir = tempfile::tempdir().unwrap();
    g.dump(dir.path(), "g").unwrap();
    let back = FrozenGraph::load(dir.path(), "g", 2000).unwrap();
    for q in data.chunks_exact(dim).step_by(97) {
        assert_eq!(g.search(q, 10, 64, None), back.search(q, 10, 64, None));
    }
    assert_eq!(back.vector(1999), g.vector(1999));
    // Rows after a reload go after the loaded ones and are found.
    let more = clustered(300, dim, 20, 0.6, 7);
    let rows: Vec<&[f32]> = more.chunks_exact(dim).collect();
    let mut back = back.thaw();
    back.insert(&rows);
    assert_eq!(back.len(), 2300);
    let found = back.search(&more[..dim], 1, 64, None);
    assert_eq!(found[0].0, 2000);
    back.dump(dir.path(), "h").unwrap();
    let again = FrozenGraph::load(dir.path(), "h", 2300).unwrap();
    assert_eq!(again.vector(2100), back.vector(2100));
    assert!(FrozenGraph::load(dir.path(), "h", 2299).is_err());
}

#[test]
fn a_damaged_graph_file_is_refused_not_trusted() {
    let dim = 16;
    let data = clustered(300, dim, 5, 0.6, 8);
    let g = build(&data, dim, Codec::F32, 300);
    let dir = tempfile::tempdir().unwrap();
    g.dump(dir.path(), "g").unwrap();
    let links = dir.path().join("g.links");
    let good = std::fs::read(&links).unwrap();
    // A link pointing past the last node.
    let mut bad = good.clone();
    let at = HEADER + pad8(300) + 8 * 300 + 4;
    bad[at..at + 4].copy_from_slice(&5000u32.to_le_bytes());
    std::fs::write(&links, &bad).unwrap();
    let err = FrozenGraph::load(dir.path(), "g", 300)
        .err()
        .expect("refused");
    assert!(err.to_string().contains("does not exist"), "{err}");
    // An upper-level link to a node that has no upper levels.
    let (levels_at, upper_start) = (HEADER, HEADER + pad8(300) + 8 * 300 + 4 * 300 * 25);
    let low = good[levels_at..levels_at + 300]
        .iter()
        .position(|&l| l == 0)
        .unwrap();
    let high = good[levels_at..levels_at + 300]
        .iter()
        .position(|&l| l > 0)
        .unwrap();
    let upper_at = HEADER + pad8(300) + 8 * high;
    let block = u64::from_le_bytes(good[upper_at..upper_at + 8].try_into().unwrap()) as usize;
    let mut bad = good.clone();
    let slot = upper_start + 4 * block;
    bad[slot..slot + 4].copy_from_slice(&1u32.to_le_bytes());
    bad[slot + 4..slot + 8].copy_from_slice(&(low as u32).to_le_bytes());
    std::fs::write(&links, &bad).unwrap();
    let err = FrozenGraph::load(dir.path(), "g", 300)
        .err()
        .expect("refused");
    assert!(err.to_string().contains("below its level"), "{err}");
    // Truncated.
    std::fs::write(&links, &good[..good.len() - 4]).unwrap();
    assert!(FrozenGraph::load(dir.path(), "g", 300).is_err());
    std::fs::write(&links, &good).unwrap();
    let vectors = dir.path().join("g.vectors");
    let v = std::fs::read(&vectors).unwrap();
    std::fs::write(&vectors, &v[..v.len() - 1]).unwrap();
    assert!(FrozenGraph::load(dir.path(), "g", 300).is_err());
}

#[test]
fn a_header_whose_sizes_overflow_is_refused_not_trusted() {
    let dim = 16;
    let data = clustered(50, dim, 5, 0.6, 9);
    let g = build(&data, dim, Codec::F32, 50);
    let dir = tempfile::tempdir().unwrap();
    g.dump(dir.path(), "g").unwrap();
    let links = dir.path().join("g.links");
    let mut bad = std::fs::read(&links).unwrap();
    bad[8..16].copy_from_slice(&(u64::MAX / 3).to_le_bytes());
    std::fs::write(&links, &bad).unwrap();
    let err = FrozenGraph::load(dir.path(), "g", 50)
        .err()
        .expect("refused");
    assert!(err.to_string().contains("implausible"), "{err}");
}

/// Parallel insertion can strand a node (its last incoming link dropped when a full neighbour list is
/// re-selected), which no walk then finds; `insert` links every such node back. Over builds with different data
/// and batch splits, every row is reachable and finds itself first with a beam as wide as the graph.
#[test]
fn after_parallel_builds_every_row_is_reachable_and_finds_itself() {
    let dim = 32;
    for seed in 0..6u64 {
        let data = clustered(600, dim, 10, 0.6, 100 + seed);
        let mut g = GraphBuilder::new(
            dim,
            HnswParams {
                m: 12,
                ef_construction: 80,
                codec: Codec::I8,
            },
        );
        for chunk in data.chunks(dim * (100 + 50 * seed as usize)) {
            let rows: Vec<&[f32]> = chunk.chunks_exact(dim).collect();
            g.insert(&rows);
        }
        let (start, _) = g.entry_point().unwrap();
        let reached = g.reachable(start as usize);
        let stranded: Vec<usize> = (0..600).filter(|&i| !reached[i]).collect();
        assert!(
            stranded.is_empty(),
            "seed {seed}: stranded rows {stranded:?}"
        );
        let g = g.freeze();
        for id in 0..600 {
            let v = &data[id * dim..(id + 1) * dim];
            let found = g.search(v, 1, 600, None);
            assert_eq!(found[0].0, id, "seed {seed}");
        }
    }
}
