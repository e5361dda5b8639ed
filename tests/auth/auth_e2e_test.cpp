// Logins, isolation and safe defaults against the real kodo-host: every route of the API's
// table (Api::routes(), so a new route cannot be left out) answers another user's execution
// exactly as an unknown one.
#include "core/api.hpp"
#include "core/auth_token.hpp"
#include "host_process.hpp"
#include "service_process.hpp"

#include <gtest/gtest.h>
#include <rapidjson/document.h>
#include <sys/stat.h>

#include <fstream>
#include <regex>

namespace {

using kodo::e2e::HostProcess;
using kodo::e2e::HttpResult;

std::string json_field(const std::string &body, const char *name) {
  rapidjson::Document doc;
  doc.Parse(body.c_str());
  if (!doc.IsObject() || !doc.HasMember(name) || !doc[name].IsString()) return "";
  return doc[name].GetString();
}

std::string auth_header(const std::string &token) {
  return "KODOSUMI_API_KEY: " + token + "\r\n";
}

class AuthHost : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string script = dir_.path() + "/token_flow.sh";
    std::ofstream(script) << "#!/bin/sh\nprintf '%s' \"$KODO_JWT\" > \"$TOKEN_FILE\"\n";
    chmod(script.c_str(), 0755);
    token_file_ = dir_.path() + "/flow.token";
    ASSERT_TRUE(start({}));
    admin_ = login("admin", "admin-pw");
    ASSERT_FALSE(admin_.empty());
    alice_id_ = add_user("alice", "alice-pw");
    add_user("bob", "bob-pw");
    alice_ = login("alice", "alice-pw");
    bob_ = login("bob", "bob-pw");
    ASSERT_FALSE(alice_.empty());
    ASSERT_FALSE(bob_.empty());
  }

  bool start(const std::vector<std::string> &more) {
    std::vector<std::string> args = {"--plugin-dir",
                                     KODO_PLUGIN_DIR,
                                     "--auth",
                                     "on",
                                     "--admin-database",
                                     "sqlite:///" + dir_.path() + "/admin.db",
                                     "--secret-key-file",
                                     dir_.path() + "/secret.key",
                                     "--admin-password",
                                     "admin-pw",
                                     "--exec-dir",
                                     dir_.path() + "/execution",
                                     "--login-failures",
                                     "1000",
                                     "--flow",
                                     std::string("hello=") + HELLO_FLOW,
                                     "--flow",
                                     "tok=" + dir_.path() + "/token_flow.sh",
                                     "--flow-env",
                                     "tok=TOKEN_FILE=" + token_file_};
    args.insert(args.end(), more.begin(), more.end());
    return host_.start(args);
  }

  std::string login(const std::string &name, const std::string &password) {
    HttpResult r = host_.request("POST", "/api/login",
                                 R"({"name":")" + name + R"(","password":")" + password + "\"}");
    return r.status == 200 ? json_field(r.body, "KODOSUMI_API_KEY") : "";
  }

  std::string add_user(const std::string &name, const std::string &password) {
    HttpResult r = as(admin_, "POST", "/api/v1/users",
                      R"({"name":")" + name + R"(","email":")" + name +
                          R"(@example.com","password":")" + password + "\"}");
    EXPECT_EQ(r.status, 201) << r.body;
    return json_field(r.body, "id");
  }

  HttpResult as(const std::string &token, const std::string &method, const std::string &target,
                const std::string &body = "") {
    return host_.request(method, target, body, 30, "", auth_header(token));
  }

  // Launches `flow` as `token`'s user and waits until it ends.
  std::string launch(const std::string &token, const std::string &flow = "hello") {
    HttpResult r = as(token, "POST", "/api/v1/executions", R"({"flow":")" + flow + "\"}");
    EXPECT_EQ(r.status, 201) << r.body;
    const std::string fid = json_field(r.body, "fid");
    EXPECT_TRUE(kodo::e2e::eventually(
        [&] {
          const std::string s = as(token, "GET", "/api/v1/executions/" + fid).body;
          return s.find("\"finished\"") != std::string::npos ||
                 s.find("\"error\"") != std::string::npos;
        },
        60));
    return fid;
  }

  kodo::testing::TempDir dir_{"kodo-auth-e2e"};
  HostProcess host_;
  std::string token_file_;
  std::string admin_, alice_, bob_, alice_id_;
};

