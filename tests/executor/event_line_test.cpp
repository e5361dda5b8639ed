// event_line_test.cpp: the line format flows write to their events descriptor.
#include "core/event_line.hpp"

#include <gtest/gtest.h>

#include <random>
#include <string>

namespace {

using kodo::parse_event_line;

std::string error_of(const std::string &line) {
  const auto parsed = parse_event_line(line);
  EXPECT_FALSE(parsed.ok()) << line;
  return parsed.error;
}

TEST(EventLine, PlainKindsTakeAStringAsIs) {
  const auto p = parse_event_line(R"({"kind":"debug","payload":"done \"quoted\"\n\u00e9"})");
  ASSERT_TRUE(p.ok()) << p.error;
  EXPECT_EQ(p.kind, "debug");
  EXPECT_EQ(p.payload, "done \"quoted\"\n\xC3\xA9");
  EXPECT_EQ(parse_event_line("{\"kind\":\"debug\",\"payload\":\"\"}\r").payload, "");
  // Other values compactly, numbers keeping their text.
  EXPECT_EQ(parse_event_line(R"({"kind":"error","payload":{ "x" : 1.50e2 }})").payload,
            R"({"x":1.50e2})");
}

// kodosumi's serialize() (kodosumi/helper.py): what its runner and tracer store for these kinds.
TEST(EventLine, SerializedKindsAreStoredAsKodosumiStoresThem) {
  const auto p = parse_event_line(
      R"(  { "payload" : { "x" : 1, "y" : [ true , null, 1.50e2, -0, "s" ] } , "kind" : "result" } )");
  ASSERT_TRUE(p.ok()) << p.error;
  EXPECT_EQ(p.kind, "result");
  // A dict's members stay as they are; numbers keep their text: no float round trip.
  EXPECT_EQ(p.payload, R"({"dict":{"x":1,"y":[true,null,1.50e2,-0,"s"]}})");
  EXPECT_EQ(parse_event_line(R"({"kind":"final","payload":"done \"q\"\n"})").payload,
            R"({"str":"done \"q\"\n"})");
  EXPECT_EQ(parse_event_line(R"({"kind":"agent","payload":12345678901234567890123})").payload,
            R"({"int":12345678901234567890123})");
  EXPECT_EQ(parse_event_line(R"({"kind":"agent","payload":2.5})").payload, R"({"float":2.5})");
  EXPECT_EQ(parse_event_line(R"({"kind":"agent","payload":false})").payload, R"({"bool":false})");
  EXPECT_EQ(parse_event_line(R"({"kind":"agent","payload":null})").payload,
            R"({"TypeError":"None"})");
  // A list's items are wrapped one by one, nested lists too; a dict's insides are not.
  EXPECT_EQ(
      parse_event_line(R"({"kind":"upload","payload":[1,"a",[{"b":[2]}],{}]})").payload,
      R"({"__list__":[{"int":1},{"str":"a"},{"__list__":[{"dict":{"b":[2]}}]},{"dict":{}}]})");
  EXPECT_EQ(parse_event_line(R"({"kind":"upload","payload":[]})").payload, R"({"__list__":[]})");
}

