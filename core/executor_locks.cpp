// executor_locks.cpp: a flow's locks (locks.hpp): the request stored as kodosumi's lock
// event, answers taken from the API, their leases stored and the answers written to the flow.
#include "core/epoll_set.hpp"
#include "core/executor_run.hpp"

#include "core/event_line.hpp"
#include "core/locks.hpp"
#include "core/write_all.hpp"

#include <algorithm>
#include <cerrno>
#include <string>

#include <unistd.h>

namespace kodo {

using namespace executor_detail;

// A flow's lock request (locks.hpp): stored as kodosumi's lock event; the run awaits.
void Executor::open_lock(Run &run, const std::string &payload) {
  LockRequest request;
  if (std::string problem = parse_lock_request(payload, &request); !problem.empty()) {
    emit(run, "error", "lock rejected: " + problem + ": " + quote_excerpt(payload));
    run.answers_out += refusal_line(problem);  // so the flow does not wait for nothing
    flush_answers(run);
    return;
  }
  const std::string lid = new_lock_id();
  const double expires = now_seconds() + request.timeout_s;
  emit(run, "lock", lock_payload(request.name, lid, request.data_json, expires));
  std::lock_guard<std::mutex> lock(mu_);
  run.locks[lid] =
      Run::OpenLock{request.name, after(request.timeout_s), std::to_string(expires), false};
}

// A line of a resumed flow still on its way to its open lock: stored the first time, so only
// its lock requests count (the run ends if one is refused).
void Executor::replayed_line(Run &run, Pipe &pipe, const std::string &line) {
  if (&pipe != &run.events || is_blank_line(line)) return;
  ParsedEventLine parsed = parse_event_line(line);
  if (parsed.ok() && parsed.kind == "lock") replay_lock(run, parsed.payload);
}

// The flow asks again for the next lock its first run stored: it gets that lock's lid and,
// answered, its stored answer at once; open, it waits as any open lock, under its stored
// expiry. A flow that asks otherwise is not deterministic: resuming it is refused.
void Executor::replay_lock(Run &run, const std::string &payload) {
  if (run.replay_refused) return;
  const StoredLock &stored = run.replay[run.replayed];
  LockRequest request;
  const std::string problem = parse_lock_request(payload, &request);
  if (!problem.empty() || request.name != stored.name) {
    terminate(run,
              "resumed after its host stopped, the flow asked for " +
                  (problem.empty() ? "lock " + quote_excerpt(request.name) : "a bad lock") +
                  " where its first run asked for lock " + stored.lid + " (" +
                  quote_excerpt(stored.name) +
                  "): a flow is resumed only if it asks for the same locks in the same order",
              config_.kill_grace_s);
    run.replay_refused = true;
    return;
  }
  ++run.replayed;
  if (stored.answered) {
    run.answers_out += answer_line(stored.name, stored.lid, stored.result_json);
    flush_answers(run);
    return;
  }
  const double left = stored.expires - now_seconds();
  std::lock_guard<std::mutex> lock(mu_);
  Run::OpenLock &open = run.locks[stored.lid] =
      Run::OpenLock{stored.name, after(left), std::to_string(stored.expires), false};
  if (const auto early = run.early_answers.find(stored.lid); early != run.early_answers.end()) {
    open.answered = true;
    run.answers_in.push_back(Run::Answer{stored.lid, stored.name, early->second});
    run.early_answers.erase(early);
  }
}

// An answer to a lock of a resumed run that its flow has not asked for again yet: kept until
// it does (replay_lock). Caller holds mu_.
Executor::LockAnswer Executor::early_answer(Run &run, const std::string &lid,
                                            const std::string &result_json) {
  const auto stored = std::find_if(run.replay.begin(), run.replay.end(),
                                   [&](const StoredLock &l) { return l.lid == lid; });
  if (stored == run.replay.end()) return LockAnswer::no_such_open_lock;
  if (stored->answered || !run.early_answers.emplace(lid, result_json).second)
    return LockAnswer::already_answered;
  return LockAnswer::answered;
}

Executor::LockAnswer Executor::answer_lock(const std::string &fid, const std::string &lid,
                                           const std::string &result_json) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    const auto run = runs_.find(fid);
    if (run == runs_.end()) return LockAnswer::run_not_here;
    const auto open = run->second->locks.find(lid);
    // Said so even once the flow exited (its lease may not be stored yet): the answer was taken.
    if (open != run->second->locks.end() && open->second.answered)
      return LockAnswer::already_answered;
    if (run->second->phase == Run::Phase::ending) return LockAnswer::run_not_here;
    if (open == run->second->locks.end()) return early_answer(*run->second, lid, result_json);
    open->second.answered = true;
    run->second->answers_in.push_back(Run::Answer{lid, open->second.name, result_json});
  }
  wake();
  return LockAnswer::answered;
}

// Stores the lease of each answer taken for `run` and passes the answer to the flow (an answer
// taken just as the flow exited is stored all the same: the API said it was taken); ends the
// run when a lock passed its expiry unanswered, as kodosumi's TimeoutError does.
void Executor::take_answers(Run &run) {
  std::vector<Run::Answer> answers;
  std::string expired;
  {
    std::lock_guard<std::mutex> lock(mu_);
    answers.swap(run.answers_in);
    const TimePoint now = Clock::now();
    run.next_lock_expiry = TimePoint::max();
    for (auto it = run.locks.begin(); it != run.locks.end();) {
      // A flow that exited already is not stopped for its lock: its own outcome stands.
      if (!it->second.answered && !run.exited && now >= it->second.expires_at && expired.empty()) {
        expired = "lock " + it->first + " (" + quote_excerpt(it->second.name) + ") expired at " +
                  it->second.expires_text + " unanswered";
        it = run.locks.erase(it);
        continue;
      }
      if (!it->second.answered)
        run.next_lock_expiry = std::min(run.next_lock_expiry, it->second.expires_at);
      ++it;
    }
  }
  for (const auto &a : answers) {
    emit(run, "lease", lease_payload(a.name, a.lid, a.result_json));
    run.answers_out += answer_line(a.name, a.lid, a.result_json);
  }
  flush_answers(run);
  if (!expired.empty()) terminate(run, expired, config_.kill_grace_s);
}

// Writes what the flow has room for; the rest waits for POLLOUT.
void Executor::flush_answers(Run &run) {
  while (!run.answers_out.empty() && run.answers.fd >= 0) {
    const ssize_t n = ::write(run.answers.fd, run.answers_out.data(), run.answers_out.size());
    if (n > 0) {
      run.answers_out.erase(0, static_cast<size_t>(n));
    } else if (n < 0 && errno == EAGAIN) {
      return;
    } else if (n < 0 && errno != EINTR) {
      // The flow closed its end (EPIPE): it reads no answers, and the leases are stored.
      watch_->forget(run.answers.fd);
      ::close(run.answers.fd);
      run.answers.fd = -1;
      run.answers_out.clear();
    }
  }
}
}  // namespace kodo
