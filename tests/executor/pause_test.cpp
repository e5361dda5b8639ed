// pause_test.cpp: what a durable job's worker asks of the executor: a run that continues an
// execution (its fid, its seqs after the earlier ones), and pause / resume that stop and
// continue the run's processes, each recorded in the timeline; cancel while paused still ends
// the run.
#include "executor_fixture.hpp"

#include <fstream>
#include <iterator>
#include <thread>

namespace kodo::executor_test {
namespace {

// The state letter of /proc/PID/stat (T: stopped); 0 when the process is gone.
char process_state(const std::string &pid) {
  std::ifstream in("/proc/" + pid + "/stat");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto close = text.rfind(')');
  return close == std::string::npos || close + 2 >= text.size() ? 0 : text[close + 2];
}

// The pid the flow wrote first ("pid N"), once its line is in; empty if it never came.
std::string flow_pid(TestSink &sink, const std::string &fid) {
  std::string pid;
  eventually([&] {
    for (const auto &line : payloads(sink.of(fid), "stdout"))
      if (line.rfind("pid ", 0) == 0) pid = line.substr(4);
    return !pid.empty();
  });
  return pid;
}

const char *const kLoop = "echo pid $$\nwhile true; do echo tick; sleep 0.05; done";

TEST_F(ExecutorTest, AContinuationKeepsTheFidAndFollowsTheEarlierSeqs) {
  auto &ex = start({flow("ok", std::string("echo hi\n") + kFinal)});
  Continuation next;
  next.fid = "0123456789abcdef01234567";
  next.first_seq = 40;
  next.note = "attempt 2 of this execution";
  EXPECT_EQ(ex.launch("ok", "alice", "{}", &next), next.fid);
  ASSERT_TRUE(ex.wait_inactive(next.fid, kWait));
  const auto events = sink_.of(next.fid);
  ASSERT_GE(events.size(), 4u);
  EXPECT_EQ(events[0].kind, "debug");
  EXPECT_EQ(events[0].payload, next.note);
  for (size_t i = 0; i < events.size(); ++i) EXPECT_EQ(events[i].seq, 40 + int64_t(i));
  EXPECT_EQ(events.back().payload, "finished");
  next.fid = "../escape";
  EXPECT_THROW(ex.launch("ok", "alice", "{}", &next), Error) << "the naming rule holds";
}

// A durable job's worker has no accounts: the token the serving host made travels in the
// job's input and reaches the flow as KODO_JWT.
TEST_F(ExecutorTest, AContinuationsTokenIsTheFlowsKodoJwt) {
  auto &ex = start({flow("jwt", std::string("echo \"jwt=$KODO_JWT\"\n") + kFinal)});
  Continuation next;
  next.fid = "0123456789abcdef01234568";
  next.token = "a.token.made-by-serve";
  ex.launch("jwt", "alice", "{}", &next);
  ASSERT_TRUE(ex.wait_inactive(next.fid, kWait));
  EXPECT_TRUE(has_payload_containing(sink_.of(next.fid), "stdout", "jwt=a.token.made-by-serve"));
}

TEST_F(ExecutorTest, PauseStopsTheRunAndResumeContinuesIt) {
  auto &ex = start({flow("loop", kLoop)});
  const std::string fid = ex.launch("loop", "alice", "{}");
  const std::string pid = flow_pid(sink_, fid);
  ASSERT_FALSE(pid.empty());
  EXPECT_TRUE(ex.pause(fid, true, "a test"));
  EXPECT_FALSE(ex.pause(fid, true, "a test, twice")) << "already paused";
  ASSERT_TRUE(eventually([&] { return process_state(pid) == 'T'; }));
  ASSERT_TRUE(sink_.wait_for(fid, "status", "paused"));
  EXPECT_TRUE(has_payload_containing(sink_.of(fid), "debug", "paused by a test"));
  EXPECT_TRUE(ex.pause(fid, false, "a test"));
  ASSERT_TRUE(eventually([&] { return process_state(pid) != 'T'; }));
  ASSERT_TRUE(sink_.wait_for(fid, "status", "running"));
  EXPECT_TRUE(ex.pause(fid, true, "a test"));
  ASSERT_TRUE(eventually([&] { return process_state(pid) == 'T'; }));
  // A paused run still takes its cancel: it is continued so that SIGTERM reaches it.
  EXPECT_TRUE(ex.cancel(fid, "cancelled while paused"));
  ASSERT_TRUE(ex.wait_inactive(fid, kWait));
  expect_failed_with(sink_.of(fid), "cancelled while paused");
  EXPECT_FALSE(ex.pause(fid, false, "a test")) << "an ended run takes no pause";
}

TEST_F(ExecutorTest, PausedTimeDoesNotCountAgainstTheTimeLimit) {
  // The flow waits for a file that the test makes after a pause longer than the flow's time
  // limit: only a limit that stops counting while paused lets it finish.
  const std::string go = file("go");
  auto &ex =
      start({flow("wait", "echo pid $$\nwhile [ ! -e " + go + " ]; do sleep 0.05; done\n" + kFinal,
                  /*timeout_s=*/2)});
  const std::string fid = ex.launch("wait", "alice", "{}");
  const std::string pid = flow_pid(sink_, fid);
  ASSERT_FALSE(pid.empty());
  EXPECT_TRUE(ex.pause(fid, true, "a test"));
  ASSERT_TRUE(eventually([&] { return process_state(pid) == 'T'; }));
  std::this_thread::sleep_for(std::chrono::seconds(3));
  std::ofstream(go) << "go";
  EXPECT_TRUE(ex.pause(fid, false, "a test"));
  ASSERT_TRUE(ex.wait_inactive(fid, kWait));
  const auto statuses = payloads(sink_.of(fid), "status");
  ASSERT_FALSE(statuses.empty());
  EXPECT_EQ(statuses.back(), "finished");
  EXPECT_FALSE(has_payload_containing(sink_.of(fid), "error", "timed out"));
}

}  // namespace
}  // namespace kodo::executor_test
