#!/usr/bin/env bash
# The main job: builds Warden and the example agents, then runs each example
# with `warden run`, printing its real output.
#
# LLM examples talk to the provider in WARDEN_LLM_BASE_URL (with the key in
# WARDEN_LLM_API_KEY and the model in WARDEN_DEMO_MODEL) when set. Otherwise
# they use demo-services, a stand-in OpenAI-compatible server on loopback,
# which also serves the small web page the HTTP examples fetch (this
# machine may have no other network).
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v rustup >/dev/null; then rustup target add wasm32-wasip2 >/dev/null 2>&1 || true; fi

echo "==> building warden"
cargo build -p warden-host -p warden-tests --bins
echo "==> building the example agents (wasm32-wasip2)"
cargo build --release --target wasm32-wasip2 --manifest-path examples/Cargo.toml --target-dir target/guests

WARDEN=target/debug/warden
AGENTS=target/guests/wasm32-wasip2/release
export WARDEN_DATA_DIR="${WARDEN_DATA_DIR:-$PWD/target/demo-data}"

services_log=$(mktemp)
target/debug/demo-services >"$services_log" &
services_pid=$!
trap 'kill $services_pid 2>/dev/null; rm -f "$services_log"' EXIT
for _ in $(seq 50); do [ -s "$services_log" ] && break; sleep 0.1; done
WEB=$(head -n1 "$services_log")
if [ -z "${WARDEN_LLM_BASE_URL:-}" ]; then
  export WARDEN_LLM_BASE_URL="$WEB/v1"
  echo "==> no WARDEN_LLM_BASE_URL: LLM examples use the stand-in provider at $WARDEN_LLM_BASE_URL"
fi
MODEL="${WARDEN_DEMO_MODEL:-demo-model}"

run() {
  echo
  echo "==> warden run $*"
  "$WARDEN" run "$@"
}

run "$AGENTS/hello.wasm" --input '{"name":"Warden"}'
run "$AGENTS/kv_counter.wasm" --input '{"key":"demo-visits"}'
run "$AGENTS/kv_counter.wasm" --input '{"key":"demo-visits"}'
run "$AGENTS/http_fetch.wasm" --input "{\"url\":\"$WEB/docs/wasm\"}" --allow-http "$WEB"
echo
echo "==> the same fetch without --allow-http is refused (exit 1 expected):"
"$WARDEN" run "$AGENTS/http_fetch.wasm" --input "{\"url\":\"$WEB/docs/wasm\"}" || true
run "$AGENTS/llm_summarize.wasm" --allow-model "$MODEL" --max-tokens 500 \
  --input "{\"model\":\"$MODEL\",\"text\":\"Warden runs each AI agent as a fresh WebAssembly component instance under hard budgets for time, fuel, memory, tokens and cost, with only the capabilities the host grants.\",\"max_words\":20}"
run "$AGENTS/research_agent.wasm" --allow-model "$MODEL" --allow-http "$WEB" --max-tokens 4000 \
  --input "{\"model\":\"$MODEL\",\"question\":\"What is WebAssembly? Start at $WEB/docs/wasm\"}"
echo
echo "==> the research agent with a 300-token budget stops cleanly:"
run "$AGENTS/research_agent.wasm" --allow-model "$MODEL" --allow-http "$WEB" --max-tokens 300 \
  --input "{\"model\":\"$MODEL\",\"question\":\"What is WebAssembly? Start at $WEB/docs/wasm\"}"
