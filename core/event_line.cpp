// event_line.cpp: parsing a flow's event lines with RapidJSON's SAX reader, so that nothing
// recurses (iterative parse, a writer with its own heap stack) and the payload is written out
// while it is read, without building a document.
#include "core/event_line.hpp"

#include "core/event.hpp"
#include "core/kodosumi_payload.hpp"

#include <rapidjson/error/en.h>
#include <rapidjson/memorystream.h>
#include <rapidjson/reader.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <cctype>
#include <cstdint>
#include <limits>

namespace kodo {

namespace {

using rapidjson::SizeType;

// Receives the reader's events for one line: the root must be an object; "kind" must be a
// string; "payload" is kept (a string as it is, anything else through the writer); other
// members are skipped. Returning false stops the reader with error_ saying why.
class LineHandler {
 public:
  bool Null() {
    return scalar([this] { return writer_.Null(); });
  }
  bool Bool(bool b) {
    return scalar([this, b] { return writer_.Bool(b); });
  }
  // With kParseNumbersAsStringsFlag every number arrives as RawNumber; these stay for the
  // reader's handler concept.
  bool Int(int i) {
    return scalar([this, i] { return writer_.Int(i); });
  }
  bool Uint(unsigned u) {
    return scalar([this, u] { return writer_.Uint(u); });
  }
  bool Int64(int64_t i) {
    return scalar([this, i] { return writer_.Int64(i); });
  }
  bool Uint64(uint64_t u) {
    return scalar([this, u] { return writer_.Uint64(u); });
  }
  bool Double(double d) {
    return scalar([this, d] { return writer_.Double(d); });
  }
  bool RawNumber(const char *s, SizeType n, bool) {
    // Writer::RawNumber of RapidJSON 1.1 quotes the number; RawValue writes the text as read.
    return scalar([this, s, n] { return writer_.RawValue(s, n, rapidjson::kNumberType); });
  }

  bool String(const char *s, SizeType n, bool) {
    if (depth_ == 1 && member_ == Member::kind) {
      kind_.assign(s, n);
      has_kind_ = true;
      return true;
    }
    if (depth_ == 1 && member_ == Member::type) {
      type_.assign(s, n);
      has_type_ = true;
      return true;
    }
    if (depth_ == 1 && member_ == Member::payload) {
      payload_is_string_ = true;
      string_payload_.assign(s, n);
      has_payload_ = true;
      return true;
    }
    return scalar([this, s, n] { return writer_.String(s, n); });
  }

  bool StartObject() {
    if (depth_ == 0) {
      depth_ = 1;
      return true;
    }
    if (!open_container()) return false;
    return !in_payload() || writer_.StartObject();
  }
  bool Key(const char *s, SizeType n, bool) {
    if (depth_ > 1) return !in_payload() || writer_.Key(s, n);
    const std::string_view key(s, n);
    if (key == "kind") {
      if (has_kind_) return fail("duplicate \"kind\"");
      member_ = Member::kind;
    } else if (key == "payload") {
      if (has_payload_) return fail("duplicate \"payload\"");
      member_ = Member::payload;
    } else if (key == "type") {
      if (has_type_) return fail("duplicate \"type\"");
      member_ = Member::type;
    } else {
      member_ = Member::other;
    }
    return true;
  }
  bool EndObject(SizeType) {
    return close_container([this] { return writer_.EndObject(); });
  }
  bool StartArray() {
    if (depth_ == 0) return fail("the line is a JSON array, not an object");
    if (!open_container()) return false;
    return !in_payload() || writer_.StartArray();
  }
  bool EndArray(SizeType) {
    return close_container([this] { return writer_.EndArray(); });
  }

  const std::string &error() const { return error_; }
  bool has_kind() const { return has_kind_; }
  bool has_payload() const { return has_payload_; }
  const std::string &kind() const { return kind_; }
  bool has_type() const { return has_type_; }
  const std::string &type() const { return type_; }
  bool payload_is_string() const { return payload_is_string_; }
  std::string payload() const {
    return payload_is_string_ ? string_payload_
                              : std::string(buffer_.GetString(), buffer_.GetSize());
  }

