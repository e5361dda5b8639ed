// storage_jsonl.cpp: a kodo storage backend that keeps each execution's events in one
// JSON-lines file, <dir>/<username>/<fid>.jsonl, one event per line:
//
//   {"seq":0,"timestamp":1732710000.25,"kind":"status","payload":"starting"}
//
// It is the SDK's out-of-tree example: it is built against the installed SDK alone
// (<kodo/plugin.hpp> and the C++17 standard library), plus the POSIX file calls that
// locking and single-write appends need. Read it top to bottom: names, the line format,
// file helpers, the backend, and the registration at the bottom.
//
// What an append guarantees:
//  - Idempotent on (fid, seq). Each execution that has been appended to recently keeps an
//    in-memory set of its stored seqs; an event whose seq is already there is skipped. The
//    file stays the truth: the set is rebuilt from it whenever the file's size is not the
//    size this handle last left it at (another handle wrote, or this handle forgot it).
//  - The events of one execution in a batch go to the file in ONE write() of the whole
//    group, under an exclusive flock(), onto an O_APPEND descriptor. Readers take a shared
//    flock(), so no reader ever sees half a group, and two handles (or processes) sharing a
//    directory never interleave their lines.
//  - No fsync. "Committed" means handed to the kernel: it survives the death of the
//    process but not a power cut or an OS crash, which can lose the last groups written or
//    cut the file short in the middle of one. A cut shows up as a last line without its
//    '\n': readers ignore it and the next append trims it off before writing. A crash can
//    therefore leave a group partly stored (the lines before the cut), never a broken line
//    in the middle of the file. Because the host's spooler acknowledges only after append
//    returns and append is idempotent, re-sending the batch after a restart completes it.
//
// What it does not do: keep an index on disk (a read parses the whole file), coordinate
// archive or purge with appends made by another process to the same execution, or scale to
// many thousands of users (finding a fid without its username looks in every user's folder).
#include <kodo/plugin.hpp>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

namespace {

namespace fs = std::filesystem;
using kodo::sdk::Error;

constexpr std::string_view kLiveSuffix = ".jsonl";
constexpr std::string_view kArchiveSuffix = ".jsonl.archive";

// How many executions keep their seq set in memory. Past this the whole index is dropped:
// the files are the truth, the index only saves re-reading them.
constexpr size_t kMaxIndexed = 1024;

// ---------------------------------------------------------------------------------------
// Names. A fid and a username become a file name and a folder name, so both are checked
// here even though the host checks them too: a plugin trusts nothing that crosses the ABI.
// ---------------------------------------------------------------------------------------

bool valid_name(std::string_view s) {
  return kodo::sdk::name_problem("name", s).empty();
}

using kodo::sdk::check_name;

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// ---------------------------------------------------------------------------------------
// The line format: a minimal JSON writer and reader for the four fixed fields.
// ---------------------------------------------------------------------------------------

struct Record {
  int64_t seq = 0;
  double timestamp = 0;
  std::string kind;
  std::string payload;
};

// JSON's short escapes: the character after the backslash, and what it stands for.
constexpr std::string_view kEscapeNames = "\"\\/bfnrt";
constexpr std::string_view kEscaped = "\"\\/\b\f\n\r\t";

void append_json_string(std::string &out, std::string_view s) {
  out += '"';
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    size_t k = c == '/' ? std::string_view::npos : kEscaped.find(c);  // '/' needs no escape
    if (k != std::string_view::npos) {
      out += '\\';
      out += kEscapeNames[k];
    } else if (u < 0x20) {  // other control bytes, NUL included
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(u));
      out += buf;
    } else {
      out += c;  // UTF-8 passes through as bytes
    }
  }
  out += '"';
}

// std::to_chars gives the shortest text that reads back to the same double, whatever the
// process's locale (printf would write "1,5" under a German locale).
void append_number(std::string &out, double value) {
  char buf[64];
  auto result = std::to_chars(buf, buf + sizeof buf, value);
  out.append(buf, result.ptr);
}

void append_number(std::string &out, int64_t value) {
  char buf[32];
  auto result = std::to_chars(buf, buf + sizeof buf, value);
  out.append(buf, result.ptr);
}

