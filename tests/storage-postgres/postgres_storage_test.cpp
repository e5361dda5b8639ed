// storage-postgres against a real PostgreSQL started for this test binary on loopback: the
// conformance kit, the schema and its migrations, idempotent batches, what happens when the
// server is unreachable or the schema missing, and that the password never shows.
#include "host_process.hpp"
#include "postgres_server.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <functional>
#include <thread>

#include <kodo/host/plugin_loader.hpp>
#include "core/storage.hpp"

namespace {

using kodo::testing::PostgresServer;

// One server per test process (ctest runs each test in a process of its own).
PostgresServer &server() {
  static PostgresServer instance;
  static bool started = (instance.start(), true);
  (void)started;
  return instance;
}

// A fresh database on the shared server, so each test sees only its own tables.
std::string fresh_database(const std::string &name) {
  server().query("DROP DATABASE IF EXISTS " + name);
  server().query("CREATE DATABASE " + name);
  std::string url = server().url();
  return url.substr(0, url.rfind('/') + 1) + name;
}

std::shared_ptr<kodo::Plugin> plugin() {
  return kodo::Plugin::load(POSTGRES_PLUGIN, "", KODO_KIND_STORAGE);
}

// Options resolved as the host resolves them (declared defaults filled in, values checked).
std::unique_ptr<kodo::Storage> open_storage(const std::string &url, kodo::OptionList extra = {}) {
  auto loaded = plugin();
  kodo::PluginOptionSources sources;
  sources.command_line = std::move(extra);
  sources.command_line.emplace_back("url", url);
  return std::make_unique<kodo::Storage>(loaded, kodo::resolve_plugin_options(*loaded, sources));
}

kodo::Event event(const std::string &fid, int64_t seq, const std::string &kind,
                  const std::string &payload) {
  kodo::Event e;
  e.fid = fid;
  e.username = "alice";
  e.seq = seq;
  e.timestamp = 1700000000.0 + seq * 0.25;
  e.kind = kind;
  e.payload = payload;
  return e;
}

std::string query_one(const std::string &url, const std::string &sql) {
  PGconn *conn = PQconnectdb(url.c_str());
  EXPECT_EQ(PQstatus(conn), CONNECTION_OK) << PQerrorMessage(conn);
  PGresult *r = PQexec(conn, sql.c_str());
  EXPECT_TRUE(PQresultStatus(r) == PGRES_TUPLES_OK || PQresultStatus(r) == PGRES_COMMAND_OK)
      << sql << ": " << PQerrorMessage(conn);
  std::string value = PQntuples(r) > 0 ? PQgetvalue(r, 0, 0) : "";
  PQclear(r);
  PQfinish(conn);
  return value;
}

std::string error_of(const std::function<void()> &fn) {
  try {
    fn();
  } catch (const std::exception &e) {
    return e.what();
  }
  return "";
}

// Polls a run's status until it ends ("finished" or "error"); "" if it did not within ~2 min.
std::string wait_for_end(kodo::e2e::HostProcess &host, const std::string &fid) {
  std::string status;
  for (int i = 0; i < 1200 && status != "finished" && status != "error"; ++i) {
    auto r = host.request("GET", "/outputs/status/" + fid);
    auto at = r.body.find("\"status\":\"");
    status = r.status == 200 && at != std::string::npos
                 ? r.body.substr(at + 10, r.body.find('"', at + 10) - at - 10)
                 : "";
    if (status != "finished") std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return status;
}

TEST(PostgresStorage, PassesTheConformanceKit) {
  const std::string url = fresh_database("conformance");
  auto result = kodo::e2e::run_command(
      {KODO_CONFORMANCE_BINARY, "--plugin", POSTGRES_PLUGIN, "--option", "url=" + url});
  EXPECT_EQ(result.exit_code, 0) << result.output;
  EXPECT_EQ(result.output.find(PostgresServer::kPassword), std::string::npos) << result.output;
}

TEST(PostgresStorage, SchemaHasTheForkTableIndexesAndIsIdempotent) {
  const std::string url = fresh_database("schema");
  auto storage = open_storage(url);
  storage->create_schema();
  storage->create_schema();
  for (const char *index : {"ix_execution_events_fid", "ix_execution_events_username",
                            "ix_execution_events_fid_kind", "ux_execution_events_fid_seq"})
    EXPECT_EQ(query_one(url, std::string("SELECT count(*) FROM pg_indexes WHERE indexname = '") +
                                 index + "'"),
              "1")
        << index;
  EXPECT_EQ(query_one(url,
                      "SELECT string_agg(version::text, ',' ORDER BY version) "
                      "FROM kodo_schema_version"),
            "1,2,3");
  EXPECT_EQ(query_one(url,
                      "SELECT string_agg(column_name, ',' ORDER BY ordinal_position) FROM "
                      "information_schema.columns WHERE table_name = 'execution_events'"),
            "id,fid,username,timestamp,kind,message,created_at,seq");
}

TEST(PostgresStorage, ConcurrentCreateTablesRunsEachMigrationOnce) {
  const std::string url = fresh_database("concurrent_schema");
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int i = 0; i < 4; ++i)
    threads.emplace_back([&] {
      try {
        open_storage(url)->create_schema();
      } catch (...) {
        ++failures;
      }
    });
  for (auto &t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(query_one(url, "SELECT count(*) FROM kodo_schema_version"), "3");
}

TEST(PostgresStorage, MigratesRowsTheForkWroteAndReadsThemBack) {
  const std::string url = fresh_database("fork");
  // The fork's table exactly, with rows it wrote (no seq, SERIAL id).
  query_one(url,
            "CREATE TABLE execution_events (id SERIAL PRIMARY KEY, fid VARCHAR(64) NOT NULL, "
            "username VARCHAR(255) NOT NULL, timestamp DOUBLE PRECISION NOT NULL, kind "
            "VARCHAR(32) NOT NULL, message TEXT NOT NULL, created_at DOUBLE PRECISION DEFAULT "
            "EXTRACT(EPOCH FROM NOW()))");
  query_one(url,
            "INSERT INTO execution_events (fid, username, timestamp, kind, message) VALUES "
            "('old1', 'bob', 10, 'status', 'running'), ('old1', 'bob', 11, 'result', 'r'), "
            "('old2', 'bob', 20, 'status', 'running'), ('old1', 'bob', 12, 'status', "
            "'finished')");
  auto storage = open_storage(url);
  EXPECT_NE(error_of([&] { storage->get_execution("old1"); }).find("kodo-host db create-tables"),
            std::string::npos);
  storage->create_schema();
  auto info = storage->get_execution("old1");
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->status, "finished");
  EXPECT_EQ(info->event_count, 3);
  EXPECT_EQ(info->last_seq, 2);
  EXPECT_EQ(info->started_at, 10);
  kodo::EventQuery q;
  q.fid = "old1";
  auto events = storage->read_events(q);
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[0].kind, "status");
  EXPECT_EQ(events[1].payload, "r");
  EXPECT_EQ(events[2].seq, 2);
  // New events continue after the migrated ones.
  storage->append(std::vector<kodo::Event>{event("old1", 3, "final", "{}")});
  EXPECT_EQ(storage->get_execution("old1")->event_count, 4);
}

