// fork_streams.hpp: the streams the kodosumi fork's producer writes (branch
// feat/redis-transport, kodosumi/transport.py): one per execution at <prefix><fid>, entries
// with only `timestamp`, `kind` and `payload`, and no announcement. A spooler finds them by
// scanning for stream keys under the prefix that are not announced, takes the username from
// the execution's meta event (the fork's runner writes it third, as
// {"dict": {..., "username": ...}}), and announces them as kodo's producer would; from there
// they are read like any other stream, each fork entry getting its position in the stream
// as seq (see kAdopt: the position survives trimming, as it counts from entries-added).
#pragma once

#include "redis_connection.hpp"
#include "redis_scripts.hpp"

#include <kodo/plugin.hpp>

#include <rapidjson/document.h>

#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace kodo::redis {

// The username of a meta payload, kodosumi's serialized form or a plain object; "" if none.
inline std::string username_from_meta(std::string_view payload) {
  rapidjson::Document doc;
  // Flat by contract: a parse that nests deeper than a few levels is not a meta event.
  doc.Parse<rapidjson::kParseStopWhenDoneFlag>(payload.data(), payload.size());
  if (doc.HasParseError() || !doc.IsObject()) return "";
  const rapidjson::Value *body = &doc;
  if (auto wrapped = doc.FindMember("dict");
      wrapped != doc.MemberEnd() && wrapped->value.IsObject())
    body = &wrapped->value;
  auto user = body->FindMember("username");
  if (user == body->MemberEnd() || !user->value.IsString()) return "";
  return std::string(user->value.GetString(), user->value.GetStringLength());
}

// A glob pattern matching exactly the keys that start with `prefix`.
inline std::string glob_prefix(const std::string &prefix) {
  std::string out;
  for (char c : prefix) {
    if (c == '*' || c == '?' || c == '[' || c == ']' || c == '\\') out += '\\';
    out += c;
  }
  return out + "*";
}

// Scans the keyspace a slice at a time (each step a few SCAN calls, resuming where the last
// one stopped) and announces the fork's streams it finds. Used by one consumer's thread.
class ForkStreamFinder {
 public:
  ForkStreamFinder(std::string prefix, std::string registry, std::string executions)
      : prefix_(std::move(prefix)),
        registry_(std::move(registry)),
        executions_(std::move(executions)) {}

  // Returns the fids announced by this step; logs the ones it cannot take and why.
  std::vector<std::string> step(Connection &c, const kodo::sdk::HostLog &log) {
    std::vector<std::string> candidates;
    for (int i = 0; i < kScansPerStep; ++i) {
      auto r = c.command(
          {"SCAN", cursor_, "MATCH", glob_prefix(prefix_), "COUNT", "1000", "TYPE", "stream"},
          "SCAN for unannounced streams");
      if (!is_array(r.get()) || r->elements != 2 || !is_array(r->element[1])) break;
      cursor_ = std::string(text(r->element[0]));
      for (size_t k = 0; k < r->element[1]->elements; ++k) {
        const std::string_view key = text(r->element[1]->element[k]);
        const std::string fid(key.substr(prefix_.size()));
        // '#' marks kodo's own keys; a name kodo could not store is not an execution.
        if (fid.find('#') == std::string::npos && kodo::sdk::name_problem("fid", fid).empty())
          candidates.push_back(fid);
      }
      if (cursor_ == "0") break;
    }
    std::vector<std::string> announced;
    if (candidates.empty()) return announced;
    // Announced already (by kodo's producer, or found before), and the first entries.
    std::string resp;
    for (const auto &fid : candidates) {
      append_command(resp, {"HEXISTS", executions_, fid});
      append_command(resp, {"XRANGE", prefix_ + fid, "-", "+", "COUNT", "16"});
    }
    auto replies = c.pipeline(resp, candidates.size() * 2);
    std::string announce;
    size_t announcing = 0;
    std::vector<std::string> fids;
    for (size_t i = 0; i < candidates.size(); ++i) {
      const Value *known = replies[2 * i].get();
      const Value *entries = replies[2 * i + 1].get();
      if (!known || known->type != REDIS_REPLY_INTEGER || known->integer != 0) continue;
      if (!is_array(entries) || entries->elements == 0) continue;
      std::string username;
      bool kodo_entries = false;
      for (size_t e = 0; e < entries->elements; ++e) {
        const Value *entry = entries->element[e];
        if (!is_array(entry) || entry->elements < 2 || !is_array(entry->element[1])) continue;
        std::string kind, payload;
        for (size_t f = 0; f + 1 < entry->element[1]->elements; f += 2) {
          const std::string_view name = text(entry->element[1]->element[f]);
          if (name == "seq") kodo_entries = true;  // kodo's producer announces its own
          if (name == "kind") kind = std::string(text(entry->element[1]->element[f + 1]));
          if (name == "payload") payload = std::string(text(entry->element[1]->element[f + 1]));
        }
        if (kind == "meta" && username.empty()) username = username_from_meta(payload);
      }
      if (kodo_entries) continue;
      if (username.empty()) continue;  // its meta event is not written yet: the next pass
      if (std::string problem = kodo::sdk::name_problem("username", username); !problem.empty()) {
        if (warned_.insert(candidates[i]).second)
          log(KODO_LOG_WARN, "stream " + prefix_ + candidates[i] + " (the kodosumi fork's) has " +
                                 "a meta event whose username cannot be stored: " + problem);
        continue;
      }
      append_command(announce, {"EVAL", scripts::kRegister, "2", registry_, executions_,
                                candidates[i], username});
      ++announcing;
      fids.push_back(candidates[i]);
    }
    if (announcing == 0) return announced;
    auto results = c.pipeline(announce, announcing);
    for (size_t i = 0; i < results.size(); ++i)
      if (results[i].get() && results[i]->type == REDIS_REPLY_STRING) {
        announced.push_back(fids[i]);
        log(KODO_LOG_INFO, "found stream " + prefix_ + fids[i] +
                               " written without announcement (the kodosumi fork's producer); "
                               "announced it");
      }
    return announced;
  }

 private:
  static constexpr int kScansPerStep = 4;
  const std::string prefix_, registry_, executions_;
  std::string cursor_ = "0";
  std::set<std::string> warned_;
};

}  // namespace kodo::redis
