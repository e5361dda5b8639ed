// job_worker.hpp: what `kodo-host worker` does with a durable job (durability.hpp): each attempt
// is one executor run of the job's flow (input entry_point names a configured flow) under the
// job's own fid, its events published through the sink as in direct mode. A later attempt's
// events follow the earlier ones (from the highest seq storage or the last heartbeat knows),
// after a debug event saying why it runs. Signals act on the run's processes: pause and resume
// stop and continue its process group, cancel terminates it (then kills after the grace).
// Heartbeats carry {"next_seq": N, "status": S}.
#pragma once

#include <kodo/host/durability.hpp>
#include "core/event.hpp"
#include "core/executor.hpp"
#include "core/storage.hpp"

#include <map>
#include <mutex>
#include <string>

namespace kodo {

// Passes events on and remembers, per fid, its last status and error and its next seq.
class OutcomeSink : public EventSink {
 public:
  explicit OutcomeSink(EventSink &next) : next_(next) {}
  void publish(const std::vector<Event> &events) override;

  struct Outcome {
    std::string status;
    std::string error;
    int64_t next_seq = 0;
  };
  Outcome outcome(const std::string &fid) const;
  void forget(const std::string &fid);

 private:
  EventSink &next_;
  mutable std::mutex mutex_;
  std::map<std::string, Outcome> outcomes_;
};

struct JobWorkerConfig {
  double heartbeat_s = 1;  // how often the run's progress goes to the job's heartbeat
};

// Runs one attempt to its end (the JobRunner of `kodo-host worker`). `storage` may be null.
sdk::JobResult run_job_attempt(HostJob &job, Executor &executor, OutcomeSink &outcomes,
                               Storage *storage, const JobWorkerConfig &config);

}  // namespace kodo
