// shmbus: the command line of a shmbus bus, in the spirit of Kafka's console
// tools. Manages topics through shmbusd, publishes stdin or a file, prints what
// a topic carries, watches rates and lags, and asks after (or stops) the daemon.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <csignal>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "os.hpp"
#include "region.hpp"
#include "shmbus/bus.hpp"
#include "shmbus/error.hpp"
#include "shmbus/topic.hpp"
#include "shmbus/topic_status.hpp"
#include "shmbus/version.hpp"

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// ---- exit codes -------------------------------------------------------------

constexpr int kExitOk = 0;
constexpr int kExitError = 1;
constexpr int kExitTimeout = 2;
constexpr int kExitNotFound = 3;
constexpr int kExitDenied = 4;
constexpr int kExitUnavailable = 5;
constexpr int kExitUsage = 64;

constexpr const char* kFooter =
    "Exit codes: 0 ok; 1 error; 2 timeout (sub: --timeout passed before --count messages\n"
    "came; pub: the topic stayed full past --timeout); 3 not found; 4 permission denied;\n"
    "5 daemon unavailable; 64 usage error; 128+N stopped by signal N (130: Ctrl-C).\n"
    "`shmbus daemon status` exits 1 when no daemon answers.";

int exit_code_of(shmbus::ErrorCode c) {
  switch (c) {
    case shmbus::ErrorCode::NotFound:
      return kExitNotFound;
    case shmbus::ErrorCode::PermissionDenied:
      return kExitDenied;
    case shmbus::ErrorCode::DaemonUnavailable:
      return kExitUnavailable;
    default:
      return kExitError;
  }
}

// A failure the command line itself reports: its message and exit code.
struct Failure {
  int code;
  std::string message;
};

[[noreturn]] void fail(int code, std::string message) {
  throw Failure{code, std::move(message)};
}

std::string strf(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
std::string strf(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  va_list ap2;
  va_copy(ap2, ap);
  const int n = std::vsnprintf(nullptr, 0, fmt, ap);
  va_end(ap);
  std::string out(n > 0 ? static_cast<std::size_t>(n) : 0, '\0');
  if (n > 0) std::vsnprintf(out.data(), out.size() + 1, fmt, ap2);
  va_end(ap2);
  return out;
}

// A diagnostic on stderr, "shmbus: <message>".
void note(const std::string& message) {
  std::fflush(stdout);
  std::fprintf(stderr, "shmbus: %s\n", message.c_str());
}

// ---- signals ----------------------------------------------------------------

volatile std::sig_atomic_t g_signal = 0;

extern "C" void on_stop_signal(int sig) {
  g_signal = sig;
}

// SIGINT and SIGTERM end the long-running commands cleanly: no SA_RESTART, so a
// blocking read or sleep returns EINTR and the loop sees g_signal.
void install_stop_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

bool stop_requested() {
  return g_signal != 0;
}
int signal_exit() {
  return 128 + static_cast<int>(g_signal);
}

// Sleeps until `until`, waking early for a stop signal. False if one came.
bool sleep_until(Clock::time_point until) {
  while (!stop_requested()) {
    const auto now = Clock::now();
    if (now >= until) return true;
    const auto d = std::min<Clock::duration>(until - now, 100ms);
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(d).count();
    timespec ts{static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)};
    ::nanosleep(&ts, nullptr);
  }
  return false;
}

// Seconds from the command line as a duration (capped at about 285 years, so the
// conversion cannot overflow).
std::chrono::nanoseconds seconds_to_ns(double s) {
  return std::chrono::nanoseconds(static_cast<std::int64_t>(std::clamp(s, 0.0, 9e9) * 1e9));
}

// ---- global options and connecting -------------------------------------------

struct Globals {
  std::string bus = "default";
  std::string socket;
  std::string daemon;
  bool no_autospawn = false;
};

void add_globals(CLI::App* app, Globals& g) {
  const std::string group = "Global options";
  app->add_option("--bus", g.bus, "bus name (default: default)")->group(group);
  app->add_option("--socket", g.socket,
                  "shmbusd socket (default: $SHMBUS_SOCKET, $XDG_RUNTIME_DIR/shmbus/<bus>.sock "
                  "or /tmp/shmbus-<uid>/<bus>.sock)")
      ->group(group);
  app->add_flag("--no-autospawn", g.no_autospawn,
                "never start shmbusd when none answers (also SHMBUS_NO_AUTOSPAWN=1)")
      ->group(group);
  app->add_option("--daemon", g.daemon,
                  "shmbusd binary to autospawn (default: $SHMBUS_DAEMON, shmbusd beside this "
                  "program or in its build tree, then PATH)")
      ->group(group);
}

shmbus::BusOptions bus_options(const Globals& g, bool may_spawn) {
  shmbus::BusOptions o;
  o.bus = g.bus;
  o.socket_path = g.socket;
  o.daemon_path = g.daemon;
  o.autospawn = may_spawn && !g.no_autospawn;
  return o;
}

// --daemon as given, for the hint when autospawn failed.
std::string g_daemon_option;

shmbus::Bus connect(const Globals& g) {
  g_daemon_option = g.daemon;
  return shmbus::Bus::connect(bus_options(g, true));
}

// ---- formatting ---------------------------------------------------------------

const char* policy_name(shmbus::Policy p) {
  switch (p) {
    case shmbus::Policy::Block:
      return "block";
    case shmbus::Policy::Reject:
      return "reject";
    case shmbus::Policy::Overwrite:
      return "overwrite";
  }
  return "unknown";
}

std::string json_string(std::string_view s) {
  std::string out = "\"";
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20 || c == 0x7f)
          out += strf("\\u%04x", c);
        else
          out += ch;
    }
  }
  return out + "\"";
}

