#include "workflow_worker.hpp"

#include <iostream>

namespace kodo::temporal {
namespace {

namespace enums = ::temporal::api::enums::v1;

// Answers one query over the folded state, as a query result.
::temporal::api::query::v1::WorkflowQueryResult answer(const WorkflowState &state,
                                                       const std::string &query_type) {
  ::temporal::api::query::v1::WorkflowQueryResult result;
  try {
    *result.mutable_answer()->add_payloads() = json_payload(answer_query(state, query_type));
    result.set_result_type(enums::QUERY_RESULT_TYPE_ANSWERED);
  } catch (const std::exception &e) {
    result.set_result_type(enums::QUERY_RESULT_TYPE_FAILED);
    result.set_error_message(e.what());
  }
  return result;
}

}  // namespace

WorkflowWorker::WorkflowWorker(TemporalClient &client, WorkflowWorkerOptions options,
                               ErrorSink errors)
    : client_(client), options_(std::move(options)), errors_(std::move(errors)) {}

WorkflowWorker::~WorkflowWorker() {
  stop();
}

void WorkflowWorker::start() {
  for (int i = 0; i < options_.pollers; ++i) pollers_.emplace_back([this] { poll_loop(); });
}

void WorkflowWorker::stop() {
  canceller_.cancel();
  for (auto &poller : pollers_) poller.join();
  pollers_.clear();
}

void WorkflowWorker::report(const std::string &message) {
  if (errors_)
    errors_(message);
  else
    std::cerr << "kodo temporal workflow worker: " << message << "\n";
}

void WorkflowWorker::poll_loop() {
  while (!canceller_.cancelled()) {
    wf::PollWorkflowTaskQueueResponse task;
    try {
      if (!client_.poll_workflow_task(options_.task_queue, task, &canceller_)) continue;
    } catch (const TemporalError &e) {
      // The client already retried with backoff; report and poll again.
      report(e.what());
      continue;
    }
    try {
      handle(task);
    } catch (const std::exception &e) {
      report(std::string("workflow task of ") + task.workflow_execution().workflow_id() + ": " +
             e.what());
    }
  }
}

void WorkflowWorker::handle(wf::PollWorkflowTaskQueueResponse &task) {
  const bool legacy_query = task.has_query();
  if (task.workflow_type().name() != kWorkflowType) {
    const std::string message = "this worker runs only " + std::string(kWorkflowType) + ", not " +
                                task.workflow_type().name();
    if (legacy_query) {
      wf::RespondQueryTaskCompletedRequest response;
      response.set_task_token(task.task_token());
      response.set_completed_type(enums::QUERY_RESULT_TYPE_FAILED);
      response.set_error_message(message);
      client_.respond_query_task_completed(std::move(response));
      return;
    }
    wf::RespondWorkflowTaskFailedRequest failed;
    failed.set_task_token(task.task_token());
    failed.set_cause(enums::WORKFLOW_TASK_FAILED_CAUSE_WORKFLOW_WORKER_UNHANDLED_FAILURE);
    failed.mutable_failure()->set_message(message);
    client_.respond_workflow_task_failed(std::move(failed));
    return;
  }

  // The rest of a paged history.
  auto *history = task.mutable_history();
  std::string token = task.next_page_token();
  while (!token.empty()) {
    wf::GetWorkflowExecutionHistoryRequest request;
    request.set_namespace_(client_.options().namespace_name);
    *request.mutable_execution() = task.workflow_execution();
    request.set_next_page_token(token);
    wf::GetWorkflowExecutionHistoryResponse page;
    client_.history_page(request, page, nullptr);
    for (auto &event : *page.mutable_history()->mutable_events()) *history->add_events() = event;
    token = page.next_page_token();
  }
  const WorkflowState state = fold(*history);

  if (legacy_query) {
    auto result = answer(state, task.query().query_type());
    wf::RespondQueryTaskCompletedRequest response;
    response.set_task_token(task.task_token());
    response.set_completed_type(result.result_type());
    *response.mutable_query_result() = result.answer();
    response.set_error_message(result.error_message());
    client_.respond_query_task_completed(std::move(response));
    return;
  }

  wf::RespondWorkflowTaskCompletedRequest response;
  response.set_task_token(task.task_token());
  for (auto &command : decide(state, options_.activity, options_.task_queue))
    *response.add_commands() = std::move(command);
  for (const auto &[id, query] : task.queries())
    (*response.mutable_query_results())[id] = answer(state, query.query_type());
  client_.respond_workflow_task_completed(std::move(response));
  ++completed_;
}

}  // namespace kodo::temporal
