// event.cpp: kodosumi's event kinds, sorted into the two read views it serves.
#include "core/event.hpp"

#include <algorithm>
#include <chrono>
#include <initializer_list>

namespace kodo {

namespace {

bool one_of(const std::string &kind, std::initializer_list<const char *> kinds) {
  for (const char *k : kinds)
    if (kind == k) return true;
  return false;
}

}  // namespace

bool is_known_kind(const std::string &kind) {
  return one_of(kind, {"meta", "inputs", "agent", "upload", "debug", "stdout", "stderr", "lock",
                       "lease", "status", "error", "action", "result", "final"});
}

// "error" is in both views: kodosumi shows a failure beside the run's output and its log.
const std::vector<std::string> &main_kinds() {
  static const std::vector<std::string> kinds = {"meta",   "inputs", "agent", "status", "error",
                                                 "action", "result", "final", "lock",   "lease"};
  return kinds;
}

const std::vector<std::string> &stdio_kinds() {
  static const std::vector<std::string> kinds = {"error", "stdout", "stderr", "debug", "upload"};
  return kinds;
}

bool is_main_kind(const std::string &kind) {
  const auto &kinds = main_kinds();
  return std::find(kinds.begin(), kinds.end(), kind) != kinds.end();
}

bool is_stdio_kind(const std::string &kind) {
  const auto &kinds = stdio_kinds();
  return std::find(kinds.begin(), kinds.end(), kind) != kinds.end();
}

double now_seconds() {
  using namespace std::chrono;
  return duration<double>(system_clock::now().time_since_epoch()).count();
}

}  // namespace kodo
