// executor_locks.cpp: a flow's locks (locks.hpp): the request stored as kodosumi's lock
// event, answers taken from the API, their leases stored and the answers written to the flow.
#include "core/epoll_set.hpp"
#include "core/executor_run.hpp"

#include "core/event_line.hpp"
#include "core/locks.hpp"
#include "core/write_all.hpp"

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

Executor::LockAnswer Executor::answer_lock(const std::string &fid, const std::string &lid,
                                           const std::string &result_json) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    const auto run = runs_.find(fid);
    if (run == runs_.end() || run->second->phase != Run::Phase::running)
      return LockAnswer::run_not_here;
    const auto open = run->second->locks.find(lid);
    if (open == run->second->locks.end()) return LockAnswer::no_such_open_lock;
    if (open->second.answered) return LockAnswer::already_answered;
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
