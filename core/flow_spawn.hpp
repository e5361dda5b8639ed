// flow_spawn.hpp: starts a flow's process, optionally straight into a cgroup.
//
// posix_spawn cannot place a child in a cgroup before it runs, and moving it afterwards races
// with the child's first fork. clone3(CLONE_INTO_CGROUP) creates the child inside the cgroup,
// so nothing it starts can escape the run's containment; where clone3 is missing (kernels
// before 5.3) fork() serves runs without a cgroup.
//
// The child, between clone and exec, makes only async-signal-safe calls (the host has other
// threads): it joins a process group of its own, asks for SIGKILL when the spawning thread
// dies (PR_SET_PDEATHSIG: a host killed outright takes its flows' direct children along),
// takes stdin/stdout/stderr/the events/the answers descriptors at 0-4, marks every other one
// close-on-exec, changes to cwd, resets signal dispositions and mask, and execs.
#pragma once

#include <string>
#include <vector>

#include <sys/types.h>

namespace kodo {

struct SpawnRequest {
  std::vector<std::string> argv;      // argv[0] without '/': searched in search_path
  std::vector<std::string> env;       // "K=V"
  std::string cwd;                    // empty: the host's
  std::string search_path;            // PATH-style list for argv[0]
  int fds[5] = {-1, -1, -1, -1, -1};  // become 0-4 in the child; each must be above 4
  int cgroup_fd = -1;                 // a cgroup v2 directory to start in, or -1
};

struct SpawnResult {
  pid_t pid = -1;
  int pidfd = -1;           // owned by the caller; -1 when the kernel gave none
  int error = 0;            // errno of the step that failed; 0 on success
  std::string failed_step;  // "exec", "chdir <cwd>", "clone3", ...
};

// failed_step when clone3 refused the cgroup (the caller may try again without one).
inline constexpr const char *kCloneIntoCgroupStep = "clone3 into the run's cgroup";

// Never throws for a failure of the child's setup: that is in the result.
SpawnResult spawn_flow(const SpawnRequest &request);

}  // namespace kodo
