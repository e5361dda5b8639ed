// status_cache.cpp: see status_cache.hpp.
#include "core/status_cache.hpp"

#include "core/event.hpp"

#include <cstring>

namespace kodo {

std::shared_ptr<const std::string> StatusCache::get(const std::string &fid,
                                                    std::string *owner) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(fid);
  if (it == entries_.end() || now_seconds() - it->second.kept_at > fresh_s_) return nullptr;
  if (owner != nullptr) *owner = it->second.owner;
  return it->second.body;
}

void StatusCache::put(const std::string &fid, const std::string &owner, std::string body) {
  auto kept = std::make_shared<const std::string>(std::move(body));
  const double now = now_seconds();
  std::lock_guard<std::mutex> lock(mu_);
  // Bounded: past the cap, the stale go first, then everything (they are read again).
  if (entries_.size() >= max_entries_ && entries_.count(fid) == 0) {
    for (auto it = entries_.begin(); it != entries_.end();)
      it = now - it->second.kept_at > fresh_s_ ? entries_.erase(it) : std::next(it);
    if (entries_.size() >= max_entries_) entries_.clear();
  }
  entries_[fid] = Entry{std::move(kept), owner, now};
}

void StatusCache::forget(const std::string &fid) {
  std::lock_guard<std::mutex> lock(mu_);
  entries_.erase(fid);
}

void StatusCache::on_stored(const kodo_event *const *events, size_t count, double) {
  std::lock_guard<std::mutex> lock(mu_);
  if (entries_.empty()) return;
  const char *last = nullptr;
  for (size_t i = 0; i < count; ++i) {
    const char *fid = events[i]->fid;
    if (last != nullptr && std::strcmp(last, fid) == 0) continue;  // batches come in runs
    last = fid;
    entries_.erase(fid);
  }
}

}  // namespace kodo
