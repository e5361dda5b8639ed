// records.hpp: the host's owned forms of what crosses the storage ABI: events, the query
// that reads them, and an execution's summary. Shared by kodo-host and the conformance kit.
#pragma once

#include <kodo/plugin.hpp>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace kodo {

// The host's owning event is the SDK's: the same fields, view() and copy() on both sides.
using Event = sdk::OwnedEvent;

struct ExecutionInfo {
  std::string fid, username, status;
  double started_at = 0, updated_at = 0;
  int64_t event_count = 0, last_seq = -1;
};

struct EventQuery {
  std::string fid;
  std::string username;  // empty: any user
  int64_t after_seq = -1;
  std::vector<std::string> kinds;  // empty: all
  size_t limit = 1000;
};

}  // namespace kodo
