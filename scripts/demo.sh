#!/usr/bin/env bash
# The main job: builds Warden and the example agents, starts `warden dev`
# (control plane + node in one process, SQLite under a data dir), publishes
# the examples to its registry, submits runs through the control plane and
# prints their results.
#
# LLM examples talk to the provider in WARDEN_LLM_BASE_URL (key in
# WARDEN_LLM_API_KEY, model in WARDEN_DEMO_MODEL) when set. Otherwise
# `warden dev --mock-llm` answers them with a scripted stand-in on loopback,
# which also serves the small page the HTTP examples fetch (this machine may
# have no other network); with a real provider that page comes from
# demo-services.
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v rustup >/dev/null; then rustup target add wasm32-wasip2 >/dev/null 2>&1 || true; fi

echo "==> building warden"
cargo build -p warden-cli -p warden-tests --bins
echo "==> building the example agents (wasm32-wasip2)"
cargo build --release --target wasm32-wasip2 --manifest-path examples/Cargo.toml --target-dir target/guests

WARDEN=target/debug/warden
AGENTS=target/guests/wasm32-wasip2/release
DATA="${WARDEN_DEMO_DATA:-$PWD/target/demo-data}"
rm -rf "$DATA"
mkdir -p "$DATA"

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
MODEL="${WARDEN_DEMO_MODEL:-demo-model}"
dev_flags=()
if [ -z "${WARDEN_LLM_BASE_URL:-}" ]; then
  # No provider: warden's own stand-in answers LLM calls and serves the
  # page the HTTP examples fetch.
  dev_flags+=(--mock-llm)
else
  # A real provider: the page the HTTP examples fetch comes from
  # demo-services on loopback (this machine may have no other network).
  services_log="$DATA/demo-services.out"
  target/debug/demo-services >"$services_log" &
  pids+=($!)
  for _ in $(seq 100); do [ -s "$services_log" ] && break; sleep 0.1; done
  WEB=$(head -n1 "$services_log")
fi

echo "==> starting warden dev ${dev_flags[*]+"${dev_flags[*]}"} (data in $DATA)"
"$WARDEN" dev --listen 127.0.0.1:0 --data-dir "$DATA" --slots 4 ${dev_flags[@]+"${dev_flags[@]}"} >"$DATA/dev.out" 2>"$DATA/dev.log" &
pids+=($!)
for _ in $(seq 100); do grep -q "warden node" "$DATA/dev.out" 2>/dev/null && break; sleep 0.1; done
export WARDEN_CONTROL_PLANE=$(grep -o 'http://[0-9.:]*' "$DATA/dev.out" | head -n1)
echo "    control plane at $WARDEN_CONTROL_PLANE"
CONSOLE=$(grep -o 'console at http://[0-9.:]*/' "$DATA/dev.out" | head -n1 | cut -d' ' -f3)
echo "    web console and HTTP API at $CONSOLE"
if [ -z "${WARDEN_LLM_BASE_URL:-}" ]; then
  WEB=$(grep '^mock LLM at' "$DATA/dev.out" | grep -o 'http://[0-9.:]*' | head -n1)
  echo "    no WARDEN_LLM_BASE_URL: LLM calls go to warden dev --mock-llm at $WEB/v1 (scripted answers)"
fi

echo
echo "==> publishing the examples"
# The stand-in web server is on loopback. A wildcard origin (`*://*:*`)
# covers public hosts only, so the demo publishes each manifest that
# declares HTTP with the stand-in's address added, named literally.
mkdir -p "$DATA/manifests"
for agent in hello kv_counter http_fetch llm_summarize research_agent; do
  name="${agent//_/-}"
  manifest="$DATA/manifests/$name.toml"
  sed "s|^http = \[\(.*\)\]|http = [\1, \"$WEB\"]|" "examples/$name/warden.toml" >"$manifest"
  "$WARDEN" publish "$AGENTS/$agent.wasm" "$name@0.1.0" --manifest "$manifest"
done
echo "    (http-fetch and research-agent also declare $WEB, the loopback stand-in)"

submit() {
  echo
  echo "==> warden submit $* --wait"
  "$WARDEN" submit "$@" --wait
}

submit hello@0.1.0 --input '{"name":"Warden"}'
submit kv-counter@0.1.0 --input '{"key":"demo-visits"}'
submit kv-counter@0.1.0 --input '{"key":"demo-visits"}'
submit http-fetch@0.1.0 --input "{\"url\":\"$WEB/docs/wasm\"}" --allow-http "$WEB"
echo
echo "==> the same fetch with a grant that does not cover it is refused (exit 1 expected):"
"$WARDEN" submit http-fetch@0.1.0 --input "{\"url\":\"$WEB/docs/wasm\"}" --allow-http https://example.com --wait || true
submit llm-summarize@0.1.0 --allow-model "$MODEL" --max-tokens 500 \
  --input "{\"model\":\"$MODEL\",\"text\":\"Warden runs each AI agent as a fresh WebAssembly component instance under hard budgets for time, fuel, memory, tokens and cost, with only the capabilities the host grants.\",\"max_words\":20}"
submit research-agent@0.1.0 --allow-model "$MODEL" --allow-http "$WEB" --max-tokens 4000 \
  --input "{\"model\":\"$MODEL\",\"question\":\"What is WebAssembly? Start at $WEB/docs/wasm\"}"
echo
echo "==> the research agent with a 300-token budget stops cleanly:"
submit research-agent@0.1.0 --allow-model "$MODEL" --allow-http "$WEB" --max-tokens 300 \
  --input "{\"model\":\"$MODEL\",\"question\":\"What is WebAssembly? Start at $WEB/docs/wasm\"}"

echo
echo "==> warden runs list"
"$WARDEN" runs list
LAST=$("$WARDEN" runs list --limit 1 --json | grep -o '"run_id":"[^"]*"' | head -1 | cut -d'"' -f4)
echo
echo "==> warden runs logs $LAST   (its agent's log lines, kept by the control plane)"
"$WARDEN" runs logs "$LAST"
echo
echo "==> warden usage   (per tenant, agent and day)"
"$WARDEN" usage
echo
echo "==> warden nodes list"
"$WARDEN" nodes list
echo
if command -v curl >/dev/null; then
  echo "==> the HTTP API: curl ${CONSOLE}v1/runs?limit=2   (the JSON the console reads)"
  curl -s "${CONSOLE}v1/runs?limit=2"
  echo
  echo
fi
echo "==> the same agents also run locally, without a control plane:"
echo "==> warden run $AGENTS/hello.wasm --input '{\"name\":\"local\"}'"
"$WARDEN" run "$AGENTS/hello.wasm" --input '{"name":"local"}' --data-dir "$DATA/local"
if [ -n "${WARDEN_DEMO_KEEP:-}" ]; then
  echo
  echo "==> WARDEN_DEMO_KEEP is set: warden dev stays up; open $CONSOLE in a browser (Ctrl-C stops it)"
  wait
fi
