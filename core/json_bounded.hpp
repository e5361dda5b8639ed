// json_bounded.hpp: JSON from requests and from stored events, read without recursion on
// the stack. RapidJSON's default parser, its DOM destructor and Accept() all recurse once
// per nesting level, so 300 KB of '[' overflowed a thread's stack; here the depth is first
// checked with the iterative parser and only a document within the limit is built.
#pragma once

#include <rapidjson/document.h>

#include <cstddef>
#include <string>
#include <string_view>

namespace kodo {

constexpr size_t kDefaultJsonMaxDepth = 64;

enum class JsonRead { Ok, Invalid, TooDeep };

// Parses text into doc when it is valid JSON nested at most max_depth levels deep.
JsonRead parse_json_bounded(std::string_view text, size_t max_depth, rapidjson::Document &doc);

}  // namespace kodo