std::string path_of(const kodo::ApiRoute &route, const std::string &fid) {
  std::string path;
  for (size_t i = 0; i < route.pattern.size(); ++i) {
    path += "/";
    if (static_cast<int>(i) == route.fid_at)
      path += fid;
    else if (static_cast<int>(i) == route.lid_at)
      path += "0b5e7a3c-1f2d-4e6a-9c8b-7d6e5f4a3b2c";
    else
      path += route.pattern[i];
  }
  return path;
}

TEST(ApiRoutes, EveryWildcardIsCheckedOrOperatorsOnly) {
  for (const kodo::ApiRoute &route : kodo::Api::routes()) {
    for (size_t i = 0; i < route.pattern.size(); ++i) {
      if (std::string(route.pattern[i]) != "*") continue;
      const bool checked = static_cast<int>(i) == route.fid_at ||
                           static_cast<int>(i) == route.lid_at || route.operator_only;
      EXPECT_TRUE(checked) << route.method << " " << path_of(route, "{fid}") << ": segment " << i;
    }
  }
}

TEST_F(AuthHost, LoginInAllThreeFormsAndLogout) {
  HttpResult get = host_.request("GET", "/login?name=alice&password=alice-pw");
  ASSERT_EQ(get.status, 200) << get.body;
  EXPECT_EQ(json_field(get.body, "name"), "alice");
  EXPECT_EQ(json_field(get.body, "id"), alice_id_);
  const std::string token = json_field(get.body, "KODOSUMI_API_KEY");
  EXPECT_NE(
      get.headers.find("Set-Cookie: kodosumi_jwt=" + token + "; HttpOnly; SameSite=Lax; Path=/"),
      std::string::npos)
      << get.headers;

  HttpResult form = host_.request("POST", "/login", "name=alice&password=alice-pw&redirect=%2Fhome",
                                  30, "", "Content-Type: application/x-www-form-urlencoded\r\n");
  EXPECT_EQ(form.status, 302) << form.body;
  EXPECT_NE(form.headers.find("Location: /home"), std::string::npos);
  EXPECT_NE(form.headers.find("Set-Cookie: kodosumi_jwt="), std::string::npos);
  // No redirect elsewhere.
  EXPECT_EQ(host_
                .request("POST", "/login", "name=alice&password=alice-pw&redirect=https://evil", 30,
                         "", "Content-Type: application/x-www-form-urlencoded\r\n")
                .status,
            400);

  HttpResult json =
      host_.request("POST", "/api/login", R"({"name":"alice","password":"alice-pw"})");
  EXPECT_EQ(json.status, 200);
  EXPECT_EQ(json_field(json.body, "id"), alice_id_);

  HttpResult wrong = host_.request("GET", "/login?name=alice&password=nope");
  EXPECT_EQ(wrong.status, 401);
  EXPECT_EQ(wrong.body, R"({"status_code":401,"detail":"Invalid name or password"})");
  EXPECT_EQ(host_.request("GET", "/login?name=nobody&password=x").body, wrong.body);

  // The cookie is accepted as the header is.
  EXPECT_EQ(
      host_.request("GET", "/api/v1/flows", "", 30, "", "Cookie: kodosumi_jwt=" + token + "\r\n")
          .status,
      200);
  HttpResult out = as(token, "GET", "/logout");
  EXPECT_EQ(out.status, 200);
  EXPECT_NE(out.headers.find("Set-Cookie: kodosumi_jwt=\"\"; Expires=Thu, 01 Jan 1970"),
            std::string::npos);
  EXPECT_EQ(as(token, "POST", "/logout?redirect=/bye").status, 302);
  EXPECT_EQ(host_.request("POST", "/logout").status, 401);
}

