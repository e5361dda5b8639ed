// kodosumi_test.cpp: payloads in kodosumi's stored form, Python's float repr, and the
// formatted stream form. The same against kodosumi's own code: tests/kodosumi.
#include "core/kodosumi_format.hpp"
#include "core/kodosumi_payload.hpp"

#include <gtest/gtest.h>

#include <string>

namespace {

using kodo::ansi_to_html;
using kodo::kodosumi_format;
using kodo::python_float_repr;

TEST(KodosumiPayload, PythonFloatRepr) {
  EXPECT_EQ(python_float_repr(1764441890.1234567), "1764441890.1234567");
  EXPECT_EQ(python_float_repr(1764441890.0), "1764441890.0");
  EXPECT_EQ(python_float_repr(0.5), "0.5");
  EXPECT_EQ(python_float_repr(0.0001), "0.0001");
  EXPECT_EQ(python_float_repr(0.00001), "1e-05");
  EXPECT_EQ(python_float_repr(1e16), "1e+16");
  EXPECT_EQ(python_float_repr(1.5e16), "1.5e+16");
  EXPECT_EQ(python_float_repr(123456789012345.6), "123456789012345.6");
  EXPECT_EQ(python_float_repr(-2.0), "-2.0");
  EXPECT_EQ(python_float_repr(0.0), "0.0");
  EXPECT_EQ(python_float_repr(0.1 + 0.2), "0.30000000000000004");
}

TEST(KodosumiPayload, ReadsBothDictForms) {
  rapidjson::Document doc;
  ASSERT_TRUE(kodo::read_dict_payload(R"({"dict":{"fid":"a"}})", 64, doc));
  EXPECT_STREQ(doc["fid"].GetString(), "a");
  rapidjson::Document plain;
  ASSERT_TRUE(kodo::read_dict_payload(R"({"fid":"b","x":1})", 64, plain));
  EXPECT_STREQ(plain["fid"].GetString(), "b");
  rapidjson::Document bad;
  EXPECT_FALSE(kodo::read_dict_payload("[1]", 64, bad));
  EXPECT_FALSE(kodo::read_dict_payload("not json", 64, bad));
  EXPECT_FALSE(kodo::read_dict_payload(std::string(100, '[') + std::string(100, ']'), 64, bad));
}

TEST(KodosumiFormat, InputsAsSortedYaml) {
  EXPECT_EQ(kodosumi_format("inputs", R"({"dict":{"z":1,"a":"x","n":null,"l":[true]}})", 64),
            "dict:\n  a: x\n  l:\n    - true\n  n: null\n  z: 1\n");
  EXPECT_EQ(kodosumi_format("inputs", "not json", 64), "not json");  // as stored
}

TEST(KodosumiFormat, ModelsAsKodosumiRendersThem) {
  EXPECT_EQ(kodosumi_format("result", R"({"Text":{"body":"t"}})", 64),
            "<blockquote><code>t</code></blockquote>");
  EXPECT_EQ(kodosumi_format("result", R"({"HTML":{"body":"<b>b</b>"}})", 64), "<b>b</b>");
  EXPECT_EQ(kodosumi_format("final", R"({"Markdown":{"body":"  # T\n\n  a *b*\n  c"}})", 64),
            "<h1>T</h1>\n<p>a <em>b</em><br />\nc</p>");
  // Anything else: its type name, and the value as Python's str() writes it.
  EXPECT_EQ(kodosumi_format("final", R"({"dict":{"a":[1,2.5,"it's",null,true],"b":"q\"'"}})", 64),
            "<div class=\"info-l1\"><span class=\"info-text\">dict</span></div>\n"
            "<pre>{'a': [1, 2.5, \"it's\", None, True], 'b': 'q\"\\''}</pre>");
  EXPECT_EQ(kodosumi_format("final", R"({"str":"plain"})", 64),
            "<div class=\"info-l1\"><span class=\"info-text\">str</span></div>\n<pre>plain</pre>");
  EXPECT_EQ(kodosumi_format("action", R"({"AgentFinish":{"thought":"th","output":"o"}})", 64),
            "<div class=\"info-l1\"><span class=\"info-text\">Agent Finish</span></div>\n"
            "<div class=\"info-l2\"><span class=\"info-text\">Thought</span></div>\"<p>th</p>\n"
            "<p>o</p>");
  EXPECT_EQ(kodosumi_format("status", "running", 64), "running");
  EXPECT_EQ(kodosumi_format("final", "plain text final", 64), "plain text final");
}

TEST(KodosumiFormat, AnsiToHtmlAsAnsi2html) {
  EXPECT_EQ(ansi_to_html("\033[31mred\033[0m and <b> & more"),
            "<span class=\"ansi31\">red</span> and &lt;b&gt; &amp; more");
  EXPECT_EQ(ansi_to_html("\033[1;32mbold green\033[0m"),
            "<span class=\"ansi1 ansi32\">bold green</span>");
  EXPECT_EQ(ansi_to_html("\033[38;5;196mx"), "<span class=\"ansi38-196\">x</span>");
  EXPECT_EQ(ansi_to_html("\033[48;2;1;64;255my"), "<span class=\"ansi48-001064255\">y</span>");
  EXPECT_EQ(ansi_to_html("\033[7mz"), "<span class=\"inv_background inv_foreground\">z</span>");
  EXPECT_EQ(ansi_to_html("\033[2Jclear\033[m"), "clear");  // other sequences dropped
  EXPECT_EQ(ansi_to_html("\033(0lqk\033(Bq"), "\u250c\u2500\u2510q");
  EXPECT_EQ(ansi_to_html("\033[31"), "\033[31");  // unfinished: kept
}

}  // namespace
