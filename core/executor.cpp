// executor.cpp: child processes, their pipes and the events made from them (see executor.hpp).
//
// Ownership of state: what launch(), cancel() and shutdown() share with the supervisor thread
// (runs_, queue_, slots, a run's phase and cancel request, stats) is guarded by mu_. Everything
// else about a run (its child, pipes, seq counter, unpublished events) belongs to the
// supervisor thread alone, once launch() has handed the run over.
#include "core/executor.hpp"

#include <kodo/host/log.hpp>

#include <kodo/host/error.hpp>
#include "core/event_line.hpp"
#include "core/flow_env.hpp"
#include "core/flow_spawn.hpp"
#include "core/ids.hpp"
#include "core/kodosumi_payload.hpp"
#include "core/locks.hpp"
#include "core/run_cgroup.hpp"
#include "core/write_all.hpp"

#include <rapidjson/error/en.h>
#include <rapidjson/memorystream.h>
#include <rapidjson/reader.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <iterator>
#include <system_error>
#include <tuple>
#include <utility>

#include <fcntl.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

namespace kodo {

namespace {

using Clock = std::chrono::steady_clock;
using TimePoint = Clock::time_point;

constexpr size_t kReadChunk =
    size_t{64} * 1024;                    // per descriptor per poll round: keeps rounds fair
constexpr double kDrainGraceS = 1.0;      // how long an exited child's pipes may stay open
constexpr double kLeftoversWaitS = 10.0;  // for SIGKILLed processes to leave a run's cgroup
constexpr int kBackoffFirstMs = 50;
constexpr int kBackoffMaxMs = 1000;
constexpr int kChildEventsFd = 3;
constexpr int kChildAnswersFd = 4;  // the highest descriptor a child is given
constexpr int kTickMs = 50;         // exit polling when pidfd_open is unavailable

TimePoint after(double seconds) {
  seconds = std::clamp(seconds, 0.0, 1e7);
  return Clock::now() +
         std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
}

double seconds_between(TimePoint from, TimePoint to) {
  return std::chrono::duration<double>(to - from).count();
}

std::string errno_text(int e) {
  return std::generic_category().message(e);
}

std::string format_seconds(double s) {
  char buf[32];
  const int n = std::snprintf(buf, sizeof buf, "%g", s);
  return std::string(buf, n > 0 ? std::min(static_cast<size_t>(n), sizeof buf - 1) : 0);
}

// Each line at its own level: a sink taking events again is news, not an error.
void log_executor(int32_t level, const std::string &message) {
  log_line(level, "executor: " + message);
}

std::string signal_name(int sig) {
  switch (sig) {
    case SIGHUP: return "SIGHUP";
    case SIGINT: return "SIGINT";
    case SIGQUIT: return "SIGQUIT";
    case SIGILL: return "SIGILL";
    case SIGTRAP: return "SIGTRAP";
    case SIGABRT: return "SIGABRT";
    case SIGBUS: return "SIGBUS";
    case SIGFPE: return "SIGFPE";
    case SIGKILL: return "SIGKILL";
    case SIGUSR1: return "SIGUSR1";
    case SIGSEGV: return "SIGSEGV";
    case SIGUSR2: return "SIGUSR2";
    case SIGPIPE: return "SIGPIPE";
    case SIGALRM: return "SIGALRM";
    case SIGTERM: return "SIGTERM";
    case SIGXCPU: return "SIGXCPU";
    case SIGXFSZ: return "SIGXFSZ";
    case SIGSYS: return "SIGSYS";
    default: return "signal " + std::to_string(sig);
  }
}

// A descriptor closed when it goes out of scope.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd &&other) noexcept : fd_(other.release()) {}
  Fd &operator=(Fd &&other) noexcept {
    if (this != &other) reset(other.release());
    return *this;
  }
  Fd(const Fd &) = delete;
  Fd &operator=(const Fd &) = delete;
  ~Fd() { reset(); }
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }
  void reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

// Moves a descriptor to a number above the child's fixed ones (0-4), so that the dup2
// actions that set those up can never overwrite a source they still need.
bool move_above_child_fds(Fd &fd) {
  if (fd.get() > kChildAnswersFd) return true;
  const int moved = ::fcntl(fd.get(), F_DUPFD_CLOEXEC, kChildAnswersFd + 1);
  if (moved < 0) return false;
  fd.reset(moved);
  return true;
}

// Why `json` is not a JSON object, or empty. Iterative, so any nesting is safe.
struct ObjectRootCheck : rapidjson::BaseReaderHandler<rapidjson::UTF8<>, ObjectRootCheck> {
  bool seen_root = false;
  bool Default() { return std::exchange(seen_root, true); }  // a scalar root stops the parse
  bool StartObject() {
    seen_root = true;
    return true;
  }
};

std::string json_object_problem(const std::string &json) {
  if (const size_t nul = json.find('\0'); nul != std::string::npos)
    return "NUL byte at offset " + std::to_string(nul);
  ObjectRootCheck check;
  rapidjson::Reader reader;
  rapidjson::MemoryStream stream(json.data(), json.size());
  const auto result =
      reader.Parse<rapidjson::kParseIterativeFlag | rapidjson::kParseValidateEncodingFlag>(stream,
                                                                                           check);
  if (result.Code() == rapidjson::kParseErrorTermination) return "not an object";
  if (result.IsError())
    return "not JSON at offset " + std::to_string(result.Offset()) + ": " +
           rapidjson::GetParseError_En(result.Code());
  return {};
}

// The meta event, as kodosumi's runner writes it (kodosumi/runner/main.py): its keys in its
// order, the version under "kodosumi" (its panel reads that key), then wrapped by serialize().
std::string meta_json(const std::string &fid, const std::string &username,
                      const std::string &app_url, const FlowSpec &flow) {
  rapidjson::StringBuffer out;
  rapidjson::Writer<rapidjson::StringBuffer> w(out);
  auto field = [&w](const char *key, const std::string &value) {
    w.Key(key);
    w.String(value.data(), static_cast<rapidjson::SizeType>(value.size()));
  };
  auto none = [&w](const char *key) {
    w.Key(key);
    w.Null();
  };
  w.StartObject();
  w.Key("dict");
  w.StartObject();
  field("fid", fid);
  field("username", username);
  field("app_url", app_url);
  none("panel_url");
  field("entry_point", flow.name);
  field("kodosumi", std::string("kodo ") + KODO_VERSION);
  w.Key("tags");
  w.StartArray();
  w.EndArray();
  field("summary", flow.description);
  field("description", flow.description);
  w.Key("deprecated");
  w.Bool(false);
  none("author");
  none("organization");
  none("version");
  w.EndObject();
  w.EndObject();
  return std::string(out.GetString(), out.GetSize());
}

}  // namespace