std::string json_number(double v) {
  if (!(v == v) || v > 1e300 || v < -1e300) return "null";  // NaN or infinite
  return strf("%.3f", v);
}

std::string json_bool(bool b) {
  return b ? "true" : "false";
}

std::string u64(std::uint64_t v) {
  return std::to_string(v);
}

std::string group_label(const shmbus::GroupStatus& g) {
  return g.name.empty() ? "(private)" : g.name;
}

std::string group_json(const shmbus::GroupStatus& g, const std::string& extra = {}) {
  return "{\"name\":" + (g.name.empty() ? std::string("null") : json_string(g.name)) +
         ",\"private\":" + json_bool(g.name.empty()) + ",\"members\":" + u64(g.members) +
         ",\"durable\":" + json_bool(g.durable) + ",\"position\":" + u64(g.position) +
         ",\"lag\":" + u64(g.lag) + ",\"lost\":" + u64(g.lost) + extra + "}";
}

std::string topic_json(const shmbus::TopicStatus& t) {
  const shmbus::TopicOptions& o = t.options;
  std::string groups;
  for (const auto& g : t.groups)
    groups += (groups.empty() ? "" : ",") + group_json(g);
  return "{\"name\":" + json_string(t.name) + ",\"slots\":" + u64(o.slot_count) +
         ",\"slot_size\":" + u64(o.slot_size) +
         ",\"policy\":" + json_string(policy_name(o.policy)) +
         ",\"single_producer\":" + json_bool(o.single_producer) +
         ",\"max_producers\":" + u64(o.max_producers) + ",\"max_groups\":" + u64(o.max_groups) +
         ",\"max_members\":" + u64(o.max_members) + ",\"tail\":" + u64(t.tail) +
         ",\"producers\":" + u64(t.producers) + ",\"published\":" + u64(t.published) +
         ",\"groups\":[" + groups + "]}";
}

// Prints rows as left-aligned columns separated by two spaces.
void print_table(const std::vector<std::vector<std::string>>& rows,
                 const std::string& indent = "") {
  std::vector<std::size_t> width;
  for (const auto& r : rows)
    for (std::size_t i = 0; i < r.size(); ++i) {
      if (width.size() <= i) width.resize(i + 1, 0);
      width[i] = std::max(width[i], r[i].size());
    }
  for (const auto& r : rows) {
    std::string line = indent;
    for (std::size_t i = 0; i < r.size(); ++i) {
      line += r[i];
      if (i + 1 < r.size()) line += std::string(width[i] - r[i].size() + 2, ' ');
    }
    std::printf("%s\n", line.c_str());
  }
}

std::string human_rate(double bytes_per_sec) {
  const char* units[] = {"B/s", "KiB/s", "MiB/s", "GiB/s", "TiB/s"};
  std::size_t u = 0;
  while (bytes_per_sec >= 1024.0 && u + 1 < std::size(units)) {
    bytes_per_sec /= 1024.0;
    ++u;
  }
  return u == 0 ? strf("%.0f %s", bytes_per_sec, units[u])
                : strf("%.1f %s", bytes_per_sec, units[u]);
}

// stdout went away (EPIPE: the reader of a pipe left) or failed.
bool stdout_closed() {
  if (std::fflush(stdout) == 0 && !std::ferror(stdout)) return false;
  if (errno == EPIPE) return true;
  fail(kExitError, std::string("cannot write to stdout: ") + std::strerror(errno));
}

// True when stdout is a pipe or socket whose reader has left (or a terminal
// that hung up), seen without writing: lets an idle `sub | head -n 3` end.
bool stdout_reader_gone() {
  pollfd p{STDOUT_FILENO, 0, 0};
  return ::poll(&p, 1, 0) == 1 && (p.revents & (POLLERR | POLLHUP)) != 0;
}

// ---- topic create / delete / list / describe -----------------------------------

struct CreateArgs {
  std::string name;
  std::uint32_t slots = 0;      // 0: the daemon's default (1024 unless configured)
  std::uint32_t slot_size = 0;  // 0: the daemon's default (1024 unless configured)
  std::string policy = "block";
  bool single_producer = false;
  std::uint32_t max_producers = 0, max_groups = 0, max_members = 0;
  bool if_not_exists = false;
};

shmbus::Policy parse_policy(const std::string& s) {
  if (s == "block") return shmbus::Policy::Block;
  if (s == "reject") return shmbus::Policy::Reject;
  if (s == "overwrite") return shmbus::Policy::Overwrite;
  fail(kExitUsage, "policy '" + s + "' is not block, reject or overwrite");
}

std::string topic_summary(const shmbus::TopicStatus& t) {
  const shmbus::TopicOptions& o = t.options;
  return strf(
      "%u slots x %u bytes, policy %s, %s; at most %u producers, %u groups, %u members "
      "per group",
      o.slot_count, o.slot_size, policy_name(o.policy),
      o.single_producer ? "single producer" : "multi-producer", o.max_producers, o.max_groups,
      o.max_members);
}

int cmd_topic_create(const Globals& g, const CreateArgs& a) {
  shmbus::TopicOptions o;
  o.slot_count = a.slots;
  o.slot_size = a.slot_size;
  o.policy = parse_policy(a.policy);
  o.single_producer = a.single_producer;
  o.max_producers = a.max_producers;
  o.max_groups = a.max_groups;
  o.max_members = a.max_members;
  shmbus::Bus bus = connect(g);
  try {
    (void)bus.create_topic(a.name, o);
  } catch (const shmbus::Error& e) {
    if (e.code() != shmbus::ErrorCode::AlreadyExists || !a.if_not_exists) throw;
    std::printf("topic '%s' exists already on bus '%s': %s\n", a.name.c_str(), g.bus.c_str(),
                topic_summary(bus.describe(a.name)).c_str());
    return kExitOk;
  }
  std::printf("created topic '%s' on bus '%s': %s\n", a.name.c_str(), g.bus.c_str(),
              topic_summary(bus.describe(a.name)).c_str());
  return kExitOk;
}

