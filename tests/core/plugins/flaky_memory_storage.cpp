// A storage kept in memory whose first `fail_first` appends fail as if the database were
// away: the spooler must retry, ack only after a commit, and lose nothing. With
// `refuse_payload` it refuses for good (not retryable) every batch holding an event with
// that payload, storing nothing of it; with `hang_appends` every append hangs until the
// host interrupts it.
// It also declares a required secret option, for the option-validation tests.
#include <kodo/plugin.hpp>

#include <condition_variable>
#include <map>
#include <mutex>

namespace {

class FlakyMemoryStorage : public kodo::sdk::StorageBase {
 public:
  FlakyMemoryStorage(const kodo::sdk::Options &options, const kodo_host_api *)
      : fail_left_(options.get_int("fail_first")),
        refuse_payload_(options.get("refuse_payload")),
        hang_(options.get_bool("hang_appends")) {}

  void create_schema() override {}

  void append(const kodo_event *const *events, size_t count) override {
    std::unique_lock<std::mutex> lock(mutex_);
    if (hang_) {
      const uint64_t seen = interrupts_;
      interrupted_.wait(lock, [&] { return interrupts_ != seen; });
      throw kodo::sdk::Error(KODO_ERR_TIMEOUT, "append interrupted (test)", true);
    }
    for (size_t i = 0; i < count; ++i)
      if (!refuse_payload_.empty() && events[i]->payload == refuse_payload_)
        throw kodo::sdk::Error(KODO_ERR_INVALID_ARGUMENT,
                               "event #" + std::to_string(i) + " has a payload this store refuses");
    if (fail_left_ > 0) {
      --fail_left_;
      throw kodo::sdk::Error(KODO_ERR_UNAVAILABLE, "database away (test)", true);
    }
    for (size_t i = 0; i < count; ++i)
      executions_[events[i]->fid].emplace(events[i]->seq, kodo::sdk::OwnedEvent::copy(*events[i]));
  }

  void interrupt() override {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      ++interrupts_;
    }
    interrupted_.notify_all();
  }

  void read_events(const kodo_read_request &request, kodo::sdk::EventPageBuilder &out) override {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = executions_.find(request.fid);
    if (it == executions_.end()) throw kodo::sdk::Error(KODO_ERR_NOT_FOUND, "no such fid");
    for (auto e = it->second.upper_bound(request.after_seq); e != it->second.end(); ++e) {
      if (out.size() == request.limit) {
        out.set_has_more(true);
        break;
      }
      out.add(e->second.view());
    }
  }

  void get_execution(const char *fid, const char *, kodo::sdk::ExecutionPageBuilder &out) override {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = executions_.find(fid);
    if (it == executions_.end()) throw kodo::sdk::Error(KODO_ERR_NOT_FOUND, "no such fid");
    auto &x = out.add();
    x.fid = fid;
    x.event_count = static_cast<int64_t>(it->second.size());
    x.last_seq = it->second.rbegin()->first;
  }

 private:
  std::mutex mutex_;
  std::condition_variable interrupted_;
  uint64_t interrupts_ = 0;
  int64_t fail_left_;
  std::string refuse_payload_;
  bool hang_;
  std::map<std::string, std::map<int64_t, kodo::sdk::OwnedEvent>> executions_;
};

const kodo_option_spec fail_first = kodo::sdk::option(
    "fail_first", KODO_OPTION_INT, 0, "0", nullptr, "how many appends fail before they succeed");
const kodo_option_spec token =
    kodo::sdk::option("token", KODO_OPTION_STRING, KODO_OPTION_REQUIRED | KODO_OPTION_SECRET,
                      nullptr, nullptr, "a required secret");
const kodo_option_spec refuse_payload =
    kodo::sdk::option("refuse_payload", KODO_OPTION_STRING, 0, nullptr, nullptr,
                      "a payload whose batches are refused for good");
const kodo_option_spec hang_appends = kodo::sdk::option(
    "hang_appends", KODO_OPTION_BOOL, 0, nullptr, nullptr, "every append hangs until interrupted");
const kodo_option_spec *const options[] = {&fail_first, &token, &refuse_payload, &hang_appends};

}  // namespace

KODO_STORAGE_PLUGIN(FlakyMemoryStorage, "flaky-memory", "1.0",
                    "in-memory storage whose first appends fail", 0, options, 4)