// The fork's writer (kodosumi/storage.py, PostgresSpoolerWriter.save): one autocommitted
// INSERT per event, naming these five columns and nothing else.
void fork_insert(PGconn *conn, const std::string &fid, const std::string &username, double ts,
                 const std::string &kind, const std::string &message) {
  const std::string timestamp = std::to_string(ts);
  const char *params[] = {fid.c_str(), username.c_str(), timestamp.c_str(), kind.c_str(),
                          message.c_str()};
  PGresult *r = PQexecParams(conn,
                             "INSERT INTO execution_events (fid, username, timestamp, kind, "
                             "message) VALUES ($1, $2, $3, $4, $5)",
                             5, nullptr, params, nullptr, nullptr, 0);
  EXPECT_EQ(PQresultStatus(r), PGRES_COMMAND_OK) << kind << ": " << PQerrorMessage(conn);
  PQclear(r);
}

// The rows a fork run writes, in its order: status, inputs, meta, status, final, status.
void fork_run(const std::string &url, const std::string &fid) {
  PGconn *conn = PQconnectdb(url.c_str());
  ASSERT_EQ(PQstatus(conn), CONNECTION_OK) << PQerrorMessage(conn);
  const char *const rows[][2] = {{"status", "starting"},
                                 {"inputs", R"({"dict":{"n":1}})"},
                                 {"meta", R"({"dict":{"fid":"f","username":"carol"}})"},
                                 {"status", "running"},
                                 {"final", R"({"dict":{"ok":true}})"},
                                 {"status", "finished"}};
  double ts = 1700000100.0;
  for (const auto &row : rows) fork_insert(conn, fid, "carol", ts += 0.5, row[0], row[1]);
  PQfinish(conn);
}

