// host_worker_test.cpp: kodo-host with execution-mode temporal against a real dev server:
// `serve` launches through Temporal, `worker` processes run the flows, and their events are
// stored as in direct mode. A worker SIGKILLed mid-run has its job finished by another worker
// as attempt 2; pause, resume and cancel through the API act on the flow's processes.
#include <gtest/gtest.h>
#include <rapidjson/document.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>

#include "host_process.hpp"
#include "temporal_server.hpp"

namespace kodo::testing {
namespace {

using e2e::HostProcess;
namespace fs = std::filesystem;

// Writes its pid, then `steps` lines 0.2 s apart, then its final event.
const char *const kStepsFlow =
    "steps=/bin/sh -c 'echo pid $$; i=0; while [ $i -lt ${STEPS:-5} ]; do echo step $i; "
    "sleep 0.2; i=$((i+1)); done; echo \"{\\\"kind\\\":\\\"final\\\",\\\"payload\\\":1}\" "
    ">&$KODO_EVENTS_FD'";

class HostWorkerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_.start();
    dir_ = fs::temp_directory_path() / ("kodo-host-worker-" + std::to_string(getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override {
    if (HasFailure()) {
      std::cerr << "--- serve ---\n" << serve_.log();
      for (auto &w : workers_) std::cerr << "--- worker ---\n" << w->log();
    }
    for (auto &w : workers_) w->stop();
    serve_.stop();
    fs::remove_all(dir_);
  }

  std::vector<std::string> args(int steps) {
    return {"--plugin-dir",
            KODO_PLUGIN_DIR,
            "--exec-dir",
            (dir_ / "execution").string(),
            "--execution-mode",
            "temporal",
            "--durability-option",
            "host=" + server_.address(),
            "--durability-option",
            "heartbeat_timeout_s=" + heartbeat_timeout_s_,
            "--durability-option",
            "heartbeat_interval_s=0.3",
            "--durability-option",
            "retry_initial_s=0.2",
            "--durability-option",
            "submit_wait_s=1",
            "--durability-option",
            "health_interval_s=0.5",
            "--flow",
            kStepsFlow,
            "--flow-env",
            "steps=STEPS=" + std::to_string(steps),
            "--shutdown-grace",
            "2"};
  }

  void start(int steps) {
    ASSERT_TRUE(serve_.start(args(steps))) << serve_.log();
    start_worker(steps);
  }
  HostProcess &start_worker(int steps) {
    workers_.push_back(std::make_unique<HostProcess>());
    EXPECT_TRUE(workers_.back()->start(args(steps), {}, "worker")) << workers_.back()->log();
    return *workers_.back();
  }

  std::string launch() {
    auto r = serve_.request("POST", "/api/v1/executions", R"({"flow": "steps", "inputs": {}})");
    EXPECT_EQ(r.status, 201) << r.body;
    rapidjson::Document d;
    d.Parse(r.body.c_str());
    return d.IsObject() && d.HasMember("fid") ? d["fid"].GetString() : "";
  }

  rapidjson::Document summary(const std::string &fid) {
    auto r = serve_.request("GET", "/api/v1/executions/" + fid);
    rapidjson::Document d;
    d.Parse(r.body.c_str());
    return d;
  }
  std::string status(const std::string &fid) {
    auto d = summary(fid);
    return d.IsObject() && d.HasMember("status") && d["status"].IsString() ? d["status"].GetString()
                                                                           : "";
  }
  bool wait_status(const std::string &fid, const std::string &want) {
    for (int i = 0; i < 1800; ++i) {  // up to 90 s on a loaded machine
      if (status(fid) == want) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }

  struct Stored {
    std::vector<int64_t> seqs;
    std::vector<std::string> kinds, payloads;
  };
  Stored events(const std::string &fid) {
    auto r = serve_.request("GET", "/api/v1/executions/" + fid + "/events?limit=10000");
    rapidjson::Document d;
    d.Parse(r.body.c_str());
    Stored out;
    if (!d.IsObject() || !d.HasMember("events")) return out;
    for (const auto &e : d["events"].GetArray()) {
      out.seqs.push_back(e["seq"].GetInt64());
      out.kinds.push_back(e["kind"].GetString());
      out.payloads.push_back(e["payload"].IsString() ? e["payload"].GetString() : "");
    }
    return out;
  }
  // The flow's pid from its first stdout line, once stored.
  pid_t flow_pid(const std::string &fid) {
    for (int i = 0; i < 1800; ++i) {
      const auto stored = events(fid);
      for (size_t k = 0; k < stored.kinds.size(); ++k)
        if (stored.kinds[k] == "stdout" && stored.payloads[k].rfind("pid ", 0) == 0)
          return std::stoi(stored.payloads[k].substr(4));
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return -1;
  }
  // The process's state letter from /proc (R, S, T for stopped...); 0 when it is gone.
  static char process_state(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const auto close = text.rfind(')');
    return close == std::string::npos || close + 2 >= text.size() ? 0 : text[close + 2];
  }
  static bool wait_state(pid_t pid, bool stopped) {
    for (int i = 0; i < 1800; ++i) {
      const char state = process_state(pid);
      if (stopped ? state == 'T' : (state != 'T')) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }

  TemporalServer server_;
  // Short, so that a killed worker's attempt is retried soon.
  std::string heartbeat_timeout_s_ = "3";
  fs::path dir_;
  HostProcess serve_;
  std::vector<std::unique_ptr<HostProcess>> workers_;
};

TEST_F(HostWorkerTest, ALaunchRunsOnAWorkerAndItsEventsAreStored) {
  start(3);
  const std::string fid = launch();
  ASSERT_TRUE(wait_status(fid, "finished")) << status(fid);
  const auto stored = events(fid);
  for (size_t i = 0; i < stored.seqs.size(); ++i) EXPECT_EQ(stored.seqs[i], int64_t(i));
  EXPECT_NE(std::find(stored.kinds.begin(), stored.kinds.end(), "final"), stored.kinds.end());
  const auto described = summary(fid);
  ASSERT_TRUE(described.HasMember("workflow") && described["workflow"].IsObject());
  EXPECT_STREQ(described["workflow"]["state"].GetString(), "completed");
  // The fork's names: workflow kodo-<fid>, readable with the temporal CLI; it closes once the
  // worker's completion reaches the workflow, just after the last event was stored.
  std::string described_by_cli;
  for (int i = 0; i < 300 && described_by_cli.find("COMPLETED") == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    described_by_cli = server_.cli({"workflow", "describe", "--workflow-id", "kodo-" + fid});
  }
  EXPECT_NE(described_by_cli.find("COMPLETED"), std::string::npos) << described_by_cli;
  EXPECT_NE(described_by_cli.find(R"("status":"finished")"), std::string::npos) << described_by_cli;
}

TEST_F(HostWorkerTest, AWorkerKilledMidRunIsReplacedByAttemptTwo) {
  start(25);
  const std::string fid = launch();
  const pid_t pid = flow_pid(fid);
  ASSERT_GT(pid, 0);
  workers_.front()->kill_now(SIGKILL);
  // The flow dies with its worker: no orphan goes on writing (a zombie writes nothing).
  auto gone = [&] { return process_state(pid) == 0 || process_state(pid) == 'Z'; };
  for (int i = 0; i < 400 && !gone(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_TRUE(gone()) << "the flow outlived its worker";
  start_worker(25);
  ASSERT_TRUE(wait_status(fid, "finished")) << status(fid);
  const auto stored = events(fid);
  std::set<int64_t> unique(stored.seqs.begin(), stored.seqs.end());
  EXPECT_EQ(unique.size(), stored.seqs.size()) << "no (fid, seq) collides";
  bool noted = false;
  for (size_t k = 0; k < stored.kinds.size(); ++k)
    noted = noted || (stored.kinds[k] == "debug" &&
                      stored.payloads[k].find("attempt 2") != std::string::npos);
  EXPECT_TRUE(noted) << "the timeline says why attempt 2 runs";
}

TEST_F(HostWorkerTest, PauseResumeAndCancelActOnTheFlow) {
  start(400);
  const std::string fid = launch();
  const pid_t pid = flow_pid(fid);
  ASSERT_GT(pid, 0);
  EXPECT_EQ(serve_.request("POST", "/api/v1/executions/" + fid + "/pause").status, 202);
  ASSERT_TRUE(wait_state(pid, true)) << "pause stops the flow's process group";
  EXPECT_EQ(serve_.request("POST", "/api/v1/executions/" + fid + "/resume").status, 202);
  ASSERT_TRUE(wait_state(pid, false)) << "resume continues it";
  EXPECT_EQ(serve_.request("POST", "/api/v1/executions/" + fid + "/cancel").status, 202);
  ASSERT_TRUE(wait_status(fid, "error")) << status(fid);
  const auto stored = events(fid);
  bool said = false, paused = false;
  for (size_t k = 0; k < stored.kinds.size(); ++k) {
    said = said ||
           (stored.kinds[k] == "error" && stored.payloads[k].find("cancel") != std::string::npos);
    paused = paused || (stored.kinds[k] == "status" && stored.payloads[k] == "paused");
  }
  EXPECT_TRUE(said) << "an error event says it was cancelled";
  EXPECT_TRUE(paused) << "the timeline shows the pause";
  EXPECT_EQ(serve_.request("POST", "/api/v1/executions/0123456789abcdef01234567/pause").status,
            404);
}

// Temporal's own Python SDK as the client of `kodo-host worker` (the kodo-host verb the fork
// calls temporal-worker): it starts AgentWorkflow on kodo's task queue with the fork's job
// input, pauses and resumes it with signals, queries it and reads its result.
TEST_F(HostWorkerTest, TemporalsPythonSdkDrivesKodoHostWorker) {
  ASSERT_TRUE(serve_.start(args(10))) << serve_.log();
  workers_.push_back(std::make_unique<HostProcess>());
  ASSERT_TRUE(workers_.back()->start(args(10), {}, "temporal-worker")) << workers_.back()->log();
  const std::string fid = "0123456789abcdef0123beef";
  const std::string out = (dir_ / "peer.out").string();
  const int rc = run_as({TemporalServer::venv() + "/bin/python", PYTHON_PEER, server_.address(),
                         "kodosumi-agents", "kodo-" + fid, "steps"},
                        "", out);
  const std::string seen = slurp(out);
  ASSERT_EQ(rc, 0) << seen;
  EXPECT_NE(seen.find(R"("is_paused_after_pause": true)"), std::string::npos) << seen;
  EXPECT_NE(seen.find(R"("is_paused_after_resume": false)"), std::string::npos) << seen;
  EXPECT_NE(seen.find(R"("error": null)"), std::string::npos) << seen;
  EXPECT_NE(
      seen.find(R"("result": {"fid": ")" + fid + R"(", "status": "finished", "error": null})"),
      std::string::npos)
      << seen;
  EXPECT_NE(seen.find(R"("status_at_end": "completed")"), std::string::npos) << seen;
  // The run's events reached storage as a launch through the API would have.
  ASSERT_TRUE(wait_status(fid, "finished")) << status(fid);
  const auto stored = events(fid);
  EXPECT_NE(std::find(stored.kinds.begin(), stored.kinds.end(), "final"), stored.kinds.end());
}

// The server's state survives its restart (--db-filename), as a real cluster's would.
class HostWorkerServerAwayTest : public HostWorkerTest {
 protected:
  void SetUp() override {
    server_.keep_state();
    // Longer than the server is away here (a restart takes seconds on a loaded machine): an
    // outage longer than the heartbeat timeout has the attempt retried instead.
    heartbeat_timeout_s_ = "60";
    HostWorkerTest::SetUp();
  }
  static std::string health(HostProcess &host) {
    auto r = host.request("GET", "/health");
    return std::to_string(r.status) + " " + r.body;
  }
  static bool wait_health(HostProcess &host, const std::string &part) {
    for (int i = 0; i < 1800; ++i) {  // up to 90 s: gRPC's reconnect backoff is up to 5 s
      if (health(host).find(part) != std::string::npos) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }
};

TEST_F(HostWorkerServerAwayTest, ARunGoesOnAndLaunchesAreRefusedClearlyUntilItIsBack) {
  start(40);
  HostProcess &worker = *workers_.front();
  EXPECT_NE(health(serve_).find(R"("durability":"up")"), std::string::npos) << health(serve_);
  const std::string running = launch();
  ASSERT_GT(flow_pid(running), 0);

  server_.stop();
  ASSERT_TRUE(wait_health(serve_, R"("durability":"down")")) << health(serve_);
  EXPECT_EQ(health(serve_).rfind("503 ", 0), 0u) << health(serve_);
  ASSERT_TRUE(wait_health(worker, R"("durability":"down")")) << health(worker);
  EXPECT_EQ(health(worker).rfind("503 ", 0), 0u) << health(worker);
  // A launch while the server is away is refused, naming the server; nothing was started.
  auto refused = serve_.request("POST", "/api/v1/executions", R"({"flow": "steps", "inputs": {}})");
  EXPECT_EQ(refused.status, 503) << refused.body;
  EXPECT_NE(refused.body.find("temporal at " + server_.address()), std::string::npos)
      << refused.body;
  EXPECT_NE(refused.body.find("nothing was started"), std::string::npos) << refused.body;

  server_.start();
  ASSERT_TRUE(wait_health(serve_, R"(200 {"status":"ok")")) << health(serve_);
  ASSERT_TRUE(wait_health(worker, R"(200 {"status":"ok")")) << health(worker);
  // The run that was going on when the server left ends as it would have: nothing is lost.
  ASSERT_TRUE(wait_status(running, "finished")) << status(running);
  const auto stored = events(running);
  std::set<int64_t> unique(stored.seqs.begin(), stored.seqs.end());
  EXPECT_EQ(unique.size(), stored.seqs.size()) << "no (fid, seq) collides";
  // And launches are taken again.
  const std::string after = launch();
  ASSERT_TRUE(wait_status(after, "finished")) << status(after);
}

TEST(HostWorkerNoServer, StartingWithoutTheServerNamesItsAddress) {
  const std::string address = "127.0.0.1:" + std::to_string(free_loopback_port());
  HostProcess serve;
  EXPECT_FALSE(serve.start({"--plugin-dir", KODO_PLUGIN_DIR, "--exec-dir",
                            "/tmp/kodo-no-temporal-" + std::to_string(getpid()), "--durability",
                            "temporal", "--durability-option", "host=" + address,
                            "--durability-option", "connect_timeout_s=0.5", "--flow", kStepsFlow}));
  EXPECT_NE(serve.log().find("temporal at " + address), std::string::npos) << serve.log();
  fs::remove_all("/tmp/kodo-no-temporal-" + std::to_string(getpid()));
}

}  // namespace
}  // namespace kodo::testing
