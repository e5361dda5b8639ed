// executor_fixture.hpp: what the executor's tests share: a sink that records, small /bin/sh
// flows, and checks of a run's events. Waits use generous timeouts; nothing asserts how fast
// anything is.
#pragma once

#include <kodo/host/error.hpp>
#include "core/event.hpp"
#include "core/executor.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

namespace kodo::executor_test {

using kodo::Event;
using kodo::Executor;
using kodo::ExecutorConfig;
using kodo::FlowSpec;

inline constexpr double kWait = 30;  // seconds: generous, only reached when something is broken

// Records what it is given; refuses everything while failing.
class TestSink : public kodo::EventSink {
 public:
  void publish(const std::vector<Event> &events) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (failing_) {
      ++refusals_;
      throw kodo::Error(KODO_ERR_UNAVAILABLE, "test sink is down", true);
    }
    events_.insert(events_.end(), events.begin(), events.end());
    changed_.notify_all();
  }

  void set_failing(bool failing) {
    std::lock_guard<std::mutex> lock(mu_);
    failing_ = failing;
  }
  int refusals() {
    std::lock_guard<std::mutex> lock(mu_);
    return refusals_;
  }

  std::vector<Event> of(const std::string &fid) {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<Event> out;
    for (const Event &e : events_)
      if (e.fid == fid) out.push_back(e);
    return out;
  }

  // Waits until fid has an event of this kind and payload.
  bool wait_for(const std::string &fid, const std::string &kind, const std::string &payload,
                double timeout_s = kWait) {
    std::unique_lock<std::mutex> lock(mu_);
    return changed_.wait_for(lock, std::chrono::duration<double>(timeout_s), [&] {
      for (const Event &e : events_)
        if (e.fid == fid && e.kind == kind && e.payload == payload) return true;
      return false;
    });
  }

 private:
  std::mutex mu_;
  std::condition_variable changed_;
  std::vector<Event> events_;
  bool failing_ = false;
  int refusals_ = 0;
};

inline bool eventually(const std::function<bool()> &condition, double timeout_s = kWait) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  while (!condition()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

inline std::vector<std::string> payloads(const std::vector<Event> &events,
                                         const std::string &kind) {
  std::vector<std::string> out;
  for (const Event &e : events)
    if (e.kind == kind) out.push_back(e.payload);
  return out;
}

inline bool has_payload_containing(const std::vector<Event> &events, const std::string &kind,
                                   const std::string &part) {
  for (const Event &e : events)
    if (e.kind == kind && e.payload.find(part) != std::string::npos) return true;
  return false;
}

// Seqs 0..n-1, in the order published.
inline void expect_contiguous(const std::vector<Event> &events) {
  for (size_t i = 0; i < events.size(); ++i)
    EXPECT_EQ(events[i].seq, static_cast<int64_t>(i)) << "event " << i << " " << events[i].kind;
}

// The run's last events: error <reason part> then status error.
inline void expect_failed_with(const std::vector<Event> &events, const std::string &reason) {
  ASSERT_GE(events.size(), 2u);
  const Event &error = events[events.size() - 2];
  EXPECT_EQ(error.kind, "error");
  EXPECT_NE(error.payload.find(reason), std::string::npos)
      << "error payload: " << error.payload << "\nexpected: " << reason;
  EXPECT_EQ(events.back().kind, "status");
  EXPECT_EQ(events.back().payload, "error");
  expect_contiguous(events);
}

class ExecutorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/kodo-executor-test-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern), nullptr);
    dir_ = pattern;
  }
  void TearDown() override {
    executor_.reset();
    std::filesystem::remove_all(dir_);
  }

  // A flow running `body` with /bin/sh; EV is its events descriptor.
  FlowSpec flow(const std::string &name, const std::string &body, double timeout_s = 0) {
    const std::string path = dir_ + "/" + name + ".sh";
    std::ofstream(path) << "EV=$KODO_EVENTS_FD\n" << body << "\n";
    FlowSpec f;
    f.name = name;
    f.argv = {"/bin/sh", path};
    f.cwd = dir_;
    f.timeout_s = timeout_s;
    f.description = "test flow " + name;
    return f;
  }

  Executor &start(std::vector<FlowSpec> flows, ExecutorConfig config = {}) {
    if (config.app_url.empty()) config.app_url = "http://test.local";
    executor_ = std::make_unique<Executor>(std::move(config), std::move(flows), sink_);
    return *executor_;
  }

  // Launches and waits until the run's last event is published.
  std::vector<Event> run_to_end(const std::string &flow_name, const std::string &inputs = "{}") {
    const std::string fid = executor_->launch(flow_name, "alice", inputs);
    EXPECT_TRUE(executor_->wait_inactive(fid, kWait)) << flow_name;
    return sink_.of(fid);
  }

  std::string file(const std::string &name) const { return dir_ + "/" + name; }
  void touch(const std::string &name) const { std::ofstream(file(name)) << "x"; }

  std::string dir_;
  TestSink sink_;
  std::unique_ptr<Executor> executor_;
};

inline const char *kFinal = R"(echo '{"kind":"final","payload":"done"}' >&$EV)";

}  // namespace kodo::executor_test
