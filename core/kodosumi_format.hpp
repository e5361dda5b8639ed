// kodosumi_format.hpp: the formatted form of kodosumi's /outputs/main and /outputs/stdio
// streams, as its DefaultFormatter (kodosumi/runner/formatter.py) makes it:
//   inputs                  YAML of the stored payload (keys sorted, as PyYAML's safe_dump)
//   action, result, final   HTML, one part per member of the stored {"<type>": value}:
//                           Markdown, Text, HTML and the agent/crew models as kodosumi renders
//                           them, anything else as its type name and the value in <pre>
//   stdout, stderr          ANSI colours to HTML <span class="ansiNN">, the rest escaped
//   every other kind        as stored
// Markdown goes through cmark (CommonMark, line breaks kept as Python-Markdown's nl2br does),
// YAML through yaml-cpp. A payload that is not what its kind should hold (e.g. not JSON) is
// sent as stored, where kodosumi's formatter raises and ends the stream.
#pragma once

#include <string>
#include <string_view>

namespace kodo {

// The formatted message of one event; max_depth bounds the JSON read (deeper: as stored).
std::string kodosumi_format(std::string_view kind, const std::string &message, size_t max_depth);

// ANSI escape codes to HTML as ansi2html's Ansi2HTMLConverter().convert(text, full=False)
// does for SGR colours and styles and VT100 box drawing; '&', '<' and '>' are escaped, other
// escape sequences dropped. Any bytes in, no crash (fuzzed).
std::string ansi_to_html(std::string_view text);

}  // namespace kodo
