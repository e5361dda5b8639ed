// json_bounded.cpp: see json_bounded.hpp.
#include "core/json_bounded.hpp"

#include <rapidjson/memorystream.h>
#include <rapidjson/reader.h>

namespace kodo {

namespace {

struct DepthCheck : rapidjson::BaseReaderHandler<rapidjson::UTF8<>, DepthCheck> {
  size_t depth = 0;
  size_t max_depth = 0;
  bool too_deep = false;
  bool open() {
    if (++depth <= max_depth) return true;
    too_deep = true;
    return false;  // stops the parse at once
  }
  bool StartObject() { return open(); }
  bool StartArray() { return open(); }
  bool EndObject(rapidjson::SizeType) {
    --depth;
    return true;
  }
  bool EndArray(rapidjson::SizeType) {
    --depth;
    return true;
  }
};

}  // namespace

JsonRead parse_json_bounded(std::string_view text, size_t max_depth, rapidjson::Document &doc) {
  DepthCheck check;
  check.max_depth = max_depth;
  rapidjson::Reader reader;
  rapidjson::MemoryStream stream(text.data(), text.size());
  const rapidjson::ParseResult checked =
      reader.Parse<rapidjson::kParseIterativeFlag>(stream, check);
  if (check.too_deep) return JsonRead::TooDeep;
  if (checked.IsError()) return JsonRead::Invalid;
  doc.Parse<rapidjson::kParseIterativeFlag>(text.data(), text.size());
  return doc.HasParseError() ? JsonRead::Invalid : JsonRead::Ok;
}

}  // namespace kodo