void expect_fork_run_stored(kodo::Storage &storage, const std::string &fid) {
  auto info = storage.get_execution(fid);
  ASSERT_TRUE(info.has_value()) << fid;
  EXPECT_EQ(info->status, "finished");
  EXPECT_EQ(info->username, "carol");
  EXPECT_EQ(info->event_count, 6);
  EXPECT_EQ(info->last_seq, 5);
  kodo::EventQuery q;
  q.fid = fid;
  auto events = storage.read_events(q);
  ASSERT_EQ(events.size(), 6u);
  for (size_t i = 0; i < events.size(); ++i) EXPECT_EQ(events[i].seq, static_cast<int64_t>(i));
  EXPECT_EQ(events[2].kind, "meta");
  EXPECT_EQ(events[5].payload, "finished");
}

// The table exactly as the fork's `koco db --create-tables` makes it: SQLAlchemy's
// create_all of its ExecutionEvent model (kodosumi/dtypes.py), where `created_at` is a
// non-Optional Mapped[float] with a Python-side default only, so NOT NULL and no default.
void create_fork_orm_table(const std::string &url) {
  query_one(url,
            "CREATE TABLE execution_events (id SERIAL NOT NULL, fid VARCHAR(64) NOT NULL, "
            "username VARCHAR(255) NOT NULL, timestamp FLOAT NOT NULL, kind VARCHAR(32) NOT "
            "NULL, message TEXT NOT NULL, created_at FLOAT NOT NULL, PRIMARY KEY (id))");
  query_one(url, "CREATE INDEX ix_execution_events_fid ON execution_events (fid)");
  query_one(url, "CREATE INDEX ix_execution_events_username ON execution_events (username)");
  query_one(url, "CREATE INDEX ix_execution_events_fid_kind ON execution_events (fid, kind)");
}

TEST(PostgresStorage, TableTheForksCreateTablesMadeIsMigratedAndTakesKodosAppends) {
  const std::string url = fresh_database("fork_orm");
  create_fork_orm_table(url);
  // A row its ORM wrote (created_at given by Python's time.time()).
  query_one(url,
            "INSERT INTO execution_events (fid, username, timestamp, kind, message, created_at) "
            "VALUES ('orm1', 'bob', 5, 'status', 'running', 5.5)");
  auto storage = open_storage(url);
  // Before the migration every call says what to run, rather than failing each COPY.
  EXPECT_NE(error_of([&] {
              storage->append(std::vector<kodo::Event>{event("k1", 0, "status", "starting")});
            }).find("kodo-host db create-tables"),
            std::string::npos);
  storage->create_schema();
  storage->append(std::vector<kodo::Event>{event("k1", 0, "status", "starting"),
                                           event("k1", 1, "status", "running")});
  EXPECT_EQ(storage->get_execution("k1")->event_count, 2);
  EXPECT_EQ(query_one(url, "SELECT count(*) FROM execution_events WHERE created_at IS NULL"), "0");
  EXPECT_EQ(storage->get_execution("orm1")->status, "running");
}