int cmd_topic_delete(const Globals& g, const std::string& name) {
  shmbus::Bus bus = connect(g);
  bus.delete_topic(name);
  std::printf("deleted topic '%s' from bus '%s'\n", name.c_str(), g.bus.c_str());
  return kExitOk;
}

int cmd_topic_list(const Globals& g, bool json) {
  shmbus::Bus bus = connect(g);
  auto topics = bus.topics();
  std::sort(topics.begin(), topics.end(),
            [](const auto& x, const auto& y) { return x.name < y.name; });
  if (json) {
    std::string out;
    for (const auto& t : topics)
      out += (out.empty() ? "" : ",") + topic_json(t);
    std::printf("[%s]\n", out.c_str());
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows{
      {"NAME", "SLOTS", "SLOT_SIZE", "POLICY", "TAIL", "PRODUCERS", "GROUPS"}};
  for (const auto& t : topics)
    rows.push_back({t.name, u64(t.options.slot_count), u64(t.options.slot_size),
                    policy_name(t.options.policy), u64(t.tail), u64(t.producers),
                    u64(t.groups.size())});
  print_table(rows);
  return kExitOk;
}

int cmd_topic_describe(const Globals& g, const std::string& name, bool json) {
  shmbus::Bus bus = connect(g);
  const shmbus::TopicStatus t = bus.describe(name);
  if (json) {
    std::printf("%s\n", topic_json(t).c_str());
    return kExitOk;
  }
  const shmbus::TopicOptions& o = t.options;
  std::vector<std::vector<std::string>> kv{
      {"topic:", t.name},
      {"bus:", g.bus},
      {"slots:", u64(o.slot_count)},
      {"slot size:", u64(o.slot_size) + " bytes"},
      {"policy:", policy_name(o.policy)},
      {"single producer:", o.single_producer ? "yes" : "no"},
      {"limits:", strf("%u producers, %u groups, %u members per group", o.max_producers,
                       o.max_groups, o.max_members)},
      {"tail:", u64(t.tail)},
      {"producers:", u64(t.producers)},
      {"published:", u64(t.published) + " (by the live producers)"},
      {"groups:", t.groups.empty() ? std::string("(none)") : u64(t.groups.size())}};
  print_table(kv);
  if (!t.groups.empty()) {
    std::vector<std::vector<std::string>> rows{
        {"GROUP", "MEMBERS", "DURABLE", "POSITION", "LAG", "LOST"}};
    for (const auto& gs : t.groups)
      rows.push_back({group_label(gs), u64(gs.members), gs.durable ? "yes" : "no", u64(gs.position),
                      u64(gs.lag), u64(gs.lost)});
    print_table(rows, "  ");
  }
  return kExitOk;
}

// ---- pub ----------------------------------------------------------------------

struct PubArgs {
  std::string topic;
  std::string file;
  bool lines = false;
  std::uint64_t repeat = 1;
  double rate = 0;      // messages per second; 0: as fast as the topic takes them
  double timeout = 10;  // seconds a publish may wait for room (policy block)
  bool quiet = false;
};

// Reads stdin line by line with read(2), so a stop signal interrupts it.
class LineReader {
 public:
  explicit LineReader(int fd) : fd_(fd) {}
  enum Result { kLine, kEnd, kStopped };

  Result next(std::string& line) {
    for (;;) {
      const auto nl = buf_.find('\n', pos_);
      if (nl != std::string::npos) {
        line.assign(buf_, pos_, nl - pos_);
        pos_ = nl + 1;
        return kLine;
      }
      if (eof_) {
        if (pos_ == buf_.size()) return kEnd;
        line.assign(buf_, pos_, std::string::npos);  // a last line without a newline
        pos_ = buf_.size();
        return kLine;
      }
      if (stop_requested()) return kStopped;
      buf_.erase(0, pos_);
      pos_ = 0;
      char chunk[65536];
      const ssize_t n = ::read(fd_, chunk, sizeof chunk);
      if (n > 0) {
        buf_.append(chunk, static_cast<std::size_t>(n));
      } else if (n == 0) {
        eof_ = true;
      } else if (errno != EINTR) {
        fail(kExitError, std::string("cannot read stdin: ") + std::strerror(errno));
      }
    }
  }

 private:
  int fd_;
  std::string buf_;
  std::size_t pos_ = 0;
  bool eof_ = false;
};

std::string read_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    fail(errno == ENOENT   ? kExitNotFound
         : errno == EACCES ? kExitDenied
                           : kExitError,
         "cannot open " + path + ": " + std::strerror(errno));
  std::string out;
  char chunk[65536];
  for (;;) {
    const ssize_t n = ::read(fd, chunk, sizeof chunk);
    if (n > 0) {
      out.append(chunk, static_cast<std::size_t>(n));
    } else if (n == 0) {
      break;
    } else if (errno != EINTR) {
      const int e = errno;
      ::close(fd);
      fail(kExitError, "cannot read " + path + ": " + std::strerror(e));
    }
  }
  ::close(fd);
  return out;
}

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (start < text.size()) {
    const auto nl = text.find('\n', start);
    if (nl == std::string::npos) {
      out.push_back(text.substr(start));
      break;
    }
    out.push_back(text.substr(start, nl - start));
    start = nl + 1;
  }
  return out;
}

class PubSession {
 public:
  PubSession(const PubArgs& a, shmbus::Publisher& pub) : args_(a), pub_(pub) {}

