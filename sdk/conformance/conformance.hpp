// conformance.hpp: the kodo conformance kit. GoogleTest cases that hold one storage or
// transport plugin to the contracts written in kodo_plugin.h, and to exactly the
// capabilities it claims: no less, and no more ("Capabilities" in kodo_plugin.h).
//
// kodo-conformance runs the cases against a plugin file. A plugin's own test binary may
// link kodo_conformance_kit instead, call set_target() and run RUN_ALL_TESTS().
//
// The cases call the plugin's C table directly, through the Checked* classes below,
// rather than through the host's kodo::Storage / kodo::Transport: the host wrappers
// tolerate a missing release or an error without a message, and the kit must not.
#pragma once

#include <kodo/host/plugin_loader.hpp>
#include <kodo/host/plugin_options.hpp>
#include <kodo/host/records.hpp>

#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

namespace kodo::conformance {

// ---- The plugin under test -------------------------------------------------------------

// Chooses the plugin every case runs against. `given` are the user's option values; they
// win over anything the kit would choose. Call before RUN_ALL_TESTS().
void set_target(std::shared_ptr<Plugin> plugin, OptionList given);
const Plugin &target();
std::shared_ptr<Plugin> target_ptr();
// What the handles under test claim: the descriptor's capabilities, narrowed by what an
// opened handle answers (kodo_storage_api.capabilities). Every case holds them to it.
bool claims(uint64_t capability);
uint64_t claimed_capabilities();
// Records what an opened handle claims (kodo-conformance does, after its first open; every
// handle is opened with the same options but its own directories).
void set_instance_capabilities(uint64_t capabilities);

// "LIST", "GROUPS", ... and a comma-separated list of them ("none" when empty).
const char *capability_name(int32_t kind, uint64_t capability);
std::string capability_names(int32_t kind, uint64_t capabilities);

// Options for one new handle, resolved as the host does with the user's values at the
// command-line level. Every PATH option the user left alone gets a fresh empty directory,
// so handles never see each other's data. `preferred` values apply only to options the
// plugin declares and the user did not give: a case uses them to tune the plugin (a long
// claim_idle_ms where a redelivery would spoil an exact count). Throws kodo::Error when the
// options do not resolve.
OptionList options_for_new_handle(const OptionList &preferred = {});
bool declares_option(const std::string &name);
std::optional<std::string> option_value(const OptionList &options, const std::string &name);

// The directory holding every fresh directory of this run (made on first use).
std::string scratch_root();
// Uses `dir` (which exists) as scratch_root(): a child of kodo-conformance shares its parent's.
void set_scratch_root(const std::string &dir);
// Removes scratch_root() and everything in it.
void remove_scratch_root();

// ---- Outcomes of calls -----------------------------------------------------------------

// What one call returned: its status and, on failure, what its error said.
struct Outcome {
  kodo_status status = KODO_OK;
  bool retryable = false;
  std::string message;
  bool ok() const { return status == KODO_OK; }
};

// "KODO_ERR_NOT_FOUND"
const char *status_name(kodo_status status);
// "KODO_OK" or "KODO_ERR_TIMEOUT (retryable): queue is full"
std::ostream &operator<<(std::ostream &out, const Outcome &outcome);

// Fails the case (fatal / non-fatal) naming `what` when the call did not succeed.
#define KODO_ASSERT_OK(call, what)                                                \
  do {                                                                            \
    const ::kodo::conformance::Outcome kodo_outcome_ = (call);                    \
    if (!kodo_outcome_.ok()) GTEST_FAIL() << (what) << ": got " << kodo_outcome_; \
  } while (0)
#define KODO_EXPECT_OK(call, what)                                                 \
  do {                                                                             \
    const ::kodo::conformance::Outcome kodo_outcome_ = (call);                     \
    if (!kodo_outcome_.ok()) ADD_FAILURE() << (what) << ": got " << kodo_outcome_; \
  } while (0)
// Expects exactly `expected` (a kodo_status) from the call.
#define KODO_EXPECT_STATUS(call, expected, what)                                             \
  do {                                                                                       \
    const ::kodo::conformance::Outcome kodo_outcome_ = (call);                               \
    if (kodo_outcome_.status != (expected))                                                  \
      ADD_FAILURE() << (what) << ": expected " << ::kodo::conformance::status_name(expected) \
                    << ", got " << kodo_outcome_;                                            \
  } while (0)

// ---- Storage through its C table, checking every ABI obligation on the way --------------

// One storage handle. Every call checks what kodo_plugin.h promises about it (an error
// carries a message, its code and a release; every page carries a release; events are
// well formed) and reports a broken promise as a non-fatal failure of the running case.
// Threading: as kodo_storage_api.
class CheckedStorage {
 public:
  explicit CheckedStorage(const OptionList &options);
  ~CheckedStorage();
  CheckedStorage(const CheckedStorage &) = delete;
  CheckedStorage &operator=(const CheckedStorage &) = delete;

