// pg_schema.hpp: the PostgreSQL storage's schema: its versioned migrations (applied by
// create_schema), and the SQL of the append path that depends on the tables' shape.
#pragma once

#include <cstdint>

namespace kodo_postgres {

constexpr int kSchemaVersion = 3;
constexpr int64_t kAdvisoryLockKey = 0x6b6f646f;  // "kodo": serializes create_schema runs

// How a batch's new rows of one execution fold into its kodo_executions row (`excluded`).
#define KODO_SUMMARY_FOLD                                                       \
  " ON CONFLICT (fid) DO UPDATE SET"                                            \
  " started_at = least(x.started_at, excluded.started_at),"                     \
  " updated_at = greatest(x.updated_at, excluded.updated_at),"                  \
  " event_count = x.event_count + excluded.event_count,"                        \
  " last_seq = greatest(x.last_seq, excluded.last_seq),"                        \
  " status = CASE WHEN excluded.status_seq > x.status_seq THEN excluded.status" \
  "          ELSE x.status END,"                                                \
  " status_seq = greatest(x.status_seq, excluded.status_seq)"

struct Migration {
  int version;
  const char *description;
  const char *sql;
};

// Never edit a migration that has shipped: add the next one.
const Migration kMigrations[] = {
    {1, "execution_events with the kodosumi fork's columns and indexes",
     R"sql(
CREATE TABLE IF NOT EXISTS execution_events (
  id BIGSERIAL PRIMARY KEY,
  fid VARCHAR(64) NOT NULL,
  username VARCHAR(255) NOT NULL,
  timestamp DOUBLE PRECISION NOT NULL,
  kind VARCHAR(32) NOT NULL,
  message TEXT NOT NULL,
  created_at DOUBLE PRECISION DEFAULT EXTRACT(EPOCH FROM NOW()));
CREATE INDEX IF NOT EXISTS ix_execution_events_fid ON execution_events (fid);
CREATE INDEX IF NOT EXISTS ix_execution_events_username ON execution_events (username);
CREATE INDEX IF NOT EXISTS ix_execution_events_fid_kind ON execution_events (fid, kind);
)sql"},
    {2, "seq per event, unique (fid, seq), and the kodo_executions summary",
     R"sql(
ALTER TABLE execution_events ADD COLUMN IF NOT EXISTS seq BIGINT;
-- Rows the fork wrote have no seq: number them per execution in the order they were written.
UPDATE execution_events e SET seq = n.seq
  FROM (SELECT id, row_number() OVER (PARTITION BY fid ORDER BY id) - 1 AS seq
          FROM execution_events WHERE seq IS NULL) n
 WHERE e.id = n.id;
ALTER TABLE execution_events ALTER COLUMN seq SET NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS ux_execution_events_fid_seq ON execution_events (fid, seq);
CREATE TABLE IF NOT EXISTS kodo_executions (
  fid VARCHAR(64) PRIMARY KEY,
  username VARCHAR(255) NOT NULL,
  started_at DOUBLE PRECISION NOT NULL,
  updated_at DOUBLE PRECISION NOT NULL,
  event_count BIGINT NOT NULL,
  last_seq BIGINT NOT NULL,
  status TEXT NOT NULL DEFAULT '',
  status_seq BIGINT NOT NULL DEFAULT -1,
  archived_at DOUBLE PRECISION);
CREATE INDEX IF NOT EXISTS ix_kodo_executions_newest
  ON kodo_executions (started_at DESC, fid DESC) WHERE archived_at IS NULL;
CREATE INDEX IF NOT EXISTS ix_kodo_executions_user_newest
  ON kodo_executions (username, started_at DESC, fid DESC) WHERE archived_at IS NULL;
CREATE INDEX IF NOT EXISTS ix_kodo_executions_updated ON kodo_executions (updated_at);
INSERT INTO kodo_executions
  (fid, username, started_at, updated_at, event_count, last_seq, status, status_seq)
SELECT fid, min(username), min(timestamp), max(timestamp), count(*), max(seq),
       coalesce((array_agg(message ORDER BY seq DESC) FILTER (WHERE kind = 'status'))[1], ''),
       coalesce(max(seq) FILTER (WHERE kind = 'status'), -1)
  FROM execution_events GROUP BY fid
ON CONFLICT (fid) DO NOTHING;
)sql"},
    {3, "created_at and seq filled in for the fork's writers (its table, its inserts)",
     R"sql(
-- The fork's `koco db --create-tables` makes created_at NOT NULL without a default, which
-- kodo's appends (that never name created_at) would break on.
ALTER TABLE execution_events ALTER COLUMN created_at SET DEFAULT EXTRACT(EPOCH FROM NOW());
-- The fork's writer inserts (fid, username, timestamp, kind, message) only, one row at a
-- time: such a row gets the next seq of its execution and counts in kodo_executions, so a
-- fork spooler still running during a rolling upgrade loses nothing and its runs are listed.
CREATE OR REPLACE FUNCTION kodo_fill_seq() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
  -- Two sessions inserting into one execution must not read the same max(seq). (The
  -- two-key form: its key space is apart from create_schema's one-key lock.)
  PERFORM pg_advisory_xact_lock(1802462319, hashtext(NEW.fid));
  SELECT coalesce(max(seq) + 1, 0) INTO NEW.seq FROM execution_events WHERE fid = NEW.fid;
  INSERT INTO kodo_executions AS x
    (fid, username, started_at, updated_at, event_count, last_seq, status, status_seq)
  VALUES (NEW.fid, NEW.username, NEW.timestamp, NEW.timestamp, 1, NEW.seq,
          CASE WHEN NEW.kind = 'status' THEN NEW.message ELSE '' END,
          CASE WHEN NEW.kind = 'status' THEN NEW.seq ELSE -1 END)
  )sql" KODO_SUMMARY_FOLD R"sql(;
  RETURN NEW;
END
$fn$;
CREATE TRIGGER kodo_fill_seq BEFORE INSERT ON execution_events
  FOR EACH ROW WHEN (NEW.seq IS NULL) EXECUTE FUNCTION kodo_fill_seq();
)sql"},
};

const char *const kVersionTable = R"sql(
CREATE TABLE IF NOT EXISTS kodo_schema_version (
  version INTEGER PRIMARY KEY,
  description TEXT NOT NULL,
  applied_at DOUBLE PRECISION NOT NULL DEFAULT EXTRACT(EPOCH FROM NOW())))sql";

// The rows of one append land here first (one per session; emptied at commit).
const char *const kIncomingTable =
    "CREATE TEMP TABLE IF NOT EXISTS kodo_incoming (fid TEXT, username TEXT, "
    "timestamp DOUBLE PRECISION, kind TEXT, message TEXT, seq BIGINT) ON COMMIT DELETE ROWS";

// The slow path of append, for a batch holding some (fid, seq) already stored: moves
// kodo_incoming into execution_events, skipping those, and folds exactly the new rows into
// kodo_executions. Rows go in (fid, seq) order, so ids follow seq within an execution and
// summary rows are locked in one order (no deadlock between spoolers).
const char *const kMoveIncoming = R"sql(
WITH ins AS (
  INSERT INTO execution_events (fid, username, timestamp, kind, message, seq)
  SELECT fid, username, timestamp, kind, message, seq FROM kodo_incoming ORDER BY fid, seq
  ON CONFLICT (fid, seq) DO NOTHING
  RETURNING fid, username, timestamp, kind, message, seq),
agg AS (
  SELECT fid, min(username) AS username, min(timestamp) AS started, max(timestamp) AS updated,
         count(*) AS n, max(seq) AS last_seq,
         (array_agg(message ORDER BY seq DESC) FILTER (WHERE kind = 'status'))[1] AS status,
         coalesce(max(seq) FILTER (WHERE kind = 'status'), -1) AS status_seq
    FROM ins GROUP BY fid),
up AS (
  INSERT INTO kodo_executions AS x
    (fid, username, started_at, updated_at, event_count, last_seq, status, status_seq)
  SELECT fid, username, started, updated, n, last_seq, coalesce(status, ''), status_seq
    FROM agg ORDER BY fid
  )sql" KODO_SUMMARY_FOLD R"sql(
  RETURNING 1)
SELECT (SELECT count(*) FROM ins), (SELECT count(*) FROM up))sql";

}  // namespace kodo_postgres
