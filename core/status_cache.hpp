// status_cache.hpp: the /outputs/status answers of finished executions, kept so that the
// route is answered on an I/O thread without a storage read (wrk: 20-46% of nginx's rate
// while every request read storage on a handler thread). Only final answers are kept: they
// change only when more is stored for the execution (the spooler's commits drop them here)
// or it is deleted; a short freshness bound covers deletions by other processes sharing the
// storage.
#pragma once

#include "core/spooler.hpp"

#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

namespace kodo {

// Thread-safe.
class StatusCache : public StoredObserver {
 public:
  explicit StatusCache(double fresh_s = 1.0, size_t max_entries = 4096)
      : fresh_s_(fresh_s), max_entries_(max_entries) {}

  // The answer kept for fid, if it is fresh; null otherwise. owner: the user it is stored
  // under, for the owner check.
  std::shared_ptr<const std::string> get(const std::string &fid,
                                         std::string *owner = nullptr) const;
  void put(const std::string &fid, const std::string &owner, std::string body);
  void forget(const std::string &fid);
  void on_stored(const kodo_event *const *events, size_t count, double stored_at) override;

 private:
  struct Entry {
    std::shared_ptr<const std::string> body;
    std::string owner;
    double kept_at = 0;
  };
  const double fresh_s_;
  const size_t max_entries_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, Entry> entries_;
};

}  // namespace kodo
