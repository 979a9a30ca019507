// shmbus pub: publishes stdin line by line, or a file (whole or by line),
// optionally repeated and paced.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "commands.hpp"
#include "shmbus/publisher.hpp"

namespace shmbus::cli {
namespace {

struct PubArgs {
  std::string topic;
  std::string file;
  bool lines = false;
  std::uint64_t repeat = 1;
  double rate = 0;      // messages per second; 0: as fast as the topic takes them
  double timeout = 10;  // seconds a publish may wait for room (policy block)
  bool quiet = false;
  // Routing (topics of several partitions or priority lanes).
  std::string key;            // every message's key (empty: none)
  std::string key_separator;  // each line is KEY<SEP>VALUE (empty: lines are values)
  std::int64_t partition = -1;
  std::int64_t priority = -1;
  std::vector<std::string> headers;  // NAME=VALUE, for every message
  // Delayed messages: each due --delay after its publish, or all --at.
  std::string delay, at;
  std::optional<std::chrono::nanoseconds> delay_ns;
  std::optional<std::int64_t> at_ns;
  [[nodiscard]] bool delayed() const { return delay_ns || at_ns; }
};

// A message as published: its key (maybe empty) and its payload.
struct Message {
  std::string_view key, value;
};

// Splits a line at the first separator; nullopt when it has none (such a
// line is refused rather than published without a key).
std::optional<Message> split_key(std::string_view line, const std::string& sep) {
  const auto at = line.find(sep);
  if (at == std::string_view::npos) return std::nullopt;
  return Message{line.substr(0, at), line.substr(at + sep.size())};
}

std::string no_separator(std::uint64_t n, const std::string& sep) {
  return strf("message %" PRIu64
              " has no key separator '%s': with --key-separator each "
              "line must be KEY%sVALUE; nothing of it was published",
              n, sep.c_str(), sep.c_str());
}

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
  PubSession(const PubArgs& a, Publisher& pub, std::span<const Property> props)
      : args_(a), pub_(pub), props_(props) {
    for (const Property& p : props)
      props_bytes_ += 4 + p.name.size() + p.value.size();
  }

