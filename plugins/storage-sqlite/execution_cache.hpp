// execution_cache.hpp: an entry of the SQLite storage's cache of open execution databases
// (its writer, its idle readers) and the two ways of holding one: a reader's lease, and the
// exclusive hold that archive and purge take. The cache itself is SqliteStorage's.
#pragma once

#include "execution_db.hpp"
#include "sqlite_common.hpp"

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace kodo_sqlite {

struct Entry : std::enable_shared_from_this<Entry> {
  Entry(std::string user, std::string id, fs::path folder)
      : username(std::move(user)),
        fid(std::move(id)),
        dir(std::move(folder)),
        key(username + "/" + fid) {}
  ~Entry() {
    // Whoever used it last has unlocked; taking the locks orders their work before the close.
    std::scoped_lock lock(write_mu, read_mu);
    writer.reset();
    idle.clear();
  }
  Entry(const Entry &) = delete;
  Entry &operator=(const Entry &) = delete;

  const std::string username, fid;
  const fs::path dir;
  const std::string key;

  std::mutex write_mu;
  std::unique_ptr<Writer> writer;           // guarded by write_mu
  std::mutex read_mu;                       // guards the reader fields below and `gone`
  std::condition_variable readers_cv;       // a reader handed back, or draining over
  std::vector<std::unique_ptr<Conn>> idle;  // at most kIdleReaders
  size_t busy = 0;                          // readers in use
  bool draining = false;                    // archive or purge waits: no new reader starts
  bool gone = false;                        // archived or purged; set holding both mutexes

  std::list<Entry *>::iterator lru;            // guarded by the cache's mutex
  std::atomic<bool> checkpoint_queued{false};  // the checkpointer has it in its queue
};

// Reader connections an execution keeps open while no read uses them; reads beyond these at
// once open their own and close it after.
constexpr size_t kIdleReaders = 2;

// An execution held for archive or purge: its writer's mutex, its readers' mutex, and no
// reader in use (reads that come meanwhile wait until it ends).
class Exclusive {
 public:
  explicit Exclusive(Entry &e) : e_(e), write_(e.write_mu), read_(e.read_mu) {
    e_.draining = true;
    e_.readers_cv.wait(read_, [&] { return e_.busy == 0; });
  }
  ~Exclusive() {
    e_.draining = false;
    e_.readers_cv.notify_all();
  }
  Exclusive(const Exclusive &) = delete;
  Exclusive &operator=(const Exclusive &) = delete;

 private:
  Entry &e_;
  std::lock_guard<std::mutex> write_;
  std::unique_lock<std::mutex> read_;
};

// Starts a read of e for a Lease: counts it in use and takes an idle connection if there is
// one (else `conn` stays empty: the caller opens one). While archive or purge drains e, waits
// for it to end if `wait`, else gives up. False, and nothing taken, when e is gone.
inline bool take_reader(Entry &e, bool wait, std::unique_ptr<Conn> &conn) {
  std::unique_lock lock(e.read_mu);
  if (wait)
    e.readers_cv.wait(lock, [&] { return !e.draining; });
  else if (e.draining)
    return false;
  if (e.gone) return false;
  if (!e.idle.empty()) {
    conn = std::move(e.idle.back());
    e.idle.pop_back();
  }
  ++e.busy;
  return true;
}

// A reader connection taken from an execution; handed back (or closed) when it ends.
struct Lease {
  Entry &entry;
  std::unique_ptr<Conn> conn;
  bool keep = true;

  Lease(Entry &e, std::unique_ptr<Conn> c) : entry(e), conn(std::move(c)) {}
  ~Lease() {
    std::unique_ptr<Conn> closing;  // closed after the mutex is released
    std::lock_guard lock(entry.read_mu);
    if (keep && conn && !entry.gone && entry.idle.size() < kIdleReaders)
      entry.idle.push_back(std::move(conn));
    else
      closing = std::move(conn);
    --entry.busy;
    entry.readers_cv.notify_all();
  }
  Lease(const Lease &) = delete;
  Lease &operator=(const Lease &) = delete;
};

}  // namespace kodo_sqlite
