// executor.cpp: child processes, their pipes and the events made from them (see executor.hpp).
//
// Ownership of state: what launch(), cancel() and shutdown() share with the supervisor thread
// (runs_, queue_, slots, a run's phase and cancel request, stats) is guarded by mu_. Everything
// else about a run (its child, pipes, seq counter, unpublished events) belongs to the
// supervisor thread alone, once launch() has handed the run over.
#include "core/executor.hpp"
#include "core/executor_run.hpp"

#include <kodo/host/log.hpp>

#include <kodo/host/error.hpp>
#include "core/epoll_set.hpp"
#include "core/event_line.hpp"
#include "core/flow_env.hpp"
#include "core/flow_spawn.hpp"
#include "core/ids.hpp"
#include "core/kodosumi_payload.hpp"
#include "core/locks.hpp"
#include "core/run_cgroup.hpp"
#include "core/thread_name.hpp"
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
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

namespace kodo {

using namespace executor_detail;

namespace {

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
    watch_ = std::make_unique<EpollSet>();
    supervisor_ = std::thread([this] {
      name_this_thread("kodo-executor");
      supervise();
    });
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
      run->token = continuation->token;
      run->replay = continuation->replay;
      if (!continuation->note.empty()) emit(*run, "debug", continuation->note);
    }

    if (run->replay.empty()) {  // a resumed run stored these already
      emit(*run, "status", "starting");
      emit(*run, "inputs", kodosumi_serialize_json(inputs_json));
      emit(*run, "meta", meta_json(run->fid, username, config_.app_url, spec));
    }

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
void Executor::supervise() {
  std::vector<std::shared_ptr<Run>> live;  // runs the supervisor owns: started or cancelled
  EpollSet &watch = *watch_;
  std::vector<std::pair<Run *, Pipe *>> targets;  // by descriptor, this round's
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
      watch.begin_round();
      watch.want(wake_read_, EPOLLIN);
      if (targets.size() <= static_cast<size_t>(wake_read_)) targets.resize(wake_read_ + 1);
      std::fill(targets.begin(), targets.end(), std::pair<Run *, Pipe *>{nullptr, nullptr});
      auto want = [&](int fd, uint32_t events, Run *run, Pipe *pipe) {
        watch.want(fd, events);
        if (targets.size() <= static_cast<size_t>(fd)) targets.resize(fd + 1);
        targets[fd] = {run, pipe};
      };
      TimePoint next = TimePoint::max();
      bool tick = false;
      for (auto &r : live) {
        if (r->failing && !r->pending.empty()) next = std::min(next, r->next_attempt);
        if (!r->started) continue;
        if (r->reading_allowed())
          for (Pipe *p : r->pipes)
            if (p->fd >= 0) want(p->fd, EPOLLIN, r.get(), p);
        if (r->answers.fd >= 0 && !r->answers_out.empty())
          want(r->answers.fd, EPOLLOUT, r.get(), &r->answers);
        if (!r->exited) {
          next = std::min(next, r->next_lock_expiry);
          if (r->pidfd.get() >= 0)
            want(r->pidfd.get(), EPOLLIN, r.get(), nullptr);
          else
            tick = true;
          if (r->has_timeout && !r->term_sent && !r->paused) next = std::min(next, r->timeout_at);
          if (r->term_sent && !r->kill_sent) next = std::min(next, r->kill_at);
        } else if (r->pipes_open()) {
          next = std::min(next, r->drain_until);
        } else if (r->cgroup && !r->outcome_emitted) {
          tick = true;  // waiting for its leftovers to leave the cgroup
        }
      }
      watch.end_round();
      int timeout_ms = -1;
      if (next != TimePoint::max()) {
        const auto wait = std::chrono::ceil<std::chrono::milliseconds>(next - Clock::now());
        timeout_ms = static_cast<int>(std::clamp<int64_t>(wait.count(), 0, 60000));
      }
      if (tick && (timeout_ms < 0 || timeout_ms > kTickMs)) timeout_ms = kTickMs;
      // Events made before the wait (running, cancels of queued runs) go out first.
      bool pending = false;
      for (auto &r : live) pending = pending || (!r->pending.empty() && !r->failing);
      if (pending) timeout_ms = 0;

      if (!watch.wait(timeout_ms))
        log_executor(KODO_LOG_ERROR, "epoll_wait failed: " + errno_text(errno));

      for (const epoll_event &ev : watch.ready()) {
        const int fd = ev.data.fd;
        if (fd == wake_read_) {
          char drain[256];
          while (::read(wake_read_, drain, sizeof drain) > 0) {
          }
          continue;
        }
        if (fd < 0 || static_cast<size_t>(fd) >= targets.size()) continue;
        const auto [run, pipe] = targets[static_cast<size_t>(fd)];
        if (run == nullptr) continue;  // not wanted this round
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
          forget_fds(**it);  // its descriptors close with it
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