// plugin.hpp: a thin, header-only C++17 helper for writing kodo plugins.
//
// Write a class derived from kodo::sdk::StorageBase or kodo::sdk::TransportBase, declare
// its options and capabilities, and add one KODO_STORAGE_PLUGIN / KODO_TRANSPORT_PLUGIN line
// at the bottom of your main file. The helper builds the C function table, copies results
// into plugin-owned pages with their own release, and turns every exception into a
// kodo_error at the boundary: nothing C++ ever crosses into the host.
#ifndef KODO_PLUGIN_HPP
#define KODO_PLUGIN_HPP

#include <kodo/kodo_plugin.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <exception>
#include <map>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace kodo::sdk {

// Throw this from plugin code to report a specific status. The host throws the same type
// (kodo::Error is this class), so a status and its retryability cross from SDK helpers into
// the host unchanged. Its arguments come in kodo_error's field order on both sides: code,
// then message, then retryable; a message alone is KODO_ERR_UNKNOWN.
class Error : public std::runtime_error {
 public:
  Error(kodo_status code, const std::string &message, bool retryable = false)
      : std::runtime_error(message), code_(code), retryable_(retryable) {}
  explicit Error(const std::string &message) : Error(KODO_ERR_UNKNOWN, message) {}
  kodo_status code() const { return code_; }
  bool retryable() const { return retryable_; }

 private:
  kodo_status code_;
  bool retryable_;
};

// A struct the other side made, copied into a zeroed one of this header's size: fields past
// the maker's struct_size (an older header's) read as zero / NULL ("Growth" in kodo_plugin.h).
template <class T>
T read_sized(const T *source) {
  static_assert(std::is_trivially_copyable_v<T>);
  T out{};
  if (!source) return out;
  std::memcpy(static_cast<void *>(&out), source, std::min(source->struct_size, sizeof(T)));
  out.struct_size = sizeof(T);
  return out;
}

// Fills the caller's error; an error smaller than version 1's (malformed) is left alone
// rather than written past its struct_size.
inline void fill_error(kodo_error *error, kodo_status code, bool retryable,
                       const std::string &message) {
  if (!error || !KODO_HAS_FIELD(error, private_data)) return;
  kodo_error_release(error);
  char *copy = static_cast<char *>(std::malloc(message.size() + 1));
  if (copy) std::memcpy(copy, message.c_str(), message.size() + 1);
  error->code = code;
  error->retryable = retryable ? 1 : 0;
  error->message = copy ? copy : "out of memory while reporting an error";
  error->private_data = copy;
  error->release = [](kodo_error *e) {
    std::free(e->private_data);
    e->private_data = nullptr;
  };
}

// Runs fn and maps any exception to a status plus a filled error.
template <class Fn>
kodo_status guard(kodo_error *error, Fn &&fn) noexcept {
  try {
    fn();
    return KODO_OK;
  } catch (const Error &e) {
    fill_error(error, e.code(), e.retryable(), e.what());
    return e.code();
  } catch (const std::bad_alloc &) {
    fill_error(error, KODO_ERR_INTERNAL, true, "out of memory");
    return KODO_ERR_INTERNAL;
  } catch (const std::exception &e) {
    fill_error(error, KODO_ERR_INTERNAL, false, std::string("unexpected exception: ") + e.what());
    return KODO_ERR_INTERNAL;
  } catch (...) {
    fill_error(error, KODO_ERR_INTERNAL, false, "unexpected non-standard exception");
    return KODO_ERR_INTERNAL;
  }
}

[[noreturn]] inline void not_supported(const char *what) {
  throw Error(KODO_ERR_NOT_SUPPORTED, std::string(what) + " is not supported by this plugin");
}

