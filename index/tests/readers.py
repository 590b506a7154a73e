"""Reads a regionseek index's Parquet region table with third-party readers, as a user would.

usage: python readers.py INDEX_DIR EXPECTED_ROWS DIM   (needs pyarrow and duckdb; pinned in tests/fixtures/requirements.txt)
"""
import glob
import json
import sys

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

index_dir, rows, dim = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
manifest = json.load(open(f"{index_dir}/manifest.json"))
files = [f"{index_dir}/{s['file']}" for s in manifest["segments"]]
table = pa.concat_tables([pq.read_table(f) for f in files])
assert table.num_rows == rows, (table.num_rows, rows)
first = table.slice(0, 1).to_pylist()[0]
assert len(first["embedding"]) == dim
assert len(first["box"]) == 4
assert set(first["mask_rle"]) == {"size", "counts"}, first["mask_rle"]
con = duckdb.connect()
files_sql = "[" + ",".join(f"'{f}'" for f in files) + "]"
n, methods = con.execute(f"select count(*), count(distinct method) from read_parquet({files_sql})").fetchone()
assert n == rows
size = con.execute(f"select mask_rle.size[1], mask_rle.counts, len(embedding) from read_parquet({files_sql}) limit 1").fetchone()
assert size[2] == dim
print(json.dumps({"rows": n, "methods": methods, "first_image": first["image"], "mask_height": size[0]}))
