#include "core/api.hpp"

#include "core/error.hpp"
#include "core/ids.hpp"
#include "core/json_bounded.hpp"
#include "core/log.hpp"

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <sstream>

namespace kodo {

namespace {

using JsonWriter = rapidjson::Writer<rapidjson::StringBuffer>;

const char *const kJson = "application/json";

void send_json(HttpResponder &response, int status, const rapidjson::StringBuffer &body) {
  response.send(status, kJson, std::string_view(body.GetString(), body.GetSize()));
}

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

void write_string(JsonWriter &w, const std::string &s) {
  w.String(s.c_str(), static_cast<rapidjson::SizeType>(s.size()));
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
    throw Error("query parameter '" + std::string(name) + "' must be a whole number from " +
                    std::to_string(min) + " to " + std::to_string(max) + ", got '" + *value + "'",
                KODO_ERR_INVALID_ARGUMENT);
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

// Splits the raw path at '/' and only then decodes each segment, so that an encoded '/'
// inside a fid cannot change which route is taken; the fid check then rejects it.
std::vector<std::string> split_path(const HttpRequest &request) {
  std::vector<std::string> parts;
  std::string part;
  std::istringstream in(request.raw_path);
  while (std::getline(in, part, '/')) {
    if (part.empty()) continue;
    bool ok = true;
    std::string decoded = percent_decode(part, false, ok);
    if (!ok)
      throw Error("bad percent-encoding in path segment '" + part + "'", KODO_ERR_INVALID_ARGUMENT);
    parts.push_back(decoded);
  }
  return parts;
}

}  // namespace

void Api::handle(const HttpRequest &request, HttpResponder &response) {
  try {
    const auto parts = split_path(request);
    const std::string &method = request.method;
    auto is = [&](std::initializer_list<const char *> expected) {
      if (parts.size() != expected.size()) return false;
      size_t i = 0;
      for (const char *e : expected) {
        if (*e != '*' && parts[i] != e) return false;
        ++i;
      }
      return true;
    };
    auto only = [&](const char *allowed) {
      if (method == allowed || (std::string(allowed) == "GET" && method == "HEAD")) return true;
      send_error(
          response, 405,
          "method " + method + " is not allowed on " + request.path + " (use " + allowed + ")");
      return false;
    };
    if (is({"health"})) {
      if (only("GET")) health(response);
    } else if (is({"metrics"})) {
      if (only("GET")) metrics(response);
    } else if (is({"api", "v1", "flows"})) {
      if (only("GET")) list_flows(response);
    } else if (is({"api", "v1", "executions"})) {
      if (method == "POST")
        launch(request, response);
      else if (only("GET"))
        list_executions(request, response);
    } else if (is({"api", "v1", "executions", "*"})) {
      check_fid(parts[3]);
      if (method == "DELETE")
        remove(parts[3], response);
      else if (only("GET"))
        execution(parts[3], response);
    } else if (is({"api", "v1", "executions", "*", "events"})) {
      check_fid(parts[3]);
      if (only("GET")) events(parts[3], request, response);
    } else if (is({"api", "v1", "executions", "*", "*"}) &&
               (parts[4] == "pause" || parts[4] == "resume" || parts[4] == "cancel")) {
      check_fid(parts[3]);
      if (only("POST")) control(parts[3], parts[4], response);
    } else if (is({"outputs", "status", "*"})) {
      check_fid(parts[2]);
      if (only("GET")) status(parts[2], response);
    } else if (is({"outputs", "stream", "*"}) || is({"outputs", "main", "*"}) ||
               is({"outputs", "stdio", "*"})) {
      check_fid(parts[2]);
      if (only("GET")) stream(parts[2], parts[1], request, response);
    } else if (is({"outputs", "*"})) {
      check_fid(parts[1]);
      if (only("DELETE")) remove(parts[1], response);
    } else {
      send_error(response, 404, "no such path: " + request.path);
    }
  } catch (const Error &e) {
    if (!response.responded()) send_error(response, http_status_for(e.code()), e.what());
  }
}

void Api::health(HttpResponder &response) {
  const bool up = ctx_.metrics.storage_up.load() != 0;
  rapidjson::StringBuffer buffer;
  JsonWriter w(buffer);
  w.StartObject();
  w.Key("status");
  w.String(up && !(ctx_.server && ctx_.server->out_of_descriptors()) ? "ok" : "degraded");
  w.Key("storage");
  w.String(up ? "up" : "down");
  w.Key("storage_plugin");
  write_string(w, ctx_.storage.plugin().name());
  w.Key("transport_plugin");
  write_string(w, ctx_.transport_name);
  w.Key("running_executions");
  w.Uint64(ctx_.executor.stats().running);
  w.Key("events_lost");
  w.Uint64(ctx_.metrics.events_lost.load());
  // Running out of file descriptors: new connections and runs fail until some free up.
  const bool descriptors_short = ctx_.server && ctx_.server->out_of_descriptors();
  w.Key("descriptors");
  w.String(descriptors_short ? "exhausted" : "ok");
  if (ctx_.hub) {
    w.Key("stream_viewers");
    w.Uint64(ctx_.hub->viewers());
  }
  w.EndObject();
  send_json(response, up && !descriptors_short ? 200 : 503, buffer);
}

void Api::metrics(HttpResponder &response) {
  const ExecutorStats stats = ctx_.executor.stats();
  Metrics::Gauges gauges;
  gauges.running_executions = static_cast<int64_t>(stats.running);
  gauges.queued_executions = static_cast<int64_t>(stats.queued);
  gauges.executions_launched = stats.launched;
  gauges.events_emitted = stats.events_emitted;
  gauges.events_rejected = stats.events_rejected;
  std::string text = metrics_text(ctx_.metrics, gauges, ctx_.storage, ctx_.transport);
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
                         const Storage &storage, const Transport *transport) {
  std::string text = metrics.render(gauges);
  render_plugin_metrics(text, "storage", storage.metrics());
  if (transport) render_plugin_metrics(text, "transport", transport->metrics());
  return text;
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

void Api::launch(const HttpRequest &request, HttpResponder &response) {
  rapidjson::Document body;
  const JsonRead read = parse_json_bounded(request.body, ctx_.json_max_depth, body);
  if (read == JsonRead::TooDeep)
    throw Error(
        "the request body nests deeper than " + std::to_string(ctx_.json_max_depth) + " levels",
        KODO_ERR_INVALID_ARGUMENT);
  if (read != JsonRead::Ok || !body.IsObject())
    throw Error("the request body must be a JSON object like {\"flow\": NAME, \"inputs\": {...}}",
                KODO_ERR_INVALID_ARGUMENT);
  auto flow = body.FindMember("flow");
  if (flow == body.MemberEnd() || !flow->value.IsString())
    throw Error("the request body needs \"flow\": the name of a registered flow",
                KODO_ERR_INVALID_ARGUMENT);
  std::string inputs = "{}";
  auto given = body.FindMember("inputs");
  if (given != body.MemberEnd()) {
    if (!given->value.IsObject())
      throw Error("\"inputs\" must be a JSON object", KODO_ERR_INVALID_ARGUMENT);
    rapidjson::StringBuffer buffer;
    JsonWriter w(buffer);
    given->value.Accept(w);
    inputs.assign(buffer.GetString(), buffer.GetSize());
  }
  const std::string flow_name(flow->value.GetString(), flow->value.GetStringLength());
  std::string fid;
  if (ctx_.durability) {
    const auto &flows = ctx_.executor.flows();
    if (std::none_of(flows.begin(), flows.end(),
                     [&](const FlowSpec &f) { return f.name == flow_name; }))
      throw Error("unknown flow " + flow_name, KODO_ERR_NOT_FOUND);
    sdk::JobInput job;
    job.fid = new_fid();
    job.username = ctx_.default_user;
    job.app_url = ctx_.app_url;
    job.entry_point = flow_name;
    job.inputs_json = inputs;
    // The fid is the request id too: a retried submit of this launch starts nothing more.
    ctx_.durability->submit(job, job.fid);
    fid = job.fid;
  } else {
    fid = ctx_.executor.launch(flow_name, ctx_.default_user, inputs);
  }
  remember_launch(fid);
  rapidjson::StringBuffer buffer;
  JsonWriter w(buffer);
  w.StartObject();
  w.Key("fid");
  write_string(w, fid);
  w.EndObject();
  response.send(201, kJson, std::string_view(buffer.GetString(), buffer.GetSize()),
                {{"Location", "/api/v1/executions/" + fid}});
}

void Api::list_executions(const HttpRequest &request, HttpResponder &response) {
  const auto offset = static_cast<size_t>(query_int(request, "offset", 0, 0, 1LL << 40));
  const auto limit = static_cast<size_t>(query_int(request, "limit", 50, 1, 1000));
  bool has_more = false;
  auto items = ctx_.storage.list_executions(ctx_.default_user, offset, limit, &has_more);
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

void Api::remember_launch(const std::string &fid) {
  constexpr size_t kRemembered = 10000;
  std::lock_guard<std::mutex> lock(launched_mutex_);
  launched_.insert(fid);
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

bool Api::launched_here(const std::string &fid) {
  std::lock_guard<std::mutex> lock(launched_mutex_);
  return launched_.count(fid) != 0;
}

bool Api::known(const std::string &fid, ExecutionInfo *info) {
  if (auto stored = ctx_.storage.get_execution(fid, ctx_.default_user)) {
    if (info) *info = *stored;
    return true;
  }
  // A durable job waits for a worker; until its first event is stored it is starting.
  const bool waiting_job = ctx_.durability && launched_here(fid);
  if (!waiting_job && !ctx_.executor.is_active(fid)) {
    if (!launched_here(fid)) return false;
    // Ended and published, not yet committed: give the spooler a moment.
    if (ctx_.notifier) ctx_.notifier->wait_for_change(fid, -1, 5.0);
    if (auto stored = ctx_.storage.get_execution(fid, ctx_.default_user)) {
      if (info) *info = *stored;
      return true;
    }
    return false;
  }
  if (info) {
    *info = ExecutionInfo{};
    info->fid = fid;
    info->username = ctx_.default_user;
    info->status = "starting";
  }
  return true;
}

void Api::execution(const std::string &fid, HttpResponder &response) {
  ExecutionInfo info;
  if (!known(fid, &info)) throw Error("no execution " + fid, KODO_ERR_NOT_FOUND);
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
    if (!known(fid, nullptr)) throw Error("no execution " + fid, KODO_ERR_NOT_FOUND);
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
        throw Error("unknown event kind '" + kind + "' in query parameter 'kinds'",
                    KODO_ERR_INVALID_ARGUMENT);
      kinds.push_back(kind);
    }
  return kinds;
}

void Api::events(const std::string &fid, const HttpRequest &request, HttpResponder &response) {
  EventQuery query;
  query.fid = fid;
  query.username = ctx_.default_user;
  query.after_seq = query_int(request, "after", -1, -1, INT64_MAX - 1);
  query.limit = static_cast<size_t>(query_int(request, "limit", 1000, 1, 10000));
  query.kinds = parse_kinds(request);
  if (!known(fid, nullptr)) throw Error("no execution " + fid, KODO_ERR_NOT_FOUND);
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

void Api::status(const std::string &fid, HttpResponder &response) {
  ExecutionInfo info;
  if (!known(fid, &info)) throw Error("no execution " + fid, KODO_ERR_NOT_FOUND);
  EventQuery query;
  query.fid = fid;
  query.username = ctx_.default_user;
  query.kinds = {"meta", "final", "status"};
  query.limit = 10000;
  std::vector<Event> events;
  try {
    events = ctx_.storage.read_events(query);
  } catch (const Error &e) {
    if (e.code() != KODO_ERR_NOT_FOUND) throw;
  }
  rapidjson::Document meta;
  meta.SetObject();
  const Event *final_event = nullptr;
  double status_time = info.updated_at;
  for (const auto &e : events) {
    if (e.kind == "meta") {
      rapidjson::Document parsed;
      if (parse_json_bounded(e.payload, ctx_.json_max_depth, parsed) == JsonRead::Ok &&
          parsed.IsObject())
        meta.CopyFrom(parsed, meta.GetAllocator());
    } else if (e.kind == "final") {
      final_event = &e;
    } else if (e.kind == "status") {
      status_time = e.timestamp;
    }
  }
  rapidjson::StringBuffer buffer;
  JsonWriter w(buffer);
  w.StartObject();
  w.Key("status");
  write_string(w, info.status);
  w.Key("timestamp");
  w.Double(status_time);
  w.Key("final");
  if (!final_event) {
    w.Null();
  } else {
    // A stored payload that cannot be rendered is an error for this field, never a crash:
    // one deep event must not take every later status request (and the host) down.
    rapidjson::Document parsed;
    switch (parse_json_bounded(final_event->payload, ctx_.json_max_depth, parsed)) {
      case JsonRead::Ok: parsed.Accept(w); break;
      case JsonRead::Invalid: write_string(w, final_event->payload); break;
      case JsonRead::TooDeep:
        w.StartObject();
        w.Key("error");
        write_string(w, "the final payload nests deeper than " +
                            std::to_string(ctx_.json_max_depth) +
                            " levels; read it raw from /api/v1/executions/" + fid + "/events");
        w.EndObject();
        break;
    }
  }
  w.Key("fid");
  write_string(w, fid);
  // kodosumi's meta fields, from the run's meta event.
  for (const char *field :
       {"summary", "description", "tags", "deprecated", "author", "organization", "version",
        "kodosumi_version", "app_url", "entry_point"}) {
    w.Key(field);
    auto it = meta.FindMember(field);
    if (it == meta.MemberEnd())
      w.Null();
    else
      it->value.Accept(w);
  }
  w.Key("username");
  write_string(w, info.username);
  w.Key("locks");
  w.StartArray();
  w.EndArray();
  w.EndObject();
  send_json(response, 200, buffer);
}

void Api::stream(const std::string &fid, const std::string &which, const HttpRequest &request,
                 HttpResponder &response) {
  if (!known(fid, nullptr)) throw Error("no execution " + fid, KODO_ERR_NOT_FOUND);
  EventQuery query;
  query.fid = fid;
  query.username = ctx_.default_user;
  query.limit = 1000;
  if (which == "main") query.kinds = main_kinds();
  if (which == "stdio") query.kinds = stdio_kinds();
  // Resuming: SSE ids are kodosumi's row ids, seq + 1.
  if (const std::string *last = request.header("last-event-id")) {
    char *end = nullptr;
    long long id = std::strtoll(last->c_str(), &end, 10);
    if (!last->empty() && *end == '\0' && id > 0) query.after_seq = id - 1;
  }
  if (!ctx_.hub) throw Error("event streams are not served here", KODO_ERR_NOT_SUPPORTED);
  // The stream outlives this handler: the hub writes to it without holding a thread.
  auto stream = response.start_async_stream(
      200, "text/event-stream", {{"Cache-Control", "no-cache"}, {"X-Accel-Buffering", "no"}});
  if (!stream) return;
  ctx_.hub->subscribe(fid, std::move(query.kinds), query.after_seq, std::move(stream));
}

void Api::remove(const std::string &fid, HttpResponder &response) {
  bool was_running = false;
  if (ctx_.executor.is_active(fid)) {
    was_running = ctx_.executor.cancel(fid, "deleted by request");
    if (!ctx_.executor.wait_inactive(fid, ctx_.delete_wait_s))
      throw Error("execution " + fid + " did not stop within " +
                      std::to_string(ctx_.delete_wait_s) + " s; try again",
                  KODO_ERR_TIMEOUT);
    // Its last events are published; archive only once they are stored, or they would
    // make the execution anew after the archive.
    if (ctx_.notifier && !ctx_.notifier->wait_for_final(fid, ctx_.delete_wait_s))
      throw Error("the last events of execution " + fid + " were not stored within " +
                      std::to_string(ctx_.delete_wait_s) + " s; try again",
                  KODO_ERR_TIMEOUT);
  }
  if (!ctx_.storage.archive_execution(fid, ctx_.default_user))
    throw Error("no execution " + fid, KODO_ERR_NOT_FOUND);
  forget_launch(fid);
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
