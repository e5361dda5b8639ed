// memory_storage.hpp: a small, correct in-memory storage, written with the SDK's C++ helper.
// good_memory_storage.cpp registers it as it is; each contract-breaking plugin overrides
// one step, so the kit's verdict on it names exactly that step and nothing else.
#pragma once

#include <kodo/plugin.hpp>

#include <algorithm>
#include <cctype>
#include <map>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <vector>

namespace kodo_test {

using kodo::sdk::OwnedEvent;

class MemoryStorage : public kodo::sdk::StorageBase {
 public:
  MemoryStorage(const kodo::sdk::Options &, const kodo_host_api *) {}

  void create_schema() override {}

  void append(const kodo_event *const *events, size_t count) override {
    // Checked first, so a rejected batch stores nothing.
    for (size_t i = 0; i < count; ++i) {
      check_id(events[i]->fid, "fid");
      check_id(events[i]->username, "username");
    }
    std::unique_lock<std::shared_mutex> lock(mutex_);
    for (size_t i = 0; i < count; ++i) {
      Execution &x = executions_[events[i]->fid];
      if (x.events.empty()) x.username = events[i]->username;
      store(x.events, *events[i]);
    }
  }

  void read_events(const kodo_read_request &request, kodo::sdk::EventPageBuilder &out) override {
    bool has_more = false;
    for (auto &e : select(request, &has_more)) out.add() = std::move(e);
    out.set_has_more(has_more);
  }

  void get_execution(const char *fid, const char *username,
                     kodo::sdk::ExecutionPageBuilder &out) override {
    std::shared_lock<std::shared_mutex> lock(mutex_);
    summarize(fid, find(fid, username), out.add());
  }

  void list_executions(const kodo_list_request &request,
                       kodo::sdk::ExecutionPageBuilder &out) override {
    std::shared_lock<std::shared_mutex> lock(mutex_);
    std::vector<kodo::sdk::OwnedExecution> listed;
    for (const auto &[fid, x] : executions_)
      if (!x.archived && (!request.username || x.username == request.username))
        summarize(fid, x, listed.emplace_back());
    // Newest first: by start time, then by fid (an ObjectId starts with its time).
    std::sort(listed.begin(), listed.end(), [](const auto &a, const auto &b) {
      return a.started_at != b.started_at ? a.started_at > b.started_at : a.fid > b.fid;
    });
    for (size_t i = request.offset; i < listed.size() && i < request.offset + request.limit; ++i)
      out.add() = listed[i];
    out.set_has_more(request.offset + request.limit < listed.size());
  }

  void archive_execution(const char *fid, const char *username) override {
    std::unique_lock<std::shared_mutex> lock(mutex_);
    find(fid, username).archived = true;
  }

  int64_t purge(double older_than) override {
    std::unique_lock<std::shared_mutex> lock(mutex_);
    int64_t purged = 0;
    for (auto it = executions_.begin(); it != executions_.end();)
      if (it->second.events.back().timestamp < older_than) {
        it = executions_.erase(it);
        ++purged;
      } else {
        ++it;
      }
    return purged;
  }

 protected:
  // Puts one event in its place in seq order; an event already stored is skipped.
  virtual void store(std::vector<OwnedEvent> &events, const kodo_event &e) {
    auto at = std::lower_bound(events.begin(), events.end(), e.seq,
                               [](const OwnedEvent &o, int64_t seq) { return o.seq < seq; });
    if (at == events.end() || at->seq != e.seq) events.insert(at, OwnedEvent::copy(e));
  }

  // The events a read asks for, in seq order, and whether more match after them.
  std::vector<OwnedEvent> select(const kodo_read_request &request, bool *has_more) {
    std::shared_lock<std::shared_mutex> lock(mutex_);
    const Execution &x = find(request.fid, request.username);
    std::vector<OwnedEvent> picked;
    *has_more = false;
    for (const auto &e : x.events) {
      if (e.seq <= request.after_seq || !wanted_kind(request, e.kind)) continue;
      if (picked.size() == request.limit) {
        *has_more = true;
        break;
      }
      picked.push_back(e);
    }
    return picked;
  }

 private:
  struct Execution {
    std::string username;
    std::vector<OwnedEvent> events;  // in seq order
    bool archived = false;
  };

  // Ids become file names and keys elsewhere, so the same rule applies here.
  static void check_id(const char *id, const char *what) {
    const std::string text = id ? id : "";
    const bool fine = !text.empty() && text.size() <= 64 && text[0] != '.' &&
                      std::all_of(text.begin(), text.end(), [](char c) {
                        return std::isalnum(static_cast<unsigned char>(c)) || c == '_' ||
                               c == '.' || c == '@' || c == '-';
                      });
    if (!fine)
      throw kodo::sdk::Error(KODO_ERR_INVALID_ARGUMENT,
                             std::string("invalid ") + what + " '" + text + "'");
  }

  static bool wanted_kind(const kodo_read_request &request, const std::string &kind) {
    if (request.kind_count == 0) return true;
    for (size_t i = 0; i < request.kind_count; ++i)
      if (kind == request.kinds[i]) return true;
    return false;
  }

  Execution &find(const char *fid, const char *username) {
    check_id(fid, "fid");
    auto it = executions_.find(fid);
    if (it == executions_.end() || it->second.archived ||
        (username && it->second.username != username))
      throw kodo::sdk::Error(KODO_ERR_NOT_FOUND, std::string("no execution ") + fid);
    return it->second;
  }

  static void summarize(const std::string &fid, const Execution &x,
                        kodo::sdk::OwnedExecution &out) {
    out.fid = fid;
    out.username = x.username;
    out.started_at = x.events.front().timestamp;
    out.updated_at = x.events.back().timestamp;
    out.event_count = static_cast<int64_t>(x.events.size());
    out.last_seq = x.events.back().seq;
    for (const auto &e : x.events)
      if (e.kind == "status") out.status = e.payload;
  }

  std::shared_mutex mutex_;
  std::map<std::string, Execution> executions_;
};

}  // namespace kodo_test