struct Executor::Pipe {
  explicit Pipe(const char *pipe_name) : name(pipe_name) {}
  const char *name;         // "stdout", "stderr", "events" or "answers"
  int fd = -1;              // our end (read; write for answers); -1 once closed
  std::string line;         // the current line so far, at most max_event_bytes
  bool discarding = false;  // the current line is too long; skip to its newline
  size_t discarded = 0;     // bytes of that line so far
  uint64_t line_no = 0;
};

struct Executor::Run {
  enum class Phase { queued, running, ending };

  Run() = default;
  // Owns its pipes' descriptors (closed by the destructor) and is shared by pointer only.
  Run(const Run &) = delete;
  Run &operator=(const Run &) = delete;

  std::string fid;
  std::string username;
  const FlowSpec *flow = nullptr;
  std::string inputs;

  // Guarded by mu_.
  Phase phase = Phase::queued;
  bool holds_slot = false;
  bool cancel_requested = false;
  std::string cancel_reason;
  double cancel_grace_s = 0;
  // Locks by lid (answered ones stay, so a second answer is told so), and answers taken for
  // them, not yet delivered.
  struct OpenLock {
    std::string name;
    TimePoint expires_at;
    std::string expires_text;  // the stored expiry, for the message if it passes
    bool answered = false;
  };
  struct Answer {
    std::string lid, name, result_json;
  };
  std::map<std::string, OpenLock> locks;
  std::vector<Answer> answers_in;
  bool pause_wanted = false;
  std::string pause_reason;

  // The supervisor's alone from here on.
  bool cancel_seen = false;
  bool paused = false;  // its process group was sent SIGSTOP (and no SIGCONT since)
  TimePoint paused_at;  // when, so that the time limit can skip the paused time
  int64_t next_seq = 0;
  pid_t pid = -1;
  Fd pidfd;
  bool exit_ready = false;  // the pidfd said the child exited
  Pipe out{"stdout"}, err{"stderr"}, events{"events"};
  Pipe answers{"answers"};  // to the flow: answer lines, written as it reads them
  std::string answers_out;  // answer lines not yet written
  TimePoint next_lock_expiry = TimePoint::max();
  bool started = false;
  bool exited = false;
  int wait_status = 0;
  bool status_lost = false;  // someone else reaped the child (SIGCHLD ignored)
  bool final_seen = false;
  std::string stop_reason;  // why the run is being stopped, or why it failed to start
  bool has_timeout = false;
  TimePoint timeout_at;
  bool term_sent = false, kill_sent = false;
  TimePoint kill_at;
  TimePoint drain_until;
  bool drain_killed = false;
  std::unique_ptr<RunCgroup> cgroup;  // null: contained by its process group only
  bool leftovers_killed = false;      // what the child left behind was sent SIGKILL
  TimePoint leftovers_until;          // how long to wait for them to go
  bool outcome_emitted = false;

  std::vector<Event> pending;  // made, not yet taken by the sink: always a suffix by seq
  bool failing = false;        // the sink refused this run's events; retrying on its own
  TimePoint failing_since, next_attempt;
  int backoff_ms = kBackoffFirstMs;
  bool transport_failed = false;  // gave up on refused events; only the outcome remains

  Pipe *pipes[3] = {&out, &err, &events};
  bool pipes_open() const { return out.fd >= 0 || err.fd >= 0 || events.fd >= 0; }
  // Reading stops while the sink refuses, so unpublished events cannot pile up; it resumes
  // (discarding) once the run is given up, so the dying child never blocks on a full pipe.
  bool reading_allowed() const { return !failing || transport_failed; }
  ~Run() {
    for (Pipe *p : pipes)
      if (p->fd >= 0) ::close(p->fd);
    if (answers.fd >= 0) ::close(answers.fd);
  }
};

