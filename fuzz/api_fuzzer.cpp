// Fuzzes HTTP request handling end to end: the input is sent as it is over a loopback socket
// to the real HttpServer serving the real Api (every endpoint: /health, /metrics,
// /api/v1/flows, /api/v1/executions[/{fid}[/events]], /outputs/status|stream|main|stdio/{fid},
// DELETE /outputs/{fid}), behind the Host and Origin checks, backed by an in-memory storage
// holding a few finished executions and an executor whose one flow, "hello", is /bin/true.
// Each input gets a fresh server, executor, storage and Api (see Service), so what one input
// deletes or launches does not change what the next one sees, and none of its threads
// outlives it.
// Inputs that name the login routes or carry a token (kodosumi_jwt, KODOSUMI_API_KEY) run
// against accounts (one, "fuzz", in an admin database made once per process), so the login
// forms, the token checks and the per-user checks are fuzzed as well.
// Properties: every request gets an answer (a status line, then the connection closes once
// the client has sent everything), and nothing a sanitizer notices happens on the way.
#include "core/accounts.hpp"
#include "core/api.hpp"
#include "core/auth.hpp"
#include "core/executor.hpp"
#include "core/http_server.hpp"
#include "core/metrics.hpp"
#include "core/storage.hpp"
#include "fuzz/fuzz_check.hpp"
#include "fuzz/loopback_exchange.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

namespace {

using namespace kodo;

// Generous: a 2-core CI machine running other gates can stall a healthy server for seconds.
constexpr int kAnswerTimeoutMs = 60000;

// Where the executor's events go: the input's storage.
class StorageSink : public EventSink {
 public:
  explicit StorageSink(Storage &storage) : storage_(storage) {}
  void publish(const std::vector<Event> &events) override { storage_.append(events); }

 private:
  Storage &storage_;
};

Event event(const std::string &fid, int64_t seq, const std::string &kind,
            const std::string &payload) {
  Event e;
  e.fid = fid;
  e.username = "admin";
  e.seq = seq;
  e.timestamp = 1700000000.0 + static_cast<double>(seq);
  e.kind = kind;
  e.payload = payload;
  return e;
}

// Executions every input finds stored: a finished one with every kind of event, one that
// ended in error, and one of another user.
std::vector<Event> seed_events() {
  const std::string ok = "65a0c0ffee00000000000001";
  const std::string failed = "65a0c0ffee00000000000002";
  std::vector<Event> events = {
      event(ok, 0, "status", "starting"),
      event(ok, 1, "inputs", "{\"name\":\"kodo\"}"),
      event(ok, 2, "meta", "{\"summary\":\"hello\",\"tags\":[\"a\"],\"version\":\"1\"}"),
      event(ok, 3, "status", "running"),
      event(ok, 4, "stdout", "line one\nline two\r\n"),
      event(ok, 5, "stderr", "warning"),
      event(ok, 6, "agent", "{\"step\":1}"),
      event(ok, 7, "final", "{\"result\":42}"),
      event(ok, 8, "status", "finished"),
      event(failed, 0, "status", "starting"),
      event(failed, 1, "meta", "not json"),
      event(failed, 2, "error", "exit code 3"),
      event(failed, 3, "final", "not json either"),
      event(failed, 4, "status", "error"),
  };
  Event other = event("65a0c0ffee00000000000003", 0, "status", "finished");
  other.username = "someone-else";
  events.push_back(other);
  return events;
}

// The accounts inputs about logins and tokens meet; made once (a bcrypt hash is slow).
Auth *accounts_for_logins() {
  static Auth *auth = [] {
    char dir[] = "/tmp/kodo-fuzz-accounts-XXXXXX";
    FUZZ_CHECK(mkdtemp(dir) != nullptr);
    auto store = AccountStore::open(std::string("sqlite:///") + dir + "/admin.db");
    store->create_schema();
    AuthConfig config;
    config.login_failures = 1000000;  // the limit is not what is fuzzed here
    auto *made = new Auth(std::move(store), "fuzz key", config);
    Account account;
    account.id = "0b5e7a3c-1f2d-4e6a-9c8b-7d6e5f4a3b2c";
    account.name = "fuzz";
    account.email = "fuzz@example.com";
    account.password_hash = hash_password("fuzz-pw");
    made->accounts().insert(account);
    return made;
  }();
  return auth;
}

bool about_logins(const uint8_t *data, size_t size) {
  const std::string text(reinterpret_cast<const char *>(data), size);
  for (const char *mark :
       {"/login", "/logout", "/api/v1/users", "kodosumi_jwt", "KODOSUMI_API_KEY"})
    if (text.find(mark) != std::string::npos) return true;
  return false;
}

// Everything one input talks to, made afresh for it and torn down before the next one:
// the hub and the server are stopped (joining their threads), the executor waits for its runs.
// So no thread of an earlier input still works (allocating, or using a storage that is
// gone) while the next runs or while libFuzzer checks for leaks after an input.
struct Service {
  Service(std::shared_ptr<Plugin> plugin, Auth *accounts)
      : storage(std::move(plugin), OptionList{}), auth(accounts) {
    storage.append(seed_events());
    hub.start();
    server.start();
  }
  ~Service() {
    hub.stop();  // ends the streams first, then the server closes their connections
    server.stop();
  }
  Service(const Service &) = delete;
  Service &operator=(const Service &) = delete;
  Service(Service &&) = delete;
  Service &operator=(Service &&) = delete;

