// ray_transport.cpp: events carried through Ray, beside kodosumi's Ray runners.
//
// Ray's client stays out of the host: Ray's C++ API is experimental, aborts its process on
// failure and brings its own gRPC and protobuf. The plugin starts a bridge process on Ray's
// public Python API (kodo_ray_bridge.py, in the venv that .ci/setup makes) and supervises it:
// a bridge that exits or is killed is started again with a growing pause (up to
// restart_max_ms), and what it had not confirmed is handed to the new one.
//
// Producer. publish() puts the batch in a bounded buffer of unconfirmed batches and sends it to
// the bridge, which puts it into kodo's stream actor. A batch leaves the buffer only when the
// bridge confirms that the actor holds it; a new bridge gets every unconfirmed batch again. The
// actor keeps one copy per (fid, seq), and storage is idempotent on (fid, seq), so a batch sent
// twice is stored once.
//
// Consumer. The bridge pushes deliveries (from kodosumi's runners and from kodo's stream) up
// to max_unacked ahead of the acks. Each carries a reference (source, fid, seq) that stays
// meaningful to a restarted bridge, so an ack of a delivery read from the old bridge reaches the
// new one. A new bridge delivers again whatever was not acked (spill file, stream session);
// the deliveries the old one had pushed and the host had not read yet are dropped here.
#include "bridge_process.hpp"

#include <dlfcn.h>
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <limits>
#include <map>
#include <mutex>
#include <thread>
#include <tuple>
#include <unordered_map>

