// kodo-host as an operator runs it for weeks: hosts killed with SIGKILL and restarted, flows
// written by others. Every run ends, every process dies with its run or its host, no host
// secret reaches a flow or storage, and hosts sharing one PostgreSQL leave each other's live
// runs alone.
#include "host_process.hpp"
#include "postgres_server.hpp"
#include "process_state.hpp"

#include <gtest/gtest.h>
#include <rapidjson/document.h>

#include <filesystem>
#include <fstream>
#include <functional>

namespace kodo::e2e {
namespace {

namespace fs = std::filesystem;

using kodo::testing::alive;
using kodo::testing::read_pid;

// Every byte under `dir`, to look for what must never be stored.
std::string all_bytes_under(const std::string &dir) {
  std::string out;
  for (const auto &entry : fs::recursive_directory_iterator(dir))
    if (entry.is_regular_file()) out += read_file(entry.path().string());
  return out;
}

class RunsE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/kodo-runs-e2e-XXXXXX";
    ASSERT_NE(mkdtemp(pattern), nullptr);
    dir_ = pattern;
  }
  void TearDown() override {
    if (HasFailure()) std::cerr << "--- kodo-host log ---\n" << host_.log();
    host_.stop();
    for (const pid_t pid : pids_)
      if (pid > 0) kill(pid, SIGKILL);  // whatever a failed case left behind
    fs::remove_all(dir_);
  }

  // The flow `leaver` leaves a detached grandchild (setsid + double fork) and a child that
  // ignores SIGTERM, both with closed pipes, writes their pids and its own, then waits.
  std::vector<std::string> args() const {
    const std::string keep = "echo $$ > $D/X.tmp; mv $D/X.tmp $D/X; exec sleep 300";
    auto as = [&](const std::string &name) {
      std::string body = keep;
      for (size_t at; (at = body.find("X")) != std::string::npos;) body.replace(at, 1, name);
      return body;
    };
    const std::string quiet = " </dev/null >/dev/null 2>&1 3>&-";
    const std::string leaver =
        "(setsid sh -c '" + as("detached") + "'" + quiet + " &); (trap '' TERM; " + as("stubborn") +
        ")" + quiet + " & echo $$ > $D/flow; " +
        "while [ ! -s $D/detached ] || [ ! -s $D/stubborn ]; do sleep 0.01; done; echo ready; "
        "sleep 300";
    return {
        "--plugin-dir",
        KODO_PLUGIN_DIR,
        "--exec-dir",
        dir_ + "/execution",
        "--flow",
        "leaver=/bin/sh -c \"" + leaver + "\"",
        "--flow-env",
        "leaver=D=" + dir_,
        "--flow",
        "printenv=/bin/sh -c 'env; echo \"{\\\"kind\\\":\\\"final\\\",\\\"payload\\\":1}\" >&3'",
        "--flow",
        "sleepy=/bin/sh -c 'echo sleeping; sleep 300'",
        "--sse-keepalive",
        "0.5",
        "--shutdown-grace",
        "2"};
  }

  std::string launch(HostProcess &host, const std::string &flow) {
    auto r =
        host.request("POST", "/api/v1/executions", "{\"flow\": \"" + flow + "\", \"inputs\": {}}");
    EXPECT_EQ(r.status, 201) << r.body;
    rapidjson::Document d;
    d.Parse(r.body.c_str());
    return d.IsObject() && d.HasMember("fid") ? d["fid"].GetString() : "";
  }

  std::string status(HostProcess &host, const std::string &fid) {
    auto r = host.request("GET", "/outputs/status/" + fid);
    rapidjson::Document d;
    d.Parse(r.body.c_str());
    return d.IsObject() && d.HasMember("status") ? d["status"].GetString() : r.body;
  }

  bool stdout_has(HostProcess &host, const std::string &fid, const std::string &text) {
    return host.request("GET", "/outputs/stdio/" + fid, "", 5, text).body.find(text) !=
           std::string::npos;
  }

  std::string dir_;
  HostProcess host_;
  std::vector<pid_t> pids_;
};

TEST_F(RunsE2E, AFlowPrintingItsEnvironmentStoresNoHostSecret) {
  ASSERT_TRUE(host_.start(args(), {"KODO_REDIS_URL=redis://:SECRET-REDIS@127.0.0.1:1/0",
                                   "DATABASE_PASSWORD=SECRET-DB"}))
      << host_.log();
  const std::string fid = launch(host_, "printenv");
  const auto sse = host_.request("GET", "/outputs/stream/" + fid, "", 60, "event: eof").body;
  ASSERT_NE(sse.find("event: eof"), std::string::npos) << sse;
  EXPECT_EQ(status(host_, fid), "finished");
  EXPECT_NE(sse.find("KODO_FID=" + fid), std::string::npos) << sse;
  EXPECT_EQ(sse.find("SECRET-"), std::string::npos) << sse;
  EXPECT_EQ(host_.stop(), 0);
  EXPECT_EQ(all_bytes_under(dir_ + "/execution").find("SECRET-"), std::string::npos);
}