TEST(PostgresStorage, TheForksWriterStoresIntoAKodoMigratedTable) {
  for (const bool fork_made_it : {false, true}) {
    const std::string url = fresh_database(fork_made_it ? "fork_writer_orm" : "fork_writer");
    if (fork_made_it) create_fork_orm_table(url);
    auto storage = open_storage(url);
    storage->create_schema();
    // A kodo run and a fork run side by side, as in a rolling upgrade.
    storage->append(std::vector<kodo::Event>{event("k1", 0, "status", "starting")});
    fork_run(url, "fork1");
    expect_fork_run_stored(*storage, "fork1");
    EXPECT_EQ(storage->get_execution("k1")->event_count, 1);
    // The listing shows the fork's run too.
    auto listed = storage->list_executions("carol", 0, 10);
    ASSERT_EQ(listed.size(), 1u) << fork_made_it;
    EXPECT_EQ(listed[0].fid, "fork1");
  }
}

TEST(PostgresStorage, ConcurrentForkWritersOfOneExecutionGetDistinctSeqs) {
  const std::string url = fresh_database("fork_concurrent");
  open_storage(url)->create_schema();
  std::vector<std::thread> writers;
  for (int w = 0; w < 4; ++w)
    writers.emplace_back([&, w] {
      PGconn *conn = PQconnectdb(url.c_str());
      for (int i = 0; i < 50; ++i)
        fork_insert(conn, "shared", "carol", w * 100 + i, "stdout", std::to_string(i));
      PQfinish(conn);
    });
  for (auto &t : writers) t.join();
  EXPECT_EQ(query_one(url,
                      "SELECT count(DISTINCT seq) || ',' || min(seq) || ',' || max(seq) FROM "
                      "execution_events WHERE fid = 'shared'"),
            "200,0,199");
  EXPECT_EQ(query_one(url, "SELECT event_count FROM kodo_executions WHERE fid = 'shared'"), "200");
}

TEST(PostgresStorage, RepeatedBatchesAreStoredOnceAndTheSummaryCountsOnce) {
  const std::string url = fresh_database("idempotent");
  auto storage = open_storage(url);
  storage->create_schema();
  std::vector<kodo::Event> batch = {event("f1", 0, "status", "running"),
                                    event("f1", 1, "stdout", "tab\there\nnewline \\ back"),
                                    event("f2", 0, "status", "running")};
  storage->append(batch);
  storage->append(batch);
  batch.push_back(event("f1", 2, "status", "finished"));
  batch.push_back(event("f1", 2, "status", "finished"));  // twice within one batch
  storage->append(batch);
  EXPECT_EQ(query_one(url, "SELECT count(*) FROM execution_events"), "4");
  auto f1 = storage->get_execution("f1");
  ASSERT_TRUE(f1);
  EXPECT_EQ(f1->event_count, 3);
  EXPECT_EQ(f1->status, "finished");
  EXPECT_EQ(f1->updated_at, 1700000000.5);
  kodo::EventQuery q;
  q.fid = "f1";
  EXPECT_EQ(storage->read_events(q)[1].payload, "tab\there\nnewline \\ back");
  // A late, older status does not overwrite the newer one.
  storage->append(std::vector<kodo::Event>{event("f2", 5, "status", "finished"),
                                           event("f2", 3, "status", "running")});
  EXPECT_EQ(storage->get_execution("f2")->status, "finished");
}

TEST(PostgresStorage, NulAndInvalidUtf8BecomeReplacementCharacters) {
  const std::string url = fresh_database("repair");
  auto storage = open_storage(url);
  storage->create_schema();
  storage->append(std::vector<kodo::Event>{event("f1", 0, "stdout", std::string("a\0b\xff", 4))});
  kodo::EventQuery q;
  q.fid = "f1";
  EXPECT_EQ(storage->read_events(q)[0].payload,
            "a\xEF\xBF\xBD"
            "b\xEF\xBF\xBD");
  std::string metrics;
  kodo::render_plugin_metrics(metrics, "storage", storage->metrics());
  EXPECT_NE(metrics.find("kodo_storage_repaired_values_total 1\n"), std::string::npos) << metrics;
}

