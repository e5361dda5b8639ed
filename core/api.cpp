#include "core/api.hpp"
#include "core/api_json.hpp"
#include "core/auth_token.hpp"

#include <kodo/host/error.hpp>
#include <kodo/host/log.hpp>
#include "core/ids.hpp"
#include "core/json_bounded.hpp"
#include "core/kodosumi_payload.hpp"

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <sstream>
#include <thread>

namespace kodo {

namespace {

const char *const kJson = "application/json";

void send_json(HttpResponder &response, int status, const rapidjson::StringBuffer &body) {
  response.send(status, kJson, std::string_view(body.GetString(), body.GetSize()));
}

// A whole non-negative number from a query parameter; throws naming the parameter.
int64_t query_int(const HttpRequest &request, const char *name, int64_t fallback, int64_t min,
                  int64_t max) {
  auto value = request.query_param(name);
  if (!value) return fallback;
  errno = 0;
  char *end = nullptr;
  long long parsed = std::strtoll(value->c_str(), &end, 10);
  if (value->empty() || errno != 0 || *end != '\0' || parsed < min || parsed > max)
    throw Error(KODO_ERR_INVALID_ARGUMENT,
                "query parameter '" + std::string(name) + "' must be a whole number from " +
                    std::to_string(min) + " to " + std::to_string(max) + ", got '" + *value + "'");
  return parsed;
}

void write_execution(JsonWriter &w, const ExecutionInfo &x) {
  w.StartObject();
  w.Key("fid");
  write_string(w, x.fid);
  w.Key("username");
  write_string(w, x.username);
  w.Key("status");
  write_string(w, x.status);
  w.Key("started_at");
  w.Double(x.started_at);
  w.Key("updated_at");
  w.Double(x.updated_at);
  w.Key("event_count");
  w.Int64(x.event_count);
  w.Key("last_seq");
  w.Int64(x.last_seq);
  w.EndObject();
}

}  // namespace

void send_error(HttpResponder &response, int status, const std::string &message) {
  rapidjson::StringBuffer buffer;
  JsonWriter w(buffer);
  w.StartObject();
  w.Key("error");
  w.String(message.c_str(), static_cast<rapidjson::SizeType>(message.size()));
  w.EndObject();
  send_json(response, status, buffer);
}

int http_status_for(kodo_status code) {
  switch (code) {
    case KODO_ERR_INVALID_ARGUMENT: return 400;
    case KODO_ERR_NOT_FOUND: return 404;
    case KODO_ERR_NOT_SUPPORTED: return 501;
    case KODO_ERR_UNAVAILABLE:
    case KODO_ERR_TIMEOUT: return 503;
    default: return 500;
  }
}

// kodosumi's error body (litestar's), on kodosumi's routes: {"status_code": N, "detail": ...}.
void send_kodosumi_error(HttpResponder &response, int status, const std::string &message) {
  rapidjson::StringBuffer buffer;
  JsonWriter w(buffer);
  w.StartObject();
  w.Key("status_code");
  w.Int(status);
  w.Key("detail");
  w.String(message.c_str(), static_cast<rapidjson::SizeType>(message.size()));
  w.EndObject();
  send_json(response, status, buffer);
}

bool Api::handle_quick(const HttpRequest &request, HttpResponder &response) {
  if (request.method != "GET" && request.method != "HEAD") return false;
  // A refused Host takes the full route, which sends the refusal.
  if (ctx_.guard != nullptr && ctx_.guard->check(request)) return false;
  if (request.raw_path == "/health") {
    health(response);
    return true;
  }
  constexpr std::string_view kStatus = "/outputs/status/";
  const std::string_view path = request.raw_path;
  if (!ctx_.status_cache || path.substr(0, kStatus.size()) != kStatus) return false;
  // Encoded or further segments take the full route (and its checks and errors).
  const std::string fid(path.substr(kStatus.size()));
  if (fid.find_first_of("/%") != std::string::npos) return false;
  std::string owner;
  const auto body = ctx_.status_cache->get(fid, &owner);
  if (!body) return false;
  // With accounts on, the owner check of the full route (Api::visible), from what was read
  // lately: wrk with logins on answered 17% of nginx's rate while every request read the
  // accounts database and storage on a handler thread. Anything it cannot tell from the
  // caches (a caller not known lately, another's execution) takes the full route, which
  // answers as always.
  if (ctx_.auth != nullptr) {
    const std::optional<Caller> caller = ctx_.auth->cached_caller(request);
    if (!caller) return false;
    const bool visible =
        caller->fid.empty() ? caller->is_operator || owner == caller->user : caller->fid == fid;
    if (!visible) return false;
  }
  response.send(200, kJson, *body);
  return true;
}

void Api::health(HttpResponder &response) {
  // Asking the plugins and the hub for every request held /health to 40% of nginx's rate
  // under wrk; an answer at most kHealthFreshS old is as good to a health check.
  constexpr double kHealthFreshS = 0.05;
  const double now = now_seconds();
  std::shared_ptr<const std::string> body;
  int status = 200;
  {
    std::lock_guard<std::mutex> lock(health_mutex_);
    if (health_body_ && now - health_at_ < kHealthFreshS) {
      body = health_body_;
      status = health_status_;
    }
  }
  if (!body) {
    body = std::make_shared<const std::string>(health_text(&status));
    std::lock_guard<std::mutex> lock(health_mutex_);
    health_body_ = body;
    health_status_ = status;
    health_at_ = now;
  }
  response.send(status, kJson, *body);
}

std::string Api::health_text(int *http_status) {
  const bool stored = ctx_.metrics.storage_up.load() != 0;
  // The transport's own `up` (a Ray head or Redis server away): events then wait in producers.
  const bool carried = !ctx_.transport || ctx_.transport->up();
  // Running out of file descriptors: new connections and runs fail until some free up.
  const bool descriptors_short = ctx_.server && ctx_.server->out_of_descriptors();
  // The durability backend away (a Temporal server down): launches are refused meanwhile.
  const bool durable = !ctx_.durability || reports_up(durability_metrics(*ctx_.durability));
  const bool ok = stored && carried && durable && !descriptors_short;
  rapidjson::StringBuffer buffer;
  JsonWriter w(buffer);
  w.StartObject();
  w.Key("status");
  w.String(ok ? "ok" : "degraded");
  w.Key("storage");
  w.String(stored ? "up" : "down");
  w.Key("transport");
  w.String(carried ? "up" : "down");
  w.Key("storage_plugin");
  write_string(w, ctx_.storage.plugin().name());
  w.Key("transport_plugin");
  write_string(w, ctx_.transport_name);
  if (ctx_.durability) {
    w.Key("durability");
    w.String(durable ? "up" : "down");
    w.Key("durability_plugin");
    write_string(w, ctx_.durability->plugin().name());
  }
  w.Key("running_executions");
  w.Uint64(ctx_.executor.stats().running);
  w.Key("events_lost");
  w.Uint64(ctx_.metrics.events_lost.load());
  w.Key("events_missing");
  w.Int64(ctx_.metrics.events_missing.load());
  w.Key("descriptors");
  w.String(descriptors_short ? "exhausted" : "ok");
  if (ctx_.hub) {
    w.Key("stream_viewers");
    w.Uint64(ctx_.hub->viewers());
  }
  w.EndObject();
  *http_status = ok ? 200 : 503;
  return std::string(buffer.GetString(), buffer.GetSize());
}

void Api::metrics(HttpResponder &response) {
  const ExecutorStats stats = ctx_.executor.stats();
  Metrics::Gauges gauges;
  gauges.running_executions = static_cast<int64_t>(stats.running);
  gauges.queued_executions = static_cast<int64_t>(stats.queued);
  gauges.executions_launched = stats.launched;
  gauges.events_emitted = stats.events_emitted;
  gauges.events_rejected = stats.events_rejected;
  std::string text =
      metrics_text(ctx_.metrics, gauges, ctx_.storage, ctx_.transport, ctx_.durability);
  if (ctx_.server) {
    text +=
        "# HELP kodo_http_connections Open client connections.\n# TYPE kodo_http_connections "
        "gauge\n";
    text += "kodo_http_connections " + std::to_string(ctx_.server->connections()) + "\n";
    text +=
        "# HELP kodo_http_descriptor_failures_total Accepts that failed for want of file "
        "descriptors.\n# TYPE kodo_http_descriptor_failures_total counter\n";
    text += "kodo_http_descriptor_failures_total " +
            std::to_string(ctx_.server->descriptor_failures()) + "\n";
  }
  if (ctx_.hub) {
    text += "# HELP kodo_sse_viewers Open event streams.\n# TYPE kodo_sse_viewers gauge\n";
    text += "kodo_sse_viewers " + std::to_string(ctx_.hub->viewers()) + "\n";
  }
  response.send(200, "text/plain; version=0.0.4", text);
}

std::string metrics_text(const Metrics &metrics, const Metrics::Gauges &gauges,
                         const Storage &storage, const Transport *transport,
                         const Durability *durability) {
  std::string text = metrics.render(gauges);
  render_plugin_metrics(text, "storage", storage.metrics());
  if (transport) render_plugin_metrics(text, "transport", transport->metrics());
  if (durability) render_plugin_metrics(text, "durability", durability_metrics(*durability));
  return text;
}

std::vector<PluginMetric> durability_metrics(const Durability &durability) {
  return collect_plugin_metrics(durability.api().metrics, durability.handle());
}

void Api::list_flows(HttpResponder &response) {
  rapidjson::StringBuffer buffer;
  JsonWriter w(buffer);
  w.StartObject();
  w.Key("flows");
  w.StartArray();
  for (const FlowSpec &flow : ctx_.executor.flows()) {
    w.StartObject();
    w.Key("name");
    write_string(w, flow.name);
    w.Key("description");
    write_string(w, flow.description);
    w.Key("command");
    w.StartArray();
    for (const auto &arg : flow.argv) write_string(w, arg);
    w.EndArray();
    w.Key("timeout");
    w.Double(flow.timeout_s);
    w.EndObject();
  }
  w.EndArray();
  w.EndObject();
  send_json(response, 200, buffer);
}

void Api::launch(const HttpRequest &request, const Caller &caller, HttpResponder &response) {
  rapidjson::Document body;
  const JsonRead read = parse_json_bounded(request.body, ctx_.json_max_depth, body);
  if (read == JsonRead::TooDeep)
    throw Error(KODO_ERR_INVALID_ARGUMENT, "the request body nests deeper than " +
                                               std::to_string(ctx_.json_max_depth) + " levels");
  if (read != JsonRead::Ok || !body.IsObject())
    throw Error(KODO_ERR_INVALID_ARGUMENT,
                "the request body must be a JSON object like {\"flow\": NAME, \"inputs\": {...}}");
  auto flow = body.FindMember("flow");
  if (flow == body.MemberEnd() || !flow->value.IsString())
    throw Error(KODO_ERR_INVALID_ARGUMENT,
                "the request body needs \"flow\": the name of a registered flow");
  std::string inputs = "{}";
  auto given = body.FindMember("inputs");
  if (given != body.MemberEnd()) {
    if (!given->value.IsObject())
      throw Error(KODO_ERR_INVALID_ARGUMENT, "\"inputs\" must be a JSON object");
    rapidjson::StringBuffer buffer;
    JsonWriter w(buffer);
    if (!given->value.Accept(w))  // a literal past a double's range reads as infinite
      throw Error(KODO_ERR_INVALID_ARGUMENT,
                  "\"inputs\" holds a number beyond the range of a double");
    inputs.assign(buffer.GetString(), buffer.GetSize());
  }
  const std::string flow_name(flow->value.GetString(), flow->value.GetStringLength());
  std::string fid;
  if (ctx_.durability) {
    const auto &flows = ctx_.executor.flows();
    if (std::none_of(flows.begin(), flows.end(),
                     [&](const FlowSpec &f) { return f.name == flow_name; }))
      throw Error(KODO_ERR_NOT_FOUND, "unknown flow " + flow_name);
    sdk::JobInput job;
    job.fid = new_fid();
    job.username = caller.user;
    job.app_url = ctx_.app_url;
    job.entry_point = flow_name;
    job.inputs_json = inputs;
    // kodosumi's runner hands its flows the launching user's jwt; a worker has no accounts,
    // so the token travels in the job's input (the fork's field), made here for this fid.
    if (ctx_.auth) {
      const FlowSpec &spec = *std::find_if(flows.begin(), flows.end(),
                                           [&](const FlowSpec &f) { return f.name == flow_name; });
      job.jwt = ctx_.auth->flow_token(caller.user, job.fid, flow_token_lifetime_s(spec.timeout_s));
    }
    // The fid is the request id too: a retried submit of this launch starts nothing more.
    ctx_.durability->submit(job, job.fid);
    fid = job.fid;
  } else {
    fid = ctx_.executor.launch(flow_name, caller.user, inputs);
  }
  remember_launch(fid, caller.user);
  rapidjson::StringBuffer buffer;
  JsonWriter w(buffer);
  w.StartObject();
  w.Key("fid");
  write_string(w, fid);
  w.EndObject();
  response.send(201, kJson, std::string_view(buffer.GetString(), buffer.GetSize()),
                {{"Location", "/api/v1/executions/" + fid}});
}

void Api::list_executions(const HttpRequest &request, const Caller &caller,
                          HttpResponder &response) {
  const auto offset = static_cast<size_t>(query_int(request, "offset", 0, 0, 1LL << 40));
  const auto limit = static_cast<size_t>(query_int(request, "limit", 50, 1, 1000));
  // The caller's own executions (kodosumi keeps one folder per user id); an operator may
  // name any user's.
  std::string username = caller.user;
  if (auto given = request.query_param("username")) {
    check_username(*given);
    if (caller.is_operator) username = *given;
  }
  bool has_more = false;
  auto items = ctx_.storage.list_executions(username, offset, limit, &has_more);
  rapidjson::StringBuffer buffer;
  JsonWriter w(buffer);
  w.StartObject();
  w.Key("executions");
  w.StartArray();
  for (const auto &x : items) write_execution(w, x);
  w.EndArray();
  w.Key("offset");
  w.Uint64(offset);
  w.Key("limit");
  w.Uint64(limit);
  w.Key("has_more");
  w.Bool(has_more);
  w.EndObject();
  send_json(response, 200, buffer);
}

void Api::remember_launch(const std::string &fid, const std::string &owner) {
  constexpr size_t kRemembered = 10000;
  std::lock_guard<std::mutex> lock(launched_mutex_);
  launched_[fid] = owner;
  launched_order_.push_back(fid);
  if (launched_order_.size() > kRemembered) {
    launched_.erase(launched_order_.front());
    launched_order_.pop_front();
  }
}

void Api::forget_launch(const std::string &fid) {
  std::lock_guard<std::mutex> lock(launched_mutex_);
  launched_.erase(fid);
}

bool Api::launched_here(const std::string &fid, std::string *owner) {
  std::lock_guard<std::mutex> lock(launched_mutex_);
  auto it = launched_.find(fid);
  if (it == launched_.end()) return false;
  if (owner) *owner = it->second;
  return true;
}

// By fid, whichever user owns it: nothing here assumes one user.
bool Api::known(const std::string &fid, ExecutionInfo *info) {
  if (auto stored = ctx_.storage.get_execution(fid)) {
    if (info) *info = *stored;
    return true;
  }
  // A durable job waits for a worker; until its first event is stored it is starting.
  const bool waiting_job = ctx_.durability && launched_here(fid);
  if (!waiting_job && !ctx_.executor.is_active(fid)) {
    if (!launched_here(fid)) return false;
    // Ended and published, not yet committed: give the spooler a moment.
    if (ctx_.notifier) ctx_.notifier->wait_for_change(fid, -1, 5.0);
    if (auto stored = ctx_.storage.get_execution(fid)) {
      if (info) *info = *stored;
      return true;
    }
    return false;
  }
  if (info) {
    *info = ExecutionInfo{};
    info->fid = fid;
    info->username = ctx_.default_user;
    launched_here(fid, &info->username);
    info->status = "starting";
  }
  return true;
}

void Api::execution(const std::string &fid, HttpResponder &response) {
  ExecutionInfo info;
  if (!known(fid, &info)) throw Error(KODO_ERR_NOT_FOUND, "no execution " + fid);
  rapidjson::StringBuffer buffer;
  JsonWriter w(buffer);
  write_execution(w, info);
  if (ctx_.durability && ctx_.durability->has(KODO_DURABILITY_CAP_QUERY)) {
    // The job's state as the durability backend knows it, with no worker needed.
    std::string body(buffer.GetString(), buffer.GetSize());
    std::string workflow;
    try {
      workflow = ctx_.durability->describe(fid);
    } catch (const Error &e) {
      if (e.code() != KODO_ERR_NOT_FOUND) throw;
      workflow = "null";
    }
    body.pop_back();  // the summary's closing brace
    body += ",\"workflow\":" + workflow + "}";
    response.send(200, kJson, body);
    return;
  }
  send_json(response, 200, buffer);
}

void Api::control(const std::string &fid, const std::string &action, HttpResponder &response) {
  const std::string reason = action + " through kodo's API";
  bool taken = true;
  ExecutionInfo info;
  if (ctx_.durability && known(fid, &info) &&
      (info.status == "finished" || info.status == "error")) {
    taken = false;  // the job ended: a signal would change nothing
  } else if (ctx_.durability) {
    const int32_t signal = action == "pause"    ? KODO_JOB_SIGNAL_PAUSE
                           : action == "resume" ? KODO_JOB_SIGNAL_RESUME
                                                : KODO_JOB_SIGNAL_CANCEL;
    ctx_.durability->signal(fid, signal, reason);
  } else if (action == "cancel") {
    taken = ctx_.executor.cancel(fid, reason);
  } else {
    taken = ctx_.executor.pause(fid, action == "pause", reason);
  }
  if (!taken) {
    if (!known(fid, nullptr)) throw Error(KODO_ERR_NOT_FOUND, "no execution " + fid);
    send_error(response, 409,
               "execution " + fid + " is not running here, or is already " +
                   (action == "pause"    ? "paused"
                    : action == "resume" ? "running"
                                         : "ending"));
    return;
  }
  rapidjson::StringBuffer buffer;
  JsonWriter w(buffer);
  w.StartObject();
  w.Key("fid");
  write_string(w, fid);
  w.Key("action");
  write_string(w, action);
  w.EndObject();
  send_json(response, 202, buffer);
}

static std::vector<std::string> parse_kinds(const HttpRequest &request) {
  std::vector<std::string> kinds;
  auto value = request.query_param("kinds");
  if (!value) return kinds;
  std::istringstream in(*value);
  std::string kind;
  while (std::getline(in, kind, ','))
    if (!kind.empty()) {
      if (!is_known_kind(kind))
        throw Error(KODO_ERR_INVALID_ARGUMENT,
                    "unknown event kind '" + kind + "' in query parameter 'kinds'");
      kinds.push_back(kind);
    }
  return kinds;
}

void Api::events(const std::string &fid, const HttpRequest &request, HttpResponder &response) {
  EventQuery query;
  query.fid = fid;
  query.after_seq = query_int(request, "after", -1, -1, INT64_MAX - 1);
  query.limit = static_cast<size_t>(query_int(request, "limit", 1000, 1, 10000));
  query.kinds = parse_kinds(request);
  if (!known(fid, nullptr)) throw Error(KODO_ERR_NOT_FOUND, "no execution " + fid);
  bool has_more = false;
  std::vector<Event> events;
  try {
    events = ctx_.storage.read_events(query, &has_more);
  } catch (const Error &e) {
    if (e.code() != KODO_ERR_NOT_FOUND) throw;  // launched, nothing stored yet
  }
  rapidjson::StringBuffer buffer;
  JsonWriter w(buffer);
  w.StartObject();
  w.Key("fid");
  write_string(w, fid);
  w.Key("events");
  w.StartArray();
  for (const auto &e : events) {
    w.StartObject();
    w.Key("seq");
    w.Int64(e.seq);
    w.Key("timestamp");
    w.Double(e.timestamp);
    w.Key("kind");
    write_string(w, e.kind);
    w.Key("payload");
    write_string(w, e.payload);
    w.EndObject();
  }
  w.EndArray();
  w.Key("has_more");
  w.Bool(has_more);
  w.Key("next_after");
  w.Int64(events.empty() ? query.after_seq : events.back().seq);
  w.EndObject();
  send_json(response, 200, buffer);
}

namespace {

// The last status, final, meta and error events of a run, as kodosumi's status reads them.
struct StatusEvents {
  std::optional<Event> status, final, meta, error;
  std::vector<Event> locks;  // lock and lease events, in order
  double timestamp = 0;      // the newest status, final or meta event's (kodosumi's MAX)
  int64_t last_seq = -1;
};

StatusEvents read_status_events(Storage &storage, const std::string &fid,
                                const std::string &username) {
  StatusEvents out;
  EventQuery query;
  query.fid = fid;
  query.username = username;
  query.kinds = {"meta", "final", "status", "error", "lock", "lease"};
  query.limit = 1000;
  for (;;) {
    bool more = false;
    std::vector<Event> events;
    try {
      events = storage.read_events(query, &more);
    } catch (const Error &e) {
      if (e.code() != KODO_ERR_NOT_FOUND) throw;  // launched, nothing stored yet
    }
    for (Event &e : events) {
      out.last_seq = e.seq;
      if (e.kind == "lock" || e.kind == "lease") {
        out.locks.push_back(std::move(e));
        continue;
      }
      if (e.kind != "error") out.timestamp = std::max(out.timestamp, e.timestamp);
      if (e.kind == "status")
        out.status = std::move(e);
      else if (e.kind == "final")
        out.final = std::move(e);
      else if (e.kind == "meta")
        out.meta = std::move(e);
      else
        out.error = std::move(e);
    }
    if (!more || events.empty()) return out;
    query.after_seq = events.back().seq;
  }
}

// kodosumi's final for a run that failed without one: the lines of its last error that
// start with "kodosumi.error", after their first ':', as a Text model; none when there are
// no such lines.
std::optional<std::string> error_final(const std::string &error) {
  std::string body;
  std::istringstream lines(error);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.rfind("kodosumi.error", 0) != 0) continue;
    const size_t colon = line.find(':');
    std::string rest = colon == std::string::npos ? std::string() : line.substr(colon + 1);
    const size_t first = rest.find_first_not_of(" \t\r\v\f");
    const size_t last = rest.find_last_not_of(" \t\r\v\f");
    rest = first == std::string::npos ? std::string() : rest.substr(first, last - first + 1);
    if (!body.empty()) body += '\n';
    body += rest;
  }
  if (body.empty()) return std::nullopt;
  rapidjson::StringBuffer buffer;
  JsonWriter w(buffer);
  w.StartObject();
  w.Key("body");
  write_string(w, body);
  w.EndObject();
  return kodosumi_typed("Text", std::string_view(buffer.GetString(), buffer.GetSize()));
}

