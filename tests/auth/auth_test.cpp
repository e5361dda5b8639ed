// Tokens, passwords, accounts and the login limit, against kodosumi 1.1.0's own code (the
// .venv-kodosumi python) and a real PostgreSQL (tests/support).
#include "core/auth.hpp"
#include <kodo/host/error.hpp>
#include "core/accounts.hpp"
#include "core/auth_token.hpp"
#include "host_process.hpp"
#include "postgres_server.hpp"
#include "service_process.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <chrono>
#include <fstream>
#include <thread>

namespace {

using kodo::TokenClaims;

const std::string kKey = "test key -- not kodosumi's default";

// Runs tests/auth/kodosumi_auth.py with kodosumi's code; its stdout's first line.
kodo::e2e::CommandResult kodosumi(const std::vector<std::string> &args,
                                  const std::string &key = kKey) {
  std::vector<std::string> argv = {KODO_KODOSUMI_PYTHON, KODO_KODOSUMI_AUTH_SCRIPT};
  argv.insert(argv.end(), args.begin(), args.end());
  auto r = kodo::e2e::run_command(argv, {"KODO_SECRET_KEY=" + key});
  while (!r.output.empty() && r.output.back() == '\n') r.output.pop_back();
  return r;
}

TokenClaims claims_for(const std::string &sub, double lifetime = 60) {
  TokenClaims c;
  c.sub = sub;
  c.iat = kodo::unix_now();
  c.exp = c.iat + lifetime;
  return c;
}

TEST(Base64url, RoundTripsEveryLengthAndRefusesOtherSpellings) {
  std::string bytes;
  for (int i = 0; i < 40; ++i) {
    auto back = kodo::base64url_decode(kodo::base64url_encode(bytes));
    ASSERT_TRUE(back);
    EXPECT_EQ(*back, bytes);
    bytes += static_cast<char>(i * 37);
  }
  EXPECT_EQ(kodo::base64url_encode("\xfb\xff"), "-_8");
  EXPECT_FALSE(kodo::base64url_decode("a"));     // no whole byte
  EXPECT_FALSE(kodo::base64url_decode("ab=="));  // padding is not base64url
  EXPECT_FALSE(kodo::base64url_decode("a+b/"));  // base64's alphabet
  EXPECT_FALSE(kodo::base64url_decode("-_9"));   // leftover bits set: a second spelling
}

TEST(Token, SignedTokenVerifies) {
  const std::string token = kodo::sign_token(kKey, claims_for("abc"));
  std::string why;
  auto claims = kodo::verify_token(kKey, token, kodo::unix_now(), &why);
  ASSERT_TRUE(claims) << why;
  EXPECT_EQ(claims->sub, "abc");
  EXPECT_TRUE(claims->fid.empty());
}

TEST(Token, ExpiredTamperedWrongKeyAndAlgNoneAreRefused) {
  const double now = kodo::unix_now();
  std::string why;
  // Expired.
  EXPECT_FALSE(kodo::verify_token(kKey, kodo::sign_token(kKey, claims_for("a", -1)), now, &why));
  EXPECT_NE(why.find("expired"), std::string::npos);
  // Wrong key.
  const std::string token = kodo::sign_token(kKey, claims_for("a"));
  EXPECT_FALSE(kodo::verify_token("another key", token, now, &why));
  EXPECT_NE(why.find("signature"), std::string::npos);
  // Tampered: another subject under the old signature.
  const size_t dot1 = token.find('.'), dot2 = token.rfind('.');
  const std::string forged_claims =
      kodo::base64url_encode(R"({"exp":9999999999,"iat":0,"sub":"operator"})");
  EXPECT_FALSE(kodo::verify_token(
      kKey, token.substr(0, dot1 + 1) + forged_claims + token.substr(dot2), now, &why));
  // One signature bit flipped.
  std::string flipped = token;
  flipped.back() = flipped.back() == 'A' ? 'B' : 'A';
  EXPECT_FALSE(kodo::verify_token(kKey, flipped, now));
  // alg none, with and without a signature part.
  const std::string none = kodo::base64url_encode(R"({"alg":"none","typ":"JWT"})") + "." +
                           token.substr(dot1 + 1, dot2 - dot1 - 1);
  EXPECT_FALSE(kodo::verify_token(kKey, none + ".", now, &why));
  EXPECT_NE(why.find("HS256"), std::string::npos);
  EXPECT_FALSE(kodo::verify_token(kKey, none, now));
  // Another algorithm named, the HS256 signature kept.
  const std::string hs512 =
      kodo::base64url_encode(R"({"alg":"HS512","typ":"JWT"})") + token.substr(dot1);
  EXPECT_FALSE(kodo::verify_token(kKey, hs512, now));
  // Malformed.
  for (const char *bad : {"", ".", "..", "a.b.c", "a.b.c.d", "eyJ.eyJ.", "....."})
    EXPECT_FALSE(kodo::verify_token(kKey, bad, now)) << bad;
  // An empty key signs nothing and checks nothing.
  EXPECT_FALSE(kodo::verify_token("", token, now));
  EXPECT_THROW(kodo::sign_token("", claims_for("a")), kodo::Error);
}

TEST(Token, WhyNeverRepeatsTheToken) {
  const std::string token = kodo::sign_token(kKey, claims_for("a", -1));
  std::string why;
  EXPECT_FALSE(kodo::verify_token(kKey, token, kodo::unix_now(), &why));
  EXPECT_EQ(why.find(token.substr(0, 20)), std::string::npos);
}

TEST(Token, FlowTokensCarryTheirFid) {
  TokenClaims c = claims_for("u");
  c.fid = "6b0ca28aebb7ee1f6627dcdb";
  auto back = kodo::verify_token(kKey, kodo::sign_token(kKey, c), kodo::unix_now());
  ASSERT_TRUE(back);
  EXPECT_EQ(back->fid, c.fid);
}

TEST(KodosumiTokens, KodosumisTokenIsAcceptedHere) {
  const auto made = kodosumi({"encode", "86c4875a-e6f0-49c4-bbe5-75b0ad3fa4ad"});
  ASSERT_EQ(made.exit_code, 0) << made.output;
  std::string why;
  auto claims = kodo::verify_token(kKey, made.output, kodo::unix_now(), &why);
  ASSERT_TRUE(claims) << why;
  EXPECT_EQ(claims->sub, "86c4875a-e6f0-49c4-bbe5-75b0ad3fa4ad");
  EXPECT_NEAR(claims->exp - claims->iat, kodo::kTokenLifetimeS, 1);
  // kodosumi's token under another key is not ours.
  EXPECT_FALSE(kodo::verify_token("other", made.output, kodo::unix_now()));
}

TEST(KodosumiTokens, OurTokenIsAcceptedByKodosumi) {
  TokenClaims c = claims_for("d67234e8-ffcf-486b-9051-6046a73d766a", kodo::kTokenLifetimeS);
  const auto read = kodosumi({"decode", kodo::sign_token(kKey, c)});
  ASSERT_EQ(read.exit_code, 0) << read.output;
  EXPECT_EQ(read.output, c.sub);
  // ... and refused by kodosumi under another key, or expired.
  EXPECT_NE(kodosumi({"decode", kodo::sign_token(kKey, c)}, "other").exit_code, 0);
  EXPECT_NE(kodosumi({"decode", kodo::sign_token(kKey, claims_for("x", -5))}).exit_code, 0);
}

TEST(Passwords, BcryptAsKodosumiStoresIt) {
  const std::string hash = kodo::hash_password("s3cret");
  EXPECT_EQ(hash.rfind("$2b$12$", 0), 0u) << hash;
  EXPECT_TRUE(kodo::verify_password("s3cret", hash));
  EXPECT_FALSE(kodo::verify_password("s3cret ", hash));
  EXPECT_FALSE(kodo::verify_password("s3cret", "plain"));
  EXPECT_FALSE(kodo::verify_password("", hash));
  // A hash Python's bcrypt made (kodosumi's default admin, password "admin").
  EXPECT_TRUE(kodo::verify_password(
      "admin", "$2b$12$oYctnscAvQe4iCYXZ/C/cOby3/a1pf5RibtQfkc5UxWioy5Wp8m8S"));
}

void exercise_store(kodo::AccountStore &store) {
  store.create_schema();
  store.create_schema();  // idempotent, as create_all
  kodo::Account a;
  a.id = kodo::new_account_id();
  a.name = "alice";
  a.email = "alice@example.com";
  a.password_hash = kodo::hash_password("pw-a");
  store.insert(a);
  kodo::Account dup = a;
  dup.id = kodo::new_account_id();
  EXPECT_THROW(store.insert(dup), kodo::Error);  // the name is taken
  auto found = store.by_name("alice");
  ASSERT_TRUE(found);
  EXPECT_EQ(found->id, a.id);
  EXPECT_TRUE(found->active);
  EXPECT_FALSE(found->is_operator);
  EXPECT_TRUE(kodo::verify_password("pw-a", found->password_hash));
  ASSERT_TRUE(store.by_id(a.id));
  EXPECT_FALSE(store.by_id(kodo::new_account_id()));
  EXPECT_FALSE(store.by_id("not-a-uuid"));
  found->is_operator = true;
  found->active = false;
  store.update(*found);
  auto changed = store.by_id(a.id);
  ASSERT_TRUE(changed);
  EXPECT_TRUE(changed->is_operator);
  EXPECT_FALSE(changed->active);
  kodo::Account ghost = a;
  ghost.id = kodo::new_account_id();
  ghost.name = "ghost";
  ghost.email = "ghost@example.com";
  EXPECT_THROW(store.update(ghost), kodo::Error);
  EXPECT_EQ(store.list().size(), 1u);
}

TEST(Accounts, SqliteStore) {
  kodo::testing::TempDir dir("kodo-accounts");
  auto store = kodo::AccountStore::open("sqlite+aiosqlite:///" + dir.path() + "/admin.db");
  exercise_store(*store);
}

TEST(Accounts, PostgresStore) {
  kodo::testing::PostgresServer server;
  server.start();
  auto store = kodo::AccountStore::open("postgresql+asyncpg://" +
                                        server.url().substr(std::string("postgresql://").size()));
  exercise_store(*store);
  // The column types SQLAlchemy gives kodosumi's Role model on PostgreSQL.
  EXPECT_EQ(server.query("SELECT data_type FROM information_schema.columns WHERE table_name = "
                         "'roles' AND column_name = 'id'"),
            std::vector<std::string>{"uuid"});
  // A refused connection names no password.
  std::string url = server.url();
  url.replace(url.find(kodo::testing::PostgresServer::kPassword),
              std::string(kodo::testing::PostgresServer::kPassword).size(), "wrong-pw-77");
  try {
    kodo::AccountStore::open(url);
    ADD_FAILURE() << "a wrong password connected";
  } catch (const kodo::Error &e) {
    EXPECT_EQ(std::string(e.what()).find("wrong-pw-77"), std::string::npos) << e.what();
  }
}

TEST(Accounts, AdminDbMadeByKodosumiLogsIn) {
  kodo::testing::TempDir dir("kodo-kdb");
  const std::string path = dir.path() + "/admin.db";
  const auto made = kodosumi({"mkdb", path, "bob", "bob@example.com", "bobs-pw"});
  ASSERT_EQ(made.exit_code, 0) << made.output;
  kodo::AuthConfig config;
  kodo::Auth auth(kodo::AccountStore::open("sqlite:///" + path), kKey, config);
  kodo::Account account;
  double wait = 0;
  ASSERT_EQ(auth.login("bob", "bobs-pw", "client", &account, &wait), kodo::LoginResult::Ok);
  EXPECT_EQ(account.id, made.output);
  EXPECT_TRUE(account.is_operator);
  // The token it hands out names the role as kodosumi does, and kodosumi reads it.
  const auto read = kodosumi({"decode", auth.token_for(account)});
  EXPECT_EQ(read.output, made.output);
  // An account kodo adds there is one kodosumi's own model reads back (same schema).
  kodo::Account carol;
  carol.id = kodo::new_account_id();
  carol.name = "carol";
  carol.email = "carol@example.com";
  carol.password_hash = kodo::hash_password("carols-pw");
  auth.accounts().insert(carol);
  EXPECT_EQ(auth.login("carol", "carols-pw", "client", &account, &wait), kodo::LoginResult::Ok);
}

TEST(LoginLimit, PerClientAndPerAccount) {
  kodo::testing::TempDir dir("kodo-limit");
  kodo::AuthConfig config;
  config.login_failures = 3;
  config.login_window_s = 3600;
  kodo::Auth auth(kodo::AccountStore::open("sqlite:///" + dir.path() + "/admin.db"), kKey, config);
  auth.accounts().create_schema();
  auth.ensure_admin(false);
  kodo::Account out;
  double wait = 0;
  for (int i = 0; i < 3; ++i)
    EXPECT_EQ(auth.login("admin", "wrong", "10.0.0.1", &out, &wait), kodo::LoginResult::Refused);
  // The client is blocked even with the right password, and so is the account elsewhere.
  EXPECT_EQ(auth.login("admin", "admin", "10.0.0.1", &out, &wait), kodo::LoginResult::RateLimited);
  EXPECT_GT(wait, 0);
  EXPECT_EQ(auth.login("admin", "admin", "10.0.0.2", &out, &wait), kodo::LoginResult::RateLimited);
  // Another account from another client is not.
  EXPECT_EQ(auth.login("nobody", "x", "10.0.0.3", &out, &wait), kodo::LoginResult::Refused);
}

// The I/O threads' view of a caller (cached_caller) is never wider than authenticate()'s: it
// knows only accounts authenticate() read within the last second, drops one changed here,
// refuses a bad token whatever it knows, and keeps no password hash.
TEST(CachedCaller, KnowsOnlyWhatAuthenticateReadLately) {
  kodo::testing::TempDir dir("kodo-cached-caller");
  kodo::Auth auth(kodo::AccountStore::open("sqlite:///" + dir.path() + "/admin.db"), kKey, {});
  auth.accounts().create_schema();
  auth.ensure_admin(false);
  kodo::Account admin = *auth.accounts().by_name("admin");
  const std::string token = auth.token_for(admin);
  kodo::HttpRequest request;
  request.headers.emplace_back("kodosumi_api_key", token);
  EXPECT_FALSE(auth.cached_caller(request)) << "known before it was read";
  ASSERT_TRUE(auth.authenticate(request));
  const auto cached = auth.cached_caller(request);
  ASSERT_TRUE(cached);
  EXPECT_EQ(cached->user, admin.id);
  EXPECT_EQ(cached->name, "admin");
  EXPECT_TRUE(cached->is_operator);
  kodo::HttpRequest bad;
  bad.headers.emplace_back("kodosumi_api_key", token + "x");
  EXPECT_FALSE(auth.cached_caller(bad));
  EXPECT_FALSE(auth.cached_caller(kodo::HttpRequest{}));
  // Changed here: read again, and a disabled account is refused by both.
  admin.active = false;
  auth.accounts().update(admin);
  auth.forget_account(admin.id);
  EXPECT_FALSE(auth.cached_caller(request));
  EXPECT_FALSE(auth.authenticate(request));
  EXPECT_FALSE(auth.cached_caller(request)) << "a disabled account known as a caller";
  // Changed by another process: seen once what was read is older than kAccountFreshS.
  admin.active = true;
  auth.accounts().update(admin);
  ASSERT_TRUE(auth.authenticate(request));
  ASSERT_TRUE(auth.cached_caller(request));
  std::this_thread::sleep_for(std::chrono::duration<double>(kodo::Auth::kAccountFreshS + 0.2));
  EXPECT_FALSE(auth.cached_caller(request));
}

TEST(SigningKey, GeneratedOnceWithMode0600AndRefusedWhenOthersCanRead) {
  kodo::testing::TempDir dir("kodo-key");
  const std::string file = dir.path() + "/sub/secret.key";
  const std::string key = kodo::load_or_create_signing_key("", file);
  EXPECT_GE(key.size(), 40u);
  struct stat st {};
  ASSERT_EQ(stat(file.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(kodo::load_or_create_signing_key("", file), key);
  EXPECT_NE(kodo::load_or_create_signing_key("", dir.path() + "/other.key"), key);
  EXPECT_EQ(kodo::load_or_create_signing_key("configured", file), "configured");
  chmod(file.c_str(), 0644);
  try {
    kodo::load_or_create_signing_key("", file);
    ADD_FAILURE() << "a key file others can read was used";
  } catch (const kodo::Error &e) {
    EXPECT_NE(std::string(e.what()).find("readable by others"), std::string::npos);
    EXPECT_EQ(std::string(e.what()).find(key), std::string::npos);
  }
}

}  // namespace
