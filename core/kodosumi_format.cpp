// kodosumi_format.cpp: see kodosumi_format.hpp.
#include "core/kodosumi_format.hpp"

#include "core/json_bounded.hpp"
#include "core/kodosumi_payload.hpp"

#include <cmark.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <optional>
#include <vector>

namespace kodo {

namespace {

// ---- Markdown, as kodosumi's md(): Python-Markdown with nl2br and fenced code -------------

std::string markdown(const std::string &text) {
  // nl2br: a line break inside a paragraph is a <br />; raw HTML passes, as in kodosumi.
  std::unique_ptr<char, decltype(&std::free)> html(
      cmark_markdown_to_html(text.data(), text.size(), CMARK_OPT_HARDBREAKS | CMARK_OPT_UNSAFE),
      &std::free);
  std::string out = html ? html.get() : "";
  while (!out.empty() && out.back() == '\n') out.pop_back();  // Python-Markdown ends bare
  return out;
}

// Python's textwrap.dedent: the whitespace every non-blank line starts with is removed;
// lines of only whitespace become empty.
std::string dedent(const std::string &text) {
  std::vector<std::string> lines;
  size_t start = 0;
  for (;;) {
    const size_t nl = text.find('\n', start);
    lines.push_back(text.substr(start, nl == std::string::npos ? nl : nl - start));
    if (nl == std::string::npos) break;
    start = nl + 1;
  }
  std::optional<std::string> margin;
  for (const auto &line : lines) {
    const size_t indent = line.find_first_not_of(" \t");
    if (indent == std::string::npos) continue;
    const std::string lead = line.substr(0, indent);
    if (!margin) {
      margin = lead;
    } else {
      size_t common = 0;
      while (common < margin->size() && common < lead.size() && (*margin)[common] == lead[common])
        ++common;
      margin->resize(common);
    }
  }
  std::string out;
  for (size_t i = 0; i < lines.size(); ++i) {
    const std::string &line = lines[i];
    if (line.find_first_not_of(" \t") == std::string::npos) {
      // blank: nothing kept
    } else if (margin) {
      out += line.substr(margin->size());
    } else {
      out += line;
    }
    if (i + 1 < lines.size()) out += '\n';
  }
  return out;
}

// ---- Python's str() and repr() of a JSON value, as kodosumi's f"<pre>{values}</pre>" -----

void append_code_point_escape(std::string &out, unsigned cp) {
  char buf[12];
  if (cp < 0x100)
    (void)std::snprintf(buf, sizeof buf, "\\x%02x", cp);
  else
    (void)std::snprintf(buf, sizeof buf, "\\u%04x", cp);
  out += buf;
}

std::string python_str_repr(const std::string &s) {
  const bool has_single = s.find('\'') != std::string::npos;
  const bool has_double = s.find('"') != std::string::npos;
  const char quote = has_single && !has_double ? '"' : '\'';
  std::string out(1, quote);
  for (size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c == static_cast<unsigned char>(quote) || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7f) {
      append_code_point_escape(out, c);
    } else if (c == 0xc2 && i + 1 < s.size() && static_cast<unsigned char>(s[i + 1]) >= 0x80 &&
               static_cast<unsigned char>(s[i + 1]) <= 0xa0) {
      // U+0080..U+00A0: not printable for Python, so escaped.
      append_code_point_escape(out, static_cast<unsigned char>(s[i + 1]));
      ++i;
    } else {
      out += static_cast<char>(c);
    }
  }
  out += quote;
  return out;
}

std::string python_number(const rapidjson::Value &v) {
  if (v.IsInt64()) return std::to_string(v.GetInt64());
  if (v.IsUint64()) return std::to_string(v.GetUint64());
  return python_float_repr(v.GetDouble());
}

std::string python_repr(const rapidjson::Value &v) {
  if (v.IsNull()) return "None";
  if (v.IsBool()) return v.GetBool() ? "True" : "False";
  if (v.IsNumber()) return python_number(v);
  if (v.IsString()) return python_str_repr(std::string(v.GetString(), v.GetStringLength()));
  std::string out;
  if (v.IsArray()) {
    out += '[';
    for (auto it = v.Begin(); it != v.End(); ++it) {
      if (it != v.Begin()) out += ", ";
      out += python_repr(*it);  // depth bounded by the bounded parse
    }
    return out + ']';
  }
  out += '{';
  for (auto it = v.MemberBegin(); it != v.MemberEnd(); ++it) {
    if (it != v.MemberBegin()) out += ", ";
    out += python_str_repr(std::string(it->name.GetString(), it->name.GetStringLength()));
    out += ": ";
    out += python_repr(it->value);
  }
  return out + '}';
}

std::string python_str(const rapidjson::Value &v) {
  return v.IsString() ? std::string(v.GetString(), v.GetStringLength()) : python_repr(v);
}

// ---- kodosumi's model renderers ----------------------------------------------------------

// values.get(key) when it is a non-empty string (Python's truthiness for the text fields).
std::optional<std::string> text_of(const rapidjson::Value &values, const char *key) {
  if (!values.IsObject()) return std::nullopt;
  auto it = values.FindMember(key);
  if (it == values.MemberEnd() || !it->value.IsString() || it->value.GetStringLength() == 0)
    return std::nullopt;
  return std::string(it->value.GetString(), it->value.GetStringLength());
}

std::string string_or(const rapidjson::Value &values, const char *key, const std::string &dflt) {
  if (!values.IsObject()) return dflt;
  auto it = values.FindMember(key);
  if (it == values.MemberEnd()) return dflt;
  return python_str(it->value);
}

std::string title_div(const std::string &level, const std::string &title) {
  return "<div class=\"" + level + "\"><span class=\"info-text\">" + title + "</span></div>";
}

std::string join(const std::vector<std::string> &parts) {
  std::string out;
  for (size_t i = 0; i < parts.size(); ++i) {
    if (i) out += '\n';
    out += parts[i];
  }
  return out;
}

std::string agent_finish(const rapidjson::Value &values, const std::string &title) {
  std::vector<std::string> parts{title_div("info-l1", title)};
  // kodosumi's own markup, stray quote included, so that its panel sees the same HTML.
  if (auto thought = text_of(values, "thought"))
    parts.push_back(title_div("info-l2", "Thought") + "\"" + markdown(*thought));
  if (auto text = text_of(values, "text"))
    parts.push_back(markdown(*text));
  else if (auto output = text_of(values, "output"))
    parts.push_back(markdown(*output));
  return join(parts);
}

std::string task_output(const rapidjson::Value &values) {
  std::vector<std::string> parts{title_div("info-l1", "Task Output")};
  const std::string agent = string_or(values, "agent", "unnamed agent");
  if (auto name = text_of(values, "name"))
    parts.push_back(title_div("info-l2", *name + " (" + agent + ")"));
  else
    parts.push_back(title_div("info-l2", agent));
  if (auto description = text_of(values, "description"))
    parts.push_back(
        "<div class=\"info-l3\"><span class=\"info-text\">Task Description:</span> "
        "</div><em>" +
        *description + "</em>");
  if (auto raw = text_of(values, "raw")) parts.push_back(markdown(*raw));
  return join(parts);
}

std::optional<std::string> render_model(const std::string &type, const rapidjson::Value &values) {
  if (!values.IsObject()) return std::nullopt;  // kodosumi's renderers take dicts
  if (type == "AgentFinish") return agent_finish(values, "Agent Finish");
  if (type == "AgentAction") return agent_finish(values, "Agent Action");
  if (type == "ToolResult") {
    std::vector<std::string> parts{title_div("info-l1", "Tool Result")};
    if (auto result = text_of(values, "result")) parts.push_back(markdown(*result));
    return join(parts);
  }
  if (type == "TaskOutput") return task_output(values);
  if (type == "CrewOutput") {
    std::vector<std::string> parts{title_div("info-l1", "Crew Output")};
    if (auto raw = text_of(values, "raw"))
      parts.push_back(markdown(*raw));
    else
      parts.push_back("no output found");
    auto tasks = values.FindMember("tasks_output");
    if (tasks != values.MemberEnd() && tasks->value.IsArray())
      for (const auto &task : tasks->value.GetArray()) parts.push_back(task_output(task));
    return join(parts);
  }
  if (type == "Text")
    return "<blockquote><code>" + string_or(values, "body", "") + "</code></blockquote>";
  if (type == "HTML") return string_or(values, "body", "");
  if (type == "Markdown") return markdown(dedent(string_or(values, "body", "")));
  return std::nullopt;
}

std::optional<std::string> object_to_html(const std::string &message, size_t max_depth) {
  rapidjson::Document doc;
  if (parse_json_bounded(message, max_depth, doc) != JsonRead::Ok || !doc.IsObject())
    return std::nullopt;
  std::vector<std::string> parts;
  for (const auto &member : doc.GetObject()) {
    const std::string type(member.name.GetString(), member.name.GetStringLength());
    if (auto html = render_model(type, member.value)) {
      parts.push_back(*html);
    } else {
      parts.push_back(title_div("info-l1", type));
      parts.push_back("<pre>" + python_str(member.value) + "</pre>");
    }
  }
  return join(parts);
}

// ---- YAML, as PyYAML's safe_dump(allow_unicode=True) --------------------------------------

void emit_yaml(YAML::Emitter &out, const rapidjson::Value &v) {
  if (v.IsObject()) {
    // safe_dump sorts keys.
    std::map<std::string, const rapidjson::Value *> sorted;
    for (const auto &m : v.GetObject())
      sorted.emplace(std::string(m.name.GetString(), m.name.GetStringLength()), &m.value);
    if (sorted.empty()) {
      out << YAML::Flow << YAML::BeginMap << YAML::EndMap;
      return;
    }
    out << YAML::BeginMap;
    for (const auto &[key, value] : sorted) {
      out << YAML::Key << key << YAML::Value;
      emit_yaml(out, *value);  // depth bounded by the bounded parse
    }
    out << YAML::EndMap;
  } else if (v.IsArray()) {
    if (v.Empty()) {
      out << YAML::Flow << YAML::BeginSeq << YAML::EndSeq;
      return;
    }
    out << YAML::BeginSeq;
    for (const auto &item : v.GetArray()) emit_yaml(out, item);
    out << YAML::EndSeq;
  } else if (v.IsString()) {
    out << std::string(v.GetString(), v.GetStringLength());
  } else if (v.IsBool()) {
    out << v.GetBool();
  } else if (v.IsNumber()) {
    out << python_number(v);
  } else {
    out << YAML::Null;
  }
}

std::optional<std::string> dict_to_yaml(const std::string &message, size_t max_depth) {
  rapidjson::Document doc;
  if (parse_json_bounded(message, max_depth, doc) != JsonRead::Ok || !doc.IsObject())
    return std::nullopt;
  YAML::Emitter out;
  out.SetNullFormat(YAML::LowerNull);
  out.SetBoolFormat(YAML::TrueFalseBool);
  emit_yaml(out, doc);
  if (!out.good()) return std::nullopt;
  return std::string(out.c_str()) + "\n";
}

// ---- ANSI to HTML, as ansi2html ------------------------------------------------------------

constexpr int kReset = 0, kForeground = 38, kBackground = 48, kForegroundDefault = 39,
              kBackgroundDefault = 49, k256 = 5, kTrueColor = 2;

struct AnsiState {
  int intensity = 22, style = 23, blink = 25, underline = 24, crossed = 29, visibility = 28,
      negative = 27;
  std::pair<int, std::string> fg{kForegroundDefault, ""}, bg{kBackgroundDefault, ""};
  bool inside_span = false;

