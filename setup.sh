#!/usr/bin/env bash
# Fetches what regionseek needs besides Rust crates, into vendor/ (gitignored):
#   - CLIP's BPE vocabulary, from the open_clip_torch wheel on PyPI (the tokenizer for models without tokenizer.json);
#   - ONNX Runtime's shared library (CPU), from the onnxruntime wheel on PyPI, for the SAM stage: regionseek finds
#     vendor/onnxruntime/libonnxruntime.so.* by itself, or wherever ORT_DYLIB_PATH points.
#   - cmake and nasm (Debian packages), which cargo needs to build libjpeg-turbo, the JPEG decoder Pillow uses,
#     from source into the binary (src/decode/): nothing of it is needed at run time;
#   - libde265-dev and libdav1d-dev (Debian packages; pkg-config and a C++ compiler to find and build against
#     them): the HEVC and AV1 decoders of the libheif that cargo builds into the binary for HEIC and AVIF
#     photos (the default `heif` feature). The binary then needs their runtime libraries, libde265-0 and
#     libdav1d6, which these packages pull in.
# Idempotent: files already present are kept.
set -euo pipefail
cd "$(dirname "$0")"

packages="cmake nasm pkg-config g++ libde265-dev libdav1d-dev"
if ! command -v cmake >/dev/null || ! command -v nasm >/dev/null || ! command -v g++ >/dev/null \
   || ! pkg-config --exists libde265 dav1d 2>/dev/null; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  if [ -n "$SUDO" ] && ! command -v sudo >/dev/null; then
    echo "setup: the build needs $packages; install them (apt-get install $packages)" >&2
    exit 1
  fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $packages >/dev/null
fi
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
ORT_VERSION=1.32.0
if [ ! -s "vendor/onnxruntime/libonnxruntime.so.$ORT_VERSION" ]; then
  tmp=$(mktemp -d)
  "$py" -m pip download --quiet --no-deps "onnxruntime==$ORT_VERSION" -d "$tmp"
  "$py" - "$tmp"/onnxruntime-*.whl "$ORT_VERSION" <<'PY'
import sys, zipfile, os
z = zipfile.ZipFile(sys.argv[1])
name = f"onnxruntime/capi/libonnxruntime.so.{sys.argv[2]}"
os.makedirs("vendor/onnxruntime", exist_ok=True)
part = "vendor/onnxruntime/.lib.part"
open(part, "wb").write(z.read(name))
os.replace(part, f"vendor/onnxruntime/libonnxruntime.so.{sys.argv[2]}")
PY
  rm -rf "$tmp"
fi
echo "setup: vendor/ ready ($(ls vendor | tr '\n' ' '))"