 private:
  enum class Member { none, kind, payload, type, other };

  bool in_payload() const { return member_ == Member::payload; }

  bool fail(std::string why) {
    error_ = std::move(why);
    return false;
  }

  template <typename Write>
  bool scalar(Write write) {
    if (depth_ == 0) return fail("the line is a JSON scalar, not an object");
    if (depth_ == 1 && member_ == Member::kind) return fail("\"kind\" is not a string");
    if (depth_ == 1 && member_ == Member::type) return fail("\"type\" is not a string");
    if (depth_ == 1 && member_ == Member::payload) has_payload_ = true;
    return !in_payload() || write();
  }

  bool open_container() {
    if (depth_ == 1 && member_ == Member::kind) return fail("\"kind\" is not a string");
    if (depth_ == 1 && member_ == Member::type) return fail("\"type\" is not a string");
    ++depth_;
    return true;
  }

  template <typename Write>
  bool close_container(Write write) {
    --depth_;
    if (depth_ == 0) return true;  // the root object ended
    const bool ok = !in_payload() || write();
    if (depth_ == 1 && in_payload()) has_payload_ = true;
    return ok;
  }

  size_t depth_ = 0;  // 1 while directly inside the root object
  Member member_ = Member::none;
  bool has_kind_ = false;
  bool has_payload_ = false;
  bool has_type_ = false;
  bool payload_is_string_ = false;
  std::string kind_;
  std::string type_;
  std::string string_payload_;
  rapidjson::StringBuffer buffer_;
  rapidjson::Writer<rapidjson::StringBuffer> writer_{buffer_};
  std::string error_;
};

bool is_type_name(std::string_view name) {
  if (name.empty() || name.size() > 64 || std::isdigit(static_cast<unsigned char>(name[0])))
    return false;
  for (char c : name)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_') return false;
  return true;
}

// Turns the payload as written into the form kodosumi stores for its kind (see
// kodosumi_payload.hpp); the empty string, or what is wrong with the line.
std::string stored_form(const LineHandler &line, std::string &payload) {
  if (!is_serialized_kind(line.kind())) {
    if (line.has_type())
      return "\"type\" applies only to kinds kodosumi serializes, not \"" + line.kind() + "\"";
    return {};
  }
  if (line.has_type()) {
    if (!is_type_name(line.type()))
      return "\"type\" must be a name of letters, digits and '_', got " +
             quote_excerpt(line.type(), 40);
    if (line.payload_is_string() || payload.empty() || payload.front() != '{')
      return "\"type\" needs an object payload";
    payload = kodosumi_typed(line.type(), payload);
  } else {
    payload = line.payload_is_string() ? kodosumi_serialize_string(payload)
                                       : kodosumi_serialize_json(payload);
  }
  return {};
}

void append_hex(std::string &out, unsigned char c) {
  static const char digits[] = "0123456789abcdef";
  out += "\\x";
  out += digits[c >> 4];
  out += digits[c & 0xF];
}

// Length of the valid UTF-8 sequence at s[i], or 0 when invalid; *bad_len is then the length
// of its longest valid-looking prefix (at least 1), which becomes one U+FFFD.
size_t utf8_sequence(std::string_view s, size_t i, size_t *bad_len) {
  const auto c = static_cast<unsigned char>(s[i]);
  size_t len = 0;
  unsigned char lo = 0x80, hi = 0xBF;  // the range of the second byte
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) {
    len = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    len = 3;
    if (c == 0xE0) lo = 0xA0;  // no overlongs
    if (c == 0xED) hi = 0x9F;  // no surrogates
  } else if (c >= 0xF0 && c <= 0xF4) {
    len = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
  } else {
    *bad_len = 1;
    return 0;
  }
  for (size_t k = 1; k < len; ++k) {
    if (i + k >= s.size()) {
      *bad_len = k;
      return 0;
    }
    const auto b = static_cast<unsigned char>(s[i + k]);
    const unsigned char min = k == 1 ? lo : 0x80, max = k == 1 ? hi : 0xBF;
    if (b < min || b > max) {
      *bad_len = k;
      return 0;
    }
  }
  return len;
}

}  // namespace

