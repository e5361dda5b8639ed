#include "temporal_client.hpp"

#include <unistd.h>

#include <algorithm>
#include <thread>

#include "payload.hpp"

namespace kodo::temporal {
namespace {

using Clock = std::chrono::steady_clock;

const char *code_name(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::CANCELLED: return "CANCELLED";
    case grpc::StatusCode::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND: return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS: return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED: return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION: return "FAILED_PRECONDITION";
    case grpc::StatusCode::UNIMPLEMENTED: return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL: return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE: return "UNAVAILABLE";
    case grpc::StatusCode::UNAUTHENTICATED: return "UNAUTHENTICATED";
    default: return "error";
  }
}

std::chrono::system_clock::time_point deadline_after(double seconds) {
  return std::chrono::system_clock::now() +
         std::chrono::duration_cast<std::chrono::system_clock::duration>(
             std::chrono::duration<double>(seconds));
}

std::string default_identity() {
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  return std::string("kodo@") + host + ":" + std::to_string(getpid());
}

api::common::v1::WorkflowExecution execution(const std::string &workflow_id,
                                             const std::string &run_id = "") {
  api::common::v1::WorkflowExecution e;
  e.set_workflow_id(workflow_id);
  e.set_run_id(run_id);
  return e;
}

// A poll of either task queue: the same fields, no sticky queue.
template <class PollRequest>
PollRequest poll_request(const std::string &namespace_name, const std::string &task_queue,
                         const std::string &identity) {
  PollRequest request;
  request.set_namespace_(namespace_name);
  request.mutable_task_queue()->set_name(task_queue);
  request.mutable_task_queue()->set_kind(api::enums::v1::TASK_QUEUE_KIND_NORMAL);
  request.set_identity(identity);
  return request;
}

}  // namespace

void Canceller::cancel() {
  std::lock_guard<std::mutex> lock(mutex_);
  cancelled_ = true;
  for (auto *context : contexts_) context->TryCancel();
}

bool Canceller::cancelled() {
  std::lock_guard<std::mutex> lock(mutex_);
  return cancelled_;
}

void Canceller::attach(grpc::ClientContext *context) {
  std::lock_guard<std::mutex> lock(mutex_);
  contexts_.push_back(context);
  if (cancelled_) context->TryCancel();
}

void Canceller::detach(grpc::ClientContext *context) {
  std::lock_guard<std::mutex> lock(mutex_);
  contexts_.erase(std::find(contexts_.begin(), contexts_.end(), context));
}

TemporalClient::TemporalClient(ClientOptions options) : options_(std::move(options)) {
  if (options_.address.empty())
    throw std::invalid_argument("temporal: the server address is empty");
  identity_ = options_.identity.empty() ? default_identity() : options_.identity;
  grpc::ChannelArguments arguments;
  arguments.SetMaxReceiveMessageSize(options_.max_receive_bytes);
  // gRPC reconnects by itself; these bound how long a reconnect waits between tries. Not
  // GRPC_ARG_MIN_RECONNECT_BACKOFF_MS: gRPC takes it as the time a connection attempt may take,
  // and at 100 ms a loaded machine's handshakes were cut off ("tcp handshaker shutdown").
  arguments.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS,
                   static_cast<int>(options_.retry_initial * 1000));
  arguments.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS,
                   static_cast<int>(options_.retry_maximum * 1000));
  channel_ =
      grpc::CreateCustomChannel(options_.address, grpc::InsecureChannelCredentials(), arguments);
  stub_ = wf::WorkflowService::NewStub(channel_);
}