Executor::Executor(ExecutorConfig config, std::vector<FlowSpec> flows, EventSink &sink)
    : config_(std::move(config)), flows_(std::move(flows)), sink_(sink) {
  if (config_.max_running == 0)
    throw Error(KODO_ERR_INVALID_ARGUMENT, "executor: max_running must be at least 1");
  for (size_t i = 0; i < flows_.size(); ++i) {
    const FlowSpec &f = flows_[i];
    if (f.name.empty()) throw Error(KODO_ERR_INVALID_ARGUMENT, "executor: a flow has no name");
    if (f.argv.empty() || f.argv[0].empty())
      throw Error(KODO_ERR_INVALID_ARGUMENT,
                  "executor: flow " + quote_excerpt(f.name) + " has no executable (argv[0])");
    for (const std::string &kv : f.env)
      if (std::string problem = flow_env_entry_problem(kv); !problem.empty())
        throw Error(KODO_ERR_INVALID_ARGUMENT,
                    "executor: flow " + quote_excerpt(f.name) + ": " + problem);
    if (!flow_index_.emplace(f.name, i).second)
      throw Error(KODO_ERR_INVALID_ARGUMENT,
                  "executor: flow " + quote_excerpt(f.name) + " is defined twice");
  }
  // The host environment is read once, here: setenv elsewhere in the process later would race
  // with reading environ from the supervisor thread.
  for (char **e = environ; e && *e; ++e) {
    host_env_.emplace_back(*e);
    if (host_env_.back().rfind("PATH=", 0) == 0) host_path_ = host_env_.back().substr(5);
  }
  if (config_.cgroups) {
    std::string why_not;
    cgroups_ = RunCgroups::create(&why_not);
    if (!cgroups_) containment_ = "process groups only (cgroup v2 unavailable: " + why_not + ")";
  } else {
    containment_ = "process groups only (cgroups turned off)";
  }
  if (cgroups_) containment_ = "a cgroup v2 per run under " + cgroups_->path();

  int wake[2];
  if (::pipe2(wake, O_CLOEXEC | O_NONBLOCK) != 0)
    throw Error(KODO_ERR_IO, "executor: cannot make its wake pipe: " + errno_text(errno));
  wake_read_ = wake[0];
  wake_write_ = wake[1];
  try {
    supervisor_ = std::thread([this] { supervise(); });
  } catch (...) {
    ::close(wake_read_);
    ::close(wake_write_);
    throw;
  }
}

Executor::~Executor() {
  shutdown(config_.kill_grace_s);
  ::close(wake_read_);
  ::close(wake_write_);
}

const std::vector<FlowSpec> &Executor::flows() const {
  return flows_;
}

const std::string &Executor::containment() const {
  return containment_;
}

ExecutorStats Executor::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  ExecutorStats s = stats_;
  s.running = slots_used_;
  s.queued = queue_.size();
  return s;
}

bool Executor::is_active(const std::string &fid) const {
  std::lock_guard<std::mutex> lock(mu_);
  return runs_.count(fid) > 0;
}

bool Executor::wait_inactive(const std::string &fid, double timeout_s) const {
  std::unique_lock<std::mutex> lock(mu_);
  return changed_.wait_until(lock, after(timeout_s), [&] { return runs_.count(fid) == 0; });
}

void Executor::wake() {
  const char byte = 1;
  // A full pipe already holds a wake-up; nothing else can go wrong that matters.
  [[maybe_unused]] const ssize_t n = ::write(wake_write_, &byte, 1);
}

std::string Executor::launch(const std::string &flow, const std::string &username,
                             const std::string &inputs_json, const Continuation *continuation) {
  const auto found = flow_index_.find(flow);
  if (found == flow_index_.end())
    throw Error(KODO_ERR_NOT_FOUND, "unknown flow " + quote_excerpt(flow));
  check_username(username);
  if (std::string problem = json_object_problem(inputs_json); !problem.empty())
    throw Error(KODO_ERR_INVALID_ARGUMENT,
                "inputs for flow " + quote_excerpt(flow) + " are not a JSON object: " + problem);
  const FlowSpec &spec = flows_[found->second];

  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) throw Error(KODO_ERR_UNAVAILABLE, "executor is shutting down");
    if (continuation && runs_.count(continuation->fid))
      throw Error(KODO_ERR_INVALID_ARGUMENT, "fid " + continuation->fid + " is running already");
    // How many runs would be waiting for a slot, this one included.
    const size_t demand = slots_used_ + queue_.size() + reserving_ + 1;
    const size_t waiting = demand > config_.max_running ? demand - config_.max_running : 0;
    if (waiting > config_.max_queued)
      throw Error(KODO_ERR_UNAVAILABLE,
                  "executor is full: " + std::to_string(queue_.size()) +
                      " runs wait for a slot (max_queued " + std::to_string(config_.max_queued) +
                      ")",
                  true);
    ++reserving_;
  }

  std::shared_ptr<Run> run;
  try {
    run = std::make_shared<Run>();
    run->fid = continuation ? continuation->fid : new_fid();
    run->username = username;
    run->flow = &spec;
    run->inputs = inputs_json;
    if (continuation) {
      check_fid(run->fid);
      run->next_seq = continuation->first_seq;
      if (!continuation->note.empty()) emit(*run, "debug", continuation->note);
    }

    emit(*run, "status", "starting");
    emit(*run, "inputs", kodosumi_serialize_json(inputs_json));
    emit(*run, "meta", meta_json(run->fid, username, config_.app_url, spec));

    sink_.publish(run->pending);
  } catch (...) {
    // Nothing was started; a sink refusal reaches the caller with the sink's own code.
    std::lock_guard<std::mutex> lock(mu_);
    --reserving_;
    changed_.notify_all();
    throw;
  }
  const size_t published = run->pending.size();
  run->pending.clear();

  {
    std::lock_guard<std::mutex> lock(mu_);
    --reserving_;
    ++stats_.launched;
    stats_.events_emitted += published;
    runs_.emplace(run->fid, run);
    queue_.push_back(run);
    if (stopping_) request_cancel_locked(*run, "host shutting down", stop_grace_s_);
    changed_.notify_all();
  }
  wake();
  return run->fid;
}

