// executor_test.cpp: runs small /bin/sh flows and checks the events the executor publishes.
// Waits use generous timeouts; nothing asserts how fast anything is.
#include "executor_fixture.hpp"

#include <kodo/host/error.hpp>
#include "core/event.hpp"
#include "core/executor.hpp"
#include "core/kodosumi_payload.hpp"

#include <gtest/gtest.h>
#include <rapidjson/document.h>

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

namespace {

using namespace kodo::executor_test;

TEST_F(ExecutorTest, FullEventOrderAndContiguousSeqs) {
  auto &ex = start({flow("ok", std::string(R"(
inputs=$(cat)
echo '{"kind":"result","payload":{"x":1}}' >&$EV
echo hello
echo oops >&2
printf '{"kind":"agent","payload":%s}\n' "$inputs" >&$EV
)") + kFinal)});
  const std::string inputs = R"({"question": "why?", "n": [1, 2.50]})";
  const std::string fid = ex.launch("ok", "alice", inputs);
  EXPECT_EQ(fid.size(), 24u);
  EXPECT_TRUE(ex.is_active(fid) || !sink_.of(fid).empty());
  ASSERT_TRUE(ex.wait_inactive(fid, kWait));
  EXPECT_FALSE(ex.is_active(fid));

  const auto events = sink_.of(fid);
  ASSERT_GE(events.size(), 9u);
  expect_contiguous(events);
  for (const Event &e : events) {
    EXPECT_EQ(e.fid, fid);
    EXPECT_EQ(e.username, "alice");
    EXPECT_GT(e.timestamp, 1.6e9);
  }
  EXPECT_EQ(events[0].kind, "status");
  EXPECT_EQ(events[0].payload, "starting");
  EXPECT_EQ(events[1].kind, "inputs");
  EXPECT_EQ(events[1].payload, kodo::kodosumi_serialize_json(inputs));  // {"dict": ...}
  EXPECT_EQ(events[2].kind, "meta");
  EXPECT_EQ(events[3].kind, "status");
  EXPECT_EQ(events[3].payload, "running");
  EXPECT_EQ(events.back().kind, "status");
  EXPECT_EQ(events.back().payload, "finished");
  for (size_t i = 1; i < events.size(); ++i)
    EXPECT_GE(events[i].timestamp, events[i - 1].timestamp);

  rapidjson::Document stored;
  ASSERT_FALSE(stored.Parse(events[2].payload.c_str()).HasParseError()) << events[2].payload;
  ASSERT_TRUE(stored.IsObject() && stored.HasMember("dict")) << events[2].payload;
  const rapidjson::Value &meta = stored["dict"];
  EXPECT_EQ(std::string(meta["fid"].GetString()), fid);
  EXPECT_EQ(std::string(meta["username"].GetString()), "alice");
  EXPECT_EQ(std::string(meta["app_url"].GetString()), "http://test.local");
  EXPECT_EQ(std::string(meta["entry_point"].GetString()), "ok");
  EXPECT_EQ(std::string(meta["summary"].GetString()), "test flow ok");
  EXPECT_EQ(std::string(meta["description"].GetString()), "test flow ok");
  EXPECT_TRUE(meta["tags"].IsArray());
  EXPECT_EQ(std::string(meta["kodosumi"].GetString()), std::string("kodo ") + KODO_VERSION);
  for (const char *key : {"panel_url", "author", "organization", "version"})
    EXPECT_TRUE(meta[key].IsNull());

  // The flow's own events, in the order it wrote them; stdin carried the inputs.
  std::vector<std::string> own;
  for (size_t i = 4; i + 1 < events.size(); ++i)
    if (events[i].kind != "stdout" && events[i].kind != "stderr")
      own.push_back(events[i].kind + " " + events[i].payload);
  EXPECT_EQ(own,
            (std::vector<std::string>{"result {\"dict\":{\"x\":1}}",
                                      "agent {\"dict\":{\"question\":\"why?\",\"n\":[1,2.50]}}",
                                      "final {\"str\":\"done\"}"}));
  EXPECT_EQ(payloads(events, "stdout"), std::vector<std::string>{"hello"});
  EXPECT_EQ(payloads(events, "stderr"), std::vector<std::string>{"oops"});

  const auto stats = ex.stats();
  EXPECT_EQ(stats.launched, 1u);
  EXPECT_EQ(stats.finished, 1u);
  EXPECT_EQ(stats.failed, 0u);
  EXPECT_EQ(stats.events_emitted, events.size());
  EXPECT_EQ(stats.running, 0u);
  EXPECT_EQ(stats.queued, 0u);
}

TEST_F(ExecutorTest, ChildSeesItsEnvironmentAndCwd) {
  FlowSpec f = flow("env", std::string(R"(
echo "$KODO_FID $KODO_USERNAME $KODO_FLOW $KODO_EVENTS_FD $EXTRA"
pwd
)") + kFinal);
  f.env = {"EXTRA=extra value", "KODO_EVENTS_FD=9"};  // the last cannot override ours
  start({f});
  const std::string fid = executor_->launch("env", "bob@example", "{}");
  ASSERT_TRUE(executor_->wait_inactive(fid, kWait));
  const auto out = payloads(sink_.of(fid), "stdout");
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0], fid + " bob@example env 3 extra value");
  EXPECT_EQ(std::filesystem::canonical(out[1]), std::filesystem::canonical(dir_));
  EXPECT_EQ(sink_.of(fid).back().payload, "finished");
}

// Set for one test: the host's environment holds settings and secrets no flow should see.
class ScopedEnv {
 public:
  ScopedEnv(const char *name, const char *value) : name_(name) { ::setenv(name, value, 1); }
  ~ScopedEnv() { ::unsetenv(name_); }
  ScopedEnv(const ScopedEnv &) = delete;
  ScopedEnv &operator=(const ScopedEnv &) = delete;

 private:
  const char *name_;
};

TEST_F(ExecutorTest, ChildGetsAnAllowlistedEnvironmentWithoutHostSecrets) {
  const ScopedEnv database("KODO_EXECUTION_DATABASE", "postgresql://kodo:SECRETPW1@127.0.0.1/k");
  const ScopedEnv redis("KODO_REDIS_URL", "redis://:SECRETPW2@127.0.0.1:6379/0");
  const ScopedEnv other("SOME_HOST_TOKEN", "SECRETPW3");
  const ScopedEnv passed("PASSED_TOKEN", "tok123");
  const ScopedEnv locale("LC_ALL", "C.UTF-8");
  FlowSpec f = flow("printenv", std::string("env\n") + kFinal);
  f.env = {"PASSED_TOKEN", "MISSING_ON_HOST", "OWN=1", "PATH=/usr/bin:/bin"};
  start({f});
  const auto events = run_to_end("printenv");
  EXPECT_EQ(events.back().payload, "finished");
  std::map<std::string, std::string> env;
  for (const std::string &line : payloads(events, "stdout"))
    if (const size_t eq = line.find('='); eq != std::string::npos)
      env[line.substr(0, eq)] = line.substr(eq + 1);
  for (const Event &e : events) EXPECT_EQ(e.payload.find("SECRETPW"), std::string::npos) << e.kind;
  EXPECT_EQ(env.count("KODO_EXECUTION_DATABASE"), 0u);
  EXPECT_EQ(env.count("KODO_REDIS_URL"), 0u);
  EXPECT_EQ(env.count("SOME_HOST_TOKEN"), 0u);
  EXPECT_EQ(env.count("MISSING_ON_HOST"), 0u);
  EXPECT_EQ(env["PASSED_TOKEN"], "tok123");  // named in the flow's config
  EXPECT_EQ(env["OWN"], "1");
  EXPECT_EQ(env["PATH"], "/usr/bin:/bin");
  EXPECT_EQ(env["LC_ALL"], "C.UTF-8");
  EXPECT_EQ(env["KODO_FLOW"], "printenv");
  EXPECT_EQ(env["KODO_USERNAME"], "alice");
  EXPECT_EQ(env["KODO_EVENTS_FD"], "3");
  EXPECT_EQ(env["KODO_ANSWERS_FD"], "4");
  EXPECT_EQ(env["KODO_FID"].size(), 24u);
}

TEST_F(ExecutorTest, ChildGetsNoOtherDescriptors) {
  // A descriptor the host leaked (no O_CLOEXEC) must not reach the child.
  const int leaked = ::fcntl(STDERR_FILENO, F_DUPFD, 50);
  ASSERT_GE(leaked, 50);
  FlowSpec ls;
  ls.name = "ls";
  ls.argv = {"ls", "-1", "/proc/self/fd"};  // found in PATH; no shell, so no fds of its own
  start({ls});
  const auto events = run_to_end("ls");
  ::close(leaked);
  const auto out = payloads(events, "stdout");
  const std::set<std::string> fds(out.begin(), out.end());
  EXPECT_EQ(fds.count(std::to_string(leaked)), 0u);
  for (const char *expected : {"0", "1", "2", "3", "4"})
    EXPECT_EQ(fds.count(expected), 1u) << expected;
  EXPECT_LE(fds.size(), 6u);  // 0-4, plus the directory ls is reading
  expect_failed_with(events, "exited without a final event");
}

TEST_F(ExecutorTest, ChildThatIgnoresLargeInputsDoesNotBlock) {
  start({flow("ignore", kFinal)});
  const std::string big = R"({"blob":")" + std::string(4 << 20, 'x') + R"("})";
  const auto events = run_to_end("ignore", big);
  EXPECT_EQ(events.back().payload, "finished");
  EXPECT_EQ(events[1].payload, "{\"dict\":" + big + "}");
}

TEST_F(ExecutorTest, MalformedLinesBecomeErrorsAndTheRunGoesOn) {
  start({flow("bad", std::string(R"(
echo 'not json' >&$EV
echo '{"kind":"bogus","payload":1}' >&$EV
echo '{"kind":"status","payload":"finished"}' >&$EV
echo '{"payload":1}' >&$EV
echo '{"kind":7,"payload":1}' >&$EV
echo '' >&$EV
echo '{"kind":"result","payload":"still here"}' >&$EV
)") + kFinal)});
  const auto events = run_to_end("bad");
  expect_contiguous(events);
  const auto errors = payloads(events, "error");
  ASSERT_EQ(errors.size(), 5u);
  EXPECT_NE(errors[0].find("events line 1 rejected: not JSON at offset 1"), std::string::npos)
      << errors[0];
  EXPECT_NE(errors[0].find("\"not json\""), std::string::npos) << errors[0];
  EXPECT_NE(errors[1].find("unknown kind \"bogus\""), std::string::npos) << errors[1];
  EXPECT_NE(errors[2].find("reserved for the host"), std::string::npos) << errors[2];
  EXPECT_NE(errors[3].find("missing \"kind\""), std::string::npos) << errors[3];
  EXPECT_NE(errors[4].find("\"kind\" is not a string"), std::string::npos) << errors[4];
  EXPECT_EQ(payloads(events, "result"), std::vector<std::string>{"{\"str\":\"still here\"}"});
  // Only the host's own status events.
  EXPECT_EQ(payloads(events, "status"),
            (std::vector<std::string>{"starting", "running", "finished"}));
}

TEST_F(ExecutorTest, OversizedLinesAreDiscardedWithAnError) {
  ExecutorConfig config;
  config.max_event_bytes = 1000;
  start({flow("big", std::string(R"(
head -c 5000 /dev/zero | tr '\0' a >&$EV; echo >&$EV
head -c 3000 /dev/zero | tr '\0' b; echo
head -c 1000 /dev/zero | tr '\0' c; echo
echo '{"kind":"result","payload":"after"}' >&$EV
)") + kFinal + "\nprintf 'unterminated'")},
        config);
  const auto events = run_to_end("big");
  expect_contiguous(events);
  EXPECT_TRUE(has_payload_containing(
      events, "error", "events line 1 discarded: 5000 bytes exceed the limit of 1000 bytes"));
  EXPECT_TRUE(has_payload_containing(
      events, "error", "stdout line 1 discarded: 3000 bytes exceed the limit of 1000 bytes"));
  EXPECT_EQ(payloads(events, "stdout"),
            (std::vector<std::string>{std::string(1000, 'c'), "unterminated"}));
  EXPECT_EQ(payloads(events, "result"), std::vector<std::string>{"{\"str\":\"after\"}"});
  EXPECT_EQ(events.back().payload, "finished");
}

TEST_F(ExecutorTest, ExitWithoutFinalIsAnError) {
  start({flow("nofinal", "echo hi")});
  const auto events = run_to_end("nofinal");
  expect_failed_with(events, "exited without a final event");
  EXPECT_EQ(executor_->stats().failed, 1u);
}

TEST_F(ExecutorTest, NonZeroExitIsAnErrorEvenAfterFinal) {
  start({flow("exit3", std::string(kFinal) + "\nexit 3")});
  expect_failed_with(run_to_end("exit3"), "exit code 3");
}

TEST_F(ExecutorTest, CrashBySignal) {
  start({flow("crash", "ulimit -c 0\nkill -SEGV $$\nsleep 5")});
  expect_failed_with(run_to_end("crash"), "killed by signal 11 (SIGSEGV)");
}

TEST_F(ExecutorTest, ExecutableThatCannotStart) {
  FlowSpec missing;
  missing.name = "missing";
  missing.argv = {"/nonexistent/kodo-flow"};
  start({missing});
  const auto events = run_to_end("missing");
  expect_failed_with(events, "cannot start flow \"missing\": \"/nonexistent/kodo-flow\": No such");
  EXPECT_TRUE(payloads(events, "status") == (std::vector<std::string>{"starting", "error"}));
}

TEST_F(ExecutorTest, Timeout) {
  start({flow("slow", "sleep 30", 0.5)});
  expect_failed_with(run_to_end("slow"), "timed out after 0.5 s");
}

TEST_F(ExecutorTest, TimeoutEscalatesToSigkill) {
  ExecutorConfig config;
  config.kill_grace_s = 0.3;
  start({flow("stubborn", "trap '' TERM\nsleep 30", 0.3)}, config);
  expect_failed_with(run_to_end("stubborn"), "timed out after 0.3 s");
}

TEST_F(ExecutorTest, Cancel) {
  auto &ex = start({flow("wait", "sleep 30")});
  const std::string fid = ex.launch("wait", "alice", "{}");
  ASSERT_TRUE(sink_.wait_for(fid, "status", "running"));
  EXPECT_TRUE(ex.cancel(fid, "user asked"));
  EXPECT_FALSE(ex.cancel(fid, "again"));
  ASSERT_TRUE(ex.wait_inactive(fid, kWait));
  expect_failed_with(sink_.of(fid), "cancelled: user asked");
  EXPECT_FALSE(ex.cancel(fid, "after the end"));
  EXPECT_FALSE(ex.cancel("000000000000000000000000", "unknown"));
}

TEST_F(ExecutorTest, MaxRunningQueuesTheThirdRun) {
  ExecutorConfig config;
  config.max_running = 2;
  auto &ex = start({flow("gate", std::string("while [ ! -e go ]; do sleep 0.02; done\n") + kFinal)},
                   config);
  const std::string a = ex.launch("gate", "alice", "{}");
  const std::string b = ex.launch("gate", "alice", "{}");
  const std::string c = ex.launch("gate", "alice", "{}");
  ASSERT_TRUE(sink_.wait_for(a, "status", "running"));
  ASSERT_TRUE(sink_.wait_for(b, "status", "running"));
  ASSERT_TRUE(eventually([&] { return ex.stats().running == 2 && ex.stats().queued == 1; }));
  EXPECT_EQ(payloads(sink_.of(c), "status"), std::vector<std::string>{"starting"});
  EXPECT_TRUE(ex.is_active(c));
  touch("go");
  for (const auto &fid : {a, b, c}) {
    ASSERT_TRUE(ex.wait_inactive(fid, kWait));
    const auto events = sink_.of(fid);
    EXPECT_EQ(payloads(events, "status"),
              (std::vector<std::string>{"starting", "running", "finished"}));
    expect_contiguous(events);
  }
  EXPECT_EQ(ex.stats().finished, 3u);
}

TEST_F(ExecutorTest, CancelWhileQueued) {
  ExecutorConfig config;
  config.max_running = 1;
  auto &ex = start({flow("gate", std::string("while [ ! -e go ]; do sleep 0.02; done\n") + kFinal)},
                   config);
  const std::string a = ex.launch("gate", "alice", "{}");
  const std::string b = ex.launch("gate", "alice", "{}");
  ASSERT_TRUE(sink_.wait_for(a, "status", "running"));
  EXPECT_TRUE(ex.cancel(b, "changed my mind"));
  ASSERT_TRUE(ex.wait_inactive(b, kWait));
  const auto events = sink_.of(b);
  expect_failed_with(events, "cancelled: changed my mind");
  EXPECT_EQ(payloads(events, "status"), (std::vector<std::string>{"starting", "error"}));
  touch("go");
  ASSERT_TRUE(ex.wait_inactive(a, kWait));
  EXPECT_EQ(sink_.of(a).back().payload, "finished");
}

TEST_F(ExecutorTest, LaunchRefusals) {
  ExecutorConfig config;
  config.max_running = 1;
  config.max_queued = 1;
  auto &ex = start({flow("gate", std::string("while [ ! -e go ]; do sleep 0.02; done\n") + kFinal)},
                   config);
  auto code_of = [&](const std::string &flow_name, const std::string &user,
                     const std::string &inputs, std::string *message) -> kodo_status {
    try {
      ex.launch(flow_name, user, inputs);
    } catch (const kodo::Error &e) {
      *message = e.what();
      return e.code();
    }
    return KODO_OK;
  };
  std::string message;
  EXPECT_EQ(code_of("nope", "alice", "{}", &message), KODO_ERR_NOT_FOUND);
  EXPECT_NE(message.find("\"nope\""), std::string::npos) << message;
  EXPECT_EQ(code_of("gate", "../alice", "{}", &message), KODO_ERR_INVALID_ARGUMENT);
  EXPECT_NE(message.find("../alice"), std::string::npos) << message;
  for (const char *inputs : {"[1]", "nope", "", "\"s\"", "{\"a\":1} x", "{\"a\":"})
    EXPECT_EQ(code_of("gate", "alice", inputs, &message), KODO_ERR_INVALID_ARGUMENT) << inputs;
  EXPECT_EQ(ex.stats().launched, 0u);

  const std::string a = ex.launch("gate", "alice", "{}");  // runs
  const std::string b = ex.launch("gate", "alice", "{}");  // waits
  EXPECT_EQ(code_of("gate", "alice", "{}", &message), KODO_ERR_UNAVAILABLE);
  EXPECT_NE(message.find("max_queued"), std::string::npos) << message;
  touch("go");
  EXPECT_TRUE(ex.wait_inactive(a, kWait));
  EXPECT_TRUE(ex.wait_inactive(b, kWait));
}

TEST_F(ExecutorTest, SinkRefusingTheFirstEventsFailsTheLaunch) {
  auto &ex = start({flow("ok", kFinal)});
  sink_.set_failing(true);
  try {
    ex.launch("ok", "alice", "{}");
    FAIL() << "launch should throw";
  } catch (const kodo::Error &e) {
    EXPECT_EQ(e.code(), KODO_ERR_UNAVAILABLE);
  }
  EXPECT_EQ(ex.stats().launched, 0u);
  sink_.set_failing(false);
  EXPECT_EQ(run_to_end("ok").back().payload, "finished");
}

TEST_F(ExecutorTest, SinkFailureStopsTheRunAndItsEndIsPublishedAfterRecovery) {
  ExecutorConfig config;
  config.publish_retry_ms = 300;
  config.kill_grace_s = 1;
  auto &ex = start(
      {flow("talk", "while [ ! -e go ]; do sleep 0.02; done\necho lost line\nsleep 30")}, config);
  const std::string fid = ex.launch("talk", "alice", "{}");
  ASSERT_TRUE(sink_.wait_for(fid, "status", "running"));
  sink_.set_failing(true);
  touch("go");
  ASSERT_TRUE(eventually([&] { return ex.stats().events_rejected >= 1; }));
  // The run is stopped and its end keeps being retried while the sink is down.
  const int refusals = sink_.refusals();
  ASSERT_TRUE(eventually([&] { return sink_.refusals() > refusals + 1; }));
  EXPECT_TRUE(ex.is_active(fid));
  sink_.set_failing(false);
  ASSERT_TRUE(ex.wait_inactive(fid, kWait));
  const auto events = sink_.of(fid);
  expect_failed_with(events, "transport refused events: 1 events lost: test sink is down");
  EXPECT_TRUE(payloads(events, "stdout").empty());
  EXPECT_EQ(ex.stats().events_rejected, 1u);
}

TEST_F(ExecutorTest, GrandchildHoldingThePipesDoesNotHoldTheRun) {
  start({flow("bg", std::string("sleep 60 &\n") + kFinal)});
  const auto events = run_to_end("bg");
  EXPECT_EQ(events.back().payload, "finished");
}

TEST_F(ExecutorTest, ManyConcurrentRunsKeepTheirOwnOrder) {
  ExecutorConfig config;
  config.max_running = 8;
  start({flow("chatty", std::string(R"(
i=0
while [ $i -lt 200 ]; do
  echo "{\"kind\":\"result\",\"payload\":$i}" >&$EV
  echo "line $i"
  i=$((i+1))
done
)") + kFinal)},
        config);
  std::vector<std::string> fids;
  for (int i = 0; i < 20; ++i) fids.push_back(executor_->launch("chatty", "alice", "{}"));
  for (const auto &fid : fids) {
    ASSERT_TRUE(executor_->wait_inactive(fid, kWait));
    const auto events = sink_.of(fid);
    expect_contiguous(events);
    const auto results = payloads(events, "result");
    ASSERT_EQ(results.size(), 200u);
    for (int i = 0; i < 200; ++i) EXPECT_EQ(results[i], "{\"int\":" + std::to_string(i) + "}");
    EXPECT_EQ(payloads(events, "stdout").size(), 200u);
    EXPECT_EQ(events.back().payload, "finished");
  }
  EXPECT_EQ(executor_->stats().finished, 20u);
}

TEST_F(ExecutorTest, ShutdownEndsActiveRuns) {
  ExecutorConfig config;
  config.max_running = 1;
  auto &ex = start({flow("wait", "sleep 30")}, config);
  const std::string a = ex.launch("wait", "alice", "{}");
  const std::string b = ex.launch("wait", "alice", "{}");
  ASSERT_TRUE(sink_.wait_for(a, "status", "running"));
  ex.shutdown(1.0);
  EXPECT_FALSE(ex.is_active(a));
  EXPECT_FALSE(ex.is_active(b));
  expect_failed_with(sink_.of(a), "cancelled: host shutting down");
  expect_failed_with(sink_.of(b), "cancelled: host shutting down");
  EXPECT_EQ(payloads(sink_.of(b), "status"), (std::vector<std::string>{"starting", "error"}));
  try {
    ex.launch("wait", "alice", "{}");
    FAIL() << "launch after shutdown";
  } catch (const kodo::Error &e) {
    EXPECT_EQ(e.code(), KODO_ERR_UNAVAILABLE);
  }
  ex.shutdown(1.0);  // again: nothing left to do
}

TEST_F(ExecutorTest, InvalidFlowsAreRefused) {
  FlowSpec nameless;
  nameless.argv = {"/bin/true"};
  EXPECT_THROW(Executor(ExecutorConfig{}, {nameless}, sink_), kodo::Error);
  FlowSpec noargv;
  noargv.name = "x";
  EXPECT_THROW(Executor(ExecutorConfig{}, {noargv}, sink_), kodo::Error);
  FlowSpec badenv = flow("y", kFinal);
  for (const char *entry : {"=x", "BAD NAME=1", "1ST=x", ""}) {
    badenv.env = {entry};
    EXPECT_THROW(Executor(ExecutorConfig{}, {badenv}, sink_), kodo::Error) << entry;
  }
  FlowSpec dup = flow("z", kFinal);
  EXPECT_THROW(Executor(ExecutorConfig{}, {dup, dup}, sink_), kodo::Error);
  Executor fine(ExecutorConfig{}, {dup}, sink_);
  EXPECT_EQ(fine.flows().size(), 1u);
}

}  // namespace
