// executor.hpp: runs flows as child processes and turns what they write into events.
//
// Per run (seq from 0, assigned here, strictly increasing per fid):
//   launch():        status "starting", inputs (the inputs JSON), meta   (one publish call)
//   when a slot is free and the child started:   status "running"
//   while it runs:   each stdout/stderr line -> stdout/stderr event; each line on the events
//                    descriptor -> the flow's own event (see event_line.hpp); a bad line ->
//                    an error event describing it (the run goes on)
//   at the end:      status "finished" when the child exited 0 having emitted `final`;
//                    otherwise an error event with the reason, then status "error".
//
// The child: argv[0] looked up in the host's PATH (a relative path with '/' is taken from
// the flow's cwd); stdin = the inputs JSON (a memfd, so a child that never reads it cannot
// block us); stdout/stderr pipes; the events pipe's write end at descriptor 3, named by
// KODO_EVENTS_FD; the answers pipe's read end at descriptor 4, named by KODO_ANSWERS_FD, for
// the answers to its locks (locks.hpp). Its environment is an allowlist (flow_env.hpp): never the
// host's KODO_* settings or secrets, unless the flow's config names one.
//
// Containment: when a run ends, for whatever reason, every process it started is gone.
//   - Where a writable cgroup v2 with cgroup.kill exists (Linux 5.14+, root or a delegated
//     subtree), each run starts inside a cgroup of its own (run_cgroup.hpp, flow_spawn.hpp).
//     Nothing the flow does (setsid, double fork, closing its pipes, ignoring signals) takes a
//     process out of it. A run ends only once its cgroup is empty: after the child exited and
//     its pipes closed (or the drain grace passed), whatever is left gets SIGKILL and the
//     outcome waits (up to 10 s, then a log line) until the cgroup is empty. A guard process
//     empties every run's cgroup when the host dies, SIGKILL included.
//   - Otherwise (ExecutorConfig::cgroups false, or the machine does not allow it: the reason
//     is in containment()), a run is its process group. The limit: a process that leaves the
//     group (setsid, setpgid) is out of reach and outlives its run; a host SIGKILL ends the
//     direct child (PR_SET_PDEATHSIG) but not the rest of its group.
// Either way, timeout, cancel and shutdown send SIGTERM to the group, then SIGKILL to the
// whole run after the grace; a child that exited while its descendants still hold the pipes
// a second later has them killed.
//
// One supervisor thread multiplexes every child with poll() and publishes each round's
// events of all runs in one EventSink::publish call. When publish throws, each affected run
// is retried on its own (so one run's refused events cannot stall the others) for
// publish_retry_ms; a run still refused after that is stopped, its refused events are
// counted in events_rejected and logged to stderr, and its error + status "error" are
// retried until taken (during shutdown: for one more publish_retry_ms, then dropped with a
// log line). Refused events were not taken (EventSink's contract), so their seqs are reused
// and an execution's stored seqs stay contiguous. Output of a stopped-for-refusal run is read
// and discarded until it exits.
//
// Threading: every public member may be called from any thread at any time.
#pragma once

