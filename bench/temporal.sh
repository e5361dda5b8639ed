#!/usr/bin/env bash
# The Temporal figures, all against one freshly started dev server (in memory), in one run:
#   1. launch -> job running and launch -> workflow closed through Temporal, p50/p99, one
#      launch at a time (kodo-temporal-bench latency),
#   2. trivial workflows (one activity that returns at once) completed per second by kodo's
#      worker and by Temporal's Python SDK worker, the same driver feeding both, and each
#      worker's peak RSS,
#   3. 100 executions at once on one worker (each job 5 s): all finish; the worker's peak RSS,
#   4. launch to first stored event through kodo-host: direct mode beside execution-mode
#      temporal with one `kodo-host worker` (LAUNCHES=100 one at a time), p50/p99.
#   5. 100 executions at once on one `kodo-host worker` (launched through kodo-host serve, each
#      flow 5 s): all finish; the worker's peak RSS, its flows excluded.
#   bench/temporal.sh [build-dir [N]]   (after .ci/setup; SECTIONS=4 runs only section 4)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
count=${2:-1000}
sections=${SECTIONS:-12345}
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
host=""
cleanup() {
  [[ -n $worker ]] && kill "$worker" 2>/dev/null || true
  [[ -n $host ]] && kill "$host" 2>/dev/null || true
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

if [[ $sections == *1* ]]; then
echo "== 1. latency through Temporal (kodo's worker, in process)"
"$build/bin/kodo-temporal-bench" latency "$address" latency 200
fi

if [[ $sections == *2* ]]; then
echo "== 2. trivial workflows per second, $count each, 50 at once"
echo "-- kodo's worker"
start_worker "$build/bin/kodo-temporal-bench" worker "$address" kodo-trivial 0
drive kodo-trivial "$count" 50
stop_worker
echo "-- Temporal's Python SDK worker (temporalio $("$venv/bin/pip" show temporalio | sed -n 's/^Version: //p'))"
start_worker "$venv/bin/python" bench/temporal_py_worker.py "$address" py-trivial 0
drive py-trivial "$count" 50
stop_worker
fi

if [[ $sections == *3* ]]; then
echo "== 3. 100 executions at once on one worker, each job 5 s"
echo "-- kodo's worker"
start_worker "$build/bin/kodo-temporal-bench" worker "$address" kodo-hundred 5000
drive kodo-hundred 100 100
stop_worker
echo "-- Temporal's Python SDK worker"
start_worker "$venv/bin/python" bench/temporal_py_worker.py "$address" py-hundred 5000
drive py-hundred 100 100
stop_worker
fi

if [[ $sections == *4* ]]; then
echo "== 4. launch to first stored event: kodo-host direct beside execution-mode temporal"
launches=${LAUNCHES:-100}
printf '#!/bin/sh\necho hi\necho '"'"'{"kind":"final","payload":1}'"'"' >&3\n' >"$work/quick.sh"
chmod +x "$work/quick.sh"
flow="quick=$work/quick.sh"
host_args=(--plugin-dir "$build/plugins" --exec-dir "$work/execution" --flow "$flow"
           --address 127.0.0.1:0 --shutdown-grace 2)
# Starts kodo-host in the background ($host) and sets $url from its "serving on" line.
start_host() {
  "$build/bin/kodo-host" "${host_args[@]}" "$@" serve >"$work/host.out" 2>&1 &
  host=$!
  until grep -qs "serving on" "$work/host.out"; do sleep 0.1; done
  url=$(grep -o -m1 'http://127.0.0.1:[0-9]*' "$work/host.out")
}
start_host
python3 bench/launch_latency.py "$url" quick "$launches" direct
kill -TERM "$host"; wait "$host" || true
host=""
temporal_args=(--execution-mode temporal --durability-option "host=$address"
               --durability-option task_queue=launch-bench)
start_host "${temporal_args[@]}"
"$build/bin/kodo-host" "${host_args[@]}" "${temporal_args[@]}" worker >"$work/worker.out" 2>&1 &
worker=$!
until grep -qs "kodo-host worker:" "$work/worker.out"; do sleep 0.1; done
python3 bench/launch_latency.py "$url" quick "$launches" "temporal"
kill -TERM "$worker"; wait "$worker" || true
worker=""
kill -TERM "$host"; wait "$host" || true
host=""
fi

if [[ $sections == *5* ]]; then
echo "== 5. 100 executions at once on one kodo-host worker, each flow 5 s"
printf '#!/bin/sh
echo start
sleep 5
echo '"'"'{"kind":"final","payload":1}'"'"' >&3
' \
  >"$work/five.sh"
chmod +x "$work/five.sh"
hundred_args=(--plugin-dir "$build/plugins" --exec-dir "$work/hundred" --flow "five=$work/five.sh"
              --address 127.0.0.1:0 --shutdown-grace 2 --max-running 100
              --execution-mode temporal --durability-option "host=$address"
              --durability-option task_queue=hundred-bench)
"$build/bin/kodo-host" "${hundred_args[@]}" serve >"$work/host.out" 2>&1 &
host=$!
until grep -qs "serving on" "$work/host.out"; do sleep 0.1; done
url=$(grep -o -m1 'http://127.0.0.1:[0-9]*' "$work/host.out")
"$build/bin/kodo-host" "${hundred_args[@]}" worker >"$work/worker.out" 2>&1 &
worker=$!
until grep -qs "kodo-host worker:" "$work/worker.out"; do sleep 0.1; done
python3 bench/temporal_hundred.py "$url" five 100 "$worker"
kill -TERM "$worker"; wait "$worker" || true
worker=""
kill -TERM "$host"; wait "$host" || true
host=""
fi
