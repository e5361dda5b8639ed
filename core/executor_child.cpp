// executor_child.cpp: a flow's process from spawn to outcome: its descriptors, its output
// lines made into events, its timers, how it is stopped and reaped (see executor_run.hpp).
#include "core/epoll_set.hpp"
#include "core/executor_run.hpp"

#include "core/auth_token.hpp"
#include "core/event_line.hpp"
#include "core/flow_env.hpp"
#include "core/flow_spawn.hpp"
#include "core/ids.hpp"
#include "core/kodosumi_payload.hpp"
#include "core/run_cgroup.hpp"
#include "core/write_all.hpp"

#include <kodo/host/error.hpp>
#include <kodo/host/log.hpp>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <string>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

namespace kodo {

using namespace executor_detail;

namespace {

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

// Moves a descriptor to a number above the child's fixed ones (0-4), so that the dup2
// actions that set those up can never overwrite a source they still need.
bool move_above_child_fds(Fd &fd) {
  if (fd.get() > kChildAnswersFd) return true;
  const int moved = ::fcntl(fd.get(), F_DUPFD_CLOEXEC, kChildAnswersFd + 1);
  if (moved < 0) return false;
  fd.reset(moved);
  return true;
}

}  // namespace

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
  std::string token = run.token;
  if (token.empty() && config_.run_token) {
    token = config_.run_token(run.username, run.fid, flow_token_lifetime_s(flow.timeout_s));
  }
  request.env =
      flow_environment(host_env_, flow.env,
                       {run.fid, run.username, flow.name, kChildEventsFd, kChildAnswersFd}, token);
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
  if (run.replaying()) return replayed_line(run, pipe, line);
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
void Executor::close_pipe(Run &run, Pipe &pipe) {
  if (pipe.fd < 0) return;
  watch_->forget(pipe.fd);
  ::close(pipe.fd);
  pipe.fd = -1;
  if (pipe.discarding || !pipe.line.empty()) end_line(run, pipe);  // a last unterminated line
}

void Executor::forget_fds(Run &run) {
  for (Pipe *p : run.pipes) watch_->forget(p->fd);
  watch_->forget(run.answers.fd);
  watch_->forget(run.pidfd.get());
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
  watch_->forget(run.pidfd.get());
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
    } else if (run.replaying()) {
      const StoredLock &next = run.replay[run.replayed];
      reason = "resumed after its host stopped, the flow exited before asking again for lock " +
               next.lid + " (" + quote_excerpt(next.name) + ")";
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
}  // namespace kodo