  // Publishes one message; returns kExitOk or the exit code of the failure
  // (after saying what went wrong).
  int send(std::string_view m) {
    const std::uint64_t n = count_ + 1;
    if (m.size() > pub_.max_message_size()) {
      note(strf("message %" PRIu64 " is %zu bytes, larger than the %u-byte slot size of topic "
                "'%s'; nothing of it was published (create the topic with a larger "
                "--slot-size)",
                n, m.size(), pub_.max_message_size(), args_.topic.c_str()));
      return kExitError;
    }
    if (args_.rate > 0) {
      if (count_ == 0 && start_ == Clock::time_point{}) start_ = Clock::now();
      const auto due =
          start_ + std::chrono::duration_cast<Clock::duration>(
                       std::chrono::duration<double>(static_cast<double>(paced_) / args_.rate));
      ++paced_;
      if (!sleep_until(due)) return signal_exit();
    }
    const shmbus::Status st = pub_.publish(std::as_bytes(std::span(m.data(), m.size())));
    switch (st) {
      case shmbus::Status::Ok:
        ++count_;
        bytes_ += m.size();
        return kExitOk;
      case shmbus::Status::Timeout:
        note(strf("message %" PRIu64 " was not published: topic '%s' stayed full for %gs "
                  "(policy block); a consumer group is not keeping up (see shmbus topic "
                  "describe %s), or raise --timeout",
                  n, args_.topic.c_str(), args_.timeout, args_.topic.c_str()));
        return kExitTimeout;
      case shmbus::Status::WouldBlock:
        note(strf("message %" PRIu64 " was not published: topic '%s' is full and its policy "
                  "is reject (see shmbus topic describe %s)",
                  n, args_.topic.c_str(), args_.topic.c_str()));
        return kExitError;
      case shmbus::Status::TooLarge:
        note(strf("message %" PRIu64 " is %zu bytes, larger than the %u-byte slot size of "
                  "topic '%s'",
                  n, m.size(), pub_.max_message_size(), args_.topic.c_str()));
        return kExitError;
      default:
        note(strf("message %" PRIu64 " was not published: %s", n, shmbus::to_string(st)));
        return kExitError;
    }
  }

  [[nodiscard]] std::uint64_t count() const { return count_; }
  [[nodiscard]] std::uint64_t bytes() const { return bytes_; }

 private:
  const PubArgs& args_;
  shmbus::Publisher& pub_;
  std::uint64_t count_ = 0, bytes_ = 0, paced_ = 0;
  Clock::time_point start_{};
};

int cmd_pub(const Globals& g, const PubArgs& a) {
  // Read a file before connecting: a missing file is reported without side effects.
  std::vector<std::string> input;
  const bool from_file = !a.file.empty();
  if (from_file) {
    std::string content = read_file(a.file);
    if (a.lines)
      input = split_lines(content);
    else
      input.push_back(std::move(content));
  }
  shmbus::Bus bus = connect(g);
  shmbus::PublisherOptions po;
  po.timeout = seconds_to_ns(a.timeout);
  shmbus::Publisher pub = bus.publisher(a.topic, po);
  install_stop_handlers();
  PubSession session(a, pub);
  int rc = kExitOk;
  const auto run = [&]() -> int {
    std::uint64_t pass = 0;
    if (!from_file) {
      // The first pass streams stdin (each line goes out as it arrives) and
      // keeps the lines only when --repeat needs them again.
      LineReader reader(STDIN_FILENO);
      std::string line;
      for (;;) {
        const auto r = reader.next(line);
        if (r == LineReader::kStopped) return signal_exit();
        if (r == LineReader::kEnd) break;
        if (int e = session.send(line); e != kExitOk) return e;
        if (a.repeat > 1) input.push_back(line);
      }
      pass = 1;
    }
    for (; pass < a.repeat; ++pass)
      for (const std::string& m : input) {
        if (stop_requested()) return signal_exit();
        if (int e = session.send(m); e != kExitOk) return e;
      }
    return kExitOk;
  };
  rc = run();
  if (!a.quiet || rc != kExitOk)
    std::fprintf(stderr, "shmbus: published %" PRIu64 " message%s (%" PRIu64 " bytes) to '%s'\n",
                 session.count(), session.count() == 1 ? "" : "s", session.bytes(),
                 a.topic.c_str());
  return rc;
}

// ---- sub ----------------------------------------------------------------------

struct SubArgs {
  std::string topic;
  std::string group;
  std::string from = "latest";
  std::uint64_t count = 0;  // 0: no limit
  double timeout = -1;      // seconds without a message; < 0: wait for ever
  bool hex = false;
  bool show_offset = false;
  bool durable = false;
  bool quiet = false;
};

bool parse_u64(const std::string& s, std::uint64_t& out) {
  if (s.empty() || s.size() > 20) return false;
  for (char c : s)
    if (c < '0' || c > '9') return false;
  errno = 0;
  char* end = nullptr;
  const unsigned long long v = std::strtoull(s.c_str(), &end, 10);
  if (errno == ERANGE || end == nullptr || *end != '\0') return false;
  out = v;
  return true;
}