TEST(PostgresStorage, ListingArchiveAndPurge) {
  const std::string url = fresh_database("lifecycle");
  auto storage = open_storage(url);
  storage->create_schema();
  for (int i = 0; i < 5; ++i) {
    auto e = event("x" + std::to_string(i), 0, "status", "finished");
    e.timestamp = 1000 + i;
    if (i == 4) e.username = "carol";
    storage->append(std::vector<kodo::Event>{e});
  }
  auto all = storage->list_executions("", 0, 10);
  ASSERT_EQ(all.size(), 5u);
  EXPECT_EQ(all[0].fid, "x4");  // newest first
  bool more = false;
  auto alice = storage->list_executions("alice", 1, 2, &more);
  ASSERT_EQ(alice.size(), 2u);
  EXPECT_EQ(alice[0].fid, "x2");
  EXPECT_TRUE(more);

  EXPECT_TRUE(storage->archive_execution("x3"));
  EXPECT_FALSE(storage->archive_execution("x3"));
  EXPECT_FALSE(storage->get_execution("x3"));
  EXPECT_EQ(storage->list_executions("", 0, 10).size(), 4u);
  EXPECT_EQ(query_one(url, "SELECT count(*) FROM execution_events WHERE fid = 'x3'"), "1");

  EXPECT_EQ(storage->purge(1002.5), 3);  // x0, x1, x2; archived x3 (1003) stays
  EXPECT_EQ(query_one(url, "SELECT count(*) FROM execution_events"), "2");
  EXPECT_EQ(storage->purge(1e12), 2);
  EXPECT_EQ(query_one(url, "SELECT count(*) FROM kodo_executions"), "0");
}

TEST(PostgresStorage, UnreachableAtStartIsAClearErrorWithoutThePassword) {
  const int closed_port = kodo::testing::free_loopback_port();
  const std::string url = std::string("postgresql+asyncpg://kodo:") + PostgresServer::kPassword +
                          "@127.0.0.1:" + std::to_string(closed_port) + "/kodo";
  std::string message = error_of([&] { open_storage(url); });
  EXPECT_NE(
      message.find("cannot connect to PostgreSQL at postgresql+asyncpg://kodo:***@127.0.0.1:" +
                   std::to_string(closed_port) + "/kodo"),
      std::string::npos)
      << message;
  EXPECT_EQ(message.find(PostgresServer::kPassword), std::string::npos) << message;

  std::string wrong = server().url();
  wrong.replace(wrong.find(PostgresServer::kPassword), std::strlen(PostgresServer::kPassword),
                "not-the-password");
  message = error_of([&] { open_storage(wrong); });
  EXPECT_NE(message.find("password authentication failed"), std::string::npos) << message;
  EXPECT_EQ(message.find("not-the-password"), std::string::npos) << message;

  message = error_of([&] { open_storage(server().url() + "?bogus_param=1"); });
  EXPECT_NE(message.find("parameter 'bogus_param'"), std::string::npos) << message;
  message = error_of([&] { open_storage("mysql://u:pw@h/db"); });
  EXPECT_NE(message.find("'mysql://' is not one of"), std::string::npos) << message;
}

TEST(PostgresStorage, HostCommandsCreateTablesAndNeverPrintThePassword) {
  const std::string url = fresh_database("host_commands");
  auto created = kodo::e2e::run_command(
      {KODO_HOST_BINARY, "--plugin-dir", KODO_PLUGIN_DIR, "db", "create-tables"},
      {"KODO_EXECUTION_DATABASE=" + url, "KODO_LOG_LEVEL=debug"});
  EXPECT_EQ(created.exit_code, 0) << created.output;
  EXPECT_EQ(query_one(url, "SELECT max(version) FROM kodo_schema_version"), "3");
  EXPECT_EQ(created.output.find(PostgresServer::kPassword), std::string::npos) << created.output;

  auto described = kodo::e2e::run_command(
      {KODO_HOST_BINARY, "--plugin-dir", KODO_PLUGIN_DIR, "plugins", "describe", "postgres"},
      {"KODO_EXECUTION_DATABASE=" + url});
  EXPECT_EQ(described.exit_code, 0) << described.output;
  EXPECT_NE(described.output.find("secret"), std::string::npos) << described.output;
  EXPECT_EQ(described.output.find(PostgresServer::kPassword), std::string::npos);

  auto purged = kodo::e2e::run_command(
      {KODO_HOST_BINARY, "--plugin-dir", KODO_PLUGIN_DIR, "db", "purge", "--older-than", "30d"},
      {"KODO_EXECUTION_DATABASE=" + url});
  EXPECT_EQ(purged.exit_code, 0) << purged.output;
}

