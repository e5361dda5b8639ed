#!/usr/bin/env bash
# HTTP figures for kodo-host, printed, never asserted (README, "Benchmarks"):
#  1. VIEWERS SSE viewers over EXECUTIONS live executions producing RATE events/s in total
#     (kodo-tick-flow): host RSS, threads and CPU, and event-to-viewer latency p50/p99
#     (kodo-sse-load; the event's timestamp is set where it is made, before its commit).
#     The executions start ticking once every viewer is connected (KODO_BENCH_JOIN_LATE=1:
#     at once, so that viewers join runs already some seconds old and are caught up first).
#     Beside it, the same client against kodo-sse-push, a trivial epoll server pushing the
#     same frames at the same rate with nothing behind it: what this machine and client can do.
#  2. wrk on /health and on /outputs/status/{fid}, beside wrk on nginx serving a static file
#     of the same size as that status answer.
# Both for this tree's host (build/) and for main's (build-old/, built here from
# `git archive main` unless it exists), in the same run. Every server is started on a free
# loopback port with its own temporary directory and stopped by its pid.
#   bench/http.sh [VIEWERS=10000] [EXECUTIONS=100] [RATE=10000] [SECONDS=15]
#   KODO_BENCH_HOSTS=new bench/http.sh 200 10 1000 5     a quick look at this tree only
#   KODO_BENCH_LIMIT=0 ...                               without the trivial server
#   KODO_BENCH_OLD_DIR=DIR ...      the "old" host from DIR/bin, DIR/plugins (default build-old)
#   KODO_BENCH_NEW_ARGS='--sse-batch 0' ...              more options for this tree's host
#   KODO_BENCH_TMP=/dev/shm ...     the executions' databases on tmpfs: without the disk's
#                                   stalls in the commit, the latency is the HTTP side's
set -euo pipefail
cd "$(dirname "$0")/.."

viewers=${1:-10000}
executions=${2:-100}
rate=${3:-10000}
seconds=${4:-15}
wrk_seconds=5
command -v wrk >/dev/null && command -v nginx >/dev/null ||
  { echo "bench/http.sh needs wrk and nginx-light (.ci/setup installs them)" >&2; exit 2; }
cmake --build build -j2 --target kodo-host kodo-sse-load kodo-sse-push kodo-tick-flow kodo_storage_sqlite \
  kodo_transport_inproc >/dev/null
old_dir=${KODO_BENCH_OLD_DIR:-build-old}
if [[ ${KODO_BENCH_HOSTS:-new old} == *old* && ! -x $old_dir/bin/kodo-host ]]; then
  echo "building main's host in $old_dir/ (once)"
  old_src=$(mktemp -d)
  git archive main | tar -x -C "$old_src"
  cmake -S "$old_src" -B "$old_dir" -G Ninja -DKODO_BUILD_TESTS=OFF >/dev/null
  cmake --build "$old_dir" -j2 --target kodo-host kodo_storage_sqlite kodo_transport_inproc >/dev/null
  rm -rf "$old_src"
fi
ulimit -n "$(ulimit -Hn)"  # the viewers' client needs a descriptor each