int cmd_sub(const Globals& g, const SubArgs& a) {
  shmbus::SubscriberOptions so;
  so.group = a.group;
  so.durable = a.durable;
  if (a.from == "earliest") {
    so.start = shmbus::StartFrom::Earliest;
  } else if (a.from == "latest") {
    so.start = shmbus::StartFrom::Latest;
  } else {
    so.start = shmbus::StartFrom::Offset;
    if (!parse_u64(a.from, so.offset))
      fail(kExitUsage, "--from '" + a.from + "' is not earliest, latest or an offset");
  }
  shmbus::Bus bus = connect(g);
  std::unique_ptr<shmbus::Subscriber> sub = bus.subscriber(a.topic, so);
  install_stop_handlers();
  std::vector<std::byte> buffer(sub->max_message_size());
  std::string line;
  std::uint64_t received = 0;
  const bool timed = a.timeout >= 0;
  const auto idle_limit = timed ? seconds_to_ns(a.timeout) : std::chrono::nanoseconds(0);
  auto last = Clock::now();
  int rc = kExitOk;
  for (;;) {
    if (a.count != 0 && received >= a.count) break;
    if (stop_requested()) {
      rc = signal_exit();
      break;
    }
    // Short waits so a stop signal is seen promptly.
    std::chrono::nanoseconds wait = 100ms;
    if (timed) {
      const auto left =
          std::chrono::duration_cast<std::chrono::nanoseconds>(last + idle_limit - Clock::now());
      wait = std::clamp(left, std::chrono::nanoseconds(0), wait);
    }
    shmbus::MessageInfo info;
    const shmbus::Status st = sub->receive_copy(buffer, info, wait);
    if (st == shmbus::Status::Timeout || st == shmbus::Status::WouldBlock) {
      if (timed && Clock::now() >= last + idle_limit) {
        rc = kExitTimeout;
        break;
      }
      if (stdout_reader_gone()) break;  // as EPIPE below: a clean stop
      continue;
    }
    if (st == shmbus::Status::Corrupt) {
      note(strf("skipped a message of topic '%s' with an invalid header", a.topic.c_str()));
      continue;
    }
    if (st != shmbus::Status::Ok)
      fail(kExitError, std::string("receive: ") + shmbus::to_string(st));
    line.clear();
    if (a.show_offset) line += u64(info.sequence) + ": ";
    const auto* p = reinterpret_cast<const char*>(buffer.data());
    if (a.hex) {
      static constexpr char kDigits[] = "0123456789abcdef";
      for (std::uint32_t i = 0; i < info.size; ++i) {
        const auto c = static_cast<unsigned char>(p[i]);
        line += kDigits[c >> 4];
        line += kDigits[c & 15];
      }
    } else {
      line.append(p, info.size);
    }
    line += '\n';
    std::fwrite(line.data(), 1, line.size(), stdout);
    if (stdout_closed()) break;  // the reader of our pipe left: a clean stop
    ++received;
    last = Clock::now();
  }
  sub.reset();  // frees the member seat before we report
  if (!a.quiet)
    std::fprintf(stderr, "shmbus: received %" PRIu64 " message%s from '%s'%s\n", received,
                 received == 1 ? "" : "s", a.topic.c_str(),
                 rc == kExitTimeout ? strf(" (none for %gs)", a.timeout).c_str() : "");
  return rc;
}

// ---- stat ---------------------------------------------------------------------

struct StatArgs {
  bool json = false;
  double interval = 1.0;
  bool once = false;
};

struct Snapshot {
  Clock::time_point at;
  std::map<std::string, shmbus::TopicStatus> topics;
};

Snapshot take_snapshot(shmbus::Bus& bus) {
  Snapshot s;
  for (auto& t : bus.topics())
    s.topics.emplace(t.name, std::move(t));
  s.at = Clock::now();
  return s;
}

// Bytes published in [from, to), read from the slots' length fields of a
// read-only look at the topic region. Only sequences the ring still holds are
// seen; when more were published, the sizes seen are averaged over all.
struct ByteMeasure {
  enum Source { kMeasured, kSampled, kUnavailable } source = kUnavailable;
  double bytes = 0;  // estimated total over [from, to)
  std::string why;   // when unavailable
};

constexpr std::uint64_t kMaxSampled = 1u << 16;

ByteMeasure measure_bytes(const std::string& bus, const std::string& topic, std::uint64_t from,
                          std::uint64_t to) {
  ByteMeasure m;
  if (to <= from) {
    m.source = ByteMeasure::kMeasured;
    return m;
  }
  std::shared_ptr<shmbus::detail::Region> r;
  try {
    r = shmbus::detail::Region::open(shmbus::region_name(bus, topic));
  } catch (const shmbus::Error& e) {
    m.why = e.what();
    return m;
  }
  const std::uint64_t retained = r->slot_count();
  std::uint64_t lo = std::max(from, to > retained ? to - retained : 0);
  lo = std::max(lo, to - std::min(to - lo, kMaxSampled));
  std::uint64_t seen = 0, total = 0;
  for (std::uint64_t s = lo; s < to; ++s) {
    const shmbus::detail::SlotHeader& slot = r->slot(s);
    // Acquire: pairs with the producer's release of the stamp; the length read
    // after it belongs to message s unless the stamp changed meanwhile.
    const std::uint64_t st = slot.stamp.load(std::memory_order_acquire);
    if (st != shmbus::detail::stamp_published(s)) continue;  // abandoned, in flight or lapped
    const std::uint32_t len = slot.length.load(std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_acquire);
    if (slot.stamp.load(std::memory_order_relaxed) != st || len > r->slot_size()) continue;
    ++seen;
    total += len;
  }
  if (seen == 0) {
    m.why = "no published message of the interval is still in the ring";
    return m;
  }
  m.source = seen == to - from ? ByteMeasure::kMeasured : ByteMeasure::kSampled;
  m.bytes = static_cast<double>(total) / static_cast<double>(seen) * static_cast<double>(to - from);
  return m;
}

std::string group_key(const shmbus::GroupStatus& g, std::size_t private_index) {
  return g.name.empty() ? "\x01private#" + std::to_string(private_index) : g.name;
}

std::map<std::string, std::uint64_t> group_positions(const shmbus::TopicStatus& t) {
  std::map<std::string, std::uint64_t> out;
  std::size_t k = 0;
  for (const auto& g : t.groups)
    out[group_key(g, g.name.empty() ? k++ : 0)] = g.position;
  return out;
}

std::string wall_clock() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  ::localtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
  return buf;
}

