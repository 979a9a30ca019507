// Options for topics, publishers and subscribers.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace shmbus {

// What a producer does when the ring is full (some gating group has not yet
// consumed the message that the next slot holds).
enum class Policy : std::uint8_t {
  Block = 0,      // publish waits (spin, then sleep) up to its timeout
  Reject = 1,     // publish returns WouldBlock at once
  Overwrite = 2,  // producers never wait; readers that fall behind skip and count
};

// How a caller waits for data (subscriber) or for room (publisher).
enum class WaitStrategy : std::uint8_t {
  BusySpin = 0,   // spin with `pause`; lowest latency, owns a core
  SpinYield = 1,  // spin a while, then sched_yield
  SpinFutex = 2,  // spin a while, then sleep on a shared futex (default)
};

// Default for how long SpinFutex and SpinYield spin before they yield or
// sleep (PublisherOptions::spin, SubscriberOptions::spin). Waking a sleeping
// core costs ~30 us on the VMs here, so a stream of messages closer together
// than this is served without a sleep.
inline constexpr std::chrono::nanoseconds kDefaultSpin = std::chrono::microseconds(50);

// Ends a blocking wait early (publish, loan, receive). While it waits, the
// waiting thread calls `check` each time it wakes and at least every `every`;
// when `check` returns true the call returns Status::Interrupted at once,
// having taken or published nothing. `check` must not throw. Empty: a wait
// ends only on its condition or its timeout. The Python module sets it to see
// Ctrl-C and close() from another thread while passing its real timeout.
struct Interrupt {
  std::function<bool()> check;
  std::chrono::nanoseconds every = std::chrono::milliseconds(50);
};

// Where a topic's region lives (docs/durability.md).
enum class Storage : std::uint8_t {
  // Shared memory (a sealed memfd of shmbusd's, or /dev/shm): gone with a
  // reboot, and with the daemon and its keeper.
  Memory = 0,
  // Two files in the bus's data directory (shmbusd --data-dir), mapped
  // shared: messages, group positions, unacknowledged records and schedules
  // survive a restart of everything and a reboot; each message carries a
  // CRC32C, so one torn by a power cut is counted as lost, never returned.
  File = 1,
};

struct TopicOptions {
  std::uint32_t slot_count = 1024;  // power of two, >= 2
  std::uint32_t slot_size = 1024;   // bytes of payload per slot
  Policy policy = Policy::Block;
  bool single_producer = false;  // at most one publisher: claims without CAS
  std::uint32_t max_producers = 16;
  std::uint32_t max_groups = 16;
  std::uint32_t max_members = 8;  // members per consumer group
  std::uint32_t mode = 0600;      // permission bits of the region
  // Rings in the topic, each with its own offsets (Kafka's partitions): a
  // keyed message goes to partition_for_key(key, partitions). 1 to 1024.
  std::uint32_t partitions = 1;
  // 0: no priority lanes. 2 to 32: the topic's rings are priority lanes
  // 0 (lowest, the default) to priorities - 1, and a receive takes the
  // oldest message of the highest lane that has one. Not with partitions > 1.
  std::uint32_t priorities = 0;
  // Entries of the topic's schedule: delayed messages (Publisher::publish_at,
  // publish_after) waiting for their due time, at most 1048576. 0: the topic
  // refuses delayed messages (Status::NoSchedule). Not with single_producer.
  std::uint32_t delay_slots = 0;
  // Memory, or File (shmbusd only): see Storage.
  Storage storage = Storage::Memory;
  // File topics: how often shmbusd writes what was published back to disk
  // (msync), Kafka's flush.ms. 0: never by itself (the page cache writes it
  // back when the kernel chooses: a process crash loses nothing, a power cut
  // may); Publisher::flush() and Bus::flush() flush at once either way.
  // At most kMaxFlushInterval.
  std::chrono::milliseconds flush_interval{0};
  // The rings the topic has: its priority lanes, else its partitions.
  [[nodiscard]] std::uint32_t rings() const noexcept {
    return priorities != 0 ? priorities : partitions;
  }
};

inline constexpr std::chrono::milliseconds kMaxFlushInterval = std::chrono::hours(24);

struct PublisherOptions {
  WaitStrategy wait = WaitStrategy::SpinFutex;
  // How long a publish under Policy::Block waits for room before it returns
  // Status::Timeout (the message is then not accepted, and the caller knows).
  std::chrono::nanoseconds timeout = std::chrono::seconds(10);
  // How long SpinFutex/SpinYield spin before they yield or sleep. 0: sleep at
  // once (right when both sides share one core: spinning only delays the peer).
  std::chrono::nanoseconds spin = kDefaultSpin;
  Interrupt interrupt{};  // see Interrupt
};

enum class StartFrom : std::uint8_t {
  Latest = 0,    // only messages published after the subscriber joined
  Earliest = 1,  // the oldest message the ring still retains
  Offset = 2,    // the sequence number in SubscriberOptions::offset
};

// How the members of a named group share a topic of several partitions.
enum class GroupMode : std::uint8_t {
  // RabbitMQ's competing consumers: any member takes the next message of any
  // partition; per-key order across members is not promised.
  Shared = 0,
  // Kafka's consumer groups: each partition is owned by at most one member at
  // a time, so a key's messages are processed in order, one at a time.
  Partitioned = 1,
};

