#!/bin/sh
# Builds a Python agent (a directory with app.py) into a component of the
# warden:agent/agent world. componentize-py generates the world's bindings
# (the `wit_world` package the SDK imports) from wit/ as it builds.
#
#   guest-sdk/python/build.sh examples/python/kv-counter /tmp/kv_counter.wasm
set -eu
sdk=$(cd "$(dirname "$0")" && pwd)
agent=${1:?usage: build.sh AGENT_DIR [OUT.wasm]}
out=${2:-agent.wasm}
exec componentize-py -d "$sdk/../../wit" -w agent componentize app \
    -p "$agent" -p "$sdk" -o "$out"