TEST(PostgresStorage, ServerRestartFailsCallsRetryablyThenRecovers) {
  const std::string url = fresh_database("restart");
  auto storage = open_storage(url, {{"reconnect_max_ms", "200"}});
  storage->create_schema();
  storage->append(std::vector<kodo::Event>{event("r1", 0, "status", "running")});
  server().stop();
  std::string message =
      error_of([&] { storage->append(std::vector<kodo::Event>{event("r1", 1, "stdout", "x")}); });
  EXPECT_FALSE(message.empty());
  std::string metrics;
  kodo::render_plugin_metrics(metrics, "storage", storage->metrics());
  EXPECT_NE(metrics.find("kodo_storage_server_up 0\n"), std::string::npos) << metrics;
  server().start();
  // The spooler's retry, done by hand: the call succeeds once the backoff has passed.
  bool stored = false;
  for (int i = 0; i < 100 && !stored; ++i) {
    try {
      storage->append(std::vector<kodo::Event>{event("r1", 1, "stdout", "x")});
      stored = true;
    } catch (const std::exception &) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  EXPECT_TRUE(stored);
  EXPECT_EQ(storage->get_execution("r1")->event_count, 2);
  metrics.clear();
  kodo::render_plugin_metrics(metrics, "storage", storage->metrics());
  EXPECT_NE(metrics.find("kodo_storage_server_up 1\n"), std::string::npos) << metrics;
}

}  // namespace

