// payload.hpp: what crosses Temporal between kodo and any other client: the fork's job input and
// result as JSON in payloads with metadata encoding "json/plain", so the temporal CLI, its UI and
// the Python SDK read and write them as they are.
#pragma once

#include <string>

#include "temporal/api/common/v1/message.pb.h"

namespace kodo::temporal {

// The fork's job input. `inputs` and `extra` are JSON text of any shape (default "{}").
struct JobInput {
  std::string fid;
  std::string username;
  std::string app_url;
  std::string entry_point;
  std::string panel_url;
  std::string jwt;
  std::string inputs = "{}";
  std::string extra = "{}";
  double execution_timeout = 3600;
};

// The fork's result: status "finished" or "error"; error is empty unless status is "error".
struct JobResult {
  std::string fid;
  std::string status;
  std::string error;
};

// A payload holding `json` as json/plain.
::temporal::api::common::v1::Payload json_payload(const std::string &json);
// The JSON text of a payload; throws std::runtime_error naming `what` unless it is json/plain
// (or carries no encoding, as the Python SDK's null payloads do).
std::string payload_json(const ::temporal::api::common::v1::Payload &payload, const char *what);

std::string to_json(const JobInput &input);
// Throws std::runtime_error naming the field that is missing or of the wrong type.
JobInput job_input_from_json(const std::string &json);
std::string to_json(const JobResult &result);
JobResult job_result_from_json(const std::string &json);

// JSON string literal (with quotes) for `text`.
std::string json_string(const std::string &text);

}  // namespace kodo::temporal
