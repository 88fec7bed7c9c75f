#!/usr/bin/env bash
# The test command: unit and integration tests of the whole workspace. The
# integration tests build their guest components (wasm32-wasip2) first.
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v rustup >/dev/null; then rustup target add wasm32-wasip2 >/dev/null; fi

# A real OCI registry (Debian's docker-registry), an independent OCI client
# (PyPI's oras) and bcrypt (for a registry's htpasswd) for the OCI tests; the
# tests start their own registries.
if ! command -v docker-registry >/dev/null 2>&1; then
  sudo_=""; [ "$(id -u)" = 0 ] || sudo_="sudo"
  echo "installing docker-registry (Debian) for the OCI tests"
  $sudo_ apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq docker-registry >/dev/null
fi
python3 -c "import oras, bcrypt" 2>/dev/null || python3 -m pip install -q oras bcrypt

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
