#!/usr/bin/env bash
# The Temporal figures, all against one freshly started dev server (in memory), in one run:
#   1. launch -> job running and launch -> workflow closed through Temporal, p50/p99, one
#      launch at a time (kodo-temporal-bench latency),
#   2. trivial workflows (one activity that returns at once) completed per second by kodo's
#      worker and by Temporal's Python SDK worker, the same driver feeding both, and each
#      worker's peak RSS,
#   3. 100 executions at once on one worker (each job 5 s): all finish; the worker's peak RSS.
#   bench/temporal.sh [build-dir [N]]   (after .ci/setup)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
count=${2:-1000}
venv=.venv-temporal
work=$(mktemp -d /tmp/kodo-temporal-bench-XXXXXX)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port)
address=127.0.0.1:$port
"$venv/bin/temporal" server start-dev --headless --ip 127.0.0.1 --port "$port" \
  --http-port "$(free_port)" --metrics-port "$(free_port)" --ui-port "$(free_port)" \
  --log-level error >"$work/server.log" 2>&1 &
server=$!
worker=""
cleanup() {
  [[ -n $worker ]] && kill "$worker" 2>/dev/null || true
  kill "$server" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
until "$venv/bin/temporal" operator cluster health --address "$address" 2>/dev/null | grep -q SERVING; do
  sleep 0.2
done

# Starts a worker in the background ($worker) and waits for its "ready".
start_worker() {
  "$@" >"$work/worker.out" 2>&1 &
  worker=$!
  until grep -q ready "$work/worker.out"; do sleep 0.1; done
}
stop_worker() {
  kill -TERM "$worker"
  wait "$worker" || true
  worker=""
  grep -v ready "$work/worker.out"
}
drive() { "$venv/bin/python" bench/temporal_driver.py "$address" "$@"; }

echo "== 1. latency through Temporal (kodo's worker, in process)"
"$build/bin/kodo-temporal-bench" latency "$address" latency 200

echo "== 2. trivial workflows per second, $count each, 50 at once"
echo "-- kodo's worker"
start_worker "$build/bin/kodo-temporal-bench" worker "$address" kodo-trivial 0
drive kodo-trivial "$count" 50
stop_worker
echo "-- Temporal's Python SDK worker (temporalio $("$venv/bin/pip" show temporalio | sed -n 's/^Version: //p'))"
start_worker "$venv/bin/python" bench/temporal_py_worker.py "$address" py-trivial 0
drive py-trivial "$count" 50
stop_worker

echo "== 3. 100 executions at once on one worker, each job 5 s"
echo "-- kodo's worker"
start_worker "$build/bin/kodo-temporal-bench" worker "$address" kodo-hundred 5000
drive kodo-hundred 100 100
stop_worker
echo "-- Temporal's Python SDK worker"
start_worker "$venv/bin/python" bench/temporal_py_worker.py "$address" py-hundred 5000
drive py-hundred 100 100
stop_worker