  void reset() {
    const bool inside = inside_span;
    *this = AnsiState();
    inside_span = inside;
  }
  void adjust(int code, const std::string &parameter) {
    if (code == 1 || code == 2 || code == 22)
      intensity = code;
    else if (code == 3 || code == 23)
      style = code;
    else if (code == 5 || code == 6 || code == 25)
      blink = code;
    else if (code == 4 || code == 24)
      underline = code;
    else if (code == 9 || code == 29)
      crossed = code;
    else if (code == 28 || code == 8)
      visibility = code;
    else if ((code >= 30 && code <= 37) || (code >= 90 && code <= 97) || code == 39)
      fg = {code, ""};
    else if (code == kForeground)
      fg = {code, parameter};
    else if ((code >= 40 && code <= 47) || (code >= 100 && code <= 107) || code == 49)
      bg = {code, ""};
    else if (code == kBackground)
      bg = {code, parameter};
    else if (code == 7 || code == 27)
      negative = code;
  }
  std::string classes() const {
    std::vector<std::string> out;
    auto unless = [&](int value, int dflt) {
      if (value != dflt) out.push_back("ansi" + std::to_string(value));
    };
    unless(intensity, 22);
    unless(style, 23);
    unless(blink, 25);
    unless(underline, 24);
    unless(crossed, 29);
    unless(visibility, 28);
    const bool flip = negative == 7;
    auto color = [&](const std::pair<int, std::string> &c, int dflt, const char *neg) {
      if (c.first != dflt)
        out.push_back(std::string(flip ? "inv" : "ansi") + std::to_string(c.first) +
                      (c.second.empty() ? "" : "-" + c.second));
      else if (flip)
        out.push_back(neg);
    };
    color(fg, kForegroundDefault, "inv_background");
    color(bg, kBackgroundDefault, "inv_foreground");
    std::string joined;
    for (const auto &c : out) joined += (joined.empty() ? "" : " ") + c;
    return joined;
  }
};

// ansi2html's parameter list: runs of ';' or ':' collapse, then every part must be a whole
// number or the sequence means a reset.
std::vector<long> sgr_params(const std::string &text) {
  std::vector<long> out;
  size_t start = 0;
  std::string collapsed;
  for (char c : text)
    if (!(c == ':' || c == ';') || collapsed.empty() || collapsed.back() != c) collapsed += c;
  for (;;) {
    const size_t sep = collapsed.find_first_of(";:", start);
    const std::string part = collapsed.substr(start, sep == std::string::npos ? sep : sep - start);
    if (part.empty() || part.size() > 9) return {kReset};
    out.push_back(std::strtol(part.c_str(), nullptr, 10));
    if (sep == std::string::npos) return out;
    start = sep + 1;
  }
}

std::string three_digits(long v) {
  char buf[24];
  (void)std::snprintf(buf, sizeof buf, "%03ld", v);
  return buf;
}

void apply_sgr(const std::vector<long> &all, AnsiState &state, std::string &out) {
  std::vector<long> params = all;
  std::optional<size_t> last_reset;
  long skip_after = -1;
  for (size_t i = 0; i < params.size(); ++i) {
    if (static_cast<long>(i) <= skip_after) continue;
    if (params[i] == kReset) {
      last_reset = i;
    } else if (params[i] == kForeground || params[i] == kBackground) {
      const long id = i + 1 < params.size() ? params[i + 1] : -1;
      skip_after = static_cast<long>(i) + (id == k256 ? 2 : 4);
    }
  }
  if (last_reset) {
    params.erase(params.begin(), params.begin() + static_cast<long>(*last_reset) + 1);
    if (state.inside_span) {
      state.inside_span = false;
      out += "</span>";
    }
    state.reset();
    if (params.empty()) return;
  }
  skip_after = -1;
  for (size_t i = 0; i < params.size(); ++i) {
    if (static_cast<long>(i) <= skip_after) continue;
    const long v = params[i];
    const bool x_bit = v == kForeground || v == kBackground;
    const long id = i + 1 < params.size() ? params[i + 1] : -1;
    std::string parameter;
    if (x_bit && id == k256) {
      if (i + 2 >= params.size()) continue;
      parameter = std::to_string(params[i + 2]);
      skip_after = static_cast<long>(i) + 2;
    } else if (x_bit && id == kTrueColor) {
      if (i + 4 >= params.size()) continue;
      const std::string rgb =
          three_digits(params[i + 2]) + three_digits(params[i + 3]) + three_digits(params[i + 4]);
      if (v == kForeground)
        state.fg = {static_cast<int>(v), rgb};
      else
        state.bg = {static_cast<int>(v), rgb};
      skip_after = static_cast<long>(i) + 4;
      continue;
    }
    state.adjust(static_cast<int>(v), parameter);
  }
  if (state.inside_span) {
    out += "</span>";
    state.inside_span = false;
  }
  const std::string classes = state.classes();
  if (classes.empty()) return;
  out += "<span class=\"" + classes + "\">";
  state.inside_span = true;
}

// VT100 line drawing ("ESC ( 0" on, "ESC ( B" off): these ASCII letters are box parts.
std::string box_char(char c) {
  switch (c) {
    case 'q': return "\u2500";
    case 't': return "\u251c";
    case 'u': return "\u2524";
    case 'v': return "\u2534";
    case 'w': return "\u252c";
    case 'x': return "\u2502";
    case 'j': return "\u2518";
    case 'k': return "\u2510";
    case 'l': return "\u250c";
    case 'm': return "\u2514";
    case 'n': return "\u253c";
    default: return std::string(1, c);
  }
}

}  // namespace

