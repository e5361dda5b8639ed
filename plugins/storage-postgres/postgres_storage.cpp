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
//
// Files: pg_schema.hpp (migrations and the append's SQL), pg_connection.* (a connection, its
// settings and errors), pg_text.* (values as PostgreSQL takes them); this file holds the
// storage: the pool, the ABI's calls and the options.
#include "pg_connection.hpp"
#include "pg_schema.hpp"
#include "pg_text.hpp"

#include <kodo/plugin.hpp>

#include <libpq-fe.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace {

using namespace kodo_postgres;  // NOLINT(google-build-using-namespace): the plugin's own parts
using Clock = std::chrono::steady_clock;

std::string quote(const std::string &s) {
  return "'" + s + "'";
}

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
