// kodo-host end to end, on each storage backend (the embedded sqlite, and postgres against a
// real server this test process starts): launch over HTTP, follow the SSE stream, read status
// and events, find every event where kodosumi (or its PostgreSQL fork) looks for it, delete,
// and stop with SIGTERM without losing anything.
#include "host_process.hpp"
#include "postgres_server.hpp"

#include <gtest/gtest.h>
#include <rapidjson/document.h>
#include <sqlite3.h>

#include <filesystem>
#include <regex>

namespace kodo::e2e {
namespace {

namespace fs = std::filesystem;

// One PostgreSQL per test process (ctest runs each case in a process of its own).
kodo::testing::PostgresServer &postgres() {
  static kodo::testing::PostgresServer server;
  static bool started = (server.start(), true);
  (void)started;
  return server;
}

// Rows as stored: (seq, kind, message), in the order kodosumi's readers read them (by id).
using StoredRows = std::vector<std::tuple<int64_t, std::string, std::string>>;

class HostE2E : public ::testing::TestWithParam<std::string> {
 protected:
  bool on_postgres() const { return GetParam() == "postgres"; }

  void SetUp() override {
    char pattern[] = "/tmp/kodo-e2e-XXXXXX";
    ASSERT_NE(mkdtemp(pattern), nullptr);
    dir_ = pattern;
    exec_dir_ = dir_ + "/execution";
    if (on_postgres()) {
      postgres().query("CREATE DATABASE e2e");
      database_url_ = postgres().url();
      database_url_ = database_url_.substr(0, database_url_.rfind('/') + 1) + "e2e";
      // The user's path: KODO_EXECUTION_DATABASE, then `db create-tables`, then serve.
      auto created =
          run_command({KODO_HOST_BINARY, "--plugin-dir", KODO_PLUGIN_DIR, "db", "create-tables"},
                      {"KODO_EXECUTION_DATABASE=" + database_url_});
      ASSERT_EQ(created.exit_code, 0) << created.output;
    }
  }
  void TearDown() override {
    if (HasFailure()) std::cerr << "--- kodo-host log ---\n" << host_.log();
    host_.stop();
    fs::remove_all(dir_);
  }

  void start(std::vector<std::string> args = {}) {
    std::vector<std::string> all = {
        "--plugin-dir",
        KODO_PLUGIN_DIR,
        "--exec-dir",
        exec_dir_,
        "--flow",
        std::string("hello=") + HELLO_FLOW,
        "--flow-env",
        "hello=HELLO_STEP_SECONDS=0.02",
        "--flow",
        "sleepy=/bin/sh -c 'echo sleeping; sleep 60'",
        "--flow",
        "failing=/bin/sh -c 'echo about to fail >&2; exit 3'",
        "--flow",
        "chatty=/bin/sh -c 'i=0; while [ $i -lt 3000 ]; do echo line $i; i=$((i+1)); done; "
        "echo \"{\\\"kind\\\":\\\"final\\\",\\\"payload\\\":\\\"ok\\\"}\" >&$KODO_EVENTS_FD'",
        "--sse-keepalive",
        "0.5",
        "--shutdown-grace",
        "2"};
    all.insert(all.end(), args.begin(), args.end());
    std::vector<std::string> env;
    if (on_postgres()) env.push_back("KODO_EXECUTION_DATABASE=" + database_url_);
    ASSERT_TRUE(host_.start(all, env)) << host_.log();
  }

  std::string launch(const std::string &flow, const std::string &inputs = "{}") {
    auto r = host_.request("POST", "/api/v1/executions",
                           "{\"flow\": \"" + flow + "\", \"inputs\": " + inputs + "}");
    EXPECT_EQ(r.status, 201) << r.body;
    rapidjson::Document d;
    d.Parse(r.body.c_str());
    EXPECT_TRUE(d.IsObject() && d.HasMember("fid")) << r.body;
    return d.IsObject() && d.HasMember("fid") ? d["fid"].GetString() : "";
  }