  const Outcome &open_outcome() const { return open_outcome_; }
  const OptionList &options() const { return options_; }
  // The raw table and handle, for calls the kit makes exactly as given (unclaimed ones).
  const kodo_storage_api &api() const { return api_; }
  kodo_storage *handle() const { return handle_; }

  Outcome create_schema();
  Outcome append(const std::vector<Event> &events);
  Outcome read_events(const EventQuery &query, std::vector<Event> *events,
                      bool *has_more = nullptr);
  // username "" passes NULL ("whichever user owns fid").
  Outcome get_execution(const std::string &fid, const std::string &username,
                        std::vector<ExecutionInfo> *page);
  Outcome list_executions(const std::string &username, size_t offset, size_t limit,
                          std::vector<ExecutionInfo> *page, bool *has_more = nullptr);
  Outcome archive_execution(const std::string &fid, const std::string &username = "");
  Outcome purge(double older_than, int64_t *purged);

 private:
  std::shared_ptr<Plugin> plugin_;
  const kodo_storage_api &api_;
  OptionList options_;
  kodo_storage *handle_ = nullptr;
  Outcome open_outcome_;
};

// ---- Transport through its C table ------------------------------------------------------

struct Delivery {
  uint64_t id = 0;
  uint32_t count = 0;  // delivery_count
  Event event;
};

// One consumer. Used by one thread at a time (kodo_transport_api). Closes on destruction.
class CheckedConsumer {
 public:
  ~CheckedConsumer() { close(); }
  CheckedConsumer(const CheckedConsumer &) = delete;
  CheckedConsumer &operator=(const CheckedConsumer &) = delete;

  const std::string &name() const { return name_; }
  // Appends what came to *deliveries.
  Outcome read(size_t max, int32_t block_ms, std::vector<Delivery> *deliveries);
  Outcome ack(const std::vector<uint64_t> &delivery_ids);
  // Leaves the group without acking anything; idempotent.
  void close();

 private:
  friend class CheckedTransport;
  CheckedConsumer(std::shared_ptr<Plugin> plugin, kodo_consumer *handle, std::string name)
      : plugin_(std::move(plugin)), handle_(handle), name_(std::move(name)) {}
  std::shared_ptr<Plugin> plugin_;
  kodo_consumer *handle_;
  std::string name_;
};

// One transport handle. Close every consumer before the transport (the ABI requires it).
class CheckedTransport {
 public:
  explicit CheckedTransport(const OptionList &options);
  ~CheckedTransport();
  CheckedTransport(const CheckedTransport &) = delete;
  CheckedTransport &operator=(const CheckedTransport &) = delete;

  const Outcome &open_outcome() const { return open_outcome_; }
  const OptionList &options() const { return options_; }
  const kodo_transport_api &api() const { return api_; }
  kodo_transport *handle() const { return handle_; }

  Outcome publish(const std::vector<Event> &events, int32_t timeout_ms);
  Outcome open_consumer(const std::string &group, const std::string &name,
                        std::unique_ptr<CheckedConsumer> *consumer);
  Outcome finish_execution(const std::string &fid);

 private:
  std::shared_ptr<Plugin> plugin_;
  const kodo_transport_api &api_;
  OptionList options_;
  kodo_transport *handle_ = nullptr;
  Outcome open_outcome_;
};

// ---- Test data ---------------------------------------------------------------------------

// A 24-hex-digit ObjectId (kodosumi's fid) whose time prefix is `seconds`; unique per call.
std::string object_id(uint32_t seconds);
// An ObjectId made now.
std::string fresh_fid();
// "<prefix>-<8 hex digits>", unique per call: user and group names that never collide
// with an earlier run against the same store.
std::string fresh_name(const std::string &prefix);
double now_seconds();

// Events seq first..first+count-1 of one execution, one second apart from `start_time`,
// each with a payload naming its fid and seq (so a misplaced event is visible).
std::vector<Event> make_events(const std::string &fid, const std::string &username, int64_t first,
                               int64_t count, const std::string &kind = "stdout",
                               double start_time = 1700000000.25);
// Text that exercises UTF-8: several scripts, combining marks, 4-byte characters, quotes,
// backslashes, newlines and tabs.
std::string utf8_sample();
// `bytes` bytes of printable ASCII that never repeat with a short period.
std::string large_payload(size_t bytes);

// ---- Comparisons that name the contract --------------------------------------------------

// Checks that `got` holds exactly the events of `want` (matched by fid and seq), each
// once, in seq order per fid, with byte-exact payloads. Each problem is a non-fatal
// failure starting with `contract`; `verb` says what happened to an event ("stored",
// "delivered"). Returns true when nothing was wrong.
bool expect_same_events(const std::string &contract, const char *verb,
                        const std::vector<Event> &got, const std::vector<Event> &want);

// "fid X seqs [0, 1, 2, ... 9]" style summary for messages; never longer than a line.
std::string describe_seqs(const std::vector<Event> &events);

}  // namespace kodo::conformance
