// AgentWorkflow as a pure function of its history: each case builds the history a server would
// write and checks the commands, the state and the queries' answers. No server needed.
#include "agent_workflow.hpp"

#include <gtest/gtest.h>

namespace kodo::temporal {
namespace {

namespace history = ::temporal::api::history::v1;
namespace enums = ::temporal::api::enums::v1;

const char *kInput =
    R"({"fid":"f1","username":"alice","app_url":"/a","entry_point":"m:f","panel_url":"/p",)"
    R"("jwt":"t","inputs":{"x":1},"extra":{"k":"v"},"execution_timeout":30})";

class History {
 public:
  explicit History(const std::string &input = kInput) {
    auto &e = add(enums::EVENT_TYPE_WORKFLOW_EXECUTION_STARTED);
    *e.mutable_workflow_execution_started_event_attributes()->mutable_input()->add_payloads() =
        json_payload(input);
  }
  history::HistoryEvent &add(enums::EventType type) {
    auto *e = events_.add_events();
    e->set_event_id(events_.events_size());
    e->set_event_type(type);
    return *e;
  }
  History &signal(const std::string &name, const std::string &argument = "") {
    auto *a = add(enums::EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED)
                  .mutable_workflow_execution_signaled_event_attributes();
    a->set_signal_name(name);
    a->set_identity("tester@host");
    if (!argument.empty()) *a->mutable_input()->add_payloads() = json_payload(argument);
    return *this;
  }
  History &scheduled() {
    add(enums::EVENT_TYPE_ACTIVITY_TASK_SCHEDULED);
    return *this;
  }
  WorkflowState state() const { return fold(events_); }
  std::vector<::temporal::api::command::v1::Command> commands(ActivityOptions options = {}) const {
    return decide(state(), options, "q");
  }

