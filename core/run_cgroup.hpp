// run_cgroup.hpp: a cgroup v2 per run, so that everything a run started can be found and
// killed, however it detached (setsid, double fork, closed pipes, ignored signals).
//
// RunCgroups makes one directory per executor under the host's own cgroup
// (<cgroup2 mount><path from /proc/self/cgroup>/kodo-<pid>-<n>) and one below it per run
// (run-<fid>); flows start inside theirs (clone3 CLONE_INTO_CGROUP, see flow_spawn.hpp), and
// cgroup.kill (Linux 5.14) SIGKILLs every process in it at once, with no race against forks.
//
// A host killed outright cannot clean up, so create() also forks a guard: a small process
// in a session of its own that ignores the terminal's signals and blocks reading a pipe
// whose only writer is the host. When the host dies, for any reason, the read returns, and
// the guard writes cgroup.kill of the executor's directory (which kills every run's
// processes), removes the directories and exits. Between fork and exit it makes only
// async-signal-safe calls, as the host has other threads.
//
// Needs a writable cgroup v2 hierarchy with cgroup.kill (root, or a delegated subtree such as
// systemd's Delegate=yes). create() says why not otherwise, and the executor falls back to
// process groups (see executor.hpp).
#pragma once

#include <memory>
#include <string>

#include <sys/types.h>

namespace kodo {

class RunCgroup {
 public:
  RunCgroup(std::string path, int dir_fd, int events_fd);
  ~RunCgroup();  // removes the directory; it must be empty by then (a log line otherwise)
  RunCgroup(const RunCgroup &) = delete;
  RunCgroup &operator=(const RunCgroup &) = delete;

  const std::string &path() const { return path_; }
  int dir_fd() const { return dir_fd_; }  // for CLONE_INTO_CGROUP
  bool kill();                            // SIGKILL to every process in it; false on failure
  bool populated() const;                 // any process left (an unreadable state counts)

 private:
  std::string path_;
  int dir_fd_;
  int events_fd_;
};

class RunCgroups {
 public:
  // The executor's directory and its guard, or null with *why_not saying what is missing.
  static std::unique_ptr<RunCgroups> create(std::string *why_not);
  ~RunCgroups();  // stops the guard, which kills what is left and removes the directories
  RunCgroups(const RunCgroups &) = delete;
  RunCgroups &operator=(const RunCgroups &) = delete;

  const std::string &path() const { return path_; }
  // A fresh directory for one run; null with *error on failure.
  std::unique_ptr<RunCgroup> make_run(const std::string &fid, std::string *error);

 private:
  RunCgroups(std::string path, pid_t guard, int guard_pipe);
  std::string path_;
  pid_t guard_;
  int guard_pipe_;  // write end; closing it (or the host's death) wakes the guard
};

}  // namespace kodo
