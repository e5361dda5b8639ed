// checkpointer.cpp: see checkpointer.hpp.
#include "checkpointer.hpp"

#include <string>
#include <utility>

namespace kodo_sqlite {

Checkpointer::Checkpointer(const Settings &settings, kodo::sdk::HostLog log)
    : settings_(settings), log_(log), thread_([this] { work(); }) {}

Checkpointer::~Checkpointer() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

void Checkpointer::request(const std::shared_ptr<Entry> &e) {
  if (e->checkpoint_queued.exchange(true)) return;
  {
    std::lock_guard lock(mu_);
    queue_.push_back(e);
  }
  wake_.notify_one();
}

void Checkpointer::work() {
  std::unique_lock lock(mu_);
  for (;;) {
    wake_.wait(lock, [&] { return stop_ || !queue_.empty(); });
    if (stop_) return;
    std::shared_ptr<Entry> e = std::move(queue_.front());
    queue_.pop_front();
    lock.unlock();
    checkpoint(*e);
    // Cleared after the checkpoint: commits made during it are in the WAL it leaves, and the
    // next commit past the threshold asks again.
    e->checkpoint_queued = false;
    e.reset();  // the last holder of a retired entry closes it here, outside the mutex
    lock.lock();
  }
}

void Checkpointer::checkpoint(Entry &e) {
  {
    std::unique_ptr<Conn> idle;
    // Archive and purge, under way, checkpoint or remove the database themselves.
    if (!take_reader(e, false, idle)) return;
    Lease lease(e, std::move(idle));
    try {
      if (!lease.conn) {
        lease.conn = open_reader(e.dir / kDbName, settings_, e.username, e.fid);
        // The open-files budget counts one connection per cached database: a checkpoint
        // borrows an idle reader when there is one, else opens one and closes it after.
        lease.keep = false;
      }
      passive_checkpoint(*lease.conn);
      sync_database(*lease.conn);
    } catch (const Error &err) {
      if (err.code() != KODO_ERR_UNAVAILABLE) lease.keep = false;
      if (err.code() != KODO_ERR_NOT_FOUND)  // removed by another process: nothing to fold
        log_(KODO_LOG_WARN, std::string("checkpoint: ") + err.what());
      return;
    }
  }
  // The WAL starts over (instead of growing) only once a checkpoint has reached its end, and
  // under steady writes commits went on during the one above. The rest, their pages, is
  // checkpointed with the writer held: little to write, as the bulk is on the disk already.
  // Not under the lease: archive and purge take the writer's mutex, then wait for leases.
  std::lock_guard lock(e.write_mu);
  // A WAL shorter than the threshold has started over since the request: nothing to finish.
  if (e.gone || !e.writer || e.writer->wal_pages < settings_.checkpoint_pages) return;
  try {
    passive_checkpoint(*e.writer->conn);
  } catch (const Error &err) {
    log_(KODO_LOG_WARN, std::string("checkpoint: ") + err.what());
  }
}

}  // namespace kodo_sqlite