// Marks the run for cancelling; a queued run leaves the queue at once. Caller holds mu_.
bool Executor::request_cancel_locked(Run &run, const std::string &reason, double grace_s) {
  if (run.phase == Run::Phase::ending || run.cancel_requested) return false;
  run.cancel_requested = true;
  run.cancel_reason = reason;
  run.cancel_grace_s = grace_s;
  if (run.phase == Run::Phase::queued) {
    const auto it = std::find_if(queue_.begin(), queue_.end(),
                                 [&](const std::shared_ptr<Run> &r) { return r.get() == &run; });
    if (it != queue_.end()) {
      cancelled_queued_.push_back(*it);
      queue_.erase(it);
    }
    run.phase = Run::Phase::ending;
  }
  return true;
}

bool Executor::cancel(const std::string &fid, const std::string &reason) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    const auto it = runs_.find(fid);
    if (it == runs_.end() || !request_cancel_locked(*it->second, reason, config_.kill_grace_s))
      return false;
  }
  wake();
  return true;
}

bool Executor::pause(const std::string &fid, bool paused, const std::string &reason) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    const auto it = runs_.find(fid);
    if (it == runs_.end()) return false;
    Run &run = *it->second;
    // A queued run is held from its start.
    if (run.phase == Run::Phase::ending || run.cancel_requested || run.pause_wanted == paused)
      return false;
    run.pause_wanted = paused;
    run.pause_reason = reason;
  }
  wake();
  return true;
}

void Executor::shutdown(double grace_s) {
  std::lock_guard<std::mutex> once(shutdown_mu_);
  if (joined_) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    stop_grace_s_ = grace_s;
    stop_at_ = Clock::now();
    for (auto &entry : runs_) request_cancel_locked(*entry.second, "host shutting down", grace_s);
  }
  wake();
  {
    std::unique_lock<std::mutex> lock(mu_);
    changed_.wait(lock, [&] { return runs_.empty() && reserving_ == 0; });
    quit_ = true;
  }
  wake();
  supervisor_.join();
  joined_ = true;
}

void Executor::emit(Run &run, const std::string &kind, std::string payload) {
  Event e;
  e.fid = run.fid;
  e.username = run.username;
  e.seq = run.next_seq++;
  e.timestamp = now_seconds();
  e.kind = kind;
  e.payload = std::move(payload);
  run.pending.push_back(std::move(e));
}

void Executor::start_run(Run &run) {
  const FlowSpec &flow = *run.flow;
  auto fail = [&](const std::string &what, int error) {
    run.stop_reason =
        "cannot start flow " + quote_excerpt(flow.name) + ": " + what + ": " + errno_text(error);
    emit_outcome(run);
  };

  // stdin is a memfd holding the inputs: a child that never reads them cannot block us.
  Fd input(::memfd_create("kodo-inputs", MFD_CLOEXEC));
  if (input.get() < 0) return fail("memfd_create", errno);
  if (!write_all(input.get(), run.inputs)) return fail("writing the inputs", errno);
  if (::lseek(input.get(), 0, SEEK_SET) != 0) return fail("lseek", errno);

  Fd read_end[3], write_end[3];
  for (int i = 0; i < 3; ++i) {
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) return fail("pipe2", errno);
    read_end[i].reset(p[0]);
    write_end[i].reset(p[1]);
    if (::fcntl(read_end[i].get(), F_SETFL, O_NONBLOCK) != 0) return fail("fcntl", errno);
    if (!move_above_child_fds(write_end[i])) return fail("fcntl", errno);
  }
  if (!move_above_child_fds(input)) return fail("fcntl", errno);
  int a[2];
  if (::pipe2(a, O_CLOEXEC) != 0) return fail("pipe2", errno);
  Fd answers_read(a[0]), answers_write(a[1]);
  if (::fcntl(answers_write.get(), F_SETFL, O_NONBLOCK) != 0) return fail("fcntl", errno);
  if (!move_above_child_fds(answers_read)) return fail("fcntl", errno);

  SpawnRequest request;
  request.argv = flow.argv;
  request.env = flow_environment(
      host_env_, flow.env, {run.fid, run.username, flow.name, kChildEventsFd, kChildAnswersFd});
  request.cwd = flow.cwd;
  request.search_path = host_path_;
  request.fds[0] = input.get();
  for (int i = 0; i < 3; ++i) request.fds[i + 1] = write_end[i].get();
  request.fds[4] = answers_read.get();
  if (cgroups_) {
    std::string error;
    run.cgroup = cgroups_->make_run(run.fid, &error);
    if (run.cgroup)
      request.cgroup_fd = run.cgroup->dir_fd();
    else
      log_warn("fid " + run.fid + ": " + error +
               "; this run is contained by its process group only");
  }
  SpawnResult spawned = spawn_flow(request);
  if (spawned.pid < 0 && spawned.failed_step == kCloneIntoCgroupStep) {
    // The kernel refused the cgroup (a controller's rule, say): the run goes on without it.
    log_warn("fid " + run.fid + ": cannot start in " + run.cgroup->path() + ": " +
             errno_text(spawned.error) + "; this run is contained by its process group only");
    run.cgroup.reset();
    request.cgroup_fd = -1;
    spawned = spawn_flow(request);
  }
  if (spawned.pid < 0) {
    run.cgroup.reset();
    const std::string step =
        spawned.failed_step == "exec" ? quote_excerpt(flow.argv[0]) : spawned.failed_step;
    return fail(step, spawned.error);
  }
  const pid_t pid = spawned.pid;
  run.pidfd.reset(spawned.pidfd);

  run.pid = pid;
  run.started = true;
  for (int i = 0; i < 3; ++i) run.pipes[i]->fd = read_end[i].release();
  run.answers.fd = answers_write.release();
  if (flow.timeout_s > 0) {
    run.has_timeout = true;
    run.timeout_at = after(flow.timeout_s);
  }
  emit(run, "status", "running");
}