TEST(EventLine, TypeNamesAModel) {
  const auto p =
      parse_event_line(R"({"kind":"result","type":"Markdown","payload":{"body":"# hi"}})");
  ASSERT_TRUE(p.ok()) << p.error;
  EXPECT_EQ(p.payload, R"({"Markdown":{"body":"# hi"}})");
  EXPECT_EQ(error_of(R"({"kind":"stdout","type":"Markdown","payload":{}})"),
            "\"type\" applies only to kinds kodosumi serializes, not \"stdout\"");
  EXPECT_EQ(error_of(R"({"kind":"final","type":"Mark down","payload":{}})"),
            "\"type\" must be a name of letters, digits and '_', got \"Mark down\"");
  EXPECT_EQ(error_of(R"({"kind":"final","type":"Text","payload":"x"})"),
            "\"type\" needs an object payload");
  EXPECT_EQ(error_of(R"({"kind":"final","type":3,"payload":{}})"), "\"type\" is not a string");
  EXPECT_EQ(error_of(R"({"kind":"final","type":"A","type":"B","payload":{}})"),
            "duplicate \"type\"");
}

TEST(EventLine, OtherMembersAreIgnored) {
  const auto p =
      parse_event_line(R"({"v":2,"kind":"lock","extra":{"kind":"x","payload":[1]},"payload":{}})");
  ASSERT_TRUE(p.ok()) << p.error;
  EXPECT_EQ(p.kind, "lock");
  EXPECT_EQ(p.payload, R"({"dict":{}})");
}

TEST(EventLine, ErrorsSayWhatWasWrong) {
  EXPECT_EQ(error_of("not json").rfind("not JSON at offset 1: Invalid value.", 0), 0u);
  EXPECT_EQ(error_of(R"({"kind":"final","payload":1)").rfind("not JSON at offset 27", 0), 0u);
  EXPECT_NE(error_of(R"({"kind":"final","payload":1} x)").find("not JSON"), std::string::npos);
  EXPECT_EQ(error_of(R"({"payload":1})"), "missing \"kind\"");
  EXPECT_EQ(error_of(R"({"kind":"final"})"), "missing \"payload\"");
  EXPECT_EQ(error_of(R"({"kind":"bogus","payload":1})"), "unknown kind \"bogus\"");
  EXPECT_EQ(error_of(R"({"kind":1,"payload":1})"), "\"kind\" is not a string");
  EXPECT_EQ(error_of(R"({"kind":["final"],"payload":1})"), "\"kind\" is not a string");
  EXPECT_EQ(error_of(R"({"kind":"final","kind":"final","payload":1})"), "duplicate \"kind\"");
  EXPECT_EQ(error_of(R"({"kind":"final","payload":[],"payload":1})"), "duplicate \"payload\"");
  EXPECT_NE(error_of(R"(["kind","final"])").find("not an object"), std::string::npos);
  EXPECT_NE(error_of("42").find("not an object"), std::string::npos);
  EXPECT_NE(error_of("").find("not JSON"), std::string::npos);
  EXPECT_EQ(error_of(R"({"kind":"final","payload":1})" + std::string(1, '\0') + " junk"),
            "NUL byte at offset 28");
  // Found by fuzz/event_line_fuzzer (fuzz/corpus/event_line/escaped_nul): an escaped NUL
  // in a string payload would have reached plugins inside a NUL-terminated payload.
  EXPECT_EQ(error_of(R"({"kind":"final","payload":"ok\u0000cut"})"),
            "payload holds U+0000 (\\u0000) at offset 2");
  EXPECT_TRUE(parse_event_line(R"({"kind":"agent","payload":{"a":"\u0000"}})").ok());
  EXPECT_NE(error_of("{\"kind\":\"final\",\"payload\":\"\xFF\"}").find("not JSON"),
            std::string::npos);
  // The bad kind is shown escaped and cut short.
  const std::string shown =
      error_of("{\"kind\":\"" + std::string(500, 'k') + "\\n\",\"payload\":1}");
  EXPECT_LT(shown.size(), 100u);
}

TEST(EventLine, HostKindsAreRefused) {
  for (const char *kind : {"status", "meta", "inputs", "lease"}) {
    const std::string line = std::string(R"({"kind":")") + kind + R"(","payload":"x"})";
    EXPECT_NE(error_of(line).find("reserved for the host"), std::string::npos) << kind;
  }
  for (const char *kind : {"agent", "upload", "debug", "stdout", "stderr", "lock", "error",
                           "action", "result", "final"}) {
    const std::string line = std::string(R"({"kind":")") + kind + R"(","payload":"x"})";
    EXPECT_TRUE(parse_event_line(line).ok()) << kind;
  }
}

TEST(EventLine, DeepNestingDoesNotRecurse) {
  const size_t depth = 200000;
  const std::string nested = std::string(depth, '[') + std::string(depth, ']');
  const auto p = parse_event_line(R"({"kind":"error","payload":)" + nested + "}");
  ASSERT_TRUE(p.ok()) << p.error;
  EXPECT_EQ(p.payload, nested);
  // serialize()'s wrapping reads without recursion too.
  const auto wrapped = parse_event_line(R"({"kind":"result","payload":)" + nested + "}");
  ASSERT_TRUE(wrapped.ok()) << wrapped.error;
  EXPECT_EQ(wrapped.payload.size(), nested.size() + depth * std::string("{\"__list__\":}").size());
  EXPECT_TRUE(parse_event_line(R"({"kind":"result","payload":1,"x":)" + nested + "}").ok());
  EXPECT_FALSE(parse_event_line(R"({"kind":"result","payload":)" + std::string(depth, '{')).ok());
}

TEST(EventLine, PayloadsAreValidUtf8) {
  // A lone surrogate escape is not UTF-8 once decoded.
  const auto p = parse_event_line(R"({"kind":"stderr","payload":"a\udc00b"})");
  ASSERT_TRUE(p.ok()) << p.error;
  EXPECT_EQ(p.payload,
            "a\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"
            "b");  // one per byte of it
  const auto pair = parse_event_line(R"({"kind":"stderr","payload":"\ud83d\ude00"})");
  EXPECT_EQ(pair.payload, "\xF0\x9F\x98\x80");
}

TEST(EventLine, ToValidUtf8) {
  using kodo::to_valid_utf8;
  EXPECT_EQ(to_valid_utf8("plain \xC3\xA9 \xF0\x9F\x98\x80"), "plain \xC3\xA9 \xF0\x9F\x98\x80");
  EXPECT_EQ(to_valid_utf8("a\xFF"
                          "b"),
            "a\xEF\xBF\xBD"
            "b");
  EXPECT_EQ(to_valid_utf8("\xC0\xAF"), "\xEF\xBF\xBD\xEF\xBF\xBD");                  // overlong
  EXPECT_EQ(to_valid_utf8("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // surrogate
  EXPECT_EQ(to_valid_utf8("\xE2\x82"), "\xEF\xBF\xBD");                              // cut short
  const std::string replacement = "\xEF\xBF\xBD";
  EXPECT_EQ(to_valid_utf8("\xF4\x90\x80\x80"),
            replacement + replacement + replacement + replacement);  // above U+10FFFF
  EXPECT_EQ(to_valid_utf8(std::string("a\0b", 3)), std::string("a\0b", 3));
}

TEST(EventLine, BlankAndQuote) {
  EXPECT_TRUE(kodo::is_blank_line(""));
  EXPECT_TRUE(kodo::is_blank_line(" \t\r"));
  EXPECT_FALSE(kodo::is_blank_line(" x"));
  EXPECT_EQ(kodo::quote_excerpt("a\"b\x01"), "\"a\\x22b\\x01\"");
  EXPECT_EQ(kodo::quote_excerpt("abcdef", 3), "\"abc...\"");
}

// Any bytes at all: no crash, no sanitizer report, and an accepted line is always sane.
TEST(EventLine, FuzzRandomBytesAndMutations) {
  std::mt19937 rng(12345);
  const std::string seeds[] = {
      R"({"kind":"result","payload":{"a":[1,2.5e-3,"x\u00e9",true,null,{}]}})",
      R"({"kind":"final","payload":"done"})",
      R"({"kind":"agent","payload":[[[[{"k":[-1e400]}]]]]})",
  };
  static const char letters[] = "{}[]\",:\\/ute0123456789.-+eE \t\r\xC3\xA9\xFF\x80\0nulltrfas";
  const std::string alphabet(letters, sizeof letters - 1);
  for (int i = 0; i < 40000; ++i) {
    std::string line;
    if (i % 4 == 0) {
      const size_t n = rng() % 64;
      for (size_t k = 0; k < n; ++k) line += static_cast<char>(rng() & 0xFF);
    } else {
      line = seeds[rng() % 3];
      const int edits = 1 + static_cast<int>(rng() % 4);
      for (int e = 0; e < edits; ++e) {
        const size_t at = rng() % (line.size() + 1);
        switch (rng() % 3) {
          case 0: line.insert(at, 1, alphabet[rng() % alphabet.size()]); break;
          case 1:
            if (at < line.size()) line.erase(at, 1);
            break;
          default:
            if (at < line.size()) line[at] = alphabet[rng() % alphabet.size()];
            break;
        }
      }
    }
    const auto p = parse_event_line(line);
    if (p.ok()) {
      EXPECT_FALSE(p.kind.empty());
      EXPECT_EQ(kodo::to_valid_utf8(p.payload), p.payload);
    } else {
      EXPECT_FALSE(p.error.empty());
    }
  }
}

}  // namespace
