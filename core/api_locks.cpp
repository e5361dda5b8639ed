// api_locks.cpp: kodosumi's lock routes, GET and POST /lock/{fid}/{lid} (locks.hpp).
//
// A lock is read from the run's stored lock and lease events, so any host sharing the
// storage, and a host restarted since, shows it. An answer goes to the executor that runs the
// flow; when no run here awaits it, the stored events say why (answered already, or the run
// ended: cancelled, stopped with its host, or past the lock's expiry).
#include "core/api.hpp"
#include "core/api_json.hpp"

#include <kodo/host/error.hpp>
#include "core/http_response.hpp"
#include "core/json_bounded.hpp"
#include "core/locks.hpp"

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <algorithm>
#include <optional>

namespace kodo {

namespace {

void write_raw(JsonWriter &w, const std::string &json) {
  w.RawValue(json.c_str(), json.size(), rapidjson::kObjectType);
}

// Opens the object every lock answer starts with: which lock of which run.
void start_lock(JsonWriter &w, const std::string &fid, const std::string &lid) {
  w.StartObject();
  w.Key("fid");
  write_string(w, fid);
  w.Key("lid");
  write_string(w, lid);
}

void send_body(HttpResponder &response, int status, const rapidjson::StringBuffer &body) {
  response.send(status, "application/json", std::string_view(body.GetString(), body.GetSize()));
}

}  // namespace

// Lock ids become part of messages and queries only, but are held to their uuid form anyway.
void check_lid(const std::string &lid) {
  const bool ok =
      !lid.empty() && lid.size() <= 64 && std::all_of(lid.begin(), lid.end(), [](char c) {
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') ||
               c == '-';
      });
  if (!ok)
    throw Error(KODO_ERR_INVALID_ARGUMENT,
                "lock id '" + lid.substr(0, 64) +
                    "' is not a lock id (hexadecimal digits and '-', at most 64)");
}

std::optional<StoredLock> Api::find_lock(const std::string &fid, const std::string &lid,
                                         ExecutionInfo *info) {
  if (!known(fid, info)) throw Error(KODO_ERR_NOT_FOUND, "no execution " + fid);
  EventQuery query;
  query.fid = fid;
  query.username = info->username;
  query.kinds = {"lock", "lease"};
  query.limit = 100000;
  std::vector<Event> events;
  try {
    events = ctx_.storage.read_events(query);
  } catch (const Error &e) {
    if (e.code() != KODO_ERR_NOT_FOUND) throw;
  }
  for (StoredLock &lock : stored_locks(events))
    if (lock.lid == lid) return std::move(lock);
  return std::nullopt;
}

void Api::lock_get(const std::string &fid, const std::string &lid, HttpResponder &response) {
  ExecutionInfo info;
  auto lock = find_lock(fid, lid, &info);
  if (!lock) throw Error(KODO_ERR_NOT_FOUND, "no lock " + lid + " in execution " + fid);
  rapidjson::StringBuffer buffer;
  JsonWriter w(buffer);
  start_lock(w, fid, lock->lid);
  w.Key("name");
  write_string(w, lock->name);
  w.Key("data");
  write_raw(w, lock->data_json);
  w.Key("expires");
  w.Double(lock->expires);
  w.Key("state");
  w.String(lock->answered ? "answered" : is_final_status(info.status) ? "ended" : "open");
  w.Key("result");
  if (lock->answered)
    write_raw(w, lock->result_json);
  else
    w.Null();
  w.EndObject();
  send_body(response, 200, buffer);
}

void Api::lock_post(const std::string &fid, const std::string &lid, const HttpRequest &request,
                    HttpResponder &response) {
  rapidjson::Document answer;
  switch (parse_json_bounded(request.body, ctx_.json_max_depth, answer)) {
    case JsonRead::Ok: break;
    case JsonRead::Invalid:
      throw Error(KODO_ERR_INVALID_ARGUMENT,
                  "the answer to a lock must be a JSON value (the body is not JSON)");
    case JsonRead::TooDeep:
      throw Error(KODO_ERR_INVALID_ARGUMENT, "the answer to a lock nests deeper than " +
                                                 std::to_string(ctx_.json_max_depth) + " levels");
  }
  rapidjson::StringBuffer compact;
  JsonWriter cw(compact);
  // RapidJSON reads a literal past a double's range (2001e305) as infinite, which no JSON
  // text holds: refused here rather than handed to the flow half written.
  if (!answer.Accept(cw))
    throw Error(KODO_ERR_INVALID_ARGUMENT,
                "the answer to a lock holds a number beyond the range of a double");
  const std::string result(compact.GetString(), compact.GetSize());

  const Executor::LockAnswer taken = ctx_.executor.answer_lock(fid, lid, result);
  if (taken != Executor::LockAnswer::answered) {
    ExecutionInfo info;
    const auto lock = find_lock(fid, lid, &info);
    std::string why;
    if (!lock && taken != Executor::LockAnswer::already_answered)
      throw Error(KODO_ERR_NOT_FOUND, "no open lock " + lid + " in execution " + fid);
    else if (taken == Executor::LockAnswer::already_answered || lock->answered)
      why = "lock " + lid + " of execution " + fid + " is answered already";
    else if (is_final_status(info.status) || ctx_.executor.is_active(fid))
      why = "execution " + fid + " ended" +
            (is_final_status(info.status) ? " (status " + info.status + ")" : "") +
            " before lock " + lid + " was answered; no run awaits it any more";
    else
      why = "execution " + fid + " is not running on this host; answer lock " + lid +
            " on the host that runs it";
    // kodosumi's error body, as on its other routes.
    rapidjson::StringBuffer body;
    JsonWriter w(body);
    w.StartObject();
    w.Key("status_code");
    w.Int(409);
    w.Key("detail");
    write_string(w, why);
    w.EndObject();
    send_body(response, 409, body);
    return;
  }
  rapidjson::StringBuffer buffer;
  JsonWriter w(buffer);
  start_lock(w, fid, lid);
  w.Key("state");
  w.String("answered");
  w.Key("result");
  write_raw(w, result);
  w.EndObject();
  send_body(response, 200, buffer);
}

}  // namespace kodo
