#!/usr/bin/env bash
# Fetches what regionseek needs besides Rust crates, into vendor/ (gitignored):
#   - CLIP's BPE vocabulary, from the open_clip_torch wheel on PyPI (the tokenizer for models without tokenizer.json);
# Idempotent: files already present are kept.
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p vendor
py=${PYTHON:-python3}

if [ ! -s vendor/bpe_simple_vocab_16e6.txt.gz ]; then
  tmp=$(mktemp -d)
  "$py" -m pip download --quiet --no-deps open_clip_torch==2.23.0 -d "$tmp"
  "$py" - "$tmp"/open_clip_torch-*.whl <<'PY'
import sys, zipfile, os
z = zipfile.ZipFile(sys.argv[1])
data = z.read("open_clip/bpe_simple_vocab_16e6.txt.gz")
open("vendor/.bpe.part", "wb").write(data)
os.replace("vendor/.bpe.part", "vendor/bpe_simple_vocab_16e6.txt.gz")
PY
  rm -rf "$tmp"
fi
echo "setup: vendor/ ready ($(ls vendor | tr '\n' ' '))"
