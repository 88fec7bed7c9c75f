#!/usr/bin/env bash
# The test command: unit and integration tests of the whole workspace. The
# integration tests build their guest components (wasm32-wasip2) first.
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v rustup >/dev/null; then rustup target add wasm32-wasip2 >/dev/null; fi

# From Debian: a real OCI registry (docker-registry) for the OCI tests, which
# start their own; PostgreSQL 15 and Redis 7 for the store, KV and bridge
# tests, started below for the whole run; Prometheus (and its promtool),
# which the metrics tests start to scrape a node; Chromium, which the console
# test drives. From PyPI: an independent OCI client (oras), bcrypt (for a
# registry's htpasswd), schemathesis, the MCP SDK, Playwright (pointed at
# Debian's Chromium: it downloads no browser) and componentize-py. From npm:
# componentize-js and esbuild.
missing=""
command -v docker-registry >/dev/null 2>&1 || missing="$missing docker-registry"
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing="$missing postgresql"
command -v redis-server >/dev/null 2>&1 || missing="$missing redis-server"
command -v prometheus >/dev/null 2>&1 || missing="$missing prometheus"
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
command -v npm >/dev/null 2>&1 || missing="$missing nodejs npm"
if [ -n "$missing" ]; then
  sudo_=""; [ "$(id -u)" = 0 ] || sudo_="sudo"
  echo "installing$missing (Debian) for the tests"
  $sudo_ apt-get update -qq
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq $missing >/dev/null
fi
python3 -c "import oras, bcrypt" 2>/dev/null || python3 -m pip install -q oras bcrypt
# Schemathesis fuzzes the HTTP API from its OpenAPI document (the `st` command).
command -v st >/dev/null 2>&1 || python3 -m pip install -q schemathesis
python3 -c "import mcp, httpx2" 2>/dev/null || python3 -m pip install -q mcp
python3 -c "import playwright" 2>/dev/null || python3 -m pip install -q playwright
# componentize-py builds Python agents (guest-sdk/python); componentize-js
# and esbuild (npm, global) build JavaScript agents (guest-sdk/js).
command -v componentize-py >/dev/null 2>&1 || python3 -m pip install -q componentize-py==0.25.1
npm_root=$(npm root -g)
[ -d "$npm_root/@bytecodealliance/componentize-js" ] && [ -d "$npm_root/esbuild" ] \
  || npm install -g --silent @bytecodealliance/componentize-js@0.23.0 esbuild@0.28.2

# One PostgreSQL and one Redis for the whole run, on free loopback ports, in
# a temp dir; stopped and removed on exit. Each test makes its own database
# or key prefix on them (testkit/). PostgreSQL refuses to run as root: as
# root it runs as the `postgres` user.
servers=$(mktemp -d /tmp/warden-test-servers.XXXXXX)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
stop_servers() {
  as_pg "$pg_bin/pg_ctl" -D "$servers/pg" -m immediate stop >/dev/null 2>&1 || true
  [ -f "$servers/redis.pid" ] && kill "$(cat "$servers/redis.pid")" 2>/dev/null || true
  rm -rf "$servers"
}
trap stop_servers EXIT
[ "$(id -u)" = 0 ] && chown postgres "$servers"
pg_port=$(free_port)
as_pg "$pg_bin/initdb" -D "$servers/pg" --auth=trust --username=postgres --encoding=UTF8 --no-sync >/dev/null
as_pg "$pg_bin/pg_ctl" -D "$servers/pg" -l "$servers/pg.log" -w -o \
  "-p $pg_port -k $servers -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300" \
  start >/dev/null
export WARDEN_TEST_POSTGRES="postgres://postgres@127.0.0.1:$pg_port/postgres"
redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$servers" --save "" --appendonly no \
  --daemonize yes --pidfile "$servers/redis.pid" --logfile "$servers/redis.log"
export WARDEN_TEST_REDIS="redis://127.0.0.1:$redis_port"
echo "test servers: PostgreSQL on 127.0.0.1:$pg_port, Redis on 127.0.0.1:$redis_port"

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
