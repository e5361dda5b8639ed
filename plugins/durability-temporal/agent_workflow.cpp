#include "agent_workflow.hpp"

#include <rapidjson/document.h>

#include <cmath>
#include <stdexcept>

namespace kodo::temporal {
namespace {

namespace history = ::temporal::api::history::v1;
namespace command = ::temporal::api::command::v1;
namespace enums = ::temporal::api::enums::v1;

void set_seconds(google::protobuf::Duration *duration, double seconds) {
  double whole = std::floor(seconds);
  duration->set_seconds(static_cast<std::int64_t>(whole));
  duration->set_nanos(static_cast<std::int32_t>((seconds - whole) * 1e9));
}

// The first payload's JSON text, or "" when there is none or it is not JSON.
std::string first_json(const ::temporal::api::common::v1::Payloads &payloads) {
  if (payloads.payloads_size() == 0) return {};
  try {
    return payload_json(payloads.payloads(0), "payload");
  } catch (const std::exception &) {
    return {};
  }
}

// Who cancelled: the signal's argument (a string, or an object's "reason" or "by"), else the
// identity of the client that sent it.
std::string cancel_reason(const std::string &argument_json, const std::string &identity) {
  rapidjson::Document document;
  document.Parse(argument_json.c_str());
  if (!document.HasParseError()) {
    if (document.IsString() && document.GetStringLength() > 0) return document.GetString();
    if (document.IsObject()) {
      for (const char *key : {"reason", "by"}) {
        auto member = document.FindMember(key);
        if (member != document.MemberEnd() && member->value.IsString())
          return member->value.GetString();
      }
    }
  }
  return "signal cancel_workflow from " + (identity.empty() ? std::string("a client") : identity);
}

std::string failure_text(const ::temporal::api::failure::v1::Failure &failure) {
  std::string text = failure.message();
  for (const auto *cause = failure.has_cause() ? &failure.cause() : nullptr; cause;
       cause = cause->has_cause() ? &cause->cause() : nullptr)
    if (!cause->message().empty()) text += ": " + cause->message();
  return text;
}

}  // namespace

void apply(WorkflowState &state, const history::HistoryEvent &event) {
  switch (event.event_type()) {
    case enums::EVENT_TYPE_WORKFLOW_EXECUTION_STARTED: {
      state.started = true;
      const auto &input = event.workflow_execution_started_event_attributes().input();
      try {
        if (input.payloads_size() == 0) throw std::runtime_error("job input: no payload");
        state.input = job_input_from_json(payload_json(input.payloads(0), "job input"));
      } catch (const std::exception &e) {
        state.input_error = e.what();
      }
      break;
    }
    case enums::EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED: {
      const auto &signal = event.workflow_execution_signaled_event_attributes();
      if (state.closed || state.outcome != ActivityOutcome::none) break;
      if (signal.signal_name() == "pause" && !state.cancel_requested) {
        if (!state.paused) ++state.pauses;
        state.paused = true;
      } else if (signal.signal_name() == "resume") {
        if (state.paused) ++state.resumes;
        state.paused = false;
      } else if (signal.signal_name() == "cancel_workflow" && !state.cancel_requested) {
        state.cancel_requested = true;
        state.paused = false;
        state.cancel_reason = cancel_reason(first_json(signal.input()), signal.identity());
      }
      break;
    }
    case enums::EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED: {
      if (state.cancel_requested) break;
      const auto &request = event.workflow_execution_cancel_requested_event_attributes();
      state.cancel_requested = true;
      state.paused = false;
      state.cancel_reason =
          "cancel request" +
          (request.cause().empty() ? std::string() : " (" + request.cause() + ")") +
          (request.identity().empty() ? "" : " from " + request.identity());
      break;
    }
    case enums::EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
      state.activity_scheduled_id = event.event_id();
      break;
    case enums::EVENT_TYPE_ACTIVITY_TASK_CANCEL_REQUESTED:
      state.activity_cancel_requested = true;
      break;
    case enums::EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
      state.outcome = ActivityOutcome::completed;
      state.result_json = first_json(event.activity_task_completed_event_attributes().result());
      break;
    case enums::EVENT_TYPE_ACTIVITY_TASK_FAILED:
      state.outcome = ActivityOutcome::failed;
      state.error = "execute_agent failed: " +
                    failure_text(event.activity_task_failed_event_attributes().failure());
      break;
    case enums::EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT:
      state.outcome = ActivityOutcome::timed_out;
      state.error = "execute_agent timed out: " +
                    failure_text(event.activity_task_timed_out_event_attributes().failure());
      break;
    case enums::EVENT_TYPE_ACTIVITY_TASK_CANCELED:
      state.outcome = ActivityOutcome::canceled;
      state.result_json = first_json(event.activity_task_canceled_event_attributes().details());
      break;
    case enums::EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED:
    case enums::EVENT_TYPE_WORKFLOW_EXECUTION_FAILED:
    case enums::EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED:
    case enums::EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED:
    case enums::EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT:
    case enums::EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW:
      state.closed = true;
      state.paused = false;
      break;
    default: break;
  }
}

WorkflowState fold(const history::History &events) {
  WorkflowState state;
  for (const auto &event : events.events()) apply(state, event);
  return state;
}

std::vector<command::Command> decide(const WorkflowState &state, const ActivityOptions &options,
                                     const std::string &task_queue) {
  std::vector<command::Command> commands;
  if (!state.started || state.closed) return commands;
  auto &next = commands.emplace_back();
  auto cancelled_result = [&] {
    if (!state.result_json.empty()) return state.result_json;
    return to_json(JobResult{state.input.fid, "error", "cancelled by " + state.cancel_reason});
  };

  if (!state.input_error.empty()) {
    next.set_command_type(enums::COMMAND_TYPE_FAIL_WORKFLOW_EXECUTION);
    auto *failure = next.mutable_fail_workflow_execution_command_attributes()->mutable_failure();
    failure->set_message(state.input_error);
    failure->mutable_application_failure_info()->set_non_retryable(true);
  } else if (state.outcome == ActivityOutcome::canceled ||
             (state.cancel_requested &&
              (state.activity_scheduled_id == 0 || state.outcome == ActivityOutcome::completed))) {
    // A job cancelled by a signal before the cancel reached its attempt reports completed,
    // with its cancelled result (activity_worker.cpp): the workflow still ends cancelled.
    next.set_command_type(enums::COMMAND_TYPE_CANCEL_WORKFLOW_EXECUTION);
    *next.mutable_cancel_workflow_execution_command_attributes()
         ->mutable_details()
         ->add_payloads() = json_payload(cancelled_result());
  } else if (state.outcome == ActivityOutcome::completed) {
    next.set_command_type(enums::COMMAND_TYPE_COMPLETE_WORKFLOW_EXECUTION);
    *next.mutable_complete_workflow_execution_command_attributes()
         ->mutable_result()
         ->add_payloads() =
        json_payload(state.result_json.empty() ? to_json(JobResult{state.input.fid, "finished", ""})
                                               : state.result_json);
  } else if (state.outcome == ActivityOutcome::failed ||
             state.outcome == ActivityOutcome::timed_out) {
    next.set_command_type(enums::COMMAND_TYPE_FAIL_WORKFLOW_EXECUTION);
    auto *failure = next.mutable_fail_workflow_execution_command_attributes()->mutable_failure();
    failure->set_message(state.error);
    failure->mutable_application_failure_info()->set_type("KodoJobError");
  } else if (state.cancel_requested && !state.activity_cancel_requested) {
    next.set_command_type(enums::COMMAND_TYPE_REQUEST_CANCEL_ACTIVITY_TASK);
    next.mutable_request_cancel_activity_task_command_attributes()->set_scheduled_event_id(
        state.activity_scheduled_id);
  } else if (state.activity_scheduled_id == 0) {
    next.set_command_type(enums::COMMAND_TYPE_SCHEDULE_ACTIVITY_TASK);
    auto *schedule = next.mutable_schedule_activity_task_command_attributes();
    schedule->set_activity_id(kActivityType);
    schedule->mutable_activity_type()->set_name(kActivityType);
    schedule->mutable_task_queue()->set_name(task_queue);
    schedule->mutable_task_queue()->set_kind(enums::TASK_QUEUE_KIND_NORMAL);
    *schedule->mutable_input()->add_payloads() = json_payload(to_json(state.input));
    set_seconds(schedule->mutable_start_to_close_timeout(), options.start_to_close > 0
                                                                ? options.start_to_close
                                                                : state.input.execution_timeout);
    set_seconds(schedule->mutable_heartbeat_timeout(), options.heartbeat_timeout);
    auto *retry = schedule->mutable_retry_policy();
    retry->set_maximum_attempts(options.maximum_attempts);
    set_seconds(retry->mutable_initial_interval(), options.initial_interval);
    retry->set_backoff_coefficient(options.backoff_coefficient);
    set_seconds(retry->mutable_maximum_interval(), options.maximum_interval);
  } else {
    commands.clear();  // the activity runs; wait for its next event
  }
  return commands;
}

std::string status(const WorkflowState &state) {
  switch (state.outcome) {
    case ActivityOutcome::completed: return state.cancel_requested ? "cancelled" : "completed";
    case ActivityOutcome::failed:
    case ActivityOutcome::timed_out: return "failed";
    case ActivityOutcome::canceled: return "cancelled";
    case ActivityOutcome::none: break;
  }
  if (!state.input_error.empty()) return "failed";
  if (state.cancel_requested) return state.activity_scheduled_id ? "cancelling" : "cancelled";
  if (state.paused) return "paused";
  return state.activity_scheduled_id ? "running" : "pending";
}

std::string answer_query(const WorkflowState &state, const std::string &query_type) {
  if (query_type == "get_status") return json_string(status(state));
  if (query_type == "is_paused") return state.paused ? "true" : "false";
  if (query_type == "get_error") {
    std::string error = !state.input_error.empty() ? state.input_error : state.error;
    if (error.empty() && state.cancel_requested) error = "cancelled by " + state.cancel_reason;
    return error.empty() ? "null" : json_string(error);
  }
  throw std::invalid_argument("AgentWorkflow has no query " + query_type +
                              " (it answers get_status, is_paused, get_error)");
}

}  // namespace kodo::temporal