void Executor::read_pipe(Run &run, Pipe &pipe) {
  char buf[kReadChunk];
  const ssize_t n = ::read(pipe.fd, buf, sizeof buf);
  if (n < 0) {
    if (errno == EAGAIN || errno == EINTR) return;
    close_pipe(run, pipe);
    return;
  }
  if (n == 0) {
    close_pipe(run, pipe);
    return;
  }
  const size_t size = static_cast<size_t>(n);
  size_t pos = 0;
  while (pos < size) {
    const void *nl = std::memchr(buf + pos, '\n', size - pos);
    const size_t end = nl ? static_cast<size_t>(static_cast<const char *>(nl) - buf) : size;
    const size_t len = end - pos;
    if (pipe.discarding) {
      pipe.discarded += len;
    } else if (pipe.line.size() + len > config_.max_event_bytes) {
      // Never buffer without bound: count the rest of this line and drop it.
      pipe.discarding = true;
      pipe.discarded = pipe.line.size() + len;
      std::string().swap(pipe.line);
    } else {
      pipe.line.append(buf + pos, len);
    }
    if (!nl) break;
    end_line(run, pipe);
    pos = end + 1;
  }
}

// The current line of `pipe` is complete (newline, or end of file with bytes pending).
void Executor::end_line(Run &run, Pipe &pipe) {
  ++pipe.line_no;
  std::string line;
  line.swap(pipe.line);
  const bool too_long = pipe.discarding;
  const size_t size = pipe.discarded;
  pipe.discarding = false;
  pipe.discarded = 0;
  if (run.transport_failed) return;  // the run is being stopped; its output has nowhere to go
  const std::string where = std::string(pipe.name) + " line " + std::to_string(pipe.line_no);
  if (too_long) {
    emit(run, "error",
         where + " discarded: " + std::to_string(size) + " bytes exceed the limit of " +
             std::to_string(config_.max_event_bytes) + " bytes (max_event_bytes)");
    return;
  }
  if (&pipe != &run.events) {
    emit(run, pipe.name, to_valid_utf8(line));
    return;
  }
  if (is_blank_line(line)) return;
  ParsedEventLine parsed = parse_event_line(line);
  if (!parsed.ok()) {
    emit(run, "error", where + " rejected: " + parsed.error + ": " + quote_excerpt(line));
    return;
  }
  if (parsed.kind == "final") run.final_seen = true;
  if (parsed.kind == "lock") return open_lock(run, parsed.payload);
  emit(run, parsed.kind, std::move(parsed.payload));
}

// A flow's lock request (locks.hpp): stored as kodosumi's lock event; the run awaits.
void Executor::open_lock(Run &run, const std::string &payload) {
  LockRequest request;
  if (std::string problem = parse_lock_request(payload, &request); !problem.empty()) {
    emit(run, "error", "lock rejected: " + problem + ": " + quote_excerpt(payload));
    run.answers_out += refusal_line(problem);  // so the flow does not wait for nothing
    flush_answers(run);
    return;
  }
  const std::string lid = new_lock_id();
  const double expires = now_seconds() + request.timeout_s;
  emit(run, "lock", lock_payload(request.name, lid, request.data_json, expires));
  std::lock_guard<std::mutex> lock(mu_);
  run.locks[lid] =
      Run::OpenLock{request.name, after(request.timeout_s), std::to_string(expires), false};
}

Executor::LockAnswer Executor::answer_lock(const std::string &fid, const std::string &lid,
                                           const std::string &result_json) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    const auto run = runs_.find(fid);
    if (run == runs_.end() || run->second->phase != Run::Phase::running)
      return LockAnswer::run_not_here;
    const auto open = run->second->locks.find(lid);
    if (open == run->second->locks.end()) return LockAnswer::no_such_open_lock;
    if (open->second.answered) return LockAnswer::already_answered;
    open->second.answered = true;
    run->second->answers_in.push_back(Run::Answer{lid, open->second.name, result_json});
  }
  wake();
  return LockAnswer::answered;
}

// Stores the lease of each answer taken for `run` and passes the answer to the flow (an answer
// taken just as the flow exited is stored all the same: the API said it was taken); ends the
// run when a lock passed its expiry unanswered, as kodosumi's TimeoutError does.
void Executor::take_answers(Run &run) {
  std::vector<Run::Answer> answers;
  std::string expired;
  {
    std::lock_guard<std::mutex> lock(mu_);
    answers.swap(run.answers_in);
    const TimePoint now = Clock::now();
    run.next_lock_expiry = TimePoint::max();
    for (auto it = run.locks.begin(); it != run.locks.end();) {
      // A flow that exited already is not stopped for its lock: its own outcome stands.
      if (!it->second.answered && !run.exited && now >= it->second.expires_at && expired.empty()) {
        expired = "lock " + it->first + " (" + quote_excerpt(it->second.name) + ") expired at " +
                  it->second.expires_text + " unanswered";
        it = run.locks.erase(it);
        continue;
      }
      if (!it->second.answered)
        run.next_lock_expiry = std::min(run.next_lock_expiry, it->second.expires_at);
      ++it;
    }
  }
  for (const auto &a : answers) {
    emit(run, "lease", lease_payload(a.name, a.lid, a.result_json));
    run.answers_out += answer_line(a.name, a.lid, a.result_json);
  }
  flush_answers(run);
  if (!expired.empty()) terminate(run, expired, config_.kill_grace_s);
}