TEST_F(AuthHost, BadTokensAreRefused) {
  EXPECT_EQ(host_.request("GET", "/api/v1/flows").status, 401);
  const std::string key = kodo::e2e::read_file(dir_.path() + "/secret.key");
  kodo::TokenClaims claims;
  claims.sub = alice_id_;
  claims.iat = kodo::unix_now() - 100;
  claims.exp = claims.iat + 50;  // expired
  const std::string expired = kodo::sign_token(key.substr(0, key.size() - 1), claims);
  claims.exp = claims.iat + 1000;
  const std::string wrong_key = kodo::sign_token("top secret -- change this in production", claims);
  const size_t dot = alice_.find('.');
  const std::string none = kodo::base64url_encode(R"({"alg":"none"})") +
                           alice_.substr(dot, alice_.rfind('.') - dot) + ".";
  for (const std::string &bad : {expired, wrong_key, none, alice_ + "x", std::string("junk")}) {
    HttpResult r = as(bad, "GET", "/api/v1/executions");
    EXPECT_EQ(r.status, 401) << bad;
    EXPECT_EQ(r.body.find(bad), std::string::npos);  // never echoed
  }
  EXPECT_EQ(as(alice_, "GET", "/api/v1/executions").status, 200);
}

TEST_F(AuthHost, AnotherUsersExecutionIsUnknownOnEveryRoute) {
  const std::string fid = launch(alice_);
  const std::string unknown = "0123456789abcdef01234567";
  auto same_as_unknown = [&](const kodo::ApiRoute &route) {
    HttpResult theirs = as(bob_, route.method, path_of(route, fid), "{}");
    HttpResult none = as(bob_, route.method, path_of(route, unknown), "{}");
    EXPECT_EQ(theirs.status, 404) << route.method << " " << path_of(route, fid);
    EXPECT_EQ(std::regex_replace(theirs.body, std::regex(fid), "FID"),
              std::regex_replace(none.body, std::regex(unknown), "FID"))
        << route.method << " " << path_of(route, fid);
  };
  size_t checked = 0;
  for (const kodo::ApiRoute &route : kodo::Api::routes())
    if (route.fid_at >= 0) {
      same_as_unknown(route);
      ++checked;
    }
  EXPECT_GE(checked, 13u);
  // Nothing of it changed: alice and the operator still see it, finished.
  EXPECT_EQ(as(alice_, "GET", "/api/v1/executions/" + fid).status, 200);
  EXPECT_EQ(as(alice_, "GET", "/outputs/status/" + fid).status, 200);
  EXPECT_EQ(as(admin_, "GET", "/outputs/status/" + fid).status, 200);
  EXPECT_EQ(as(admin_, "GET", "/api/v1/executions/" + fid + "/events").status, 200);
  // Listings: each user their own; bob naming alice gets his own; an operator names anyone.
  EXPECT_NE(as(alice_, "GET", "/api/v1/executions").body.find(fid), std::string::npos);
  EXPECT_EQ(as(bob_, "GET", "/api/v1/executions").body.find(fid), std::string::npos);
  EXPECT_EQ(as(bob_, "GET", "/api/v1/executions?username=" + alice_id_).body.find(fid),
            std::string::npos);
  EXPECT_NE(as(admin_, "GET", "/api/v1/executions?username=" + alice_id_).body.find(fid),
            std::string::npos);
  // Stored under the role's UUID, as kodosumi keeps them.
  struct stat st {};
  EXPECT_EQ(stat((dir_.path() + "/execution/" + alice_id_ + "/" + fid).c_str(), &st), 0);
  // An operator deletes it.
  EXPECT_EQ(as(admin_, "DELETE", "/outputs/" + fid).status, 204);
}

// /outputs/status of a finished execution is answered on an I/O thread from what was read
// lately (the answer and its owner, the caller's account). That must never widen who sees
// it: asked again and again by its owner and an operator, it stays 404 to another user and
// 401 without a token or with a bad one, and its owner, disabled, gets 401 at once.
TEST_F(AuthHost, CachedStatusAnswersKeepTheOwnerCheck) {
  const std::string fid = launch(alice_);
  const std::string path = "/outputs/status/" + fid;
  for (int i = 0; i < 3; ++i) {  // the first read keeps it; the others are answered from it
    EXPECT_EQ(as(alice_, "GET", path).status, 200) << i;
    EXPECT_EQ(as(admin_, "GET", path).status, 200) << i;
    HttpResult theirs = as(bob_, "GET", path);
    EXPECT_EQ(theirs.status, 404) << i;
    EXPECT_EQ(theirs.body.find("finished"), std::string::npos) << theirs.body;
    EXPECT_EQ(host_.request("GET", path).status, 401) << i;
    EXPECT_EQ(as(alice_ + "x", "GET", path).status, 401) << i;
  }
  EXPECT_EQ(as(admin_, "POST", "/api/v1/users/alice", R"({"active":false})").status, 200);
  EXPECT_EQ(as(alice_, "GET", path).status, 401);
  EXPECT_EQ(as(admin_, "GET", path).status, 200);
}

