// agent_workflow.hpp: the fixed workflow AgentWorkflow, written by hand because no Temporal SDK
// exists for C++. It is a pure function of the workflow's history: fold() rebuilds the state
// from the events, decide() says which commands the next workflow task answers with, and
// answer_query() serves the queries. Nothing is kept between tasks (no sticky queue), so any
// worker can take any task, and the same code replays the same history to the same commands.
//
// The workflow: schedule the activity execute_agent with the job input; signals pause and
// resume set the paused state (the activity worker delivers it to the running job, see
// activity_worker.hpp); cancel_workflow or a Temporal cancel request cancels the activity
// (RequestCancelActivityTask) and then ends the workflow cancelled; the activity's result
// completes it; an activity that fails for good (retries spent, or timed out) fails it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "payload.hpp"
#include "temporal/api/command/v1/message.pb.h"
#include "temporal/api/history/v1/message.pb.h"

namespace kodo::temporal {

inline constexpr const char *kWorkflowType = "AgentWorkflow";
inline constexpr const char *kActivityType = "execute_agent";

// The activity's options; the fork's values by default. start_to_close 0 takes the job's
// execution_timeout.
struct ActivityOptions {
  double start_to_close = 0;
  double heartbeat_timeout = 120;
  int maximum_attempts = 3;
  double initial_interval = 5;
  double backoff_coefficient = 2.0;
  double maximum_interval = 60;
};

enum class ActivityOutcome { none, completed, failed, timed_out, canceled };

struct WorkflowState {
  bool started = false;
  JobInput input;
  std::string input_error;  // the job input could not be read: the workflow fails
  bool paused = false;
  int pauses = 0;
  int resumes = 0;
  bool cancel_requested = false;
  std::string cancel_reason;  // who asked, from the signal's argument or the cancel request
  // Temporal writes ActivityTaskStarted only when the attempt ends, so the history knows an
  // activity as scheduled until then (DescribeWorkflowExecution knows the attempt running).
  std::int64_t activity_scheduled_id = 0;
  bool activity_cancel_requested = false;
  ActivityOutcome outcome = ActivityOutcome::none;
  std::string result_json;  // the activity's result (completed) or details (canceled)
  std::string error;        // why the activity failed or timed out
  bool closed = false;      // the workflow itself completed, failed, was cancelled or ended
};

// Applies one history event to the state. Events of no interest are skipped.
void apply(WorkflowState &state, const ::temporal::api::history::v1::HistoryEvent &event);
WorkflowState fold(const ::temporal::api::history::v1::History &history);

// The commands that answer a workflow task over this state; empty while there is nothing to do.
std::vector<::temporal::api::command::v1::Command> decide(const WorkflowState &state,
                                                          const ActivityOptions &options,
                                                          const std::string &task_queue);

// get_status: "pending" (activity not yet scheduled), "running", "paused", "cancelling",
// "completed", "failed" or "cancelled".
std::string status(const WorkflowState &state);
// JSON text answering get_status, is_paused or get_error; throws std::invalid_argument naming an
// unknown query.
std::string answer_query(const WorkflowState &state, const std::string &query_type);

}  // namespace kodo::temporal