// How long a status request waits for a launched run's first status row, as kodosumi waits
// for it, before it answers with the launch state.
constexpr double kStatusWaitS = 5;
constexpr double kStatusPollS = 0.1;

}  // namespace

void Api::status(const std::string &fid, HttpResponder &response) {
  ExecutionInfo info;
  if (!known(fid, &info)) throw Error(KODO_ERR_NOT_FOUND, "Execution " + fid + " not found.");
  StatusEvents read = read_status_events(ctx_.storage, fid, info.username);
  // Right after a launch the run may be known before its first status row is stored: never
  // answer an empty status then.
  const double deadline = now_seconds() + kStatusWaitS;
  while (!read.status && now_seconds() < deadline) {
    if (ctx_.notifier)
      ctx_.notifier->wait_for_change(fid, read.last_seq, kStatusPollS);
    else
      std::this_thread::sleep_for(std::chrono::duration<double>(kStatusPollS));
    read = read_status_events(ctx_.storage, fid, info.username);
  }
  std::string status = read.status ? read.status->payload : info.status;
  if (status.empty()) status = "starting";
  rapidjson::Document meta;
  meta.SetObject();
  if (read.meta && !read_dict_payload(read.meta->payload, ctx_.json_max_depth, meta))
    meta.SetObject();
  auto member = [&meta](const char *name) -> const rapidjson::Value * {
    auto it = meta.FindMember(name);
    return it == meta.MemberEnd() ? nullptr : &it->value;
  };
  rapidjson::StringBuffer buffer;
  JsonWriter w(buffer);
  w.StartObject();
  const std::vector<StoredLock> locks = stored_locks(read.locks);
  w.Key("status");
  write_string(w, status_with_locks(status, locks));
  w.Key("timestamp");
  w.Double(read.timestamp > 0 ? read.timestamp
                              : (info.updated_at > 0 ? info.updated_at : now_seconds()));
  // final: the stored text, as kodosumi answers it (its panel parses it).
  w.Key("final");
  std::optional<std::string> final_text;
  if (read.final)
    final_text = read.final->payload;
  else if (status == "error" && read.error)
    final_text = error_final(read.error->payload);
  if (final_text)
    write_string(w, *final_text);
  else
    w.Null();
  w.Key("fid");
  write_string(w, fid);
  // kodosumi's meta fields, from the run's meta event ({"dict": ...} or kodo's older plain
  // object).
  for (const char *field :
       {"summary", "description", "tags", "deprecated", "author", "organization", "version",
        "kodosumi_version", "app_url", "entry_point"}) {
    w.Key(field);
    const rapidjson::Value *value = member(field);
    // kodosumi's runner writes the version under "kodosumi" and its status route reads
    // "kodosumi_version" (always null there); kodo answers the version that was written.
    if (!value && std::string_view(field) == "kodosumi_version") value = member("kodosumi");
    if (value)
      value->Accept(w);
    else
      w.Null();
  }
  w.Key("username");
  const rapidjson::Value *username = member("username");
  if (username && username->IsString())
    username->Accept(w);
  else
    write_string(w, info.username);
  w.Key("locks");
  w.StartArray();
  for (const std::string &lid : open_lock_ids(locks)) write_string(w, lid);
  w.EndArray();
  w.EndObject();
  if (ctx_.status_cache && is_final_status(status))
    ctx_.status_cache->put(fid, info.username, std::string(buffer.GetString(), buffer.GetSize()));
  send_json(response, 200, buffer);
}

