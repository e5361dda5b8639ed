// fd_limit.cpp: see fd_limit.hpp.
#include "core/fd_limit.hpp"

#include <sys/resource.h>

#include <algorithm>

namespace kodo {

FdBudget fd_budget(uint64_t limit) {
  FdBudget b;
  b.limit = b.was = limit;
  b.connections = static_cast<size_t>(std::max<uint64_t>(16, limit * 3 / 5));
  b.open_databases = static_cast<size_t>(std::clamp<uint64_t>(limit / 4 / 3, 4, 256));
  return b;
}

FdBudget raise_open_files_limit() {
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) != 0) return fd_budget(1024);
  const uint64_t was = lim.rlim_cur;
  if (lim.rlim_cur != lim.rlim_max) {
    rlimit raised = lim;
    raised.rlim_cur = lim.rlim_max;
    // An unlimited hard limit still has a kernel ceiling (nr_open); keep a sane number.
    if (raised.rlim_cur == RLIM_INFINITY || raised.rlim_cur > (1u << 20))
      raised.rlim_cur = 1u << 20;
    if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) lim = raised;
  }
  FdBudget b = fd_budget(lim.rlim_cur == RLIM_INFINITY ? (1u << 20) : lim.rlim_cur);
  b.was = was;
  return b;
}

}  // namespace kodo