std::string format_line(const kodo_event &e) {
  std::string line = "{\"seq\":";
  append_number(line, e.seq);
  line += ",\"timestamp\":";
  append_number(line, e.timestamp);
  line += ",\"kind\":";
  append_json_string(line, e.kind);
  line += ",\"payload\":";
  append_json_string(line, std::string_view(e.payload ? e.payload : "", e.payload_len));
  line += "}\n";
  return line;
}

void append_utf8(std::string &out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// Reads one line written by format_line, or by hand or another tool: fields in any order,
// whitespace anywhere JSON allows it, any escape, unknown fields with scalar values skipped.
class LineReader {
 public:
  explicit LineReader(std::string_view text) : s_(text) {}

  bool read(Record &out) {
    bool has_seq = false, has_timestamp = false, has_kind = false, has_payload = false;
    if (!take('{')) return false;
    skip_space();
    if (peek() != '}') {
      do {
        std::string key;
        if (!string(key) || !take(':')) return false;
        skip_space();
        bool ok;
        if (key == "seq")
          ok = has_seq = number(out.seq);
        else if (key == "timestamp")
          ok = has_timestamp = number(out.timestamp);
        else if (key == "kind")
          ok = has_kind = string(out.kind);
        else if (key == "payload")
          ok = has_payload = string(out.payload);
        else
          ok = skip_scalar();
        if (!ok) return false;
      } while (take(','));
    }
    if (!take('}')) return false;
    skip_space();
    return i_ == s_.size() && has_seq && has_timestamp && has_kind && has_payload;
  }

 private:
  char peek() const { return i_ < s_.size() ? s_[i_] : '\0'; }
  void skip_space() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\r')) ++i_;
  }
  bool take(char c) {
    skip_space();
    if (peek() != c) return false;
    ++i_;
    return true;
  }

  std::string_view number_token() {
    size_t start = i_;
    while (i_ < s_.size() &&
           std::string_view("+-.0123456789eE").find(s_[i_]) != std::string_view::npos)
      ++i_;
    return s_.substr(start, i_ - start);
  }
  template <class T>  // int64_t or double
  bool number(T &out) {
    auto token = number_token();
    auto end = token.data() + token.size();
    auto result = std::from_chars(token.data(), end, out);
    return !token.empty() && result.ec == std::errc() && result.ptr == end;
  }

  bool hex4(uint32_t &out) {
    if (s_.size() - i_ < 4) return false;
    auto result = std::from_chars(s_.data() + i_, s_.data() + i_ + 4, out, 16);
    i_ += 4;
    return result.ec == std::errc() && result.ptr == s_.data() + i_;
  }

  bool string(std::string &out) {
    out.clear();
    if (!take('"')) return false;
    while (i_ < s_.size()) {
      char c = s_[i_++];
      if (c == '"') return true;
      if (c != '\\') {
        out += c;
        continue;
      }
      if (i_ >= s_.size()) return false;
      char e = s_[i_++];
      size_t k = kEscapeNames.find(e);
      if (k != std::string_view::npos) {
        out += kEscaped[k];
        continue;
      }
      uint32_t cp;
      if (e != 'u' || !hex4(cp)) return false;
      // A UTF-16 surrogate pair is two escapes; a lone half becomes U+FFFD.
      if (cp >= 0xD800 && cp <= 0xDBFF && s_.substr(i_, 2) == "\\u") {
        size_t mark = i_;
        i_ += 2;
        uint32_t low;
        if (hex4(low) && low >= 0xDC00 && low <= 0xDFFF)
          cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
        else
          i_ = mark;
      }
      if (cp >= 0xD800 && cp <= 0xDFFF) cp = 0xFFFD;
      append_utf8(out, cp);
    }
    return false;  // no closing quote
  }

  bool skip_scalar() {
    std::string ignored;
    if (peek() == '"') return string(ignored);
    for (std::string_view word : {"true", "false", "null"})
      if (s_.substr(i_, word.size()) == word) {
        i_ += word.size();
        return true;
      }
    double ignored_number;
    return number(ignored_number);
  }

  std::string_view s_;
  size_t i_ = 0;
};

