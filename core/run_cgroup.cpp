// run_cgroup.cpp: see run_cgroup.hpp.
#include "core/run_cgroup.hpp"

#include <kodo/host/log.hpp>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <fstream>
#include <sstream>
#include <system_error>

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

namespace kodo {

namespace {

std::string errno_text(int e) {
  return std::generic_category().message(e);
}

bool write_file(const std::string &path, const char *text) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return false;
  const size_t len = std::strlen(text);
  const bool ok = ::write(fd, text, len) == static_cast<ssize_t>(len);
  ::close(fd);
  return ok;
}

// Where cgroup2 is mounted, from /proc/self/mountinfo; empty when it is not.
std::string cgroup2_mount() {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    const size_t dash = line.find(" - ");
    if (dash == std::string::npos || line.compare(dash + 3, 8, "cgroup2 ") != 0) continue;
    std::istringstream fields(line.substr(0, dash));
    std::string id, parent, dev, root, mount;
    fields >> id >> parent >> dev >> root >> mount;
    if (root == "/") return mount;  // a bind of a subtree would need path arithmetic: skip it
  }
  return {};
}

// This process's cgroup v2 path ("0::/path" in /proc/self/cgroup).
std::string own_cgroup() {
  std::ifstream in("/proc/self/cgroup");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("0::", 0) == 0) return line.substr(3);
  return {};
}

// The guard's whole life, in the forked child: async-signal-safe calls only.
[[noreturn]] void guard_main(int pipe_fd, const char *kill_path, const char *events_path,
                             const char *dir_path) {
  ::setsid();
  struct sigaction ignore {};
  ignore.sa_handler = SIG_IGN;
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGPIPE}) ::sigaction(sig, &ignore, nullptr);
  sigset_t none;
  sigemptyset(&none);
  ::pthread_sigmask(SIG_SETMASK, &none, nullptr);
  ::prctl(PR_SET_NAME, "kodo-run-guard");
  // Keep nothing of the host's open: no listening socket, no other guard's pipe.
  if (pipe_fd > 0) ::syscall(SYS_close_range, 0U, static_cast<unsigned>(pipe_fd - 1), 0U);
  ::syscall(SYS_close_range, static_cast<unsigned>(pipe_fd + 1), ~0U, 0U);
  for (;;) {  // until end of file: the host closed its end, or died
    char byte;
    const ssize_t n = ::read(pipe_fd, &byte, 1);
    if (n == 0 || (n < 0 && errno != EINTR)) break;
  }
  const int kill_fd = ::open(kill_path, O_WRONLY | O_CLOEXEC);
  if (kill_fd >= 0) {
    [[maybe_unused]] const ssize_t n = ::write(kill_fd, "1", 1);
    ::close(kill_fd);
  }
  // Killed processes leave within moments; wait up to 10 s for the cgroup to empty.
  for (int i = 0; i < 1000; ++i) {
    char state[256] = {};
    const int fd = ::open(events_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) break;
    const ssize_t n = ::read(fd, state, sizeof state - 1);
    ::close(fd);
    if (n > 0 && std::strstr(state, "populated 0")) break;
    const struct timespec tick { 0, 10000000L };
    ::nanosleep(&tick, nullptr);
  }
  const int dir = ::open(dir_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir >= 0) {
    alignas(8) char buf[4096];
    for (;;) {
      const long n = ::syscall(SYS_getdents64, dir, buf, sizeof buf);
      if (n <= 0) break;
      for (long off = 0; off < n;) {
        struct Entry {
          uint64_t ino;
          int64_t off;
          unsigned short reclen;
          unsigned char type;
          char name[1];
        };
        const auto *e = reinterpret_cast<const Entry *>(buf + off);
        if (e->type == DT_DIR && std::strncmp(e->name, "run-", 4) == 0)
          ::unlinkat(dir, e->name, AT_REMOVEDIR);
        off += e->reclen;
      }
    }
    ::close(dir);
  }
  ::rmdir(dir_path);
  ::_exit(0);
}

}  // namespace

