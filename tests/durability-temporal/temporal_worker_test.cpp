// The client, AgentWorkflow and the activity worker against a real Temporal dev server, one per
// test on its own loopback ports: idempotent starts, a full workflow, queries, pause and resume,
// cancel at every stage, a worker process killed mid-activity and retried, a server restart, a
// server that is not there, and Temporal's own Python SDK as the client of kodo's worker.
// Every wait is bounded and fails with what was seen; nothing asserts on elapsed time.
#include <gtest/gtest.h>

#include <functional>
#include <thread>

#include "step_job.hpp"
#include "temporal_server.hpp"

namespace kodo::temporal {
namespace {

using kodo::testing::StepLog;
using kodo::testing::TemporalServer;
namespace enums = ::temporal::api::enums::v1;

bool eventually(const std::function<bool()> &condition, int timeout_ms = 60000) {
  for (int waited = 0; waited < timeout_ms; waited += 50) {
    if (condition()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return condition();
}

std::string join(const std::vector<std::string> &lines) {
  std::string all;
  for (const auto &line : lines) all += line + "\n";
  return all;
}

class TemporalWorkerTest : public ::testing::Test {
 protected:
  explicit TemporalWorkerTest(bool persistent = false) : server_(persistent) {}

  void SetUp() override {
    ASSERT_NO_THROW(server_.start());
    ClientOptions options;
    options.address = server_.address();
    client_ = std::make_unique<TemporalClient>(options);
    workflow_options_.task_queue = task_queue_;
    // Short, so that a lost worker's attempt is retried within seconds.
    workflow_options_.activity.heartbeat_timeout = 2;
    workflow_options_.activity.initial_interval = 0.5;
    workflow_options_.activity.maximum_interval = 1;
    activity_options_.task_queue = task_queue_;
    activity_options_.heartbeat_interval = 0.3;
  }

  void TearDown() override {
    activities_.reset();
    workflows_.reset();
    if (HasFailure())
      std::cerr << "--- job log ---\n"
                << join(log_.lines()) << "--- temporal log ---\n"
                << server_.log();
  }

  void start_workflow_worker() {
    workflows_ = std::make_unique<WorkflowWorker>(*client_, workflow_options_);
    workflows_->start();
  }
  void start_activity_worker() {
    activities_ = std::make_unique<ActivityWorker>(
        *client_, activity_options_, [this](Job &job) { return testing::run_steps(job, log_); });
    activities_->start();
  }
  void start_workers() {
    start_workflow_worker();
    start_activity_worker();
  }

  // `request_id` names this submit: the same submit sent again (a retry, a restarted host)
  // carries the same one.
  StartResult launch(const std::string &fid, int steps, int step_ms,
                     const std::string &request_id = "") {
    JobInput input;
    input.fid = fid;
    input.username = "alice";
    input.entry_point = "tests:steps";
    input.inputs =
        R"({"steps":)" + std::to_string(steps) + R"(,"step_ms":)" + std::to_string(step_ms) + "}";
    input.execution_timeout = 600;
    StartRequest request;
    request.workflow_id = "kodo-" + fid;
    request.task_queue = task_queue_;
    request.input_json = to_json(input);
    request.request_id = request_id.empty() ? "launch-" + fid : request_id;
    return client_->start_workflow(request);
  }

  bool logged(const std::string &line) {
    return eventually([&] { return log_.has(line); });
  }

  wf::DescribeWorkflowExecutionResponse describe(const std::string &fid) {
    return client_->describe("kodo-" + fid);
  }

  TemporalServer server_;
  std::unique_ptr<TemporalClient> client_;
  std::string task_queue_ = "kodo-test-" + std::to_string(getpid());
  WorkflowWorkerOptions workflow_options_;
  ActivityWorkerOptions activity_options_;
  StepLog log_;
  std::unique_ptr<WorkflowWorker> workflows_;
  std::unique_ptr<ActivityWorker> activities_;
};

TEST_F(TemporalWorkerTest, SameFidTwiceStartsOneWorkflowAndDescribeNeedsNoWorker) {
  StartResult first = launch("f-twice", 3, 10, "submit-1");
  EXPECT_TRUE(first.started);
  // The same submit again (a retried call): Temporal answers it as it did the first time.
  StartResult retried = launch("f-twice", 3, 10, "submit-1");
  EXPECT_EQ(retried.run_id, first.run_id);
  // Another submit of the same fid: the running workflow, not a second one.
  StartResult again = launch("f-twice", 3, 10, "submit-2");
  EXPECT_FALSE(again.started);
  EXPECT_EQ(again.run_id, first.run_id);
  EXPECT_NE(server_.cli({"workflow", "count"}).find("Total: 1"), std::string::npos)
      << server_.cli({"workflow", "count"});

  auto described = describe("f-twice");
  EXPECT_EQ(described.workflow_execution_info().status(), enums::WORKFLOW_EXECUTION_STATUS_RUNNING);
  EXPECT_EQ(described.workflow_execution_info().type().name(), "AgentWorkflow");
  EXPECT_EQ(described.workflow_execution_info().task_queue(), task_queue_);
  EXPECT_EQ(described.pending_activities_size(), 0) << "no worker has scheduled it yet";
  EXPECT_NE(server_.cli({"workflow", "list"}).find("kodo-f-twice"), std::string::npos);
}

TEST_F(TemporalWorkerTest, WorkflowCompletesWithTheJobsResultReadableByTheCli) {
  start_workers();
  launch("f-full", 3, 10);
  auto closed = client_->wait_closed("kodo-f-full");
  ASSERT_EQ(closed.event_type(), enums::EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED);
  auto result = job_result_from_json(payload_json(
      closed.workflow_execution_completed_event_attributes().result().payloads(0), "result"));
  EXPECT_EQ(result.fid, "f-full");
  EXPECT_EQ(result.status, "finished");
  EXPECT_EQ(result.error, "");
  EXPECT_TRUE(log_.has("f-full attempt 1 from step 0"));
  EXPECT_TRUE(log_.has("f-full step 2"));
  // The CLI decodes json/plain: the fork's input and result read as JSON.
  std::string shown = server_.cli({"workflow", "show", "--detailed", "-w", "kodo-f-full"});
  EXPECT_NE(shown.find("tests:steps"), std::string::npos) << shown;
  std::string result_shown = server_.cli({"workflow", "result", "-w", "kodo-f-full"});
  EXPECT_NE(result_shown.find("finished"), std::string::npos) << result_shown;
  EXPECT_EQ(client_->query("kodo-f-full", "get_status"), R"("completed")");
}

TEST_F(TemporalWorkerTest, QueriesAnswerWhileRunningAndUnknownOnesAreRefused) {
  start_workers();
  launch("f-query", 1000, 20);
  ASSERT_TRUE(logged("f-query step 1"));
  EXPECT_EQ(client_->query("kodo-f-query", "get_status"), R"("running")");
  EXPECT_EQ(client_->query("kodo-f-query", "is_paused"), "false");
  EXPECT_EQ(client_->query("kodo-f-query", "get_error"), "null");
  try {
    client_->query("kodo-f-query", "get_secret");
    ADD_FAILURE() << "an unknown query was answered";
  } catch (const TemporalError &e) {
    EXPECT_NE(std::string(e.what()).find("get_secret"), std::string::npos) << e.what();
  }
  // Status with the workflow's own view: attempt and last heartbeat of the running activity.
  ASSERT_TRUE(eventually([&] {
    auto d = describe("f-query");
    return d.pending_activities_size() == 1 &&
           d.pending_activities(0).heartbeat_details().payloads_size() == 1;
  }));
  auto activity = describe("f-query").pending_activities(0);
  EXPECT_EQ(activity.activity_type().name(), "execute_agent");
  EXPECT_EQ(activity.attempt(), 1);
  EXPECT_EQ(activity.state(), enums::PENDING_ACTIVITY_STATE_STARTED);
  client_->signal("kodo-f-query", "cancel_workflow");
  EXPECT_EQ(client_->wait_closed("kodo-f-query").event_type(),
            enums::EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED);
}

TEST_F(TemporalWorkerTest, PauseStopsTheRunningJobAndResumeContinuesIt) {
  start_workers();
  launch("f-pause", 30, 20);
  ASSERT_TRUE(logged("f-pause step 1"));
  client_->signal("kodo-f-pause", "pause");
  client_->signal("kodo-f-pause", "pause");  // twice: still one pause
  ASSERT_TRUE(eventually([&] {
    auto lines = log_.lines();
    return lines.back().find("paused at") != std::string::npos;
  })) << join(log_.lines());
  EXPECT_EQ(client_->query("kodo-f-pause", "is_paused"), "true");
  EXPECT_EQ(client_->query("kodo-f-pause", "get_status"), R"("paused")");
  // Any client: the temporal CLI queries and resumes it.
  EXPECT_NE(
      server_.cli({"workflow", "query", "-w", "kodo-f-pause", "--type", "is_paused"}).find("true"),
      std::string::npos);
  const size_t lines_when_paused = log_.lines().size();
  server_.cli({"workflow", "signal", "-w", "kodo-f-pause", "--name", "resume"});
  auto closed = client_->wait_closed("kodo-f-pause");
  ASSERT_EQ(closed.event_type(), enums::EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED);
  auto lines = log_.lines();
  ASSERT_GT(lines.size(), lines_when_paused);
  EXPECT_NE(lines[lines_when_paused].find("resumed at"), std::string::npos)
      << "a step ran while paused:\n"
      << join(lines);
  int pauses = 0;
  for (const auto &line : lines) pauses += line.find("paused at") != std::string::npos;
  EXPECT_EQ(pauses, 1) << join(lines);
  EXPECT_TRUE(log_.has("f-pause finished"));
}

TEST_F(TemporalWorkerTest, CancelSignalEndsTheRunningJobAndTheWorkflowCancelled) {
  start_workers();
  launch("f-cancel", 1000, 20);
  ASSERT_TRUE(logged("f-cancel step 1"));
  client_->signal("kodo-f-cancel", "cancel_workflow", std::string(R"({"by":"alice via the API"})"));
  client_->signal("kodo-f-cancel", "cancel_workflow");  // twice: the first reason stands
  auto closed = client_->wait_closed("kodo-f-cancel");
  ASSERT_EQ(closed.event_type(), enums::EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED);
  auto result = job_result_from_json(payload_json(
      closed.workflow_execution_canceled_event_attributes().details().payloads(0), "details"));
  EXPECT_EQ(result.status, "error");
  EXPECT_EQ(result.error, "cancelled by alice via the API");
  EXPECT_TRUE(log_.has("f-cancel cancelled: alice via the API")) << join(log_.lines());
  EXPECT_EQ(client_->query("kodo-f-cancel", "get_status"), R"("cancelled")");
  EXPECT_EQ(client_->query("kodo-f-cancel", "get_error"), R"("cancelled by alice via the API")");
}

TEST_F(TemporalWorkerTest, TemporalCancelRequestCancelsTheRunningJobToo) {
  start_workers();
  launch("f-tcancel", 1000, 20);
  ASSERT_TRUE(logged("f-tcancel step 1"));
  client_->request_cancel("kodo-f-tcancel", "operator");
  ASSERT_EQ(client_->wait_closed("kodo-f-tcancel").event_type(),
            enums::EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED);
  ASSERT_TRUE(eventually([&] { return activities_->running() == 0; }));
  bool cancelled = false;
  for (const auto &line : log_.lines())
    cancelled |= line.rfind("f-tcancel cancelled: cancel request (operator)", 0) == 0;
  EXPECT_TRUE(cancelled) << join(log_.lines());
}

TEST_F(TemporalWorkerTest, CancelBeforeAnyActivityWorkerEndsTheWorkflowCancelled) {
  start_workflow_worker();
  launch("f-early", 3, 10);
  ASSERT_TRUE(eventually([&] { return describe("f-early").pending_activities_size() == 1; }));
  client_->signal("kodo-f-early", "cancel_workflow");
  ASSERT_EQ(client_->wait_closed("kodo-f-early").event_type(),
            enums::EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED);
  start_activity_worker();
  EXPECT_TRUE(log_.lines().empty()) << "a cancelled job ran:\n" << join(log_.lines());
}

TEST_F(TemporalWorkerTest, PauseBeforeTheAttemptStartsHoldsItFromItsFirstStep) {
  start_workflow_worker();
  launch("f-prepause", 5, 10);
  ASSERT_TRUE(eventually([&] { return describe("f-prepause").pending_activities_size() == 1; }));
  client_->signal("kodo-f-prepause", "pause");
  start_activity_worker();
  ASSERT_TRUE(logged("f-prepause paused at step 0"));
  EXPECT_FALSE(log_.has("f-prepause step 0"));
  client_->signal("kodo-f-prepause", "resume");
  ASSERT_EQ(client_->wait_closed("kodo-f-prepause").event_type(),
            enums::EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED);
  EXPECT_TRUE(log_.has("f-prepause resumed at step 0"));
}

TEST_F(TemporalWorkerTest, WorkerProcessKilledMidActivityIsRetriedFromItsLastHeartbeat) {
  kodo::testing::TempDir dir("kodo-temporal-worker");
  kodo::testing::ServiceProcess worker;
  worker.start({TEMPORAL_TEST_WORKER, server_.address(), task_queue_, "0.2", "2"}, "",
               dir.path() + "/worker.log");
  launch("f-lost", 1000, 30);
  ASSERT_TRUE(eventually([&] {
    auto d = describe("f-lost");
    return d.pending_activities_size() == 1 &&
           d.pending_activities(0).heartbeat_details().payloads_size() == 1;
  })) << worker.log();
  worker.stop(SIGKILL);

  // Lost, not finished: Temporal shows the workflow running and its activity pending.
  auto described = describe("f-lost");
  EXPECT_EQ(described.workflow_execution_info().status(), enums::WORKFLOW_EXECUTION_STATUS_RUNNING);
  ASSERT_EQ(described.pending_activities_size(), 1);
  ASSERT_EQ(described.pending_activities(0).heartbeat_details().payloads_size(), 1);
  const std::string last = payload_json(
      described.pending_activities(0).heartbeat_details().payloads(0), "heartbeat details");
  const int last_step = testing::int_member(last, "step", -1);
  EXPECT_GE(last_step, 0) << last;

  // Another worker takes the retry after the heartbeat timeout, with attempt 2 and the
  // lost attempt's last heartbeat.
  start_workers();
  ASSERT_TRUE(eventually([&] {
    for (const auto &line : log_.lines())
      if (line.rfind("f-lost attempt 2 from step ", 0) == 0) return true;
    return false;
  })) << join(log_.lines());
  EXPECT_TRUE(log_.has("f-lost attempt 2 from step " + std::to_string(last_step + 1)))
      << join(log_.lines()) << "last heartbeat seen: " << last;
  client_->signal("kodo-f-lost", "cancel_workflow", std::string(R"("test over")"));
  ASSERT_EQ(client_->wait_closed("kodo-f-lost").event_type(),
            enums::EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED);
  const std::string timeline = server_.cli({"workflow", "show", "-w", "kodo-f-lost"});
  EXPECT_NE(timeline.find("ActivityTaskStarted"), std::string::npos) << timeline;
}

TEST_F(TemporalWorkerTest, AFullWorkerTakesNoMoreJobsAndAStoppedOneHandsItsJobsBack) {
  activity_options_.max_concurrent = 1;
  start_workers();
  launch("f-first", 10, 20);
  launch("f-second", 2, 10);
  ASSERT_TRUE(logged("f-first step 1"));
  ASSERT_TRUE(logged("f-second finished"));
  EXPECT_LT(log_.index("f-first finished"), log_.index("f-second attempt 1 from step 0"))
      << join(log_.lines());
  launch("f-third", 1000, 20);
  ASSERT_TRUE(logged("f-third step 1"));
  client_->signal("kodo-f-third", "pause");
  ASSERT_TRUE(eventually([&] {
    auto lines = log_.lines();
    return lines.back().rfind("f-third paused at", 0) == 0;
  })) << join(log_.lines());
  activities_->stop();  // a paused job does not hold it up
  EXPECT_TRUE(log_.has(std::string("f-third cancelled: ") + ActivityWorker::kStopping))
      << join(log_.lines());
  // Handed back, not ended: another worker takes attempt 2, from the last heartbeat.
  ASSERT_TRUE(eventually([&] {
    auto d = describe("f-third");
    return d.pending_activities_size() == 1 && d.pending_activities(0).attempt() == 2;
  }));
  EXPECT_EQ(describe("f-third").workflow_execution_info().status(),
            enums::WORKFLOW_EXECUTION_STATUS_RUNNING);
}

TEST_F(TemporalWorkerTest, ServerThatIsNotThereIsNamedInTheError) {
  ClientOptions options;
  options.address = "127.0.0.1:" + std::to_string(testing::free_loopback_port());
  options.retry_for = 0.5;
  TemporalClient absent(options);
  try {
    absent.check_namespace();
    FAIL() << "no server, no error";
  } catch (const TemporalError &e) {
    EXPECT_TRUE(e.unavailable());
    EXPECT_NE(std::string(e.what()).find("temporal at " + options.address), std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find("DescribeNamespace"), std::string::npos) << e.what();
  }
}

TEST_F(TemporalWorkerTest, TemporalsPythonSdkDrivesKodosWorker) {
  start_workers();
  kodo::testing::TempDir dir("kodo-temporal-peer");
  const std::string out = dir.path() + "/peer.out";
  int rc = kodo::testing::run_as({TemporalServer::venv() + "/bin/python", PYTHON_PEER,
                                  server_.address(), task_queue_, "kodo-f-peer"},
                                 "", out);
  const std::string seen = kodo::testing::slurp(out);
  ASSERT_EQ(rc, 0) << seen;
  EXPECT_NE(seen.find(R"("is_paused_after_pause": true)"), std::string::npos) << seen;
  EXPECT_NE(seen.find(R"("status_while_paused": "paused")"), std::string::npos) << seen;
  EXPECT_NE(seen.find(R"("is_paused_after_resume": false)"), std::string::npos) << seen;
  EXPECT_NE(seen.find(R"("error": null)"), std::string::npos) << seen;
  EXPECT_NE(seen.find(R"("result": {"fid": "f-peer", "status": "finished", "error": null})"),
            std::string::npos)
      << seen;
  EXPECT_NE(seen.find(R"("status_at_end": "completed")"), std::string::npos) << seen;
  EXPECT_TRUE(log_.has("f-peer finished")) << join(log_.lines());
}

class TemporalRestartTest : public TemporalWorkerTest {
 protected:
  TemporalRestartTest() : TemporalWorkerTest(/*persistent=*/true) {}
};

TEST_F(TemporalRestartTest, RunningWorkflowSurvivesAServerRestart) {
  workflow_options_.activity.heartbeat_timeout = 20;
  start_workers();
  const std::string closed_run_id = launch("f-restart", 60, 50).run_id;
  ASSERT_TRUE(logged("f-restart step 1"));
  server_.restart();
  auto closed = client_->wait_closed("kodo-f-restart");
  ASSERT_EQ(closed.event_type(), enums::EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED)
      << closed.DebugString();
  EXPECT_TRUE(log_.has("f-restart finished"));
  // The same fid again, as a host restarted between launch and start would send it: no rerun.
  StartResult again = launch("f-restart", 60, 50, "another-submit");
  EXPECT_FALSE(again.started);
  EXPECT_EQ(again.run_id, closed_run_id);
}

}  // namespace
}  // namespace kodo::temporal