namespace kodo::ray {
namespace {

using kodo::sdk::int_option;
using kodo::sdk::Metric;
using kodo::sdk::OwnedEvent;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// ---- Options ---------------------------------------------------------------------------------

constexpr kodo_option_spec kServer =
    kodo::sdk::option("server", KODO_OPTION_STRING, 0, "localhost:6379", "KODO_RAY_SERVER",
                      "the Ray head's GCS address, host:port (kodosumi's RAY_SERVER)");
constexpr kodo_option_spec kPython = kodo::sdk::option(
    "python", KODO_OPTION_STRING, 0, "python3", "KODO_RAY_PYTHON",
    "the Python that runs the bridge; it must import ray (the venv .ci/setup makes: "
    "build/venv-ray/bin/python)");
constexpr kodo_option_spec kBridge = kodo::sdk::option(
    "bridge", KODO_OPTION_STRING, 0, "", "KODO_RAY_BRIDGE",
    "the bridge script; empty: kodo_ray_bridge.py beside this plugin's shared object");
constexpr kodo_option_spec kSpillDir = kodo::sdk::option(
    "spill_dir", KODO_OPTION_PATH, 0, "data/ray-spill", "KODO_RAY_SPILL_DIR",
    "where the bridge keeps events drained from kodosumi's runners until storage acked them");
constexpr kodo_option_spec kNamespace = kodo::sdk::option(
    "runner_namespace", KODO_OPTION_STRING, 0, "kodosumi", "KODO_RAY_RUNNER_NAMESPACE",
    "the Ray namespace of kodosumi's runner actors (named by fid)");
constexpr kodo_option_spec kStream = kodo::sdk::option(
    "stream", KODO_OPTION_STRING, 0, "kodo-events", "KODO_RAY_STREAM",
    "name of the detached actor (namespace kodo) that carries kodo's own producers' events");
constexpr kodo_option_spec kBatch =
    kodo::sdk::option("drain_batch", KODO_OPTION_INT, 0, "4000", "KODO_RAY_DRAIN_BATCH",
                      "most events one get_nowait_batch takes from a runner's queue (a "
                      "shallower queue gives what it holds)");
constexpr kodo_option_spec kDrainers = kodo::sdk::option(
    "drainers", KODO_OPTION_INT, 0, "2", "KODO_RAY_DRAINERS",
    "drainer actors that read runners' queues (each runner always by the same one); keep it "
    "the same across restarts: a drainer holds what it read until the bridge spilled it");
constexpr kodo_option_spec kCapacity = kodo::sdk::option(
    "capacity", KODO_OPTION_INT, 0, "1000000", "KODO_RAY_CAPACITY",
    "most unacked events kodo's stream actor holds; past it, publish waits and then fails");
constexpr kodo_option_spec kBufferEvents =
    kodo::sdk::option("buffer_events", KODO_OPTION_INT, 0, "100000", "KODO_RAY_BUFFER_EVENTS",
                      "most published events a producer holds that the bridge has not confirmed");
constexpr kodo_option_spec kMaxUnacked = kodo::sdk::option(
    "max_unacked", KODO_OPTION_INT, 0, "100000", "KODO_RAY_MAX_UNACKED",
    "most deliveries the bridge sends ahead of the host's acks (draining pauses past it)");
constexpr kodo_option_spec kDiscoverMs =
    kodo::sdk::option("discover_ms", KODO_OPTION_INT, 0, "500", "KODO_RAY_DISCOVER_MS",
                      "how often the bridge lists named actors to find new runners");
constexpr kodo_option_spec kUsername = kodo::sdk::option(
    "default_username", KODO_OPTION_STRING, 0, "kodosumi", "KODO_RAY_DEFAULT_USERNAME",
    "username for a runner that names none (no get_username, no meta event)");
constexpr kodo_option_spec kConnectMs = kodo::sdk::option(
    "connect_timeout_ms", KODO_OPTION_INT, 0, "60000", "KODO_RAY_CONNECT_TIMEOUT_MS",
    "how long open waits for the first bridge to connect to Ray");
constexpr kodo_option_spec kRestartMaxMs = kodo::sdk::option(
    "restart_max_ms", KODO_OPTION_INT, 0, "5000", "KODO_RAY_RESTART_MAX_MS",
    "longest pause before a dead bridge is started again (the pause doubles from 100 ms)");
const kodo_option_spec *const kOptions[] = {
    &kServer,     &kPython,     &kBridge,   &kSpillDir,  &kNamespace,
    &kStream,     &kBatch,      &kDrainers, &kCapacity,  &kBufferEvents,
    &kMaxUnacked, &kDiscoverMs, &kUsername, &kConnectMs, &kRestartMaxMs};

// The folder of this shared object, where the build puts the bridge script beside it.
std::string plugin_folder() {
  Dl_info info{};
  if (dladdr(reinterpret_cast<void *>(&plugin_folder), &info) == 0 || !info.dli_fname) return ".";
  const std::string path = info.dli_fname;
  const auto slash = path.rfind('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

struct Settings {
  std::vector<std::string> argv;  // the bridge's command line
  std::string server;
  size_t buffer_events;
  milliseconds connect_timeout, restart_max;

  explicit Settings(const kodo::sdk::Options &o)
      : server(o.get(kServer.name, kServer.default_value)),
        buffer_events(static_cast<size_t>(int_option(o, kBufferEvents, 1, 1LL << 32))),
        connect_timeout(int_option(o, kConnectMs, 100, 3600000)),
        restart_max(int_option(o, kRestartMaxMs, 100, 3600000)) {
    const auto colon = server.rfind(':');
    if (colon == std::string::npos || colon == 0 || colon + 1 == server.size())
      throw Error(KODO_ERR_INVALID_ARGUMENT,
                  "option server must be host:port (kodosumi's RAY_SERVER), got '" + server + "'");
    std::string bridge = o.get(kBridge.name, "");
    if (bridge.empty()) bridge = plugin_folder() + "/kodo_ray_bridge.py";
    const double discover = static_cast<double>(int_option(o, kDiscoverMs, 10, 3600000)) / 1000;
    argv = {o.get(kPython.name, kPython.default_value),
            "-u",
            bridge,
            "--address",
            server,
            "--namespace",
            o.get(kNamespace.name, kNamespace.default_value),
            "--stream",
            o.get(kStream.name, kStream.default_value),
            "--spill-dir",
            o.get(kSpillDir.name, kSpillDir.default_value),
            "--batch",
            std::to_string(int_option(o, kBatch, 1, 1000000)),
            "--drainers",
            std::to_string(int_option(o, kDrainers, 1, 64)),
            "--capacity",
            std::to_string(int_option(o, kCapacity, 1, 1LL << 40)),
            "--max-unacked",
            std::to_string(int_option(o, kMaxUnacked, 1, 1LL << 32)),
            "--discover-interval",
            std::to_string(discover),
            "--default-username",
            o.get(kUsername.name, kUsername.default_value)};
    const std::string problem = kodo::sdk::name_problem("default_username", argv.back());
    if (!problem.empty()) throw Error(KODO_ERR_INVALID_ARGUMENT, "option " + problem);
  }
};

// ---- Frames ----------------------------------------------------------------------------------

using JsonWriter = rapidjson::Writer<rapidjson::StringBuffer>;

void write_str(JsonWriter &w, std::string_view s) {
  w.String(s.data(), static_cast<rapidjson::SizeType>(s.size()));
}

std::string publish_frame(uint64_t id, const kodo_event *const *events, size_t count) {
  rapidjson::StringBuffer buffer;
  JsonWriter w(buffer);
  w.StartObject();
  w.Key("op");
  w.String("publish");
  w.Key("id");
  w.Uint64(id);
  w.Key("events");
  w.StartArray();
  for (size_t i = 0; i < count; ++i) {
    const kodo_event &e = *events[i];
    w.StartArray();
    w.String(e.fid);
    w.String(e.username);
    w.Int64(e.seq);
    w.Double(e.timestamp);
    w.String(e.kind);
    write_str(w, std::string_view(e.payload ? e.payload : "", e.payload_len));
    w.EndArray();
  }
  w.EndArray();
  w.EndObject();
  return buffer.GetString();
}

// Where a delivery came from, as the bridge names it across restarts.
struct Ref {
  char source = 'k';  // 'k': kodo's stream, 'r': a kodosumi runner (spill file)
  std::string fid;
  int64_t seq = 0;
};

// Acks as [source, fid, first seq, last seq] ranges: storage acks a runner's events nearly in
// order, so a read of thousands acks in a range or two, and the bridge's work is per range.
std::string ack_frame(std::vector<Ref> refs) {
  std::sort(refs.begin(), refs.end(), [](const Ref &a, const Ref &b) {
    return std::tie(a.source, a.fid, a.seq) < std::tie(b.source, b.fid, b.seq);
  });
  rapidjson::StringBuffer buffer;
  JsonWriter w(buffer);
  w.StartObject();
  w.Key("op");
  w.String("ack");
  w.Key("ranges");
  w.StartArray();
  for (size_t i = 0; i < refs.size();) {
    size_t j = i + 1;
    while (j < refs.size() && refs[j].source == refs[i].source && refs[j].fid == refs[i].fid &&
           refs[j].seq <= refs[j - 1].seq + 1)
      ++j;
    w.StartArray();
    w.String(refs[i].source == 'k' ? "k" : "r");
    write_str(w, refs[i].fid);
    w.Int64(refs[i].seq);
    w.Int64(refs[j - 1].seq);
    w.EndArray();
    i = j;
  }
  w.EndArray();
  w.EndObject();
  return buffer.GetString();
}

struct Incoming {
  Ref ref;
  uint32_t count = 1;
  OwnedEvent event;
};

// Reads one delivered row [source, fid, username, seq, ts, kind, payload, count]; "" when it
// keeps kodo_event's contract, else what is wrong.
std::string parse_row(const rapidjson::Value &row, Incoming &out) {
  if (!row.IsArray() || row.Size() != 8 || !row[0].IsString() || !row[1].IsString() ||
      !row[2].IsString() || !row[3].IsInt64() || !row[4].IsNumber() || !row[5].IsString() ||
      !row[6].IsString() || !row[7].IsUint())
    return "a delivered row is not [source, fid, username, seq, timestamp, kind, payload, count]";
  out.ref = Ref{row[0].GetString()[0], row[1].GetString(), row[3].GetInt64()};
  out.count = row[7].GetUint();
  out.event.fid = row[1].GetString();
  out.event.username = row[2].GetString();
  out.event.seq = row[3].GetInt64();
  out.event.timestamp = row[4].GetDouble();
  out.event.kind = row[5].GetString();
  out.event.payload.assign(row[6].GetString(), row[6].GetStringLength());
  for (auto [what, value] : {std::pair{"fid", &out.event.fid}, {"username", &out.event.username}}) {
    std::string problem = kodo::sdk::name_problem(what, *value);
    if (!problem.empty()) return problem;
  }
  if (out.event.kind.empty()) return "kind is empty";
  return {};
}

// Reads one event of a runner's batch, a kodosumi queue item {timestamp, kind, payload}, into
// `out` (fid, user and seq set by the caller); "" when it keeps kodo_event's contract, else what
// is wrong. A payload that is not text is kept as its JSON; an item without a timestamp gets
// `now`.
std::string parse_item(const rapidjson::Value &item, double now, OwnedEvent &out) {
  if (!item.IsObject()) return "a queue item is not an object {timestamp, kind, payload}";
  const auto kind = item.FindMember("kind");
  if (kind == item.MemberEnd() || !kind->value.IsString() || kind->value.GetStringLength() == 0)
    return "a queue item's kind is missing, empty or not text";
  out.kind.assign(kind->value.GetString(), kind->value.GetStringLength());
  const auto timestamp = item.FindMember("timestamp");
  if (timestamp != item.MemberEnd() && !timestamp->value.IsNumber())
    return "a queue item's timestamp is not a number";
  out.timestamp = timestamp == item.MemberEnd() ? now : timestamp->value.GetDouble();
  const auto payload = item.FindMember("payload");
  if (payload == item.MemberEnd()) {
    out.payload.clear();
  } else if (payload->value.IsString()) {
    out.payload.assign(payload->value.GetString(), payload->value.GetStringLength());
  } else {
    rapidjson::StringBuffer buffer;
    JsonWriter w(buffer);
    payload->value.Accept(w);
    out.payload.assign(buffer.GetString(), buffer.GetSize());
  }
  return {};
}

// ---- The transport ---------------------------------------------------------------------------

class RayTransport;

class RayConsumer : public kodo::sdk::ConsumerBase {
 public:
  explicit RayConsumer(RayTransport &t) : t_(t) {}
  RayConsumer(const RayConsumer &) = delete;
  RayConsumer &operator=(const RayConsumer &) = delete;
  ~RayConsumer() override;
  void read(size_t max, int32_t block_ms, kodo::sdk::DeliveryBatchBuilder &out) override;
  void ack(const uint64_t *ids, size_t count) override;

 private:
  RayTransport &t_;
};

class RayTransport : public kodo::sdk::TransportBase {
 public:
  RayTransport(const kodo::sdk::Options &options, const kodo_host_api *host)
      : settings_(options), log_(host) {
    supervisor_ = std::thread([this] { supervise(); });
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, settings_.connect_timeout, [&] { return up_ || !fatal_.empty(); });
    if (up_) return;
    const std::string why = fatal_.empty()
                                ? "no answer from the bridge within " +
                                      std::to_string(settings_.connect_timeout.count()) + " ms"
                                : fatal_;
    lock.unlock();
    stop();
    throw Error(KODO_ERR_UNAVAILABLE,
                "ray: cannot connect to the Ray head at " + settings_.server + ": " + why, true);
  }

  RayTransport(const RayTransport &) = delete;
  RayTransport &operator=(const RayTransport &) = delete;

  ~RayTransport() override {
    // A producer's handle closes only once the bridge confirmed what it took (or gave up).
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, settings_.connect_timeout, [&] { return unconfirmed_.empty() || !up_; });
    lock.unlock();
    stop();
  }

  void publish(const kodo_event *const *events, size_t count, int32_t timeout_ms) override {
    for (size_t i = 0; i < count; ++i) kodo::sdk::check_event("publish", events[i], i);
    if (count == 0) return;
    std::unique_lock<std::mutex> lock(mu_);
    const auto room = [&] {
      return unconfirmed_events_ == 0 || unconfirmed_events_ + count <= settings_.buffer_events;
    };
    if (!cv_.wait_for(lock, milliseconds(std::max(timeout_ms, 0)), room))
      throw Error(KODO_ERR_TIMEOUT,
                  "ray: " + std::to_string(unconfirmed_events_) +
                      " published events wait for the bridge to confirm them (buffer_events " +
                      std::to_string(settings_.buffer_events) + (up_ ? "" : ", Ray is away") +
                      "); nothing of this batch was taken",
                  true);
    const uint64_t id = next_publish_++;
    const std::string frame = publish_frame(id, events, count);
    unconfirmed_.emplace(id, Unconfirmed{frame, count});
    unconfirmed_events_ += count;
    const bool ready = up_;
    lock.unlock();
    if (ready) send(frame);  // else the next bridge gets it with the rest
  }

  std::unique_ptr<kodo::sdk::ConsumerBase> open_consumer(const std::string &group,
                                                         const std::string &name) override {
    kodo::sdk::check_name("group", group.c_str());
    kodo::sdk::check_name("consumer name", name.c_str());
    std::unique_lock<std::mutex> lock(mu_);
    if (consumer_open_)
      throw Error(KODO_ERR_NOT_SUPPORTED,
                  "ray: this handle already has a consumer; the Ray transport has one consumer "
                  "per handle (no consumer groups)");
    consumer_open_ = true;
    const bool first = !consuming_;
    consuming_ = true;
    const bool ready = up_;
    lock.unlock();
    if (first && ready) send(R"({"op":"consume"})");
    return std::make_unique<RayConsumer>(*this);
  }

  std::vector<Metric> metrics() override {
    std::lock_guard<std::mutex> lock(mu_);
    const double mean = drains_ ? static_cast<double>(drained_) / static_cast<double>(drains_) : 0;
    return {
        {"up", "1 while the bridge is connected to the Ray head, 0 while not", "",
         KODO_METRIC_GAUGE, up_ ? 1.0 : 0.0},
        {"runners_found", "kodosumi runner actors the bridge is draining", "", KODO_METRIC_GAUGE,
         static_cast<double>(runners_)},
        {"queue_depth", "events waiting in runners' queues and kodo's stream actor", "",
         KODO_METRIC_GAUGE, static_cast<double>(depth_)},
        {"drain_batches_total", "get_nowait_batch calls that returned events", "",
         KODO_METRIC_COUNTER, static_cast<double>(drains_)},
        {"drained_events_total", "events drained from runners' queues", "", KODO_METRIC_COUNTER,
         static_cast<double>(drained_)},
        {"drain_batch_mean", "mean events per drained batch", "", KODO_METRIC_GAUGE, mean},
        {"drain_batch_max", "largest drained batch", "", KODO_METRIC_GAUGE,
         static_cast<double>(largest_batch_)},
        {"bridge_restarts_total", "times the bridge was started again after it ended", "",
         KODO_METRIC_COUNTER, static_cast<double>(restarts_)},
        {"bridge_pid", "process id of the running bridge (0: none)", "", KODO_METRIC_GAUGE,
         static_cast<double>(bridge_pid_)},
        {"unconfirmed_events", "published events the bridge has not confirmed", "",
         KODO_METRIC_GAUGE, static_cast<double>(unconfirmed_events_)},
        {"unacked_deliveries", "deliveries read and not acked", "", KODO_METRIC_GAUGE,
         static_cast<double>(unacked_.size())},
    };
  }

 private:
  friend class RayConsumer;

  struct Unconfirmed {
    std::string frame;
    size_t events;
  };

  void send(const std::string &frame) {
    std::lock_guard<std::mutex> lock(write_mu_);
    bridge_.send(frame);  // a failed write is the reader's end of stream: the supervisor acts
  }

  void stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    {
      std::lock_guard<std::mutex> lock(write_mu_);
      bridge_.interrupt();  // the reader sees the end; the bridge sees end of input and exits
    }
    if (supervisor_.joinable()) supervisor_.join();
  }

