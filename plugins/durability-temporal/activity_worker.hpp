// activity_worker.hpp: runs the activity execute_agent. It polls the task queue, runs each job
// through a JobRunner on a thread of its own (in the host, the callback that runs the flow with
// the executor), heartbeats every job's latest progress, and tells the job about pause, resume
// and cancel while it runs.
//
// How a running job learns of signals: Temporal has no way for a workflow to signal an activity
// except cancellation. So each running job has a watcher that long polls the workflow's history
// (GetWorkflowExecutionHistory, wait_new_event) and folds it with AgentWorkflow's own fold():
// pause and resume take effect as soon as the signal is in the history, with no workflow worker
// needed; the job starts only after the watcher's first read, so a signal sent before the
// attempt started holds it from its first step. Cancel
// arrives the same way, and also through the heartbeat's cancel_requested (the workflow's
// RequestCancelActivityTask); a heartbeat the server refuses as NOT_FOUND (the attempt timed out
// and was retried elsewhere, or the workflow ended) cancels the job too, so no orphan goes on.
// A retried attempt sees attempt + 1 and the previous attempt's last heartbeat details.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>

#include "payload.hpp"
#include "temporal_client.hpp"
#include "workflow_worker.hpp"

namespace kodo::temporal {

// What the signals say, as of now.
struct Control {
  bool paused = false;
  bool cancelled = false;
  std::string cancel_reason;  // who or what cancelled
  bool operator==(const Control &other) const {
    return paused == other.paused && cancelled == other.cancelled;
  }
};

// One attempt of a job, as its runner sees it. Thread-safe.
class Job {
 public:
  using Listener = std::function<void(const Control &)>;

  Job(JobInput input, int attempt, std::string last_heartbeat, std::string workflow_id,
      std::string run_id);

  const JobInput &input() const { return input_; }
  int attempt() const { return attempt_; }  // 1 for the first attempt
  // The last heartbeat details (JSON text) of an earlier attempt; empty if none.
  const std::string &last_heartbeat() const { return last_heartbeat_; }
  const std::string &workflow_id() const { return workflow_id_; }
  const std::string &run_id() const { return run_id_; }

  // Progress (JSON text) that the next heartbeat carries.
  void heartbeat(std::string details_json);
  std::string progress() const;

  Control control() const;
  // Waits until the control differs from `seen` or `timeout` passes; returns the current one.
  Control wait_for_change(const Control &seen, std::chrono::milliseconds timeout) const;
  // Calls `listener` at once with the current control and then on every change, from a worker
  // thread. Set it once, before the job's work begins.
  void on_control(Listener listener);

  // The worker's side.
  void set_paused(bool paused);
  void cancel(const std::string &reason);

 private:
  void changed(std::unique_lock<std::mutex> &lock);

  const JobInput input_;
  const int attempt_;
  const std::string last_heartbeat_;
  const std::string workflow_id_;
  const std::string run_id_;
  mutable std::mutex mutex_;
  mutable std::condition_variable cv_;
  std::string progress_;
  Control control_;
  Listener listener_;
};

// Runs one attempt. Returns the job's result; a job that ends because it was cancelled returns
// status "error" with the reason. An exception fails the attempt (Temporal retries it), except
// FinalJobError, which fails the job for good.
using JobRunner = std::function<JobResult(Job &)>;

class FinalJobError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct ActivityWorkerOptions {
  std::string task_queue = "kodosumi-agents";
  int max_concurrent = 100;
  double heartbeat_interval = 5;  // seconds; keep it well under the heartbeat timeout
};

class ActivityWorker {
 public:
  ActivityWorker(TemporalClient &client, ActivityWorkerOptions options, JobRunner runner,
                 ErrorSink errors = {});
  ~ActivityWorker();
  ActivityWorker(const ActivityWorker &) = delete;
  ActivityWorker &operator=(const ActivityWorker &) = delete;

  void start();
  // Stops polling and hands the running attempts back: each job is cancelled with the reason
  // kStopping, and its attempt reported failed (retryable), so Temporal runs it again on
  // another worker (as attempt + 1, counted against maximum_attempts). Returns once every
  // job has ended and reported; a paused job does not hold it up.
  void stop();
  static constexpr const char *kStopping = "the worker is stopping: another attempt takes over";
  int running() const;
  std::uint64_t jobs_done() const { return done_.load(); }

 private:
  struct Attempt;
  void poll_loop();
  void heartbeat_loop();
  void run(Attempt &attempt);
  void watch(Attempt &attempt);
  void reap(bool all);
  void report(const std::string &message);

  TemporalClient &client_;
  ActivityWorkerOptions options_;
  JobRunner runner_;
  ErrorSink errors_;
  Canceller poll_canceller_;
  std::thread poller_;
  std::thread heartbeater_;
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::list<std::shared_ptr<Attempt>> attempts_;
  std::atomic<std::uint64_t> done_{0};
};

}  // namespace kodo::temporal
