// postgres_storage.cpp: storage in PostgreSQL through libpq, in the kodosumi fork's
// execution_events table, so rows either side writes are read by the other.
//
// Write path: an append COPYs its batch into a per-connection temporary table and moves it
// with one INSERT ... ON CONFLICT (fid, seq) DO NOTHING whose RETURNING rows (only the new
// ones) also update kodo_executions, the per-execution summary that status and listing read
// instead of scanning events. Batch, summary and idempotence are one transaction.
//
// Connections: a small pool, made lazily. A connection that breaks is dropped; the call fails
// with a retryable error and the next call reconnects, no sooner than the backoff allows, so a
// restarting server sees a few attempts, not a storm. The host's spooler retries the batch.
//
// Schema: versioned migrations applied only by create_schema (`kodo-host db create-tables`),
// under an advisory lock so concurrent runs are safe. Other calls check the version and say
// what to run when it is behind.
#include <kodo/plugin.hpp>
#include <kodo/url.hpp>

#include <libpq-fe.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

using kodo::sdk::Error;
using Clock = std::chrono::steady_clock;

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

std::string quote(const std::string &s) {
  return "'" + s + "'";
}

// SQLSTATE classes after which the same call may succeed: connection trouble, serialization
// failure or deadlock, insufficient resources, operator intervention (shutdown, cancel).
bool retryable_sqlstate(const char *state) {
  if (!state || std::strlen(state) != 5) return true;  // no state: the connection failed
  const std::string s(state);
  return s.compare(0, 2, "08") == 0 || s == "40001" || s == "40P01" || s.compare(0, 2, "53") == 0 ||
         s.compare(0, 2, "57") == 0;
}

// libpq messages end with a newline and may span lines; one line reads better in logs.
std::string one_line(const char *message) {
  std::string s = message ? message : "";
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  std::replace(s.begin(), s.end(), '\n', ' ');
  return s;
}