  // Starts the bridge, reads its frames until it ends, and starts it again, pausing longer
  // each time it ends without having stayed up for a while.
  void supervise() {
    milliseconds pause(100);
    for (;;) {
      {
        std::lock_guard<std::mutex> lock(write_mu_);
        try {
          bridge_.start(settings_.argv);
        } catch (const Error &e) {
          std::lock_guard<std::mutex> state(mu_);
          fatal_ = e.what();
        }
      }
      const auto started = Clock::now();
      if (bridge_.started()) {
        {
          std::lock_guard<std::mutex> lock(mu_);
          bridge_pid_ = bridge_.pid();
        }
        read_frames();
        std::lock_guard<std::mutex> lock(write_mu_);
        bridge_.wait_exit(stopping() ? 5000 : 200);
        bridge_.kill_and_reap();
      }
      std::unique_lock<std::mutex> lock(mu_);
      const bool was_up = up_;
      if (!was_up && fatal_.empty())
        fatal_ = "the bridge (" + settings_.argv[0] + " " + settings_.argv[2] + ") " +
                 bridge_.exit_description() + " before it connected";
      up_ = false;
      bridge_pid_ = 0;
      cv_.notify_all();
      if (stopping_) return;
      if (was_up) log_(KODO_LOG_WARN, "ray: the bridge ended; starting it again");
      ++restarts_;
      if (Clock::now() - started > std::chrono::seconds(10)) pause = milliseconds(100);
      cv_.wait_for(lock, pause, [&] { return stopping_; });
      if (stopping_) return;
      pause = std::min(pause * 2, settings_.restart_max);
    }
  }