namespace {

// The fault the issue names: PostgreSQL restarts while flows are writing. The spooler keeps
// retrying, /health and /metrics show the outage while it lasts, and afterwards every
// (fid, seq) is stored exactly once with no gap.
TEST(PostgresFault, RestartMidRunLosesAndDuplicatesNothing) {
  const std::string url = fresh_database("fault");
  auto created = kodo::e2e::run_command(
      {KODO_HOST_BINARY, "--plugin-dir", KODO_PLUGIN_DIR, "db", "create-tables"},
      {"KODO_EXECUTION_DATABASE=" + url});
  ASSERT_EQ(created.exit_code, 0) << created.output;

  constexpr int kTicks = 300;
  kodo::e2e::HostProcess host;
  ASSERT_TRUE(host.start(
      {"--plugin-dir", KODO_PLUGIN_DIR, "--storage-option", "reconnect_max_ms=300", "--flow",
       "ticker=/bin/sh -c 'i=0; while [ $i -lt " + std::to_string(kTicks) +
           " ]; do echo tick $i; i=$((i+1)); sleep 0.01; done; "
           "echo \"{\\\"kind\\\":\\\"final\\\",\\\"payload\\\":\\\"ok\\\"}\" >&$KODO_EVENTS_FD'"},
      {"KODO_EXECUTION_DATABASE=" + url}))
      << host.log();
  std::vector<std::string> fids;
  for (int i = 0; i < 8; ++i) {
    auto r = host.request("POST", "/api/v1/executions", "{\"flow\": \"ticker\"}");
    ASSERT_EQ(r.status, 201) << r.body;
    fids.push_back(r.body.substr(r.body.find("\"fid\":\"") + 7, 24));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(500));

  server().stop();
  // Wait (without a deadline assertion) until the host reports the outage on both pages.
  bool health_down = false, metrics_down = false;
  for (int i = 0; i < 300 && !(health_down && metrics_down); ++i) {
    health_down = health_down || host.request("GET", "/health").status == 503;
    metrics_down =
        metrics_down ||
        host.request("GET", "/metrics").body.find("\nkodo_storage_up 0\n") != std::string::npos;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(health_down) << "/health never answered 503 while PostgreSQL was away";
  EXPECT_TRUE(metrics_down) << "/metrics never showed kodo_storage_up 0";
  std::this_thread::sleep_for(std::chrono::seconds(1));
  server().start();

  for (const auto &fid : fids) EXPECT_EQ(wait_for_end(host, fid), "finished") << fid;
  EXPECT_EQ(host.stop(), 0) << host.log();
  EXPECT_NE(host.log().find("storage is back"), std::string::npos) << host.log();

  // Exactly once, no gap: per execution, count = distinct seqs = last seq + 1, every tick is
  // there, and the summary agrees with the rows.
  for (const auto &fid : fids) {
    const std::string where = " FROM execution_events WHERE fid = '" + fid + "'";
    const std::string count = query_one(url, "SELECT count(*)" + where);
    EXPECT_EQ(query_one(url, "SELECT count(DISTINCT seq)" + where), count) << fid;
    EXPECT_EQ(query_one(url, "SELECT (max(seq) + 1)::text" + where), count) << fid;
    EXPECT_EQ(query_one(url, "SELECT count(*)" + where + " AND kind = 'stdout'"),
              std::to_string(kTicks))
        << fid;
    EXPECT_EQ(query_one(url, "SELECT event_count FROM kodo_executions WHERE fid = '" + fid + "'"),
              count)
        << fid;
  }
}

}  // namespace

namespace {

// Several hosts on one database: each serves what the others stored.
TEST(PostgresSharing, TwoHostsServeEachOthersExecutions) {
  const std::string url = fresh_database("shared");
  auto created = kodo::e2e::run_command(
      {KODO_HOST_BINARY, "--plugin-dir", KODO_PLUGIN_DIR, "db", "create-tables"},
      {"KODO_EXECUTION_DATABASE=" + url});
  ASSERT_EQ(created.exit_code, 0) << created.output;
  const std::vector<std::string> args = {"--plugin-dir", KODO_PLUGIN_DIR, "--flow",
                                         std::string("hello=") + HELLO_FLOW};
  kodo::e2e::HostProcess a, b;
  ASSERT_TRUE(a.start(args, {"KODO_EXECUTION_DATABASE=" + url})) << a.log();
  ASSERT_TRUE(b.start(args, {"KODO_EXECUTION_DATABASE=" + url})) << b.log();
  auto launch = [](kodo::e2e::HostProcess &host) {
    auto r = host.request("POST", "/api/v1/executions", "{\"flow\": \"hello\"}");
    EXPECT_EQ(r.status, 201) << r.body;
    return r.body.substr(r.body.find("\"fid\":\"") + 7, 24);
  };
  const std::string on_a = launch(a), on_b = launch(b);
  EXPECT_EQ(wait_for_end(a, on_a), "finished");
  EXPECT_EQ(wait_for_end(b, on_b), "finished");
  // Each host reads the other's run: status, events and the SSE stream to its end.
  EXPECT_EQ(wait_for_end(a, on_b), "finished");
  EXPECT_EQ(wait_for_end(b, on_a), "finished");
  auto events = a.request("GET", "/api/v1/executions/" + on_b + "/events?kinds=final");
  EXPECT_NE(events.body.find("\"kind\":\"final\""), std::string::npos) << events.body;
  auto sse = b.request("GET", "/outputs/stream/" + on_a, "", 30, "event: eof");
  EXPECT_NE(sse.body.find("event: final"), std::string::npos) << sse.body;
  auto list = a.request("GET", "/api/v1/executions");
  EXPECT_NE(list.body.find(on_a), std::string::npos) << list.body;
  EXPECT_NE(list.body.find(on_b), std::string::npos) << list.body;
  EXPECT_EQ(a.stop(), 0);
  EXPECT_EQ(b.stop(), 0);
}

}  // namespace
