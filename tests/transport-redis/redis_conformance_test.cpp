// The conformance kit against the Redis transport and a real redis-server started here, on its
// own loopback port, with a password. The redelivery case runs apart with a short claim time (the
// other cases must see no redelivery while they take turns between consumers).
#include "redis_server.hpp"

#include <gtest/gtest.h>

namespace kodo {
namespace {

using testing::RedisServer;

class RedisConformance : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_NO_THROW(redis_.start()); }

  void run_kit(const std::vector<std::string> &extra) {
    std::vector<std::string> args = {KODO_CONFORMANCE_EXE, "--plugin", REDIS_PLUGIN, "--option",
                                     "url=" + redis_.url()};
    args.insert(args.end(), extra.begin(), extra.end());
    testing::TempDir dir("kodo-redis-kit");
    const int exit_code = testing::run_as(args, "", dir.path() + "/kit.log");
    const std::string output = testing::slurp(dir.path() + "/kit.log");
    EXPECT_EQ(exit_code, 0) << output << "\n--- redis-server log ---\n" << redis_.log();
    EXPECT_NE(output.find("[  PASSED  ]"), std::string::npos) << output;
    EXPECT_EQ(output.find("[  FAILED  ]"), std::string::npos) << output;
  }

  RedisServer redis_;
};

TEST_F(RedisConformance, EveryContractButRedelivery) {
  run_kit({"--gtest_filter=-TransportRedelivery.*"});
}

TEST_F(RedisConformance, Redelivery) {
  run_kit({"--option", "claim_idle_ms=1000", "--gtest_filter=TransportRedelivery.*"});
}

}  // namespace
}  // namespace kodo
