// executor_run.hpp: what executor*.cpp share and nobody else sees: a run, its pipes, the
// supervisor's timing constants and small helpers. One executor split along its seams:
//   executor.cpp         launch, cancel, pause, shutdown and the supervisor's loop
//   executor_child.cpp   starting a flow, reading its pipes, timers, reaping, the outcome
//   executor_locks.cpp   a flow's locks and the answers written back to it
//   executor_publish.cpp handing events to the sink, and what happens when it refuses
// Ownership rules are at the top of executor.cpp.
#ifndef KODO_CORE_EXECUTOR_RUN_HPP
#define KODO_CORE_EXECUTOR_RUN_HPP

#include "core/executor.hpp"
#include "core/run_cgroup.hpp"

#include <kodo/host/log.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include <unistd.h>

namespace kodo {
namespace executor_detail {

using Clock = std::chrono::steady_clock;
using TimePoint = Clock::time_point;

inline constexpr size_t kReadChunk =
    size_t{64} * 1024;                           // per descriptor per poll round: keeps rounds fair
inline constexpr double kDrainGraceS = 1.0;      // how long an exited child's pipes may stay open
inline constexpr double kLeftoversWaitS = 10.0;  // for SIGKILLed processes to leave a run's cgroup
inline constexpr int kBackoffFirstMs = 50;
inline constexpr int kBackoffMaxMs = 1000;
inline constexpr int kChildEventsFd = 3;
inline constexpr int kChildAnswersFd = 4;  // the highest descriptor a child is given
inline constexpr int kTickMs = 50;         // exit polling when pidfd_open is unavailable

inline TimePoint after(double seconds) {
  seconds = std::clamp(seconds, 0.0, 1e7);
  return Clock::now() +
         std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
}

inline double seconds_between(TimePoint from, TimePoint to) {
  return std::chrono::duration<double>(to - from).count();
}

inline std::string errno_text(int e) {
  return std::generic_category().message(e);
}

inline std::string format_seconds(double s) {
  char buf[32];
  const int n = std::snprintf(buf, sizeof buf, "%g", s);
  return std::string(buf, n > 0 ? std::min(static_cast<size_t>(n), sizeof buf - 1) : 0);
}

// Each line at its own level: a sink taking events again is news, not an error.
inline void log_executor(int32_t level, const std::string &message) {
  log_line(level, "executor: " + message);
}

// A descriptor closed when it goes out of scope.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd &&other) noexcept : fd_(other.release()) {}
  Fd &operator=(Fd &&other) noexcept {
    if (this != &other) reset(other.release());
    return *this;
  }
  Fd(const Fd &) = delete;
  Fd &operator=(const Fd &) = delete;
  ~Fd() { reset(); }
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }
  void reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

}  // namespace executor_detail

using executor_detail::Fd;
using executor_detail::kBackoffFirstMs;
using executor_detail::TimePoint;

struct Executor::Pipe {
  explicit Pipe(const char *pipe_name) : name(pipe_name) {}
  const char *name;         // "stdout", "stderr", "events" or "answers"
  int fd = -1;              // our end (read; write for answers); -1 once closed
  std::string line;         // the current line so far, at most max_event_bytes
  bool discarding = false;  // the current line is too long; skip to its newline
  size_t discarded = 0;     // bytes of that line so far
  uint64_t line_no = 0;
};

struct Executor::Run {
  enum class Phase { queued, running, ending };

  Run() = default;
  // Owns its pipes' descriptors (closed by the destructor) and is shared by pointer only.
  Run(const Run &) = delete;
  Run &operator=(const Run &) = delete;

  std::string fid;
  std::string username;
  const FlowSpec *flow = nullptr;
  std::string inputs;
  std::string token;  // the continuation's KODO_JWT, if it brought one

  // Guarded by mu_.
  Phase phase = Phase::queued;
  bool holds_slot = false;
  bool cancel_requested = false;
  std::string cancel_reason;
  double cancel_grace_s = 0;
  // Locks by lid (answered ones stay, so a second answer is told so), and answers taken for
  // them, not yet delivered.
  struct OpenLock {
    std::string name;
    TimePoint expires_at;
    std::string expires_text;  // the stored expiry, for the message if it passes
    bool answered = false;
  };
  struct Answer {
    std::string lid, name, result_json;
  };
  std::map<std::string, OpenLock> locks;
  std::vector<Answer> answers_in;
  // A resumed run (Continuation::replay): the stored locks (set before the run is shared, then
  // only read), and answers posted for open ones the flow has not asked for again yet (by lid).
  std::vector<StoredLock> replay;
  std::map<std::string, std::string> early_answers;
  bool pause_wanted = false;
  std::string pause_reason;

  // The supervisor's alone from here on.
  bool cancel_seen = false;
  bool paused = false;  // its process group was sent SIGSTOP (and no SIGCONT since)
  TimePoint paused_at;  // when, so that the time limit can skip the paused time
  int64_t next_seq = 0;
  size_t replayed = 0;          // the locks of `replay` the flow has asked for again
  bool replay_refused = false;  // it asked otherwise: stopped, its output still dropped
  bool replaying() const { return replay_refused || replayed < replay.size(); }
  pid_t pid = -1;
  Fd pidfd;
  bool exit_ready = false;  // the pidfd said the child exited
  Pipe out{"stdout"}, err{"stderr"}, events{"events"};
  Pipe answers{"answers"};  // to the flow: answer lines, written as it reads them
  std::string answers_out;  // answer lines not yet written
  TimePoint next_lock_expiry = TimePoint::max();
  bool started = false;
  bool exited = false;
  int wait_status = 0;
  bool status_lost = false;  // someone else reaped the child (SIGCHLD ignored)
  bool final_seen = false;
  std::string stop_reason;  // why the run is being stopped, or why it failed to start
  bool has_timeout = false;
  TimePoint timeout_at;
  bool term_sent = false, kill_sent = false;
  TimePoint kill_at;
  TimePoint drain_until;
  bool drain_killed = false;
  std::unique_ptr<RunCgroup> cgroup;  // null: contained by its process group only
  bool leftovers_killed = false;      // what the child left behind was sent SIGKILL
  TimePoint leftovers_until;          // how long to wait for them to go
  bool outcome_emitted = false;

  std::vector<Event> pending;  // made, not yet taken by the sink: always a suffix by seq
  bool failing = false;        // the sink refused this run's events; retrying on its own
  TimePoint failing_since, next_attempt;
  int backoff_ms = kBackoffFirstMs;
  bool transport_failed = false;  // gave up on refused events; only the outcome remains

  Pipe *pipes[3] = {&out, &err, &events};
  bool pipes_open() const { return out.fd >= 0 || err.fd >= 0 || events.fd >= 0; }
  // Reading stops while the sink refuses, so unpublished events cannot pile up; it resumes
  // (discarding) once the run is given up, so the dying child never blocks on a full pipe.
  bool reading_allowed() const { return !failing || transport_failed; }
  ~Run() {
    for (Pipe *p : pipes)
      if (p->fd >= 0) ::close(p->fd);
    if (answers.fd >= 0) ::close(answers.fd);
  }
};

}  // namespace kodo

#endif  // KODO_CORE_EXECUTOR_RUN_HPP
