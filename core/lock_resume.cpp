// lock_resume.cpp: see lock_resume.hpp.
#include "core/lock_resume.hpp"

#include "core/event_line.hpp"
#include "core/executor.hpp"
#include "core/kodosumi_payload.hpp"
#include "core/locks.hpp"
#include "core/storage.hpp"

#include <kodo/host/error.hpp>

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <algorithm>

namespace kodo {

namespace {

// Stored payloads were written by a host; this only bounds a hand-edited row.
constexpr size_t kMaxDepth = 256;

// The first stored event of `kind` read as a dict payload, or false.
bool stored_dict(const std::vector<Event> &events, const char *kind, rapidjson::Document &out) {
  for (const Event &e : events)
    if (e.kind == kind) return read_dict_payload(e.payload, kMaxDepth, out);
  return false;
}

}  // namespace

Resumption resume_awaiting_run(Executor &executor, Storage &storage,
                               const RunJournal::Orphan &orphan, const ExecutionInfo &info) {
  EventQuery query;
  query.fid = orphan.fid;
  query.username = info.username;
  query.kinds = {"inputs", "meta", "lock", "lease"};
  query.limit = 100000;
  std::vector<Event> events;
  try {
    events = storage.read_events(query);
  } catch (const Error &) {
    return {};  // nothing to resume from: ended as any run its host left
  }
  std::vector<StoredLock> locks = stored_locks(events);
  const auto open =
      std::find_if(locks.begin(), locks.end(), [](const StoredLock &l) { return !l.answered; });
  if (open == locks.end()) return {};  // not awaiting: ended as any run its host left
  const std::string why_not = "the host stopped while this run awaited lock " + open->lid + " (" +
                              quote_excerpt(open->name) + "), and it cannot be resumed: ";
  // The run's last seq is a note's once a host ended it; a resumed run's seqs follow the
  // flow's own.
  if (info.last_seq >= kHostNoteSeq) return {false, why_not + "a host noted its end already"};
  for (const StoredLock &l : locks)
    if (!l.answered && l.expires <= now_seconds())
      // As the executor ends a run whose lock expires: kodosumi's TimeoutError.
      return {false, "lock " + l.lid + " (" + quote_excerpt(l.name) + ") expired at " +
                         std::to_string(l.expires) + " unanswered"};

  rapidjson::Document meta, inputs;
  if (!stored_dict(events, "meta", meta) || !meta.HasMember("entry_point") ||
      !meta["entry_point"].IsString())
    return {false, why_not + "its meta event names no entry_point"};
  if (!stored_dict(events, "inputs", inputs))
    return {false, why_not + "its inputs event is missing or not an object"};
  rapidjson::StringBuffer inputs_text;
  rapidjson::Writer<rapidjson::StringBuffer> w(inputs_text);
  inputs.Accept(w);

  Continuation continuation;
  continuation.fid = orphan.fid;
  continuation.first_seq = info.last_seq + 1;
  continuation.note = "resumed after its host (" + orphan.instance +
                      ") stopped while it awaited lock " + open->lid + " (" +
                      quote_excerpt(open->name) +
                      "): the flow runs again from its start, its answered locks are answered "
                      "again from their stored leases, and its output until it asks for its open "
                      "lock again is not stored twice";
  continuation.replay = std::move(locks);
  try {
    executor.launch(meta["entry_point"].GetString(), info.username, inputs_text.GetString(),
                    &continuation);
  } catch (const Error &e) {
    return {false, why_not + e.what()};
  }
  return {true, ""};
}

}  // namespace kodo
