// api_routes.cpp: the API's route table and its dispatch. Every route is one row, so the
// login check, the operator check and the owner check of an fid run in one place, before
// any handler, for every route there is.
#include "core/api.hpp"

#include <kodo/host/error.hpp>
#include "core/http_parser.hpp"
#include "core/ids.hpp"

#include <sstream>
#include <string>
#include <vector>

namespace kodo {

namespace {

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
      throw Error(KODO_ERR_INVALID_ARGUMENT, "bad percent-encoding in path segment '" + part + "'");
    parts.push_back(decoded);
  }
  return parts;
}

}  // namespace

const std::vector<ApiRoute> &Api::routes() {
  using C = const RouteCall &;
  // Lambdas here share Api's access to its private handlers. One route a line, as a table:
  // method, path, fid at, lid at, open, operators only, handler.
  // clang-format off
  static const std::vector<ApiRoute> table = {
    {"GET", {"health"}, -1, -1, true, false, [](Api &a, C c) { a.health(c.response); }},
    {"GET", {"metrics"}, -1, -1, true, false, [](Api &a, C c) { a.metrics(c.response); }},
    {"GET", {"login"}, -1, -1, true, false, [](Api &a, C c) { a.login(c, false); }},
    {"POST", {"login"}, -1, -1, true, false, [](Api &a, C c) { a.login(c, true); }},
    {"POST", {"api", "login"}, -1, -1, true, false, [](Api &a, C c) { a.login(c, false); }},
    {"GET", {"logout"}, -1, -1, false, false, [](Api &a, C c) { a.logout(c); }},
    {"POST", {"logout"}, -1, -1, false, false, [](Api &a, C c) { a.logout(c); }},
    {"GET", {"api", "v1", "users"}, -1, -1, false, true,
     [](Api &a, C c) { a.list_users(c); }},
    {"POST", {"api", "v1", "users"}, -1, -1, false, true,
     [](Api &a, C c) { a.add_user(c); }},
    {"POST", {"api", "v1", "users", "*"}, -1, -1, false, true,
     [](Api &a, C c) { a.change_user(c); }},
    {"GET", {"api", "v1", "flows"}, -1, -1, false, false,
     [](Api &a, C c) { a.list_flows(c.response); }},
    {"POST", {"api", "v1", "executions"}, -1, -1, false, false,
     [](Api &a, C c) { a.launch(c.request, c.caller, c.response); }},
    {"GET", {"api", "v1", "executions"}, -1, -1, false, false,
     [](Api &a, C c) { a.list_executions(c.request, c.caller, c.response); }},
    {"DELETE", {"api", "v1", "executions", "*"}, 3, -1, false, false,
     [](Api &a, C c) { a.remove(c.parts[3], false, c.response); }},
    {"GET", {"api", "v1", "executions", "*"}, 3, -1, false, false,
     [](Api &a, C c) { a.execution(c.parts[3], c.response); }},
    {"GET", {"api", "v1", "executions", "*", "events"}, 3, -1, false, false,
     [](Api &a, C c) { a.events(c.parts[3], c.request, c.response); }},
    {"POST", {"api", "v1", "executions", "*", "pause"}, 3, -1, false, false,
     [](Api &a, C c) { a.control(c.parts[3], "pause", c.response); }},
    {"POST", {"api", "v1", "executions", "*", "resume"}, 3, -1, false, false,
     [](Api &a, C c) { a.control(c.parts[3], "resume", c.response); }},
    {"POST", {"api", "v1", "executions", "*", "cancel"}, 3, -1, false, false,
     [](Api &a, C c) { a.control(c.parts[3], "cancel", c.response); }},
    {"GET", {"outputs", "status", "*"}, 2, -1, false, false,
     [](Api &a, C c) { a.status(c.parts[2], c.response); }},
    {"GET", {"outputs", "stream", "*"}, 2, -1, false, false,
     [](Api &a, C c) { a.stream(c.parts[2], c.parts[1], c.request, c.response); }},
    {"GET", {"outputs", "main", "*"}, 2, -1, false, false,
     [](Api &a, C c) { a.stream(c.parts[2], c.parts[1], c.request, c.response); }},
    {"GET", {"outputs", "stdio", "*"}, 2, -1, false, false,
     [](Api &a, C c) { a.stream(c.parts[2], c.parts[1], c.request, c.response); }},
    {"POST", {"lock", "*", "*"}, 1, 2, false, false,
     [](Api &a, C c) { a.lock_post(c.parts[1], c.parts[2], c.request, c.response); }},
    {"GET", {"lock", "*", "*"}, 1, 2, false, false,
     [](Api &a, C c) { a.lock_get(c.parts[1], c.parts[2], c.response); }},
    {"DELETE", {"outputs", "*"}, 1, -1, false, false,
     [](Api &a, C c) { a.remove(c.parts[1], true, c.response); }},
  };
  // clang-format on
  return table;
}

