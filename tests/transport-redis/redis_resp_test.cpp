// The Redis transport's own RESP reader (plugins/transport-redis/redis_connection.hpp): it
// finds where a reply ends however the bytes are split (and resumes a scan where it stopped),
// builds every kind of value in place (binary-safe, NUL-terminated), and refuses bytes that are
// not RESP, lengths no server sends and nesting no reply has, with a clear message.
#include "redis_connection.hpp"

#include <gtest/gtest.h>

#include <string>

namespace kodo::redis {
namespace {

Frame frame_of(const std::string &bytes) {
  Frame frame;
  frame.bytes.assign(bytes.begin(), bytes.end());
  frame.filled = bytes.size();
  return frame;
}

// An XREADGROUP reply: one stream, two entries, the second one's payload holding "\r\n".
const std::string kReadReply =
    "*1\r\n*2\r\n$14\r\nkodo:events:f1\r\n*2\r\n"
    "*2\r\n$3\r\n1-1\r\n*4\r\n$4\r\nkind\r\n$6\r\nstdout\r\n$7\r\npayload\r\n$2\r\nhi\r\n"
    "*2\r\n$3\r\n1-2\r\n*4\r\n$4\r\nkind\r\n$6\r\nstatus\r\n$7\r\npayload\r\n$4\r\na\r\nb\r\n";

TEST(RedisResp, AReplyIsCompleteOnlyWithItsLastByte) {
  for (size_t cut = 0; cut < kReadReply.size(); ++cut)
    EXPECT_EQ(resp::complete(kReadReply.data(), cut, 0), 0u) << "complete after " << cut;
  EXPECT_EQ(resp::complete(kReadReply.data(), kReadReply.size(), 0), kReadReply.size());
  // Two pipelined replies: the second starts where the first ends.
  const std::string two = ":7\r\n+OK\r\n";
  EXPECT_EQ(resp::complete(two.data(), two.size(), 0), 4u);
  EXPECT_EQ(resp::complete(two.data(), two.size(), 4), two.size());
}

TEST(RedisResp, BuildsEntriesInPlaceBinarySafe) {
  Frame frame = frame_of(kReadReply);
  Value reply;
  size_t pos = 0;
  resp::build(frame, pos, reply);
  EXPECT_EQ(pos, kReadReply.size());
  ASSERT_EQ(reply.type, REDIS_REPLY_ARRAY);
  ASSERT_EQ(reply.elements, 1u);
  const Value *stream = reply.element[0];
  EXPECT_STREQ(stream->element[0]->str, "kodo:events:f1");
  const Value *entries = stream->element[1];
  ASSERT_EQ(entries->elements, 2u);
  EXPECT_EQ(text(entries->element[1]->element[0]), "1-2");
  const Value *fields = entries->element[1]->element[1];
  EXPECT_STREQ(fields->element[1]->str, "status");
  EXPECT_EQ(text(fields->element[3]), std::string_view("a\r\nb", 4));
  EXPECT_EQ(fields->element[3]->str[4], '\0');
  // The strings lie in the frame's bytes: nothing was copied.
  EXPECT_GE(fields->element[3]->str, frame.bytes.data());
  EXPECT_LT(fields->element[3]->str, frame.bytes.data() + frame.bytes.size());
}

TEST(RedisResp, BuildsEveryKindOfValue) {
  const std::string bytes = "*6\r\n:-42\r\n+OK\r\n-NOGROUP no such key\r\n$-1\r\n*-1\r\n$0\r\n\r\n";
  Frame frame = frame_of(bytes);
  Value v;
  size_t pos = 0;
  ASSERT_EQ(resp::complete(bytes.data(), bytes.size(), 0), bytes.size());
  resp::build(frame, pos, v);
  ASSERT_EQ(v.elements, 6u);
  EXPECT_EQ(v.element[0]->type, REDIS_REPLY_INTEGER);
  EXPECT_EQ(v.element[0]->integer, -42);
  EXPECT_EQ(v.element[1]->type, REDIS_REPLY_STATUS);
  EXPECT_EQ(text(v.element[1]), "OK");
  EXPECT_TRUE(is_error(v.element[2]));
  EXPECT_EQ(text(v.element[2]), "NOGROUP no such key");
  EXPECT_EQ(v.element[3]->type, REDIS_REPLY_NIL);
  EXPECT_EQ(v.element[4]->type, REDIS_REPLY_NIL);
  EXPECT_EQ(v.element[5]->type, REDIS_REPLY_STRING);
  EXPECT_EQ(v.element[5]->len, 0u);
}

TEST(RedisResp, BytesThatAreNotRespAreRefusedByName) {
  const std::string unknown = "!oops\r\n";
  try {
    resp::complete(unknown.data(), unknown.size(), 0);
    FAIL() << "accepted an unknown type byte";
  } catch (const std::runtime_error &e) {
    EXPECT_NE(std::string(e.what()).find("'!'"), std::string::npos) << e.what();
  }
  const std::string bad_length = "$x1\r\nab\r\n";
  EXPECT_THROW(resp::complete(bad_length.data(), bad_length.size(), 0), std::runtime_error);
  const std::string lf_only = "-ERR no carriage return\n";
  EXPECT_THROW(resp::complete(lf_only.data(), lf_only.size(), 0), std::runtime_error);
  const std::string longer = "$2\r\nabc\r\n";
  EXPECT_THROW(resp::complete(longer.data(), longer.size(), 0), std::runtime_error);
  // Lengths no server sends would otherwise make the scan wait for, or count, forever.
  const std::string huge = "*99999999999\r\n";
  EXPECT_THROW(resp::complete(huge.data(), huge.size(), 0), std::runtime_error);
}

TEST(RedisResp, NestingDeeperThanAnyReplyIsRefusedNotRecursedInto) {
  std::string deep;
  for (int i = 0; i < 40; ++i) deep += "*1\r\n";
  deep += ":1\r\n";
  ASSERT_EQ(resp::complete(deep.data(), deep.size(), 0), deep.size());
  Frame frame = frame_of(deep);
  Value v;
  size_t pos = 0;
  try {
    resp::build(frame, pos, v);
    FAIL() << "built a reply nested 40 deep";
  } catch (const std::runtime_error &e) {
    EXPECT_NE(std::string(e.what()).find("nested deeper"), std::string::npos) << e.what();
  }
}

TEST(RedisResp, AScanResumedAfterMoreBytesEndsWhereOneScanDoes) {
  for (size_t cut = 1; cut < kReadReply.size(); ++cut) {
    resp::Scan scan;
    EXPECT_EQ(resp::complete(kReadReply.data(), cut, 0, scan), 0u);
    EXPECT_EQ(resp::complete(kReadReply.data(), kReadReply.size(), 0, scan), kReadReply.size())
        << "resumed after " << cut << " bytes";
  }
}

}  // namespace
}  // namespace kodo::redis