// A file's events sorted by seq (one per seq), and how much of it is whole lines.
struct Parsed {
  std::vector<Record> events;
  size_t whole_bytes = 0;  // up to and including the last '\n'
  size_t malformed = 0;    // whole lines that did not parse; skipped
};

Parsed parse_file(const std::string &text) {
  Parsed parsed;
  size_t last_newline = text.rfind('\n');
  parsed.whole_bytes = last_newline == std::string::npos ? 0 : last_newline + 1;
  std::string_view whole(text.data(), parsed.whole_bytes);
  while (!whole.empty()) {
    size_t end = whole.find('\n');
    std::string_view line = whole.substr(0, end);
    whole.remove_prefix(end + 1);
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    Record record;
    if (LineReader(line).read(record))
      parsed.events.push_back(std::move(record));
    else
      ++parsed.malformed;
  }
  // Appends keep seq order within a group; groups may arrive out of order, and two writers
  // that ignore our lock could store a seq twice. Sort, and keep each seq's first line.
  std::stable_sort(parsed.events.begin(), parsed.events.end(),
                   [](const Record &a, const Record &b) { return a.seq < b.seq; });
  parsed.events.erase(std::unique(parsed.events.begin(), parsed.events.end(),
                                  [](const Record &a, const Record &b) { return a.seq == b.seq; }),
                      parsed.events.end());
  return parsed;
}

// ---------------------------------------------------------------------------------------
// Files. POSIX descriptors rather than streams: flock() and one write() per group are what
// make appends atomic for readers, and iostreams offer neither.
// ---------------------------------------------------------------------------------------

[[noreturn]] void throw_io(const std::string &what, const fs::path &path, int err) {
  // A full disk or a file system away may come back: the host may retry (append is idempotent).
  throw Error(KODO_ERR_IO, what + " " + path.string() + ": " + std::generic_category().message(err),
              true);
}

class File {
 public:
  // Tests false when the file does not exist and `flags` does not create it.
  File(const fs::path &path, int flags) : path_(path) {
    do {
      fd_ = ::open(path.c_str(), flags | O_CLOEXEC, 0644);
    } while (fd_ < 0 && errno == EINTR);
    if (fd_ < 0 && errno != ENOENT) throw_io("cannot open", path, errno);
  }
  ~File() {
    if (fd_ >= 0) ::close(fd_);  // also releases the flock
  }
  File(const File &) = delete;
  File &operator=(const File &) = delete;

  explicit operator bool() const { return fd_ >= 0; }

  void lock(int operation) {
    while (::flock(fd_, operation) != 0)
      if (errno != EINTR) throw_io("cannot lock", path_, errno);
  }

  int64_t size() const {
    struct stat st;
    if (::fstat(fd_, &st) != 0) throw_io("cannot stat", path_, errno);
    return static_cast<int64_t>(st.st_size);
  }

  std::string read_all() const {
    std::string text;
    char buf[65536];
    for (;;) {
      ssize_t n = ::pread(fd_, buf, sizeof buf, static_cast<off_t>(text.size()));
      if (n == 0) return text;
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) throw_io("cannot read", path_, errno);
      text.append(buf, static_cast<size_t>(n));
    }
  }

  // One write() for the whole text; the loop only finishes a write the kernel cut short.
  void write_all(std::string_view text) {
    while (!text.empty()) {
      ssize_t n = ::write(fd_, text.data(), text.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) throw_io("cannot write", path_, errno);
      text.remove_prefix(static_cast<size_t>(n));
    }
  }

  void truncate(int64_t size) {
    if (::ftruncate(fd_, static_cast<off_t>(size)) != 0) throw_io("cannot truncate", path_, errno);
  }

 private:
  fs::path path_;
  int fd_ = -1;
};

// Reads a file under a shared lock, so an append in progress is seen whole or not at all.
std::optional<Parsed> load(const fs::path &path) {
  File file(path, O_RDONLY);
  if (!file) return std::nullopt;
  file.lock(LOCK_SH);
  return parse_file(file.read_all());
}

// The folders under `root` that are users' folders.
std::vector<std::string> user_folders(const fs::path &root) {
  std::vector<std::string> users;
  std::error_code ec;
  for (fs::directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec)) {
    std::string name = it->path().filename().string();
    if (valid_name(name) && it->is_directory(ec)) users.push_back(name);
  }
  return users;
}

