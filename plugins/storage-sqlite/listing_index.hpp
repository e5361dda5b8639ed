// listing_index.hpp: the index of executions that listings page through.
//
// <exec_dir>/kodo_index.db (WAL, shared by every host on the folder) holds one row per live
// execution: its username, fid and sort time (an ObjectId fid's creation time, else its first
// event's). A listing asks it for one page in order instead of walking every folder; the
// page's summaries are then read from the execution databases themselves, which keep them
// exact at a cost per row (kodosumi appends without telling the index).
//
// Appends add the executions they make, archive and purge remove theirs. Folders made or
// removed by anyone else (kodosumi, another program) are found by their modification time:
// the index records the mtime of <exec_dir> and of each user folder when it last read them,
// and a listing reads again (once) a folder whose mtime changed. A recorded mtime younger than
// kSettle, or a user folder with an execution still being made, stays unrecorded, so that a
// change in the same clock tick as the read is not missed. A missing index is thus built from
// the folders at the first listing.
#pragma once

#include "sqlite_common.hpp"

#include <cstddef>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_set>
#include <vector>

namespace kodo_sqlite {

class ListingIndex {
 public:
  struct Key {
    std::string username, fid;
  };
  struct Item {
    std::string username, fid;
    double time = 0;
  };

  ListingIndex(fs::path exec_dir, int busy_timeout_ms);

  // Whether this process has already put the execution in the index (a cheap check, so that
  // an append asks for a sort time only of executions it has not indexed yet).
  bool knows(const std::string &username, const std::string &fid);

  // Adds the executions of one append, in one transaction.
  void add(const std::vector<Item> &items);

  void remove(const std::string &username, const std::string &fid);

  // One page, newest first (ties by fid descending, then username), after reading again the
  // folders that changed. `more` tells whether rows follow the page.
  std::vector<Key> page(const char *username, size_t offset, size_t limit, bool &more);

 private:
  Conn &conn();
  void refresh(const char *username);
  void rescan_user(const std::string &username, int64_t mtime);
  int64_t recorded(const std::string &folder);
  void record(const std::string &folder, int64_t mtime);
  double first_time(const std::string &username, const std::string &fid) const;
  void forget(const std::string &key);

  static constexpr size_t kMaxKnown = 100000;

  const fs::path exec_dir_;
  const int busy_timeout_ms_;
  std::mutex mu_;  // guards conn_; never held while an execution's mutex is taken
  std::unique_ptr<Conn> conn_;
  std::mutex known_mu_;
  std::unordered_set<std::string> known_;  // "username/fid" this process has indexed
};

}  // namespace kodo_sqlite