TEST_F(AuthHost, UnauthenticatedRequestsAre401AndAccountRoutesOperatorsOnly) {
  for (const kodo::ApiRoute &route : kodo::Api::routes()) {
    if (route.open) continue;
    HttpResult r = host_.request(route.method, path_of(route, "0123456789abcdef01234567"), "{}");
    EXPECT_EQ(r.status, 401) << route.method << " " << path_of(route, "F");
    if (route.operator_only) {
      EXPECT_EQ(as(alice_, route.method, path_of(route, "alice"), "{}").status, 403);
    }
  }
  HttpResult list = as(admin_, "GET", "/api/v1/users");
  EXPECT_EQ(list.status, 200);
  EXPECT_NE(list.body.find("\"alice\""), std::string::npos);
  EXPECT_EQ(list.body.find("$2b$"), std::string::npos);  // no hashes
  // Disabled, alice can no longer log in or use her token.
  EXPECT_EQ(as(admin_, "POST", "/api/v1/users/alice", R"({"active":false})").status, 200);
  EXPECT_EQ(login("alice", "alice-pw"), "");
  EXPECT_EQ(as(alice_, "GET", "/api/v1/flows").status, 401);
}

TEST_F(AuthHost, FlowGetsTheLaunchingUsersScopedToken) {
  const std::string other = launch(alice_);
  const std::string fid = launch(alice_, "tok");
  const std::string token = kodo::e2e::read_file(token_file_);
  ASSERT_FALSE(token.empty());
  const std::string key = kodo::e2e::read_file(dir_.path() + "/secret.key");
  auto claims = kodo::verify_token(key.substr(0, key.size() - 1), token, kodo::unix_now());
  ASSERT_TRUE(claims);
  EXPECT_EQ(claims->sub, alice_id_);
  EXPECT_EQ(claims->fid, fid);
  EXPECT_GT(claims->exp, kodo::unix_now());
  EXPECT_EQ(as(token, "GET", "/outputs/status/" + fid).status, 200);
  EXPECT_EQ(as(token, "GET", "/outputs/status/" + other).status, 404);  // alice's, not its own
  EXPECT_EQ(as(token, "GET", "/api/v1/executions").status, 403);
  EXPECT_EQ(as(token, "POST", "/api/v1/executions", R"({"flow":"hello"})").status, 403);
}

TEST_F(AuthHost, SecretsAppearNowhere) {
  launch(alice_);
  host_.request("GET", "/login?name=alice&password=wrong-pw-123");
  as("forged.token.value", "GET", "/api/v1/flows");
  const std::string key = kodo::e2e::read_file(dir_.path() + "/secret.key");
  const std::string metrics = as(admin_, "GET", "/metrics").body;
  const std::string log = host_.log();
  for (const std::string &secret :
       {std::string("admin-pw"), std::string("alice-pw"), std::string("wrong-pw-123"),
        key.substr(0, key.size() - 1), alice_, admin_, std::string("forged.token.value")}) {
    EXPECT_EQ(log.find(secret), std::string::npos) << secret;
    EXPECT_EQ(metrics.find(secret), std::string::npos) << secret;
  }
  const auto described = kodo::e2e::run_command(
      {KODO_HOST_BINARY, "--plugin-dir", KODO_PLUGIN_DIR, "plugins", "describe", "sqlite"},
      {"KODO_SECRET_KEY=describe-must-not-show-this", "KODO_ADMIN_PASSWORD=nor-this"});
  EXPECT_EQ(described.exit_code, 0) << described.output;
  EXPECT_EQ(described.output.find("describe-must-not-show-this"), std::string::npos);
  EXPECT_EQ(described.output.find("nor-this"), std::string::npos);
}