void render_stat(const Globals& g, const Snapshot& prev, const Snapshot& cur, bool json,
                 bool clear) {
  const double dt = std::chrono::duration<double>(cur.at - prev.at).count();
  std::vector<std::vector<std::string>> trows{
      {"TOPIC", "MSGS/S", "BYTES/S", "TAIL", "PRODUCERS", "GROUPS"}};
  std::vector<std::vector<std::string>> grows{
      {"TOPIC", "GROUP", "MEMBERS", "POSITION", "LAG", "LOST", "MSGS/S"}};
  std::string jtopics;
  bool any_sampled = false;
  std::string unavailable_why;
  for (const auto& [name, t] : cur.topics) {
    const auto p = prev.topics.find(name);
    const bool comparable = p != prev.topics.end() && p->second.tail <= t.tail && dt > 0;
    double rate = -1;
    ByteMeasure bm;
    if (comparable) {
      rate = static_cast<double>(t.tail - p->second.tail) / dt;
      bm = measure_bytes(g.bus, name, p->second.tail, t.tail);
    } else {
      bm.why = "the topic is new";
    }
    const bool bytes_known = comparable && bm.source != ByteMeasure::kUnavailable;
    const double byte_rate = bytes_known ? bm.bytes / dt : -1;
    if (bm.source == ByteMeasure::kSampled) any_sampled = true;
    if (comparable && !bytes_known && unavailable_why.empty()) unavailable_why = bm.why;
    trows.push_back({name, rate < 0 ? "-" : strf("%.1f", rate),
                     !bytes_known
                         ? "n/a"
                         : (bm.source == ByteMeasure::kSampled ? "~" : "") + human_rate(byte_rate),
                     u64(t.tail), u64(t.producers), u64(t.groups.size())});
    const auto before =
        comparable ? group_positions(p->second) : std::map<std::string, std::uint64_t>{};
    std::string jgroups;
    std::size_t k = 0;
    for (const auto& gs : t.groups) {
      const std::string key = group_key(gs, gs.name.empty() ? k++ : 0);
      const auto b = before.find(key);
      const double grate = b != before.end() && b->second <= gs.position
                               ? static_cast<double>(gs.position - b->second) / dt
                               : -1;
      grows.push_back({name, group_label(gs), u64(gs.members), u64(gs.position), u64(gs.lag),
                       u64(gs.lost), grate < 0 ? "-" : strf("%.1f", grate)});
      jgroups += (jgroups.empty() ? "" : ",") +
                 group_json(gs, ",\"msgs_per_sec\":" +
                                    (grate < 0 ? std::string("null") : json_number(grate)));
    }
    const char* source = !bytes_known                         ? "unavailable"
                         : bm.source == ByteMeasure::kSampled ? "sampled"
                                                              : "measured";
    jtopics +=
        std::string(jtopics.empty() ? "" : ",") + "{\"name\":" + json_string(name) +
        ",\"slots\":" + u64(t.options.slot_count) + ",\"slot_size\":" + u64(t.options.slot_size) +
        ",\"policy\":" + json_string(policy_name(t.options.policy)) + ",\"tail\":" + u64(t.tail) +
        ",\"producers\":" + u64(t.producers) +
        ",\"msgs_per_sec\":" + (rate < 0 ? std::string("null") : json_number(rate)) +
        ",\"bytes_per_sec\":" + (bytes_known ? json_number(byte_rate) : std::string("null")) +
        ",\"bytes_source\":" + json_string(source) + ",\"groups\":[" + jgroups + "]}";
  }
  if (json) {
    const double epoch =
        std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
    std::printf("{\"time\":%.3f,\"bus\":%s,\"interval_s\":%s,\"topics\":[%s]}\n", epoch,
                json_string(g.bus).c_str(), json_number(dt).c_str(), jtopics.c_str());
    return;
  }
  if (clear) std::printf("\033[H\033[2J");
  std::printf("bus '%s'  %s  over %.2f s  (%zu topic%s)\n\n", g.bus.c_str(), wall_clock().c_str(),
              dt, cur.topics.size(), cur.topics.size() == 1 ? "" : "s");
  print_table(trows);
  if (grows.size() > 1) {
    std::printf("\n");
    print_table(grows);
  }
  std::printf("\nMSGS/S: change of the tail (claimed sequences) per second.\n");
  std::printf(
      "BYTES/S: sizes of the messages published in the interval, read from their slots%s.\n",
      any_sampled ? "; ~ = averaged over those the ring still holds" : "");
  if (!unavailable_why.empty())
    std::printf("BYTES/S n/a: %s; only MSGS/S is measured.\n", unavailable_why.c_str());
}

int cmd_stat(const Globals& g, const StatArgs& a) {
  shmbus::Bus bus = connect(g);
  install_stop_handlers();
  const bool clear = !a.json && !a.once && ::isatty(STDOUT_FILENO) == 1;
  const auto interval =
      std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(a.interval));
  Snapshot prev = take_snapshot(bus);
  auto next = prev.at + interval;
  bool first = true;
  for (;;) {
    if (!sleep_until(next)) return signal_exit();
    Snapshot cur = take_snapshot(bus);
    if (!first && !a.json && !clear) std::printf("\n");
    render_stat(g, prev, cur, a.json, clear);
    if (stdout_closed()) return kExitOk;
    if (a.once) return kExitOk;
    first = false;
    prev = std::move(cur);
    next += interval;
    if (next < Clock::now()) next = Clock::now() + interval;  // fell behind (e.g. suspended)
  }
}

// ---- daemon status / stop -----------------------------------------------------

// The socket the library uses: --socket, else its default for the bus.
std::string socket_path_of(const Globals& g) {
  return g.socket.empty() ? shmbus::detail::default_socket_path(g.bus) : g.socket;
}

// Connects without ever starting a daemon.
std::optional<shmbus::Bus> connect_existing(const Globals& g) {
  try {
    return shmbus::Bus::connect(bus_options(g, false));
  } catch (const shmbus::Error& e) {
    if (e.code() != shmbus::ErrorCode::DaemonUnavailable) throw;
    return std::nullopt;
  }
}

