// step_job.hpp: the job the durability tests run through the activity worker, in the test
// process and in the worker process the tests kill. It takes inputs {"steps": N, "step_ms": M},
// heartbeats {"step": i} after each step, picks up after the last step an earlier attempt
// heartbeated, stops while paused and ends when cancelled, and writes what it did to a log.
#pragma once

#include <rapidjson/document.h>

#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "activity_worker.hpp"

namespace kodo::testing {

class StepLog {
 public:
  std::function<void(const std::string &)> echo;  // also print each line (worker process)

  void add(const std::string &line) {
    std::lock_guard<std::mutex> lock(mutex_);
    lines_.push_back(line);
    if (echo) echo(line);
  }
  std::vector<std::string> lines() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return lines_;
  }
  bool has(const std::string &line) const {
    for (const auto &l : lines())
      if (l == line) return true;
    return false;
  }
  // Index of the first line equal to `line`, or -1.
  int index(const std::string &line) const {
    auto all = lines();
    for (size_t i = 0; i < all.size(); ++i)
      if (all[i] == line) return static_cast<int>(i);
    return -1;
  }

 private:
  mutable std::mutex mutex_;
  std::vector<std::string> lines_;
};

inline int int_member(const std::string &json, const char *name, int fallback) {
  rapidjson::Document document;
  document.Parse(json.c_str());
  if (document.HasParseError() || !document.IsObject()) return fallback;
  auto member = document.FindMember(name);
  return member != document.MemberEnd() && member->value.IsInt() ? member->value.GetInt()
                                                                 : fallback;
}

inline temporal::JobResult run_steps(temporal::Job &job, StepLog &log) {
  const std::string &fid = job.input().fid;
  const int steps = int_member(job.input().inputs, "steps", 3);
  const auto step_time = std::chrono::milliseconds(int_member(job.input().inputs, "step_ms", 50));
  int step = job.last_heartbeat().empty() ? 0 : int_member(job.last_heartbeat(), "step", -1) + 1;
  log.add(fid + " attempt " + std::to_string(job.attempt()) + " from step " + std::to_string(step));
  temporal::Control seen = job.control();
  while (step < steps) {
    if (seen.paused) {
      log.add(fid + " paused at step " + std::to_string(step));
      while (seen.paused) seen = job.wait_for_change(seen, std::chrono::hours(1));
      if (!seen.cancelled) log.add(fid + " resumed at step " + std::to_string(step));
    }
    if (seen.cancelled) {
      log.add(fid + " cancelled: " + seen.cancel_reason);
      return {fid, "error", "cancelled by " + seen.cancel_reason};
    }
    const temporal::Control now = job.wait_for_change(seen, step_time);
    if (!(now == seen)) {  // a signal came in mid-step: do the step again after it
      seen = now;
      continue;
    }
    job.heartbeat(R"({"step":)" + std::to_string(step) + "}");
    log.add(fid + " step " + std::to_string(step));
    ++step;
  }
  log.add(fid + " finished");
  return {fid, "finished", ""};
}

}  // namespace kodo::testing
