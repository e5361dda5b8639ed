// temporal_client.hpp: Temporal's WorkflowService over gRPC, the calls kodo needs and nothing
// more. Every error names the server's address and the call; calls the server could not take
// (UNAVAILABLE) are retried with exponential backoff for a bounded time, so a server that
// restarts is waited for and a server that stays down is reported. All methods are thread-safe.
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "temporal/api/workflowservice/v1/service.grpc.pb.h"

namespace kodo::temporal {

namespace wf = ::temporal::api::workflowservice::v1;
namespace api = ::temporal::api;

struct ClientOptions {
  std::string address = "localhost:7233";
  std::string namespace_name = "default";
  std::string identity;  // empty: "kodo@<hostname>:<pid>"
  // Histories grow past gRPC's 4 MB default.
  int max_receive_bytes = 128 * 1024 * 1024;
  double call_timeout = 10;  // seconds, per attempt of an ordinary call
  // The server answers an idle long poll after about 60 s; the client waits longer.
  double long_poll_timeout = 75;
  // Backoff between attempts while the server is unreachable, and how long to keep trying.
  double retry_initial = 0.1;
  double retry_maximum = 5;
  double retry_for = 60;
};

// A failed call: the message names the address, the call and gRPC's status.
class TemporalError : public std::runtime_error {
 public:
  TemporalError(const std::string &message, grpc::StatusCode code)
      : std::runtime_error(message), code_(code) {}
  grpc::StatusCode code() const { return code_; }
  bool unavailable() const { return code_ == grpc::StatusCode::UNAVAILABLE; }
  bool not_found() const { return code_ == grpc::StatusCode::NOT_FOUND; }

 private:
  grpc::StatusCode code_;
};

// Lets another thread end the calls in flight (TryCancel) and those that follow; shared by any
// number of threads' calls.
class Canceller {
 public:
  void cancel();
  bool cancelled();
  // A call in flight, from its start to its return.
  void attach(grpc::ClientContext *context);
  void detach(grpc::ClientContext *context);

 private:
  std::mutex mutex_;
  bool cancelled_ = false;
  std::vector<grpc::ClientContext *> contexts_;
};

struct StartRequest {
  std::string workflow_id;
  std::string workflow_type = "AgentWorkflow";
  std::string task_queue = "kodosumi-agents";
  std::string input_json;  // one json/plain payload
  std::string request_id;  // the idempotency key of this submit
};

struct StartResult {
  std::string run_id;
  bool started = false;  // false: the workflow already existed (USE_EXISTING)
};

class TemporalClient {
 public:
  explicit TemporalClient(ClientOptions options);

  const ClientOptions &options() const { return options_; }
  const std::string &identity() const { return identity_; }

  // Reachability and namespace: throws TemporalError when the server or namespace is not there.
  void check_namespace();
  // One try of the same within `timeout` seconds, no retry: whether the server answered.
  bool probe(double timeout);
  // Whether the server answered the last call that reached for it (true until one fails).
  bool up() const { return up_.load(); }

  // Starts a workflow, or returns the one of the same id: a running one (conflict policy
  // USE_EXISTING) or one that ended (reuse policy REJECT_DUPLICATE): a fid runs once. The same
  // request_id sent again gets the first answer again. `retry_for` (seconds; < 0: the
  // client's) bounds the wait for an unreachable server.
  StartResult start_workflow(const StartRequest &request, double retry_for = -1);
  void signal(const std::string &workflow_id, const std::string &signal_name,
              const std::optional<std::string> &argument_json = std::nullopt,
              const std::string &request_id = "");
  void request_cancel(const std::string &workflow_id, const std::string &reason);
  // The JSON text of the query's answer; throws naming the query if the workflow rejects it.
  std::string query(const std::string &workflow_id, const std::string &query_type);
  wf::DescribeWorkflowExecutionResponse describe(const std::string &workflow_id);
  // Long polls until the workflow closes and returns its close event.
  api::history::v1::HistoryEvent wait_closed(const std::string &workflow_id,
                                             const std::string &run_id = "");
  // One page of history; `wait_new_event` long polls. Returns false if `canceller` ended it.
  bool history_page(const wf::GetWorkflowExecutionHistoryRequest &request,
                    wf::GetWorkflowExecutionHistoryResponse &response, Canceller *canceller);

  // Long polls for a task; false when the poll came back empty or was cancelled.
  bool poll_workflow_task(const std::string &task_queue, wf::PollWorkflowTaskQueueResponse &task,
                          Canceller *canceller);
  bool poll_activity_task(const std::string &task_queue, wf::PollActivityTaskQueueResponse &task,
                          Canceller *canceller);

  void respond_workflow_task_completed(wf::RespondWorkflowTaskCompletedRequest request);
  void respond_workflow_task_failed(wf::RespondWorkflowTaskFailedRequest request);
  void respond_query_task_completed(wf::RespondQueryTaskCompletedRequest request);
  wf::RecordActivityTaskHeartbeatResponse heartbeat(const std::string &task_token,
                                                    const std::string &details_json);
  void respond_activity_completed(const std::string &task_token, const std::string &result_json);
  // `final`: the failure will not go away on a retry (bad input); Temporal does not retry it.
  void respond_activity_failed(const std::string &task_token, const std::string &message,
                               bool final = false);
  void respond_activity_canceled(const std::string &task_token, const std::string &details_json);

 private:
  enum class Kind { ordinary, long_poll };
  template <class Request, class Response, class Method>
  bool call(const char *name, Method method, const Request &request, Response &response, Kind kind,
            Canceller *canceller, double retry_for = -1);

  ClientOptions options_;
  std::string identity_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<wf::WorkflowService::Stub> stub_;
  std::atomic<bool> up_{true};
};

}  // namespace kodo::temporal