int cmd_daemon_status(const Globals& g) {
  auto bus = connect_existing(g);
  if (!bus) {
    note("no shmbusd answers for bus '" + g.bus + "' on " + socket_path_of(g) +
         " (not running); start one with: shmbusd --bus " + g.bus +
         (g.socket.empty() ? std::string() : " --socket " + g.socket) +
         ", or let any other shmbus command autospawn it");
    return kExitError;
  }
  const auto topics = bus->topics();
  std::printf("shmbusd is running\n");
  print_table({{"bus:", g.bus},
               {"socket:", bus->socket_path()},
               {"pid:", std::to_string(bus->daemon_pid())},
               {"topics:", std::to_string(topics.size())}});
  return kExitOk;
}

int cmd_daemon_stop(const Globals& g, double wait_seconds) {
  auto bus = connect_existing(g);
  if (!bus)
    fail(kExitUnavailable, "no shmbusd answers for bus '" + g.bus + "' on " + socket_path_of(g) +
                               "; nothing to stop");
  const std::string path = bus->socket_path();
  const int pid = bus->daemon_pid();
  bus->shutdown_daemon();
  bus.reset();
  // The daemon replies, then leaves its loop, removes its socket and exits:
  // wait for that, so that a following `daemon status` sees it gone.
  const auto until = Clock::now() + seconds_to_ns(wait_seconds);
  while (pid > 0 ? shmbus::detail::process_alive(pid) : shmbus::detail::socket_answers(path)) {
    if (Clock::now() >= until)
      fail(kExitError, strf("asked shmbusd (pid %d) to stop, but it is still there after %gs", pid,
                            wait_seconds));
    std::this_thread::sleep_for(20ms);  // polling: the daemon is not our child, no exit event
  }
  // A client of the bus that may autospawn starts a new daemon as soon as the
  // old one is gone. Say so, rather than claim the bus has no daemon now.
  if (shmbus::detail::socket_answers(path)) {
    if (auto again = connect_existing(g); again && again->daemon_pid() != pid)
      fail(kExitError,
           strf("stopped shmbusd (pid %d), but a client of bus '%s' started a new one at once "
                "(pid %d); stop the bus's clients first, or run them with --no-autospawn "
                "(SHMBUS_NO_AUTOSPAWN=1)",
                pid, g.bus.c_str(), again->daemon_pid()));
  }
  std::printf("stopped shmbusd (pid %d) of bus '%s' on %s\n", pid, g.bus.c_str(), path.c_str());
  return kExitOk;
}

// ---- the command tree -----------------------------------------------------------

// Number checks with plain messages (CLI11's ranges print the double limits).
CLI::Validator number_above(double floor, bool inclusive) {
  return CLI::Validator(
      [floor, inclusive](std::string& s) -> std::string {
        char* end = nullptr;
        errno = 0;
        const double v = std::strtod(s.c_str(), &end);
        if (s.empty() || end == nullptr || *end != '\0' || errno == ERANGE || v != v)
          return "'" + s + "' is not a number";
        if (inclusive ? v >= floor : v > floor) return {};
        return strf("must be %s %g, not %s", inclusive ? "at least" : "greater than", floor,
                    s.c_str());
      },
      inclusive ? strf(">= %g", floor) : strf("> %g", floor));
}

CLI::Validator offset_validator() {
  return CLI::Validator(
      [](std::string& s) -> std::string {
        std::uint64_t v = 0;
        if (s == "earliest" || s == "latest" || parse_u64(s, v)) return {};
        return "must be earliest, latest or an offset (a sequence number), not '" + s + "'";
      },
      "earliest|latest|OFFSET");
}