  bool stopping() {
    std::lock_guard<std::mutex> lock(mu_);
    return stopping_;
  }

  void read_frames() {
    std::string body;
    while (bridge_.receive(body)) {
      rapidjson::Document d;
      d.Parse(body.data(), body.size());
      if (d.HasParseError() || !d.IsObject() || !d.HasMember("op") || !d["op"].IsString()) {
        log_(KODO_LOG_ERROR, "ray: the bridge sent a frame that is not a JSON object with op");
        return;
      }
      const std::string op = d["op"].GetString();
      if (op == "hello") {
        on_hello();
      } else if (op == "fatal") {
        std::lock_guard<std::mutex> lock(mu_);
        fatal_ = d.HasMember("message") && d["message"].IsString() ? d["message"].GetString()
                                                                   : "the bridge failed";
        cv_.notify_all();
      } else if (op == "published") {
        std::lock_guard<std::mutex> lock(mu_);
        auto it = unconfirmed_.find(d["id"].GetUint64());
        if (it != unconfirmed_.end()) {
          unconfirmed_events_ -= it->second.events;
          unconfirmed_.erase(it);
          cv_.notify_all();
        }
      } else if (op == "batch") {
        on_batch(d);
      } else if (op == "events") {
        on_events(d["events"]);
      } else if (op == "status") {
        on_status(d);
      }
    }
  }

