#include "activity_worker.hpp"

#include <future>
#include <iostream>

#include "agent_workflow.hpp"

namespace kodo::temporal {

Job::Job(JobInput input, int attempt, std::string last_heartbeat, std::string workflow_id,
         std::string run_id)
    : input_(std::move(input)),
      attempt_(attempt),
      last_heartbeat_(std::move(last_heartbeat)),
      workflow_id_(std::move(workflow_id)),
      run_id_(std::move(run_id)),
      progress_(last_heartbeat_) {}

void Job::heartbeat(std::string details_json) {
  std::lock_guard<std::mutex> lock(mutex_);
  progress_ = std::move(details_json);
}

std::string Job::progress() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return progress_;
}

Control Job::control() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return control_;
}

Control Job::wait_for_change(const Control &seen, std::chrono::milliseconds timeout) const {
  std::unique_lock<std::mutex> lock(mutex_);
  cv_.wait_for(lock, timeout, [&] { return !(control_ == seen); });
  return control_;
}

void Job::on_control(Listener listener) {
  std::unique_lock<std::mutex> lock(mutex_);
  listener_ = std::move(listener);
  changed(lock);
}

void Job::set_paused(bool paused) {
  std::unique_lock<std::mutex> lock(mutex_);
  if (control_.cancelled || control_.paused == paused) return;
  control_.paused = paused;
  changed(lock);
}

void Job::cancel(const std::string &reason) {
  std::unique_lock<std::mutex> lock(mutex_);
  if (control_.cancelled) return;
  control_.cancelled = true;
  control_.paused = false;
  control_.cancel_reason = reason;
  changed(lock);
}

// Wakes waiters and calls the listener outside the lock (it may call back into the job).
void Job::changed(std::unique_lock<std::mutex> &lock) {
  cv_.notify_all();
  if (!listener_) return;
  Listener listener = listener_;
  Control now = control_;
  lock.unlock();
  listener(now);
}

struct ActivityWorker::Attempt {
  std::string task_token;
  std::unique_ptr<Job> job;
  Canceller watch_canceller;
  std::thread thread;
  std::atomic<bool> finished{false};
  std::atomic<bool> cancel_requested{false};
  // Set once the watcher has folded the history as it stood (or could not read it), so the
  // job starts with the signals sent before its attempt began.
  std::promise<void> primed;
  bool primed_set = false;  // the watcher's thread only  // by the server: it takes "canceled" now
};

ActivityWorker::ActivityWorker(TemporalClient &client, ActivityWorkerOptions options,
                               JobRunner runner, ErrorSink errors)
    : client_(client),
      options_(std::move(options)),
      runner_(std::move(runner)),
      errors_(std::move(errors)) {}

ActivityWorker::~ActivityWorker() {
  stop();
}

void ActivityWorker::start() {
  poller_ = std::thread([this] { poll_loop(); });
  heartbeater_ = std::thread([this] { heartbeat_loop(); });
}

void ActivityWorker::stop() {
  poll_canceller_.cancel();
  {
    // A poller waiting for a free slot wakes up too.
    std::lock_guard<std::mutex> lock(mutex_);
    cv_.notify_all();
  }
  if (poller_.joinable()) poller_.join();
  std::list<std::shared_ptr<Attempt>> running;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (const auto &attempt : attempts_)
      if (!attempt->finished) running.push_back(attempt);
  }
  for (const auto &attempt : running) attempt->job->cancel(kStopping);
  reap(true);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (heartbeater_.joinable()) heartbeater_.join();
}

int ActivityWorker::running() const {
  std::lock_guard<std::mutex> lock(mutex_);
  int count = 0;
  for (const auto &attempt : attempts_) count += attempt->finished ? 0 : 1;
  return count;
}

void ActivityWorker::report(const std::string &message) {
  if (errors_)
    errors_(message);
  else
    std::cerr << "kodo temporal activity worker: " << message << "\n";
}

// Joins the attempts that ended (all of them, waiting, when `all`).
void ActivityWorker::reap(bool all) {
  std::list<std::shared_ptr<Attempt>> ended;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto it = attempts_.begin(); it != attempts_.end();) {
      if (all || (*it)->finished) {
        ended.push_back(*it);
        it = attempts_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto &attempt : ended) attempt->thread.join();
}

void ActivityWorker::poll_loop() {
  while (!poll_canceller_.cancelled()) {
    reap(false);
    {
      // At most max_concurrent attempts at once: no poll while the worker is full.
      std::unique_lock<std::mutex> lock(mutex_);
      cv_.wait(lock, [&] {
        int active = 0;
        for (const auto &attempt : attempts_) active += attempt->finished ? 0 : 1;
        return active < options_.max_concurrent || poll_canceller_.cancelled();
      });
    }
    wf::PollActivityTaskQueueResponse task;
    try {
      if (!client_.poll_activity_task(options_.task_queue, task, &poll_canceller_)) continue;
    } catch (const TemporalError &e) {
      report(e.what());
      continue;
    }
    auto attempt = std::make_shared<Attempt>();
    attempt->task_token = task.task_token();
    const std::string workflow_id = task.workflow_execution().workflow_id();
    try {
      if (task.activity_type().name() != kActivityType)
        throw std::runtime_error("this worker runs only " + std::string(kActivityType) + ", not " +
                                 task.activity_type().name());
      if (task.input().payloads_size() == 0) throw std::runtime_error("job input: no payload");
      JobInput input = job_input_from_json(payload_json(task.input().payloads(0), "job input"));
      std::string last_heartbeat;
      if (task.heartbeat_details().payloads_size() > 0)
        last_heartbeat = payload_json(task.heartbeat_details().payloads(0), "heartbeat details");
      attempt->job =
          std::make_unique<Job>(std::move(input), task.attempt(), std::move(last_heartbeat),
                                workflow_id, task.workflow_execution().run_id());
    } catch (const std::exception &e) {
      // Bad input does not get better on a retry.
      try {
        client_.respond_activity_failed(attempt->task_token, e.what(), /*final=*/true);
      } catch (const TemporalError &error) {
        report(error.what());
      }
      continue;
    }
    std::lock_guard<std::mutex> lock(mutex_);
    attempts_.push_back(attempt);
    attempt->thread = std::thread([this, attempt] {
      run(*attempt);
      attempt->finished = true;
      std::lock_guard<std::mutex> done_lock(mutex_);
      cv_.notify_all();
    });
  }
}

