// The SDK's URL parser: what the PostgreSQL and Redis plugins accept, and how they refuse.
#include <gtest/gtest.h>
#include <kodo/url.hpp>

using kodo::sdk::Error;
using kodo::sdk::parse_url;

TEST(Url, ParsesEveryPart) {
  auto url = parse_url("postgresql://kodo:p%40ss@db.example:5433/events?sslmode=disable&x=1");
  EXPECT_EQ(url.scheme, "postgresql");
  EXPECT_EQ(url.user, "kodo");
  EXPECT_EQ(url.password, "p@ss");
  EXPECT_TRUE(url.has_password);
  EXPECT_EQ(url.host, "db.example");
  EXPECT_EQ(url.port, 5433);
  EXPECT_EQ(url.path, "events");
  EXPECT_EQ(url.param("sslmode"), "disable");
  EXPECT_EQ(url.param("x"), "1");
  EXPECT_EQ(url.param("missing", "d"), "d");
}

TEST(Url, RedisFormsWithEmptyUserAndDatabaseNumber) {
  auto url = parse_url("redis://:secret@127.0.0.1:6380/2", {"redis", "rediss"});
  EXPECT_EQ(url.user, "");
  EXPECT_EQ(url.password, "secret");
  EXPECT_EQ(url.path, "2");
  auto bare = parse_url("REDIS://localhost");
  EXPECT_EQ(bare.scheme, "redis");
  EXPECT_EQ(bare.port, 0);
  EXPECT_FALSE(bare.has_password);
}

TEST(Url, Ipv6HostInBrackets) {
  auto url = parse_url("postgresql://u@[::1]:5432/db");
  EXPECT_EQ(url.host, "::1");
  EXPECT_EQ(url.port, 5432);
  EXPECT_EQ(url.redacted(), "postgresql://u@[::1]:5432/db");
}

TEST(Url, RedactedNeverShowsThePassword) {
  auto url = parse_url("postgresql+asyncpg://kodo:hunter2@h:1/db?password=hunter3");
  EXPECT_EQ(url.redacted(), "postgresql+asyncpg://kodo:***@h:1/db?password=***");
}

static std::string error_of(const std::string &text, const std::vector<std::string> &allowed = {}) {
  try {
    parse_url(text, allowed);
  } catch (const Error &e) {
    EXPECT_EQ(e.code(), KODO_ERR_INVALID_ARGUMENT);
    return e.what();
  }
  return "";
}

TEST(Url, ErrorsNameThePartAndKeepThePasswordOut) {
  EXPECT_NE(error_of("localhost:5432").find("no scheme"), std::string::npos);
  EXPECT_NE(error_of("mysql://h/db", {"postgresql", "postgres"}).find("'mysql://' is not one of"),
            std::string::npos);
  EXPECT_NE(error_of("redis://h:99999").find("port '99999'"), std::string::npos);
  EXPECT_NE(error_of("redis://h:abc").find("port 'abc'"), std::string::npos);
  EXPECT_NE(error_of("redis://h o:1").find("space or control"), std::string::npos);
  EXPECT_NE(error_of("redis://[::1").find("lacks its ']'"), std::string::npos);
  EXPECT_NE(error_of("redis://h^st:1").find("host 'h^st'"), std::string::npos);
  std::string bad_password = error_of("postgresql://u:se%zzcret@h/db");
  EXPECT_NE(bad_password.find("password"), std::string::npos);
  EXPECT_EQ(bad_password.find("se%zzcret"), std::string::npos);
  EXPECT_NE(error_of("redis://h/?=1").find("no name"), std::string::npos);
}
