// What the daemon reports about a topic (list, describe, `shmbus stat`).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "shmbus/options.hpp"

namespace shmbus {

// A live member of a group: its process and what it holds.
struct MemberStatus {
  std::uint32_t seat = 0;
  std::uint32_t pid = 0;
  std::uint64_t session = 0;               // tells a re-used seat apart
  std::uint64_t held = ~std::uint64_t{0};  // oldest sequence it holds; all ones: none
  std::uint64_t received = 0;              // messages it took
  [[nodiscard]] bool holds_nothing() const noexcept { return held == ~std::uint64_t{0}; }
};

// A group's place in one partition (or priority lane) of its topic.
struct GroupPartitionStatus {
  std::uint64_t position = 0;  // next offset the group takes in the partition
  std::uint64_t lag = 0;       // the partition's tail - position
  // A partitioned group: the pid of the member that owns the partition now
  // (0: none), and the seat the last assignment gave it to (-1: none).
  std::uint32_t owner_pid = 0;
  std::int32_t target_seat = -1;
};

struct GroupStatus {
  std::string name;  // empty for a private group
  std::uint32_t members = 0;
  bool durable = false;
  // Summed over the partitions (on a one-partition topic: that partition's).
  std::uint64_t position = 0;  // next sequence the group takes
  std::uint64_t lag = 0;       // tail - position
  std::uint64_t lost = 0;      // skipped after being overrun
  // Overrun now: the position is older than the oldest message the ring
  // retains, and this many messages will count in `lost` at the next read.
  std::uint64_t overrun = 0;
  std::vector<MemberStatus> member_seats{};  // one per live member
  GroupMode mode = GroupMode::Shared;
  std::vector<GroupPartitionStatus> partitions{};  // one per partition (or lane)
  std::uint64_t filtered = 0;  // taken and not returned: the tag filter did not match
  // At least once (docs/acknowledgements.md): its limit, messages delivered
  // again, sent to the dead-letter topic, and left unacknowledged by dead
  // members, waiting for a live one (orphans: their seats).
  Delivery delivery = Delivery::AtMostOnce;
  std::uint32_t max_deliveries = 0;
  std::uint64_t redelivered = 0;
  std::uint64_t dead_lettered = 0;
  std::uint64_t unacked_orphans = 0;
  std::uint32_t orphans = 0;
};

// One partition (or priority lane) of a topic.
struct PartitionStatus {
  std::uint64_t tail = 0;       // next offset to be claimed in the partition
  std::uint64_t abandoned = 0;  // offsets given up instead of published
};

// A live producer seat: its process and what it published since it attached.
struct ProducerStatus {
  std::uint32_t seat = 0;
  std::uint32_t pid = 0;
  std::uint64_t session = 0;          // tells a re-used seat apart
  std::uint64_t published = 0;        // messages
  std::uint64_t published_bytes = 0;  // payload bytes
};

struct TopicStatus {
  std::string name;
  TopicOptions options;
  // Summed over the partitions (on a one-partition topic: its tail).
  std::uint64_t tail = 0;       // next sequence to be claimed
  std::uint32_t producers = 0;  // live producer seats
  // Messages ever published to the topic: tail - abandoned (claims in flight
  // count as published; a snapshot).
  std::uint64_t published = 0;
  std::uint64_t abandoned = 0;                 // sequences given up instead of published
  std::uint64_t published_bytes = 0;           // payload bytes of the live producers (a guess)
  std::vector<ProducerStatus> producer_seats;  // one per live producer
  std::vector<GroupStatus> groups;
  std::vector<PartitionStatus> partitions;  // one per partition (or priority lane)
  std::uint64_t generation = 0;             // tells a re-created topic of the same name apart
  bool deleted = false;                     // deleted while this region was still open
  // Delayed messages (options.delay_slots > 0; docs/delayed.md): entries
  // taken in the schedule, those of them past their due time (waiting for
  // shmbusd, or for room in their partition), the earliest due time
  // (system-clock ns since the epoch; 0: none), messages moved into their
  // partitions, and entries shmbusd refused as invalid.
  std::uint64_t scheduled = 0;
  std::uint64_t overdue = 0;
  std::uint64_t next_due_ns = 0;
  std::uint64_t moved = 0;
  std::uint64_t refused = 0;
  // File topics (options.storage == Storage::File; docs/durability.md): the
  // data file's path (its control file is path + "@control"), when it was
  // last written to disk (system-clock ns; 0: never since it was created),
  // and the messages shmbusd found torn (checksum mismatch) when it adopted
  // the topic at its start: readers skip them, counted as lost.
  std::string path;
  std::uint64_t flushed_ns = 0;
  std::uint64_t torn = 0;
  // Empty for an intact topic. Otherwise shmbusd found the topic's region
  // damaged (a file truncated or grown, an access that faulted) and
  // quarantined it: what it found. The counts above are then zero; delete the
  // topic and create it again.
  std::string damage;
};

}  // namespace shmbus
