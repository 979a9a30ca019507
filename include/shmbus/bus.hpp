// Bus: the client of shmbusd. Connects (starting a daemon when none runs),
// creates and opens topics through it, and registers this process's seats so
// the daemon can clean up if the process dies. The data path never goes
// through the daemon; if it dies, publishing and receiving go on, and the Bus
// reconnects and re-registers in the background.
#pragma once

#include <chrono>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "shmbus/options.hpp"
#include "shmbus/publisher.hpp"
#include "shmbus/report.hpp"
#include "shmbus/topic.hpp"
#include "shmbus/topic_status.hpp"

namespace shmbus {

namespace detail {
class Connection;
class Descriptors;
struct RequesterSlot;  // src/request.cpp: the reply topic of Bus::request
class Replier;         // src/request.cpp: Sample::reply's publishers
}  // namespace detail

struct BusOptions {
  std::string bus = "default";
  std::string socket_path;  // empty: SHMBUS_SOCKET or the default for `bus`
  // Start shmbusd when none answers (unless SHMBUS_NO_AUTOSPAWN=1).
  bool autospawn = true;
  // The daemon binary: empty means SHMBUS_DAEMON, then `shmbusd` beside this
  // program or in the build tree, then `shmbusd` on PATH.
  std::string daemon_path;
  std::chrono::milliseconds timeout = std::chrono::seconds(5);  // per request / to start
  // Whose daemon may serve this bus: always this user's or root's (checked
  // with SO_PEERCRED, so another user cannot squat the bus); a shared bus run
  // by a service account names that account's uid here (-1: none). Also
  // SHMBUS_DAEMON_UID.
  long daemon_uid = -1;
};

class Bus {
 public:
  // Throws Error(DaemonUnavailable) when no daemon answers and none can be started.
  static Bus connect(const BusOptions& options = {});

  // Throws Error(AlreadyExists) when the topic exists, unless `if_not_exists`:
  // then opens it as it is (its options may differ from `options`: compare
  // them with Topic::options()).
  Topic create_topic(std::string_view name, const TopicOptions& options = {},
                     bool if_not_exists = false);
  Topic open_topic(std::string_view name);
  // Deletes the topic: its name goes, and everyone who has it open is told
  // (Status::TopicDeleted: publishers at once, subscribers once they drained
  // what was published). With `if_unused`, refuses with Error(InUse) while
  // producers or group members are attached.
  void delete_topic(std::string_view name, bool if_unused = false);
  std::vector<TopicStatus> topics();
  TopicStatus describe(std::string_view name);
  // open_topic(name).flush(): returns once everything published to the file
  // topic before the call is on disk (Topic::flush).
  void flush(std::string_view topic);

  // Consumer groups, as Kafka's kafka-consumer-groups: a topic's groups are in
  // describe(topic).groups. A private group (no name) goes with its last
  // member; a named one stays (it keeps its position) until deleted.
  // The named group's status, members included; Error(NotFound) if none.
  GroupStatus describe_group(std::string_view topic, std::string_view group);
  // Removes a named group; Error(InUse) while it has live members.
  void delete_group(std::string_view topic, std::string_view group);
  // Sets a named group's position: Earliest, Latest or an offset at most the
  // tail; Error(InUse) while it has live members.
  void reset_group(std::string_view topic, std::string_view group, StartPosition to);

  // open_topic(topic).publisher(options): a seat registered with the daemon.
  // To attach several, open the topic once and call Topic::publisher.
  Publisher publisher(std::string_view topic, const PublisherOptions& options = {});
  // open_topic(topic).subscriber(options), likewise.
  std::unique_ptr<Subscriber> subscriber(std::string_view topic,
                                         const SubscriberOptions& options = {});

  // Request-reply (RocketMQ's request, RabbitMQ's direct reply-to;
  // docs/request-reply.md): publishes `data` to `topic` with the properties
  // reply_to (this Bus's reply topic, "_reply.<pid>.<n>", created on the
  // first request and deleted with the last copy of this Bus, or by shmbusd
  // when this process dies) and correlation_id, and waits up to `timeout` for
  // the responder's Sample::reply. Returns the reply's payload (a copy).
  // Throws Error(Timeout) when no reply came in time (a late reply is
  // dropped when it comes), and the publish's error otherwise (a full topic
  // under Block waits within the same timeout). The route's key, partition
  // and properties are kept. One request at a time per Bus (and its copies):
  // concurrent callers wait for each other; use one Bus per thread for
  // parallel requests. Replies are at most kMaxReplySize bytes.
  static constexpr std::uint32_t kMaxReplySize = 16384;
  std::vector<std::byte> request(std::string_view topic, std::span<const std::byte> data,
                                 std::chrono::nanoseconds timeout);
  std::vector<std::byte> request(std::string_view topic, const Route& route,
                                 std::span<const std::byte> data, std::chrono::nanoseconds timeout);
  // Replies to earlier requests that came after they had timed out (dropped).
  [[nodiscard]] std::uint64_t stale_replies() const noexcept;

  // Component reports (shmbus/report.hpp, docs/daemon.md): shows `counters`
  // in `shmbus stat` under `name` (of `kind`, a word such as "bridge") until
  // this Bus closes (its last copy, and everything opened through it:
  // topics, publishers, subscribers) or this process dies; a later call with
  // the same name replaces it. The values are a snapshot: report again, say
  // once a second, to keep them current (shmbus-bridge does). After a
  // reconnect (shmbusd restarted) the Bus sends the last report of each name
  // again, values as they were then; a report made while no daemon answered
  // is sent at the reconnect too (the call still throws DaemonUnavailable).
  // Throws Error(InvalidArgument) for a bad name, kind or counter (the rule of
  // topic names; at most kMaxReportCounters counters, each name once) before
  // anything is sent, and the daemon's error otherwise: ResourceExhausted
  // beyond kMaxReportsPerConnection names on this Bus, or kMaxReports or
  // kMaxReportBytes in the daemon. Thread-safe like the Bus's other requests.
  void report(std::string_view name, std::string_view kind,
              std::span<const ReportCounter> counters);
  // Every process's reports (anyone who may connect may list them), by name
  // then pid; pid and uid are the reporter's as the kernel told the daemon.
  std::vector<ComponentReport> reports();

  // Asks the daemon to exit (only root or the daemon's own user may).
  void shutdown_daemon();
  [[nodiscard]] const std::string& socket_path() const noexcept;
  [[nodiscard]] int daemon_pid() const noexcept;  // as the daemon reported it at the last hello

 private:
  friend class detail::Replier;  // a responder's replies go through its topic's Bus
  friend class Subscriber;       // dead letters (at least once) likewise
  explicit Bus(std::shared_ptr<detail::Connection> c);
  Topic make_topic(const detail::Descriptors& fds, std::string_view name,
                   const TopicOptions& options);
  std::shared_ptr<detail::Connection> conn_;
  std::shared_ptr<detail::RequesterSlot> requester_;  // shared by copies of this Bus
};

}  // namespace shmbus
