// workflow_worker.hpp: polls the task queue's workflow tasks and answers them with AgentWorkflow
// (agent_workflow.hpp): commands for ordinary tasks, answers for queries. Each task carries the
// whole history (no sticky queue), read on through GetWorkflowExecutionHistory when it is paged.
#pragma once

#include <atomic>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "agent_workflow.hpp"
#include "temporal_client.hpp"

namespace kodo::temporal {

struct WorkflowWorkerOptions {
  std::string task_queue = "kodosumi-agents";
  int pollers = 2;
  ActivityOptions activity;
};

// Where a worker reports what it could not do (a server away, a task it failed); the worker
// goes on. Called from worker threads.
using ErrorSink = std::function<void(const std::string &message)>;

class WorkflowWorker {
 public:
  WorkflowWorker(TemporalClient &client, WorkflowWorkerOptions options, ErrorSink errors = {});
  ~WorkflowWorker();
  WorkflowWorker(const WorkflowWorker &) = delete;
  WorkflowWorker &operator=(const WorkflowWorker &) = delete;

  void start();
  // Ends the polls in flight and joins the pollers.
  void stop();
  std::uint64_t tasks_completed() const { return completed_.load(); }

 private:
  void poll_loop();
  void handle(wf::PollWorkflowTaskQueueResponse &task);
  void report(const std::string &message);

  TemporalClient &client_;
  WorkflowWorkerOptions options_;
  ErrorSink errors_;
  Canceller canceller_;
  std::vector<std::thread> pollers_;
  std::atomic<std::uint64_t> completed_{0};
};

}  // namespace kodo::temporal