// What a named group promises when a member dies holding samples
// (docs/acknowledgements.md). Chosen when the group is created.
enum class Delivery : std::uint8_t {
  // A sample a member took and did not release when it died is lost to the
  // group (the fastest: nothing is recorded).
  AtMostOnce = 0,
  // Releasing a sample acknowledges it; what a member took and did not
  // release before it died (or left) is delivered again to another member,
  // or to the next that joins, flagged Sample::redelivered(). Sample::nack()
  // gives one back at once; after max_deliveries deliveries a message goes
  // to the dead-letter topic "<topic>.dlq". Implies durable.
  AtLeastOnce = 1,
};
inline constexpr std::uint32_t kDefaultMaxDeliveries = 5;

struct SubscriberOptions {
  // Empty: a private group of its own. Named: members of one group compete,
  // each message goes to exactly one member; every group sees every message.
  std::string group;
  StartFrom start = StartFrom::Latest;  // used when the group is created
  std::uint64_t offset = 0;             // with StartFrom::Offset
  bool durable = false;                 // the group gates producers even with no members
  // Chosen when the group is created; a member joining an existing group
  // with another mode is refused (InvalidArgument). Private groups ignore it.
  GroupMode group_mode = GroupMode::Shared;
  // Chosen when the group is created, like group_mode (a member joining with
  // another is refused). At-least-once needs a named group.
  Delivery delivery = Delivery::AtMostOnce;
  // At-least-once: the deliveries of a message (the first and every
  // redelivery) before it goes to the dead-letter topic, 1 to 1000. Set
  // when the group is created; members that join later use the group's.
  std::uint32_t max_deliveries = kDefaultMaxDeliveries;
  // A tag filter, RocketMQ's subscription expression: "TagA || TagB" (tags
  // separated by ||, spaces around them ignored), or "*" or empty for every
  // message. A message whose tag (its property "tag", properties.hpp) is
  // not one of them, or that has none, is taken and not returned: it counts
  // in Subscriber::filtered() and the group's status, not as lost. Each
  // member filters what it takes, so every member of a group should use the
  // same expression (RocketMQ asks the same).
  std::string tags{};
  WaitStrategy wait = WaitStrategy::SpinFutex;
  // As PublisherOptions::spin.
  std::chrono::nanoseconds spin = kDefaultSpin;
  Interrupt interrupt{};  // see Interrupt
};

// ---- names ------------------------------------------------------------------
// One spelling per concept, used by the CLI (`--policy`, `--wait`, `--from`),
// the Python module (`policy=`, `wait=`, `start=`) and every status print-out.
// The parsers accept exactly the names to_string returns (case-insensitive),
// and, for WaitStrategy, the short forms "busy", "yield" and "futex".

[[nodiscard]] std::string_view to_string(Policy p) noexcept;  // block|reject|overwrite
[[nodiscard]] std::string_view to_string(
    WaitStrategy w) noexcept;                                    // busy_spin|spin_yield|spin_futex
[[nodiscard]] std::string_view to_string(StartFrom s) noexcept;  // latest|earliest|offset
[[nodiscard]] std::string_view to_string(GroupMode m) noexcept;  // shared|partitioned
[[nodiscard]] std::string_view to_string(Delivery d) noexcept;   // at_most_once|at_least_once
[[nodiscard]] std::string_view to_string(Storage s) noexcept;    // memory|file

[[nodiscard]] std::optional<Policy> parse_policy(std::string_view s) noexcept;
[[nodiscard]] std::optional<WaitStrategy> parse_wait_strategy(std::string_view s) noexcept;
[[nodiscard]] std::optional<GroupMode> parse_group_mode(std::string_view s) noexcept;
// Also with '-' for '_' (the CLI's "at-least-once").
[[nodiscard]] std::optional<Delivery> parse_delivery(std::string_view s) noexcept;
[[nodiscard]] std::optional<Storage> parse_storage(std::string_view s) noexcept;
// A flush policy as a user writes it: "none" (0), or "interval:N" with N a
// positive count of ms, or of the unit after it (ms, s, m): "interval:100ms",
// "interval:2s". At most kMaxFlushInterval.
[[nodiscard]] std::optional<std::chrono::milliseconds> parse_flush(std::string_view s) noexcept;
// The spelling parse_flush reads back: "none" or "interval:100ms".
[[nodiscard]] std::string flush_name(std::chrono::milliseconds interval);

// A start position as a user writes it: "earliest", "latest" or a decimal offset.
struct StartPosition {
  StartFrom from = StartFrom::Latest;
  std::uint64_t offset = 0;  // with StartFrom::Offset
};
[[nodiscard]] std::optional<StartPosition> parse_start(std::string_view s) noexcept;

// What the parsers accept, for error messages: "block, reject or overwrite".
inline constexpr std::string_view kPolicyNames = "block, reject or overwrite";
inline constexpr std::string_view kWaitStrategyNames =
    "busy_spin (busy), spin_yield (yield) or spin_futex (futex)";
inline constexpr std::string_view kStartNames = "earliest, latest or an offset";
inline constexpr std::string_view kGroupModeNames = "shared or partitioned";
inline constexpr std::string_view kDeliveryNames = "at_most_once or at_least_once";
inline constexpr std::string_view kStorageNames = "memory or file";
inline constexpr std::string_view kFlushNames =
    "none or interval:N (N in ms, or with a unit: interval:100ms, interval:2s)";

}  // namespace shmbus
