// flow_spawn.cpp: see flow_spawn.hpp.
#include "core/flow_spawn.hpp"

#include <cerrno>
#include <csignal>
#include <cstdint>

#include <fcntl.h>
#include <linux/close_range.h>
#include <pthread.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

namespace kodo {

namespace {

// The kernel's struct clone_args up to `cgroup` (CLONE_ARGS_SIZE_VER2, Linux 5.7). Declared
// here because <linux/sched.h> and glibc's <sched.h> clash over the CLONE_* macros.
struct CloneArgs {
  uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls, set_tid,
      set_tid_size, cgroup;
};
constexpr uint64_t kClonePidfd = 0x00001000;
constexpr uint64_t kCloneIntoCgroup = 0x200000000ULL;

struct ChildFailure {
  int step;  // 0 exec, 1 chdir, 2 setup
  int error;
};

struct ChildPlan {
  char *const *argv;
  char *const *envp;
  const char *const *candidates;  // executable paths to try, in order; null-terminated
  const char *cwd;                // null: stay
  const int *fds;
  int report_fd;  // close-on-exec; a ChildFailure written here means the exec failed
  pid_t parent;
};

[[noreturn]] void fail_child(const ChildPlan &plan, int step, int error) {
  const ChildFailure failure{step, error};
  [[maybe_unused]] const ssize_t n = ::write(plan.report_fd, &failure, sizeof failure);
  ::_exit(127);
}

// Runs in the new process: async-signal-safe calls only.
[[noreturn]] void child_main(const ChildPlan &plan) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != plan.parent) ::_exit(127);  // the host died before the prctl took hold
  if (::setpgid(0, 0) != 0) fail_child(plan, 2, errno);
  for (int i = 0; i < 5; ++i)
    if (::dup2(plan.fds[i], i) < 0) fail_child(plan, 2, errno);
  if (::syscall(SYS_close_range, 5U, ~0U, CLOSE_RANGE_CLOEXEC) != 0) {
    struct rlimit limit {};
    const rlim_t top = ::getrlimit(RLIMIT_NOFILE, &limit) == 0 ? limit.rlim_cur : 1024;
    for (rlim_t fd = 5; fd < top && fd < 65536; ++fd)
      if (static_cast<int>(fd) != plan.report_fd) ::close(static_cast<int>(fd));
  }
  if (plan.cwd && ::chdir(plan.cwd) != 0) fail_child(plan, 1, errno);
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; ++sig)
    if (sig != SIGKILL && sig != SIGSTOP) ::sigaction(sig, &dfl, nullptr);  // some are glibc's
  sigset_t none;
  sigemptyset(&none);
  ::pthread_sigmask(SIG_SETMASK, &none, nullptr);
  int error = ENOENT;
  for (const char *const *path = plan.candidates; *path; ++path) {
    ::execve(*path, plan.argv, plan.envp);
    if (errno == EACCES)
      error = EACCES;  // as execvp: remember it, a later directory may still have it
    else if (errno != ENOENT && errno != ENOTDIR)
      fail_child(plan, 0, errno);
  }
  fail_child(plan, 0, error);
}

std::vector<std::string> candidates_for(const std::string &file, const std::string &search_path) {
  if (file.find('/') != std::string::npos) return {file};
  std::vector<std::string> out;
  const std::string path = search_path.empty() ? "/bin:/usr/bin" : search_path;
  size_t begin = 0;
  for (;;) {
    const size_t end = path.find(':', begin);
    const std::string dir = path.substr(begin, end == std::string::npos ? end : end - begin);
    out.push_back((dir.empty() ? "." : dir) + "/" + file);
    if (end == std::string::npos) break;
    begin = end + 1;
  }
  return out;
}

std::vector<char *> pointers(std::vector<std::string> &strings) {
  std::vector<char *> out;
  out.reserve(strings.size() + 1);
  for (std::string &s : strings) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

}  // namespace

SpawnResult spawn_flow(const SpawnRequest &request) {
  SpawnResult result;
  auto failed = [&result](const char *step, int error) {
    result.failed_step = step;
    result.error = error;
    return result;
  };
  std::vector<std::string> args = request.argv, env = request.env,
                           paths = candidates_for(request.argv.at(0), request.search_path);
  const std::vector<char *> argv = pointers(args), envp = pointers(env), tries = pointers(paths);

  int report[2];
  if (::pipe2(report, O_CLOEXEC) != 0) return failed("pipe2", errno);
  const ChildPlan plan{
      argv.data(), envp.data(), tries.data(), request.cwd.empty() ? nullptr : request.cwd.c_str(),
      request.fds, report[1],   ::getpid()};

  // No host signal handler may run in the child before it resets them.
  sigset_t all, old;
  sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &old);
  int pidfd = -1;
  CloneArgs args3{};
  args3.flags = kClonePidfd | (request.cgroup_fd >= 0 ? kCloneIntoCgroup : 0);
  args3.pidfd = reinterpret_cast<uintptr_t>(&pidfd);
  args3.exit_signal = SIGCHLD;
  args3.cgroup = request.cgroup_fd >= 0 ? static_cast<uint64_t>(request.cgroup_fd) : 0;
  long pid = ::syscall(SYS_clone3, &args3, sizeof args3);
  int clone_error = pid < 0 ? errno : 0;
  if (pid < 0 && clone_error == ENOSYS && request.cgroup_fd < 0) {
    pid = ::fork();
    clone_error = pid < 0 ? errno : 0;
  }
  if (pid == 0) child_main(plan);
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  ::close(report[1]);
  if (pid < 0) {
    ::close(report[0]);
    return failed(request.cgroup_fd >= 0 ? kCloneIntoCgroupStep : "clone3", clone_error);
  }

  ChildFailure failure{};
  ssize_t n;
  do {
    n = ::read(report[0], &failure, sizeof failure);
  } while (n < 0 && errno == EINTR);
  ::close(report[0]);
  if (n == static_cast<ssize_t>(sizeof failure)) {
    ::waitpid(static_cast<pid_t>(pid), nullptr, 0);
    if (pidfd >= 0) ::close(pidfd);
    result.failed_step = failure.step == 0   ? "exec"
                         : failure.step == 1 ? "chdir " + request.cwd
                                             : std::string("child setup");
    result.error = failure.error;
    return result;
  }
  result.pid = static_cast<pid_t>(pid);
#ifdef SYS_pidfd_open
  if (pidfd < 0) pidfd = static_cast<int>(::syscall(SYS_pidfd_open, result.pid, 0));
#endif
  result.pidfd = pidfd;
  return result;
}

}  // namespace kodo