// ---------------------------------------------------------------------------------------
// A summary of one execution, from its events.
// ---------------------------------------------------------------------------------------

void summarize(const Parsed &parsed, kodo::sdk::OwnedExecution &x) {
  x.event_count = static_cast<int64_t>(parsed.events.size());
  x.last_seq = -1;
  x.status.clear();
  if (parsed.events.empty()) return;
  x.started_at = parsed.events.front().timestamp;
  x.updated_at = parsed.events.back().timestamp;
  x.last_seq = parsed.events.back().seq;
  for (const Record &r : parsed.events)
    if (r.kind == "status") x.status = r.payload;
}

// When an execution began, for listing newest first. kodosumi's fids are bson ObjectIds,
// whose first 8 hex digits are the creation time in seconds: those sort by themselves.
// Other fids fall back to the timestamp on the file's first line.
double started_for_listing(const std::string &fid, const fs::path &path) {
  if (fid.size() == 24 && fid.find_first_not_of("0123456789abcdefABCDEF") == std::string::npos)
    return static_cast<double>(std::stoul(fid.substr(0, 8), nullptr, 16));
  std::ifstream in(path);
  std::string first;
  Record record;
  if (std::getline(in, first) && LineReader(first).read(record)) return record.timestamp;
  return 0;
}

// ---------------------------------------------------------------------------------------
// The backend.
// ---------------------------------------------------------------------------------------

class JsonlStorage final : public kodo::sdk::StorageBase {
 public:
  JsonlStorage(const kodo::sdk::Options &options, const kodo_host_api *host) : log_(host) {
    std::string dir = options.get("dir", "./data/jsonl");
    if (dir.empty()) throw Error(KODO_ERR_INVALID_ARGUMENT, "option dir is empty");
    // Made absolute once, so a later chdir in the host cannot move the data.
    std::error_code ec;
    root_ = fs::absolute(dir, ec);
    if (ec) throw_io("cannot resolve", dir, ec.value());
  }

  void create_schema() override {
    std::error_code ec;
    fs::create_directories(root_, ec);
    if (ec) throw_io("cannot create", root_, ec.value());
    if (!fs::is_directory(root_, ec)) throw_io("cannot use", root_, ENOTDIR);
  }

  // Threading: appends, archive and purge take mutex_ (they share the index); reads do not,
  // they rely on the file locks alone, so readers run while writers write.
  void append(const kodo_event *const *events, size_t count) override {
    if (count > 0 && !events) throw Error(KODO_ERR_INVALID_ARGUMENT, "events is NULL");
    // Check everything before writing anything, so a bad event fails the call cleanly.
    std::vector<Group> groups;
    std::unordered_map<std::string, size_t> group_of;
    for (size_t i = 0; i < count; ++i) {
      const kodo_event *e = events[i];
      check_event(e, i);
      auto [it, inserted] = group_of.try_emplace(e->fid, groups.size());
      if (inserted) groups.push_back(Group{e->fid, e->username, {}});
      Group &group = groups[it->second];
      if (group.username != e->username)
        throw Error(KODO_ERR_INVALID_ARGUMENT, "batch gives execution " + group.fid +
                                                   " two users: " + group.username + " and " +
                                                   e->username);
      group.events.push_back(e);
    }
    std::lock_guard<std::mutex> hold(mutex_);
    for (Group &group : groups) commit(group);
  }