  Storage storage;
  Auth *auth;
  StorageSink sink{storage};
  Metrics metrics;
  Executor executor{[] {
                      ExecutorConfig config;
                      config.max_running = 1;
                      config.max_queued = 1;
                      config.kill_grace_s = 0.5;
                      return config;
                    }(),
                    {FlowSpec{"hello", {"/bin/true"}, {}, "", 0, "the fuzz flow"}},
                    sink};
  SseHub hub{storage, executor, SseHubConfig{/*keepalive_s=*/0.05, /*poll_s=*/0.005, 1}};
  // The corpus names the host "x"; other names, and foreign origins, are refused.
  RequestGuard guard{{"x", "localhost"}, "127.0.0.1:0"};
  Api api{[this] {
    ApiContext context{storage,
                       executor,
                       metrics,
                       /*notifier=*/nullptr,
                       "admin",
                       /*delete_wait_s=*/5,
                       "fuzz"};
    context.hub = &hub;
    context.guard = &guard;
    context.auth = auth;
    return context;
  }()};
  HttpServer server{[] {
                      HttpServer::Options options;
                      options.address = "127.0.0.1:0";
                      // Well inside kAnswerTimeoutMs: a 408 is an answer.
                      options.idle_timeout_ms = 10000;
                      options.body_timeout_ms = 10000;
                      options.io_threads = 1;
                      options.handler_threads = 2;
                      return options;
                    }(),
                    [this](const HttpRequest &request, HttpResponder &response) {
                      api.handle(request, response);
                    }};
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const std::shared_ptr<Plugin> plugin =
      Plugin::load(KODO_FUZZ_MEMORY_STORAGE_PLUGIN, "", 0);
  Service service(plugin, about_logins(data, size) ? accounts_for_logins() : nullptr);
  const fuzz::ExchangeResult r =
      fuzz::loopback_exchange(service.server.port(), data, size, kAnswerTimeoutMs);
  if (!r.complete) {
    (void)std::fprintf(stderr, "%s after %.3f s; got so far:\n%s\n", r.error.c_str(), r.waited_s,
                       r.answer.substr(0, 2000).c_str());
    FUZZ_CHECK(!"the server neither finished its answer nor closed the connection");
  }
  // Something that is not a request at all (only blank lines) may be closed unanswered.
  if (!r.answer.empty()) FUZZ_CHECK(r.answer.rfind("HTTP/1.", 0) == 0);
  return 0;
}
