#include "payload.hpp"

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <stdexcept>

namespace kodo::temporal {
namespace {

using rapidjson::Document;
using rapidjson::Value;

rapidjson::Document parse_object(const std::string &json, const char *what) {
  Document document;
  document.Parse(json.data(), json.size());
  if (document.HasParseError())
    throw std::runtime_error(std::string(what) + ": not valid JSON at offset " +
                             std::to_string(document.GetErrorOffset()));
  if (!document.IsObject()) throw std::runtime_error(std::string(what) + ": not a JSON object");
  return document;
}

// A string member; null or absent reads as empty unless `required`.
std::string string_member(const Value &object, const char *name, bool required, const char *what) {
  auto member = object.FindMember(name);
  if (member == object.MemberEnd() || member->value.IsNull()) {
    if (required) throw std::runtime_error(std::string(what) + ": field " + name + " is missing");
    return {};
  }
  if (!member->value.IsString())
    throw std::runtime_error(std::string(what) + ": field " + name + " is not a string");
  return {member->value.GetString(), member->value.GetStringLength()};
}

std::string serialize(const Value &value) {
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> writer(buffer);
  value.Accept(writer);
  return {buffer.GetString(), buffer.GetSize()};
}

void write_raw(rapidjson::Writer<rapidjson::StringBuffer> &writer, const std::string &json) {
  writer.RawValue(json.data(), json.size(), rapidjson::kObjectType);
}

}  // namespace

::temporal::api::common::v1::Payload json_payload(const std::string &json) {
  ::temporal::api::common::v1::Payload payload;
  (*payload.mutable_metadata())["encoding"] = "json/plain";
  payload.set_data(json);
  return payload;
}

std::string payload_json(const ::temporal::api::common::v1::Payload &payload, const char *what) {
  auto encoding = payload.metadata().find("encoding");
  if (encoding == payload.metadata().end()) return payload.data().empty() ? "null" : payload.data();
  if (encoding->second == "binary/null") return "null";
  if (encoding->second != "json/plain")
    throw std::runtime_error(std::string(what) + ": payload encoding is " + encoding->second +
                             ", expected json/plain");
  return payload.data();
}

std::string json_string(const std::string &text) {
  Value value(text.data(), static_cast<rapidjson::SizeType>(text.size()));
  return serialize(value);
}

std::string to_json(const JobInput &input) {
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> writer(buffer);
  writer.StartObject();
  auto field = [&](const char *name, const std::string &value) {
    writer.Key(name);
    writer.String(value.data(), static_cast<rapidjson::SizeType>(value.size()));
  };
  field("fid", input.fid);
  field("username", input.username);
  field("app_url", input.app_url);
  field("entry_point", input.entry_point);
  field("panel_url", input.panel_url);
  field("jwt", input.jwt);
  writer.Key("inputs");
  write_raw(writer, input.inputs);
  writer.Key("extra");
  write_raw(writer, input.extra);
  writer.Key("execution_timeout");
  writer.Double(input.execution_timeout);
  writer.EndObject();
  return {buffer.GetString(), buffer.GetSize()};
}

JobInput job_input_from_json(const std::string &json) {
  const char *what = "job input";
  Document document = parse_object(json, what);
  JobInput input;
  input.fid = string_member(document, "fid", true, what);
  input.username = string_member(document, "username", true, what);
  input.app_url = string_member(document, "app_url", false, what);
  input.entry_point = string_member(document, "entry_point", false, what);
  input.panel_url = string_member(document, "panel_url", false, what);
  input.jwt = string_member(document, "jwt", false, what);
  if (auto m = document.FindMember("inputs"); m != document.MemberEnd() && !m->value.IsNull())
    input.inputs = serialize(m->value);
  if (auto m = document.FindMember("extra"); m != document.MemberEnd() && !m->value.IsNull())
    input.extra = serialize(m->value);
  if (auto m = document.FindMember("execution_timeout");
      m != document.MemberEnd() && !m->value.IsNull()) {
    if (!m->value.IsNumber() || m->value.GetDouble() <= 0)
      throw std::runtime_error("job input: field execution_timeout is not a positive number");
    input.execution_timeout = m->value.GetDouble();
  }
  return input;
}

std::string to_json(const JobResult &result) {
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> writer(buffer);
  writer.StartObject();
  writer.Key("fid");
  writer.String(result.fid.data(), static_cast<rapidjson::SizeType>(result.fid.size()));
  writer.Key("status");
  writer.String(result.status.data(), static_cast<rapidjson::SizeType>(result.status.size()));
  writer.Key("error");
  if (result.error.empty())
    writer.Null();
  else
    writer.String(result.error.data(), static_cast<rapidjson::SizeType>(result.error.size()));
  writer.EndObject();
  return {buffer.GetString(), buffer.GetSize()};
}

JobResult job_result_from_json(const std::string &json) {
  const char *what = "job result";
  Document document = parse_object(json, what);
  return {string_member(document, "fid", false, what),
          string_member(document, "status", true, what),
          string_member(document, "error", false, what)};
}

}  // namespace kodo::temporal
