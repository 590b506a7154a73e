"""The README's side-by-side table from the JSON lines of `regionseek bench-index` and
`bench/ann_side_by_side.py` (same keys), run in the same sitting on the same exported vectors.

For each engine and corpus: recall@10 and p50 at every beam width, the build rate, and the headline figure,
the p50 of the cheapest beam width whose recall@10 reaches the target (0.95 unless --target).
usage: python3 bench/summarize_ann.py [--target 0.95] FILE.jsonl [FILE.jsonl ...]
"""
import json
import sys
from collections import defaultdict


def main(argv):
    target = 0.95
    if argv[:1] == ["--target"]:
        target, argv = float(argv[1]), argv[2:]
    rows = []
    for path in argv:
        for line in open(path):
            line = line.strip()
            if line.startswith("{"):
                rows.append(json.loads(line))
    groups = defaultdict(list)
    for r in rows:
        if r.get("filter_keeps"):
            continue
        engine = r["engine"] + (f" ({r['codec']})" if r.get("codec") else "")
        groups[(r["dataset"], r["vectors"], engine)].append(r)
    print(f"| corpus | vectors | engine | recall@10 by ef | p50 ms by ef | p50 ms at recall ≥ {target} | build vectors/s |")
    print("|---|---|---|---|---|---|---|")
    for (dataset, n, engine), rs in sorted(groups.items()):
        rs.sort(key=lambda r: r["ef_search"])
        recalls = " / ".join(f"{r['ef_search']}: {r['recall_at_10']:.3f}" for r in rs)
        p50s = " / ".join(f"{r['query_p50_ms']:.2f}" for r in rs)
        good = [r for r in rs if r["recall_at_10"] >= target]
        headline = f"{good[0]['query_p50_ms']:.2f} (ef {good[0]['ef_search']})" if good else "not reached"
        print(f"| {dataset} | {n:,} | {engine} | {recalls} | {p50s} | {headline} | {rs[0]['build_per_s']:,.0f} |")
    filtered = [r for r in rows if r.get("filter_keeps")]
    if filtered:
        print()
        print("| corpus | vectors | engine | filter keeps | recall@10 by ef | p50 ms by ef |")
        print("|---|---|---|---|---|---|")
        fg = defaultdict(list)
        for r in filtered:
            engine = r["engine"] + (f" ({r['codec']})" if r.get("codec") else "")
            fg[(r["dataset"], r["vectors"], engine, r["filter_keeps"])].append(r)
        for (dataset, n, engine, keeps), rs in sorted(fg.items()):
            rs.sort(key=lambda r: r["ef_search"])
            recalls = " / ".join(f"{r['ef_search']}: {r['recall_at_10']:.3f}" for r in rs)
            p50s = " / ".join(f"{r['query_p50_ms']:.2f}" for r in rs)
            print(f"| {dataset} | {n:,} | {engine} | {keeps:.0%} | {recalls} | {p50s} |")
    extra = [r for r in rows if "graph_bytes_per_vector" in r and not r.get("filter_keeps")]
    if extra:
        print()
        print("| corpus | vectors | codec | graph bytes/vector | RSS added/vector | dump s | reload s | reload checksum s |")
        print("|---|---|---|---|---|---|---|---|")
        seen = set()
        for r in extra:
            key = (r["dataset"], r["vectors"], r["codec"])
            if key in seen:
                continue
            seen.add(key)
            rss = r.get("rss_bytes_per_vector")
            print(f"| {r['dataset']} | {r['vectors']:,} | {r['codec']} | {r['graph_bytes_per_vector']:.0f} | "
                  f"{rss:.0f} | {r['dump_s']:.2f} | {r['reload_s']:.3f} | {r['reload_checksum_s']:.3f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
