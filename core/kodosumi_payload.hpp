// kodosumi_payload.hpp: payloads in the form kodosumi stores them, so that kodosumi's own
// readers (timeline, status page, panel script, formatter) read kodo's events as theirs.
//
// kodosumi 1.1.0 stores most payloads through `kodosumi.helper.serialize()`: a value becomes
// {"<type name>": value}, e.g. {"dict": {...}}, {"str": "..."}, {"int": 3}, {"float": 1.5},
// {"bool": true}, {"__list__": [each item wrapped the same way]}, a model {"<Class>": {...}}.
// Which kinds go through it (kodosumi/runner/main.py, kodosumi/runner/tracer.py): inputs,
// meta, agent, upload, final, action, result, lock, lease. status, error, stdout, stderr and
// debug are plain text.
#pragma once

#include <rapidjson/document.h>

#include <string>
#include <string_view>

namespace kodo {

// True for the kinds kodosumi stores through serialize().
bool is_serialized_kind(std::string_view kind);

// serialize() of a JSON value given as its text (valid JSON, any depth: read without
// recursion). Numbers keep their text; null becomes {"TypeError": "None"}, as Python's None.
std::string kodosumi_serialize_json(std::string_view json);
// serialize() of a string: {"str": "..."}.
std::string kodosumi_serialize_string(std::string_view text);
// {"<type_name>": value} for a value a flow has already typed (e.g. "Markdown" with
// {"body": ...}, which kodosumi's formatter renders); value is JSON text.
std::string kodosumi_typed(std::string_view type_name, std::string_view json);

// The object a dict payload holds: {"dict": {...}} (kodosumi's form) or a plain object (kodo
// before it stored kodosumi's form). False when the payload is neither (or nests deeper than
// max_depth).
bool read_dict_payload(std::string_view payload, size_t max_depth, rapidjson::Document &out);

// A double as Python's repr() writes it (the shortest text that reads back the same, with
// ".0" on whole numbers, exponent form below 1e-4 and from 1e16), which is how kodosumi's
// SSE frames write timestamps.
std::string python_float_repr(double value);

}  // namespace kodo