TEST(AuthLimits, BruteForceIsRateLimited) {
  kodo::testing::TempDir dir("kodo-auth-limit");
  HostProcess host;
  ASSERT_TRUE(host.start({"--plugin-dir", KODO_PLUGIN_DIR, "--auth", "on", "--admin-database",
                          "sqlite:///" + dir.path() + "/admin.db", "--secret-key-file",
                          dir.path() + "/secret.key", "--admin-password", "right", "--exec-dir",
                          dir.path() + "/execution", "--login-failures", "3"}));
  for (int i = 0; i < 3; ++i)
    EXPECT_EQ(host.request("GET", "/login?name=admin&password=guess" + std::to_string(i)).status,
              401);
  HttpResult blocked = host.request("GET", "/login?name=admin&password=right");
  EXPECT_EQ(blocked.status, 429);
  EXPECT_NE(blocked.headers.find("Retry-After: "), std::string::npos);
}

TEST(AuthLimits, NonLoopbackNeedsLoginsAndAChangedPassword) {
  kodo::testing::TempDir dir("kodo-auth-bind");
  const std::vector<std::string> base = {KODO_HOST_BINARY,
                                         "--plugin-dir",
                                         KODO_PLUGIN_DIR,
                                         "--address",
                                         "0.0.0.0:0",
                                         "--exec-dir",
                                         dir.path() + "/execution",
                                         "--admin-database",
                                         "sqlite:///" + dir.path() + "/admin.db",
                                         "--secret-key-file",
                                         dir.path() + "/secret.key"};
  auto off = base;
  off.insert(off.end(), {"--auth", "off", "serve"});
  auto r = kodo::e2e::run_command(off);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("without logins"), std::string::npos) << r.output;
  auto default_password = base;
  default_password.insert(default_password.end(), {"--admin-password", "admin", "serve"});
  r = kodo::e2e::run_command(default_password);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("default password"), std::string::npos) << r.output;
}

TEST(AuthUsersCommand, AddListPasswdDisableOperator) {
  kodo::testing::TempDir dir("kodo-auth-users");
  const std::string host =
      std::string(KODO_HOST_BINARY) + " --admin-database sqlite:///" + dir.path() + "/admin.db ";
  auto sh = [&](const std::string &command) {
    return kodo::e2e::run_command({"/bin/sh", "-c", host + command});
  };
  auto r = sh("users add carol carol@example.com <<EOF\ncarols-first-pw\nEOF");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output.find("carols-first-pw"), std::string::npos);
  EXPECT_NE(sh("users add carol other@example.com <<EOF\nx\nEOF").exit_code, 0);  // taken
  EXPECT_NE(sh("users add dave not-an-email <<EOF\nx\nEOF").exit_code, 0);
  EXPECT_NE(sh("users add dave dave@example.com </dev/null").exit_code, 0);  // no password
  ASSERT_EQ(sh("users passwd carol <<EOF\ncarols-new-pw\nEOF").exit_code, 0);
  ASSERT_EQ(sh("users operator carol on").exit_code, 0);
  r = sh("users list");
  EXPECT_NE(r.output.find("carol"), std::string::npos);
  EXPECT_NE(r.output.find("operator"), std::string::npos);
  EXPECT_EQ(r.output.find("$2b$"), std::string::npos);

  kodo::e2e::HostProcess served;
  ASSERT_TRUE(served.start({"--plugin-dir", KODO_PLUGIN_DIR, "--admin-database",
                            "sqlite:///" + dir.path() + "/admin.db", "--secret-key-file",
                            dir.path() + "/secret.key", "--exec-dir",
                            dir.path() + "/execution"}));  // auto: the database exists
  EXPECT_EQ(served.request("GET", "/api/v1/flows").status, 401);
  EXPECT_EQ(served.request("GET", "/login?name=carol&password=carols-first-pw").status, 401);
  HttpResult ok = served.request("GET", "/login?name=carol&password=carols-new-pw");
  ASSERT_EQ(ok.status, 200) << ok.body;
  const std::string token = json_field(ok.body, "KODOSUMI_API_KEY");
  EXPECT_EQ(served.request("GET", "/api/v1/users", "", 30, "", auth_header(token)).status, 200);
  ASSERT_EQ(sh("users disable carol").exit_code, 0);
  EXPECT_EQ(served.request("GET", "/api/v1/flows", "", 30, "", auth_header(token)).status, 401);
}

}  // namespace