int run(int argc, char** argv) {
  CLI::App app{
      "shmbus: the command line of a shmbus bus (shared-memory topics on one host).\n"
      "Manages topics through shmbusd (started on demand), publishes and prints messages,\n"
      "and shows rates and consumer lag."};
  app.set_version_flag("--version", std::string("shmbus ") + shmbus::version());
  app.footer(kFooter);
  app.fallthrough();  // global options may come after a subcommand's name too
  app.require_subcommand(1);
  Globals g;
  add_globals(&app, g);

  std::vector<std::pair<CLI::App*, std::function<int()>>> actions;
  const auto leaf = [&](CLI::App* parent, const std::string& name, const std::string& help,
                        std::function<int()> action) {
    CLI::App* c = parent->add_subcommand(name, help);
    add_globals(c, g);
    actions.emplace_back(c, std::move(action));
    return c;
  };

  // topic ...
  CLI::App* topic = app.add_subcommand("topic", "create, delete, list and describe topics");
  topic->require_subcommand(1);
  add_globals(topic, g);

  CreateArgs ca;
  CLI::App* create = leaf(topic, "create", "create a topic (prints what it created)",
                          [&] { return cmd_topic_create(g, ca); });
  create->add_option("NAME", ca.name, "topic name: 1-63 of A-Z a-z 0-9 . _ -")->required();
  create
      ->add_option("--slots", ca.slots,
                   "ring slots, a power of two (default: the daemon's, 1024 unless configured)")
      ->check(number_above(0, false));
  create
      ->add_option("--slot-size", ca.slot_size,
                   "bytes per message at most (default: the daemon's, 1024 unless configured)")
      ->check(number_above(0, false));
  create
      ->add_option("--policy", ca.policy,
                   "when the ring is full: block (publish waits), reject (publish fails at "
                   "once), overwrite (slow readers skip) (default: block)")
      ->transform(CLI::IsMember({"block", "reject", "overwrite"}, CLI::ignore_case));
  create->add_flag("--single-producer", ca.single_producer,
                   "at most one publisher at a time (a faster claim)");
  create
      ->add_option("--max-producers", ca.max_producers,
                   "publisher seats (default: the daemon's, 16)")
      ->check(number_above(0, false));
  create->add_option("--max-groups", ca.max_groups, "consumer groups (default: the daemon's, 16)")
      ->check(number_above(0, false));
  create
      ->add_option("--max-members", ca.max_members,
                   "members per consumer group (default: the daemon's, 8)")
      ->check(number_above(0, false));
  create->add_flag("--if-not-exists", ca.if_not_exists,
                   "succeed (and describe it) when the topic exists already");

  std::string delete_name;
  CLI::App* del = leaf(topic, "delete", "delete a topic (processes that have it open keep it)",
                       [&] { return cmd_topic_delete(g, delete_name); });
  del->add_option("NAME", delete_name, "topic name")->required();

  bool list_json = false;
  CLI::App* list = leaf(topic, "list",
                        "list the topics: name, slots, slot size, policy, tail, "
                        "producers, groups",
                        [&] { return cmd_topic_list(g, list_json); });
  list->add_flag("--json", list_json, "print a JSON array");

  std::string describe_name;
  bool describe_json = false;
  CLI::App* describe =
      leaf(topic, "describe", "describe a topic and its consumer groups (position, lag, lost)",
           [&] { return cmd_topic_describe(g, describe_name, describe_json); });
  describe->add_option("NAME", describe_name, "topic name")->required();
  describe->add_flag("--json", describe_json, "print a JSON object");

  // pub
  PubArgs pa;
  CLI::App* pub =
      leaf(&app, "pub", "publish messages: each stdin line is one message (without its newline)",
           [&] { return cmd_pub(g, pa); });
  pub->add_option("TOPIC", pa.topic, "topic to publish to")->required();
  CLI::Option* file = pub->add_option("--file", pa.file,
                                      "publish this file instead of stdin, whole as one message");
  pub->add_flag("--lines", pa.lines, "with --file: each line of the file is one message")
      ->needs(file);
  pub->add_option("--repeat", pa.repeat, "send the input N times (default: 1)")
      ->check(number_above(0, false));
  pub->add_option("--rate", pa.rate, "at most this many messages per second (default: no limit)")
      ->check(number_above(0, false));
  pub->add_option("--timeout", pa.timeout,
                  "seconds a publish may wait for room when the topic's policy is block; then it "
                  "fails with exit code 2 (default: 10)")
      ->check(number_above(0, true));
  pub->add_flag("-q,--quiet", pa.quiet, "no count on stderr at the end (errors still show)");

  // sub
  SubArgs sa;
  CLI::App* sub = leaf(
      &app, "sub", "print the messages of a topic, one per line (stdout is flushed per message)",
      [&] { return cmd_sub(g, sa); });
  sub->add_option("TOPIC", sa.topic, "topic to read")->required();
  sub->add_option("--group", sa.group,
                  "consumer group: members of one group share its messages, each goes to one "
                  "member (default: a private group of this process)");
  sub->add_option("--from", sa.from,
                  "where a new group starts: earliest (oldest the ring holds), latest, or an "
                  "offset (default: latest; an existing group goes on from its position)")
      ->check(offset_validator());
  sub->add_option("--count", sa.count, "stop after N messages (exit 0)")
      ->check(number_above(0, false));
  sub->add_option("--timeout", sa.timeout,
                  "stop after SECONDS without a message (exit 2 unless --count messages came)")
      ->check(number_above(0, true));
  sub->add_flag("--hex", sa.hex, "print each message as hex digits (two per byte)");
  sub->add_flag("--show-offset", sa.show_offset, "prefix each message with \"OFFSET: \"");
  sub->add_flag("--durable", sa.durable,
                "make the named group durable: it holds back producers even with no members");
  sub->add_flag("-q,--quiet", sa.quiet, "no count on stderr at the end");

  // stat
  StatArgs st;
  CLI::App* stat = leaf(&app, "stat",
                        "per topic: messages/s, bytes/s, and per group: lag; refreshed every "
                        "interval until Ctrl-C",
                        [&] { return cmd_stat(g, st); });
  stat->add_flag("--json", st.json, "print one JSON object per refresh");
  stat->add_option("--interval", st.interval, "seconds between refreshes (default: 1)")
      ->check(number_above(0, false));
  stat->add_flag("--once", st.once, "print one snapshot, taken over one interval, and exit");

  // daemon ...
  CLI::App* daemon = app.add_subcommand("daemon", "ask after or stop the bus's shmbusd");
  daemon->require_subcommand(1);
  add_globals(daemon, g);
  leaf(daemon, "status",
       "print the daemon's socket, pid and topic count (never starts one; exit 1 if none "
       "answers)",
       [&] { return cmd_daemon_status(g); });
  double stop_wait = 10;
  CLI::App* stop = leaf(daemon, "stop", "stop the daemon (never starts one)",
                        [&] { return cmd_daemon_stop(g, stop_wait); });
  stop->add_option("--wait", stop_wait, "seconds to wait for the daemon to go away (default: 10)")
      ->check(number_above(0, true));

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? kExitOk : kExitUsage;
  }
  for (auto& [cmd, action] : actions)
    if (cmd->parsed()) return action();
  return kExitUsage;  // require_subcommand makes this unreachable
}

}  // namespace

int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);  // a closed stdout shows as EPIPE, handled where we write
  try {
    return run(argc, argv);
  } catch (const Failure& f) {
    note(f.message);
    return f.code;
  } catch (const shmbus::Error& e) {
    std::string message = e.what();
    if (e.code() == shmbus::ErrorCode::DaemonUnavailable && !g_daemon_option.empty() &&
        ::access(g_daemon_option.c_str(), X_OK) != 0)
      message += " (--daemon " + g_daemon_option + " is not an executable file)";
    note(message);
    return exit_code_of(e.code());
  } catch (const std::exception& e) {
    note(e.what());
    return kExitError;
  }
}
