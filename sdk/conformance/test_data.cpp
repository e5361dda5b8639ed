// test_data.cpp: the events the cases write, and comparisons whose failures name the
// contract and the exact event that broke it.
#include "conformance.hpp"

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <random>
#include <set>
#include <sstream>

namespace kodo::conformance {

namespace {

uint64_t random_bits() {
  static thread_local std::mt19937_64 engine{std::random_device{}()};
  return engine();
}

}  // namespace

std::string object_id(uint32_t seconds) {
  // Like a bson ObjectId: time, a per-process random part, a counter.
  static const uint64_t process_part = random_bits() & 0xffffffffffull;
  static std::atomic<uint32_t> counter{static_cast<uint32_t>(random_bits())};
  char text[25];  // every field is masked to its width: always 24 characters
  const int n = std::snprintf(text, sizeof text, "%08x%010llx%06x", seconds,
                              static_cast<unsigned long long>(process_part),
                              counter.fetch_add(1) & 0xffffffu);
  return std::string(text, n == 24 ? 24 : 0);
}

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string fresh_fid() {
  return object_id(static_cast<uint32_t>(now_seconds()));
}

std::string fresh_name(const std::string &prefix) {
  char suffix[9];
  const int n = std::snprintf(suffix, sizeof suffix, "%08x", static_cast<unsigned>(random_bits()));
  return prefix + "-" + std::string(suffix, n == 8 ? 8 : 0);
}

std::vector<Event> make_events(const std::string &fid, const std::string &username, int64_t first,
                               int64_t count, const std::string &kind, double start_time) {
  std::vector<Event> events;
  events.reserve(static_cast<size_t>(count));
  for (int64_t seq = first; seq < first + count; ++seq) {
    Event e;
    e.fid = fid;
    e.username = username;
    e.seq = seq;
    e.timestamp = start_time + static_cast<double>(seq);
    e.kind = kind;
    e.payload = "event " + std::to_string(seq) + " of " + fid;
    events.push_back(std::move(e));
  }
  return events;
}

std::string utf8_sample() {
  return "Grüße, Ωμέγα, Привет, 日本語テキスト, 한국어, עברית, العربية, हिन्दी; "
         "e\u0301 (combining), 🚀🧪👩‍💻 (4-byte and joined); "
         "quotes \" ' ` backslash \\ tab\t newline\n CRLF\r\n {\"json\": [1, 2]} <xml/> %s %n";
}

std::string large_payload(size_t bytes) {
  std::string text;
  text.reserve(bytes);
  uint32_t state = 12345;
  while (text.size() < bytes) {
    state = state * 1103515245u + 12345u;  // a cheap generator: no short period
    text.push_back(static_cast<char>(' ' + (state >> 16) % 95));
  }
  return text;
}

std::string describe_seqs(const std::vector<Event> &events) {
  std::ostringstream out;
  out << "[";
  for (size_t i = 0; i < events.size(); ++i) {
    if (i == 12 && events.size() > 16) {
      out << ", ... (" << events.size() - 14 << " more)";
      i = events.size() - 2;
    }
    out << (i ? ", " : "") << events[i].seq;
  }
  out << "]";
  return out.str();
}

bool expect_same_events(const std::string &contract, const char *verb,
                        const std::vector<Event> &got, const std::vector<Event> &want) {
  using Key = std::pair<std::string, int64_t>;
  std::map<Key, const Event *> wanted;
  for (const auto &e : want) wanted[{e.fid, e.seq}] = &e;
  std::map<Key, int> seen;
  std::map<std::string, int64_t> last_seq;
  std::set<std::string> disordered;  // one order failure per fid says enough
  // The first few problems are reported one by one, the rest counted, so a plugin that is
  // wrong about every event gives a readable report.
  constexpr size_t kReported = 6;
  size_t problems = 0;
  auto fail = [&](const std::string &problem) {
    if (++problems <= kReported) ADD_FAILURE() << contract << ": " << problem;
  };
  for (const auto &e : got) {
    const std::string where = "seq " + std::to_string(e.seq) + " of fid " + e.fid;
    if (++seen[{e.fid, e.seq}] == 2) fail(where + " " + verb + " twice");
    auto last = last_seq.find(e.fid);
    if (last != last_seq.end() && e.seq < last->second && disordered.insert(e.fid).second)
      fail("events out of seq order: " + where + " came after seq " + std::to_string(last->second) +
           " (got " + describe_seqs(got) + ")");
    last_seq[e.fid] = e.seq;
    auto it = wanted.find({e.fid, e.seq});
    if (it == wanted.end()) {
      fail(where + " was " + verb + " but never sent");
      continue;
    }
    const Event &w = *it->second;
    if (e.username != w.username)
      fail(where + " has username '" + e.username + "', expected '" + w.username + "'");
    if (e.kind != w.kind) fail(where + " has kind '" + e.kind + "', expected '" + w.kind + "'");
    // 10 µs: a backend may keep timestamps as text with microseconds.
    if (std::fabs(e.timestamp - w.timestamp) > 1e-5) {
      std::ostringstream message;
      message.precision(17);
      message << where << " has timestamp " << e.timestamp << ", expected " << w.timestamp;
      fail(message.str());
    }
    if (e.payload != w.payload) {
      size_t at = 0;
      while (at < e.payload.size() && at < w.payload.size() && e.payload[at] == w.payload[at]) ++at;
      fail(where + " payload is not byte-exact: " + std::to_string(e.payload.size()) +
           " bytes instead of " + std::to_string(w.payload.size()) + ", first difference at byte " +
           std::to_string(at));
    }
  }
  for (const auto &[key, event] : wanted)
    if (!seen.count(key))
      fail("seq " + std::to_string(key.second) + " of fid " + key.first + " was never " + verb +
           " (got " + describe_seqs(got) + ")");
  if (problems > kReported)
    ADD_FAILURE() << contract << ": and " << problems - kReported << " more problems like these";
  return problems == 0;
}

}  // namespace kodo::conformance