void ActivityWorker::run(Attempt &attempt) {
  Job &job = *attempt.job;
  std::thread watcher([this, &attempt] { watch(attempt); });
  attempt.primed.get_future().wait();
  JobResult result;
  std::string failure;
  bool final = false;
  try {
    result = runner_(job);
    if (result.fid.empty()) result.fid = job.input().fid;
  } catch (const FinalJobError &e) {
    failure = e.what();
    final = true;
  } catch (const std::exception &e) {
    failure = e.what();
  } catch (...) {
    failure = "the job's runner threw a non-standard exception";
  }
  attempt.watch_canceller.cancel();
  watcher.join();

  const Control control = job.control();
  try {
    if (control.cancelled && control.cancel_reason == kStopping) {
      client_.respond_activity_failed(attempt.task_token, kStopping);
    } else if (control.cancelled) {
      if (result.status.empty() || result.status == "finished") {
        result.status = "error";
        result.error = "cancelled by " + control.cancel_reason;
      }
      // The watcher may see a cancel signal before the workflow's RequestCancelActivityTask
      // reaches this attempt, and Temporal refuses "canceled" from an attempt not asked to
      // cancel: then the cancelled result goes back as the attempt's result (AgentWorkflow
      // ends cancelled either way).
      if (!attempt.cancel_requested)
        attempt.cancel_requested =
            client_.heartbeat(attempt.task_token, job.progress()).cancel_requested();
      if (attempt.cancel_requested)
        client_.respond_activity_canceled(attempt.task_token, to_json(result));
      else
        client_.respond_activity_completed(attempt.task_token, to_json(result));
    } else if (!failure.empty()) {
      client_.respond_activity_failed(attempt.task_token, failure, final);
    } else {
      client_.respond_activity_completed(attempt.task_token, to_json(result));
    }
  } catch (const TemporalError &e) {
    // NOT_FOUND: the attempt timed out meanwhile and the server has moved on.
    report("job " + job.workflow_id() + " attempt " + std::to_string(job.attempt()) + ": " +
           e.what());
  }
  ++done_;
}

void ActivityWorker::watch(Attempt &attempt) {
  Job &job = *attempt.job;
  wf::GetWorkflowExecutionHistoryRequest request;
  request.set_namespace_(client_.options().namespace_name);
  request.mutable_execution()->set_workflow_id(job.workflow_id());
  request.mutable_execution()->set_run_id(job.run_id());
  request.set_wait_new_event(true);
  WorkflowState state;
  auto prime = [&attempt] {
    if (attempt.primed_set) return;
    attempt.primed_set = true;
    attempt.primed.set_value();
  };
  while (!attempt.watch_canceller.cancelled()) {
    wf::GetWorkflowExecutionHistoryResponse page;
    try {
      if (!client_.history_page(request, page, &attempt.watch_canceller)) continue;
    } catch (const TemporalError &e) {
      prime();  // the job runs without the signals; they reach it once the server answers
      report("watching " + job.workflow_id() + ": " + e.what());
      continue;
    }
    for (const auto &event : page.history().events()) apply(state, event);
    if (state.cancel_requested)
      job.cancel(state.cancel_reason);
    else if (state.closed)
      job.cancel("the workflow ended");
    else
      job.set_paused(state.paused);
    prime();  // the first page answers at once with the history as it stands
    if (page.next_page_token().empty()) break;  // the workflow is closed: nothing more comes
    request.set_next_page_token(page.next_page_token());
  }
  prime();
}

void ActivityWorker::heartbeat_loop() {
  const auto interval = std::chrono::duration<double>(options_.heartbeat_interval);
  std::unique_lock<std::mutex> lock(mutex_);
  while (!stopping_) {
    cv_.wait_for(lock, interval, [&] { return stopping_; });
    if (stopping_) break;
    std::list<std::shared_ptr<Attempt>> live;
    for (const auto &attempt : attempts_)
      if (!attempt->finished) live.push_back(attempt);
    lock.unlock();
    for (const auto &attempt : live) {
      Job &job = *attempt->job;
      try {
        auto response = client_.heartbeat(attempt->task_token, job.progress());
        if (response.cancel_requested()) {
          attempt->cancel_requested = true;
          job.cancel("a cancel request through Temporal");
        }
      } catch (const TemporalError &e) {
        if (e.not_found())
          job.cancel("Temporal no longer knows this attempt (timed out, or the workflow ended)");
        else
          report("heartbeat of " + job.workflow_id() + ": " + e.what());
      }
    }
    lock.lock();
  }
}

}  // namespace kodo::temporal
