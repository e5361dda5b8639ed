// api.hpp: the HTTP API. kodo's own /api/v1 routes plus kodosumi's /outputs routes, served
// from storage so that whatever backend stores events, every read path works on it.
#pragma once

#include <kodo/host/durability.hpp>
#include "core/auth.hpp"
#include "core/executor.hpp"
#include "core/http_server.hpp"
#include "core/locks.hpp"
#include "core/metrics.hpp"
#include "core/request_guard.hpp"
#include "core/spooler.hpp"
#include "core/sse_hub.hpp"
#include "core/status_cache.hpp"
#include "core/storage.hpp"
#include "core/transport.hpp"

#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace kodo {

struct ApiContext {
  Storage &storage;
  Executor &executor;
  Metrics &metrics;
  StoreNotifier *notifier = nullptr;  // null when no spooler runs in this process
  std::string default_user = "admin";
  double delete_wait_s = 30;  // how long DELETE waits for a cancelled run's last event
  std::string transport_name;
  const Transport *transport = nullptr;  // for the plugin's own figures on /metrics
  size_t json_max_depth = 64;  // request bodies deeper are refused; stored ones not rendered
  SseHub *hub = nullptr;       // event streams are served from it
  const HttpServer *server = nullptr;   // for /health: descriptors running out
  StatusCache *status_cache = nullptr;  // finished executions' /outputs/status; null: none
  // Set when launches go through a durability plugin (execution-mode temporal): launch
  // submits a job, pause/resume/cancel are its signals, the summary carries its state.
  Durability *durability = nullptr;
  std::string app_url = "";  // into each job's input
  // Refuses foreign Host names and cross-site state changes before any route runs; null
  // accepts every request (tests of the routes alone).
  const RequestGuard *guard = nullptr;
  // Set when requests must carry a login token; null: every request acts as default_user,
  // an operator (loopback only, as before accounts existed).
  Auth *auth = nullptr;
};

class Api;

// What a route's handler gets: the request, where to answer, the path's segments, who asks.
struct RouteCall {
  const HttpRequest &request;
  HttpResponder &response;
  const std::vector<std::string> &parts;
  const Caller &caller;
};

// One route of the API. Every wildcard segment is the route's fid, its lock id, or (on an
// operator's route) an account name: handle() checks the fid and answers 404 for another
// user's execution exactly as for an unknown one, before the handler runs.
struct ApiRoute {
  const char *method;
  std::vector<const char *> pattern;  // path segments; "*" matches any one
  int fid_at = -1;                    // which segment is the fid
  int lid_at = -1;                    // which segment is a lock id
  bool open = false;                  // served without a login (health, login itself)
  bool operator_only = false;
  void (*run)(Api &api, const RouteCall &call) = nullptr;
};

// The /metrics page: the host's figures, then the storage's, the transport's and the
// durability plugin's own.
std::string metrics_text(const Metrics &metrics, const Metrics::Gauges &gauges,
                         const Storage &storage, const Transport *transport,
                         const Durability *durability = nullptr);

// The durability plugin's own figures (none when it reports none).
std::vector<PluginMetric> durability_metrics(const Durability &durability);

// kodo's error body, {"error": "..."}, on kodo's own routes.
void send_error(HttpResponder &response, int status, const std::string &message);
// The HTTP status for an error code: 400, 404, 501, 503 or 500.
int http_status_for(kodo_status code);

// kodosumi's error body (litestar's), {"status_code": N, "detail": ...}: on kodosumi's
// routes, and for refused logins as kodosumi refuses them.
void send_kodosumi_error(HttpResponder &response, int status, const std::string &message);

// Throws kodo::Error(KODO_ERR_INVALID_ARGUMENT) unless `lid` looks like a lock id.
void check_lid(const std::string &lid);

// Thread-safe: handle() runs on many connection threads at once.
class Api {
 public:
  explicit Api(ApiContext context) : ctx_(std::move(context)) {}
  void handle(const HttpRequest &request, HttpResponder &response);
  // HttpServer's quick handler: /health, and /outputs/status of a finished execution whose
  // answer is cached, answered without blocking. False: handle() must answer.
  bool handle_quick(const HttpRequest &request, HttpResponder &response);
  // Every route handle() serves (tests walk it, so that no route escapes the owner check).
  static const std::vector<ApiRoute> &routes();

 private:
  // The caller of a request (nullopt: no valid token while accounts are on).
  std::optional<Caller> caller_of(const HttpRequest &request);
  // Whether `caller` may see execution `fid`: its owner, an operator; a flow's token only its own.
  bool visible(const std::string &fid, const Caller &caller);
  // Login, logout and the operators' account routes (api_login.cpp).
  void login(const RouteCall &call, bool form);
  void logout(const RouteCall &call);
  void list_users(const RouteCall &call);
  void add_user(const RouteCall &call);
  void change_user(const RouteCall &call);
  void health(HttpResponder &response);
  std::string health_text(int *http_status);  // the answer now, and 200 or 503
  void metrics(HttpResponder &response);
  void list_flows(HttpResponder &response);
  void launch(const HttpRequest &request, const Caller &caller, HttpResponder &response);
  // POST /api/v1/executions/{fid}/pause|resume|cancel: 202 when the signal was taken.
  void control(const std::string &fid, const std::string &action, HttpResponder &response);
  void list_executions(const HttpRequest &request, const Caller &caller, HttpResponder &response);
  void execution(const std::string &fid, HttpResponder &response);
  void events(const std::string &fid, const HttpRequest &request, HttpResponder &response);
  void status(const std::string &fid, HttpResponder &response);
  void stream(const std::string &fid, const std::string &which, const HttpRequest &request,
              HttpResponder &response);
  // kodosumi_route: DELETE /outputs/{fid}, answered as kodosumi does (204, no body).
  void remove(const std::string &fid, bool kodosumi_route, HttpResponder &response);
  // kodosumi's lock routes (api_locks.cpp).
  void lock_get(const std::string &fid, const std::string &lid, HttpResponder &response);
  void lock_post(const std::string &fid, const std::string &lid, const HttpRequest &request,
                 HttpResponder &response);
  std::optional<StoredLock> find_lock(const std::string &fid, const std::string &lid,
                                      ExecutionInfo *info);
  // The execution's summary, or one made up for a run that is launched but not yet stored.
  bool known(const std::string &fid, ExecutionInfo *info);
  void remember_launch(const std::string &fid, const std::string &owner);
  bool launched_here(const std::string &fid, std::string *owner = nullptr);
  void forget_launch(const std::string &fid);

  ApiContext ctx_;
  // Fids launched through this API, newest last: between a run's last publish and its
  // storage commit it is neither active nor stored, yet must not read as unknown.
  std::mutex launched_mutex_;
  std::map<std::string, std::string> launched_;  // fid -> the user who launched it
  std::deque<std::string> launched_order_;
  // The last /health answer, served again for a moment (health()).
  std::mutex health_mutex_;
  std::shared_ptr<const std::string> health_body_;
  int health_status_ = 200;
  double health_at_ = 0;
};

}  // namespace kodo
