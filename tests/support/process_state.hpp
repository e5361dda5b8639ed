// process_state.hpp: whether a process a test started is still running, and its pid as a
// flow wrote it to a file.
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <fstream>
#include <string>

namespace kodo::testing {

// Alive and not a zombie waiting for its parent (init) to reap it.
inline bool alive(pid_t pid) {
  if (pid <= 0 || ::kill(pid, 0) != 0) return false;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string pid_field, comm, state;
  stat >> pid_field >> comm >> state;
  return stat && state != "Z" && state != "X";
}

inline pid_t read_pid(const std::string &path) {
  pid_t pid = 0;
  std::ifstream(path) >> pid;
  return pid;
}

}  // namespace kodo::testing