RunCgroup::RunCgroup(std::string path, int dir_fd, int events_fd)
    : path_(std::move(path)), dir_fd_(dir_fd), events_fd_(events_fd) {}

RunCgroup::~RunCgroup() {
  ::close(events_fd_);
  ::close(dir_fd_);
  if (::rmdir(path_.c_str()) != 0)
    log_error("executor: cannot remove the run's cgroup " + path_ + ": " + errno_text(errno) +
              " (its executor's guard kills what is left and removes it at the end)");
}

bool RunCgroup::kill() {
  return write_file(path_ + "/cgroup.kill", "1");
}

bool RunCgroup::populated() const {
  char state[256] = {};
  const ssize_t n = ::pread(events_fd_, state, sizeof state - 1, 0);
  return n <= 0 || std::strstr(state, "populated 0") == nullptr;
}

std::unique_ptr<RunCgroups> RunCgroups::create(std::string *why_not) {
  const std::string mount = cgroup2_mount();
  if (mount.empty()) {
    *why_not = "no cgroup2 file system is mounted";
    return nullptr;
  }
  const std::string own = own_cgroup();
  if (own.empty() || own[0] != '/') {
    *why_not = "this process has no cgroup v2 path in /proc/self/cgroup";
    return nullptr;
  }
  static std::atomic<unsigned> counter{0};
  const std::string parent = mount + (own == "/" ? "" : own);
  const std::string path =
      parent + "/kodo-" + std::to_string(::getpid()) + "-" + std::to_string(counter.fetch_add(1));
  if (::mkdir(path.c_str(), 0755) != 0) {
    *why_not = "cannot make " + path + ": " + errno_text(errno);
    return nullptr;
  }
  const std::string kill_path = path + "/cgroup.kill", events_path = path + "/cgroup.events";
  if (::access(kill_path.c_str(), W_OK) != 0) {
    *why_not = path + " has no writable cgroup.kill (Linux 5.14 or later is needed)";
    ::rmdir(path.c_str());
    return nullptr;
  }
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    *why_not = "pipe2: " + errno_text(errno);
    ::rmdir(path.c_str());
    return nullptr;
  }
  const pid_t guard = ::fork();
  if (guard == 0) guard_main(fds[0], kill_path.c_str(), events_path.c_str(), path.c_str());
  ::close(fds[0]);
  if (guard < 0) {
    *why_not = "cannot fork its guard: " + errno_text(errno);
    ::close(fds[1]);
    ::rmdir(path.c_str());
    return nullptr;
  }
  return std::unique_ptr<RunCgroups>(new RunCgroups(path, guard, fds[1]));
}

RunCgroups::RunCgroups(std::string path, pid_t guard, int guard_pipe)
    : path_(std::move(path)), guard_(guard), guard_pipe_(guard_pipe) {}

RunCgroups::~RunCgroups() {
  ::close(guard_pipe_);
  while (::waitpid(guard_, nullptr, 0) < 0 && errno == EINTR) {
  }
}

std::unique_ptr<RunCgroup> RunCgroups::make_run(const std::string &fid, std::string *error) {
  const std::string path = path_ + "/run-" + fid;
  if (::mkdir(path.c_str(), 0755) != 0) {
    *error = "cannot make " + path + ": " + errno_text(errno);
    return nullptr;
  }
  const int dir = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  const int events = ::open((path + "/cgroup.events").c_str(), O_RDONLY | O_CLOEXEC);
  if (dir < 0 || events < 0) {
    *error = "cannot open " + path + ": " + errno_text(errno);
    if (dir >= 0) ::close(dir);
    if (events >= 0) ::close(events);
    ::rmdir(path.c_str());
    return nullptr;
  }
  return std::make_unique<RunCgroup>(path, dir, events);
}

}  // namespace kodo
