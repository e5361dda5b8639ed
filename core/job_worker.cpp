#include "core/job_worker.hpp"

#include <kodo/host/error.hpp>
#include <kodo/host/log.hpp>

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <algorithm>

namespace kodo {

void OutcomeSink::publish(const std::vector<Event> &events) {
  next_.publish(events);
  std::lock_guard<std::mutex> lock(mutex_);
  for (const auto &e : events) {
    auto &o = outcomes_[e.fid];
    o.next_seq = std::max(o.next_seq, e.seq + 1);
    if (e.kind == "status") o.status = e.payload;
    if (e.kind == "error") o.error = e.payload;
  }
}

OutcomeSink::Outcome OutcomeSink::outcome(const std::string &fid) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = outcomes_.find(fid);
  return it == outcomes_.end() ? Outcome{} : it->second;
}

void OutcomeSink::forget(const std::string &fid) {
  std::lock_guard<std::mutex> lock(mutex_);
  outcomes_.erase(fid);
}

namespace {

int64_t heartbeat_next_seq(const std::string &json) {
  rapidjson::Document document;
  document.Parse(json.c_str());
  if (document.HasParseError() || !document.IsObject()) return 0;
  auto member = document.FindMember("next_seq");
  return member != document.MemberEnd() && member->value.IsInt64() ? member->value.GetInt64() : 0;
}

// The heartbeat's progress: {"next_seq": N, "status": S}.
std::string progress_json(const OutcomeSink::Outcome &now) {
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> w(buffer);
  w.StartObject();
  w.Key("next_seq");
  w.Int64(now.next_seq);
  w.Key("status");
  w.String(now.status.c_str(), static_cast<rapidjson::SizeType>(now.status.size()));
  w.EndObject();
  return std::string(buffer.GetString(), buffer.GetSize());
}

}  // namespace

sdk::JobResult run_job_attempt(HostJob &job, Executor &executor, OutcomeSink &outcomes,
                               Storage *storage, const JobWorkerConfig &config) {
  const sdk::JobInput &input = job.input();
  Continuation continuation;
  continuation.fid = input.fid;
  continuation.first_seq = heartbeat_next_seq(job.last_heartbeat());
  continuation.token = input.jwt;  // made by the serving host, which has the accounts
  if (storage) {
    // An earlier attempt's events, or the serving host's, come first.
    if (auto info = storage->get_execution(input.fid))
      continuation.first_seq = std::max(continuation.first_seq, info->last_seq + 1);
  }
  if (job.attempt() > 1)
    continuation.note = "attempt " + std::to_string(job.attempt()) +
                        " of this execution: attempt " + std::to_string(job.attempt() - 1) +
                        " ended without a result (its worker was lost or stopped)";
  outcomes.forget(input.fid);
  try {
    executor.launch(input.entry_point, input.username, input.inputs_json, &continuation);
  } catch (const Error &e) {
    // An unknown flow or bad inputs do not get better on another attempt.
    throw Error(e.code(), e.what(), e.retryable() || e.code() == KODO_ERR_UNAVAILABLE);
  }
  job.on_control([&executor, fid = input.fid](const sdk::JobControl &control) {
    if (control.cancelled)
      executor.cancel(fid, control.cancel_reason);
    else
      executor.pause(fid, control.paused, control.paused ? "signal pause" : "signal resume");
  });
  while (!executor.wait_inactive(input.fid, config.heartbeat_s)) {
    try {
      job.heartbeat(progress_json(outcomes.outcome(input.fid)));
    } catch (const Error &e) {
      log_warn("job " + input.fid + ": " + e.what());
    }
  }
  const auto end = outcomes.outcome(input.fid);
  outcomes.forget(input.fid);
  if (end.status == "finished") return {"finished", ""};
  return {"error", end.error.empty() ? "the run ended with status " + end.status : end.error};
}

}  // namespace kodo
