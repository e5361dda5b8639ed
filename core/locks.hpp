// locks.hpp: human in the loop, kodosumi's locks and leases.
//
// A flow asks for an answer by writing a `lock` line to its events descriptor:
//   {"kind": "lock", "payload": {"name": "approve", "data": {...}, "timeout": 600}}
// (`data` any JSON value, default null; `timeout` seconds > 0, default kodosumi's 3 h). The
// executor gives the lock an id (lid, a uuid4), stores a `lock` event
// {"dict": {"name", "lid", "data", "expires"}} as kodosumi's tracer does, and the run reads
// `awaiting` until it is answered. `POST /lock/{fid}/{lid}` answers it: the executor stores a
// `lease` event {"dict": {"name", "lid", "result"}} and writes one line to the descriptor
// named by KODO_ANSWERS_FD: {"name": ..., "lid": ..., "result": <the posted JSON>} (a request
// the executor refuses gets {"error": "<why>"} there, and an error event). A lock
// unanswered at its expiry ends the run with an error, as kodosumi's TimeoutError does.
//
// Both events are stored like any other, so the locks of a run can be read from storage by
// any host, after any restart (stored_locks below). Only the flow's wait lives in memory: a
// host that starts after one died resumes its runs that awaited a lock (lock_resume.hpp).
#pragma once

#include "core/event.hpp"

#include <string>
#include <vector>

namespace kodo {

constexpr double kDefaultLockTimeoutS = 3 * 60 * 60;  // kodosumi's LOCK_EXPIRES

struct LockRequest {
  std::string name;
  std::string data_json = "null";
  double timeout_s = kDefaultLockTimeoutS;
};

// The flow's lock payload as a request, or an error naming what was wrong.
std::string parse_lock_request(const std::string &payload, LockRequest *out);

// A new lock id: a random (version 4) UUID, as kodosumi makes them.
std::string new_lock_id();

// The stored payloads, in kodosumi's serialized form ({"dict": {...}}). `data_json` and
// `result_json` must be valid JSON.
std::string lock_payload(const std::string &name, const std::string &lid,
                         const std::string &data_json, double expires);
std::string lease_payload(const std::string &name, const std::string &lid,
                          const std::string &result_json);
// The line written to the flow's answers descriptor, newline included.
std::string answer_line(const std::string &name, const std::string &lid,
                        const std::string &result_json);

// The line written to the flow instead of an answer when its lock request was refused.
std::string refusal_line(const std::string &problem);

// A lock as its run's stored events tell it.
struct StoredLock {
  std::string lid, name;
  std::string data_json = "null";
  double expires = 0;
  bool answered = false;
  std::string result_json = "null";  // the lease's result once answered
};

// The locks of a run, in the order they were made, from its lock and lease events (others are
// skipped). Reads kodosumi's {"dict": {...}} form and a plain object alike; an event that is
// neither is skipped, so one bad row never hides the others.
std::vector<StoredLock> stored_locks(const std::vector<Event> &events);

// The lids of the locks not answered yet, in order: kodosumi's `locks` of /outputs/status.
std::vector<std::string> open_lock_ids(const std::vector<StoredLock> &locks);

// kodosumi's derived status: `awaiting` while a run that has not ended holds an open lock.
std::string status_with_locks(const std::string &status, const std::vector<StoredLock> &locks);

}  // namespace kodo