  void read_events(const kodo_read_request &request, kodo::sdk::EventPageBuilder &out) override {
    if (request.struct_size < sizeof(kodo_read_request))
      throw Error(KODO_ERR_INVALID_ARGUMENT, "kodo_read_request is too small");
    check_name("fid", request.fid);
    if (request.username) check_name("username", request.username);
    if (request.limit == 0) throw Error(KODO_ERR_INVALID_ARGUMENT, "limit must be > 0");
    if (request.kind_count > 0 && !request.kinds)
      throw Error(KODO_ERR_INVALID_ARGUMENT, "kinds is NULL but kind_count is not 0");
    std::unordered_set<std::string_view> kinds;
    for (size_t i = 0; i < request.kind_count; ++i) {
      if (!request.kinds[i]) throw Error(KODO_ERR_INVALID_ARGUMENT, "a kind is NULL");
      kinds.insert(request.kinds[i]);
    }

    auto [location, parsed] = load_live(request.fid, request.username);
    for (const Record &r : parsed.events) {
      if (r.seq <= request.after_seq || (!kinds.empty() && !kinds.count(r.kind))) continue;
      if (out.size() == request.limit) {
        out.set_has_more(true);
        break;
      }
      kodo::sdk::OwnedEvent &e = out.add();
      e.fid = request.fid;
      e.username = location.username;
      e.seq = r.seq;
      e.timestamp = r.timestamp;
      e.kind = r.kind;
      e.payload = r.payload;
    }
  }

  void get_execution(const char *fid, const char *username,
                     kodo::sdk::ExecutionPageBuilder &out) override {
    check_name("fid", fid);
    if (username) check_name("username", username);
    auto [location, parsed] = load_live(fid, username);
    kodo::sdk::OwnedExecution &x = out.add();
    x.fid = fid;
    x.username = location.username;
    summarize(parsed, x);
  }

  void list_executions(const kodo_list_request &request,
                       kodo::sdk::ExecutionPageBuilder &out) override {
    if (request.struct_size < sizeof(kodo_list_request))
      throw Error(KODO_ERR_INVALID_ARGUMENT, "kodo_list_request is too small");
    if (request.username) check_name("username", request.username);
    if (request.limit == 0) throw Error(KODO_ERR_INVALID_ARGUMENT, "limit must be > 0");

    // Sort by a cheap key first, then read only the files of the page asked for.
    struct Candidate {
      double started;
      std::string fid, username;
      fs::path path;
    };
    std::vector<Candidate> all;
    std::vector<std::string> users =
        request.username ? std::vector<std::string>{request.username} : user_folders(root_);
    for (const std::string &user : users)
      for_each_file(user, [&](const std::string &fid, const fs::path &path, bool archived) {
        if (!archived) all.push_back(Candidate{started_for_listing(fid, path), fid, user, path});
      });
    std::sort(all.begin(), all.end(), [](const Candidate &a, const Candidate &b) {
      return a.started != b.started ? a.started > b.started : a.fid > b.fid;
    });

    size_t begin = std::min(request.offset, all.size());
    size_t end = begin + std::min(request.limit, all.size() - begin);
    for (size_t i = begin; i < end; ++i) {
      std::optional<Parsed> parsed = load(all[i].path);
      if (!parsed) continue;  // archived or purged since the folder was listed
      kodo::sdk::OwnedExecution &x = out.add();
      x.fid = all[i].fid;
      x.username = all[i].username;
      summarize(*parsed, x);
    }
    out.set_has_more(end < all.size());
  }

  // Renames <fid>.jsonl to <fid>.jsonl.archive: out of reads and listings, still on disk.
  // Events that arrive later for it (a redelivery) are added to the archive, not revived.
  void archive_execution(const char *fid, const char *username) override {
    check_name("fid", fid);
    if (username) check_name("username", username);
    std::lock_guard<std::mutex> hold(mutex_);
    std::optional<Location> location = locate(fid, username, false);
    if (!location) throw not_found(fid, username);
    File file(location->path, O_RDONLY);
    if (!file) throw not_found(fid, username);
    file.lock(LOCK_EX);  // let another handle's append finish first
    fs::path archive = archive_path(location->username, fid);
    std::error_code ec;
    if (fs::exists(archive, ec))
      throw Error(KODO_ERR_IO, "cannot archive " + location->path.string() + ": " +
                                   archive.string() + " already exists");
    fs::rename(location->path, archive, ec);
    if (ec) throw_io("cannot rename", location->path, ec.value());
    index_.erase(fid);
  }