  rapidjson::Document get_json(const std::string &target, int expect_status = 200) {
    auto r = host_.request("GET", target);
    EXPECT_EQ(r.status, expect_status) << target << ": " << r.body;
    rapidjson::Document d;
    d.Parse(r.body.c_str());
    EXPECT_FALSE(d.HasParseError()) << r.body;
    return d;
  }

  // The whole SSE stream of a run, until its eof frame.
  std::string stream(const std::string &fid, const std::string &which = "stream") {
    auto r = host_.request("GET", "/outputs/" + which + "/" + fid, "", 60, "event: eof");
    EXPECT_EQ(r.status, 200);
    EXPECT_NE(r.headers.find("text/event-stream"), std::string::npos) << r.headers;
    return r.body;
  }

  // What kodosumi's reader sees. SQLite: the monitor table of the execution's database (or
  // its archive), where id = seq + 1. PostgreSQL: execution_events of the fid, by id.
  StoredRows stored_rows(const std::string &fid, bool archived = false) {
    return on_postgres() ? postgres_rows(fid)
                         : sqlite_rows(fid, archived ? "sqlite3.db.archive" : "sqlite3.db");
  }

  StoredRows sqlite_rows(const std::string &fid, const std::string &file) {
    StoredRows rows;
    std::string path = exec_dir_ + "/admin/" + fid + "/" + file;
    sqlite3 *db = nullptr;
    EXPECT_EQ(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK) << path;
    sqlite3_stmt *stmt = nullptr;
    EXPECT_EQ(sqlite3_prepare_v2(db,
                                 "SELECT id, timestamp, kind, message FROM monitor WHERE id > 0 "
                                 "ORDER BY id",
                                 -1, &stmt, nullptr),
              SQLITE_OK)
        << sqlite3_errmsg(db);
    while (stmt && sqlite3_step(stmt) == SQLITE_ROW)
      rows.emplace_back(sqlite3_column_int64(stmt, 0) - 1,
                        reinterpret_cast<const char *>(sqlite3_column_text(stmt, 2)),
                        reinterpret_cast<const char *>(sqlite3_column_text(stmt, 3)));
    sqlite3_finalize(stmt);
    sqlite3_close(db);
    return rows;
  }

  StoredRows postgres_rows(const std::string &fid) {
    return testing::execution_event_rows(database_url_, fid);
  }

  bool archived(const std::string &fid) {
    if (!on_postgres())
      return !fs::exists(exec_dir_ + "/admin/" + fid + "/sqlite3.db") &&
             fs::exists(exec_dir_ + "/admin/" + fid + "/sqlite3.db.archive");
    PGconn *conn = PQconnectdb(database_url_.c_str());
    const char *params[] = {fid.c_str()};
    PGresult *r =
        PQexecParams(conn, "SELECT archived_at IS NOT NULL FROM kodo_executions WHERE fid = $1", 1,
                     nullptr, params, nullptr, nullptr, 0);
    const bool yes = PQntuples(r) == 1 && std::string(PQgetvalue(r, 0, 0)) == "t";
    PQclear(r);
    PQfinish(conn);
    return yes;
  }