#include "core/event.hpp"
#include "core/locks.hpp"
#include "core/run_cgroup.hpp"

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace kodo {

class EpollSet;

struct FlowSpec {
  std::string name;
  std::vector<std::string> argv;  // argv[0]: the executable (PATH lookup)
  std::vector<std::string> env;   // extra "K=V"
  std::string cwd;                // empty: the host's
  double timeout_s = 0;           // 0: none
  std::string description;
};

struct ExecutorConfig {
  size_t max_running = 16;
  size_t max_queued = 10000;
  size_t max_event_bytes = 1 << 20;  // longest line taken from a child, without its newline
  double kill_grace_s = 5;
  int publish_retry_ms = 10000;
  std::string app_url;  // into each run's meta
  bool cgroups = true;  // a cgroup v2 per run where the machine allows; false: groups only
  // When set, each run gets a token (KODO_JWT) acting as its user on its own execution for
  // `lifetime_s`, as kodosumi's runner hands flows the launching user's jwt.
  std::function<std::string(const std::string &username, const std::string &fid, double lifetime_s)>
      run_token;
};

// A run that continues an execution another process began (a durable job's next attempt):
// it keeps the execution's fid and its events follow the ones already made, from first_seq.
// `note`, when not empty, is the run's first event (kind "debug"): why this run exists.
//
// With `replay` (a run resumed after its host died while it awaited a lock, lock_resume.hpp):
// the flow runs again from its start and the events it stored before are not made again:
// launch publishes only the note (no status starting, inputs or meta), and what the flow
// writes is read and dropped until it has asked again for every lock in `replay`. The n-th
// lock it asks gets the n-th stored lock's lid (its name must match, or the run ends with an
// error: the flow is not deterministic); an answered one gets its stored answer at once, an
// open one waits for POST /lock as before, under its stored expiry.
struct Continuation {
  std::string fid;
  int64_t first_seq = 0;
  std::string note;
  std::vector<StoredLock> replay;
  // The flow's KODO_JWT when its launcher made it (a durable job's `jwt`: the serving host has
  // the accounts, a worker has none); empty: ExecutorConfig::run_token's, if any.
  std::string token;
};

struct ExecutorStats {
  uint64_t launched = 0;         // launch() calls that returned a fid
  uint64_t finished = 0;         // runs whose status "finished" was published
  uint64_t failed = 0;           // runs whose status "error" was published
  uint64_t events_emitted = 0;   // events the sink took
  uint64_t events_rejected = 0;  // events given up on after the sink refused them
  size_t running = 0;            // runs holding a slot (child started, not yet drained)
  size_t queued = 0;             // runs waiting for a slot
};

class Executor {
 public:
  // Throws kodo::Error(KODO_ERR_INVALID_ARGUMENT) for a flow without name or argv, a
  // duplicate name, an env entry without '=', or max_running 0.
  Executor(ExecutorConfig config, std::vector<FlowSpec> flows, EventSink &sink);
  ~Executor();  // shutdown(config.kill_grace_s)
  Executor(const Executor &) = delete;
  Executor &operator=(const Executor &) = delete;

  // Starts a run and returns its new fid once status starting, inputs and meta are published.
  // Throws kodo::Error: KODO_ERR_NOT_FOUND for an unknown flow, KODO_ERR_INVALID_ARGUMENT for
  // a bad username or inputs that are not a JSON object, KODO_ERR_UNAVAILABLE when max_queued
  // runs already wait or the executor is shutting down, or the sink's own error when it
  // refused those first events (nothing is started then; no retry here, the caller decides).
  // With `continuation`, the run takes its fid and seqs (and refuses a fid already active).
  std::string launch(const std::string &flow, const std::string &username,
                     const std::string &inputs_json, const Continuation *continuation = nullptr);

  // Stops (SIGSTOP) or continues (SIGCONT) a running run's process group, each change
  // recorded as status "paused" / "running" with `reason` in a debug event. A cancel or
  // timeout continues a paused run so that it can take its SIGTERM. A queued run is stopped
  // as soon as it starts. False when the fid is not active or already in that state. Applied
  // on the supervisor thread.
  bool pause(const std::string &fid, bool paused, const std::string &reason);

  // Stops a queued or running run; it ends with error "cancelled: <reason>" (a queued run
  // never gets status running). False when the fid is not queued or running (unknown,
  // already exited, or already cancelled). The stop itself happens on the supervisor thread.
  bool cancel(const std::string &fid, const std::string &reason);

  // Answers the open lock `lid` of the running run `fid` with `result_json` (valid JSON): the
  // supervisor stores its lease event and writes the answer to the flow. Anything else says
  // why not; the lock's stored events tell the rest (answered before, or the run ended).
  enum class LockAnswer { answered, already_answered, run_not_here, no_such_open_lock };
  LockAnswer answer_lock(const std::string &fid, const std::string &lid,
                         const std::string &result_json);

  // True from launch until the run's last event is published.
  bool is_active(const std::string &fid) const;
  // Waits until !is_active(fid); false when timeout_s ran out first.
  bool wait_inactive(const std::string &fid, double timeout_s) const;

  const std::vector<FlowSpec> &flows() const;
  // How runs are contained: "a cgroup v2 per run under PATH" or "process groups only (why)".
  const std::string &containment() const;
  ExecutorStats stats() const;

  // Refuses new launches, cancels every run ("host shutting down") with grace_s before
  // SIGKILL, waits for all runs to publish their last event, stops the supervisor.
  // Idempotent; concurrent callers all wait.
  void shutdown(double grace_s);

 private:
  struct Run;
  struct Pipe;
  using TimePoint = std::chrono::steady_clock::time_point;

  bool request_cancel_locked(Run &run, const std::string &reason, double grace_s);
  void supervise();
  void wake();
  void emit(Run &run, const std::string &kind, std::string payload);
  void start_run(Run &run);
  void read_pipe(Run &run, Pipe &pipe);
  void end_line(Run &run, Pipe &pipe);
  void close_pipe(Run &run, Pipe &pipe);
  void forget_fds(Run &run);
  void reap(Run &run);
  void terminate(Run &run, const std::string &reason, double grace_s);
  void kill_all(Run &run);
  bool leftovers_gone(Run &run);
  void check_timers(Run &run);
  void emit_outcome(Run &run);
  void open_lock(Run &run, const std::string &payload);
  void replay_lock(Run &run, const std::string &payload);
  LockAnswer early_answer(Run &run, const std::string &lid, const std::string &result_json);
  void replayed_line(Run &run, Pipe &pipe, const std::string &line);
  void take_answers(Run &run);
  void flush_answers(Run &run);
  void publish_round(std::vector<std::shared_ptr<Run>> &live);
  bool try_publish(const std::vector<Event> &events, std::string *error);
  void publish_failed(Run &run, const std::string &error);
  void transport_refused(Run &run, const std::string &error);

  const ExecutorConfig config_;
  const std::vector<FlowSpec> flows_;
  std::map<std::string, size_t> flow_index_;
  std::vector<std::string> host_env_;    // "K=V", read once at construction
  std::string host_path_;                // its PATH, where argv[0] is looked up
  std::unique_ptr<RunCgroups> cgroups_;  // null: process groups only
  std::string containment_;              // how runs are contained, for the log
  EventSink &sink_;

  // Shared with the supervisor; guarded by mu_.
  mutable std::mutex mu_;
  mutable std::condition_variable changed_;             // a run ended, a launch finished reserving
  std::map<std::string, std::shared_ptr<Run>> runs_;    // active runs by fid
  std::deque<std::shared_ptr<Run>> queue_;              // waiting for a slot, FIFO
  std::vector<std::shared_ptr<Run>> cancelled_queued_;  // left the queue; the supervisor ends them
  size_t reserving_ = 0;  // launches still publishing their first events
  size_t slots_used_ = 0;
  bool stopping_ = false;  // shutdown began: no launches, everything cancelled
  double stop_grace_s_ = 0;
  TimePoint stop_at_;
  bool quit_ = false;  // the supervisor returns
  ExecutorStats stats_;

  // The supervisor's copies of stopping_ / stop_at_, taken each round.
  bool stop_seen_ = false;
  TimePoint stop_at_seen_;

  std::mutex shutdown_mu_;
  bool joined_ = false;
  int wake_read_ = -1, wake_write_ = -1;
  std::unique_ptr<EpollSet> watch_;  // the supervisor's; every descriptor it waits on
  std::thread supervisor_;
};

}  // namespace kodo