  // Deletes live and archived executions whose last event is older than `older_than`.
  int64_t purge(double older_than) override {
    if (std::isnan(older_than)) throw Error(KODO_ERR_INVALID_ARGUMENT, "older_than is NaN");
    std::lock_guard<std::mutex> hold(mutex_);
    int64_t purged = 0;
    for (const std::string &user : user_folders(root_))
      for_each_file(user, [&](const std::string &fid, const fs::path &path, bool) {
        File file(path, O_RDONLY);
        if (!file) return;
        file.lock(LOCK_EX);
        kodo::sdk::OwnedExecution x;
        summarize(parse_file(file.read_all()), x);
        if (x.event_count > 0 && x.updated_at >= older_than) return;
        std::error_code ec;
        if (!fs::remove(path, ec) && ec) throw_io("cannot delete", path, ec.value());
        index_.erase(fid);
        ++purged;
      });
    return purged;
  }

 private:
  struct Group {
    std::string fid, username;
    std::vector<const kodo_event *> events;
  };
  struct Location {
    std::string username;
    fs::path path;
  };
  // What this handle remembers of an execution it appended to.
  struct Indexed {
    std::string username;
    fs::path path;                     // its live file, or its archive once archived
    std::unordered_set<int64_t> seqs;  // seqs stored in it
    int64_t known_size = -1;           // the file's size after our last write; -1: not read
  };

  fs::path live_path(const std::string &username, const std::string &fid) const {
    return root_ / username / (fid + std::string(kLiveSuffix));
  }
  fs::path archive_path(const std::string &username, const std::string &fid) const {
    return root_ / username / (fid + std::string(kArchiveSuffix));
  }

  static Error not_found(const std::string &fid, const char *username) {
    return Error(KODO_ERR_NOT_FOUND,
                 "no execution " + fid + (username ? " of user " + std::string(username) : ""));
  }

  static void check_event(const kodo_event *e, size_t i) {
    std::string where = "event " + std::to_string(i) + ": ";
    if (!e) throw Error(KODO_ERR_INVALID_ARGUMENT, where + "is NULL");
    if (e->struct_size < sizeof(kodo_event))
      throw Error(KODO_ERR_INVALID_ARGUMENT, where + "struct_size is too small");
    check_name("fid", e->fid);
    check_name("username", e->username);
    if (e->seq < 0) throw Error(KODO_ERR_INVALID_ARGUMENT, where + "seq is negative");
    if (!std::isfinite(e->timestamp))  // JSON has no NaN or infinity
      throw Error(KODO_ERR_INVALID_ARGUMENT, where + "timestamp is not a finite number");
    if (!e->kind || !*e->kind) throw Error(KODO_ERR_INVALID_ARGUMENT, where + "kind is empty");
    if (!e->payload && e->payload_len > 0)
      throw Error(KODO_ERR_INVALID_ARGUMENT, where + "payload is NULL but payload_len is not 0");
  }

  // Finds an execution's file: under `username`, or under any user when it is NULL.
  std::optional<Location> locate(const std::string &fid, const char *username,
                                 bool include_archived) const {
    std::vector<std::string> users =
        username ? std::vector<std::string>{username} : user_folders(root_);
    std::error_code ec;
    for (const std::string &user : users) {
      if (fs::is_regular_file(live_path(user, fid), ec))
        return Location{user, live_path(user, fid)};
      if (include_archived && fs::is_regular_file(archive_path(user, fid), ec))
        return Location{user, archive_path(user, fid)};
    }
    return std::nullopt;
  }

  // Calls fn(fid, path, archived) for each execution file of one user.
  template <class Fn>
  void for_each_file(const std::string &user, Fn &&fn) const {
    std::error_code ec;
    for (fs::directory_iterator it(root_ / user, ec), end; !ec && it != end; it.increment(ec)) {
      std::string name = it->path().filename().string();
      bool archived = ends_with(name, kArchiveSuffix);
      if (!archived && !ends_with(name, kLiveSuffix)) continue;
      std::string fid =
          name.substr(0, name.size() - (archived ? kArchiveSuffix : kLiveSuffix).size());
      if (valid_name(fid)) fn(fid, it->path(), archived);
    }
  }

  std::pair<Location, Parsed> load_live(const char *fid, const char *username) const {
    std::optional<Location> location = locate(fid, username, false);
    std::optional<Parsed> parsed;
    if (location) parsed = load(location->path);
    if (!parsed) throw not_found(fid, username);
    if (parsed->malformed > 0)
      log_(KODO_LOG_WARN, location->path.string() + ": skipped " +
                              std::to_string(parsed->malformed) + " malformed lines");
    return {std::move(*location), std::move(*parsed)};
  }