  // Publishes one message (a line, or a whole file); returns kExitOk or the
  // exit code of the failure (after saying what went wrong).
  int send(std::string_view line) {
    const std::uint64_t n = count_ + 1;
    const std::optional<Message> split = args_.key_separator.empty()
                                             ? Message{args_.key, line}
                                             : split_key(line, args_.key_separator);
    if (!split) {
      note(no_separator(n, args_.key_separator));
      return kExitError;
    }
    const Message msg = *split;
    const std::string_view m = msg.value;
    if (msg.key.size() > detail::kMaxKey) {
      note(strf("message %" PRIu64 " has a key of %zu bytes, longer than the %u bytes a key may "
                "have; nothing of it was published",
                n, msg.key.size(), detail::kMaxKey));
      return kExitError;
    }
    const std::uint64_t key_bytes =
        detail::key_span(static_cast<std::uint32_t>(msg.key.size() + props_bytes_));
    const std::uint64_t due_bytes = args_.delayed() ? 8 : 0;  // a delayed message's due time
    if (m.size() + key_bytes + due_bytes > pub_.slot_size()) {
      const std::string with_key =
          msg.key.empty() && props_bytes_ == 0
              ? std::string()
              : strf(" with a %zu-byte key and %zu bytes of headers (%" PRIu64
                     " bytes in the slot: they are padded to a multiple of 8)",
                     msg.key.size(), props_bytes_, key_bytes);
      note(strf("message %" PRIu64 " is %zu bytes%s%s, larger than the %u-byte slot size of topic "
                "'%s'; nothing of it was published (create the topic with a larger "
                "--slot-size)",
                n, m.size(), with_key.c_str(),
                due_bytes != 0 ? " and 8 bytes of due time (a delayed message carries it)" : "",
                pub_.slot_size(), args_.topic.c_str()));
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
    Route route = Route::with_key(msg.key);
    if (args_.partition >= 0) route.partition = static_cast<std::uint32_t>(args_.partition);
    if (args_.priority >= 0) route.priority = static_cast<std::uint32_t>(args_.priority);
    route.properties = props_;
    const auto data = std::as_bytes(std::span(m.data(), m.size()));
    const Status st =
        args_.delay_ns ? pub_.publish_after(route, *args_.delay_ns, data)
        : args_.at_ns
            ? pub_.publish_at(route,
                              Publisher::WallClock::time_point(
                                  std::chrono::duration_cast<Publisher::WallClock::duration>(
                                      std::chrono::nanoseconds(*args_.at_ns))),
                              data)
            : pub_.publish(route, data);
    if (args_.delayed()) switch (st) {
        case Status::NoSchedule:
          note(strf("message %" PRIu64 " was not published: topic '%s' has no schedule for "
                    "delayed messages; create it with --delay-slots N (shmbus topic create %s "
                    "--delay-slots 1024)",
                    n, args_.topic.c_str(), args_.topic.c_str()));
          return kExitError;
        case Status::Timeout:
          note(strf("message %" PRIu64 " was not published: the schedule of topic '%s' stayed "
                    "full for %gs; its delayed messages are not yet due (see shmbus topic "
                    "describe %s), or create it with more --delay-slots",
                    n, args_.topic.c_str(), args_.timeout, args_.topic.c_str()));
          return kExitTimeout;
        case Status::WouldBlock:
          note(strf("message %" PRIu64 " was not published: the schedule of topic '%s' is full "
                    "(nothing scheduled is dropped; see shmbus topic describe %s)",
                    n, args_.topic.c_str(), args_.topic.c_str()));
          return kExitError;
        default:
          break;
      }
    switch (st) {
      case Status::Ok:
        ++count_;
        bytes_ += m.size();
        return kExitOk;
      case Status::Timeout:
        note(strf("message %" PRIu64 " was not published: topic '%s' stayed full for %gs "
                  "(policy block); a consumer group is not keeping up (see shmbus topic "
                  "describe %s), or raise --timeout",
                  n, args_.topic.c_str(), args_.timeout, args_.topic.c_str()));
        return kExitTimeout;
      case Status::WouldBlock:
        note(strf("message %" PRIu64 " was not published: topic '%s' is full and its policy "
                  "is reject (see shmbus topic describe %s)",
                  n, args_.topic.c_str(), args_.topic.c_str()));
        return kExitError;
      case Status::TopicDeleted:
        note(strf("message %" PRIu64 " was not published: topic '%s' was deleted", n,
                  args_.topic.c_str()));
        return kExitTopicDeleted;
      case Status::TooLarge:
        note(strf("message %" PRIu64 " is %zu bytes, larger than the %u-byte slot size of "
                  "topic '%s'",
                  n, m.size(), pub_.slot_size(), args_.topic.c_str()));
        return kExitError;
      default:
        note(strf("message %" PRIu64 " was not published: %s", n, to_string(st)));
        return kExitError;
    }
  }

  [[nodiscard]] std::uint64_t count() const { return count_; }
  [[nodiscard]] std::uint64_t bytes() const { return bytes_; }

 private:
  const PubArgs& args_;
  Publisher& pub_;
  std::span<const Property> props_;
  std::size_t props_bytes_ = 0;
  std::uint64_t count_ = 0, bytes_ = 0, paced_ = 0;
  Clock::time_point start_{};
};

// Refuses a --partition or --priority the topic lacks before anything is sent.
void check_route(const PubArgs& a, const Publisher& pub) {
  const std::string t = "topic '" + a.topic + "'";
  if (a.priority >= 0) {
    if (pub.priorities() == 0)
      fail(kExitUsage, strf("--priority %" PRId64 ": %s has no priority lanes (create a topic "
                            "with --priorities N to have them)",
                            a.priority, t.c_str()));
    if (a.priority >= pub.priorities())
      fail(kExitUsage, strf("--priority %" PRId64 ": %s has priorities 0 to %u", a.priority,
                            t.c_str(), pub.priorities() - 1));
  }
  if (a.partition >= 0) {
    if (pub.priorities() != 0)
      fail(kExitUsage, strf("--partition %" PRId64 ": %s has priority lanes, not partitions; "
                            "choose a lane with --priority",
                            a.partition, t.c_str()));
    if (a.partition >= pub.partitions())
      fail(kExitUsage,
           strf("--partition %" PRId64 ": %s has %s", a.partition, t.c_str(),
                pub.partitions() == 1 ? "one partition, 0"
                                      : strf("partitions 0 to %u", pub.partitions() - 1).c_str()));
  }
}

// The --header NAME=VALUE options as properties (viewing a.headers), checked
// against the limits.
std::vector<Property> header_properties(const PubArgs& a) {
  std::vector<Property> out;
  for (const std::string& h : a.headers) {
    const auto eq = h.find('=');
    if (eq == std::string::npos || eq == 0)
      fail(kExitUsage, "--header '" + h + "' is not NAME=VALUE (a non-empty name, then '=')");
    out.push_back({std::string_view(h).substr(0, eq), std::string_view(h).substr(eq + 1)});
  }
  std::uint32_t size = 0;
  if (detail::encoded_size(out, size) != Status::Ok)
    fail(kExitUsage, strf("--header: at most %u headers, names of 1 to %u bytes, %u bytes in "
                          "all (4 per header + its name and value)",
                          kMaxProperties, kMaxPropertyName, kMaxPropertyBytes));
  return out;
}

int cmd_pub(const Globals& g, PubArgs& a) {
  const std::vector<Property> props = header_properties(a);
  if (!a.delay.empty()) {
    a.delay_ns = parse_duration(a.delay);
    if (!a.delay_ns)
      fail(kExitUsage, "--delay '" + a.delay +
                           "' is not a duration: a number and a unit, as 500ms, 5s, 2m, 1h");
  }
  if (!a.at.empty()) {
    a.at_ns = parse_time(a.at);
    if (!a.at_ns)
      fail(kExitUsage, "--at '" + a.at +
                           "' is not a time: give it as RFC 3339 with its zone, as "
                           "2026-12-24T18:00:00Z or 2026-12-24T19:00:00+01:00");
  }
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
  if (!a.key_separator.empty())  // a file is checked whole before anything is published
    for (std::size_t i = 0; i < input.size(); ++i)
      if (!split_key(input[i], a.key_separator))
        fail(kExitError, no_separator(i + 1, a.key_separator));
  Bus bus = connect(g);
  PublisherOptions po;
  po.timeout = seconds_to_ns(a.timeout);
  Publisher pub = bus.publisher(a.topic, po);
  check_route(a, pub);
  install_stop_handlers();
  PubSession session(a, pub, props);
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

}  // namespace

void add_pub_command(CommandTree& tree) {
  const Globals& g = tree.globals();
  auto pa = std::make_shared<PubArgs>();
  CLI::App* pub = tree.leaf(
      &tree.app(), "pub", "publish messages: each stdin line is one message (without its newline)",
      [&g, pa] { return cmd_pub(g, *pa); });
  pub->add_option("TOPIC", pa->topic, "topic to publish to")->required();
  CLI::Option* file = pub->add_option("--file", pa->file,
                                      "publish this file instead of stdin, whole as one message");
  pub->add_flag("--lines", pa->lines, "with --file: each line of the file is one message")
      ->needs(file);
  pub->add_option("--repeat", pa->repeat, "send the input N times (default: 1)")
      ->check(number_above(0, false));
  pub->add_option("--rate", pa->rate, "at most this many messages per second (default: no limit)")
      ->check(number_above(0, false));
  pub->add_option("--timeout", pa->timeout,
                  "seconds a publish may wait for room when the topic's policy is block; then it "
                  "fails with exit code 2 (default: 10)")
      ->check(number_above(0, true));
  pub->add_flag("-q,--quiet", pa->quiet, "no count on stderr at the end (errors still show)");
  CLI::Option* key = pub->add_option(
      "--key", pa->key,
      "give every message this key: it is stored with the message and, unless --partition is "
      "given, picks its partition as Kafka's default partitioner does");
  pub->add_option("--key-separator", pa->key_separator,
                  "each message is KEY<SEP>VALUE, split at the first SEP (as Kafka's console "
                  "producer with parse.key); a message without SEP is refused")
      ->excludes(key)
      ->check(CLI::Validator(
          [](std::string& s) { return s.empty() ? std::string("must not be empty") : ""; }, "SEP"));
  pub->add_option("--partition", pa->partition,
                  "publish to this partition (0 to partitions-1; wins over the key's); "
                  "unkeyed messages otherwise go to one partition for a run of 64, then the "
                  "next")
      ->check(number_above(0, true));
  pub->add_option("--header", pa->headers,
                  "NAME=VALUE: a property every message carries (Kafka's headers; repeat for "
                  "more, at most 16; the one named tag is the message's tag)");
  pub->add_option("--priority", pa->priority,
                  "on a topic with priority lanes: the lane, 0 (lowest, the default) to "
                  "priorities-1")
      ->check(number_above(0, true));
  CLI::Option* delay = pub->add_option(
      "--delay", pa->delay,
      "DURATION: deliver each message this long after it is published (500ms, 5s, 2m, 1h); it "
      "is invisible until then. The topic needs --delay-slots");
  pub->add_option("--at", pa->at,
                  "TIME: deliver every message at this time, RFC 3339 with its zone "
                  "(2026-12-24T18:00:00Z); a time in the past delivers at once")
      ->excludes(delay);
}

}  // namespace shmbus::cli
