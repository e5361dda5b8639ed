#!/usr/bin/env bash
# The Redis figures, all on one freshly started redis-server (no persistence, so the disk does
# not set the pace), so they compare:
#   1. redis-benchmark pipelined XADD (-P 64): a tiny entry, and entries shaped like kodo's
#      (5 fields, 100-byte payload) over 100 streams: what Redis can ingest at all,
#   2. kodo-bench redis -> sqlite, 100 executions x 10,000 events, end to end, with 1, 2 and
#      3 spoolers: ingest, read, store and acknowledge, every event once.
#   bench/redis.sh [build-dir [kodo-bench options]]   (after .ci/setup)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
shift $(( $# > 0 ? 1 : 0 ))
work=$(mktemp -d /tmp/kodo-redis-bench-XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" \
  --logfile "$work/redis.log" --daemonize yes --pidfile "$work/redis.pid"
cleanup() {
  redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.1; done
cli() { redis-cli -p "$port" "$@"; }
rps() { tr '\r' '\n' | grep 'requests per second' | sed 's/.*: \([0-9.]*\) requests per second.*/\1/'; }

echo "== 1. redis-benchmark XADD, pipelined 64, 1,000,000 entries"
cli flushall >/dev/null
echo "tiny entry (1 field): rps=$(redis-benchmark -p "$port" -P 64 -n 1000000 -q \
  XADD bench '*' field value | rps)"
cli flushall >/dev/null
payload=$(head -c 100 /dev/zero | tr '\0' x)
echo "kodo-shaped entry over 100 streams: rps=$(redis-benchmark -p "$port" -P 64 -n 1000000 -q \
  -r 100 XADD 'kodo:events:__rand_int__' '*' timestamp 1764272000.123456 kind agent \
  payload "$payload" seq 12345 username bench | rps)"

echo "== 2. kodo-bench redis -> sqlite, 100 executions x 10,000 events of 100 bytes"
for spoolers in 1 2 3; do
  cli flushall >/dev/null
  echo "-- $spoolers spooler(s)"
  "$build/bin/kodo-bench" --plugin-dir "$build/plugins" --transport redis \
    --transport-option "url=redis://127.0.0.1:$port/0" --executions 100 --events 10000 \
    --payload-bytes 100 --spoolers "$spoolers" "$@" 2>&1 | tail -1
done
