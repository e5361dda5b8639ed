// thread_name.hpp: names the calling thread (at most 15 characters), so that `top -H`, perf
// and /proc/PID/task/*/comm tell the host's threads apart: an operator looking at a busy host
// sees which part is busy.
#pragma once

#include <pthread.h>

namespace kodo {

inline void name_this_thread(const char *name) {
  ::pthread_setname_np(::pthread_self(), name);  // only fails for a name over 15 characters
}

}  // namespace kodo
