#!/usr/bin/env bash
# The test command: unit and integration tests of the whole workspace. The
# integration tests build their guest components (wasm32-wasip2) first.
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v rustup >/dev/null; then rustup target add wasm32-wasip2 >/dev/null; fi
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