  std::string dir_, exec_dir_, database_url_;
  HostProcess host_;
};

std::vector<std::string> frame_kinds(const std::string &sse) {
  std::vector<std::string> kinds;
  std::regex event_line("event: ([a-z]+)\n");
  for (auto it = std::sregex_iterator(sse.begin(), sse.end(), event_line);
       it != std::sregex_iterator(); ++it)
    if ((*it)[1] != "alive") kinds.push_back((*it)[1]);
  return kinds;
}

TEST_P(HostE2E, LaunchStreamStatusEventsAndKodosumiLayout) {
  start();
  auto health = get_json("/health");
  EXPECT_STREQ(health["status"].GetString(), "ok");
  auto flows = get_json("/api/v1/flows");
  ASSERT_TRUE(flows["flows"].IsArray());
  EXPECT_STREQ(flows["flows"][0]["name"].GetString(), "hello");

  const std::string fid = launch("hello", "{\"name\": \"kodo\", \"steps\": 3}");
  ASSERT_EQ(fid.size(), 24u);
  const std::string sse = stream(fid);
  const std::vector<std::string> expected = {"status", "inputs", "meta",  "status", "stdout",
                                             "agent",  "agent",  "agent", "stderr", "result",
                                             "final",  "status", "eof"};
  EXPECT_EQ(frame_kinds(sse), expected) << sse;
  EXPECT_NE(sse.find("id: 1\ndata: "), std::string::npos) << sse;
  EXPECT_NE(sse.find(":finished\n"), std::string::npos) << sse;

  auto status = get_json("/outputs/status/" + fid);
  EXPECT_STREQ(status["status"].GetString(), "finished");
  EXPECT_STREQ(status["fid"].GetString(), fid.c_str());
  EXPECT_STREQ(status["username"].GetString(), "admin");
  EXPECT_STREQ(status["entry_point"].GetString(), "hello");
  // final as stored (kodosumi's serialize() form), as kodosumi's status answers it.
  ASSERT_TRUE(status["final"].IsString());
  EXPECT_STREQ(status["final"].GetString(),
               "{\"dict\":{\"greeting\":\"hello, kodo\",\"steps\":3}}");

  auto agents = get_json("/api/v1/executions/" + fid + "/events?kinds=agent");
  EXPECT_EQ(agents["events"].Size(), 3u);
  auto page = get_json("/api/v1/executions/" + fid + "/events?after=2&limit=2");
  ASSERT_EQ(page["events"].Size(), 2u);
  EXPECT_EQ(page["events"][0]["seq"].GetInt(), 3);
  EXPECT_TRUE(page["has_more"].GetBool());

  auto list = get_json("/api/v1/executions");
  ASSERT_GE(list["executions"].Size(), 1u);
  EXPECT_STREQ(list["executions"][0]["fid"].GetString(), fid.c_str());
  EXPECT_STREQ(list["executions"][0]["status"].GetString(), "finished");

  // kodosumi's layout: data/execution/<user>/<fid>/{in,out}, and its events where its reader
  // looks (sqlite3.db's monitor table, or the fork's execution_events), in seq order.
  if (!on_postgres()) {  // the folders belong to kodosumi's SQLite layout
    EXPECT_TRUE(fs::is_directory(exec_dir_ + "/admin/" + fid + "/in"));
    EXPECT_TRUE(fs::is_directory(exec_dir_ + "/admin/" + fid + "/out"));
  }
  auto rows = stored_rows(fid);
  ASSERT_EQ(rows.size(), expected.size() - 1);
  for (size_t i = 0; i < rows.size(); ++i) {
    EXPECT_EQ(std::get<0>(rows[i]), static_cast<int64_t>(i));
    EXPECT_EQ(std::get<1>(rows[i]), expected[i]);
  }
  EXPECT_EQ(std::get<2>(rows.front()), "starting");
  EXPECT_EQ(std::get<2>(rows.back()), "finished");

  auto metrics = host_.request("GET", "/metrics");
  EXPECT_EQ(metrics.status, 200);
  EXPECT_NE(metrics.body.find("kodo_events_stored_total"), std::string::npos);
  EXPECT_NE(metrics.body.find("kodo_running_executions 0"), std::string::npos) << metrics.body;
  // Every event the executors made was handed to the transport and counted there (the
  // published counter once stood at 0 for ever).
  const auto figure = [&](const std::string &name) {
    const size_t at = metrics.body.find("\n" + name + " ");
    return at == std::string::npos ? -1.0 : std::stod(metrics.body.substr(at + name.size() + 2));
  };
  EXPECT_GT(figure("kodo_events_published_total"), 0) << metrics.body;
  EXPECT_EQ(figure("kodo_events_published_total"), figure("kodo_events_in_total")) << metrics.body;
}

TEST_P(HostE2E, MainAndStdioStreamsFilterAndResumeFromLastEventId) {
  start();
  const std::string fid = launch("hello");
  stream(fid);
  EXPECT_EQ(frame_kinds(stream(fid, "main")),
            (std::vector<std::string>{"status", "inputs", "meta", "status", "agent", "agent",
                                      "agent", "result", "final", "status", "eof"}));
  EXPECT_EQ(frame_kinds(stream(fid, "stdio")),
            (std::vector<std::string>{"stdout", "stderr", "eof"}));
}

// Right after a launch, /outputs/status answered 200 with an empty status and timestamp 0 in
// 1 to 5 of 60 launches (the run known, its first status row not yet stored). kodosumi waits
// for that row; so does kodo, or it answers with the launch state.
TEST_P(HostE2E, StatusRightAfterLaunchIsNeverEmpty) {
  start();
  for (int i = 0; i < 60; ++i) {
    const std::string fid = launch("hello");
    auto status = get_json("/outputs/status/" + fid);
    ASSERT_TRUE(status.IsObject() && status["status"].IsString());
    const std::string value = status["status"].GetString();
    EXPECT_TRUE(value == "starting" || value == "running" || value == "finished") << value;
    EXPECT_GT(status["timestamp"].GetDouble(), 1.6e9) << fid;
  }
}

TEST_P(HostE2E, FailingFlowEndsInErrorThatSaysWhy) {
  start();
  const std::string fid = launch("failing");
  const std::string sse = stream(fid);
  auto kinds = frame_kinds(sse);
  ASSERT_GE(kinds.size(), 3u);
  EXPECT_EQ(kinds[kinds.size() - 3], "error");
  EXPECT_EQ(kinds[kinds.size() - 2], "status");
  EXPECT_NE(sse.find("code 3"), std::string::npos) << sse;
  EXPECT_STREQ(get_json("/outputs/status/" + fid)["status"].GetString(), "error");
}

// A finished run's status is answered from a cache on the I/O thread from the second read
// on; deleting the run must drop it there too, or the deleted run would still be served.
TEST_P(HostE2E, FinishedStatusIsServedAgainUntilDeleted) {
  start();
  const std::string fid = launch("failing");
  stream(fid);  // until its end
  const auto first = host_.request("GET", "/outputs/status/" + fid);
  ASSERT_EQ(first.status, 200) << first.body;
  for (int i = 0; i < 3; ++i) {
    const auto again = host_.request("GET", "/outputs/status/" + fid);
    EXPECT_EQ(again.status, 200);
    EXPECT_EQ(again.body, first.body);
  }
  EXPECT_EQ(host_.request("DELETE", "/outputs/" + fid).status, 204);
  get_json("/outputs/status/" + fid, 404);
  // Routes the quick path does not take keep their errors.
  EXPECT_EQ(host_.request("POST", "/outputs/status/" + fid).status, 405);
  EXPECT_EQ(host_.request("GET", "/outputs/status/" + fid + "%2F..").status, 400);
}

TEST_P(HostE2E, DeleteCancelsARunningFlowThenArchives) {
  start();
  const std::string fid = launch("sleepy");
  // Wait until it runs.
  for (int i = 0; i < 500; ++i) {
    auto events = get_json("/api/v1/executions/" + fid + "/events?kinds=stdout");
    if (events["events"].Size() > 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  auto r = host_.request("DELETE", "/outputs/" + fid);
  EXPECT_EQ(r.status, 204) << r.body;  // kodosumi's answer: no body
  EXPECT_EQ(r.body, "");
  EXPECT_TRUE(archived(fid));
  auto rows = stored_rows(fid, /*archived=*/true);
  ASSERT_GE(rows.size(), 2u);
  EXPECT_EQ(std::get<1>(rows.back()), "status");
  EXPECT_EQ(std::get<2>(rows.back()), "error");
  EXPECT_NE(std::get<2>(rows[rows.size() - 2]).find("cancelled"), std::string::npos);
  get_json("/outputs/status/" + fid, 404);
  EXPECT_EQ(host_.request("DELETE", "/outputs/" + fid).status, 404);
}

TEST_P(HostE2E, BadRequestsGetClearJsonErrors) {
  start();
  auto expect_error = [&](const std::string &method, const std::string &target,
                          const std::string &body, int status, const std::string &words) {
    auto r = host_.request(method, target, body);
    EXPECT_EQ(r.status, status) << method << " " << target << ": " << r.body;
    // kodosumi's routes answer errors in its form, kodo's own in kodo's.
    const std::string form = target.rfind("/outputs/", 0) == 0
                                 ? "{\"status_code\":" + std::to_string(status) + ",\"detail\":"
                                 : "{\"error\":";
    EXPECT_EQ(r.body.rfind(form, 0), 0u) << r.body;
    EXPECT_NE(r.body.find(words), std::string::npos) << r.body;
  };
  expect_error("POST", "/api/v1/executions", "not json", 400, "JSON object");
  expect_error("POST", "/api/v1/executions", "{\"inputs\": {}}", 400, "flow");
  expect_error("POST", "/api/v1/executions", "{\"flow\": \"nope\"}", 404, "nope");
  expect_error("POST", "/api/v1/executions", "{\"flow\": \"hello\", \"inputs\": 3}", 400, "inputs");
  expect_error("GET", "/outputs/status/0123456789abcdef01234567", "", 404,
               "0123456789abcdef01234567");
  expect_error("GET", "/outputs/status/..%2Fetc", "", 400, "../etc");
  expect_error("GET", "/api/v1/executions?limit=lots", "", 400, "limit");
  expect_error("GET", "/api/v1/executions/0123456789abcdef01234567/events?kinds=bogus", "", 400,
               "bogus");
  expect_error("PUT", "/api/v1/flows", "", 405, "PUT");
  expect_error("GET", "/no/such/thing", "", 404, "/no/such/thing");
}

TEST_P(HostE2E, SigtermEndsRunsAndStoresEverythingFirst) {
  start();
  std::vector<std::string> fids;
  for (int i = 0; i < 4; ++i) fids.push_back(launch("chatty"));
  fids.push_back(launch("sleepy"));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(host_.stop(), 0) << host_.log();
  // Every run ended with a final status, and every stored seq is contiguous from 0.
  for (const auto &fid : fids) {
    auto rows = stored_rows(fid);
    ASSERT_GE(rows.size(), 4u) << fid;
    for (size_t i = 0; i < rows.size(); ++i)
      ASSERT_EQ(std::get<0>(rows[i]), static_cast<int64_t>(i)) << fid;
    EXPECT_EQ(std::get<1>(rows.back()), "status") << fid;
    const std::string last = std::get<2>(rows.back());
    EXPECT_TRUE(last == "finished" || last == "error") << fid << ": " << last;
  }
}

TEST_P(HostE2E, AfterARestartEverythingIsServedFromStorage) {
  start();
  const std::string fid = launch("hello");
  const std::string before = stream(fid);
  ASSERT_EQ(host_.stop(), 0) << host_.log();
  start();
  EXPECT_STREQ(get_json("/outputs/status/" + fid)["status"].GetString(), "finished");
  EXPECT_STREQ(get_json("/api/v1/executions")["executions"][0]["fid"].GetString(), fid.c_str());
  EXPECT_EQ(frame_kinds(stream(fid)), frame_kinds(before));
}

// kodosumi keeps one folder per user id (a role's UUID): nothing may assume one user. A run of
// another user is served by fid (status, streams, events, DELETE) and listed by username.
TEST_P(HostE2E, AnotherUsersExecutionIsServed) {
  const std::string user = "5f1c2a3e-8b7d-4c6e-9a0b-1d2e3f4a5b6c";
  start({"--default-user", user});
  const std::string fid = launch("hello");
  const std::string before = stream(fid);
  ASSERT_EQ(host_.stop(), 0) << host_.log();
  start();  // acting as admin again
  auto status = get_json("/outputs/status/" + fid);
  EXPECT_STREQ(status["status"].GetString(), "finished");
  EXPECT_STREQ(status["username"].GetString(), user.c_str());
  EXPECT_EQ(frame_kinds(stream(fid)), frame_kinds(before));
  const auto raw = host_.request("GET", "/outputs/main/" + fid + "?raw", "", 60, "event: eof");
  EXPECT_EQ(frame_kinds(raw.body), frame_kinds(stream(fid, "main")));
  EXPECT_EQ(get_json("/api/v1/executions/" + fid + "/events")["events"].Size(),
            frame_kinds(before).size() - 1);                           // all but eof
  EXPECT_EQ(get_json("/api/v1/executions")["executions"].Size(), 0u);  // admin has none
  auto listed = get_json("/api/v1/executions?username=" + user);
  ASSERT_EQ(listed["executions"].Size(), 1u);
  EXPECT_STREQ(listed["executions"][0]["fid"].GetString(), fid.c_str());
  EXPECT_EQ(host_.request("DELETE", "/outputs/" + fid).status, 204);
  get_json("/outputs/status/" + fid, 404);
}

INSTANTIATE_TEST_SUITE_P(Storage, HostE2E, ::testing::Values("sqlite", "postgres"),
                         [](const ::testing::TestParamInfo<std::string> &param) {
                           return param.param;
                         });

TEST(HostCommandLine, ErrorsNameTheThingThatWasWrong) {
  auto r = run_command({KODO_HOST_BINARY, "--plugin-dir", KODO_PLUGIN_DIR, "--storage", "nosuch",
                        "db", "create-tables"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("storage plugin 'nosuch' not found"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("kodo-storage-nosuch.so"), std::string::npos) << r.output;

  r = run_command({KODO_HOST_BINARY, "--plugin-dir", KODO_PLUGIN_DIR, "--storage-option",
                   "colour=red", "db", "create-tables"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("unknown option 'colour'"), std::string::npos) << r.output;

  r = run_command({KODO_HOST_BINARY, "--plugin-dir", KODO_PLUGIN_DIR, "--storage", "inproc", "db",
                   "create-tables"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("not found"), std::string::npos) << r.output;

  r = run_command({KODO_HOST_BINARY, "--plugin-dir", KODO_PLUGIN_DIR, "--storage",
                   std::string(KODO_PLUGIN_DIR) + "/kodo-transport-inproc.so", "db",
                   "create-tables"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("is a transport plugin ('inproc'), but a storage plugin was asked for"),
            std::string::npos)
      << r.output;

  r = run_command({KODO_HOST_BINARY, "frobnicate"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("unknown command 'frobnicate'"), std::string::npos) << r.output;

  r = run_command({KODO_HOST_BINARY, "spool", "--plugin-dir", KODO_PLUGIN_DIR});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("cross-process transport"), std::string::npos) << r.output;
}

TEST(HostCommandLine, PluginsListAndDescribe) {
  auto r = run_command({KODO_HOST_BINARY, "--plugin-dir", KODO_PLUGIN_DIR, "plugins", "list"});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("sqlite"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("inproc"), std::string::npos) << r.output;
  r = run_command(
      {KODO_HOST_BINARY, "--plugin-dir", KODO_PLUGIN_DIR, "plugins", "describe", "sqlite"});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("exec_dir (path)"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("KODO_EXEC_DIR"), std::string::npos) << r.output;
  r = run_command({KODO_HOST_BINARY, "--version"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.output.find("kodo-host"), std::string::npos);
}

}  // namespace
}  // namespace kodo::e2e