// The naming rule of kodo_event: a fid or username becomes a path component and a stream
// key, so it is 1..64 bytes of [A-Za-z0-9_.@-] not starting with '.'. Returns "" when
// `value` keeps it, otherwise a message naming `what`, the value and the first bad byte.
inline std::string name_problem(const char *what, std::string_view value) {
  constexpr size_t max_bytes = 64;
  auto hex = [](unsigned char c) {
    static const char digits[] = "0123456789abcdef";
    return std::string{digits[c >> 4], digits[c & 0xF]};
  };
  auto shown = [&] {  // printable ASCII kept, anything else as \xNN, long values cut
    std::string out = "\"";
    for (size_t i = 0; i < value.size(); ++i) {
      auto c = static_cast<unsigned char>(value[i]);
      if (i == max_bytes + 16) {
        out += "...";
        break;
      }
      if (c >= 0x20 && c < 0x7F && c != '"' && c != '\\')
        out += static_cast<char>(c);
      else
        out += "\\x" + hex(c);
    }
    return out + "\"";
  };
  const std::string prefix = std::string("invalid ") + what + " ";
  if (value.empty()) return prefix + "(empty)";
  if (value.size() > max_bytes)
    return prefix + shown() + ": " + std::to_string(value.size()) + " bytes, at most 64";
  if (value[0] == '.') return prefix + shown() + ": starts with '.'";
  for (size_t i = 0; i < value.size(); ++i) {
    char c = value[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == '@' || c == '-';
    if (!ok)
      return prefix + shown() + ": byte 0x" + hex(static_cast<unsigned char>(c)) + " at offset " +
             std::to_string(i) + " (allowed: A-Z a-z 0-9 _ . @ -)";
  }
  return {};
}

// Throws Error(KODO_ERR_INVALID_ARGUMENT) when `value` (may be NULL) breaks the naming rule.
inline void check_name(const char *what, const char *value) {
  if (!value) throw Error(KODO_ERR_INVALID_ARGUMENT, std::string(what) + " is missing (NULL)");
  std::string problem = name_problem(what, value);
  if (!problem.empty()) throw Error(KODO_ERR_INVALID_ARGUMENT, problem);
}

// Throws Error(KODO_ERR_INVALID_ARGUMENT) naming event #i of a batch handed to `call` (e.g.
// "append") when it breaks kodo_event's contract. Messages are built only on failure: this
// runs for every event of a hot path.
inline void check_event(const char *call, const kodo_event *e, size_t i) {
  auto where = [&] { return std::string(call) + ": event #" + std::to_string(i); };
  if (!e) throw Error(KODO_ERR_INVALID_ARGUMENT, where() + " is NULL");
  if (e->struct_size < offsetof(kodo_event, payload_len) + sizeof(e->payload_len))
    throw Error(KODO_ERR_INVALID_ARGUMENT,
                where() + ": struct_size " + std::to_string(e->struct_size) + " is too small");
  check_name("fid", e->fid);
  check_name("username", e->username);
  auto which = [&] {
    return where() + " (fid '" + e->fid + "', seq " + std::to_string(e->seq) + ")";
  };
  if (e->seq < 0 || e->seq == INT64_MAX)
    throw Error(KODO_ERR_INVALID_ARGUMENT, which() + ": seq is out of range");
  if (!std::isfinite(e->timestamp))
    throw Error(KODO_ERR_INVALID_ARGUMENT, which() + ": timestamp is not a finite number");
  if (!e->kind || !*e->kind) throw Error(KODO_ERR_INVALID_ARGUMENT, which() + ": kind is empty");
  if (!e->payload && e->payload_len > 0)
    throw Error(KODO_ERR_INVALID_ARGUMENT,
                which() + ": payload is NULL but payload_len is " + std::to_string(e->payload_len));
}

// The validated options handed to open(), by name.
class Options {
 public:
  Options(const kodo_option *const *options, size_t count) {
    for (size_t i = 0; i < count; ++i) {
      if (!options[i]) continue;
      const kodo_option option = read_sized(options[i]);
      if (option.name && option.value) values_[option.name] = option.value;
    }
  }
  bool has(const std::string &name) const { return values_.count(name) != 0; }
  std::string get(const std::string &name, const std::string &fallback = "") const {
    auto it = values_.find(name);
    return it == values_.end() ? fallback : it->second;
  }
  int64_t get_int(const std::string &name, int64_t fallback = 0) const {
    auto it = values_.find(name);
    return it == values_.end() ? fallback : std::stoll(it->second);
  }
  double get_double(const std::string &name, double fallback = 0) const {
    auto it = values_.find(name);
    return it == values_.end() ? fallback : std::stod(it->second);
  }
  bool get_bool(const std::string &name, bool fallback = false) const {
    auto it = values_.find(name);
    if (it == values_.end()) return fallback;
    const std::string &v = it->second;
    return v == "1" || v == "true" || v == "yes" || v == "on";
  }

 private:
  std::map<std::string, std::string> values_;
};

// Logs through the host, if it offers logging.
class HostLog {
 public:
  explicit HostLog(const kodo_host_api *host = nullptr) : host_(host) {}
  void operator()(int32_t level, const std::string &message) const {
    if (host_ && host_->log) host_->log(host_->host_data, level, message.c_str());
  }

 private:
  const kodo_host_api *host_;
};

// Throws Error(KODO_ERR_INVALID_ARGUMENT) when the caller's output struct is too small for
// what a builder writes: nothing is written past the struct_size the caller declared.
template <class T>
void check_output_size(const T *out, bool large_enough, const char *what) {
  if (!out) throw Error(KODO_ERR_INVALID_ARGUMENT, std::string("the output ") + what + " is NULL");
  if (!large_enough)
    throw Error(KODO_ERR_INVALID_ARGUMENT, std::string("the output ") + what + "'s struct_size " +
                                               std::to_string(out->struct_size) +
                                               " is smaller than ABI version 1's");
}

// An event whose strings it owns; view() gives the C struct pointing into it.
struct OwnedEvent {
  std::string fid, username, kind, payload;
  int64_t seq = 0;
  double timestamp = 0;
  kodo_event view() const {
    return kodo_event{sizeof(kodo_event), fid.c_str(),  username.c_str(), seq,
                      timestamp,          kind.c_str(), payload.c_str(),  payload.size()};
  }
  static OwnedEvent copy(const kodo_event &given) {
    const kodo_event e = read_sized(&given);
    OwnedEvent o;
    o.fid = e.fid ? e.fid : "";
    o.username = e.username ? e.username : "";
    o.kind = e.kind ? e.kind : "";
    if (e.payload) o.payload.assign(e.payload, e.payload_len);
    o.seq = e.seq;
    o.timestamp = e.timestamp;
    return o;
  }
};

// Fills a kodo_event_page with copies it owns; the page's release frees them.
class EventPageBuilder {
 public:
  OwnedEvent &add() { return data_->events.emplace_back(); }
  void add(const kodo_event &e) { data_->events.push_back(OwnedEvent::copy(e)); }
  size_t size() const { return data_->events.size(); }
  void set_has_more(bool more) { has_more_ = more; }

  // Moves everything into `out`; the builder is empty afterwards.
  void finish(kodo_event_page *out) {
    check_output_size(out, KODO_HAS_FIELD(out, private_data), "event page");
    for (auto &e : data_->events) data_->views.push_back(e.view());
    for (auto &v : data_->views) data_->pointers.push_back(&v);
    out->events = data_->pointers.data();
    out->count = data_->pointers.size();
    out->has_more = has_more_ ? 1 : 0;
    out->private_data = data_.release();
    out->release = [](kodo_event_page *page) {
      delete static_cast<Data *>(page->private_data);
      page->private_data = nullptr;
      page->events = nullptr;
      page->count = 0;
      page->release = nullptr;
    };
    data_ = std::make_unique<Data>();
  }

 private:
  struct Data {
    std::deque<OwnedEvent> events;
    std::deque<kodo_event> views;
    std::vector<const kodo_event *> pointers;
  };
  std::unique_ptr<Data> data_ = std::make_unique<Data>();
  bool has_more_ = false;
};

struct OwnedExecution {
  std::string fid, username, status;
  double started_at = 0, updated_at = 0;
  int64_t event_count = 0, last_seq = -1;
};

// Fills a kodo_execution_page; same ownership scheme as EventPageBuilder.
class ExecutionPageBuilder {
 public:
  OwnedExecution &add() { return data_->items.emplace_back(); }
  size_t size() const { return data_->items.size(); }
  void set_has_more(bool more) { has_more_ = more; }

  void finish(kodo_execution_page *out) {
    check_output_size(out, KODO_HAS_FIELD(out, private_data), "execution page");
    for (auto &x : data_->items)
      data_->views.push_back(kodo_execution_info{sizeof(kodo_execution_info), x.fid.c_str(),
                                                 x.username.c_str(), x.status.c_str(), x.started_at,
                                                 x.updated_at, x.event_count, x.last_seq});
    for (auto &v : data_->views) data_->pointers.push_back(&v);
    out->executions = data_->pointers.data();
    out->count = data_->pointers.size();
    out->has_more = has_more_ ? 1 : 0;
    out->private_data = data_.release();
    out->release = [](kodo_execution_page *page) {
      delete static_cast<Data *>(page->private_data);
      page->private_data = nullptr;
      page->executions = nullptr;
      page->count = 0;
      page->release = nullptr;
    };
    data_ = std::make_unique<Data>();
  }

 private:
  struct Data {
    std::deque<OwnedExecution> items;
    std::deque<kodo_execution_info> views;
    std::vector<const kodo_execution_info *> pointers;
  };
  std::unique_ptr<Data> data_ = std::make_unique<Data>();
  bool has_more_ = false;
};

// Fills a kodo_delivery_batch. Events are either copies the batch owns (add) or views into
// memory the plugin keeps alive through `owner` until the host releases the batch (add_view),
// which spares a copy of every string of every event on a hot read path.
class DeliveryBatchBuilder {
 public:
  void add(uint64_t delivery_id, uint32_t delivery_count, OwnedEvent event) {
    data_->owned.push_back(std::move(event));
    add_view(delivery_id, delivery_count, data_->owned.back().view(), nullptr);
  }
  void add_view(uint64_t delivery_id, uint32_t delivery_count, const kodo_event &view,
                std::shared_ptr<const void> owner) {
    data_->deliveries.push_back(
        kodo_delivery{sizeof(kodo_delivery), delivery_id, delivery_count, nullptr});
    data_->events.push_back(view);
    if (owner && (data_->owners.empty() || data_->owners.back() != owner))
      data_->owners.push_back(std::move(owner));
  }
  size_t size() const { return data_->deliveries.size(); }

  void finish(kodo_delivery_batch *out) {
    check_output_size(out, KODO_HAS_FIELD(out, private_data), "delivery batch");
    // Pointers are taken only now: the vectors no longer grow.
    for (size_t i = 0; i < data_->deliveries.size(); ++i) {
      data_->deliveries[i].event = &data_->events[i];
      data_->pointers.push_back(&data_->deliveries[i]);
    }
    out->deliveries = data_->pointers.data();
    out->count = data_->pointers.size();
    out->private_data = data_.release();
    out->release = [](kodo_delivery_batch *batch) {
      delete static_cast<Data *>(batch->private_data);
      batch->private_data = nullptr;
      batch->deliveries = nullptr;
      batch->count = 0;
      batch->release = nullptr;
    };
    data_ = std::make_unique<Data>();
  }

 private:
  struct Data {
    std::deque<OwnedEvent> owned;  // a deque: adding never moves the events views point into
    std::vector<std::shared_ptr<const void>> owners;
    std::vector<kodo_event> events;
    std::vector<kodo_delivery> deliveries;
    std::vector<const kodo_delivery *> pointers;
  };
  std::unique_ptr<Data> data_ = std::make_unique<Data>();
};

// One figure for /metrics (see kodo_metric).
struct Metric {
  std::string name, help, labels;
  int32_t type = KODO_METRIC_GAUGE;
  double value = 0;
};

// Fills a kodo_metric_page; same ownership scheme as EventPageBuilder.
inline void finish_metric_page(std::vector<Metric> metrics, kodo_metric_page *out) {
  check_output_size(out, KODO_HAS_FIELD(out, private_data), "metric page");
  struct Data {
    std::vector<Metric> items;
    std::vector<kodo_metric> views;
    std::vector<const kodo_metric *> pointers;
  };
  auto data = std::make_unique<Data>();
  data->items = std::move(metrics);
  data->views.reserve(data->items.size());
  for (const auto &m : data->items)
    data->views.push_back(kodo_metric{sizeof(kodo_metric), m.name.c_str(), m.help.c_str(),
                                      m.labels.empty() ? nullptr : m.labels.c_str(), m.type,
                                      m.value});
  for (const auto &v : data->views) data->pointers.push_back(&v);
  out->metrics = data->pointers.data();
  out->count = data->pointers.size();
  out->private_data = data.release();
  out->release = [](kodo_metric_page *page) {
    delete static_cast<Data *>(page->private_data);
    page->private_data = nullptr;
    page->metrics = nullptr;
    page->count = 0;
    page->release = nullptr;
  };
}

// Base class of a storage backend. Methods for capabilities the plugin does not claim keep
// their default, which reports KODO_ERR_NOT_SUPPORTED. Threading: see kodo_storage_api.
class StorageBase {
 public:
  virtual ~StorageBase() = default;
  virtual void create_schema() = 0;
  virtual void append(const kodo_event *const *events, size_t count) = 0;
  virtual void read_events(const kodo_read_request &request, EventPageBuilder &out) = 0;
  // Throw Error(KODO_ERR_NOT_FOUND, ...) for an unknown fid.
  virtual void get_execution(const char *fid, const char *username, ExecutionPageBuilder &out) = 0;
  virtual void list_executions(const kodo_list_request &, ExecutionPageBuilder &) {
    not_supported("list_executions");
  }
  virtual void archive_execution(const char *, const char *) { not_supported("archive_execution"); }
  virtual int64_t purge(double) { not_supported("purge"); }
  // Figures for /metrics, answered from memory (no server round trip).
  virtual std::vector<Metric> metrics() { return {}; }
  // Overriding these fills the table's optional interrupt / capabilities (kodo_storage_api);
  // a class that does not override them leaves those functions NULL.
  // interrupt: make running calls return soon with KODO_ERR_TIMEOUT; must not block.
  virtual void interrupt() {}
  // capabilities: this instance's; the host keeps only those the descriptor declares too.
  virtual uint64_t capabilities() { return 0; }
};

class ConsumerBase {
 public:
  virtual ~ConsumerBase() = default;
  virtual void read(size_t max, int32_t block_ms, DeliveryBatchBuilder &out) = 0;
  virtual void ack(const uint64_t *delivery_ids, size_t count) = 0;
};

// Base class of a transport backend. Threading: see kodo_transport_api.
class TransportBase {
 public:
  virtual ~TransportBase() = default;
  virtual void publish(const kodo_event *const *events, size_t count, int32_t timeout_ms) = 0;
  virtual std::unique_ptr<ConsumerBase> open_consumer(const std::string &group,
                                                      const std::string &name) = 0;
  virtual void finish_execution(const char *) { not_supported("finish_execution"); }
  // Figures for /metrics, answered from memory (no server round trip).
  virtual std::vector<Metric> metrics() { return {}; }
  // As StorageBase's: overriding them fills the table's optional functions.
  virtual void interrupt() {}
  virtual uint64_t capabilities() { return 0; }
};

namespace detail {

// One opened handle: the plugin's object and the host API it was given, copied at its size
// (the object keeps a pointer to it), behind the opaque handle the host holds.
template <class Base>
struct Instance {
  kodo_host_api host{};
  uint64_t declared = 0;
  std::unique_ptr<Base> object;
};

template <class T, class Base, class Handle>
Instance<Base> *open_instance(const kodo_option *const *options, size_t count,
                              const kodo_host_api *host, Handle **out) {
  auto instance = std::make_unique<Instance<Base>>();
  if (host) instance->host = read_sized(host);
  instance->object = std::make_unique<T>(Options(options, count), host ? &instance->host : nullptr);
  *out = reinterpret_cast<Handle *>(instance.get());
  return instance.release();
}

// Whether T overrides Base's optional `interrupt` / `capabilities` (the table leaves the C
// function NULL otherwise, so the host knows the plugin cannot be interrupted).
template <class T, class Base>
constexpr bool overrides_interrupt = !std::is_same_v<decltype(&T::interrupt), void (Base::*)()>;
template <class T, class Base>
constexpr bool overrides_capabilities =
    !std::is_same_v<decltype(&T::capabilities), uint64_t (Base::*)()>;

template <class T>
struct StorageThunks {
  using Self = Instance<StorageBase>;
  static StorageBase *self(kodo_storage *s) { return reinterpret_cast<Self *>(s)->object.get(); }
  static kodo_status open(const kodo_option *const *options, size_t count,
                          const kodo_host_api *host, kodo_storage **out, kodo_error *error) {
    return guard(error, [&] { open_instance<T, StorageBase>(options, count, host, out); });
  }
  static void close(kodo_storage *s) {
    try {
      delete reinterpret_cast<Self *>(s);
    } catch (...) {
    }
  }
  static kodo_status create_schema(kodo_storage *s, kodo_error *error) {
    return guard(error, [&] { self(s)->create_schema(); });
  }
  static kodo_status append(kodo_storage *s, const kodo_event *const *events, size_t count,
                            kodo_error *error) {
    return guard(error, [&] { self(s)->append(events, count); });
  }
  static kodo_status read_events(kodo_storage *s, const kodo_read_request *request,
                                 kodo_event_page *out, kodo_error *error) {
    return guard(error, [&] {
      if (!request) throw Error(KODO_ERR_INVALID_ARGUMENT, "read_events: the request is NULL");
      EventPageBuilder builder;
      self(s)->read_events(read_sized(request), builder);
      builder.finish(out);
    });
  }
  static kodo_status get_execution(kodo_storage *s, const char *fid, const char *username,
                                   kodo_execution_page *out, kodo_error *error) {
    return guard(error, [&] {
      ExecutionPageBuilder builder;
      self(s)->get_execution(fid, username, builder);
      builder.finish(out);
    });
  }
  static kodo_status list_executions(kodo_storage *s, const kodo_list_request *request,
                                     kodo_execution_page *out, kodo_error *error) {
    return guard(error, [&] {
      if (!request) throw Error(KODO_ERR_INVALID_ARGUMENT, "list_executions: the request is NULL");
      ExecutionPageBuilder builder;
      self(s)->list_executions(read_sized(request), builder);
      builder.finish(out);
    });
  }
  static kodo_status archive_execution(kodo_storage *s, const char *fid, const char *username,
                                       kodo_error *error) {
    return guard(error, [&] { self(s)->archive_execution(fid, username); });
  }
  static kodo_status purge(kodo_storage *s, double older_than, int64_t *purged_out,
                           kodo_error *error) {
    return guard(error, [&] {
      int64_t n = self(s)->purge(older_than);
      if (purged_out) *purged_out = n;
    });
  }
  static kodo_status metrics(kodo_storage *s, kodo_metric_page *out, kodo_error *error) {
    return guard(error, [&] { finish_metric_page(self(s)->metrics(), out); });
  }
  static void interrupt(kodo_storage *s) {
    try {
      self(s)->interrupt();
    } catch (...) {  // nothing crosses the boundary; the call then simply runs on
    }
  }
  static uint64_t capabilities(kodo_storage *s) {
    try {
      return self(s)->capabilities();
    } catch (...) {  // an instance that cannot say what it can is held to nothing optional
      return 0;
    }
  }
  static const kodo_storage_api *table() {
    static const kodo_storage_api api = {
        sizeof(kodo_storage_api),
        open,
        close,
        create_schema,
        append,
        read_events,
        get_execution,
        list_executions,
        archive_execution,
        purge,
        metrics,
        overrides_interrupt<T, StorageBase> ? interrupt : nullptr,
        overrides_capabilities<T, StorageBase> ? capabilities : nullptr};
    return &api;
  }
};

template <class T>
struct TransportThunks {
  using Self = Instance<TransportBase>;
  static TransportBase *self(kodo_transport *t) {
    return reinterpret_cast<Self *>(t)->object.get();
  }
  static ConsumerBase *consumer(kodo_consumer *c) { return reinterpret_cast<ConsumerBase *>(c); }
  static kodo_status open(const kodo_option *const *options, size_t count,
                          const kodo_host_api *host, kodo_transport **out, kodo_error *error) {
    return guard(error, [&] { open_instance<T, TransportBase>(options, count, host, out); });
  }
  static void close(kodo_transport *t) {
    try {
      delete reinterpret_cast<Self *>(t);
    } catch (...) {
    }
  }
  static kodo_status publish(kodo_transport *t, const kodo_event *const *events, size_t count,
                             int32_t timeout_ms, kodo_error *error) {
    return guard(error, [&] { self(t)->publish(events, count, timeout_ms); });
  }
  static kodo_status consumer_open(kodo_transport *t, const char *group, const char *name,
                                   kodo_consumer **out, kodo_error *error) {
    return guard(error, [&] {
      if (!group || !name)
        throw Error(KODO_ERR_INVALID_ARGUMENT, "consumer_open: the group or the name is NULL");
      *out = reinterpret_cast<kodo_consumer *>(self(t)->open_consumer(group, name).release());
    });
  }
  static void consumer_close(kodo_consumer *c) {
    try {
      delete consumer(c);
    } catch (...) {
    }
  }
  static kodo_status read(kodo_consumer *c, size_t max, int32_t block_ms, kodo_delivery_batch *out,
                          kodo_error *error) {
    return guard(error, [&] {
      DeliveryBatchBuilder builder;
      consumer(c)->read(max, block_ms, builder);
      builder.finish(out);
    });
  }
  static kodo_status ack(kodo_consumer *c, const uint64_t *ids, size_t count, kodo_error *error) {
    return guard(error, [&] { consumer(c)->ack(ids, count); });
  }
  static kodo_status finish_execution(kodo_transport *t, const char *fid, kodo_error *error) {
    return guard(error, [&] { self(t)->finish_execution(fid); });
  }
  static kodo_status metrics(kodo_transport *t, kodo_metric_page *out, kodo_error *error) {
    return guard(error, [&] { finish_metric_page(self(t)->metrics(), out); });
  }
  static void interrupt(kodo_transport *t) {
    try {
      self(t)->interrupt();
    } catch (...) {  // nothing crosses the boundary; the call then simply runs on
    }
  }
  static uint64_t capabilities(kodo_transport *t) {
    try {
      return self(t)->capabilities();
    } catch (...) {  // an instance that cannot say what it can is held to nothing optional
      return 0;
    }
  }
  static const kodo_transport_api *table() {
    static const kodo_transport_api api = {
        sizeof(kodo_transport_api),
        open,
        close,
        publish,
        consumer_open,
        consumer_close,
        read,
        ack,
        finish_execution,
        metrics,
        overrides_interrupt<T, TransportBase> ? interrupt : nullptr,
        overrides_capabilities<T, TransportBase> ? capabilities : nullptr};
    return &api;
  }
};

// One descriptor per ABI version 1..N (index v - 1), each naming its version: the entry
// answers the one agreed on. The tables are the same for every version (they only grew by
// appending, which their struct_size tells).
template <size_t N>
std::array<kodo_plugin, N> descriptors(const kodo_plugin &newest) {
  std::array<kodo_plugin, N> out{};
  for (size_t i = 0; i < N; ++i) {
    out[i] = newest;
    out[i].abi_version = static_cast<uint32_t>(i + 1);
  }
  return out;
}

// Answers the host's offer of [host_min, host_max] for a plugin speaking [plugin_min, N]:
// the highest version both speak, with its descriptor (descriptors[v - 1]).
template <size_t N>
kodo_status negotiate(uint32_t host_min, uint32_t host_max, uint32_t plugin_min,
                      const std::array<kodo_plugin, N> &descriptors, const kodo_plugin **plugin_out,
                      uint32_t *abi_out, kodo_error *error) {
  const auto plugin_max = static_cast<uint32_t>(N);
  const uint32_t agreed = kodo_abi_agree(host_min, host_max, plugin_min, plugin_max);
  if (abi_out) *abi_out = agreed ? agreed : plugin_max;
  if (!agreed) {
    fill_error(error, KODO_ERR_ABI_MISMATCH, false,
               std::string("plugin '") + descriptors[0].name + "' speaks ABI versions " +
                   std::to_string(plugin_min) + ".." + std::to_string(plugin_max) +
                   ", host offers " + std::to_string(host_min) + ".." + std::to_string(host_max));
    return KODO_ERR_ABI_MISMATCH;
  }
  if (!plugin_out) {
    fill_error(error, KODO_ERR_INVALID_ARGUMENT, false, "plugin_out is NULL");
    return KODO_ERR_INVALID_ARGUMENT;
  }
  *plugin_out = &descriptors[agreed - 1];
  return KODO_OK;
}

}  // namespace detail

// An option declared by name, for a table that reads without counting arguments:
//   constexpr kodo_option_spec kDir =
//       kodo::sdk::OptionSpec("dir", KODO_OPTION_PATH).required().description("data directory");
class OptionSpec {
 public:
  constexpr OptionSpec(const char *name, int32_t type)
      : spec_{sizeof(kodo_option_spec), name, type, 0, nullptr, nullptr, nullptr} {}
  constexpr OptionSpec flags(int32_t flags) const {
    OptionSpec copy = *this;
    copy.spec_.flags |= flags;
    return copy;
  }
  constexpr OptionSpec required() const { return flags(KODO_OPTION_REQUIRED); }
  constexpr OptionSpec secret() const { return flags(KODO_OPTION_SECRET); }
  constexpr OptionSpec default_value(const char *value) const {
    OptionSpec copy = *this;
    copy.spec_.default_value = value;
    return copy;
  }
  constexpr OptionSpec env_name(const char *name) const {
    OptionSpec copy = *this;
    copy.spec_.env_name = name;
    return copy;
  }
  constexpr OptionSpec description(const char *text) const {
    OptionSpec copy = *this;
    copy.spec_.description = text;
    return copy;
  }
  constexpr operator kodo_option_spec() const { return spec_; }  // NOLINT: meant to convert

 private:
  kodo_option_spec spec_;
};

// An option table entry with its arguments in the order of kodo_option_spec's fields (after
// struct_size); the ones left out are 0 / NULL. For a table that reads by name, OptionSpec.
// (Before 0.2 it took default_value and description third and fourth: such a call no longer
// compiles, where a reordering that still compiled would have swapped two strings.)
constexpr kodo_option_spec option(const char *name, int32_t type, int32_t flags = 0,
                                  const char *default_value = nullptr,
                                  const char *env_name = nullptr,
                                  const char *description = nullptr) noexcept {
  return kodo_option_spec{
      sizeof(kodo_option_spec), name, type, flags, default_value, env_name, description};
}

// An INT option's value, or its declared default when the host did not pass it; throws
// Error(KODO_ERR_INVALID_ARGUMENT) naming the option when it is not an integer in [min, max].
inline int64_t int_option(const Options &options, const kodo_option_spec &spec, int64_t min,
                          int64_t max) {
  const std::string text = options.get(spec.name, spec.default_value ? spec.default_value : "");
  errno = 0;
  char *end = nullptr;
  const long long value = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || errno == ERANGE || value < min || value > max)
    throw Error(KODO_ERR_INVALID_ARGUMENT,
                std::string("option ") + spec.name + " must be an integer from " +
                    std::to_string(min) + " to " + std::to_string(max) + ", got '" + text + "'");
  return value;
}

}  // namespace kodo::sdk

