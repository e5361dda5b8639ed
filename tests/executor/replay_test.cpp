// replay_test.cpp: a run resumed after its host died while it awaited a lock
// (Continuation::replay, core/lock_resume.hpp): the flow runs again, nothing it stored before is
// made again, its answered locks get their stored answers and its open lock waits for one; a
// flow that asks otherwise, or exits before it gets back to its lock, ends with an error.
#include "executor_fixture.hpp"

namespace kodo::executor_test {
namespace {

// Two locks, each announced on stdout; the final holds both answer lines.
const char *const kTwoLocks = R"(A=$KODO_ANSWERS_FD
echo "asking a"
printf '%s\n' '{"kind":"lock","payload":{"name":"a"}}' >&"$EV"
IFS= read -r first <&"$A" || exit 4
echo "asking b"
printf '%s\n' '{"kind":"lock","payload":{"name":"b"}}' >&"$EV"
IFS= read -r second <&"$A" || exit 4
printf '{"kind":"final","payload":{"first":%s,"second":%s}}\n' "$first" "$second" >&"$EV")";

const char *const kFirstLid = "11111111-1111-4111-8111-111111111111";
const char *const kOpenLid = "22222222-2222-4222-8222-222222222222";

StoredLock stored(const std::string &lid, const std::string &name, bool answered,
                  const std::string &result = "null") {
  StoredLock l;
  l.lid = lid;
  l.name = name;
  l.expires = kodo::now_seconds() + 600;
  l.answered = answered;
  l.result_json = result;
  return l;
}

Continuation resumed(std::vector<StoredLock> locks) {
  Continuation c;
  c.fid = "0123456789abcdef01234567";
  c.first_seq = 20;
  c.note = "resumed";
  c.replay = std::move(locks);
  return c;
}

TEST_F(ExecutorTest, AResumedRunMakesOnlyWhatFollowsItsOpenLock) {
  auto &ex = start({flow("two", kTwoLocks)});
  const Continuation c =
      resumed({stored(kFirstLid, "a", true, R"("yes")"), stored(kOpenLid, "b", false)});
  ASSERT_EQ(ex.launch("two", "alice", "{}", &c), c.fid);
  // Answered before or after the flow is back at its lock: both are taken, once.
  EXPECT_EQ(ex.answer_lock(c.fid, kOpenLid, R"("sure")"), Executor::LockAnswer::answered);
  EXPECT_EQ(ex.answer_lock(c.fid, kOpenLid, R"("again")"), Executor::LockAnswer::already_answered);
  EXPECT_EQ(ex.answer_lock(c.fid, kFirstLid, R"("again")"), Executor::LockAnswer::already_answered);
  ASSERT_TRUE(ex.wait_inactive(c.fid, kWait));
  const auto events = sink_.of(c.fid);
  std::vector<std::string> kinds;
  for (const Event &e : events) kinds.push_back(e.kind);
  EXPECT_EQ(kinds, (std::vector<std::string>{"debug", "status", "lease", "final", "status"}));
  for (size_t i = 0; i < events.size(); ++i) EXPECT_EQ(events[i].seq, 20 + int64_t(i));
  EXPECT_EQ(events.back().payload, "finished");
  ASSERT_EQ(payloads(events, "final").size(), 1u);
  const std::string final_text = payloads(events, "final")[0];
  EXPECT_NE(final_text.find(std::string(R"("first":{"name":"a","lid":")") + kFirstLid +
                            R"(","result":"yes"})"),
            std::string::npos)
      << final_text;
  EXPECT_NE(final_text.find(std::string(R"("second":{"name":"b","lid":")") + kOpenLid +
                            R"(","result":"sure"})"),
            std::string::npos)
      << final_text;
}

TEST_F(ExecutorTest, AResumedFlowThatAsksForAnotherLockIsStopped) {
  auto &ex = start({flow("two", kTwoLocks)});
  const Continuation c = resumed({stored(kFirstLid, "not-a", false)});
  ex.launch("two", "alice", "{}", &c);
  ASSERT_TRUE(ex.wait_inactive(c.fid, kWait));
  const auto events = sink_.of(c.fid);
  ASSERT_GE(events.size(), 2u);
  EXPECT_EQ(events[events.size() - 2].kind, "error");
  EXPECT_NE(events[events.size() - 2].payload.find(
                "asked for lock \"a\" where its first run asked for lock " +
                std::string(kFirstLid) + " (\"not-a\")"),
            std::string::npos)
      << events[events.size() - 2].payload;
  EXPECT_EQ(events.back().payload, "error");
  EXPECT_TRUE(payloads(events, "stdout").empty()) << "its output was stored the first time";
}

TEST_F(ExecutorTest, AResumedFlowThatExitsBeforeItsLockEndsWithAnError) {
  auto &ex = start({flow("quick", "echo bye")});
  const Continuation c = resumed({stored(kOpenLid, "b", false)});
  ex.launch("quick", "alice", "{}", &c);
  ASSERT_TRUE(ex.wait_inactive(c.fid, kWait));
  const auto events = sink_.of(c.fid);
  ASSERT_GE(events.size(), 2u);
  EXPECT_NE(events[events.size() - 2].payload.find("exited before asking again for lock " +
                                                   std::string(kOpenLid)),
            std::string::npos)
      << events[events.size() - 2].payload;
  EXPECT_EQ(events.back().payload, "error");
}

}  // namespace
}  // namespace kodo::executor_test
