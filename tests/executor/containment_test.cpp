// containment_test.cpp: when a run ends, for any reason, every process it started is gone:
// also one that detached (setsid + double fork), closed its pipes or ignores signals. Each
// case runs with the machine's strongest containment (a cgroup v2 per run where allowed) and
// with the process-group fallback, which promises less (see executor.hpp).
#include "executor_fixture.hpp"
#include "process_state.hpp"

#include <gtest/gtest.h>

#include <csignal>
#include <fstream>
#include <string>

#include <sys/types.h>
#include <unistd.h>

namespace {

using namespace kodo::executor_test;

using kodo::testing::alive;
using kodo::testing::read_pid;

// Starts, in the background, a process that writes its pid to `name` and sleeps. `how`:
// how it escapes: "detached" (setsid + double fork), "stubborn" (ignores TERM, INT, HUP),
// "plain" (stays in the run's group). All close the run's pipes first.
std::string leave_behind(const std::string &name, const std::string &how) {
  const std::string body =
      "echo $$ > " + name + ".tmp; mv " + name + ".tmp " + name + "; exec sleep 300";
  const std::string quiet = " </dev/null >/dev/null 2>&1 3>&-";
  if (how == "detached") return "(setsid sh -c '" + body + "'" + quiet + " &)\n";
  if (how == "stubborn") return "(trap '' TERM INT HUP; " + body + ")" + quiet + " &\n";
  return "(" + body + ")" + quiet + " &\n";
}

// The flow waits until its leftovers wrote their pids, so the test knows them.
std::string wait_for_files(const std::vector<std::string> &names) {
  std::string out;
  for (const auto &n : names) out += "while [ ! -s " + n + " ]; do sleep 0.01; done\n";
  return out;
}

class ContainmentTest : public ExecutorTest, public ::testing::WithParamInterface<bool> {
 protected:
  ExecutorConfig config() const {
    ExecutorConfig c;
    c.cgroups = GetParam();
    c.kill_grace_s = 0.5;
    return c;
  }
  bool contained_by_cgroup() const {
    return executor_->containment().rfind("a cgroup v2 per run", 0) == 0;
  }
  void TearDown() override {
    for (const pid_t pid : started_)  // whatever a failed case left behind
      if (pid > 0) ::kill(pid, SIGKILL);
    ExecutorTest::TearDown();
  }
  pid_t pid_in(const std::string &name) {
    const pid_t pid = read_pid(file(name));
    started_.push_back(pid);
    return pid;
  }
  std::vector<pid_t> started_;
};

TEST_P(ContainmentTest, ReportsHowRunsAreContained) {
  start({flow("x", kFinal)}, config());
  std::cout << "containment: " << executor_->containment() << "\n";
  if (!GetParam()) {
    EXPECT_EQ(executor_->containment(), "process groups only (cgroups turned off)");
  }
}

TEST_P(ContainmentTest, BackgroundChildThatClosedItsPipesDiesWhenTheRunFinishes) {
  start({flow("bg", leave_behind("plain", "plain") + leave_behind("stubborn", "stubborn") +
                        wait_for_files({"plain", "stubborn"}) + kFinal)},
        config());
  const auto events = run_to_end("bg");
  EXPECT_EQ(events.back().payload, "finished");
  const pid_t plain = pid_in("plain"), stubborn = pid_in("stubborn");
  ASSERT_GT(plain, 0);
  ASSERT_GT(stubborn, 0);
  // A group kill is sent, not watched: allow the fallback a moment for the signal to land.
  EXPECT_TRUE(eventually([&] { return !alive(plain) && !alive(stubborn); }));
  if (contained_by_cgroup()) {
    EXPECT_FALSE(alive(plain));
    EXPECT_FALSE(alive(stubborn));
  }
}

TEST_P(ContainmentTest, DetachedGrandchildDiesWithItsRun) {
  start({flow("detach",
              leave_behind("detached", "detached") + wait_for_files({"detached"}) + kFinal)},
        config());
  const auto events = run_to_end("detach");
  EXPECT_EQ(events.back().payload, "finished");
  const pid_t detached = pid_in("detached");
  ASSERT_GT(detached, 0);
  if (!contained_by_cgroup()) {
    // The fallback's written limit: a process that left the group outlives the run.
    GTEST_SKIP() << "process groups cannot reach a detached process: " << executor_->containment();
  }
  EXPECT_FALSE(alive(detached)) << "the run ended with its detached grandchild still running";
}

TEST_P(ContainmentTest, CancelledRunTakesEveryProcessAlong) {
  start({flow("hold", leave_behind("detached", "detached") + leave_behind("stubborn", "stubborn") +
                          wait_for_files({"detached", "stubborn"}) +
                          "trap '' TERM\necho ready\nwhile :; do sleep 1; done")},
        config());
  const std::string fid = executor_->launch("hold", "alice", "{}");
  ASSERT_TRUE(sink_.wait_for(fid, "stdout", "ready"));
  const pid_t detached = pid_in("detached"), stubborn = pid_in("stubborn");
  ASSERT_TRUE(executor_->cancel(fid, "test"));
  ASSERT_TRUE(executor_->wait_inactive(fid, kWait));
  expect_failed_with(sink_.of(fid), "cancelled: test");
  EXPECT_TRUE(eventually([&] { return !alive(stubborn); }));
  if (contained_by_cgroup()) {
    EXPECT_FALSE(alive(stubborn));
    EXPECT_FALSE(alive(detached));
  }
}

INSTANTIATE_TEST_SUITE_P(Executor, ContainmentTest, ::testing::Values(true, false),
                         [](const ::testing::TestParamInfo<bool> &param) {
                           return param.param ? "Cgroups" : "ProcessGroups";
                         });

}  // namespace
