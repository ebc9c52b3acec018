#!/usr/bin/env bash
# The HTTP benchmark: wrk against the idempotency layer, before and after a
# change, in one run on one machine. See docs/benchmarks.md.
#
#   bench/http_load.sh [BEFORE] [SECONDS]
#
# BEFORE is the commit whose layer is compared with the working tree's
# (default df94721: the layer before the async store, when every store call
# went through spawn_blocking); SECONDS the length of each wrk run (10).
# Both servers are bench/http_target/src/main.rs built against each tree,
# each on a fresh durable store file in a temporary directory; with
# IDEMKV_STORAGE_CACHE_MIB in the environment, both stores get that storage
# cache.
#
# Scenarios, each for both versions:
#   fresh  64 connections, a new key per request (claim, run, complete);
#   storm  64 connections over 16 keys, the same payload (replays);
#   wait   1,000 connections send one key to a handler that holds until
#          released (one claims, 999 wait), while 16 connections send fresh
#          keys: their p99 is the figure; then the holder is released.
set -euo pipefail

root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
before=${1:-df94721}
seconds=${2:-10}
command -v wrk > /dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
ulimit -n 8192

work=$(mktemp -d)
server_pid=
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2> /dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

export WRK_DIR="$root/bench/wrk"
targets="$root/target/http_target"

# The earlier tree, with its own server file when it has one (the layer's
# API changes between trees), else today's dropped in.
mkdir -p "$work/before"
git -C "$root" archive "$before" | tar -x -C "$work/before"
if [ ! -f "$work/before/bench/http_target/src/main.rs" ]; then
  mkdir -p "$work/before/bench"
  cp -r "$root/bench/http_target" "$work/before/bench/"
fi
echo "building the server against $before and against the working tree" >&2
cargo build --quiet --release --manifest-path "$work/before/bench/http_target/Cargo.toml" \
  --target-dir "$targets/before"
cargo build --quiet --release --manifest-path "$root/bench/http_target/Cargo.toml" \
  --target-dir "$targets/after"

port=18480
run() { # VERSION SCENARIO wrk-args...
  local version=$1 scenario=$2
  shift 2
  local line
  line=$(wrk "$@" | grep '^RESULT' || echo "RESULT none")
  echo "$version $scenario ${line#RESULT }"
}

for version in before after; do
  port=$((port + 1))
  db="$work/$version.redb"
  "$targets/$version/release/idemkv-http-target" "$db" "$port" > "$work/$version.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 100); do
    curl -s -o /dev/null -X POST "http://127.0.0.1:$port/release" && break
    sleep 0.1
  done
  url="http://127.0.0.1:$port"
  # A warm-up run, not reported.
  wrk -t2 -c64 -d2s --timeout 30s -s "$WRK_DIR/fresh.lua" "$url" -- warmup > /dev/null
  run "$version" fresh -t2 -c64 -d"${seconds}s" --timeout 30s -s "$WRK_DIR/fresh.lua" "$url" -- fresh
  run "$version" storm -t2 -c64 -d"${seconds}s" --timeout 30s -s "$WRK_DIR/storm.lua" "$url" -- storm

  # The held key: a fresh server state for /v1/hold (not yet released).
  kill -INT "$server_pid"; wait "$server_pid" || true
  "$targets/$version/release/idemkv-http-target" "$work/$version-wait.redb" "$port" > "$work/$version-wait.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 100); do
    curl -s -o /dev/null "http://127.0.0.1:$port/" && break
    sleep 0.1
  done
  hold_seconds=$((seconds + 8))
  wrk -t1 -c1000 -d"${hold_seconds}s" --timeout 60s -s "$WRK_DIR/hold.lua" "$url" -- held \
    > "$work/$version-hold.out" 2>&1 &
  hold_pid=$!
  sleep 3
  run "$version" wait-others -t1 -c16 -d"${seconds}s" --timeout 30s -s "$WRK_DIR/fresh.lua" "$url" -- others
  curl -s -o /dev/null -X POST "$url/release"
  wait "$hold_pid" || true
  echo "$version wait-held $(grep '^RESULT' "$work/$version-hold.out" | sed 's/^RESULT //' || echo none)"
  kill -INT "$server_pid"; wait "$server_pid" || true
  server_pid=
done