void Api::handle(const HttpRequest &request, HttpResponder &response) {
  bool kodosumi_route = false;
  auto send_error = [&](HttpResponder &r, int status, const std::string &message) {
    if (kodosumi_route)
      send_kodosumi_error(r, status, message);
    else
      kodo::send_error(r, status, message);
  };
  try {
    if (ctx_.guard != nullptr) {
      if (auto refusal = ctx_.guard->check(request)) {
        kodo::send_error(response, refusal->status, refusal->message);
        return;
      }
    }
    const auto parts = split_path(request);
    kodosumi_route = !parts.empty() && (parts[0] == "outputs" || parts[0] == "lock");
    auto matches = [&](const ApiRoute &route) {
      if (parts.size() != route.pattern.size()) return false;
      for (size_t i = 0; i < parts.size(); ++i)
        if (std::string_view(route.pattern[i]) != "*" && parts[i] != route.pattern[i]) return false;
      return true;
    };
    // HEAD is answered as GET.
    const std::string method = request.method == "HEAD" ? "GET" : request.method;
    const ApiRoute *found = nullptr;
    std::string allowed;
    for (const ApiRoute &route : routes()) {
      if (!matches(route)) continue;
      if (method == route.method) {
        found = &route;
        break;
      }
      if (allowed.find(route.method) == std::string::npos)
        allowed += (allowed.empty() ? "" : " or ") + std::string(route.method);
    }
    if (!found) {
      if (allowed.empty())
        send_error(response, 404, "no such path: " + request.path);
      else
        send_error(response, 405,
                   "method " + request.method + " is not allowed on " + request.path + " (use " +
                       allowed + ")");
      return;
    }
    std::optional<Caller> caller = caller_of(request);
    if (!caller && !found->open) {
      send_kodosumi_error(response, 401, "Unauthorized: log in first (POST /api/login)");
      return;
    }
    if (found->operator_only && !caller->is_operator) {
      send_kodosumi_error(response, 403, "User not authorized: operators only");
      return;
    }
    if (caller && !caller->fid.empty() && found->fid_at < 0 && !found->open) {
      send_kodosumi_error(response, 403, "a flow's token reaches only its own execution");
      return;
    }
    if (found->fid_at >= 0) {
      const std::string &fid = parts[static_cast<size_t>(found->fid_at)];
      check_fid(fid);
      if (!visible(fid, *caller)) throw Error(KODO_ERR_NOT_FOUND, "no execution " + fid);
    }
    if (found->lid_at >= 0) check_lid(parts[static_cast<size_t>(found->lid_at)]);
    const Caller nobody;
    found->run(*this, RouteCall{request, response, parts, caller ? *caller : nobody});
  } catch (const Error &e) {
    if (!response.responded()) send_error(response, http_status_for(e.code()), e.what());
  }
}

std::optional<Caller> Api::caller_of(const HttpRequest &request) {
  if (!ctx_.auth) {
    Caller everyone;  // no accounts: one user, who manages everything (loopback only)
    everyone.user = ctx_.default_user;
    everyone.name = ctx_.default_user;
    everyone.is_operator = true;
    return everyone;
  }
  return ctx_.auth->authenticate(request);
}

bool Api::visible(const std::string &fid, const Caller &caller) {
  if (!caller.fid.empty()) return caller.fid == fid;
  if (caller.is_operator) return true;
  if (auto stored = ctx_.storage.get_execution(fid)) return stored->username == caller.user;
  std::string owner;
  return launched_here(fid, &owner) && owner == caller.user;
}

}  // namespace kodo