std::string ansi_to_html(std::string_view text) {
  std::string escaped;
  for (char c : text) {
    if (c == '&')
      escaped += "&amp;";
    else if (c == '<')
      escaped += "&lt;";
    else if (c == '>')
      escaped += "&gt;";
    else
      escaped += c;
  }
  std::string boxed;
  bool box = false;
  for (size_t i = 0; i < escaped.size(); ++i) {
    if (escaped[i] == '\033' && i + 2 < escaped.size() && escaped[i + 1] == '(' &&
        (escaped[i + 2] == 'B' || escaped[i + 2] == '0')) {
      box = escaped[i + 2] == '0';
      i += 2;
    } else {
      boxed += box ? box_char(escaped[i]) : std::string(1, escaped[i]);
    }
  }
  std::string out;
  AnsiState state;
  for (size_t i = 0; i < boxed.size(); ++i) {
    if (boxed[i] == '\033' && i + 1 < boxed.size() && boxed[i + 1] == '[') {
      size_t j = i + 2;
      while (j < boxed.size() && (std::isdigit(static_cast<unsigned char>(boxed[j])) ||
                                  boxed[j] == ';' || boxed[j] == ':'))
        ++j;
      // ansi2html's final byte: [a-zA-z], which takes [\]^_` too.
      if (j < boxed.size() && boxed[j] >= 'A' && boxed[j] <= 'z') {
        const char command = boxed[j];
        if (command == 'm' || command == 'M')
          apply_sgr(sgr_params(boxed.substr(i + 2, j - i - 2)), state, out);
        i = j;
        continue;
      }
    }
    out += boxed[i];
  }
  if (state.inside_span) out += "</span>";
  return out;
}

std::string kodosumi_format(std::string_view kind, const std::string &message, size_t max_depth) {
  std::optional<std::string> formatted;
  if (kind == "inputs")
    formatted = dict_to_yaml(message, max_depth);
  else if (kind == "stdout" || kind == "stderr")
    formatted = ansi_to_html(message);
  else if (kind == "action" || kind == "result" || kind == "final")
    formatted = object_to_html(message, max_depth);
  return formatted ? *formatted : message;
}

}  // namespace kodo
