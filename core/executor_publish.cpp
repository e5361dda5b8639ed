// executor_publish.cpp: a run's events handed to the sink in rounds, and the run's fate
// while the sink refuses them (retry with backoff, then give up and end the run).
#include "core/executor_run.hpp"

#include "core/event_line.hpp"

#include <kodo/host/error.hpp>
#include <kodo/host/log.hpp>

#include <string>
#include <vector>

namespace kodo {

using namespace executor_detail;

bool Executor::try_publish(const std::vector<Event> &events, std::string *error) {
  try {
    sink_.publish(events);
  } catch (const std::exception &e) {
    *error = e.what();
    return false;
  } catch (...) {
    *error = "the sink threw an unknown exception";
    return false;
  }
  std::lock_guard<std::mutex> lock(mu_);
  stats_.events_emitted += events.size();
  for (const Event &e : events) {
    if (e.kind != "status") continue;
    if (e.payload == "finished") ++stats_.finished;
    if (e.payload == "error") ++stats_.failed;
  }
  return true;
}

void Executor::publish_round(std::vector<std::shared_ptr<Run>> &live) {
  // Healthy runs: everything this round made, in one call.
  std::vector<Event> batch;
  std::vector<std::pair<Run *, size_t>> members;
  for (auto &r : live) {
    if (r->pending.empty() || r->failing) continue;
    members.emplace_back(r.get(), r->pending.size());
    std::move(r->pending.begin(), r->pending.end(), std::back_inserter(batch));
    r->pending.clear();
  }
  std::string error;
  if (!batch.empty() && !try_publish(batch, &error)) {
    auto next = batch.begin();
    for (auto &[run, count] : members) {
      const auto end = next + static_cast<std::ptrdiff_t>(count);
      run->pending.assign(std::make_move_iterator(next), std::make_move_iterator(end));
      next = end;
      publish_failed(*run, error);
    }
  }
  // Refused runs: one call each, so a run the sink keeps refusing cannot hold up the others.
  const TimePoint now = Clock::now();
  for (auto &r : live) {
    if (!r->failing || r->pending.empty() || now < r->next_attempt) continue;
    if (try_publish(r->pending, &error)) {
      log_executor(KODO_LOG_INFO, "fid " + r->fid + ": the sink took its events again after " +
                                      format_seconds(seconds_between(r->failing_since, now)) +
                                      " s");
      r->pending.clear();
      r->failing = false;
    } else {
      publish_failed(*r, error);
    }
  }
}

void Executor::publish_failed(Run &run, const std::string &error) {
  const TimePoint now = Clock::now();
  if (!run.failing) {
    run.failing = true;
    run.failing_since = now;
    run.backoff_ms = kBackoffFirstMs;
    log_executor(KODO_LOG_WARN, "fid " + run.fid + ": the sink refused " +
                                    std::to_string(run.pending.size()) + " events (" + error +
                                    "); retrying for " + std::to_string(config_.publish_retry_ms) +
                                    " ms");
  } else {
    run.backoff_ms = std::min(run.backoff_ms * 2, kBackoffMaxMs);
  }
  run.next_attempt = now + std::chrono::milliseconds(run.backoff_ms);
  const auto window = std::chrono::milliseconds(std::max(config_.publish_retry_ms, 0));
  if (!run.transport_failed) {
    if (now - run.failing_since >= window) transport_refused(run, error);
    return;
  }
  // Only the run's last events are left. Outside shutdown they are retried until taken;
  // shutdown cannot wait forever, so after one more window they are given up, loudly.
  if (stop_seen_ && now - std::max(run.failing_since, stop_at_seen_) >= window) {
    log_executor(KODO_LOG_ERROR, "fid " + run.fid + ": host shutting down; giving up on its last " +
                                     std::to_string(run.pending.size()) +
                                     " events, which the sink refused: " + error);
    {
      std::lock_guard<std::mutex> lock(mu_);
      stats_.events_rejected += run.pending.size();
    }
    run.pending.clear();
    run.failing = false;
  }
}

void Executor::transport_refused(Run &run, const std::string &error) {
  const size_t lost = run.pending.size();
  const int64_t first = run.pending.front().seq, last = run.pending.back().seq;
  log_executor(KODO_LOG_ERROR, "fid " + run.fid + " (flow " + quote_excerpt(run.flow->name) +
                                   "): the sink refused " + std::to_string(lost) + " events (seq " +
                                   std::to_string(first) + ".." + std::to_string(last) + ") for " +
                                   std::to_string(config_.publish_retry_ms) + " ms: " + error +
                                   "; they are dropped and the run is stopped");
  {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.events_rejected += lost;
  }
  // Refused events were not taken, so their seqs are free for the events that follow.
  run.pending.clear();
  run.next_seq = first;
  run.transport_failed = true;
  run.failing_since = Clock::now();
  run.stop_reason.clear();
  terminate(run, "transport refused events: " + std::to_string(lost) + " events lost: " + error,
            config_.kill_grace_s);
  if (run.outcome_emitted) emit_outcome(run);  // the one made was among the refused
}
}  // namespace kodo