void Api::stream(const std::string &fid, const std::string &which, const HttpRequest &request,
                 HttpResponder &response) {
  if (!known(fid, nullptr)) throw Error(KODO_ERR_NOT_FOUND, "Execution " + fid + " not found.");
  EventQuery query;
  query.fid = fid;
  query.limit = 1000;
  if (which == "main") query.kinds = main_kinds();
  if (which == "stdio") query.kinds = stdio_kinds();
  // As kodosumi: /main and /stdio pass events through its formatter unless ?raw is given.
  const bool formatted = which != "stream" && !request.query_param("raw");
  // Resuming: SSE ids are kodosumi's row ids, seq + 1.
  if (const std::string *last = request.header("last-event-id")) {
    char *end = nullptr;
    long long id = std::strtoll(last->c_str(), &end, 10);
    if (!last->empty() && *end == '\0' && id > 0) query.after_seq = id - 1;
  }
  if (!ctx_.hub) throw Error(KODO_ERR_NOT_SUPPORTED, "event streams are not served here");
  // The stream outlives this handler: the hub writes to it without holding a thread.
  auto stream = response.start_async_stream(
      200, "text/event-stream", {{"Cache-Control", "no-cache"}, {"X-Accel-Buffering", "no"}});
  if (!stream) return;
  ctx_.hub->subscribe(fid, std::move(query.kinds), query.after_seq, formatted, std::move(stream));
}