  // A bridge connected: it gets the consumer's start and every unconfirmed batch, in order,
  // before any other frame.
  // Deliveries the previous bridge pushed and nobody read are dropped: this one sends them again.
  void on_hello() {
    std::lock_guard<std::mutex> wlock(write_mu_);
    std::vector<std::string> frames;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (restarts_ > 0) log_(KODO_LOG_INFO, "ray: the bridge is connected to " + settings_.server);
      inbox_.clear();
      if (consuming_) frames.emplace_back(R"({"op":"consume"})");
      for (const auto &[id, u] : unconfirmed_) frames.push_back(u.frame);
      fatal_.clear();
      base_drains_ += last_drains_;
      base_drained_ += last_drained_;
      last_drains_ = last_drained_ = 0;
      // Up while the socket is still ours: a consumer or batch that comes now sends its own
      // frame after these (at worst a batch twice, which the stream actor keeps once).
      up_ = true;
      cv_.notify_all();
    }
    for (const auto &f : frames) bridge_.send(f);
  }

  void on_events(const rapidjson::Value &rows) {
    if (!rows.IsArray()) return;
    std::vector<Ref> rejected;
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto &row : rows.GetArray()) {
      Incoming in;
      const std::string problem = parse_row(row, in);
      if (problem.empty()) {
        inbox_.push_back(std::move(in));
        continue;
      }
      // Set aside, not retried forever: acked so the bridge drops it, and reported.
      log_(KODO_LOG_ERROR, "ray: dropped a delivered event of fid '" + in.event.fid + "' seq " +
                               std::to_string(in.event.seq) + ": " + problem);
      rejected.push_back(in.ref);
    }
    cv_.notify_all();
    if (!rejected.empty()) pending_acks_.push_back(ack_frame(std::move(rejected)));
  }

  // A runner's events seq..seq+n-1 in one frame: {fid, username, seq, delivered, events}.
  void on_batch(const rapidjson::Document &d) {
    if (!d.HasMember("seq") || !d["seq"].IsInt64() || !d.HasMember("delivered") ||
        !d["delivered"].IsUint() || !d.HasMember("events") || !d["events"].IsArray() ||
        !d.HasMember("fid") || !d["fid"].IsString() || !d.HasMember("username") ||
        !d["username"].IsString()) {
      log_(KODO_LOG_ERROR,
           "ray: the bridge sent a batch frame without fid, username, seq, "
           "delivered or events; ignored");
      return;
    }
    const std::string fid = d["fid"].GetString(), username = d["username"].GetString();
    std::string whole;  // what is wrong with every event of the batch: set aside, acked
    for (auto [what, value] : {std::pair{"fid", &fid}, {"username", &username}})
      if (whole.empty()) whole = kodo::sdk::name_problem(what, *value);
    const int64_t first = d["seq"].GetInt64();
    const uint32_t delivered = d["delivered"].GetUint();
    const double now =
        std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
    std::vector<Ref> rejected;
    std::lock_guard<std::mutex> lock(mu_);
    int64_t seq = first;
    for (const auto &item : d["events"].GetArray()) {
      Incoming in;
      in.ref = Ref{'r', fid, seq};
      in.count = delivered;
      in.event.fid = fid;
      in.event.username = username;
      in.event.seq = seq++;
      if (!whole.empty()) {
        rejected.push_back(std::move(in.ref));
        continue;
      }
      const std::string problem = parse_item(item, now, in.event);
      if (!problem.empty()) {
        // An item kodo cannot store takes its seq as an error event that says why: the
        // execution shows it, and its seqs stay contiguous (no loss reported).
        in.event.kind = "error";
        in.event.timestamp = now;
        in.event.payload = "ray: runner ";
        in.event.payload += fid;
        in.event.payload += " queued an item that cannot be stored (seq ";
        in.event.payload += std::to_string(in.event.seq);
        in.event.payload += "): ";
        in.event.payload += problem;
        log_(KODO_LOG_ERROR, in.event.payload);
      }
      inbox_.push_back(std::move(in));
    }
    if (!whole.empty() && !rejected.empty())
      log_(KODO_LOG_ERROR, "ray: dropped events seq " + std::to_string(first) + ".." +
                               std::to_string(seq - 1) + " of runner '" + fid + "': " + whole);
    cv_.notify_all();
    if (!rejected.empty()) pending_acks_.push_back(ack_frame(std::move(rejected)));
  }

  void on_status(const rapidjson::Document &d) {
    auto number = [&](const char *key) {
      return d.HasMember(key) && d[key].IsNumber() ? d[key].GetDouble() : 0.0;
    };
    std::lock_guard<std::mutex> lock(mu_);
    runners_ = static_cast<int64_t>(number("runners"));
    depth_ = static_cast<int64_t>(number("depth"));
    last_drains_ = static_cast<uint64_t>(number("drains"));
    last_drained_ = static_cast<uint64_t>(number("drained"));
    drains_ = base_drains_ + last_drains_;
    drained_ = base_drained_ + last_drained_;
    largest_batch_ = std::max(largest_batch_, static_cast<int64_t>(number("largest_batch")));
  }

  Settings settings_;
  kodo::sdk::HostLog log_;
  std::thread supervisor_;

  std::mutex write_mu_;  // the bridge's socket; taken before mu_ when both are held
  BridgeProcess bridge_;

  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false, up_ = false, consuming_ = false, consumer_open_ = false;
  std::string fatal_;
  uint64_t restarts_ = 0;
  pid_t bridge_pid_ = 0;
  // Producer
  std::map<uint64_t, Unconfirmed> unconfirmed_;
  size_t unconfirmed_events_ = 0;
  uint64_t next_publish_ = 1;
  // Consumer
  std::deque<Incoming> inbox_;
  std::unordered_map<uint64_t, Ref> unacked_;
  uint64_t next_delivery_ = 1;
  std::vector<std::string> pending_acks_;  // acks of rejected rows, sent by the next read
  // Figures from the bridge (its counters start again with each bridge)
  int64_t runners_ = 0, depth_ = 0, largest_batch_ = 0;
  uint64_t drains_ = 0, drained_ = 0, base_drains_ = 0, base_drained_ = 0, last_drains_ = 0,
           last_drained_ = 0;
};