TEST_F(RunsE2E, HostSigkillTakesEveryProcessOfItsRunsAlong) {
  ASSERT_TRUE(host_.start(args())) << host_.log();
  const std::string fid = launch(host_, "leaver");
  ASSERT_TRUE(eventually([&] { return stdout_has(host_, fid, "ready"); })) << host_.log();
  for (const char *name : {"flow", "detached", "stubborn"})
    pids_.push_back(read_pid(dir_ + "/" + name));
  for (const pid_t pid : pids_) ASSERT_TRUE(alive(pid)) << pid;
  host_.kill_now(SIGKILL);
  const bool cgroups = host_.log().find("runs are contained by a cgroup v2") != std::string::npos;
  // The direct child dies with the host either way (PR_SET_PDEATHSIG); the rest only where
  // runs have cgroups (the fallback's limit, written in executor.hpp).
  EXPECT_TRUE(eventually([&] { return !alive(pids_[0]); })) << "the flow outlived its host";
  if (!cgroups) GTEST_SKIP() << "no cgroup v2 here: " << host_.log();
  EXPECT_TRUE(eventually([&] { return !alive(pids_[1]) && !alive(pids_[2]); }))
      << "a process of the run outlived its host";
}

TEST_F(RunsE2E, RunsOfAHostKilledWithSigkillEndInErrorAtTheNextStart) {
  ASSERT_TRUE(host_.start(args())) << host_.log();
  const std::string fid = launch(host_, "sleepy");
  ASSERT_TRUE(eventually([&] { return stdout_has(host_, fid, "sleeping"); })) << host_.log();
  host_.kill_now(SIGKILL);

  ASSERT_TRUE(host_.start(args())) << host_.log();
  // The ending events go through the transport and the spooler: stored shortly after start.
  EXPECT_TRUE(eventually([&] { return status(host_, fid) == "error"; })) << status(host_, fid);
  const auto sse = host_.request("GET", "/outputs/stream/" + fid, "", 60, "event: eof").body;
  EXPECT_NE(sse.find("the host stopped while this run was running"), std::string::npos) << sse;
  EXPECT_NE(sse.find("event: eof"), std::string::npos) << sse;
  // Ended once: a second restart finds nothing left to end.
  EXPECT_EQ(host_.stop(), 0);
  ASSERT_TRUE(host_.start(args())) << host_.log();
  const auto again = host_.request("GET", "/outputs/stream/" + fid, "", 60, "event: eof").body;
  size_t count = 0;
  for (size_t at = 0; (at = again.find("the host stopped", at)) != std::string::npos; ++at) ++count;
  EXPECT_EQ(count, 1u) << again;
}

TEST_F(RunsE2E, HostsSharingOnePostgresNeverEndEachOthersLiveRuns) {
  kodo::testing::PostgresServer postgres;
  postgres.start();
  const std::vector<std::string> env = {"KODO_EXECUTION_DATABASE=" + postgres.url()};
  auto created =
      run_command({KODO_HOST_BINARY, "--plugin-dir", KODO_PLUGIN_DIR, "db", "create-tables"}, env);
  ASSERT_EQ(created.exit_code, 0) << created.output;
  ASSERT_TRUE(host_.start(args(), env)) << host_.log();
  const std::string fid = launch(host_, "sleepy");
  ASSERT_TRUE(eventually([&] { return stdout_has(host_, fid, "sleeping"); })) << host_.log();

  // A second host on the same database and machine starts while the first one runs.
  HostProcess other;
  ASSERT_TRUE(other.start(args(), env)) << other.log();
  EXPECT_EQ(status(other, fid), "running");
  EXPECT_EQ(other.log().find("dead hosts left running"), std::string::npos) << other.log();

  // Once the first is gone, the next host to start ends its run.
  host_.kill_now(SIGKILL);
  EXPECT_EQ(other.stop(), 0);
  ASSERT_TRUE(other.start(args(), env)) << other.log();
  EXPECT_TRUE(eventually([&] { return status(other, fid) == "error"; })) << status(other, fid);
  EXPECT_EQ(other.stop(), 0);
}

}  // namespace
}  // namespace kodo::e2e
