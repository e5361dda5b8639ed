// A worker process for the tests that kill one: the workflow and activity workers of the
// plugin running step_job.hpp's job, printing each line of its log on stdout.
//   temporal_test_worker ADDRESS TASK_QUEUE HEARTBEAT_INTERVAL_S HEARTBEAT_TIMEOUT_S
#include <iostream>
#include <thread>

#include "step_job.hpp"

int main(int argc, char **argv) {
  if (argc != 5) {
    std::cerr
        << "usage: temporal_test_worker ADDRESS TASK_QUEUE HEARTBEAT_INTERVAL HEARTBEAT_TIMEOUT\n";
    return 2;
  }
  using namespace kodo::temporal;
  ClientOptions client_options;
  client_options.address = argv[1];
  TemporalClient client(client_options);
  WorkflowWorkerOptions workflow_options;
  workflow_options.task_queue = argv[2];
  workflow_options.activity.heartbeat_timeout = std::stod(argv[4]);
  workflow_options.activity.initial_interval = 0.5;
  ActivityWorkerOptions activity_options;
  activity_options.task_queue = argv[2];
  activity_options.heartbeat_interval = std::stod(argv[3]);
  kodo::testing::StepLog log;
  log.echo = [](const std::string &line) { std::cout << line << std::endl; };
  WorkflowWorker workflows(client, workflow_options);
  ActivityWorker activities(client, activity_options,
                            [&](Job &job) { return kodo::testing::run_steps(job, log); });
  workflows.start();
  activities.start();
  std::cout << "ready" << std::endl;
  for (;;) std::this_thread::sleep_for(std::chrono::hours(1));
}