RayConsumer::~RayConsumer() {
  std::lock_guard<std::mutex> lock(t_.mu_);
  t_.consumer_open_ = false;
}

void RayConsumer::read(size_t max, int32_t block_ms, kodo::sdk::DeliveryBatchBuilder &out) {
  std::vector<std::string> acks;
  {
    std::unique_lock<std::mutex> lock(t_.mu_);
    t_.cv_.wait_for(lock, milliseconds(std::max(block_ms, 0)),
                    [&] { return !t_.inbox_.empty() || t_.stopping_; });
    while (!t_.inbox_.empty() && out.size() < max) {
      Incoming &in = t_.inbox_.front();
      const uint64_t id = t_.next_delivery_++;
      t_.unacked_.emplace(id, std::move(in.ref));
      out.add(id, in.count, std::move(in.event));
      t_.inbox_.pop_front();
    }
    acks.swap(t_.pending_acks_);
  }
  for (const auto &a : acks) t_.send(a);
}

void RayConsumer::ack(const uint64_t *ids, size_t count) {
  std::vector<Ref> refs;
  {
    std::lock_guard<std::mutex> lock(t_.mu_);
    for (size_t i = 0; i < count; ++i) {
      auto it = t_.unacked_.find(ids[i]);
      if (it == t_.unacked_.end()) continue;
      refs.push_back(std::move(it->second));
      t_.unacked_.erase(it);
    }
  }
  if (!refs.empty()) t_.send(ack_frame(std::move(refs)));
}

}  // namespace
}  // namespace kodo::ray

KODO_TRANSPORT_PLUGIN(kodo::ray::RayTransport, "ray", "0.1.0",
                      "events through Ray: drains kodosumi's runner actors and carries kodo's "
                      "own producers through a stream actor, via a supervised Python bridge",
                      KODO_TRANSPORT_CAP_CROSS_PROCESS, kodo::ray::kOptions,
                      sizeof(kodo::ray::kOptions) / sizeof(kodo::ray::kOptions[0]))