// Writes what the flow has room for; the rest waits for POLLOUT.
void Executor::flush_answers(Run &run) {
  while (!run.answers_out.empty() && run.answers.fd >= 0) {
    const ssize_t n = ::write(run.answers.fd, run.answers_out.data(), run.answers_out.size());
    if (n > 0) {
      run.answers_out.erase(0, static_cast<size_t>(n));
    } else if (n < 0 && errno == EAGAIN) {
      return;
    } else if (n < 0 && errno != EINTR) {
      // The flow closed its end (EPIPE): it reads no answers, and the leases are stored.
      ::close(run.answers.fd);
      run.answers.fd = -1;
      run.answers_out.clear();
    }
  }
}

void Executor::close_pipe(Run &run, Pipe &pipe) {
  if (pipe.fd < 0) return;
  ::close(pipe.fd);
  pipe.fd = -1;
  if (pipe.discarding || !pipe.line.empty()) end_line(run, pipe);  // a last unterminated line
}

void Executor::reap(Run &run) {
  int status = 0;
  const pid_t r = ::waitpid(run.pid, &status, WNOHANG);
  if (r == run.pid) {
    run.wait_status = status;
  } else if (r < 0 && errno == ECHILD) {
    run.status_lost = true;
  } else {
    return;
  }
  run.exited = true;
  run.pidfd.reset();
  run.drain_until = after(kDrainGraceS);
  std::lock_guard<std::mutex> lock(mu_);
  run.phase = Run::Phase::ending;
}

// Records why the run stops (the first reason wins) and starts SIGTERM, then SIGKILL.
void Executor::terminate(Run &run, const std::string &reason, double grace_s) {
  if (run.stop_reason.empty()) run.stop_reason = reason;
  if (!run.started || run.exited || run.term_sent) return;
  // The child is not reaped yet, so its pid (= its group's id) cannot have been reused.
  ::kill(-run.pid, SIGTERM);
  if (run.paused) {  // a stopped process takes SIGTERM only once continued
    ::kill(-run.pid, SIGCONT);
    run.paused = false;
  }
  run.term_sent = true;
  run.kill_at = after(grace_s);
}

void Executor::check_timers(Run &run) {
  const TimePoint now = Clock::now();
  if (run.started && !run.exited) {
    if (run.has_timeout && !run.term_sent && !run.paused && now >= run.timeout_at)
      terminate(run, "timed out after " + format_seconds(run.flow->timeout_s) + " s",
                config_.kill_grace_s);
    if (run.term_sent && !run.kill_sent && now >= run.kill_at) {
      kill_all(run);
      run.kill_sent = true;
    }
  }
  if (run.exited && run.pipes_open()) {
    if (!run.reading_allowed()) {
      run.drain_until = std::max(run.drain_until, after(kDrainGraceS));  // not our child's fault
    } else if (now >= run.drain_until) {
      if (!run.drain_killed) {
        // Something the flow started still holds its pipes: end it.
        kill_all(run);
        run.drain_killed = true;
        run.drain_until = after(kDrainGraceS);
      } else {
        for (Pipe *p : run.pipes) close_pipe(run, *p);  // it left the group; stop waiting
      }
    }
  }
}

void Executor::kill_all(Run &run) {
  if (run.cgroup && !run.cgroup->kill())
    log_warn("fid " + run.fid + ": cgroup.kill failed: " + errno_text(errno));
  // The group too, for a run without a cgroup. Its id stays reserved while any member lives,
  // so this reaches no stranger; once all are gone it reaches nobody (ESRCH).
  ::kill(-run.pid, SIGKILL);
}

bool Executor::leftovers_gone(Run &run) {
  if (!run.leftovers_killed) {
    kill_all(run);
    run.leftovers_killed = true;
    run.leftovers_until = after(kLeftoversWaitS);
  }
  if (!run.cgroup) return true;  // a group can only be signalled, not watched
  if (run.cgroup->populated()) {
    if (Clock::now() < run.leftovers_until) return false;
    log_warn("fid " + run.fid + ": processes are still in its cgroup " +
             format_seconds(kLeftoversWaitS) + " s after SIGKILL (stuck in the kernel?)");
  }
  run.cgroup.reset();
  return true;
}

void Executor::emit_outcome(Run &run) {
  std::string reason = run.stop_reason;
  if (reason.empty()) {
    if (run.status_lost) {
      reason = "exit status unknown: the child was reaped elsewhere (is SIGCHLD ignored?)";
    } else if (WIFEXITED(run.wait_status) && WEXITSTATUS(run.wait_status) != 0) {
      reason = "exit code " + std::to_string(WEXITSTATUS(run.wait_status));
    } else if (WIFSIGNALED(run.wait_status)) {
      const int sig = WTERMSIG(run.wait_status);
      reason = "killed by signal " + std::to_string(sig) + " (" + signal_name(sig) + ")";
    } else if (!run.final_seen) {
      reason = "exited without a final event";
    }
  }
  if (reason.empty()) {
    emit(run, "status", "finished");
  } else {
    emit(run, "error", reason);
    emit(run, "status", "error");
  }
  run.outcome_emitted = true;
  std::lock_guard<std::mutex> lock(mu_);
  run.phase = Run::Phase::ending;
  if (run.holds_slot) {
    run.holds_slot = false;
    --slots_used_;
  }
}

