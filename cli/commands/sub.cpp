// shmbus sub: prints the messages of a topic, one per line.
#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "../output.hpp"
#include "commands.hpp"
#include "shmbus/options.hpp"
#include "shmbus/subscriber.hpp"

namespace shmbus::cli {
namespace {

using namespace std::chrono_literals;

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
  std::string group_mode;  // empty: an existing group's mode, else shared
  std::string delivery;    // empty: an existing group's, else at-most-once
  std::uint32_t max_deliveries = kDefaultMaxDeliveries;
  std::string tags;  // a tag filter, "TagA || TagB" (empty: every message)
  bool show_key = false;
  bool show_partition = false;
  bool show_headers = false;
  std::string key_separator = "\t";
};

// Appends `n` bytes at `p`, as they are or as hex digits (two per byte).
void append_bytes(std::string& line, const char* p, std::size_t n, bool hex) {
  if (!hex) {
    line.append(p, n);
    return;
  }
  static constexpr char kDigits[] = "0123456789abcdef";
  for (std::size_t i = 0; i < n; ++i) {
    const auto c = static_cast<unsigned char>(p[i]);
    line += kDigits[c >> 4];
    line += kDigits[c & 15];
  }
}

int cmd_sub(const Globals& g, const SubArgs& a) {
  SubscriberOptions so;
  so.group = a.group;
  so.tags = a.tags;
  so.durable = a.durable;
  const auto start = parse_start(a.from);
  if (!start) fail(kExitUsage, "--from '" + a.from + "' is not " + std::string(kStartNames));
  so.start = start->from;
  so.offset = start->offset;
  Bus bus = connect(g);
  if (!a.group_mode.empty()) {
    const auto mode = parse_group_mode(a.group_mode);
    if (!mode) fail(kExitUsage, "--group-mode '" + a.group_mode + "' is not shared|partitioned");
    so.group_mode = *mode;
  }
  if (!a.delivery.empty()) {
    const auto d = parse_delivery(a.delivery);
    if (!d) fail(kExitUsage, "--delivery '" + a.delivery + "' is not at-most-once|at-least-once");
    so.delivery = *d;
  }
  so.max_deliveries = a.max_deliveries;
  if (!a.group.empty() && (a.group_mode.empty() || a.delivery.empty())) {
    // Joining an existing group: in the mode and delivery it was created with.
    try {
      const GroupStatus existing = bus.describe_group(a.topic, a.group);
      if (a.group_mode.empty()) so.group_mode = existing.mode;
      if (a.delivery.empty()) so.delivery = existing.delivery;
    } catch (const Error& e) {
      if (e.code() != ErrorCode::NotFound) throw;
    }
  }
  std::unique_ptr<Subscriber> sub = bus.subscriber(a.topic, so);
  const bool lanes = sub->priorities() != 0;
  // --show-key and --show-headers read in place: receive_copy leaves them out.
  // At least once: a message is released (acknowledged) only once it was
  // printed and flushed, so a sub killed before that leaves it to the group.
  const bool in_place = a.show_key || a.show_headers || so.delivery == Delivery::AtLeastOnce;
  Sample sample;
  std::string headers;
  install_stop_handlers();
  std::vector<std::byte> buffer(sub->slot_size());
  std::string line;
  std::uint64_t received = 0;
  const bool timed = a.timeout >= 0;
  const auto idle_limit = timed ? seconds_to_ns(a.timeout) : std::chrono::nanoseconds(0);
  auto last = Clock::now();
  int rc = kExitOk;
  bool idle_end = false;  // stopped by --timeout
  std::uint64_t corrupt_seen = sub->corrupt();
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
    MessageInfo info;
    std::string_view key;
    const std::uint64_t position = sub->position();
    Status st;
    if (in_place) {
      sample.release();
      st = sub->receive(sample, wait);
      if (st == Status::Ok) {
        headers.clear();
        for (const Property& p : sample.properties()) {
          if (!headers.empty()) headers += ',';
          headers.append(p.name).append("=").append(p.value);
        }
        info.sequence = sample.sequence();
        info.partition = lanes ? sample.priority() : sample.partition();
        info.size = static_cast<std::uint32_t>(sample.data().size());
        std::memcpy(buffer.data(), sample.data().data(), info.size);
        key = {reinterpret_cast<const char*>(sample.key().data()), sample.key().size()};
      }
    } else {
      st = sub->receive_copy(buffer, info, wait);
    }
    if (st == Status::Corrupt || sub->corrupt() != corrupt_seen) {
      // Corrupt with the position unmoved: nothing was skipped, the topic's
      // tail contradicts its slots (Subscriber::receive), so nothing more can
      // be trusted to come.
      const bool fatal = st == Status::Corrupt && sub->position() == position;
      corrupt_seen = sub->corrupt();
      note(strf("topic '%s' is damaged: %s (corrupt count %" PRIu64 ")", a.topic.c_str(),
                fatal ? "its tail contradicts its slots, giving up"
                      : "skipped messages with an invalid header",
                corrupt_seen));
      if (fatal) {
        rc = kExitError;
        break;
      }
      if (st == Status::Corrupt) continue;
    }
    if (st == Status::Timeout || st == Status::WouldBlock) {
      if (timed && Clock::now() >= last + idle_limit) {
        // Without --count, --timeout drains: quiet after something came is done.
        rc = a.count == 0 && received > 0 ? kExitOk : kExitTimeout;
        idle_end = true;
        break;
      }
      if (stdout_reader_gone()) break;  // as EPIPE below: a clean stop
      continue;
    }
    if (st == Status::TopicDeleted) {
      note(strf("topic '%s' was deleted (every message published before was received)",
                a.topic.c_str()));
      rc = kExitTopicDeleted;
      break;
    }
    if (st != Status::Ok) fail(kExitError, std::string("receive: ") + to_string(st));
    line.clear();
    if (a.show_partition) line += u64(info.partition) + ": ";
    if (a.show_offset) line += u64(info.sequence) + ": ";
    if (a.show_headers) line += headers + '\t';
    if (a.show_key) {
      append_bytes(line, key.data(), key.size(), a.hex);
      line += a.key_separator;
    }
    append_bytes(line, reinterpret_cast<const char*>(buffer.data()), info.size, a.hex);
    line += '\n';
    // Under policy overwrite a slot read in place may have been reused meanwhile.
    if (in_place && !sample.intact()) continue;
    sample.release();
    std::fwrite(line.data(), 1, line.size(), stdout);
    if (stdout_closed()) break;  // the reader of our pipe left: a clean stop
    ++received;
    last = Clock::now();
  }
  sample.release();
  sub.reset();  // frees the member seat before we report
  if (!a.quiet)
    std::fprintf(stderr, "shmbus: received %" PRIu64 " message%s from '%s'%s\n", received,
                 received == 1 ? "" : "s", a.topic.c_str(),
                 idle_end ? strf(" (none for %gs)", a.timeout).c_str() : "");
  return rc;
}

}  // namespace