 private:
  history::History events_;
};

TEST(AgentWorkflow, FirstTaskSchedulesTheActivityWithTheForksOptions) {
  auto commands = History().commands();
  ASSERT_EQ(commands.size(), 1u);
  ASSERT_EQ(commands[0].command_type(), enums::COMMAND_TYPE_SCHEDULE_ACTIVITY_TASK);
  const auto &a = commands[0].schedule_activity_task_command_attributes();
  EXPECT_EQ(a.activity_type().name(), "execute_agent");
  EXPECT_EQ(a.task_queue().name(), "q");
  EXPECT_EQ(a.start_to_close_timeout().seconds(), 30);  // the job's execution_timeout
  EXPECT_EQ(a.heartbeat_timeout().seconds(), 120);
  EXPECT_EQ(a.retry_policy().maximum_attempts(), 3);
  EXPECT_EQ(a.retry_policy().initial_interval().seconds(), 5);
  EXPECT_DOUBLE_EQ(a.retry_policy().backoff_coefficient(), 2.0);
  EXPECT_EQ(a.retry_policy().maximum_interval().seconds(), 60);
  JobInput input = job_input_from_json(payload_json(a.input().payloads(0), "input"));
  EXPECT_EQ(input.fid, "f1");
  EXPECT_EQ(input.username, "alice");
  EXPECT_EQ(input.entry_point, "m:f");
  EXPECT_EQ(input.inputs, R"({"x":1})");
  EXPECT_EQ(input.extra, R"({"k":"v"})");
  EXPECT_DOUBLE_EQ(input.execution_timeout, 30);
}

TEST(AgentWorkflow, ConfiguredOptionsWin) {
  ActivityOptions options;
  options.start_to_close = 7.5;
  options.heartbeat_timeout = 2;
  options.maximum_attempts = 5;
  auto a = History().commands(options)[0].schedule_activity_task_command_attributes();
  EXPECT_EQ(a.start_to_close_timeout().seconds(), 7);
  EXPECT_EQ(a.start_to_close_timeout().nanos(), 500000000);
  EXPECT_EQ(a.heartbeat_timeout().seconds(), 2);
  EXPECT_EQ(a.retry_policy().maximum_attempts(), 5);
}

TEST(AgentWorkflow, ScheduledActivityWaitsAndIsNeverScheduledTwice) {
  History h;
  h.scheduled();
  EXPECT_TRUE(h.commands().empty());
  EXPECT_EQ(status(h.state()), "running");
  h.signal("pause");
  EXPECT_TRUE(h.commands().empty());
}

TEST(AgentWorkflow, CompletedActivityCompletesWithItsResult) {
  History h;
  h.scheduled();
  auto &done = h.add(enums::EVENT_TYPE_ACTIVITY_TASK_COMPLETED);
  *done.mutable_activity_task_completed_event_attributes()->mutable_result()->add_payloads() =
      json_payload(R"({"fid":"f1","status":"finished","error":null})");
  auto commands = h.commands();
  ASSERT_EQ(commands.size(), 1u);
  EXPECT_EQ(commands[0].command_type(), enums::COMMAND_TYPE_COMPLETE_WORKFLOW_EXECUTION);
  auto result = job_result_from_json(payload_json(
      commands[0].complete_workflow_execution_command_attributes().result().payloads(0), "r"));
  EXPECT_EQ(result.status, "finished");
  EXPECT_EQ(status(h.state()), "completed");
  h.add(enums::EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED);
  EXPECT_TRUE(h.commands().empty());
}

TEST(AgentWorkflow, ActivityThatFailsForGoodFailsTheWorkflowWithTheCause) {
  History h;
  h.scheduled();
  auto *failure = h.add(enums::EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT)
                      .mutable_activity_task_timed_out_event_attributes()
                      ->mutable_failure();
  failure->set_message("activity Heartbeat timeout");
  auto commands = h.commands();
  ASSERT_EQ(commands[0].command_type(), enums::COMMAND_TYPE_FAIL_WORKFLOW_EXECUTION);
  EXPECT_NE(commands[0].fail_workflow_execution_command_attributes().failure().message().find(
                "Heartbeat timeout"),
            std::string::npos);
  EXPECT_EQ(answer_query(h.state(), "get_status"), R"("failed")");
  EXPECT_NE(answer_query(h.state(), "get_error").find("timed out"), std::string::npos);
}

TEST(AgentWorkflow, PauseAndResumeToggleAndRepeatsAreHarmless) {
  History h;
  h.scheduled().signal("pause").signal("pause");
  EXPECT_TRUE(h.state().paused);
  EXPECT_EQ(h.state().pauses, 1);
  EXPECT_EQ(answer_query(h.state(), "is_paused"), "true");
  EXPECT_EQ(answer_query(h.state(), "get_status"), R"("paused")");
  h.signal("resume").signal("resume");
  EXPECT_FALSE(h.state().paused);
  EXPECT_EQ(h.state().resumes, 1);
  EXPECT_EQ(answer_query(h.state(), "is_paused"), "false");
}

TEST(AgentWorkflow, CancelBeforeTheActivityEndsTheWorkflowCancelled) {
  History h;
  h.signal("cancel_workflow", R"({"by":"alice via the API"})");
  auto commands = h.commands();
  ASSERT_EQ(commands.size(), 1u);
  ASSERT_EQ(commands[0].command_type(), enums::COMMAND_TYPE_CANCEL_WORKFLOW_EXECUTION);
  auto result = job_result_from_json(payload_json(
      commands[0].cancel_workflow_execution_command_attributes().details().payloads(0), "d"));
  EXPECT_EQ(result.status, "error");
  EXPECT_EQ(result.error, "cancelled by alice via the API");
}

TEST(AgentWorkflow, CancelOfARunningActivityRequestsItsCancelOnceThenEnds) {
  History h;
  h.scheduled().signal("pause").signal("cancel_workflow").signal("cancel_workflow");
  EXPECT_FALSE(h.state().paused);  // a cancel ends a pause
  EXPECT_EQ(h.state().cancel_reason, "signal cancel_workflow from tester@host");
  auto commands = h.commands();
  ASSERT_EQ(commands.size(), 1u);
  ASSERT_EQ(commands[0].command_type(), enums::COMMAND_TYPE_REQUEST_CANCEL_ACTIVITY_TASK);
  EXPECT_EQ(commands[0].request_cancel_activity_task_command_attributes().scheduled_event_id(), 2);
  EXPECT_EQ(status(h.state()), "cancelling");
  h.add(enums::EVENT_TYPE_ACTIVITY_TASK_CANCEL_REQUESTED);
  EXPECT_TRUE(h.commands().empty());
  h.add(enums::EVENT_TYPE_ACTIVITY_TASK_CANCELED);
  commands = h.commands();
  ASSERT_EQ(commands[0].command_type(), enums::COMMAND_TYPE_CANCEL_WORKFLOW_EXECUTION);
  EXPECT_EQ(answer_query(h.state(), "get_error"),
            R"("cancelled by signal cancel_workflow from tester@host")");
}

TEST(AgentWorkflow, JobCancelledBeforeItsAttemptWasAskedStillEndsTheWorkflowCancelled) {
  History h;
  h.scheduled().signal("cancel_workflow", R"("alice")");
  auto &done = h.add(enums::EVENT_TYPE_ACTIVITY_TASK_COMPLETED);
  *done.mutable_activity_task_completed_event_attributes()->mutable_result()->add_payloads() =
      json_payload(R"({"fid":"f1","status":"error","error":"cancelled by alice"})");
  auto commands = h.commands();
  ASSERT_EQ(commands[0].command_type(), enums::COMMAND_TYPE_CANCEL_WORKFLOW_EXECUTION);
  EXPECT_EQ(
      job_result_from_json(
          payload_json(
              commands[0].cancel_workflow_execution_command_attributes().details().payloads(0),
              "d"))
          .error,
      "cancelled by alice");
  EXPECT_EQ(status(h.state()), "cancelled");
}

TEST(AgentWorkflow, TemporalsOwnCancelRequestCancelsToo) {
  History h;
  h.scheduled();
  auto *a = h.add(enums::EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED)
                .mutable_workflow_execution_cancel_requested_event_attributes();
  a->set_cause("operator");
  a->set_identity("cli@host");
  EXPECT_EQ(h.state().cancel_reason, "cancel request (operator) from cli@host");
  EXPECT_EQ(h.commands()[0].command_type(), enums::COMMAND_TYPE_REQUEST_CANCEL_ACTIVITY_TASK);
}

TEST(AgentWorkflow, SignalsAfterTheActivityEndedChangeNothing) {
  History h;
  h.scheduled();
  h.add(enums::EVENT_TYPE_ACTIVITY_TASK_COMPLETED);
  h.signal("pause").signal("cancel_workflow");
  EXPECT_FALSE(h.state().paused);
  EXPECT_FALSE(h.state().cancel_requested);
  EXPECT_EQ(h.commands()[0].command_type(), enums::COMMAND_TYPE_COMPLETE_WORKFLOW_EXECUTION);
}

TEST(AgentWorkflow, BadInputFailsTheWorkflowNamingTheField) {
  History h(R"({"username":"alice"})");
  auto commands = h.commands();
  ASSERT_EQ(commands[0].command_type(), enums::COMMAND_TYPE_FAIL_WORKFLOW_EXECUTION);
  EXPECT_EQ(commands[0].fail_workflow_execution_command_attributes().failure().message(),
            "job input: field fid is missing");
  EXPECT_EQ(History(R"([1,2])")
                .commands()[0]
                .fail_workflow_execution_command_attributes()
                .failure()
                .message(),
            "job input: not a JSON object");
}

TEST(AgentWorkflow, UnknownQueryIsRefusedByName) {
  try {
    answer_query(History().state(), "get_secret");
    FAIL();
  } catch (const std::invalid_argument &e) {
    EXPECT_NE(std::string(e.what()).find("get_secret"), std::string::npos);
  }
  EXPECT_EQ(answer_query(History().state(), "get_error"), "null");
  EXPECT_EQ(answer_query(History().state(), "get_status"), R"("pending")");
}

TEST(Payload, JobInputRoundTripsAndNullsReadAsEmpty) {
  JobInput input =
      job_input_from_json(R"({"fid":"f","username":"u","app_url":null,"jwt":null,"inputs":null})");
  EXPECT_EQ(input.app_url, "");
  EXPECT_EQ(input.inputs, "{}");
  EXPECT_DOUBLE_EQ(input.execution_timeout, 3600);
  JobInput again = job_input_from_json(to_json(input));
  EXPECT_EQ(again.fid, "f");
  EXPECT_THROW(job_input_from_json(R"({"fid":"f","username":3})"), std::runtime_error);
  EXPECT_THROW(job_input_from_json(R"({"fid":"f","username":"u","execution_timeout":-1})"),
               std::runtime_error);
}

TEST(Payload, OnlyJsonPlainIsRead) {
  auto payload = json_payload("{}");
  (*payload.mutable_metadata())["encoding"] = "binary/protobuf";
  try {
    payload_json(payload, "job input");
    FAIL();
  } catch (const std::runtime_error &e) {
    EXPECT_STREQ(e.what(), "job input: payload encoding is binary/protobuf, expected json/plain");
  }
  EXPECT_EQ(job_result_from_json(to_json(JobResult{"f", "error", "boom"})).error, "boom");
}

}  // namespace
}  // namespace kodo::temporal