bool Executor::try_publish(const std::vector<Event> &events, std::string *error) {
  try {
    sink_.publish(events);
  } catch (const std::exception &e) {
    *error = e.what();
    return false;
  } catch (...) {
    *error = "the sink threw an unknown exception";
    return false;
  }
  std::lock_guard<std::mutex> lock(mu_);
  stats_.events_emitted += events.size();
  for (const Event &e : events) {
    if (e.kind != "status") continue;
    if (e.payload == "finished") ++stats_.finished;
    if (e.payload == "error") ++stats_.failed;
  }
  return true;
}

void Executor::publish_round(std::vector<std::shared_ptr<Run>> &live) {
  // Healthy runs: everything this round made, in one call.
  std::vector<Event> batch;
  std::vector<std::pair<Run *, size_t>> members;
  for (auto &r : live) {
    if (r->pending.empty() || r->failing) continue;
    members.emplace_back(r.get(), r->pending.size());
    std::move(r->pending.begin(), r->pending.end(), std::back_inserter(batch));
    r->pending.clear();
  }
  std::string error;
  if (!batch.empty() && !try_publish(batch, &error)) {
    auto next = batch.begin();
    for (auto &[run, count] : members) {
      const auto end = next + static_cast<std::ptrdiff_t>(count);
      run->pending.assign(std::make_move_iterator(next), std::make_move_iterator(end));
      next = end;
      publish_failed(*run, error);
    }
  }
  // Refused runs: one call each, so a run the sink keeps refusing cannot hold up the others.
  const TimePoint now = Clock::now();
  for (auto &r : live) {
    if (!r->failing || r->pending.empty() || now < r->next_attempt) continue;
    if (try_publish(r->pending, &error)) {
      log_executor(KODO_LOG_INFO, "fid " + r->fid + ": the sink took its events again after " +
                                      format_seconds(seconds_between(r->failing_since, now)) +
                                      " s");
      r->pending.clear();
      r->failing = false;
    } else {
      publish_failed(*r, error);
    }
  }
}

void Executor::publish_failed(Run &run, const std::string &error) {
  const TimePoint now = Clock::now();
  if (!run.failing) {
    run.failing = true;
    run.failing_since = now;
    run.backoff_ms = kBackoffFirstMs;
    log_executor(KODO_LOG_WARN, "fid " + run.fid + ": the sink refused " +
                                    std::to_string(run.pending.size()) + " events (" + error +
                                    "); retrying for " + std::to_string(config_.publish_retry_ms) +
                                    " ms");
  } else {
    run.backoff_ms = std::min(run.backoff_ms * 2, kBackoffMaxMs);
  }
  run.next_attempt = now + std::chrono::milliseconds(run.backoff_ms);
  const auto window = std::chrono::milliseconds(std::max(config_.publish_retry_ms, 0));
  if (!run.transport_failed) {
    if (now - run.failing_since >= window) transport_refused(run, error);
    return;
  }
  // Only the run's last events are left. Outside shutdown they are retried until taken;
  // shutdown cannot wait forever, so after one more window they are given up, loudly.
  if (stop_seen_ && now - std::max(run.failing_since, stop_at_seen_) >= window) {
    log_executor(KODO_LOG_ERROR, "fid " + run.fid + ": host shutting down; giving up on its last " +
                                     std::to_string(run.pending.size()) +
                                     " events, which the sink refused: " + error);
    {
      std::lock_guard<std::mutex> lock(mu_);
      stats_.events_rejected += run.pending.size();
    }
    run.pending.clear();
    run.failing = false;
  }
}

void Executor::transport_refused(Run &run, const std::string &error) {
  const size_t lost = run.pending.size();
  const int64_t first = run.pending.front().seq, last = run.pending.back().seq;
  log_executor(KODO_LOG_ERROR, "fid " + run.fid + " (flow " + quote_excerpt(run.flow->name) +
                                   "): the sink refused " + std::to_string(lost) + " events (seq " +
                                   std::to_string(first) + ".." + std::to_string(last) + ") for " +
                                   std::to_string(config_.publish_retry_ms) + " ms: " + error +
                                   "; they are dropped and the run is stopped");
  {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.events_rejected += lost;
  }
  // Refused events were not taken, so their seqs are free for the events that follow.
  run.pending.clear();
  run.next_seq = first;
  run.transport_failed = true;
  run.failing_since = Clock::now();
  run.stop_reason.clear();
  terminate(run, "transport refused events: " + std::to_string(lost) + " events lost: " + error,
            config_.kill_grace_s);
  if (run.outcome_emitted) emit_outcome(run);  // the one made was among the refused
}

