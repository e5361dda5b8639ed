// locks.cpp: lock requests, the lock and lease payloads, and locks read back from events.
#include "core/locks.hpp"

#include <kodo/host/error.hpp>
#include "core/ids.hpp"
#include "core/json_bounded.hpp"

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>

namespace kodo {

namespace {

using Writer = rapidjson::Writer<rapidjson::StringBuffer>;

// Payloads come from the flow's line parser, which already bounds nesting; this bound only
// keeps a hand-written stored row from costing more than any payload a flow could send.
constexpr size_t kMaxDepth = 256;

// Writes `json` (already valid JSON) as a value in place.
void raw_value(Writer &w, const std::string &json) {
  w.RawValue(json.data(), json.size(), rapidjson::kObjectType);
}

// The value as JSON text; nullopt when it holds a number RapidJSON read as infinite (a
// literal past a double's range, such as 2001e305), which no JSON text can hold.
std::optional<std::string> text_of(const rapidjson::Value &v) {
  rapidjson::StringBuffer buffer;
  Writer w(buffer);
  if (!v.Accept(w)) return std::nullopt;
  return std::string(buffer.GetString(), buffer.GetSize());
}

}  // namespace

std::string parse_lock_request(const std::string &payload, LockRequest *out) {
  rapidjson::Document doc;
  if (parse_json_bounded(payload, kMaxDepth, doc) != JsonRead::Ok || !doc.IsObject())
    return "a lock's payload must be a JSON object {\"name\": ..., \"data\": ..., "
           "\"timeout\": seconds}";
  // The event line reader stores a lock line in kodosumi's form, {"dict": {...}}: the request
  // is what it wraps.
  const rapidjson::Value *request = &doc;
  if (doc.MemberCount() == 1 && doc.HasMember("dict") && doc["dict"].IsObject())
    request = &doc["dict"];
  const auto name = request->FindMember("name");
  if (name == request->MemberEnd() || !name->value.IsString() || name->value.GetStringLength() == 0)
    return "a lock needs a non-empty string \"name\"";
  out->name.assign(name->value.GetString(), name->value.GetStringLength());
  const auto data = request->FindMember("data");
  out->data_json = "null";
  if (data != request->MemberEnd()) {
    std::optional<std::string> text = text_of(data->value);
    if (!text) return "a lock's \"data\" holds a number beyond the range of a double";
    out->data_json = std::move(*text);
  }
  const auto timeout = request->FindMember("timeout");
  out->timeout_s = kDefaultLockTimeoutS;
  if (timeout != request->MemberEnd() && !timeout->value.IsNull()) {
    if (!timeout->value.IsNumber() || !(timeout->value.GetDouble() > 0) ||
        !std::isfinite(timeout->value.GetDouble()))
      return "a lock's \"timeout\" must be a number of seconds > 0";
    out->timeout_s = timeout->value.GetDouble();
  }
  return "";
}

std::string new_lock_id() {
  // From the kernel's CSPRNG: a lid is what a POST must name to answer a lock, so it must not
  // be predictable from the lids seen before (as a seeded mt19937's are).
  std::string b = random_bytes(16);
  b[6] = static_cast<char>((b[6] & 0x0F) | 0x40);  // version 4
  b[8] = static_cast<char>((b[8] & 0x3F) | 0x80);  // RFC 4122 variant
  static const char digits[] = "0123456789abcdef";
  std::string id;
  for (size_t i = 0; i < b.size(); ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) id += '-';
    id += digits[static_cast<uint8_t>(b[i]) >> 4];
    id += digits[b[i] & 0xF];
  }
  return id;
}

std::string lock_payload(const std::string &name, const std::string &lid,
                         const std::string &data_json, double expires) {
  rapidjson::StringBuffer buffer;
  Writer w(buffer);
  w.StartObject();
  w.Key("dict");
  w.StartObject();
  w.Key("name");
  w.String(name.c_str(), static_cast<rapidjson::SizeType>(name.size()));
  w.Key("lid");
  w.String(lid.c_str(), static_cast<rapidjson::SizeType>(lid.size()));
  w.Key("data");
  raw_value(w, data_json);
  w.Key("expires");
  w.Double(expires);
  w.EndObject();
  w.EndObject();
  return std::string(buffer.GetString(), buffer.GetSize());
}