  // The index entry of an execution, made on first use. A fid belongs to one user for life.
  Indexed &indexed(const std::string &fid, const std::string &username) {
    auto it = index_.find(fid);
    if (it == index_.end()) {
      std::optional<Location> found = locate(fid, nullptr, true);
      if (index_.size() >= kMaxIndexed) index_.clear();
      Indexed x;
      x.username = found ? found->username : username;
      x.path = found ? found->path : live_path(username, fid);
      it = index_.emplace(fid, std::move(x)).first;
    }
    if (it->second.username != username)
      throw Error(KODO_ERR_INVALID_ARGUMENT, "execution " + fid + " belongs to user " +
                                                 it->second.username + ", not " + username);
    return it->second;
  }

  // Rebuilds an entry's seq set from its file, trimming a last line that a crash cut short
  // so the next line does not start in the middle of it. Caller holds the file's lock.
  void refresh(Indexed &x, File &file) {
    std::string text = file.read_all();
    Parsed parsed = parse_file(text);
    if (parsed.whole_bytes < text.size()) {
      log_(KODO_LOG_WARN, x.path.string() + ": dropping an unfinished last line of " +
                              std::to_string(text.size() - parsed.whole_bytes) + " bytes");
      file.truncate(static_cast<int64_t>(parsed.whole_bytes));
    }
    if (parsed.malformed > 0)
      log_(KODO_LOG_WARN,
           x.path.string() + ": skipped " + std::to_string(parsed.malformed) + " malformed lines");
    x.seqs.clear();
    for (const Record &r : parsed.events) x.seqs.insert(r.seq);
    x.known_size = static_cast<int64_t>(parsed.whole_bytes);
  }

  // Writes one execution's new events in one write(). Caller holds mutex_.
  void commit(Group &group) {
    Indexed &x = indexed(group.fid, group.username);
    std::error_code ec;
    fs::create_directories(x.path.parent_path(), ec);
    if (ec) throw_io("cannot create", x.path.parent_path(), ec.value());
    File file(x.path, O_RDWR | O_APPEND | O_CREAT);
    file.lock(LOCK_EX);
    if (file.size() != x.known_size) refresh(x, file);

    std::stable_sort(group.events.begin(), group.events.end(),
                     [](const kodo_event *a, const kodo_event *b) { return a->seq < b->seq; });
    std::string text;
    std::vector<int64_t> added;
    for (const kodo_event *e : group.events) {
      if (x.seqs.count(e->seq) || (!added.empty() && added.back() == e->seq)) continue;
      text += format_line(*e);
      added.push_back(e->seq);
    }
    if (text.empty()) return;  // a redelivered batch: everything is stored already

    try {
      file.write_all(text);
    } catch (...) {
      // Take back what did make it, so the group is all or nothing; if even that fails the
      // size check above rebuilds the index from whatever the file holds next time.
      try {
        file.truncate(x.known_size);
      } catch (...) {
        x.known_size = -1;
      }
      throw;
    }
    x.seqs.insert(added.begin(), added.end());
    x.known_size += static_cast<int64_t>(text.size());
  }

  fs::path root_;
  kodo::sdk::HostLog log_;
  std::mutex mutex_;  // guards index_; serializes append, archive and purge
  std::unordered_map<std::string, Indexed> index_;
};

const kodo_option_spec kDirOption =
    kodo::sdk::option("dir", KODO_OPTION_PATH, 0, "./data/jsonl", nullptr,
                      "directory that holds <username>/<fid>.jsonl, one file per execution");
const kodo_option_spec *const kOptions[] = {&kDirOption};

}  // namespace

KODO_STORAGE_PLUGIN(JsonlStorage, "jsonl", "0.1.0",
                    "JSON-lines files, one per execution (the SDK's out-of-tree example)",
                    KODO_STORAGE_CAP_LIST | KODO_STORAGE_CAP_ARCHIVE | KODO_STORAGE_CAP_PURGE,
                    kOptions, 1)
