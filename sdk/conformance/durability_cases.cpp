// durability_cases.cpp: the durability contract (kodo_durability_api in kodo_plugin.h). Each
// case opens a serving handle and, where jobs must run, worker handles whose runner is the
// kit's own step job: inputs {"steps": N, "step_ms": M}, a heartbeat {"step": i} after each
// step, picking up after the step an earlier attempt heartbeated, waiting while paused and
// ending "error" when cancelled. Cases run against a real backend (the Temporal plugin's tests
// start a dev server); every wait ends as soon as its condition holds.
#include "conformance.hpp"

#include <kodo/host/durability.hpp>

#include <rapidjson/document.h>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <thread>

namespace kodo::conformance {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// Generous: a loaded machine is slow, and each wait ends as soon as it is met.
constexpr milliseconds kWait{90000};

int int_member(const std::string &json, const char *name, int fallback) {
  rapidjson::Document document;
  document.Parse(json.c_str());
  if (document.HasParseError() || !document.IsObject()) return fallback;
  auto member = document.FindMember(name);
  return member != document.MemberEnd() && member->value.IsInt() ? member->value.GetInt()
                                                                 : fallback;
}

std::string string_member(const std::string &json, const char *name) {
  rapidjson::Document document;
  document.Parse(json.c_str());
  if (document.HasParseError() || !document.IsObject()) return {};
  auto member = document.FindMember(name);
  return member != document.MemberEnd() && member->value.IsString() ? member->value.GetString()
                                                                    : std::string();
}

// What the step jobs did, per fid, shared by every worker of a case.
class JobLog {
 public:
  void add(const std::string &fid, const std::string &line) {
    std::lock_guard<std::mutex> lock(mutex_);
    lines_[fid].push_back(line);
    changed_.notify_all();
  }
  std::vector<std::string> lines(const std::string &fid) {
    std::lock_guard<std::mutex> lock(mutex_);
    return lines_[fid];
  }
  bool has(const std::string &fid, const std::string &line) {
    for (const auto &l : lines(fid))
      if (l == line) return true;
    return false;
  }
  // Waits until fid's log has a line starting with `prefix`.
  bool wait_for(const std::string &fid, const std::string &prefix) {
    std::unique_lock<std::mutex> lock(mutex_);
    return changed_.wait_for(lock, kWait, [&] {
      for (const auto &l : lines_[fid])
        if (l.rfind(prefix, 0) == 0) return true;
      return false;
    });
  }
  std::string dump(const std::string &fid) {
    std::string out;
    for (const auto &l : lines(fid)) out += "\n  " + l;
    return out;
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  std::map<std::string, std::vector<std::string>> lines_;
};

// The kit's step job (see the top).
sdk::JobResult run_steps(HostJob &job, JobLog &log) {
  const std::string &fid = job.input().fid;
  const int steps = int_member(job.input().inputs_json, "steps", 3);
  const milliseconds step_time(int_member(job.input().inputs_json, "step_ms", 20));
  int step = job.last_heartbeat().empty() ? 0 : int_member(job.last_heartbeat(), "step", -1) + 1;
  log.add(fid, "attempt " + std::to_string(job.attempt()) + " from step " + std::to_string(step));
  // Shared with the listener, which the plugin may call until run_job has returned.
  struct Shared {
    std::mutex mutex;
    std::condition_variable changed;
    sdk::JobControl control;
  };
  auto shared = std::make_shared<Shared>();
  job.on_control([shared](const sdk::JobControl &now) {
    std::lock_guard<std::mutex> lock(shared->mutex);
    shared->control = now;
    shared->changed.notify_all();
  });
  const sdk::JobControl &control = shared->control;
  std::unique_lock<std::mutex> lock(shared->mutex);
  while (step < steps) {
    if (control.paused) {
      log.add(fid, "paused at step " + std::to_string(step));
      shared->changed.wait(lock, [&] { return !control.paused; });
      if (!control.cancelled) log.add(fid, "resumed at step " + std::to_string(step));
    }
    if (control.cancelled) {
      log.add(fid, "cancelled: " + control.cancel_reason);
      return {"error", "cancelled by " + control.cancel_reason};
    }
    if (shared->changed.wait_for(lock, step_time,
                                 [&] { return control.paused || control.cancelled; }))
      continue;  // a signal came in mid-step: the step runs again after it
    lock.unlock();
    job.heartbeat("{\"step\":" + std::to_string(step) + "}");
    log.add(fid, "step " + std::to_string(step));
    lock.lock();
    ++step;
  }
  log.add(fid, "done");
  return {"finished", ""};
}

class DurabilityCase : public ::testing::Test {
 protected:
  void SetUp() override {
    if (target().kind() != KODO_KIND_DURABILITY) GTEST_SKIP() << "not a durability plugin";
    // A task queue of the case's own, where the plugin has one: no other case's job (one
    // handed back by a stopped worker, say) reaches this case's workers.
    preferred_ = {{"task_queue", fresh_name("queue")},
                  {"heartbeat_timeout_s", "3"},
                  {"heartbeat_interval_s", "0.3"},
                  {"retry_initial_s", "0.2"},
                  {"retry_maximum_s", "1"}};
    durability_ = open();
  }

