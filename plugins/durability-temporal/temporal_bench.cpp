// kodo-temporal-bench: figures for the Temporal worker (bench/temporal.sh runs it).
//   kodo-temporal-bench worker ADDRESS QUEUE JOB_MS
//       kodo's workflow and activity workers until SIGTERM; each job heartbeats and returns
//       after JOB_MS (0: at once). Prints "ready", and at exit the jobs done and peak RSS.
//   kodo-temporal-bench latency ADDRESS QUEUE N
//       N launches one after another against in-process workers: launch to job start and
//       launch to workflow closed, p50 and p99.
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "activity_worker.hpp"

namespace {

using namespace kodo::temporal;
using Clock = std::chrono::steady_clock;

std::string status_line(const std::string &key) {
  std::ifstream in("/proc/self/status");
  for (std::string line; std::getline(in, line);)
    if (line.rfind(key + ":", 0) == 0) return line.substr(key.size() + 1);
  return "?";
}

// The client and both workers' options for `queue` on the server at `address`.
struct Setup {
  Setup(const std::string &address, const std::string &queue)
      : client([&] {
          ClientOptions options;
          options.address = address;
          return options;
        }()) {
    workflow_options.task_queue = queue;
    activity_options.task_queue = queue;
  }
  TemporalClient client;
  WorkflowWorkerOptions workflow_options;
  ActivityWorkerOptions activity_options;
};

int worker(const std::string &address, const std::string &queue, int job_ms) {
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);  // every thread inherits the mask

  Setup setup(address, queue);
  setup.activity_options.heartbeat_interval = 1;
  WorkflowWorker workflows(setup.client, setup.workflow_options);
  ActivityWorker activities(setup.client, setup.activity_options, [&](Job &job) {
    if (job_ms > 0) {
      job.heartbeat(R"({"step":0})");
      job.wait_for_change(job.control(), std::chrono::milliseconds(job_ms));
    }
    return JobResult{job.input().fid, "finished", ""};
  });
  workflows.start();
  activities.start();
  std::cout << "ready" << std::endl;
  int signal = 0;
  sigwait(&stop_signals, &signal);
  activities.stop();
  workflows.stop();
  std::cout << "jobs " << activities.jobs_done() << " workflow tasks "
            << workflows.tasks_completed() << " peak RSS" << status_line("VmHWM") << std::endl;
  return 0;
}

double percentile(std::vector<double> values, double p) {
  std::sort(values.begin(), values.end());
  const auto rank = static_cast<size_t>(p * static_cast<double>(values.size()));
  return values[std::min(values.size() - 1, rank)];
}

int latency(const std::string &address, const std::string &queue, int count) {
  Setup setup(address, queue);
  TemporalClient &client = setup.client;
  std::mutex mutex;
  std::condition_variable cv;
  std::string started_fid;
  WorkflowWorker workflows(client, setup.workflow_options);
  ActivityWorker activities(client, setup.activity_options, [&](Job &job) {
    std::lock_guard<std::mutex> lock(mutex);
    started_fid = job.input().fid;
    cv.notify_all();
    return JobResult{job.input().fid, "finished", ""};
  });
  workflows.start();
  activities.start();
  std::vector<double> to_start, to_close;
  const std::string run = std::to_string(getpid());
  for (int i = 0; i < count; ++i) {
    JobInput input;
    input.fid = "lat-" + run + "-" + std::to_string(i);
    input.username = "bench";
    StartRequest request;
    request.workflow_id = "kodo-" + input.fid;
    request.task_queue = queue;
    request.input_json = to_json(input);
    request.request_id = input.fid;
    const auto t0 = Clock::now();
    client.start_workflow(request);
    {
      std::unique_lock<std::mutex> lock(mutex);
      cv.wait(lock, [&] { return started_fid == input.fid; });
    }
    to_start.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    client.wait_closed(request.workflow_id);
    to_close.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  }
  activities.stop();
  workflows.stop();
  std::printf(
      "launch -> job running: p50 %.1f ms, p99 %.1f ms; launch -> workflow closed: "
      "p50 %.1f ms, p99 %.1f ms (%d launches, one at a time)\n",
      percentile(to_start, 0.5), percentile(to_start, 0.99), percentile(to_close, 0.5),
      percentile(to_close, 0.99), count);
  return 0;
}

}  // namespace

int main(int argc, char **argv) {
  const std::string usage =
      "usage: kodo-temporal-bench worker ADDRESS QUEUE JOB_MS | latency ADDRESS QUEUE N\n";
  if (argc != 5) {
    std::cerr << usage;
    return 2;
  }
  const std::string mode = argv[1];
  try {
    if (mode == "worker") return worker(argv[2], argv[3], std::stoi(argv[4]));
    if (mode == "latency") return latency(argv[2], argv[3], std::stoi(argv[4]));
  } catch (const std::exception &e) {
    std::cerr << "kodo-temporal-bench: " << e.what() << "\n";
    return 1;
  }
  std::cerr << usage;
  return 2;
}
