// fd_limit.hpp: the open-files limit. Shells and systemd give a soft limit of 1024 while
// the hard limit is far higher; the host raises its soft limit to the hard one at start and
// sizes what holds descriptors (client connections, SQLite databases kept open) from what
// it got, so that runs and requests are not starved of descriptors.
#pragma once

#include <cstddef>
#include <cstdint>

namespace kodo {

struct FdBudget {
  uint64_t limit = 0;         // the soft limit now in force
  uint64_t was = 0;           // the soft limit found at start
  size_t connections = 0;     // client connections at most
  size_t open_databases = 0;  // execution databases a storage keeps open (3 fds each in WAL)
};

// Raises the soft RLIMIT_NOFILE to the hard limit (if it can) and divides it: about 3/5 for
// client connections, 1/4 for open databases (at most 256), the rest for flows, plugins
// and the listener.
FdBudget raise_open_files_limit();
FdBudget fd_budget(uint64_t limit);

}  // namespace kodo