template <class Request, class Response, class Method>
bool TemporalClient::call(const char *name, Method method, const Request &request,
                          Response &response, Kind kind, Canceller *canceller, double retry_for) {
  double backoff = options_.retry_initial;
  const auto give_up =
      Clock::now() + std::chrono::duration<double>(retry_for < 0 ? options_.retry_for : retry_for);
  for (;;) {
    grpc::ClientContext context;
    context.set_deadline(deadline_after(kind == Kind::long_poll ? options_.long_poll_timeout
                                                                : options_.call_timeout));
    if (canceller) canceller->attach(&context);
    grpc::Status status = method(*stub_, &context, request, &response);
    if (canceller) canceller->detach(&context);
    const auto code = status.error_code();
    // Any answer of the server's, an error included, says it is there.
    if (code != grpc::StatusCode::DEADLINE_EXCEEDED && code != grpc::StatusCode::CANCELLED)
      up_ = code != grpc::StatusCode::UNAVAILABLE;
    if (status.ok()) return true;
    if (canceller && canceller->cancelled()) return false;
    if (kind == Kind::long_poll && code == grpc::StatusCode::DEADLINE_EXCEEDED) return false;
    const bool retry = code == grpc::StatusCode::UNAVAILABLE;
    if (!retry || Clock::now() + std::chrono::duration<double>(backoff) > give_up)
      throw TemporalError("temporal at " + options_.address + ": " + name +
                              " failed: " + code_name(code) + ": " + status.error_message(),
                          code);
    // Sleeps in short steps so that a cancel ends the wait too.
    const auto until = Clock::now() + std::chrono::duration<double>(backoff);
    while (Clock::now() < until) {
      if (canceller && canceller->cancelled()) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    backoff = std::min(backoff * 2, options_.retry_maximum);
  }
}

#define KODO_TEMPORAL_RPC(Name)                                                                \
  [](wf::WorkflowService::Stub &stub, grpc::ClientContext *ctx, const auto &req, auto *resp) { \
    return stub.Name(ctx, req, resp);                                                          \
  }

void TemporalClient::check_namespace() {
  wf::DescribeNamespaceRequest request;
  request.set_namespace_(options_.namespace_name);
  wf::DescribeNamespaceResponse response;
  call("DescribeNamespace", KODO_TEMPORAL_RPC(DescribeNamespace), request, response, Kind::ordinary,
       nullptr);
}

bool TemporalClient::probe(double timeout) {
  wf::DescribeNamespaceRequest request;
  request.set_namespace_(options_.namespace_name);
  wf::DescribeNamespaceResponse response;
  grpc::ClientContext context;
  context.set_deadline(deadline_after(timeout));
  const grpc::Status status = stub_->DescribeNamespace(&context, request, &response);
  up_ = status.ok();
  return status.ok();
}

StartResult TemporalClient::start_workflow(const StartRequest &start, double retry_for) {
  wf::StartWorkflowExecutionRequest request;
  request.set_namespace_(options_.namespace_name);
  request.set_workflow_id(start.workflow_id);
  request.mutable_workflow_type()->set_name(start.workflow_type);
  request.mutable_task_queue()->set_name(start.task_queue);
  request.mutable_task_queue()->set_kind(api::enums::v1::TASK_QUEUE_KIND_NORMAL);
  *request.mutable_input()->add_payloads() = json_payload(start.input_json);
  request.set_identity(identity_);
  request.set_request_id(start.request_id);
  request.set_workflow_id_conflict_policy(api::enums::v1::WORKFLOW_ID_CONFLICT_POLICY_USE_EXISTING);
  // A fid runs once: a workflow that already ended is not started again either.
  request.set_workflow_id_reuse_policy(api::enums::v1::WORKFLOW_ID_REUSE_POLICY_REJECT_DUPLICATE);
  wf::StartWorkflowExecutionResponse response;
  try {
    call("StartWorkflowExecution", KODO_TEMPORAL_RPC(StartWorkflowExecution), request, response,
         Kind::ordinary, nullptr, retry_for);
  } catch (const TemporalError &e) {
    if (e.code() != grpc::StatusCode::ALREADY_EXISTS) throw;
    return {describe(start.workflow_id).workflow_execution_info().execution().run_id(), false};
  }
  return {response.run_id(), response.started()};
}

void TemporalClient::signal(const std::string &workflow_id, const std::string &signal_name,
                            const std::optional<std::string> &argument_json,
                            const std::string &request_id) {
  wf::SignalWorkflowExecutionRequest request;
  request.set_namespace_(options_.namespace_name);
  *request.mutable_workflow_execution() = execution(workflow_id);
  request.set_signal_name(signal_name);
  if (argument_json) *request.mutable_input()->add_payloads() = json_payload(*argument_json);
  request.set_identity(identity_);
  request.set_request_id(request_id);
  wf::SignalWorkflowExecutionResponse response;
  call("SignalWorkflowExecution", KODO_TEMPORAL_RPC(SignalWorkflowExecution), request, response,
       Kind::ordinary, nullptr);
}

void TemporalClient::request_cancel(const std::string &workflow_id, const std::string &reason) {
  wf::RequestCancelWorkflowExecutionRequest request;
  request.set_namespace_(options_.namespace_name);
  *request.mutable_workflow_execution() = execution(workflow_id);
  request.set_identity(identity_);
  request.set_reason(reason);
  wf::RequestCancelWorkflowExecutionResponse response;
  call("RequestCancelWorkflowExecution", KODO_TEMPORAL_RPC(RequestCancelWorkflowExecution), request,
       response, Kind::ordinary, nullptr);
}

std::string TemporalClient::query(const std::string &workflow_id, const std::string &query_type) {
  wf::QueryWorkflowRequest request;
  request.set_namespace_(options_.namespace_name);
  *request.mutable_execution() = execution(workflow_id);
  request.mutable_query()->set_query_type(query_type);
  wf::QueryWorkflowResponse response;
  // A query waits for a workflow worker to answer it: as long as a long poll.
  call("QueryWorkflow", KODO_TEMPORAL_RPC(QueryWorkflow), request, response, Kind::long_poll,
       nullptr);
  if (response.query_result().payloads_size() == 0)
    throw TemporalError("temporal at " + options_.address + ": query " + query_type + " of " +
                            workflow_id + " has no answer",
                        grpc::StatusCode::FAILED_PRECONDITION);
  return payload_json(response.query_result().payloads(0), "query answer");
}

wf::DescribeWorkflowExecutionResponse TemporalClient::describe(const std::string &workflow_id) {
  wf::DescribeWorkflowExecutionRequest request;
  request.set_namespace_(options_.namespace_name);
  *request.mutable_execution() = execution(workflow_id);
  wf::DescribeWorkflowExecutionResponse response;
  call("DescribeWorkflowExecution", KODO_TEMPORAL_RPC(DescribeWorkflowExecution), request, response,
       Kind::ordinary, nullptr);
  return response;
}

bool TemporalClient::history_page(const wf::GetWorkflowExecutionHistoryRequest &request,
                                  wf::GetWorkflowExecutionHistoryResponse &response,
                                  Canceller *canceller) {
  return call("GetWorkflowExecutionHistory", KODO_TEMPORAL_RPC(GetWorkflowExecutionHistory),
              request, response, request.wait_new_event() ? Kind::long_poll : Kind::ordinary,
              canceller);
}

api::history::v1::HistoryEvent TemporalClient::wait_closed(const std::string &workflow_id,
                                                           const std::string &run_id) {
  wf::GetWorkflowExecutionHistoryRequest request;
  request.set_namespace_(options_.namespace_name);
  *request.mutable_execution() = execution(workflow_id, run_id);
  request.set_wait_new_event(true);
  request.set_history_event_filter_type(api::enums::v1::HISTORY_EVENT_FILTER_TYPE_CLOSE_EVENT);
  for (;;) {
    wf::GetWorkflowExecutionHistoryResponse response;
    if (history_page(request, response, nullptr) && response.history().events_size() > 0)
      return response.history().events(response.history().events_size() - 1);
    request.set_next_page_token(response.next_page_token());
  }
}

bool TemporalClient::poll_workflow_task(const std::string &task_queue,
                                        wf::PollWorkflowTaskQueueResponse &task,
                                        Canceller *canceller) {
  auto request = poll_request<wf::PollWorkflowTaskQueueRequest>(options_.namespace_name, task_queue,
                                                                identity_);
  return call("PollWorkflowTaskQueue", KODO_TEMPORAL_RPC(PollWorkflowTaskQueue), request, task,
              Kind::long_poll, canceller) &&
         !task.task_token().empty();
}

bool TemporalClient::poll_activity_task(const std::string &task_queue,
                                        wf::PollActivityTaskQueueResponse &task,
                                        Canceller *canceller) {
  auto request = poll_request<wf::PollActivityTaskQueueRequest>(options_.namespace_name, task_queue,
                                                                identity_);
  return call("PollActivityTaskQueue", KODO_TEMPORAL_RPC(PollActivityTaskQueue), request, task,
              Kind::long_poll, canceller) &&
         !task.task_token().empty();
}

void TemporalClient::respond_workflow_task_completed(
    wf::RespondWorkflowTaskCompletedRequest request) {
  request.set_namespace_(options_.namespace_name);
  request.set_identity(identity_);
  wf::RespondWorkflowTaskCompletedResponse response;
  call("RespondWorkflowTaskCompleted", KODO_TEMPORAL_RPC(RespondWorkflowTaskCompleted), request,
       response, Kind::ordinary, nullptr);
}

void TemporalClient::respond_workflow_task_failed(wf::RespondWorkflowTaskFailedRequest request) {
  request.set_namespace_(options_.namespace_name);
  request.set_identity(identity_);
  wf::RespondWorkflowTaskFailedResponse response;
  call("RespondWorkflowTaskFailed", KODO_TEMPORAL_RPC(RespondWorkflowTaskFailed), request, response,
       Kind::ordinary, nullptr);
}

void TemporalClient::respond_query_task_completed(wf::RespondQueryTaskCompletedRequest request) {
  request.set_namespace_(options_.namespace_name);
  wf::RespondQueryTaskCompletedResponse response;
  call("RespondQueryTaskCompleted", KODO_TEMPORAL_RPC(RespondQueryTaskCompleted), request, response,
       Kind::ordinary, nullptr);
}

wf::RecordActivityTaskHeartbeatResponse TemporalClient::heartbeat(const std::string &task_token,
                                                                  const std::string &details_json) {
  wf::RecordActivityTaskHeartbeatRequest request;
  request.set_namespace_(options_.namespace_name);
  request.set_task_token(task_token);
  request.set_identity(identity_);
  if (!details_json.empty())
    *request.mutable_details()->add_payloads() = json_payload(details_json);
  wf::RecordActivityTaskHeartbeatResponse response;
  call("RecordActivityTaskHeartbeat", KODO_TEMPORAL_RPC(RecordActivityTaskHeartbeat), request,
       response, Kind::ordinary, nullptr);
  return response;
}

void TemporalClient::respond_activity_completed(const std::string &task_token,
                                                const std::string &result_json) {
  wf::RespondActivityTaskCompletedRequest request;
  request.set_namespace_(options_.namespace_name);
  request.set_task_token(task_token);
  request.set_identity(identity_);
  *request.mutable_result()->add_payloads() = json_payload(result_json);
  wf::RespondActivityTaskCompletedResponse response;
  call("RespondActivityTaskCompleted", KODO_TEMPORAL_RPC(RespondActivityTaskCompleted), request,
       response, Kind::ordinary, nullptr);
}

void TemporalClient::respond_activity_failed(const std::string &task_token,
                                             const std::string &message, bool final) {
  wf::RespondActivityTaskFailedRequest request;
  request.set_namespace_(options_.namespace_name);
  request.set_task_token(task_token);
  request.set_identity(identity_);
  request.mutable_failure()->set_message(message);
  request.mutable_failure()->set_source("kodo");
  request.mutable_failure()->mutable_application_failure_info()->set_type("KodoJobError");
  request.mutable_failure()->mutable_application_failure_info()->set_non_retryable(final);
  wf::RespondActivityTaskFailedResponse response;
  call("RespondActivityTaskFailed", KODO_TEMPORAL_RPC(RespondActivityTaskFailed), request, response,
       Kind::ordinary, nullptr);
}

void TemporalClient::respond_activity_canceled(const std::string &task_token,
                                               const std::string &details_json) {
  wf::RespondActivityTaskCanceledRequest request;
  request.set_namespace_(options_.namespace_name);
  request.set_task_token(task_token);
  request.set_identity(identity_);
  *request.mutable_details()->add_payloads() = json_payload(details_json);
  wf::RespondActivityTaskCanceledResponse response;
  call("RespondActivityTaskCanceled", KODO_TEMPORAL_RPC(RespondActivityTaskCanceled), request,
       response, Kind::ordinary, nullptr);
}

#undef KODO_TEMPORAL_RPC

}  // namespace kodo::temporal