ParsedEventLine parse_event_line(std::string_view line) {
  ParsedEventLine out;
  // RapidJSON reads a NUL as the end of input, which would hide what follows it.
  if (const size_t nul = line.find('\0'); nul != std::string_view::npos) {
    out.error = "NUL byte at offset " + std::to_string(nul);
    return out;
  }
  if (line.size() > std::numeric_limits<SizeType>::max() / 2) {
    out.error = "line of " + std::to_string(line.size()) + " bytes is too long to parse";
    return out;
  }
  LineHandler handler;
  rapidjson::Reader reader;
  rapidjson::MemoryStream stream(line.data(), line.size());
  constexpr unsigned flags = rapidjson::kParseIterativeFlag |
                             rapidjson::kParseValidateEncodingFlag |
                             rapidjson::kParseNumbersAsStringsFlag;
  const rapidjson::ParseResult result = reader.Parse<flags>(stream, handler);
  if (result.IsError()) {
    if (result.Code() == rapidjson::kParseErrorTermination && !handler.error().empty())
      out.error = handler.error();
    else
      out.error = "not JSON at offset " + std::to_string(result.Offset()) + ": " +
                  rapidjson::GetParseError_En(result.Code());
    return out;
  }
  if (!handler.has_kind()) {
    out.error = "missing \"kind\"";
  } else if (!is_known_kind(handler.kind())) {
    out.error = "unknown kind " + quote_excerpt(handler.kind(), 40);
  } else if (is_host_kind(handler.kind())) {
    out.error = "kind \"" + handler.kind() + "\" is reserved for the host";
  } else if (!handler.has_payload()) {
    out.error = "missing \"payload\"";
  } else {
    // RapidJSON 1.1 decodes a lone \uDC00-style escape into bytes that are not UTF-8.
    std::string payload = to_valid_utf8(handler.payload());
    // A string payload's \u0000 decodes to a NUL byte, which a NUL-terminated payload
    // cannot carry: a plugin reading it as a C string would store it cut short.
    if (const size_t nul = payload.find('\0'); nul != std::string::npos) {
      out.error = "payload holds U+0000 (\\u0000) at offset " + std::to_string(nul);
    } else if (const std::string why = stored_form(handler, payload); !why.empty()) {
      out.error = why;
    } else {
      out.kind = handler.kind();
      out.payload = std::move(payload);
    }
  }
  return out;
}

bool is_blank_line(std::string_view line) {
  return line.find_first_not_of(" \t\r\n") == std::string_view::npos;
}

bool is_host_kind(std::string_view kind) {
  return kind == "status" || kind == "meta" || kind == "inputs" || kind == "lease";
}

std::string to_valid_utf8(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  size_t i = 0;
  while (i < bytes.size()) {
    size_t bad = 0;
    const size_t len = utf8_sequence(bytes, i, &bad);
    if (len > 0) {
      out.append(bytes.data() + i, len);
      i += len;
    } else {
      out += "\xEF\xBF\xBD";
      i += bad;
    }
  }
  return out;
}

std::string quote_excerpt(std::string_view bytes, size_t max_bytes) {
  std::string out = "\"";
  for (size_t i = 0; i < bytes.size(); ++i) {
    if (i == max_bytes) {
      out += "...";
      break;
    }
    const auto c = static_cast<unsigned char>(bytes[i]);
    if (c >= 0x20 && c < 0x7F && c != '"' && c != '\\')
      out += static_cast<char>(c);
    else
      append_hex(out, c);
  }
  return out + "\"";
}

}  // namespace kodo