void add_sub_command(CommandTree& tree) {
  const Globals& g = tree.globals();
  auto sa = std::make_shared<SubArgs>();
  CLI::App* sub =
      tree.leaf(&tree.app(), "sub",
                "print the messages of a topic, one per line (stdout is flushed per message)",
                [&g, sa] { return cmd_sub(g, *sa); });
  sub->add_option("TOPIC", sa->topic, "topic to read")->required();
  CLI::Option* group =
      sub->add_option("--group", sa->group,
                      "consumer group: members of one group share its messages, each goes to one "
                      "member (default: a private group of this process)");
  sub->add_option("--from", sa->from,
                  "where a new group starts: earliest (oldest the ring holds), latest, or an "
                  "offset at most the tail (default: latest; an existing group goes on from "
                  "its position)")
      ->check(start_validator());
  sub->add_option("--count", sa->count, "stop after N messages (exit 0)")
      ->check(number_above(0, false));
  sub->add_option("--timeout", sa->timeout,
                  "stop after SECONDS without a message; with --count: exit 2 unless the count "
                  "came; without: a drain, exit 0 once something came (2 if nothing did)")
      ->check(number_above(0, true));
  sub->add_flag("--hex", sa->hex, "print each message as hex digits (two per byte)");
  sub->add_flag("--show-offset", sa->show_offset, "prefix each message with \"OFFSET: \"");
  sub->add_flag("--durable", sa->durable,
                "make the named group durable: it holds back producers even with no members");
  sub->add_flag("-q,--quiet", sa->quiet, "no count on stderr at the end");
  sub->add_option("--group-mode", sa->group_mode,
                  "how the members of a new --group share a topic of several partitions: "
                  "shared (each takes the next message of any partition) or partitioned (each "
                  "partition is owned by one member at a time, so a key's messages come in "
                  "order) (default: the group's mode if it exists, else shared)")
      ->needs(group)
      ->transform(CLI::IsMember({"shared", "partitioned"}, CLI::ignore_case));
  sub->add_option("--delivery", sa->delivery,
                  "what a new --group promises when a member dies holding messages: "
                  "at-most-once (they are lost to the group) or at-least-once (a message is "
                  "acknowledged once printed; what a dead member held goes to another member, "
                  "after --max-deliveries to TOPIC.dlq) (default: the group's if it exists, else "
                  "at-most-once)")
      ->needs(group)
      ->transform(CLI::IsMember({"at-most-once", "at-least-once", "at_most_once", "at_least_once"},
                                CLI::ignore_case));
  sub->add_option("--max-deliveries", sa->max_deliveries,
                  "with --delivery at-least-once, for a new group: deliveries of a message "
                  "before it goes to the dead-letter topic TOPIC.dlq (default: 5)")
      ->check(CLI::Range(1, 1000));
  sub->add_option("--tags", sa->tags,
                  "a tag filter, 'TagA || TagB' (RocketMQ's expression; '*': every message): "
                  "messages whose tag header is another or none are taken and not printed "
                  "(counted as filtered in group describe)");
  sub->add_flag("--show-key", sa->show_key,
                "print each message as KEY<SEP>VALUE (an unkeyed message has an empty key)");
  sub->add_option("--key-separator", sa->key_separator,
                  "with --show-key: what goes between the key and the value (default: a tab)")
      ->needs("--show-key");
  sub->add_flag("--show-headers", sa->show_headers,
                "print each message's headers (properties) first, as NAME=VALUE,NAME=VALUE "
                "and a tab (nothing before the tab when it has none), after partition and "
                "offset and before the key");
  sub->add_flag("--show-partition", sa->show_partition,
                "prefix each message with \"PARTITION: \" (on a priority topic: its priority "
                "lane); before the offset when both are shown");
}

}  // namespace shmbus::cli
