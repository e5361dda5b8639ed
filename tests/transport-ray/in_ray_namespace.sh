#!/usr/bin/env bash
# in_ray_namespace.sh VENV CMD [ARGS...]: runs CMD beside a Ray head of its own, inside a private
# network and PID namespace (reference/services.md): there the only interface is loopback, so Ray
# binds only to 127.0.0.1, no other Ray cluster on the machine is seen or touched, and every
# process started inside (head, bridges, runners) dies when CMD ends.
#
# Inside, CMD finds: KODO_RAY_SERVER (the head, 127.0.0.1:6379: the namespace has no other
# user of the port), KODO_RAY_PYTHON (the venv's python), KODO_RAY_VENV and KODO_RAY_TMP (a
# scratch directory that is removed afterwards). Exit status: CMD's.
set -euo pipefail

if [[ "${1:-}" != --inside ]]; then
  exec unshare --net --pid --fork --mount-proc "$0" --inside "$@"
fi
shift  # --inside
venv=$1
shift
ip link set lo up

tmp=$(mktemp -d /tmp/kodo-ray-XXXXXX)
# This shell is PID 1 of the namespace: kill -9 -1 reaches only the namespace's processes.
trap 'kill -9 -1 2>/dev/null || true; rm -rf "$tmp"' EXIT

export RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0
export KODO_RAY_SERVER=127.0.0.1:6379 KODO_RAY_PYTHON="$venv/bin/python" KODO_RAY_VENV="$venv"
export KODO_RAY_TMP="$tmp"
started=$(date +%s.%N)
if ! "$venv/bin/ray" start --head --node-ip-address=127.0.0.1 --port=6379 --num-cpus=2 \
    --include-dashboard=false --object-store-memory=200000000 --disable-usage-stats \
    --temp-dir="$tmp/ray" >"$tmp/head.log" 2>&1; then
  echo "in_ray_namespace: the Ray head did not start:" >&2
  cat "$tmp/head.log" >&2
  exit 1
fi
echo "in_ray_namespace: Ray head up on $KODO_RAY_SERVER in $(awk "BEGIN {print $(date +%s.%N) - $started}") s" >&2
set +e
"$@"
status=$?
exit $status