void Api::remove(const std::string &fid, bool kodosumi_route, HttpResponder &response) {
  bool was_running = false;
  if (ctx_.executor.is_active(fid)) {
    was_running = ctx_.executor.cancel(fid, "deleted by request");
    if (!ctx_.executor.wait_inactive(fid, ctx_.delete_wait_s))
      throw Error(KODO_ERR_TIMEOUT, "execution " + fid + " did not stop within " +
                                        std::to_string(ctx_.delete_wait_s) + " s; try again");
    // Its last events are published; archive only once they are stored, or they would
    // make the execution anew after the archive.
    if (ctx_.notifier && !ctx_.notifier->wait_for_final(fid, ctx_.delete_wait_s))
      throw Error(KODO_ERR_TIMEOUT, "the last events of execution " + fid +
                                        " were not stored within " +
                                        std::to_string(ctx_.delete_wait_s) + " s; try again");
  }
  if (!ctx_.storage.archive_execution(fid))
    throw Error(KODO_ERR_NOT_FOUND,
                kodosumi_route ? "Execution " + fid + " not found." : "no execution " + fid);
  forget_launch(fid);
  if (ctx_.status_cache) ctx_.status_cache->forget(fid);
  if (kodosumi_route) {
    response.send(204, kJson, "");  // kodosumi's DELETE answers 204, no body
    return;
  }
  rapidjson::StringBuffer buffer;
  JsonWriter w(buffer);
  w.StartObject();
  w.Key("fid");
  write_string(w, fid);
  w.Key("cancelled");
  w.Bool(was_running);
  w.Key("archived");
  w.Bool(true);
  w.EndObject();
  send_json(response, 200, buffer);
}

}  // namespace kodo