// Length of the valid UTF-8 sequence at s[i], or 0 (overlongs, surrogates, > U+10FFFF, NUL).
size_t utf8_length(const char *s, size_t n, size_t i) {
  const auto c = static_cast<unsigned char>(s[i]);
  if (c == 0) return 0;
  if (c < 0x80) return 1;
  size_t len;
  uint32_t cp;
  if ((c & 0xE0) == 0xC0) {
    len = 2;
    cp = c & 0x1F;
  } else if ((c & 0xF0) == 0xE0) {
    len = 3;
    cp = c & 0x0F;
  } else if ((c & 0xF8) == 0xF0) {
    len = 4;
    cp = c & 0x07;
  } else {
    return 0;
  }
  if (i + len > n) return 0;
  for (size_t k = 1; k < len; ++k) {
    const auto cc = static_cast<unsigned char>(s[i + k]);
    if ((cc & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (cc & 0x3F);
  }
  static const uint32_t min_for_len[] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < min_for_len[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return len;
}

// A PostgreSQL text value cannot hold NUL or invalid UTF-8; the host sends valid UTF-8, but a
// plugin must not stall a spooler on one bad event, so such bytes become U+FFFD.
bool append_text_repaired(std::string &out, const char *s, size_t n) {
  bool repaired = false;
  for (size_t i = 0; i < n;) {
    size_t len = utf8_length(s, n, i);
    if (len == 0) {
      out += "\xEF\xBF\xBD";
      repaired = true;
      ++i;
    } else {
      out.append(s + i, len);
      i += len;
    }
  }
  return repaired;
}

// COPY text format: backslash, tab, newline and carriage return escaped.
void append_copy_text(std::string &out, const std::string &value) {
  for (char c : value) {
    switch (c) {
      case '\\': out += "\\\\"; break;
      case '\t': out += "\\t"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      default: out += c;
    }
  }
}

std::string format_double(double value) {
  char buffer[32];  // "%.17g" needs at most 24
  const int n = std::snprintf(buffer, sizeof buffer, "%.17g", value);
  return std::string(buffer, n > 0 ? std::min(static_cast<size_t>(n), sizeof buffer - 1) : 0);
}

// A failed statement, with the server's SQLSTATE ("" when the connection failed).
class SqlError : public Error {
 public:
  SqlError(kodo_status code, const std::string &message, bool retryable, std::string state)
      : Error(code, message, retryable), state_(std::move(state)) {}
  const std::string &state() const { return state_; }

 private:
  std::string state_;
};

struct Result {
  PGresult *raw = nullptr;
  explicit Result(PGresult *r) : raw(r) {}
  ~Result() { PQclear(raw); }
  Result(const Result &) = delete;
  Result &operator=(const Result &) = delete;
  int rows() const { return PQntuples(raw); }
  const char *text(int row, int column) const { return PQgetvalue(raw, row, column); }
  std::string str(int row, int column) const {
    return std::string(PQgetvalue(raw, row, column),
                       static_cast<size_t>(PQgetlength(raw, row, column)));
  }
  int64_t int64(int row, int column) const { return std::strtoll(text(row, column), nullptr, 10); }
  double number(int row, int column) const { return std::strtod(text(row, column), nullptr); }
  bool null(int row, int column) const { return PQgetisnull(raw, row, column) != 0; }
};

struct Settings {
  std::vector<std::string> keywords, values;  // libpq connection parameters
  std::string shown;                          // the URL, password redacted
  size_t pool_size = 4;
  int reconnect_max_ms = 5000;
};

struct Counters {
  std::atomic<int64_t> up{1};
  std::atomic<uint64_t> connects{0};
  std::atomic<uint64_t> connect_failures{0};
  std::atomic<uint64_t> connections_lost{0};
  std::atomic<int64_t> open_connections{0};
  std::atomic<uint64_t> rows_inserted{0};
  std::atomic<uint64_t> rows_skipped{0};
  std::atomic<uint64_t> batches{0};
  std::atomic<uint64_t> repaired_values{0};
  std::atomic<uint64_t> slow_appends{0};
};

class Connection {
 public:
  Connection(const Settings &settings, Counters &counters, const kodo::sdk::HostLog &log)
      : counters_(counters), log_(log) {
    std::vector<const char *> keys, values;
    for (size_t i = 0; i < settings.keywords.size(); ++i) {
      keys.push_back(settings.keywords[i].c_str());
      values.push_back(settings.values[i].c_str());
    }
    keys.push_back(nullptr);
    values.push_back(nullptr);
    conn_ = PQconnectdbParams(keys.data(), values.data(), 0);
    if (!conn_ || PQstatus(conn_) != CONNECTION_OK) {
      std::string message = conn_ ? one_line(PQerrorMessage(conn_)) : "out of memory";
      PQfinish(conn_);
      conn_ = nullptr;
      throw Error(KODO_ERR_UNAVAILABLE,
                  "cannot connect to PostgreSQL at " + settings.shown + ": " + message, true);
    }
    counters_.open_connections.fetch_add(1);
    // Server notices ("already exists, skipping") go to the host's log, not to stderr.
    PQsetNoticeProcessor(
        conn_,
        [](void *self, const char *message) {
          static_cast<Connection *>(self)->log_(KODO_LOG_DEBUG, "server: " + one_line(message));
        },
        this);
    exec("SET client_encoding = 'UTF8'");
    exec(kIncomingTable);
  }
  ~Connection() {
    if (conn_) {
      PQfinish(conn_);
      counters_.open_connections.fetch_sub(1);
    }
  }
  Connection(const Connection &) = delete;
  Connection &operator=(const Connection &) = delete;

  bool broken() const { return !conn_ || PQstatus(conn_) != CONNECTION_OK; }

  // Runs SQL without parameters (several statements allowed).
  std::unique_ptr<Result> exec(const std::string &sql, const char *what = nullptr) {
    return check(PQexec(conn_, sql.c_str()), what ? what : sql.c_str());
  }

  // Runs one statement with text parameters (NULL entries are SQL NULL).
  std::unique_ptr<Result> query(const char *sql, const std::vector<const char *> &params,
                                const char *what) {
    return check(PQexecParams(conn_, sql, static_cast<int>(params.size()), nullptr, params.data(),
                              nullptr, nullptr, 0),
                 what);
  }

  // COPY ... FROM STDIN with `data` in text format.
  void copy_in(const char *sql, const std::string &data, const char *what) {
    PGresult *r = PQexec(conn_, sql);
    if (PQresultStatus(r) != PGRES_COPY_IN) {
      check(r, what);
      throw Error(KODO_ERR_INTERNAL, std::string(what) + ": the server did not start COPY");
    }
    PQclear(r);
    constexpr size_t kChunk = 1 << 20;
    for (size_t at = 0; at < data.size(); at += kChunk) {
      const size_t n = std::min(kChunk, data.size() - at);
      if (PQputCopyData(conn_, data.data() + at, static_cast<int>(n)) != 1) fail(what, nullptr);
    }
    if (PQputCopyEnd(conn_, nullptr) != 1) fail(what, nullptr);
    check(PQgetResult(conn_), what);
    while (PGresult *rest = PQgetResult(conn_)) PQclear(rest);
  }

 private:
  std::unique_ptr<Result> check(PGresult *raw, const char *what) {
    auto result = std::make_unique<Result>(raw);
    ExecStatusType status = PQresultStatus(raw);
    if (raw && (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK)) return result;
    fail(what, raw);
  }

  [[noreturn]] void fail(const char *what, PGresult *raw) {
    const char *state = raw ? PQresultErrorField(raw, PG_DIAG_SQLSTATE) : nullptr;
    std::string message = raw ? one_line(PQresultErrorMessage(raw)) : "";
    if (message.empty()) message = one_line(PQerrorMessage(conn_));
    const bool lost = broken();
    const bool retryable = lost || retryable_sqlstate(state);
    std::string text = std::string(what) + ": " + message;
    if (state) text += " (SQLSTATE " + std::string(state) + ")";
    if (lost) text += "; the connection is lost";
    throw SqlError(retryable ? KODO_ERR_UNAVAILABLE : KODO_ERR_IO, text, retryable,
                   state ? state : "");
  }

  PGconn *conn_ = nullptr;
  Counters &counters_;
  const kodo::sdk::HostLog &log_;
};

class PostgresStorage : public kodo::sdk::StorageBase {
 public:
  PostgresStorage(const kodo::sdk::Options &options, const kodo_host_api *host) : log_(host) {
    settings_ = parse_settings(options);
    // Fails here, with the server's reason, when the database is unreachable at start.
    auto first = std::make_unique<Connection>(settings_, counters_, log_);
    counters_.connects.fetch_add(1);
    schema_version_ = read_schema_version(*first);
    idle_.push_back(std::move(first));
    if (schema_version_ < kSchemaVersion)
      log_(KODO_LOG_WARN, "database " + settings_.shown + " has kodo schema version " +
                              std::to_string(schema_version_) + ", this plugin needs " +
                              std::to_string(kSchemaVersion) +
                              ": run `kodo-host db create-tables`");
    else
      log_(KODO_LOG_INFO, "connected to " + settings_.shown + " (schema version " +
                              std::to_string(schema_version_) + ")");
  }

  void create_schema() override {
    Lease c(*this);
    in_transaction(c, [&] {
      c->exec("SELECT pg_advisory_xact_lock(" + std::to_string(kAdvisoryLockKey) + ")",
              "create_schema: waiting for the schema lock");
      c->exec(kVersionTable, "create_schema: making kodo_schema_version");
      auto current = c->exec("SELECT coalesce(max(version), 0) FROM kodo_schema_version",
                             "create_schema: reading the schema version");
      const int64_t version = current->int64(0, 0);
      if (version > kSchemaVersion)
        throw Error(KODO_ERR_INVALID_ARGUMENT,
                    "create_schema: the database has kodo schema version " +
                        std::to_string(version) + ", newer than this plugin's " +
                        std::to_string(kSchemaVersion) + "; upgrade kodo");
      for (const Migration &m : kMigrations) {
        if (m.version <= version) continue;
        c->exec(m.sql, m.description);
        c->query("INSERT INTO kodo_schema_version (version, description) VALUES ($1, $2)",
                 {std::to_string(m.version).c_str(), m.description},
                 "create_schema: recording the migration");
        log_(KODO_LOG_INFO,
             "schema migration " + std::to_string(m.version) + " applied: " + m.description);
      }
    });
    schema_version_ = kSchemaVersion;
  }

  void append(const kodo_event *const *events, size_t count) override {
    if (count == 0) return;
    if (!events) throw Error(KODO_ERR_INVALID_ARGUMENT, "append: events is NULL");
    for (size_t i = 0; i < count; ++i) check_event(events[i], i);
    // (fid, seq) order: ids follow seq within an execution, and every append locks summary
    // rows in the same order, so concurrent spoolers cannot deadlock.
    std::vector<const kodo_event *> sorted(events, events + count);
    std::stable_sort(sorted.begin(), sorted.end(), [](const kodo_event *a, const kodo_event *b) {
      int order = std::strcmp(a->fid, b->fid);
      return order != 0 ? order < 0 : a->seq < b->seq;
    });
    const std::string data = copy_rows(sorted.data(), count);
    Lease c(*this);
    require_schema(*c);
    if (copy_new_rows(c, sorted, data)) return;
    int64_t inserted = 0;
    in_transaction(c, [&] {
      c->copy_in("COPY kodo_incoming (fid, username, timestamp, kind, message, seq) FROM STDIN",
                 data, "append: COPY into kodo_incoming");
      inserted = c->exec(kMoveIncoming, "append: moving rows into execution_events")->int64(0, 0);
    });
    const auto stored = static_cast<uint64_t>(inserted);
    counters_.rows_inserted.fetch_add(stored);
    counters_.rows_skipped.fetch_add(count - std::min<uint64_t>(count, stored));
    counters_.batches.fetch_add(1);
  }

  void read_events(const kodo_read_request &request, kodo::sdk::EventPageBuilder &out) override {
    kodo::sdk::check_name("fid", request.fid);
    if (request.username) kodo::sdk::check_name("username", request.username);
    if (request.limit == 0) throw Error(KODO_ERR_INVALID_ARGUMENT, "read_events: limit is 0");
    Lease c(*this);
    require_schema(*c);
    std::string username = owner(*c, request.fid, request.username);
    std::string sql =
        "SELECT seq, timestamp, kind, message FROM execution_events "
        "WHERE fid = $1 AND username = $2 AND seq > $3";
    const std::string after = std::to_string(std::max<int64_t>(request.after_seq, -1));
    const std::string limit = std::to_string(std::min<size_t>(request.limit, 1000000) + 1);
    std::vector<const char *> params = {request.fid, username.c_str(), after.c_str(),
                                        limit.c_str()};
    if (request.kind_count > 0) {
      sql += " AND kind IN (";
      for (size_t i = 0; i < request.kind_count; ++i) {
        if (!request.kinds[i])
          throw Error(KODO_ERR_INVALID_ARGUMENT,
                      "read_events: kind #" + std::to_string(i) + " is NULL");
        sql += (i ? ", $" : "$") + std::to_string(params.size() + 1);
        params.push_back(request.kinds[i]);
      }
      sql += ")";
    }
    sql += " ORDER BY seq LIMIT $4";
    auto rows = c->query(sql.c_str(), params, "read_events");
    const size_t n = std::min<size_t>(static_cast<size_t>(rows->rows()), request.limit);
    for (size_t i = 0; i < n; ++i) {
      const int row = static_cast<int>(i);
      kodo::sdk::OwnedEvent &e = out.add();
      e.fid = request.fid;
      e.username = username;
      e.seq = rows->int64(row, 0);
      e.timestamp = rows->number(row, 1);
      e.kind = rows->str(row, 2);
      e.payload = rows->str(row, 3);
    }
    out.set_has_more(static_cast<size_t>(rows->rows()) > request.limit);
  }

  void get_execution(const char *fid, const char *username,
                     kodo::sdk::ExecutionPageBuilder &out) override {
    kodo::sdk::check_name("fid", fid);
    if (username) kodo::sdk::check_name("username", username);
    Lease c(*this);
    require_schema(*c);
    auto rows = c->query(
        "SELECT fid, username, status, started_at, updated_at, event_count, last_seq "
        "FROM kodo_executions WHERE fid = $1 AND archived_at IS NULL "
        "AND ($2::text IS NULL OR username = $2)",
        {fid, username}, "get_execution");
    if (rows->rows() == 0) throw not_found(fid, username);
    fill(out.add(), *rows, 0);
  }

  void list_executions(const kodo_list_request &request,
                       kodo::sdk::ExecutionPageBuilder &out) override {
    if (request.username) kodo::sdk::check_name("username", request.username);
    if (request.limit == 0) throw Error(KODO_ERR_INVALID_ARGUMENT, "list_executions: limit is 0");
    Lease c(*this);
    require_schema(*c);
    const std::string offset = std::to_string(request.offset);
    const std::string limit = std::to_string(std::min<size_t>(request.limit, 100000) + 1);
    auto rows = c->query(
        "SELECT fid, username, status, started_at, updated_at, event_count, last_seq "
        "FROM kodo_executions WHERE archived_at IS NULL AND ($1::text IS NULL OR username = $1) "
        "ORDER BY started_at DESC, fid DESC OFFSET $2 LIMIT $3",
        {request.username, offset.c_str(), limit.c_str()}, "list_executions");
    const int n = std::min(rows->rows(), static_cast<int>(request.limit));
    for (int i = 0; i < n; ++i) fill(out.add(), *rows, i);
    out.set_has_more(static_cast<size_t>(rows->rows()) > request.limit);
  }

  // The events stay in execution_events; the execution leaves reads and listings.
  void archive_execution(const char *fid, const char *username) override {
    kodo::sdk::check_name("fid", fid);
    if (username) kodo::sdk::check_name("username", username);
    Lease c(*this);
    require_schema(*c);
    auto rows = c->query(
        "UPDATE kodo_executions SET archived_at = EXTRACT(EPOCH FROM NOW()) "
        "WHERE fid = $1 AND archived_at IS NULL AND ($2::text IS NULL OR username = $2) "
        "RETURNING fid",
        {fid, username}, "archive_execution");
    if (rows->rows() == 0) throw not_found(fid, username);
  }

  // Deletes in slices of executions, each its own transaction: a purge of tens of gigabytes
  // never holds one huge transaction, and spoolers writing other executions go on meanwhile.
  int64_t purge(double older_than) override {
    if (std::isnan(older_than))
      throw Error(KODO_ERR_INVALID_ARGUMENT, "purge: older_than is not a number");
    const std::string cutoff = format_double(older_than);
    int64_t purged = 0;
    for (;;) {
      Lease c(*this);
      require_schema(*c);
      auto rows = c->query(
          "WITH victims AS (SELECT fid FROM kodo_executions WHERE updated_at < $1 "
          "                 ORDER BY updated_at LIMIT 200 FOR UPDATE SKIP LOCKED), "
          "gone AS (DELETE FROM execution_events WHERE fid IN (SELECT fid FROM victims)) "
          "DELETE FROM kodo_executions WHERE fid IN (SELECT fid FROM victims) RETURNING fid",
          {cutoff.c_str()}, "purge");
      if (rows->rows() == 0) break;
      purged += rows->rows();
    }
    return purged;
  }

  std::vector<kodo::sdk::Metric> metrics() override {
    auto n = [](const auto &atomic) { return static_cast<double>(atomic.load()); };
    return {
        {"server_up", "1 while PostgreSQL answers, 0 after a connection failed until one succeeds.",
         "", KODO_METRIC_GAUGE, n(counters_.up)},
        {"connections", "Open connections to PostgreSQL.", "", KODO_METRIC_GAUGE,
         n(counters_.open_connections)},
        {"connects_total", "Connections made (reconnects included).", "", KODO_METRIC_COUNTER,
         n(counters_.connects)},
        {"connect_failures_total", "Connection attempts that failed.", "", KODO_METRIC_COUNTER,
         n(counters_.connect_failures)},
        {"connections_lost_total", "Connections dropped after they broke.", "", KODO_METRIC_COUNTER,
         n(counters_.connections_lost)},
        {"rows_inserted_total", "Events inserted into execution_events.", "", KODO_METRIC_COUNTER,
         n(counters_.rows_inserted)},
        {"rows_skipped_total", "Events skipped as already stored (retries, redeliveries).", "",
         KODO_METRIC_COUNTER, n(counters_.rows_skipped)},
        {"batches_total", "Appends committed.", "", KODO_METRIC_COUNTER, n(counters_.batches)},
        {"slow_appends_total",
         "Appends that held events already stored, and took the path that skips them.", "",
         KODO_METRIC_COUNTER, n(counters_.slow_appends)},
        {"repaired_values_total",
         "Text values with NUL or invalid UTF-8 stored with U+FFFD in their place.", "",
         KODO_METRIC_COUNTER, n(counters_.repaired_values)},
    };
  }

 private:
  // A connection taken from the pool for one call; given back unless it broke.
  class Lease {
   public:
    explicit Lease(PostgresStorage &owner) : owner_(owner), conn_(owner.acquire()) {}
    ~Lease() { owner_.release(std::move(conn_)); }
    Lease(const Lease &) = delete;
    Lease &operator=(const Lease &) = delete;
    Connection *operator->() { return conn_.get(); }
    Connection &operator*() { return *conn_; }
    // Ends a failed transaction; a connection that cannot even do that is dropped.
    void rollback() {
      if (conn_->broken()) return;
      try {
        conn_->exec("ROLLBACK");
      } catch (const Error &) {
        owner_.counters_.connections_lost.fetch_add(1);
        conn_.reset();
      }
    }

   private:
    PostgresStorage &owner_;
    std::unique_ptr<Connection> conn_;
  };

  std::unique_ptr<Connection> acquire() {
    {
      std::unique_lock<std::mutex> lock(pool_mu_);
      pool_cv_.wait(lock, [&] { return !idle_.empty() || leased_ < settings_.pool_size; });
      ++leased_;
      if (!idle_.empty()) {
        auto c = std::move(idle_.back());
        idle_.pop_back();
        return c;
      }
      // No idle connection: make one, unless the last attempt failed too recently.
      const auto now = Clock::now();
      if (now < next_connect_) {
        --leased_;
        pool_cv_.notify_one();
        throw Error(KODO_ERR_UNAVAILABLE,
                    "PostgreSQL at " + settings_.shown + " is unreachable (" + last_failure_ +
                        "); next connection attempt in " +
                        std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(
                                           next_connect_ - now)
                                           .count()) +
                        " ms",
                    true);
      }
    }
    try {
      auto c = std::make_unique<Connection>(settings_, counters_, log_);
      counters_.connects.fetch_add(1);
      std::lock_guard<std::mutex> lock(pool_mu_);
      if (counters_.up.exchange(1) == 0)
        log_(KODO_LOG_INFO, "PostgreSQL at " + settings_.shown + " answers again");
      backoff_ms_ = 0;
      return c;
    } catch (const Error &e) {
      counters_.connect_failures.fetch_add(1);
      std::lock_guard<std::mutex> lock(pool_mu_);
      --leased_;
      pool_cv_.notify_one();
      backoff_ms_ = std::min(settings_.reconnect_max_ms, backoff_ms_ ? backoff_ms_ * 2 : 100);
      next_connect_ = Clock::now() + std::chrono::milliseconds(backoff_ms_);
      last_failure_ = e.what();
      if (counters_.up.exchange(0) == 1) log_(KODO_LOG_WARN, e.what());
      throw;
    }
  }

  void release(std::unique_ptr<Connection> c) {
    std::lock_guard<std::mutex> lock(pool_mu_);
    --leased_;
    if (c && c->broken()) {
      counters_.connections_lost.fetch_add(1);
      if (counters_.up.exchange(0) == 1)
        log_(KODO_LOG_WARN, "lost the connection to PostgreSQL at " + settings_.shown +
                                "; reconnecting with backoff");
      c.reset();
      // Every idle connection shares the broken one's fate after a server restart: drop them
      // now rather than fail one call for each.
      counters_.connections_lost.fetch_add(idle_.size());
      idle_.clear();
    }
    if (c) idle_.push_back(std::move(c));
    pool_cv_.notify_one();
  }

  // The common case, every event new: COPY straight into execution_events (the fastest way
  // in) and fold the batch into summaries computed here. Returns false, having written
  // nothing, when some (fid, seq) is already stored: a retry, a redelivery, a repeat within
  // the batch. The caller then takes the path that skips those.
  bool copy_new_rows(Lease &c, const std::vector<const kodo_event *> &sorted,
                     const std::string &data) {
    try {
      in_transaction(c, [&] {
        c->copy_in(
            "COPY execution_events (fid, username, timestamp, kind, message, seq) "
            "FROM STDIN",
            data, "append: COPY into execution_events");
        fold_summaries(*c, sorted);
      });
    } catch (const SqlError &e) {
      if (e.state() != "23505") throw;  // unique_violation: some rows are stored already
      counters_.slow_appends.fetch_add(1);
      return false;
    }
    counters_.rows_inserted.fetch_add(sorted.size());
    counters_.batches.fetch_add(1);
    return true;
  }

  // Runs fn between BEGIN and COMMIT; any failure rolls back and is rethrown.
  template <class Fn>
  static void in_transaction(Lease &c, Fn &&fn) {
    c->exec("BEGIN");
    try {
      fn();
      c->exec("COMMIT", "COMMIT");
    } catch (...) {
      c.rollback();
      throw;
    }
  }

  // One kodo_executions upsert for the executions of a batch whose rows were all new.
  static void fold_summaries(Connection &c, const std::vector<const kodo_event *> &sorted) {
    struct Summary {
      std::string fid, username, started, updated, count, last_seq, status, status_seq = "-1";
    };
    std::vector<Summary> summaries;
    for (size_t i = 0; i < sorted.size();) {
      size_t end = i;
      double started = sorted[i]->timestamp, updated = started;
      const kodo_event *status = nullptr;
      while (end < sorted.size() && std::strcmp(sorted[end]->fid, sorted[i]->fid) == 0) {
        const kodo_event *e = sorted[end++];
        started = std::min(started, e->timestamp);
        updated = std::max(updated, e->timestamp);
        if (std::strcmp(e->kind, "status") == 0) status = e;  // sorted: the last is the newest
      }
      Summary x;
      x.fid = sorted[i]->fid;
      x.username = sorted[i]->username;
      x.started = format_double(started);
      x.updated = format_double(updated);
      x.count = std::to_string(end - i);
      x.last_seq = std::to_string(sorted[end - 1]->seq);
      if (status) {
        append_text_repaired(x.status, status->payload ? status->payload : "", status->payload_len);
        x.status_seq = std::to_string(status->seq);
      }
      summaries.push_back(std::move(x));
      i = end;
    }
    constexpr size_t kRowsPerStatement = 2000;  // 8 parameters a row, under libpq's 65535
    for (size_t first = 0; first < summaries.size(); first += kRowsPerStatement) {
      const size_t last = std::min(summaries.size(), first + kRowsPerStatement);
      std::string sql =
          "INSERT INTO kodo_executions AS x (fid, username, started_at, updated_at, event_count, "
          "last_seq, status, status_seq) VALUES ";
      std::vector<const char *> params;
      for (size_t k = first; k < last; ++k) {
        const Summary &x = summaries[k];
        const size_t n = params.size();
        auto p = [&](size_t i, const char *cast) { return "$" + std::to_string(n + i) + cast; };
        sql += (k == first ? "(" : ",(") + p(1, "") + "," + p(2, "") + "," + p(3, "::float8") +
               "," + p(4, "::float8") + "," + p(5, "::int8") + "," + p(6, "::int8") + "," +
               p(7, "") + "," + p(8, "::int8") + ")";
        for (const std::string *v : {&x.fid, &x.username, &x.started, &x.updated, &x.count,
                                     &x.last_seq, &x.status, &x.status_seq})
          params.push_back(v->c_str());
      }
      sql += KODO_SUMMARY_FOLD;
      c.query(sql.c_str(), params, "append: updating kodo_executions");
    }
  }

  static int64_t read_schema_version(Connection &c) {
    auto exists = c.exec("SELECT to_regclass('kodo_schema_version') IS NOT NULL",
                         "reading the kodo schema version");
    if (std::strcmp(exists->text(0, 0), "t") != 0) return 0;
    return c
        .exec("SELECT coalesce(max(version), 0) FROM kodo_schema_version",
              "reading the kodo schema version")
        ->int64(0, 0);
  }

  // Data calls need the schema of this version; when it is behind, they look again (another
  // process may have run create-tables meanwhile) and otherwise say what to run.
  void require_schema(Connection &c) {
    if (schema_version_.load() == kSchemaVersion) return;
    const int64_t version = read_schema_version(c);
    schema_version_ = version;
    if (version == kSchemaVersion) return;
    if (version > kSchemaVersion)
      throw Error(KODO_ERR_INVALID_ARGUMENT,
                  "database " + settings_.shown + " has kodo schema version " +
                      std::to_string(version) + ", newer than this plugin's " +
                      std::to_string(kSchemaVersion) + "; upgrade kodo");
    throw Error(KODO_ERR_UNAVAILABLE,
                "database " + settings_.shown + " has kodo schema version " +
                    std::to_string(version) + ", this plugin needs " +
                    std::to_string(kSchemaVersion) + ": run `kodo-host db create-tables`",
                true);
  }

  // The execution's user (the one asked for, or whoever owns it); NOT_FOUND when unknown.
  std::string owner(Connection &c, const char *fid, const char *username) {
    auto rows = c.query(
        "SELECT username FROM kodo_executions WHERE fid = $1 AND archived_at IS NULL "
        "AND ($2::text IS NULL OR username = $2)",
        {fid, username}, "read_events: looking up the execution");
    if (rows->rows() == 0) throw not_found(fid, username);
    return rows->str(0, 0);
  }

  static Error not_found(const char *fid, const char *username) {
    return Error(
        KODO_ERR_NOT_FOUND,
        "execution " + quote(fid) + (username ? " of user " + quote(username) : "") + " not found");
  }

  static void fill(kodo::sdk::OwnedExecution &x, const Result &rows, int row) {
    x.fid = rows.str(row, 0);
    x.username = rows.str(row, 1);
    x.status = rows.str(row, 2);
    x.started_at = rows.number(row, 3);
    x.updated_at = rows.number(row, 4);
    x.event_count = rows.int64(row, 5);
    x.last_seq = rows.int64(row, 6);
  }

  // The SDK's checks, and the width of execution_events.kind.
  static void check_event(const kodo_event *e, size_t i) {
    kodo::sdk::check_event("append", e, i);
    if (std::strlen(e->kind) > 32)
      throw Error(KODO_ERR_INVALID_ARGUMENT, "append: event #" + std::to_string(i) + " (fid '" +
                                                 e->fid + "', seq " + std::to_string(e->seq) +
                                                 "): kind is longer than 32 bytes");
  }

  // The batch as COPY text rows: fid, username, timestamp, kind, message, seq.
  std::string copy_rows(const kodo_event *const *events, size_t count) {
    std::string data, text;
    data.reserve(count * 96);
    for (size_t i = 0; i < count; ++i) {
      const kodo_event &e = *events[i];
      data += e.fid;  // names: [A-Za-z0-9_.@-], nothing to escape
      data += '\t';
      data += e.username;
      data += '\t';
      data += format_double(e.timestamp);
      data += '\t';
      text.clear();
      bool repaired = append_text_repaired(text, e.kind, std::strlen(e.kind));
      append_copy_text(data, text);
      data += '\t';
      text.clear();
      repaired |= append_text_repaired(text, e.payload ? e.payload : "", e.payload_len);
      append_copy_text(data, text);
      data += '\t';
      data += std::to_string(e.seq);
      data += '\n';
      if (repaired && counters_.repaired_values.fetch_add(1) == 0)
        log_(KODO_LOG_WARN, "event seq " + std::to_string(e.seq) + " of execution " + quote(e.fid) +
                                " has NUL or invalid UTF-8, which PostgreSQL text cannot hold; "
                                "stored with U+FFFD in their place (reported once)");
    }
    return data;
  }

  static Settings parse_settings(const kodo::sdk::Options &options) {
    Settings s;
    const std::string text = options.get("url", "");
    kodo::sdk::Url url;
    try {
      url = kodo::sdk::parse_url(text, {"postgresql", "postgres", "postgresql+asyncpg",
                                        "postgresql+psycopg", "postgresql+psycopg2"});
    } catch (const Error &e) {
      throw Error(KODO_ERR_INVALID_ARGUMENT, std::string("option url: ") + e.what());
    }
    s.shown = url.redacted();
    auto add = [&](const std::string &key, const std::string &value) {
      s.keywords.push_back(key);
      s.values.push_back(value);
    };
    if (!url.host.empty()) add("host", url.host);
    if (url.port) add("port", std::to_string(url.port));
    if (!url.user.empty()) add("user", url.user);
    if (url.has_password) add("password", url.password);
    if (!url.path.empty()) add("dbname", url.path);
    add("connect_timeout", std::to_string(int_option(options, "connect_timeout_s", 1, 3600)));
    add("application_name", "kodo");
    // A server that vanishes without closing the socket is noticed within about 20 s.
    add("keepalives", "1");
    add("keepalives_idle", "10");
    add("keepalives_interval", "5");
    add("keepalives_count", "2");
    const int64_t statement_ms = int_option(options, "statement_timeout_ms", 0, 86400000);
    add("options", "-c statement_timeout=" + std::to_string(statement_ms));
    for (const auto &[key, value] : url.query) {
      // asyncpg's spelling of libpq's sslmode; other parameters go to libpq as they are.
      if (key == "ssl")
        add("sslmode", value);
      else
        add(key, value);
    }
    // Refuse an unknown URL parameter here, as a configuration error, not a connection failure.
    for (const std::string &key : s.keywords) {
      char *problem = nullptr;
      PQconninfoOption *parsed = PQconninfoParse((key + "=''").c_str(), &problem);
      if (!parsed) {
        std::string message = problem ? one_line(problem) : "not a libpq parameter";
        PQfreemem(problem);
        throw Error(KODO_ERR_INVALID_ARGUMENT, std::string("option url ")
                                                   .append(s.shown)
                                                   .append(": parameter '")
                                                   .append(key)
                                                   .append("': ")
                                                   .append(message));
      }
      PQconninfoFree(parsed);
    }
    s.pool_size = static_cast<size_t>(int_option(options, "pool_size", 1, 256));
    s.reconnect_max_ms = static_cast<int>(int_option(options, "reconnect_max_ms", 10, 600000));
    return s;
  }

  static int64_t int_option(const kodo::sdk::Options &options, const char *name, int64_t min,
                            int64_t max) {
    const std::string text = options.get(name, "");
    char *end = nullptr;
    const long long value = std::strtoll(text.c_str(), &end, 10);
    if (text.empty() || *end || value < min || value > max)
      throw Error(KODO_ERR_INVALID_ARGUMENT,
                  std::string("option ") + name + " must be an integer from " +
                      std::to_string(min) + " to " + std::to_string(max) + ", got '" + text + "'");
    return value;
  }

  kodo::sdk::HostLog log_;
  Settings settings_;
  Counters counters_;
  std::atomic<int64_t> schema_version_{0};

  std::mutex pool_mu_;
  std::condition_variable pool_cv_;
  std::vector<std::unique_ptr<Connection>> idle_;
  size_t leased_ = 0;
  int backoff_ms_ = 0;
  Clock::time_point next_connect_{};
  std::string last_failure_;
};

const kodo_option_spec kUrl =
    kodo::sdk::option("url", KODO_OPTION_URL, KODO_OPTION_REQUIRED | KODO_OPTION_SECRET, nullptr,
                      "KODO_EXECUTION_DATABASE",
                      "postgresql://user:password@host:port/database[?sslmode=...] (postgres://, "
                      "postgresql+asyncpg:// and postgresql+psycopg:// are accepted too)");
const kodo_option_spec kPoolSize = kodo::sdk::option(
    "pool_size", KODO_OPTION_INT, 0, "4", nullptr,
    "connections at most; calls beyond it wait for a free one (spoolers, readers and SSE "
    "streams share them)");
const kodo_option_spec kConnectTimeout =
    kodo::sdk::option("connect_timeout_s", KODO_OPTION_INT, 0, "5", nullptr,
                      "how long one connection attempt may take");
const kodo_option_spec kStatementTimeout = kodo::sdk::option(
    "statement_timeout_ms", KODO_OPTION_INT, 0, "60000", nullptr,
    "the server cancels a statement running longer (0: never); the call fails retryably");
const kodo_option_spec kReconnectMax = kodo::sdk::option(
    "reconnect_max_ms", KODO_OPTION_INT, 0, "5000", nullptr,
    "longest wait between connection attempts while the server is away (backoff doubles from "
    "100 ms)");
const kodo_option_spec *const kOptions[] = {&kUrl, &kPoolSize, &kConnectTimeout, &kStatementTimeout,
                                            &kReconnectMax};

}  // namespace

KODO_STORAGE_PLUGIN(PostgresStorage, "postgres", "0.1.0",
                    "PostgreSQL via libpq, in the kodosumi fork's execution_events table",
                    KODO_STORAGE_CAP_LIST | KODO_STORAGE_CAP_ARCHIVE | KODO_STORAGE_CAP_PURGE,
                    kOptions, sizeof(kOptions) / sizeof(kOptions[0]))
