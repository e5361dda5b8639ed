// api.hpp: the HTTP API. kodo's own /api/v1 routes plus kodosumi's /outputs routes, served
// from storage so that whatever backend stores events, every read path works on it.
#pragma once

#include <kodo/host/durability.hpp>
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
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>

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
};

// The /metrics page: the host's figures, then the storage's, the transport's and the
// durability plugin's own.
std::string metrics_text(const Metrics &metrics, const Metrics::Gauges &gauges,
                         const Storage &storage, const Transport *transport,
                         const Durability *durability = nullptr);

// The durability plugin's own figures (none when it reports none).
std::vector<PluginMetric> durability_metrics(const Durability &durability);

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

 private:
  void health(HttpResponder &response);
  std::string health_text(int *http_status);  // the answer now, and 200 or 503
  void metrics(HttpResponder &response);
  void list_flows(HttpResponder &response);
  void launch(const HttpRequest &request, HttpResponder &response);
  // POST /api/v1/executions/{fid}/pause|resume|cancel: 202 when the signal was taken.
  void control(const std::string &fid, const std::string &action, HttpResponder &response);
  void list_executions(const HttpRequest &request, HttpResponder &response);
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
  void remember_launch(const std::string &fid);
  bool launched_here(const std::string &fid);
  void forget_launch(const std::string &fid);

  ApiContext ctx_;
  // Fids launched through this API, newest last: between a run's last publish and its
  // storage commit it is neither active nor stored, yet must not read as unknown.
  std::mutex launched_mutex_;
  std::set<std::string> launched_;
  std::deque<std::string> launched_order_;
  // The last /health answer, served again for a moment (health()).
  std::mutex health_mutex_;
  std::shared_ptr<const std::string> health_body_;
  int health_status_ = 200;
  double health_at_ = 0;
};

}  // namespace kodo