tmp=$(mktemp -d "${KODO_BENCH_TMP:-/tmp}/kodo-bench-http-XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
wait_http() {  # url: until it answers (up to 20 s)
  for _ in $(seq 200); do curl -fs -o /dev/null "$1" && return 0; sleep 0.1; done
  echo "no answer from $1" >&2; return 1
}
wrk_line() {  # label url [wrk options]: requests/s and p99
  local out rps p99
  out=$(wrk -t2 -c64 -d"${wrk_seconds}s" --latency "${@:3}" "$2")
  rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  printf '  %-34s %10s req/s  p99 %s\n' "$1" "$rps" "$p99"
}
histogram_line() {  # label metric file: the share of samples in each bucket from 10 to 500 ms
  awk -v label="$1" -v metric="$2" '
    index($0, metric "_bucket") == 1 {
      match($0, /le="[^"]*"/); le = substr($0, RSTART + 4, RLENGTH - 5); n[++k] = le; c[k] = $2 }
    END { if (k == 0 || c[k] == 0) exit; line = "  " label " (host histogram, whole run):"
      for (i = 1; i < k; i++) if (n[i] >= 0.01 && n[i] <= 0.5)
        line = line sprintf(" <=%gms %.2f%%", n[i] * 1000, 100 * c[i] / c[k])
      print line }' "$3"
}
proc_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

run_host() {  # label binary-dir
  local label=$1 dir=$2 port data pid fids=() started ticks0 ticks1 rss_max=0 threads_max=0
  port=$(free_port)
  data=$tmp/$label
  mkdir -p "$data"
  local per_flow=$((rate / executions)) go=$data/go extra=()
  [[ $label == new ]] && read -ra extra <<<"${KODO_BENCH_NEW_ARGS:-}"
  [[ ${KODO_BENCH_JOIN_LATE:-0} == 1 ]] && go=/
  "$dir/bin/kodo-host" --address "127.0.0.1:$port" --plugin-dir "$dir/plugins" \
    --exec-dir "$data/execution" --max-running $((executions + 8)) \
    --flow "tick=$PWD/build/bin/kodo-tick-flow $per_flow $((seconds + 10)) $go" \
    --flow "once=$PWD/build/bin/kodo-tick-flow 10 0.1" "${extra[@]}" serve >"$data/log" 2>&1 &
  pid=$!
  pids+=("$pid")
  wait_http "http://127.0.0.1:$port/health"
  # A finished execution for /outputs/status.
  local done_fid
  done_fid=$(curl -fs -XPOST "http://127.0.0.1:$port/api/v1/executions" -d '{"flow":"once"}' |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["fid"])')
  for _ in $(seq 1 $executions); do
    fids+=("$(curl -fs -XPOST "http://127.0.0.1:$port/api/v1/executions" -d '{"flow":"tick"}' |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["fid"])')")
  done
  sleep 1
  echo "== $label host ($dir): $viewers viewers, $executions executions, $rate events/s, ${seconds}s"
  started=$(date +%s.%N)
  ticks0=$(proc_ticks "$pid")
  KODO_SSE_LOAD_READY=$data/go build/bin/kodo-sse-load "$port" "$seconds" "$viewers" "${fids[@]}" \
    >"$data/load" &
  local load=$!
  while kill -0 "$load" 2>/dev/null; do
    local rss threads
    rss=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
    threads=$(awk '/^Threads/ {print $2}' "/proc/$pid/status")
    ((rss > rss_max)) && rss_max=$rss
    ((threads > threads_max)) && threads_max=$threads
    sleep 1
  done
  wait "$load" || true
  ticks1=$(proc_ticks "$pid")
  local elapsed cpu
  elapsed=$(echo "$(date +%s.%N) - $started" | bc)
  cpu=$(echo "scale=0; 100 * ($ticks1 - $ticks0) / $(getconf CLK_TCK) / $elapsed" | bc)
  sed 's/^/  /' "$data/load"
  # That latency's parts as the host saw them, from its own histograms: before the commit (the
  # flow's pipe, the transport, the spooler's batch and the storage write), and from the commit
  # to the frames handed to each viewer's socket (the rest is the network and the client).
  curl -fs "http://127.0.0.1:$port/metrics" >"$data/metrics"
  histogram_line "event-to-commit" kodo_event_stored_latency_seconds "$data/metrics"
  histogram_line "commit-to-socket, per viewer" kodo_sse_sent_latency_seconds "$data/metrics"
  printf '  host: RSS max %d MB, threads max %d, CPU %d%% of one core\n' $((rss_max / 1024)) \
    "$threads_max" "$cpu"
  sleep 2  # the viewers' connections close
  curl -fs "http://127.0.0.1:$port/outputs/status/$done_fid" >"$data/status.json"
  status_bytes=$(wc -c <"$data/status.json")
  wrk_line "$label /health" "http://127.0.0.1:$port/health"
  wrk_line "$label /outputs/status/{fid} (${status_bytes} B)" \
    "http://127.0.0.1:$port/outputs/status/$done_fid"
  kill "$pid"
  wait "$pid" 2>/dev/null || true
}

run_limit() {  # the same load against the trivial server
  local pid port ticks0 ticks1 started elapsed cpu fids=()
  build/bin/kodo-sse-push $((rate / executions)) 5 >"$tmp/push-port" &
  pid=$!
  pids+=("$pid")
  for _ in $(seq 50); do [[ -s $tmp/push-port ]] && break; sleep 0.1; done
  port=$(cat "$tmp/push-port")
  for i in $(seq 1 "$executions"); do fids+=("run$i"); done
  echo "== limit: the same client against kodo-sse-push (trivial epoll server, 5 ms batches)"
  started=$(date +%s.%N)
  ticks0=$(proc_ticks "$pid")
  build/bin/kodo-sse-load "$port" "$seconds" "$viewers" "${fids[@]}" | sed 's/^/  /'
  ticks1=$(proc_ticks "$pid")
  elapsed=$(echo "$(date +%s.%N) - $started" | bc)
  cpu=$(echo "scale=0; 100 * ($ticks1 - $ticks0) / $(getconf CLK_TCK) / $elapsed" | bc)
  printf '  server: RSS %d MB, CPU %d%% of one core\n' \
    $(($(awk '/^VmRSS/ {print $2}' "/proc/$pid/status") / 1024)) "$cpu"
  kill "$pid"
  wait "$pid" 2>/dev/null || true
}

run_logins() {  # wrk on /outputs/status with logins on: the token checked, the owner too
  local port data pid token fid
  port=$(free_port)
  data=$tmp/logins
  mkdir -p "$data"
  build/bin/kodo-host --address "127.0.0.1:$port" --plugin-dir build/plugins \
    --exec-dir "$data/execution" --auth on --admin-database "sqlite:///$data/admin.db" \
    --secret-key-file "$data/secret.key" --admin-password bench-pw \
    --flow "once=$PWD/build/bin/kodo-tick-flow 10 0.1" serve >"$data/log" 2>&1 &
  pid=$!
  pids+=("$pid")
  wait_http "http://127.0.0.1:$port/health"
  token=$(curl -fs -XPOST "http://127.0.0.1:$port/api/login" \
    -d '{"name":"admin","password":"bench-pw"}' |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["KODOSUMI_API_KEY"])')
  fid=$(curl -fs -XPOST "http://127.0.0.1:$port/api/v1/executions" -H "KODOSUMI_API_KEY: $token" \
    -d '{"flow":"once"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["fid"])')
  sleep 2
  echo "== new host with logins on"
  wrk_line "new /outputs/status/{fid}, a token" "http://127.0.0.1:$port/outputs/status/$fid" \
    -H "KODOSUMI_API_KEY: $token"
  kill "$pid"
  wait "$pid" 2>/dev/null || true
}

[[ ${KODO_BENCH_LIMIT:-1} == 1 ]] && run_limit
for host in ${KODO_BENCH_HOSTS:-new old}; do
  case $host in
    new) run_host new build ;;
    old) run_host old "$old_dir" ;;
  esac
done
[[ ${KODO_BENCH_HOSTS:-new old} == *new* ]] && run_logins

echo "== nginx, a static file of the same size"
port=$(free_port)
mkdir -p "$tmp/nginx/html" "$tmp/nginx/logs"
chmod 755 "$tmp"  # nginx workers run as another user
head -c "$status_bytes" /dev/zero | tr '\0' 'x' >"$tmp/nginx/html/status.json"
chmod -R a+rX "$tmp/nginx"
cat >"$tmp/nginx/nginx.conf" <<EOF
worker_processes 2;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/logs/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  server { listen 127.0.0.1:$port; root $tmp/nginx/html; }
}
EOF
nginx -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" -g 'daemon off;' &
pids+=("$!")
wait_http "http://127.0.0.1:$port/status.json"
wrk_line "nginx static (${status_bytes} B)" "http://127.0.0.1:$port/status.json"