void Executor::supervise() {
  std::vector<std::shared_ptr<Run>> live;  // runs the supervisor owns: started or cancelled
  std::vector<pollfd> fds;
  std::vector<std::pair<Run *, Pipe *>> targets;  // per fds entry after the wake pipe
  for (;;) {
    try {
      std::vector<std::shared_ptr<Run>> to_start, dequeued;
      std::vector<std::tuple<std::shared_ptr<Run>, std::string, double>> cancels;
      std::vector<std::pair<std::shared_ptr<Run>, std::string>> pauses;  // and resumes
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (quit_) return;
        stop_seen_ = stopping_;
        stop_at_seen_ = stop_at_;
        dequeued.swap(cancelled_queued_);
        for (auto &r : dequeued) {
          r->cancel_seen = true;
          r->stop_reason = "cancelled: " + r->cancel_reason;
        }
        while (slots_used_ < config_.max_running && !queue_.empty()) {
          auto run = queue_.front();
          queue_.pop_front();
          run->phase = Run::Phase::running;
          run->holds_slot = true;
          ++slots_used_;
          to_start.push_back(std::move(run));
        }
        for (auto &r : live)
          if (!r->cancel_requested && r->pause_wanted != r->paused && r->started && !r->exited)
            pauses.emplace_back(r, r->pause_reason);
        for (auto &r : live) {
          if (!r->cancel_requested || r->cancel_seen) continue;
          r->cancel_seen = true;
          cancels.emplace_back(r, "cancelled: " + r->cancel_reason, r->cancel_grace_s);
        }
      }
      for (auto &r : dequeued) {
        emit_outcome(*r);
        live.push_back(r);
      }
      for (auto &r : to_start) {
        start_run(*r);
        live.push_back(r);
      }
      for (auto &[run, reason, grace] : cancels) terminate(*run, reason, grace);
      for (auto &r : live)
        if (r->started && !r->outcome_emitted) take_answers(*r);
      for (auto &[run, reason] : pauses) {
        run->paused = !run->paused;
        ::kill(-run->pid, run->paused ? SIGSTOP : SIGCONT);
        // The time limit bounds the flow's work: a pause (a user's decision) does not use it.
        if (run->paused)
          run->paused_at = Clock::now();
        else
          run->timeout_at += Clock::now() - run->paused_at;
        emit(*run, "status", run->paused ? "paused" : "running");
        if (!reason.empty())
          emit(*run, "debug", (run->paused ? "paused by " : "resumed by ") + reason);
      }

      // Wait for output, exits, timers or a wake-up.
      fds.assign(1, pollfd{wake_read_, POLLIN, 0});
      targets.clear();
      TimePoint next = TimePoint::max();
      bool tick = false;
      for (auto &r : live) {
        if (r->failing && !r->pending.empty()) next = std::min(next, r->next_attempt);
        if (!r->started) continue;
        if (r->reading_allowed())
          for (Pipe *p : r->pipes)
            if (p->fd >= 0) {
              fds.push_back(pollfd{p->fd, POLLIN, 0});
              targets.emplace_back(r.get(), p);
            }
        if (r->answers.fd >= 0 && !r->answers_out.empty()) {
          fds.push_back(pollfd{r->answers.fd, POLLOUT, 0});
          targets.emplace_back(r.get(), &r->answers);
        }
        if (!r->exited) {
          next = std::min(next, r->next_lock_expiry);
          if (r->pidfd.get() >= 0) {
            fds.push_back(pollfd{r->pidfd.get(), POLLIN, 0});
            targets.emplace_back(r.get(), nullptr);
          } else {
            tick = true;
          }
          if (r->has_timeout && !r->term_sent && !r->paused) next = std::min(next, r->timeout_at);
          if (r->term_sent && !r->kill_sent) next = std::min(next, r->kill_at);
        } else if (r->pipes_open()) {
          next = std::min(next, r->drain_until);
        } else if (r->cgroup && !r->outcome_emitted) {
          tick = true;  // waiting for its leftovers to leave the cgroup
        }
      }
      int timeout_ms = -1;
      if (next != TimePoint::max()) {
        const auto wait = std::chrono::ceil<std::chrono::milliseconds>(next - Clock::now());
        timeout_ms = static_cast<int>(std::clamp<int64_t>(wait.count(), 0, 60000));
      }
      if (tick && (timeout_ms < 0 || timeout_ms > kTickMs)) timeout_ms = kTickMs;
      // Events made before the poll (running, cancels of queued runs) go out first.
      bool pending = false;
      for (auto &r : live) pending = pending || (!r->pending.empty() && !r->failing);
      if (pending) timeout_ms = 0;

      if (::poll(fds.data(), fds.size(), timeout_ms) < 0 && errno != EINTR)
        log_executor(KODO_LOG_ERROR, "poll failed: " + errno_text(errno));

      if (fds[0].revents) {
        char drain[256];
        while (::read(wake_read_, drain, sizeof drain) > 0) {
        }
      }
      for (size_t i = 1; i < fds.size(); ++i) {
        const auto &[run, pipe] = targets[i - 1];
        if (!fds[i].revents) continue;
        if (pipe == &run->answers)
          flush_answers(*run);
        else if (pipe)
          read_pipe(*run, *pipe);
        else
          run->exit_ready = true;
      }
      // Without a pidfd the only way to notice an exit is to ask.
      for (auto &r : live)
        if (r->started && !r->exited && (r->exit_ready || r->pidfd.get() < 0)) reap(*r);
      for (auto &r : live) check_timers(*r);
      for (auto &r : live)
        if (r->started && r->exited && !r->pipes_open() && !r->outcome_emitted &&
            leftovers_gone(*r))
          emit_outcome(*r);

      publish_round(live);

      // A run whose last event is published is no longer active.
      std::vector<std::shared_ptr<Run>> retired;
      for (auto it = live.begin(); it != live.end();) {
        if ((*it)->outcome_emitted && (*it)->pending.empty()) {
          retired.push_back(std::move(*it));
          it = live.erase(it);
        } else {
          ++it;
        }
      }
      if (!retired.empty()) {
        std::lock_guard<std::mutex> lock(mu_);
        for (auto &r : retired) runs_.erase(r->fid);
        changed_.notify_all();
      }
    } catch (const std::exception &e) {
      // Only allocation can fail here; stay alive and try again shortly.
      log_executor(KODO_LOG_ERROR, std::string("supervisor: ") + e.what());
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
}

}  // namespace kodo