  std::unique_ptr<Durability> open() {
    return std::make_unique<Durability>(target_ptr(), options_for_new_handle(preferred_));
  }

  std::unique_ptr<Durability> start_worker() {
    auto worker = open();
    worker->start_worker([this](HostJob &job) { return run_steps(job, log_); });
    return worker;
  }

  sdk::JobInput job(int steps, int step_ms) {
    sdk::JobInput input;
    input.fid = fresh_fid();
    input.username = "kit";
    input.entry_point = "kit:steps";
    input.inputs_json =
        "{\"steps\":" + std::to_string(steps) + ",\"step_ms\":" + std::to_string(step_ms) + "}";
    input.execution_timeout = 600;
    return input;
  }

  // Waits until describe's "state" is `state`; returns the last description.
  std::string wait_state(const std::string &fid, const std::string &state) {
    const auto deadline = Clock::now() + kWait;
    std::string description;
    do {
      description = durability_->describe(fid);
      if (string_member(description, "state") == state) return description;
      std::this_thread::sleep_for(milliseconds(50));
    } while (Clock::now() < deadline);
    ADD_FAILURE() << "durability contract: " << fid << " reaches state " << state
                  << "; last description: " << description;
    return description;
  }

  OptionList preferred_;
  JobLog log_;
  std::unique_ptr<Durability> durability_;
};

TEST_F(DurabilityCase, SubmitIsIdempotent) {
  const auto input = job(1, 1);
  EXPECT_TRUE(durability_->submit(input, "request-1"))
      << "durability contract: the first submit of a fid starts its job";
  // The same submit retried (same request id) answers as the first did.
  durability_->submit(input, "request-1");
  EXPECT_FALSE(durability_->submit(input, "request-2"))
      << "durability contract: a fid runs once, whatever the request id";
  auto other = open();
  EXPECT_FALSE(other->submit(input, "request-3"))
      << "durability contract: another handle (a restarted host) starts nothing either";
}

TEST_F(DurabilityCase, SubmittedJobCompletes) {
  auto worker = start_worker();
  const auto input = job(3, 10);
  ASSERT_TRUE(durability_->submit(input, fresh_name("request")));
  ASSERT_TRUE(log_.wait_for(input.fid, "done")) << log_.dump(input.fid);
  if (claims(KODO_DURABILITY_CAP_QUERY)) wait_state(input.fid, "completed");
  EXPECT_EQ(log_.lines(input.fid).front(), "attempt 1 from step 0");
}

TEST_F(DurabilityCase, DescribeNeedsNoWorker) {
  if (!claims(KODO_DURABILITY_CAP_QUERY)) GTEST_SKIP() << "QUERY not claimed";
  const auto input = job(1, 1);
  ASSERT_TRUE(durability_->submit(input, fresh_name("request")));
  const std::string description = durability_->describe(input.fid);
  EXPECT_EQ(string_member(description, "fid"), input.fid) << description;
  EXPECT_EQ(string_member(description, "state"), "pending")
      << "durability contract: a job no worker took is pending: " << description;
  try {
    durability_->describe(fresh_fid());
    ADD_FAILURE() << "durability contract: describe of an unknown fid is KODO_ERR_NOT_FOUND";
  } catch (const Error &e) {
    EXPECT_EQ(e.code(), KODO_ERR_NOT_FOUND) << e.what();
  }
}

TEST_F(DurabilityCase, PauseHoldsTheJobAndResumeContinuesIt) {
  if (!claims(KODO_DURABILITY_CAP_PAUSE)) GTEST_SKIP() << "PAUSE not claimed";
  auto worker = start_worker();
  const auto input = job(400, 20);
  ASSERT_TRUE(durability_->submit(input, fresh_name("request")));
  ASSERT_TRUE(log_.wait_for(input.fid, "step 1")) << log_.dump(input.fid);
  durability_->signal(input.fid, KODO_JOB_SIGNAL_PAUSE, "kit");
  ASSERT_TRUE(log_.wait_for(input.fid, "paused at")) << log_.dump(input.fid);
  if (claims(KODO_DURABILITY_CAP_QUERY)) wait_state(input.fid, "paused");
  durability_->signal(input.fid, KODO_JOB_SIGNAL_PAUSE, "kit, twice");  // changes nothing
  durability_->signal(input.fid, KODO_JOB_SIGNAL_RESUME, "kit");
  ASSERT_TRUE(log_.wait_for(input.fid, "resumed at")) << log_.dump(input.fid);
  durability_->signal(input.fid, KODO_JOB_SIGNAL_CANCEL, "kit: the case is over");
  ASSERT_TRUE(log_.wait_for(input.fid, "cancelled")) << log_.dump(input.fid);
}

TEST_F(DurabilityCase, PauseBeforeTheJobStartsHoldsItsFirstStep) {
  if (!claims(KODO_DURABILITY_CAP_PAUSE)) GTEST_SKIP() << "PAUSE not claimed";
  const auto input = job(2, 10);
  ASSERT_TRUE(durability_->submit(input, fresh_name("request")));
  durability_->signal(input.fid, KODO_JOB_SIGNAL_PAUSE, "kit");
  auto worker = start_worker();
  ASSERT_TRUE(log_.wait_for(input.fid, "paused at step 0")) << log_.dump(input.fid);
  EXPECT_FALSE(log_.has(input.fid, "step 0")) << "no step ran while paused";
  durability_->signal(input.fid, KODO_JOB_SIGNAL_RESUME, "kit");
  ASSERT_TRUE(log_.wait_for(input.fid, "done")) << log_.dump(input.fid);
}

TEST_F(DurabilityCase, CancelEndsTheJobWithItsReason) {
  if (!claims(KODO_DURABILITY_CAP_CANCEL)) GTEST_SKIP() << "CANCEL not claimed";
  auto worker = start_worker();
  const auto input = job(400, 20);
  ASSERT_TRUE(durability_->submit(input, fresh_name("request")));
  ASSERT_TRUE(log_.wait_for(input.fid, "step 0")) << log_.dump(input.fid);
  durability_->signal(input.fid, KODO_JOB_SIGNAL_CANCEL, "the kit's cancel");
  ASSERT_TRUE(log_.wait_for(input.fid, "cancelled: ")) << log_.dump(input.fid);
  bool named = false;
  for (const auto &line : log_.lines(input.fid))
    named = named || line.find("the kit's cancel") != std::string::npos;
  EXPECT_TRUE(named) << "durability contract: the job learns who cancelled it"
                     << log_.dump(input.fid);
  if (claims(KODO_DURABILITY_CAP_QUERY)) {
    const std::string description = wait_state(input.fid, "cancelled");
    EXPECT_NE(description.find("the kit's cancel"), std::string::npos) << description;
  }
}

TEST_F(DurabilityCase, AJobHandedBackRunsAgainAsTheNextAttempt) {
  if (!claims(KODO_DURABILITY_CAP_RETRY)) GTEST_SKIP() << "RETRY not claimed";
  const auto input = job(6, 200);
  auto first = start_worker();
  ASSERT_TRUE(durability_->submit(input, fresh_name("request")));
  ASSERT_TRUE(log_.wait_for(input.fid, "step 1")) << log_.dump(input.fid);
  first->stop_worker();  // hands the job back
  auto second = start_worker();
  ASSERT_TRUE(log_.wait_for(input.fid, "attempt 2 from step ")) << log_.dump(input.fid);
  ASSERT_TRUE(log_.wait_for(input.fid, "done")) << log_.dump(input.fid);
  // Attempt 2 picks up after the last step attempt 1 heartbeated: no step is lost.
  for (int step = 0; step < 6; ++step)
    EXPECT_TRUE(log_.has(input.fid, "step " + std::to_string(step)))
        << "step " << step << " ran" << log_.dump(input.fid);
}

}  // namespace
}  // namespace kodo::conformance