// Defines the entry point of a plugin that fills its C function table itself (for a hot path
// that wants its own memory layout): KIND is KODO_KIND_*, STORAGE / TRANSPORT point at the
// static table of that kind (the other is nullptr). OPTIONS is an array of
// `const kodo_option_spec *` (may be empty: pass nullptr, 0). The entry agrees on the
// highest ABI version both sides speak, from KODO_KIND_MIN_ABI(KIND) to KODO_ABI_VERSION.
#define KODO_PLUGIN_ENTRY(KIND, STORAGE, TRANSPORT, NAME, VERSION, DESCRIPTION, CAPS, OPTIONS,     \
                          OPTION_COUNT)                                                            \
  extern "C" KODO_DEFINE_ENTRY(host_min, host_max, host, plugin_out, abi_out, error) {             \
    (void)host;                                                                                    \
    static const auto descriptors = kodo::sdk::detail::descriptors<KODO_ABI_VERSION>(              \
        kodo_plugin{sizeof(kodo_plugin), KODO_ABI_VERSION, KIND, NAME, VERSION, DESCRIPTION, CAPS, \
                    OPTIONS, OPTION_COUNT, STORAGE, TRANSPORT, nullptr});                          \
    return kodo::sdk::detail::negotiate(host_min, host_max, KODO_KIND_MIN_ABI(KIND), descriptors,  \
                                        plugin_out, abi_out, error);                               \
  }

// Defines the entry point of a plugin written as a class: CLASS derives from StorageBase /
// TransportBase and has a constructor CLASS(const kodo::sdk::Options&, const kodo_host_api*).
#define KODO_STORAGE_PLUGIN(CLASS, NAME, VERSION, DESCRIPTION, CAPS, OPTIONS, OPTION_COUNT)       \
  KODO_PLUGIN_ENTRY(KODO_KIND_STORAGE, kodo::sdk::detail::StorageThunks<CLASS>::table(), nullptr, \
                    NAME, VERSION, DESCRIPTION, CAPS, OPTIONS, OPTION_COUNT)

#define KODO_TRANSPORT_PLUGIN(CLASS, NAME, VERSION, DESCRIPTION, CAPS, OPTIONS, OPTION_COUNT) \
  KODO_PLUGIN_ENTRY(KODO_KIND_TRANSPORT, nullptr,                                             \
                    kodo::sdk::detail::TransportThunks<CLASS>::table(), NAME, VERSION,        \
                    DESCRIPTION, CAPS, OPTIONS, OPTION_COUNT)

#endif  // KODO_PLUGIN_HPP
