// checkpointer.hpp: the thread that checkpoints execution databases off the append path.
//
// SQLite's automatic checkpoint runs inside the commit that takes a WAL past its threshold,
// and a checkpoint waits on the disk (fdatasync of the WAL, then of the database): tens to
// hundreds of milliseconds under writeback, during which the append, and with it the
// spooler's whole batch of every execution, waited. Writers now only note their WAL's size
// (Writer::wal_pages) and ask this thread, which checkpoints in two steps:
//  1. beside the writer, on a reader connection (in WAL mode a checkpoint runs beside
//     commits): copies the WAL as it was into the database and syncs both, the bulk;
//  2. holding the writer: the pages committed during step 1. Only a checkpoint that reaches
//     the end of the WAL lets the next commit start it over; without this step a WAL under
//     steady writes would never start over and would grow until the writer's own limit.
#pragma once

#include "execution_cache.hpp"
#include "execution_db.hpp"

#include <kodo/plugin.hpp>

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>

namespace kodo_sqlite {

class Checkpointer {
 public:
  Checkpointer(const Settings &settings, kodo::sdk::HostLog log);
  // Finishes the checkpoint under way and drops the queued ones: closing a database's last
  // connection checkpoints it anyway.
  ~Checkpointer();
  Checkpointer(const Checkpointer &) = delete;
  Checkpointer &operator=(const Checkpointer &) = delete;

  // Queues a checkpoint of e's database unless one is queued already. The queue holds the
  // entry, so the cache does not close it meanwhile.
  void request(const std::shared_ptr<Entry> &e);

 private:
  void work();
  void checkpoint(Entry &e);

  const Settings &settings_;
  kodo::sdk::HostLog log_;
  std::mutex mu_;  // guards the queue and stop_
  std::condition_variable wake_;
  std::deque<std::shared_ptr<Entry>> queue_;
  bool stop_ = false;
  std::thread thread_;  // last: it starts once the fields above exist
};

}  // namespace kodo_sqlite
