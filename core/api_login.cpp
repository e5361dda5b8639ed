// api_login.cpp: kodosumi's login routes, answered as kodosumi answers them (GET /login,
// POST /login as a form, POST /api/login as JSON, GET|POST /logout), and the operators'
// account routes under /api/v1/users. No answer, log line or error here carries a password,
// a hash or a token other than the one a successful login hands out.
#include "core/api.hpp"
#include "core/api_json.hpp"

#include <kodo/host/error.hpp>
#include <kodo/host/log.hpp>
#include "core/json_bounded.hpp"

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <cmath>

namespace kodo {

namespace {

constexpr const char *kCookie = "kodosumi_jwt";
constexpr const char *kRefused = "Invalid name or password";

// The cookie holds a token a script must never read; `Secure` is added once the request
// arrived over TLS (HttpRequest::tls).
std::string login_cookie(const HttpRequest &request, const std::string &token) {
  return std::string(kCookie) + "=" + token + "; HttpOnly; SameSite=Lax; Path=/" +
         (request.tls ? "; Secure" : "");
}

std::string clear_cookie(const HttpRequest &request) {
  return std::string(kCookie) +
         "=\"\"; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; HttpOnly; SameSite=Lax; "
         "Path=/" +
         (request.tls ? "; Secure" : "");
}

// A redirect target after login or logout: a path on this host only, so a login link
// cannot send a user elsewhere (kodosumi follows any URL).
bool local_path(const std::string &target) {
  return !target.empty() && target[0] == '/' && (target.size() == 1 || target[1] != '/') &&
         target.find('\\') == std::string::npos && target.find('\r') == std::string::npos &&
         target.find('\n') == std::string::npos;
}

// Form fields of an application/x-www-form-urlencoded body.
std::optional<std::string> form_field(const std::string &body, const std::string &name) {
  size_t at = 0;
  while (at <= body.size()) {
    size_t end = body.find('&', at);
    if (end == std::string::npos) end = body.size();
    const std::string pair = body.substr(at, end - at);
    const size_t eq = pair.find('=');
    bool ok = true;
    const std::string key = percent_decode(pair.substr(0, eq), true, ok);
    if (ok && key == name) {
      std::string value =
          eq == std::string::npos ? "" : percent_decode(pair.substr(eq + 1), true, ok);
      if (!ok) throw Error(KODO_ERR_INVALID_ARGUMENT, "form field '" + name + "' is badly encoded");
      return value;
    }
    at = end + 1;
  }
  return std::nullopt;
}

std::optional<std::string> json_string(const rapidjson::Document &doc, const char *name) {
  auto it = doc.FindMember(name);
  if (it == doc.MemberEnd() || it->value.IsNull()) return std::nullopt;
  if (!it->value.IsString())
    throw Error(KODO_ERR_INVALID_ARGUMENT, std::string("\"") + name + "\" must be a string");
  return std::string(it->value.GetString(), it->value.GetStringLength());
}

std::optional<bool> json_bool(const rapidjson::Document &doc, const char *name) {
  auto it = doc.FindMember(name);
  if (it == doc.MemberEnd() || it->value.IsNull()) return std::nullopt;
  if (!it->value.IsBool())
    throw Error(KODO_ERR_INVALID_ARGUMENT, std::string("\"") + name + "\" must be true or false");
  return it->value.GetBool();
}

rapidjson::Document json_body(const HttpRequest &request, size_t max_depth) {
  rapidjson::Document doc;
  if (parse_json_bounded(request.body, max_depth, doc) != JsonRead::Ok || !doc.IsObject())
    throw Error(KODO_ERR_INVALID_ARGUMENT, "the request body must be a JSON object");
  return doc;
}

void write_account(JsonWriter &w, const Account &a) {
  w.StartObject();
  w.Key("id");
  write_string(w, a.id);
  w.Key("name");
  write_string(w, a.name);
  w.Key("email");
  write_string(w, a.email);
  w.Key("active");
  w.Bool(a.active);
  w.Key("operator");
  w.Bool(a.is_operator);
  w.EndObject();
}

void send_account(HttpResponder &response, int status, const Account &a) {
  rapidjson::StringBuffer buffer;
  JsonWriter w(buffer);
  write_account(w, a);
  response.send(status, "application/json", std::string_view(buffer.GetString(), buffer.GetSize()));
}

// Names become log lines and answers: printable, bounded.
void check_account_name(const std::string &name) {
  if (name.empty() || name.size() > 128 ||
      std::any_of(name.begin(), name.end(), [](char c) { return c < 0x20 || c == 0x7f; }))
    throw Error(KODO_ERR_INVALID_ARGUMENT,
                "an account name is 1 to 128 characters, no control characters");
}

}  // namespace

void Api::login(const RouteCall &call, bool form) {
  if (!ctx_.auth) throw Error(KODO_ERR_NOT_FOUND, "no such path: " + call.request.path);
  const HttpRequest &request = call.request;
  std::optional<std::string> name, password, redirect;
  if (request.method == "GET") {
    name = request.query_param("name");
    password = request.query_param("password");
  } else if (form) {
    name = form_field(request.body, "name");
    password = form_field(request.body, "password");
    redirect = form_field(request.body, "redirect");
  } else {
    const rapidjson::Document doc = json_body(request, ctx_.json_max_depth);
    name = json_string(doc, "name");
    password = json_string(doc, "password");
    redirect = json_string(doc, "redirect");
  }
  if (!name || !password) {
    send_kodosumi_error(call.response, 400, "Validation failed: name and password are required");
    return;
  }
  if (redirect && !redirect->empty() && !local_path(*redirect))
    throw Error(KODO_ERR_INVALID_ARGUMENT, "redirect must be a path on this host");
  Account account;
  double retry_after = 0;
  switch (ctx_.auth->login(*name, *password, request.peer, &account, &retry_after)) {
    case LoginResult::RateLimited:
      log_warn("login: too many failures from " + request.peer + " or for that account");
      call.response.send(
          429, "application/json",
          R"({"status_code":429,"detail":"Too many failed logins; try later"})",
          {{"Retry-After", std::to_string(static_cast<int>(std::ceil(retry_after)))}});
      return;
    case LoginResult::Refused: send_kodosumi_error(call.response, 401, kRefused); return;
    case LoginResult::Ok: break;
  }
  log_info("role " + account.name + " (" + account.id + ") logged in");
  const std::string token = ctx_.auth->token_for(account);
  HttpHeaders headers = {{"Set-Cookie", login_cookie(request, token)}};
  if (redirect && !redirect->empty()) {
    headers.emplace_back("Location", *redirect);
    call.response.send(302, "text/plain", "", headers);
    return;
  }
  rapidjson::StringBuffer buffer;
  JsonWriter w(buffer);
  w.StartObject();
  w.Key("name");
  write_string(w, account.name);
  w.Key("id");
  write_string(w, account.id);
  w.Key("KODOSUMI_API_KEY");
  write_string(w, token);
  w.EndObject();
  call.response.send(200, "application/json",
                     std::string_view(buffer.GetString(), buffer.GetSize()), headers);
}

void Api::logout(const RouteCall &call) {
  if (!ctx_.auth) throw Error(KODO_ERR_NOT_FOUND, "no such path: " + call.request.path);
  HttpHeaders headers = {{"Set-Cookie", clear_cookie(call.request)}};
  auto redirect = call.request.query_param("redirect");
  if (redirect && local_path(*redirect)) {
    headers.emplace_back("Location", *redirect);
    call.response.send(302, "text/plain", "", headers);
    return;
  }
  call.response.send(200, "text/plain", "", headers);
}

void Api::list_users(const RouteCall &call) {
  if (!ctx_.auth) throw Error(KODO_ERR_NOT_FOUND, "no accounts: the host runs without them");
  rapidjson::StringBuffer buffer;
  JsonWriter w(buffer);
  w.StartArray();
  for (const Account &a : ctx_.auth->accounts().list()) write_account(w, a);
  w.EndArray();
  call.response.send(200, "application/json",
                     std::string_view(buffer.GetString(), buffer.GetSize()));
}

void Api::add_user(const RouteCall &call) {
  if (!ctx_.auth) throw Error(KODO_ERR_NOT_FOUND, "no accounts: the host runs without them");
  const rapidjson::Document doc = json_body(call.request, ctx_.json_max_depth);
  Account a;
  a.name = json_string(doc, "name").value_or("");
  a.email = json_string(doc, "email").value_or("");
  const std::string password = json_string(doc, "password").value_or("");
  check_account_name(a.name);
  if (a.email.find('@') == std::string::npos)
    throw Error(KODO_ERR_INVALID_ARGUMENT, "\"email\" must be an email address");
  if (password.empty()) throw Error(KODO_ERR_INVALID_ARGUMENT, "\"password\" is required");
  a.is_operator = json_bool(doc, "operator").value_or(false);
  a.id = new_account_id();
  a.password_hash = hash_password(password);
  ctx_.auth->accounts().insert(a);
  log_info("account " + a.name + " (" + a.id + ") added by " + call.caller.name);
  send_account(call.response, 201, a);
}

void Api::change_user(const RouteCall &call) {
  if (!ctx_.auth) throw Error(KODO_ERR_NOT_FOUND, "no accounts: the host runs without them");
  auto found = ctx_.auth->accounts().by_name(call.parts[3]);
  if (!found) throw Error(KODO_ERR_NOT_FOUND, "no account " + call.parts[3]);
  const rapidjson::Document doc = json_body(call.request, ctx_.json_max_depth);
  Account a = *found;
  if (auto password = json_string(doc, "password")) {
    if (password->empty()) throw Error(KODO_ERR_INVALID_ARGUMENT, "\"password\" is empty");
    a.password_hash = hash_password(*password);
  }
  if (auto email = json_string(doc, "email")) a.email = *email;
  if (auto active = json_bool(doc, "active")) a.active = *active;
  if (auto is_operator = json_bool(doc, "operator")) a.is_operator = *is_operator;
  ctx_.auth->accounts().update(a);
  ctx_.auth->forget_account(a.id);  // a disabled account is refused from the next request on
  log_info("account " + a.name + " (" + a.id + ") changed by " + call.caller.name);
  send_account(call.response, 200, a);
}

}  // namespace kodo
