#!/usr/bin/env bash
# Builds the Python package from this checkout into .venv-ci (as `pip install ./python` does) and runs its
# pytest suite. Part of the README's test command, after `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$PWD/vendor/onnxruntime/libonnxruntime.so.1.32.0}"
[ -x .venv-ci/bin/python ] || python3 -m venv .venv-ci
py=.venv-ci/bin/python
# maturin's build hook runs the `maturin` program of the venv.
export PATH="$PWD/.venv-ci/bin:$PATH"
$py -m pip install --quiet -r python/requirements-test.txt
# The dev profile is the one `cargo test` built: the wheel reuses its compiled dependencies (a release wheel,
# `pip install ./python`, builds them once more).
MATURIN_PEP517_ARGS="--profile dev" $py -m pip install --quiet --no-build-isolation --force-reinstall --no-deps ./python
# The parity tests compare the package with the CLI built from the same sources.
cargo build --quiet --bin regionseek
export REGIONSEEK_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/regionseek"
# From outside the checkout, so that `import regionseek` finds the installed package, not python/regionseek.
cd python/tests && ../../$py -m pytest -q -p no:cacheprovider "$@"
