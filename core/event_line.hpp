// event_line.hpp: the one line format a flow writes to its events descriptor.
//
//   {"kind": "<kind>", "payload": <any JSON value>[, "type": "<name>"]}
//
// The payload is stored as kodosumi stores its kind (kodosumi_payload.hpp). Kinds kodosumi
// serializes (agent, upload, final, action, result, lock, lease) get serialize()'s wrapper:
// an object {"dict": {...}}, a string {"str": "..."}, a number {"int": 3} or {"float": 1.5},
// an array {"__list__": [...]}. With "type" the object payload is stored as {"<type>": ...}
// instead, which is how kodosumi stores its models (e.g. "Markdown" with {"body": "..."},
// rendered by its formatter). Plain kinds (error, stdout, stderr, debug): a string payload
// as it is (unescaped), any other value as compact JSON. Numbers keep their original text.
// Other members are ignored, so flows may carry fields a later version understands.
//
// Kinds a flow may emit: every kodosumi kind except the ones the host owns, which it emits
// itself exactly once per run and which readers take as facts about the run:
//   status  the host alone decides starting/running/finished/error;
//   meta    the run's description (the status endpoint reads it);
//   inputs  what the run was given;
//   lease   the answer to a lock, emitted when the lock is answered (locks.hpp).
// A `lock` line is a request the host turns into its own lock event (locks.hpp).
// A `final` event from the flow is what marks a successful run (with exit code 0).
#pragma once

#include <string>
#include <string_view>

namespace kodo {

struct ParsedEventLine {
  std::string kind;
  std::string payload;  // as stored
  std::string error;    // empty when the line was accepted; otherwise what was wrong
  bool ok() const { return error.empty(); }
};

// Parses one line (without its newline). Safe for any bytes: the parse is iterative (no
// recursion however deep the nesting), strings must be valid UTF-8, NUL bytes are refused
// (raw, or as a string payload's \u0000).
ParsedEventLine parse_event_line(std::string_view line);

// True for a line of nothing but JSON whitespace; the executor skips such lines.
bool is_blank_line(std::string_view line);

// Kinds the host emits itself and refuses from flows (status, meta, inputs, lease).
bool is_host_kind(std::string_view kind);

// The bytes as UTF-8 text: valid UTF-8 comes back unchanged, each invalid sequence (and
// each encoded surrogate) becomes U+FFFD. Event payloads are UTF-8 text by contract.
std::string to_valid_utf8(std::string_view bytes);

// The bytes as they can appear inside a message: quoted, printable ASCII kept, anything
// else escaped as \xNN, cut to about max_bytes with "..." when longer.
std::string quote_excerpt(std::string_view bytes, size_t max_bytes = 120);

}  // namespace kodo
