// kodosumi_payload.cpp: see kodosumi_payload.hpp.
#include "core/kodosumi_payload.hpp"

#include "core/json_bounded.hpp"

#include <rapidjson/memorystream.h>
#include <rapidjson/reader.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

namespace kodo {

namespace {

using rapidjson::SizeType;
using JsonWriter = rapidjson::Writer<rapidjson::StringBuffer>;

// Rewrites a JSON value as serialize() would: the root value and, inside a list, each item
// gets its {"<type>": ...} wrapper; a dict's members are left as they are (serialize() does
// not descend into dicts). Driven by the iterative reader, so depth costs no stack.
class Serializer {
 public:
  explicit Serializer(rapidjson::StringBuffer &out) : w_(out) {}

  bool Null() {
    if (!wrap_next()) return w_.Null();
    open("TypeError");
    return w_.String("None") && w_.EndObject();
  }
  bool Bool(bool b) {
    return scalar("bool", [&] { return w_.Bool(b); });
  }
  bool RawNumber(const char *s, SizeType n, bool) {
    const std::string_view text(s, n);
    const bool is_float = text.find_first_of(".eE") != std::string_view::npos;
    return scalar(is_float ? "float" : "int",
                  [&] { return w_.RawValue(s, n, rapidjson::kNumberType); });
  }
  bool String(const char *s, SizeType n, bool) {
    return scalar("str", [&] { return w_.String(s, n); });
  }
  bool Key(const char *s, SizeType n, bool) { return w_.Key(s, n); }
  bool StartObject() {
    const bool wrapped = wrap_next();
    if (wrapped) open("dict");
    wraps_items_.push_back(false);
    wrapped_.push_back(wrapped);
    return w_.StartObject();
  }
  bool EndObject(SizeType) { return close(w_.EndObject()); }
  bool StartArray() {
    // A list is resolved item by item only where serialize() resolves it: at the root or
    // inside another resolved list; a list inside a dict stays as it is.
    const bool wrapped = wrap_next();
    if (wrapped) open("__list__");
    wraps_items_.push_back(wrapped);
    wrapped_.push_back(wrapped);
    return w_.StartArray();
  }
  bool EndArray(SizeType) { return close(w_.EndArray()); }
  // Required by the handler concept; kParseNumbersAsStringsFlag sends RawNumber instead.
  bool Int(int) { return false; }
  bool Uint(unsigned) { return false; }
  bool Int64(int64_t) { return false; }
  bool Uint64(uint64_t) { return false; }
  bool Double(double) { return false; }

 private:
  bool wrap_next() const { return wraps_items_.empty() || wraps_items_.back(); }
  void open(const char *type) {
    w_.StartObject();
    w_.Key(type);
  }
  template <typename Write>
  bool scalar(const char *type, Write write) {
    if (!wrap_next()) return write();
    open(type);
    return write() && w_.EndObject();
  }
  bool close(bool ok) {
    const bool wrapped = wrapped_.back();
    wrapped_.pop_back();
    wraps_items_.pop_back();
    return ok && (!wrapped || w_.EndObject());
  }

  JsonWriter w_;
  std::vector<bool> wraps_items_;  // per open container: are its items wrapped
  std::vector<bool> wrapped_;      // per open container: does a wrapper close with it
};

}  // namespace

bool is_serialized_kind(std::string_view kind) {
  for (const char *k :
       {"inputs", "meta", "agent", "upload", "final", "action", "result", "lock", "lease"})
    if (kind == k) return true;
  return false;
}

std::string kodosumi_serialize_json(std::string_view json) {
  rapidjson::StringBuffer out;
  Serializer handler(out);
  rapidjson::Reader reader;
  rapidjson::MemoryStream stream(json.data(), json.size());
  constexpr unsigned flags = rapidjson::kParseIterativeFlag |
                             rapidjson::kParseValidateEncodingFlag |
                             rapidjson::kParseNumbersAsStringsFlag;
  if (reader.Parse<flags>(stream, handler).IsError())
    return kodosumi_serialize_string(json);  // not JSON after all: kept, as text
  return std::string(out.GetString(), out.GetSize());
}

std::string kodosumi_serialize_string(std::string_view text) {
  rapidjson::StringBuffer out;
  JsonWriter w(out);
  w.StartObject();
  w.Key("str");
  w.String(text.data(), static_cast<SizeType>(text.size()));
  w.EndObject();
  return std::string(out.GetString(), out.GetSize());
}

std::string kodosumi_typed(std::string_view type_name, std::string_view json) {
  rapidjson::StringBuffer out;
  JsonWriter w(out);
  w.StartObject();
  w.Key(type_name.data(), static_cast<SizeType>(type_name.size()));
  w.RawValue(json.data(), json.size(), rapidjson::kObjectType);
  w.EndObject();
  return std::string(out.GetString(), out.GetSize());
}

bool read_dict_payload(std::string_view payload, size_t max_depth, rapidjson::Document &out) {
  rapidjson::Document parsed;
  if (parse_json_bounded(payload, max_depth, parsed) != JsonRead::Ok || !parsed.IsObject())
    return false;
  auto dict = parsed.FindMember("dict");
  if (parsed.MemberCount() == 1 && dict != parsed.MemberEnd() && dict->value.IsObject()) {
    out.CopyFrom(dict->value, out.GetAllocator());
  } else {
    out.Swap(parsed);
  }
  return true;
}

std::string python_float_repr(double value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value < 0 ? "-inf" : "inf";
  char buf[64];
  // The shortest digits that read back the same, as d.ddde±X.
  const auto result = std::to_chars(buf, buf + sizeof buf, value, std::chars_format::scientific);
  const std::string_view text(buf, static_cast<size_t>(result.ptr - buf));
  const size_t e = text.find('e');
  std::string_view mantissa = text.substr(0, e);
  // to_chars writes the exponent as e+NN or e-NN.
  std::string_view exponent_text = text.substr(e + 1);
  const bool negative_exponent = exponent_text.front() == '-';
  exponent_text.remove_prefix(1);
  int exponent = 0;
  std::from_chars(exponent_text.data(), exponent_text.data() + exponent_text.size(), exponent);
  if (negative_exponent) exponent = -exponent;
  std::string out;
  if (!mantissa.empty() && mantissa.front() == '-') {
    out += '-';
    mantissa.remove_prefix(1);
  }
  std::string digits;
  for (char c : mantissa)
    if (c != '.') digits += c;
  if (exponent < -4 || exponent >= 16) {
    out += digits.substr(0, 1);
    if (digits.size() > 1) out.append(".").append(digits.substr(1));
    char exp[16];
    (void)std::snprintf(exp, sizeof exp, "e%c%02d", exponent < 0 ? '-' : '+', std::abs(exponent));
    return out + exp;
  }
  const int point = exponent + 1;  // digits before the decimal point
  if (point <= 0) return out + "0." + std::string(static_cast<size_t>(-point), '0') + digits;
  const auto whole = static_cast<size_t>(point);
  if (whole >= digits.size()) return out + digits + std::string(whole - digits.size(), '0') + ".0";
  return out + digits.substr(0, whole) + "." + digits.substr(whole);
}

}  // namespace kodo