namespace {

// {"name", "lid", "result"}: the lease's body and, unwrapped, the flow's answer line.
void write_answer(Writer &w, const std::string &name, const std::string &lid,
                  const std::string &result_json) {
  w.StartObject();
  w.Key("name");
  w.String(name.c_str(), static_cast<rapidjson::SizeType>(name.size()));
  w.Key("lid");
  w.String(lid.c_str(), static_cast<rapidjson::SizeType>(lid.size()));
  w.Key("result");
  raw_value(w, result_json);
  w.EndObject();
}

}  // namespace

std::string lease_payload(const std::string &name, const std::string &lid,
                          const std::string &result_json) {
  rapidjson::StringBuffer buffer;
  Writer w(buffer);
  w.StartObject();
  w.Key("dict");
  write_answer(w, name, lid, result_json);
  w.EndObject();
  return std::string(buffer.GetString(), buffer.GetSize());
}

std::string answer_line(const std::string &name, const std::string &lid,
                        const std::string &result_json) {
  rapidjson::StringBuffer buffer;
  Writer w(buffer);
  write_answer(w, name, lid, result_json);
  return std::string(buffer.GetString(), buffer.GetSize()) + "\n";
}

std::string refusal_line(const std::string &problem) {
  rapidjson::StringBuffer buffer;
  Writer w(buffer);
  w.StartObject();
  w.Key("error");
  w.String(problem.c_str(), static_cast<rapidjson::SizeType>(problem.size()));
  w.EndObject();
  return std::string(buffer.GetString(), buffer.GetSize()) + "\n";
}

std::vector<StoredLock> stored_locks(const std::vector<Event> &events) {
  std::vector<StoredLock> locks;
  for (const Event &e : events) {
    if (e.kind != "lock" && e.kind != "lease") continue;
    rapidjson::Document doc;
    if (parse_json_bounded(e.payload, kMaxDepth, doc) != JsonRead::Ok || !doc.IsObject()) continue;
    const rapidjson::Value *body = &doc;
    if (const auto wrapped = doc.FindMember("dict");
        wrapped != doc.MemberEnd() && wrapped->value.IsObject())
      body = &wrapped->value;
    const auto lid = body->FindMember("lid");
    if (lid == body->MemberEnd() || !lid->value.IsString()) continue;
    const std::string id(lid->value.GetString(), lid->value.GetStringLength());
    auto found =
        std::find_if(locks.begin(), locks.end(), [&](const StoredLock &l) { return l.lid == id; });
    if (e.kind == "lock") {
      if (found != locks.end()) continue;  // a redelivered row
      StoredLock lock;
      lock.lid = id;
      if (const auto name = body->FindMember("name");
          name != body->MemberEnd() && name->value.IsString())
        lock.name.assign(name->value.GetString(), name->value.GetStringLength());
      if (const auto data = body->FindMember("data"); data != body->MemberEnd())
        lock.data_json = text_of(data->value).value_or("null");
      if (const auto expires = body->FindMember("expires");
          expires != body->MemberEnd() && expires->value.IsNumber())
        lock.expires = expires->value.GetDouble();
      locks.push_back(std::move(lock));
    } else if (found != locks.end()) {
      found->answered = true;
      if (const auto result = body->FindMember("result"); result != body->MemberEnd())
        found->result_json = text_of(result->value).value_or("null");
    }
  }
  return locks;
}

std::vector<std::string> open_lock_ids(const std::vector<StoredLock> &locks) {
  std::vector<std::string> ids;
  for (const StoredLock &l : locks)
    if (!l.answered) ids.push_back(l.lid);
  return ids;
}

std::string status_with_locks(const std::string &status, const std::vector<StoredLock> &locks) {
  if (is_final_status(status) || open_lock_ids(locks).empty()) return status;
  return "awaiting";
}

}  // namespace kodo
