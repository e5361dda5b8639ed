// kodo-host on the Ray transport, end to end, against a real Ray head. Runs only inside
// in_ray_namespace.sh (ctest registers it so): one head, started by the script in a private
// network and PID namespace, is shared by every case; KODO_RAY_SERVER and KODO_RAY_PYTHON name
// it and the venv. Runners are kodosumi-shaped (kodosumi_runners.py); each case uses fids of
// its own, so cases do not see each other's runners.
#include "host_process.hpp"
#include "postgres_server.hpp"
#include "service_process.hpp"

#include <gtest/gtest.h>
#include <rapidjson/document.h>
#include <sqlite3.h>

#include <filesystem>
#include <regex>

namespace kodo::e2e {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

std::string env_or_fail(const char *name) {
  const char *value = std::getenv(name);
  return value ? value : "";
}

// A fid of kodosumi's shape (24 hex digits), distinct per case and index.
std::string make_fid(int kase, int i) {
  char text[25];
  std::snprintf(text, sizeof text, "6500%010d%010d", kase, i);
  return text;
}

std::string join(const std::vector<std::string> &parts) {
  std::string out;
  for (const auto &p : parts) out += (out.empty() ? "" : ",") + p;
  return out;
}

// The sum of a metric's samples on a process's /metrics; -1 if absent.
double metric(const HostProcess &process, const std::string &name) {
  const std::string text = process.request("GET", "/metrics").body;
  std::regex line("(^|\n)" + name + "(\\{[^}]*\\})? ([0-9.e+-]+)");
  double sum = -1;
  for (auto it = std::sregex_iterator(text.begin(), text.end(), line); it != std::sregex_iterator();
       ++it)
    sum = (sum < 0 ? 0 : sum) + std::stod((*it)[3]);
  return sum;
}

struct Row {
  std::string kind, message;
};

class RayE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    python_ = env_or_fail("KODO_RAY_PYTHON");
    ASSERT_FALSE(python_.empty() || env_or_fail("KODO_RAY_SERVER").empty())
        << "run this test through tests/transport-ray/in_ray_namespace.sh (ctest does)";
    exec_dir_ = dir_.path() + "/execution";
    // The plugin's open waits for the bridge's first connection: Python importing ray and
    // joining the head take many seconds on a loaded machine.
    host_.start_timeout_s = 120;
    common_ = {"--plugin-dir", KODO_PLUGIN_DIR, "--exec-dir", exec_dir_};
  }
  void TearDown() override {
    if (HasFailure()) std::cerr << "--- kodo-host log ---\n" << host_.log();
  }

  std::vector<std::string> env() const {
    return {"KODO_EVENT_TRANSPORT=ray", "KODO_RAY_SPILL_DIR=" + dir_.path() + "/spill",
            "KODO_RAY_DISCOVER_MS=100"};
  }

  void runners(const std::vector<std::string> &args) {
    std::vector<std::string> all = {python_, RUNNERS_SCRIPT};
    all.insert(all.end(), args.begin(), args.end());
    const CommandResult r = run_command(all);
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }

  void start_spool() { ASSERT_TRUE(host_.start(common_, env(), "spool")) << host_.log(); }

  // kodosumi's table of one execution, in id order.
  std::vector<Row> rows(const std::string &username, const std::string &fid) const {
    std::vector<Row> out;
    sqlite3 *db = nullptr;
    const std::string path = exec_dir_ + "/" + username + "/" + fid + "/sqlite3.db";
    if (!fs::exists(path) ||
        sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
      sqlite3_close(db);
      return out;
    }
    sqlite3_stmt *stmt = nullptr;
    if (sqlite3_prepare_v2(db, "SELECT kind, message FROM monitor ORDER BY id", -1, &stmt,
                           nullptr) == SQLITE_OK)
      while (sqlite3_step(stmt) == SQLITE_ROW)
        out.push_back({reinterpret_cast<const char *>(sqlite3_column_text(stmt, 0)),
                       reinterpret_cast<const char *>(sqlite3_column_text(stmt, 1))});
    sqlite3_finalize(stmt);
    sqlite3_close(db);
    return out;
  }

  // Waits until the execution's last stored row is a final status (or 180 s passed).
  std::vector<Row> wait_for_end(const std::string &username, const std::string &fid) const {
    const auto deadline = Clock::now() + std::chrono::seconds(180);
    std::vector<Row> got;
    while (Clock::now() < deadline) {
      got = rows(username, fid);
      if (!got.empty() && got.back().kind == "status" &&
          (got.back().message == "finished" || got.back().message == "error"))
        break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return got;
  }

  // A runner's whole run, each event once and in order, kodosumi's payloads intact.
  void expect_whole_run(const std::string &fid, int lines) const {
    const auto got = wait_for_end("alice", fid);
    ASSERT_EQ(got.size(), static_cast<size_t>(lines + 6)) << fid << ": rows stored";
    EXPECT_EQ(got[0].kind + " " + got[0].message, "status starting");
    EXPECT_EQ(got[1].message, R"({"dict": {"lines": )" + std::to_string(lines) + "}}");
    EXPECT_EQ(got[2].kind, "meta");
    EXPECT_NE(got[2].message.find(R"("username": "alice")"), std::string::npos);
    for (int i = 1; i <= lines; ++i)
      ASSERT_EQ(got[3 + i].message, "line " + std::to_string(i)) << fid << ": out of order";
    EXPECT_EQ(got[got.size() - 2].kind, "final");
    EXPECT_EQ(got[got.size() - 2].message,
              R"({"dict": {"lines": )" + std::to_string(lines) + R"(, "text": "done \u2713"}})");
    EXPECT_EQ(got.back().kind + " " + got.back().message, "status finished");
  }

  // Runners that emit 800 lines 5 ms apart (about 4 s), returning once 100 rows of the first
  // are stored: a fault made next comes while they emit.
  void spawn_emitting_runners(const std::vector<std::string> &fids) {
    ASSERT_NO_FATAL_FAILURE(
        runners({"spawn", "--fids", join(fids), "--lines", "800", "--interval", "0.005"}));
    const auto deadline = Clock::now() + std::chrono::seconds(60);
    while (rows("alice", fids[0]).size() < 100 && Clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }

  pid_t bridge_pid() const {
    return static_cast<pid_t>(metric(host_, "kodo_transport_bridge_pid"));
  }

  kodo::testing::TempDir dir_{"kodo-ray-e2e"};
  std::string python_, exec_dir_;
  std::vector<std::string> common_;
  HostProcess host_;
};

TEST_F(RayE2E, SpoolDrainsKodosumiRunnersIntoSqliteNewOnesToo) {
  std::vector<std::string> first, later;
  for (int i = 0; i < 4; ++i) first.push_back(make_fid(1, i));
  for (int i = 4; i < 6; ++i) later.push_back(make_fid(1, i));
  ASSERT_NO_FATAL_FAILURE(runners({"spawn", "--fids", join(first), "--lines", "500", "--preload"}));
  ASSERT_NO_FATAL_FAILURE(start_spool());
  // Runners that start while the spooler runs, one naming its user only in its meta event.
  ASSERT_NO_FATAL_FAILURE(
      runners({"spawn", "--fids", later[0], "--lines", "300", "--interval", "0.002"}));
  ASSERT_NO_FATAL_FAILURE(runners(
      {"spawn", "--fids", later[1], "--lines", "300", "--no-username-method", "--preload"}));
  // Items the runner's batch carries oddly: a payload that is an object (stored as its JSON),
  // an item without a kind (stored in its seq as an error event that says so).
  const std::string odd = make_fid(1, 6);
  ASSERT_NO_FATAL_FAILURE(runners({"spawn", "--fids", odd, "--lines", "5", "--odd", "--preload"}));
  for (const auto &fid : first) ASSERT_NO_FATAL_FAILURE(expect_whole_run(fid, 500));
  for (const auto &fid : later) ASSERT_NO_FATAL_FAILURE(expect_whole_run(fid, 300));
  const auto got = wait_for_end("alice", odd);
  ASSERT_EQ(got.size(), 13u) << "5 lines, 6 events of the run, the 2 odd items";
  EXPECT_EQ(got[4].kind + " " + got[4].message, R"(result {"dict":{"n":1}})");
  EXPECT_EQ(got[5].kind, "error");
  EXPECT_NE(got[5].message.find("a queue item's kind is missing, empty or not text"),
            std::string::npos)
      << got[5].message;
  EXPECT_EQ(got[6].message, "line 1");
  EXPECT_EQ(got.back().kind + " " + got.back().message, "status finished");
  EXPECT_GT(metric(host_, "kodo_transport_drain_batches_total"), 0);
  EXPECT_EQ(metric(host_, "kodo_transport_up"), 1);
  EXPECT_EQ(host_.stop(), 0);
}

// The same runners drained into PostgreSQL (the fork's execution_events table), each event
// once, in seq order, with kodosumi's payloads.
TEST_F(RayE2E, SpoolDrainsKodosumiRunnersIntoPostgres) {
  kodo::testing::PostgresServer postgres;
  ASSERT_NO_THROW(postgres.start());
  std::vector<std::string> fids;
  for (int i = 0; i < 3; ++i) fids.push_back(make_fid(7, i));
  ASSERT_NO_FATAL_FAILURE(runners({"spawn", "--fids", join(fids), "--lines", "1000", "--preload"}));
  auto vars = env();
  vars.push_back("KODO_EXECUTION_DATABASE=" + postgres.url());
  const CommandResult made =
      run_command({KODO_HOST_BINARY, "--plugin-dir", KODO_PLUGIN_DIR, "db", "create-tables"}, vars);
  ASSERT_EQ(made.exit_code, 0) << made.output;
  ASSERT_TRUE(host_.start(common_, vars, "spool")) << host_.log();
  for (const auto &fid : fids) {
    std::vector<std::tuple<int64_t, std::string, std::string>> rows;
    const auto deadline = Clock::now() + std::chrono::seconds(120);
    while (rows.size() < 1006 && Clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      try {
        rows = kodo::testing::execution_event_rows(postgres.url(), fid);
      } catch (const std::runtime_error &) {
        // the spooler makes the table with its first batch
      }
    }
    ASSERT_EQ(rows.size(), 1006u) << fid;
    for (size_t i = 0; i < rows.size(); ++i)
      ASSERT_EQ(std::get<0>(rows[i]), static_cast<int64_t>(i)) << fid << ": seq order";
    EXPECT_EQ(std::get<2>(rows[4]), "line 1");
    EXPECT_EQ(std::get<2>(rows[1003]), "line 1000");
    EXPECT_EQ(std::get<1>(rows.back()) + " " + std::get<2>(rows.back()), "status finished");
  }
}

TEST_F(RayE2E, BridgeKilledMidRunLosesNoRunnerEvent) {
  std::vector<std::string> fids;
  for (int i = 0; i < 3; ++i) fids.push_back(make_fid(2, i));
  ASSERT_NO_FATAL_FAILURE(start_spool());
  ASSERT_NO_FATAL_FAILURE(spawn_emitting_runners(fids));
  const pid_t victim = bridge_pid();
  ASSERT_GT(victim, 0);
  ASSERT_EQ(kill(victim, SIGKILL), 0);
  for (const auto &fid : fids) ASSERT_NO_FATAL_FAILURE(expect_whole_run(fid, 800));
  EXPECT_GE(metric(host_, "kodo_transport_bridge_restarts_total"), 1);
  EXPECT_NE(bridge_pid(), victim);
}

// Runners spread over four drainer actors, each runner always read by the same one: every
// run is stored whole and in order.
TEST_F(RayE2E, SeveralDrainersKeepEachRunnersOrder) {
  std::vector<std::string> fids;
  for (int i = 0; i < 8; ++i) fids.push_back(make_fid(8, i));
  ASSERT_NO_FATAL_FAILURE(runners({"spawn", "--fids", join(fids), "--lines", "3000", "--preload"}));
  auto vars = env();
  vars.push_back("KODO_RAY_DRAINERS=4");
  ASSERT_TRUE(host_.start(common_, vars, "spool")) << host_.log();
  for (const auto &fid : fids) ASSERT_NO_FATAL_FAILURE(expect_whole_run(fid, 3000));
  EXPECT_NE(host_.log().find("4 drainer actors ready"), std::string::npos) << host_.log();
}

// The drainer actors die while runners emit (a crashed worker process): the bridge makes them
// again and goes on. A drainer that dies between a read and the bridge's spill write takes
// that one batch with it (README), so a run may miss a few lines, but never holds one twice
// or out of order, and every run ends as the runner ended it.
TEST_F(RayE2E, DrainerKilledMidRunKeepsOrderAndEveryRunEnds) {
  std::vector<std::string> fids;
  for (int i = 0; i < 3; ++i) fids.push_back(make_fid(9, i));
  ASSERT_NO_FATAL_FAILURE(start_spool());
  ASSERT_NO_FATAL_FAILURE(spawn_emitting_runners(fids));
  ASSERT_NO_FATAL_FAILURE(runners(
      {"kill", "--fids", "kodo-events-drainer-0,kodo-events-drainer-1", "--namespace", "kodo"}));
  for (const auto &fid : fids) {
    const auto got = wait_for_end("alice", fid);
    ASSERT_FALSE(got.empty()) << fid;
    EXPECT_EQ(got.back().kind + " " + got.back().message, "status finished") << fid;
    int last = 0, stored = 0;
    for (const auto &row : got) {
      if (row.kind != "stdout") continue;
      const int line = std::stoi(row.message.substr(5));
      ASSERT_GT(line, last) << fid << ": a line twice or out of order";
      last = line;
      ++stored;
    }
    EXPECT_GT(stored, 0) << fid;
    std::cerr << fid << ": " << stored << " of 800 lines stored\n";
  }
  EXPECT_EQ(metric(host_, "kodo_transport_bridge_restarts_total"), 0);
}

// Ray prints to a driver's stdout (its raylet's warnings, once many workers start), and the
// bridge's frames to the plugin go to its stdout: the two must not mix (they did: the plugin
// read the warning as a frame's length, and killed and restarted the bridge for ever).
TEST_F(RayE2E, RayPrintingToTheBridgesStdoutBreaksNoFrame) {
  const std::string fid = make_fid(10, 0);
  ASSERT_NO_FATAL_FAILURE(runners({"spawn", "--fids", fid, "--lines", "200", "--preload"}));
  auto vars = env();
  vars.insert(vars.end(),
              {std::string("KODO_RAY_BRIDGE=") + NOISY_BRIDGE_SCRIPT,
               std::string("KODO_RAY_REAL_BRIDGE=") + KODO_PLUGIN_DIR + "/kodo_ray_bridge.py"});
  ASSERT_TRUE(host_.start(common_, vars, "spool")) << host_.log();
  ASSERT_NO_FATAL_FAILURE(expect_whole_run(fid, 200));
  EXPECT_NE(host_.log().find("a line Ray printed to the driver's stdout"), std::string::npos)
      << host_.log();
  EXPECT_EQ(metric(host_, "kodo_transport_bridge_restarts_total"), 0);
}

TEST_F(RayE2E, RunnerKilledMidRunEndsItsExecutionWithAnError) {
  const std::string fid = make_fid(3, 0);
  ASSERT_NO_FATAL_FAILURE(start_spool());
  ASSERT_NO_FATAL_FAILURE(
      runners({"spawn", "--fids", fid, "--lines", "100000", "--interval", "0.001"}));
  const auto deadline = Clock::now() + std::chrono::seconds(60);
  while (rows("alice", fid).size() < 50 && Clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_NO_FATAL_FAILURE(runners({"kill", fid}));
  const auto got = wait_for_end("alice", fid);
  ASSERT_GE(got.size(), 3u);
  EXPECT_EQ(got.back().kind + " " + got.back().message, "status error");
  const Row &error = got[got.size() - 2];
  EXPECT_EQ(error.kind, "error");
  EXPECT_NE(error.message.find("runner actor " + fid), std::string::npos) << error.message;
  EXPECT_NE(error.message.find("died"), std::string::npos) << error.message;
}

TEST_F(RayE2E, UnreachableHeadAtStartIsAnErrorNamingTheAddress) {
  auto vars = env();
  vars.push_back("KODO_RAY_SERVER=127.0.0.1:1");
  EXPECT_FALSE(host_.start(common_, vars, "spool"));
  EXPECT_NE(host_.log().find("127.0.0.1:1"), std::string::npos) << host_.log();
}

// kodo's own flows publish through Ray (serve --transport ray); the bridge is SIGKILLed while
// they run; every event is stored once, in order.
TEST_F(RayE2E, ServeOnRayBridgeKilledMidRunEveryEventStoredOnce) {
  constexpr int kLines = 2000;
  const std::string flow = dir_.path() + "/steady.sh";
  std::ofstream(flow) << "#!/bin/sh\nfor j in 1 2 3 4 5 6 7 8 9 10; do\n"
                      << "  seq -f 'line %g' $(( (j - 1) * " << kLines / 10 << " + 1 )) $(( j * "
                      << kLines / 10 << " ))\n  sleep 0.3\ndone\n"
                      << "echo '{\"kind\": \"final\", \"payload\": \"ok\"}' >&$KODO_EVENTS_FD\n";
  fs::permissions(flow, fs::perms::owner_all);
  std::vector<std::string> args = common_;
  args.insert(args.end(), {"--flow", "steady=" + flow, "--transport", "ray"});
  ASSERT_TRUE(host_.start(args, env())) << host_.log();
  std::vector<std::string> fids;
  for (int i = 0; i < 5; ++i) {
    auto r = host_.request("POST", "/api/v1/executions", R"({"flow": "steady"})");
    ASSERT_EQ(r.status, 201) << r.body;
    rapidjson::Document d;
    d.Parse(r.body.c_str());
    fids.push_back(d["fid"].GetString());
  }
  const auto deadline = Clock::now() + std::chrono::seconds(60);
  while (metric(host_, "kodo_events_stored_total") < 500 && Clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  const pid_t victim = bridge_pid();
  ASSERT_GT(victim, 0);
  ASSERT_EQ(kill(victim, SIGKILL), 0);

  for (const auto &fid : fids) {
    const auto got = wait_for_end("admin", fid);
    ASSERT_FALSE(got.empty()) << fid;
    EXPECT_EQ(got.back().kind + " " + got.back().message, "status finished") << fid;
    int next = 1;
    for (const auto &row : got) {
      if (row.kind != "stdout") continue;
      ASSERT_EQ(row.message, "line " + std::to_string(next)) << fid << ": lost, twice or late";
      ++next;
    }
    EXPECT_EQ(next, kLines + 1) << fid;
    // Every seq once, contiguous from 0, through the API.
    auto r = host_.request("GET", "/api/v1/executions/" + fid + "/events?limit=10000");
    rapidjson::Document d;
    d.Parse(r.body.c_str());
    ASSERT_TRUE(d.IsObject() && d.HasMember("events")) << r.body;
    int64_t expected = 0;
    for (const auto &e : d["events"].GetArray()) EXPECT_EQ(e["seq"].GetInt64(), expected++);
    EXPECT_EQ(static_cast<size_t>(expected), got.size()) << fid;
  }
  EXPECT_GE(metric(host_, "kodo_transport_bridge_restarts_total"), 1);
}

// A Ray head of a case's own, as the leader of its own process group (`ray start --block`):
// every process of the head is in that group, so killing the group (by its id) ends the head.
class OwnHead {
 public:
  OwnHead(const std::string &venv, const std::string &temp_dir, const std::string &log, int port)
      : log_(log), port_(port) {
    pid_ = fork();
    if (pid_ == 0) {
      setsid();
      const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      dup2(fd, 1);
      dup2(fd, 2);
      const std::string ray = venv + "/bin/ray", port_arg = "--port=" + std::to_string(port),
                        temp = "--temp-dir=" + temp_dir;
      execl(ray.c_str(), ray.c_str(), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
            port_arg.c_str(), "--num-cpus=1", "--include-dashboard=false",
            "--object-store-memory=100000000", "--disable-usage-stats", temp.c_str(), nullptr);
      _exit(127);
    }
  }
  ~OwnHead() { kill_group(); }
  bool wait_ready() const {
    for (int waited = 0; waited < 60000; waited += 50) {
      if (kodo::testing::port_accepts(port_)) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }
  void kill_group() {
    if (pid_ <= 0) return;
    kill(-pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  std::string log() const { return kodo::testing::slurp(log_); }

 private:
  std::string log_;
  int port_;
  pid_t pid_ = -1;
};

// A head of the case's own goes away: the transport reports itself down and /health is
// degraded, in a spooler and in `serve --transport ray` (beside it, on a stream of its own);
// once a head is back on the address, both bridges reconnect and the spooler drains runners of
// the new head.
TEST_F(RayE2E, HeadGoneMakesHealthDegradedAndTheTransportReconnects) {
  const std::string address = "127.0.0.1:6390";
  auto start_head = [&](const std::string &name) {
    return std::make_unique<OwnHead>(env_or_fail("KODO_RAY_VENV"),
                                     env_or_fail("KODO_RAY_TMP") + "/" + name,
                                     dir_.path() + "/" + name + ".log", 6390);
  };
  auto head = start_head("head-a");
  ASSERT_TRUE(head->wait_ready()) << head->log();
  auto vars = env();
  vars.insert(vars.end(), {"KODO_RAY_SERVER=" + address, "KODO_RAY_RESTART_MAX_MS=1000"});
  ASSERT_TRUE(host_.start(common_, vars, "spool")) << host_.log();
  // serve's own stream, spill folder and storage, and no runners of its own to drain.
  HostProcess serve;
  serve.start_timeout_s = 120;
  auto serve_vars = vars;
  serve_vars.insert(serve_vars.end(),
                    {"KODO_RAY_STREAM=kodo-serve", "KODO_RAY_RUNNER_NAMESPACE=kodo-serve",
                     "KODO_RAY_SPILL_DIR=" + dir_.path() + "/serve-spill"});
  ASSERT_TRUE(serve.start({"--plugin-dir", KODO_PLUGIN_DIR, "--exec-dir",
                           dir_.path() + "/serve-execution", "--transport", "ray"},
                          serve_vars))
      << serve.log();
  for (const HostProcess *process : {&host_, &serve}) {
    EXPECT_EQ(metric(*process, "kodo_transport_up"), 1);
    EXPECT_EQ(process->request("GET", "/health").status, 200);
  }

  head->kill_group();
  for (const HostProcess *process : {&host_, &serve}) {
    const auto deadline = Clock::now() + std::chrono::seconds(60);
    while (metric(*process, "kodo_transport_up") != 0 && Clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    EXPECT_EQ(metric(*process, "kodo_transport_up"), 0);
    const auto health = process->request("GET", "/health");
    EXPECT_EQ(health.status, 503) << health.body;
    EXPECT_NE(health.body.find(R"("status":"degraded")"), std::string::npos) << health.body;
    EXPECT_NE(health.body.find(R"("transport":"down")"), std::string::npos) << health.body;
  }

  head = start_head("head-b");
  ASSERT_TRUE(head->wait_ready()) << head->log();
  for (const HostProcess *process : {&host_, &serve}) {
    const auto deadline = Clock::now() + std::chrono::seconds(120);
    while (metric(*process, "kodo_transport_up") != 1 && Clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    EXPECT_EQ(metric(*process, "kodo_transport_up"), 1);
    EXPECT_EQ(process->request("GET", "/health").status, 200);
  }
  const std::string fid = make_fid(6, 0);
  const CommandResult spawned =
      run_command({python_, RUNNERS_SCRIPT, "spawn", "--fids", fid, "--lines", "50", "--preload"},
                  {"KODO_RAY_SERVER=" + address});
  ASSERT_EQ(spawned.exit_code, 0) << spawned.output;
  ASSERT_NO_FATAL_FAILURE(expect_whole_run(fid, 50));
  if (HasFailure()) std::cerr << "--- kodo-host serve log ---\n" << serve.log();
}

}  // namespace
}  // namespace kodo::e2e
