#!/usr/bin/env bash
# The PostgreSQL figures, all on one freshly made server with default durability (fsync and
# synchronous_commit on), so they compare:
#   1. raw COPY of 1,000,000 rows into execution_events with every kodo index (the ceiling),
#   2. single-row autocommit INSERTs (the Python attempt's pattern),
#   3. kodo-bench -> postgres (inproc, or the transport given), 100 executions x 10,000
#      events, end to end, with the host's default spooler settings and with the ones
#      recommended for PostgreSQL.
#   bench/postgres.sh [build-dir [kodo-bench options]]   (after .ci/setup)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
shift $(( $# > 0 ? 1 : 0 ))
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
work=$(mktemp -d /tmp/kodo-pg-bench-XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
as_pg=()
if [[ $(id -u) -eq 0 ]]; then
  chown postgres: "$work"
  as_pg=(runuser -u postgres --)
fi
cleanup() {
  "${as_pg[@]}" "$bin/pg_ctl" -D "$work/data" -m fast stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

"${as_pg[@]}" "$bin/initdb" -D "$work/data" -U kodo --auth=trust -E UTF8 >/dev/null
"${as_pg[@]}" "$bin/pg_ctl" -D "$work/data" -l "$work/server.log" -w \
  -o "-p $port -k $work -c listen_addresses=127.0.0.1 -c shared_buffers=256MB -c max_wal_size=2GB" \
  start >/dev/null
url="postgresql://kodo@127.0.0.1:$port/postgres"
psql_() { psql -X -q -v ON_ERROR_STOP=1 "$url" "$@"; }
KODO_EXECUTION_DATABASE=$url "$build/bin/kodo-host" --plugin-dir "$build/plugins" db create-tables \
  2>/dev/null

echo "== 1. COPY 1,000,000 rows (100-byte messages) into execution_events with its indexes"
python3 - "$work/rows.tsv" <<'PY'
import sys
with open(sys.argv[1], "w") as f:
    pad = "x" * 100
    for e in range(100):
        fid = "copy%020d" % e
        for s in range(10000):
            f.write(f"{fid}\tadmin\t{1700000000 + s / 1000}\tstdout\t{pad}\t{s}\n")
PY
start=$(date +%s.%N)
psql_ -c "\\copy execution_events (fid, username, timestamp, kind, message, seq) from '$work/rows.tsv'"
end=$(date +%s.%N)
python3 -c "print(f'copy: rows_per_s={1000000 / ($end - $start):.0f}')"
psql_ -c "TRUNCATE execution_events"

echo "== 2. single-row autocommit INSERTs, one connection, 5,000 rows"
cat >"$work/insert.sql" <<'SQL'
INSERT INTO execution_events (fid, username, timestamp, kind, message, seq)
VALUES ('single000000000000000000', 'admin', 1700000000, 'stdout', repeat('x', 100), nextval('bench_seq'));
SQL
psql_ -c "CREATE SEQUENCE bench_seq MINVALUE 0 START 0"
pgbench -n -c 1 -t 5000 -f "$work/insert.sql" "$url" 2>/dev/null | grep -E '^tps' |
  sed 's/^tps = \([0-9.]*\).*/single-row insert: rows_per_s=\1/'
psql_ -c "TRUNCATE execution_events; TRUNCATE kodo_executions"

bench() {
  psql_ -c "TRUNCATE execution_events; TRUNCATE kodo_executions"
  "$build/bin/kodo-bench" --plugin-dir "$build/plugins" --storage postgres \
    --storage-option "url=$url" --executions 100 --events 10000 --payload-bytes 100 "$@" 2>&1 |
    tail -1
}
echo "== 3. kodo-bench -> postgres (transport inproc unless given), 100 executions x 10,000 events of 100 bytes"
echo "-- the host's defaults (1 spooler, batches of 1,000)"
bench "$@"
echo "-- 2 spoolers, batches of 5,000 (the settings README recommends for PostgreSQL)"
bench --spoolers 2 --spooler-batch-size 5000 "$@"
