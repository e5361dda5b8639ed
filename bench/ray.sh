#!/usr/bin/env bash
# The Ray figures, all on one Ray head in a private network and PID namespace
# (tests/transport-ray/in_ray_namespace.sh), on kodosumi-shaped runners whose queues are filled
# before the clock starts (RUNNERS runners x EVENTS stdout lines each, plus 6 events of the run):
#   1. kodosumi's spooler pattern: get_nowait_batch(min(qsize, 10)), runner after runner,
#   2. a bare Python drain at batches of 1,000,
#   3. kodo-host spool, transport ray -> sqlite: drained, spilled, stored and acked, with the
#      bridge's memory,
#   4. kodo-bench --transport ray: kodo's own producers through Ray, lost 0 / duplicated 0.
# 1 to 3 are timed alike, from the command's start to the last event (interpreter, ray.init and
# finding the runners included), and over their steady part (the drain loop; 10% to 90% stored).
#   bench/ray.sh [build-dir]   (after .ci/setup; RUNNERS (default 20) and EVENTS (10000);
#   KODOSUMI_RUNNERS (default: RUNNERS, at most 20) runners for the slow pattern 1; the memory
#   of the runners' worker processes is printed after the spawn of 3)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
if [[ "${KODO_RAY_BENCH_INSIDE:-}" != 1 ]]; then
  export KODO_RAY_BENCH_INSIDE=1
  exec tests/transport-ray/in_ray_namespace.sh "$PWD/$build/venv-ray" "$0" "$@"
fi
runners=${RUNNERS:-20}
events=${EVENTS:-10000}
script=tests/transport-ray/kodosumi_runners.py
work=$KODO_RAY_TMP/bench
mkdir -p "$work"
fids() { python3 -c "print(','.join('%s%020d' % ('$1', i) for i in range(${2:-$runners})))"; }
py() { "$KODO_RAY_PYTHON" "$script" "$@"; }
total=$((runners * (events + 6)))
slow=${KODOSUMI_RUNNERS:-$((runners < 20 ? runners : 20))}
# A runner is two Ray workers (its actor and its queue's), about 100 MB together here: refuse
# what this machine cannot hold rather than push it into the OOM killer.
need=$((runners * 120 + 2048))
available=$(awk '/^MemAvailable:/ {print int($2 / 1024)}' /proc/meminfo)
if ((available < need)); then
  echo "bench/ray.sh: $runners runners need about $need MB, $available MB available; set RUNNERS lower" >&2
  exit 1
fi

# PSS (each shared page split among its users) and RSS of the runners' Ray workers: the
# Runner actors and their queues' actors.
runner_memory() {
  local pid pss=0 rss=0 workers=0 p r
  for pid in $(pgrep -f '^ray::(Runner|_QueueActor)' || true); do
    p=$(awk '/^Pss:/ {print $2}' "/proc/$pid/smaps_rollup" 2>/dev/null) || continue
    r=$(awk '/^Rss:/ {print $2}' "/proc/$pid/smaps_rollup" 2>/dev/null) || continue
    pss=$((pss + ${p:-0})) rss=$((rss + ${r:-0})) workers=$((workers + 1))
  done
  echo "runner workers: $workers processes, PSS $((pss / 1024)) MB ($((pss / 1024 / runners)) MB" \
    "per runner), RSS $((rss / 1024)) MB ($((rss / 1024 / runners)) MB per runner)"
}

echo "== 1. kodosumi's spooler pattern, batches of 10, $slow runners x $((events + 6)) events"
py spawn --fids "$(fids b000 "$slow")" --lines "$events" --preload
py drain --fids "$(fids b000 "$slow")" --batch 10 --since "$(date +%s.%N)"
py kill --fids "$(fids b000 "$slow")"

echo "== 2. bare Python drain, batches of 1,000"
py spawn --fids "$(fids c000)" --lines "$events" --preload
py drain --fids "$(fids c000)" --batch 1000 --since "$(date +%s.%N)"
py kill --fids "$(fids c000)"

echo "== 3. kodo-host spool, ray -> sqlite, $runners runners x $((events + 6)) events"
free -m | awk '/^Mem:/ {print "before the spawn: " $3 " MB used, " $7 " MB available"}'
py spawn --fids "$(fids a000)" --lines "$events" --preload
free -m | awk '/^Mem:/ {print "after the spawn: " $3 " MB used, " $7 " MB available"}'
runner_memory
# The clock starts before the host does, as the bare drain's starts before its interpreter:
# both figures are over the whole run, start to last event (the host's start, the bridge's
# ray.init, its drainer actors and discovery included).
started=$(date +%s.%N)
KODO_EVENT_TRANSPORT=ray KODO_RAY_SPILL_DIR="$work/spill" KODO_RAY_DISCOVER_MS=100 \
  "$build/bin/kodo-host" --plugin-dir "$build/plugins" --exec-dir "$work/execution" \
  --address 127.0.0.1:0 spool >"$work/spool.log" 2>&1 &
spool=$!
until url=$(grep -o 'http://127.0.0.1:[0-9]*/metrics' "$work/spool.log") 2>/dev/null; do sleep 0.05; done
up=$(date +%s.%N)
figure() { curl -s "$url" | awk -v n="$1" '$1 == n {print $2}'; }
first="" low="" high=""
peak=0
while :; do
  stored=$(figure kodo_events_stored_total)
  stored=${stored%.*}
  now=$(date +%s.%N)
  [[ -z $first && $stored -gt 0 ]] && first=$now
  # The steady rate: from 10% to 90% of the events stored, past the ramp and before the tail.
  [[ -z $low && $stored -ge $((total / 10)) ]] && low=$now low_n=$stored
  [[ -z $high && $stored -ge $((total * 9 / 10)) ]] && high=$now high_n=$stored
  bridge=$(figure kodo_transport_bridge_pid)
  rss=$(awk '/VmRSS/ {print $2}' "/proc/${bridge%.*}/status" 2>/dev/null || echo 0)
  ((rss > peak)) && peak=$rss
  ((stored >= total)) && break
  sleep 0.05
done
since() { awk "BEGIN {printf \"%.2f\", $1 - $started}"; }
echo "stored $total events: $(awk "BEGIN {printf \"%.0f\", $total / ($now - $started)}")" \
  "events/s over the whole run ($(since "$now") s from the host's start; metrics up at" \
  "$(since "$up") s, first event stored at $(since "$first") s), steady (10% to 90% stored)" \
  "$(awk "BEGIN {d = $high - $low; printf \"%.0f\", ($high_n - $low_n) / (d > 0 ? d : 0.05)}")" "events/s;" \
  "drain batches $(figure kodo_transport_drain_batches_total), mean" \
  "$(figure kodo_transport_drain_batch_mean); bridge RSS peak $((peak / 1024)) MB"
grep '^kodo_ray_bridge' "$work/spool.log" || true
kill "$spool"
wait "$spool" || true

echo "== 4. kodo-bench --transport ray -> sqlite, 100 executions x 1,000 events of 100 bytes"
KODO_RAY_SPILL_DIR="$work/bench-spill" "$build/bin/kodo-bench" --plugin-dir "$build/plugins" \
  --transport ray --executions 100 --events 1000 --payload-bytes 100 2>&1 | tail -1
