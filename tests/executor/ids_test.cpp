// ids_test.cpp: fid generation and the fid/username rule.
#include "core/ids.hpp"
#include <kodo/host/error.hpp>
#include "core/event.hpp"

#include <gtest/gtest.h>

#include <cstdlib>
#include <ctime>
#include <set>
#include <string>

namespace {

TEST(Ids, NewFidIsAnObjectIdOfLowerHex) {
  const std::string fid = kodo::new_fid();
  ASSERT_EQ(fid.size(), 24u);
  EXPECT_EQ(fid.find_first_not_of("0123456789abcdef"), std::string::npos) << fid;
  EXPECT_EQ(kodo::fid_problem(fid), "");
  // The first four bytes are the unix time, big-endian.
  const long seconds = std::stol(fid.substr(0, 8), nullptr, 16);
  EXPECT_LE(std::labs(seconds - static_cast<long>(std::time(nullptr))), 5);
}

TEST(Ids, NewFidsAreUniqueAndSortByCreation) {
  std::set<std::string> seen;
  std::string previous;
  for (int i = 0; i < 10000; ++i) {
    std::string fid = kodo::new_fid();
    EXPECT_TRUE(seen.insert(fid).second) << fid;
    // Same process: the same five random bytes, so the time then the counter decide.
    if (!previous.empty() && fid.substr(0, 8) != previous.substr(0, 8)) {
      EXPECT_GT(fid.substr(0, 8), previous.substr(0, 8));
    }
    previous = fid;
  }
}

TEST(Ids, ValidNamesPass) {
  for (const char *ok : {"alice", "a", "Bob_1.x@example-org", "6543210fedcba98765432100"}) {
    EXPECT_EQ(kodo::username_problem(ok), "") << ok;
    EXPECT_EQ(kodo::fid_problem(ok), "") << ok;
  }
  EXPECT_EQ(kodo::fid_problem(std::string(64, 'a')), "");
}

TEST(Ids, InvalidNamesAreNamedInTheProblem) {
  EXPECT_NE(kodo::fid_problem("").find("empty"), std::string::npos);
  EXPECT_NE(kodo::fid_problem(".hidden").find("\".hidden\""), std::string::npos);
  EXPECT_NE(kodo::fid_problem(std::string(65, 'a')).find("65 bytes"), std::string::npos);
  const std::string slash = kodo::username_problem("../etc");
  EXPECT_NE(slash.find("username"), std::string::npos) << slash;
  EXPECT_NE(slash.find("\"../etc\""), std::string::npos) << slash;
  const std::string nul = kodo::fid_problem(std::string("a\0b", 3));
  EXPECT_NE(nul.find("\\x00"), std::string::npos) << nul;
  EXPECT_NE(kodo::fid_problem("a b").find("offset 1"), std::string::npos);
}

TEST(Ids, CheckThrowsInvalidArgument) {
  EXPECT_NO_THROW(kodo::check_fid("abc"));
  try {
    kodo::check_username("bad/name");
    FAIL() << "no throw";
  } catch (const kodo::Error &e) {
    EXPECT_EQ(e.code(), KODO_ERR_INVALID_ARGUMENT);
    EXPECT_NE(std::string(e.what()).find("bad/name"), std::string::npos);
  }
  EXPECT_THROW(kodo::check_fid(""), kodo::Error);
}

TEST(EventKinds, MatchKodosumi) {
  for (const char *k : {"meta", "inputs", "agent", "upload", "debug", "stdout", "stderr", "lock",
                        "lease", "status", "error", "action", "result", "final"})
    EXPECT_TRUE(kodo::is_known_kind(k)) << k;
  EXPECT_FALSE(kodo::is_known_kind("alive"));
  EXPECT_FALSE(kodo::is_known_kind(""));
  EXPECT_FALSE(kodo::is_known_kind("Status"));
  EXPECT_TRUE(kodo::is_main_kind("error"));
  EXPECT_TRUE(kodo::is_stdio_kind("error"));
  EXPECT_TRUE(kodo::is_main_kind("lease"));
  EXPECT_FALSE(kodo::is_main_kind("stdout"));
  EXPECT_TRUE(kodo::is_stdio_kind("upload"));
  EXPECT_FALSE(kodo::is_stdio_kind("final"));
  const double now = kodo::now_seconds();
  EXPECT_NEAR(now, static_cast<double>(std::time(nullptr)), 5.0);
}

}  // namespace
