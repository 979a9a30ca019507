// The layout of a topic region in shared memory. Everything here is plain data:
// fixed capacity, no pointers (offsets from a segment's base), trivially
// copyable apart from the atomics, and every shared atomic is lock-free.
//
// A region is two segments (two files), split by who may write them, so that
// the kernel enforces a subscriber's rights (docs/daemon.md):
//
// Data:     TopicHeader | ProducerSeat[max_producers] | Slot[slot_count]
//           written by producers (and shmbusd); a subscriber maps it read-only.
// Control:  ControlHeader | (GroupEntry + MemberSeat[max_members])[max_groups]
//           written by every seat holder: wake-ups, joins, cursors, hazards.
//
// A topic of P partitions (or P priority lanes) is P such rings: each segment
// is P blocks of the layout above, block p at p * partition_size (data) and
// p * partition_control_size (control), so every step of ring.hpp works on
// one partition unchanged. Block 0's headers speak for the topic: its
// geometry, its control lock (joins and leaves of every partition), its
// data_event (consumers of any partition sleep there) and its groups' names,
// modes and assignment words. The seat and group tables of every block are
// kept identical by the control plane (a seat or group index means the same
// in each); cursors, hazards, tails and counters are each partition's own.
//
// What a slot's stamp means, and every step of the protocol over these
// structures, is in ring.hpp.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace shmbus::detail {

inline constexpr std::uint64_t kMagic = 0x31'53'55'42'4d'48'53'00ULL;  // "\0SHMBUS1"
// 2: slots are filled in the order 0, 2, 1, 3 within each block of four
//    (Ring::slot), and TopicHeader::jump_mark.
// 3: ProducerSeat::published_bytes.
// 4: TopicHeader::deleted and TopicHeader::abandoned.
// 5: the control segment (ControlHeader, groups) split from the data segment;
//    TopicHeader::shared_control.
// 6: partitions (or priority lanes): the data and control segments are each
//    `partitions` blocks of the version-5 layout (TopicHeader::partitions,
//    partition_size, partition_control_size, lanes); SlotHeader::key_length;
//    GroupEntry::owner, target and assignment (partitioned groups).
// 7: message properties: SlotHeader::meta (was key_length) holds the key's
//    bytes (low 16 bits) and the encoded properties' (high 16), which follow
//    the key; SlotHeader::tag_hash (was reserved0); GroupEntry::filtered.
// 8: delayed messages: the schedule area after the last data block
//    (TopicHeader::delay_slots, schedule_offset, delay_stride; ScheduleHeader,
//    ScheduleEntry), and kMetaDelayed: a moved message's due time in its slot.
// 9: at-least-once groups: kGroupAtLeastOnce, GroupEntry::max_deliveries,
//    orphans, handovers, orphaned, redelivered, dead_lettered; SeatState::Orphan; the
//    ack area (AckRecord per held sample of each member) after the last
//    control block.
// 10: file topics (docs/durability.md): TopicHeader::storage (was reserved0),
//    boot and flush_interval_ms; ControlHeader::flushed_ns; a file topic's
//    slot ends in kSlotTrailer bytes holding its message's CRC32C.
inline constexpr std::uint32_t kLayoutVersion = 10;
inline constexpr std::uint64_t kControlMagic = 0x4c'54'43'42'4d'48'53'00ULL;  // "\0SHMBCTL"
inline constexpr std::size_t kCacheLine = 64;
// Two lines: keeps adjacent-line prefetch from coupling hot fields.
inline constexpr std::size_t kHotAlign = 128;
inline constexpr std::uint64_t kNone = ~std::uint64_t{0};
inline constexpr std::size_t kNameMax = 63;  // topic and group names, bytes
inline constexpr std::size_t kSlotHeaderSize = 32;
// A file topic's slot ends in this many bytes (within its stride): the
// message's CRC32C (ring.hpp, slot_checksum), then 4 unused.
inline constexpr std::size_t kSlotTrailer = 8;

// Sleep/wake without lost wake-ups (see docs/memory-ordering.md, "Event counts").
// `seq` is the 32-bit futex word (shared, not private, futex); `waiters` says
// whether anyone may be asleep, so a notifier with no sleepers makes no syscall.
struct EventCount {
  std::atomic<std::uint32_t> seq;
  std::atomic<std::uint32_t> waiters;
};

// Orphan: a member of an at-least-once group that died (or left) holding
// samples it had not acknowledged. Its hazards still gate producers and its
// ack records wait for a live member to adopt them (docs/acknowledgements.md);
// the seat is freed once the last is adopted.
enum class SeatState : std::uint32_t { Free = 0, Claimed = 1, Active = 2, Orphan = 3 };

enum GroupFlags : std::uint32_t {
  kGroupDurable = 1u << 0,
  kGroupPrivate = 1u << 1,  // one member only, consumes without CAS
  // Kafka's consumer groups: each partition owned by one member at a time
  // (GroupEntry::owner, target, assignment). Else members share partitions.
  kGroupPartitioned = 1u << 2,
  // At-least-once delivery: every sample a member takes is recorded in its
  // ack records until released (acknowledged); a member that dies leaves
  // them for the group (SeatState::Orphan). Always with kGroupDurable.
  kGroupAtLeastOnce = 1u << 3,
};

// The most partitions (or priority lanes) a topic may have.
inline constexpr std::uint32_t kMaxPartitions = 1024;
inline constexpr std::uint32_t kMaxPriorities = 32;
// The longest message key, in bytes (stored in the slot before the payload).
inline constexpr std::uint32_t kMaxKey = 1024;

struct alignas(kHotAlign) TopicHeader {
  // Written once at creation; `magic` last with release (see Region::create),
  // read first with acquire (Region::open).
  std::atomic<std::uint64_t> magic;
  std::uint32_t layout_version;
  std::uint32_t header_size;
  std::uint64_t generation;   // random at creation; tells a re-created topic apart
  std::uint64_t region_size;  // of the data segment
  std::uint32_t slot_count;
  std::uint32_t slot_size;
  std::uint32_t stride;  // bytes from one slot to the next
  std::uint8_t policy;
  std::uint8_t single_producer;
  // 1 when someone other than the topic's owner (and root) may map the
  // control segment: the daemon's rules let another uid subscribe, or a
  // daemonless topic's mode lets its group or others open it. Producers then
  // never take the gate scan's proof that a slot is free (slot_free): the
  // cursors it rests on are in the control segment, which such a subscriber
  // can forge. Written by the creator, and by shmbusd at adoption, before any
  // client of the daemon maps the region.
  std::atomic<std::uint8_t> shared_control;
  std::uint8_t storage;  // Storage: 1 (file) adds each slot's checksum trailer
  std::uint32_t max_producers;
  std::uint32_t max_groups;
  std::uint32_t max_members;
  std::uint32_t group_stride;  // bytes per GroupEntry including its members
  std::uint64_t producers_offset;
  std::uint64_t groups_offset;  // in the control segment
  std::uint64_t slots_offset;
  char name[kNameMax + 1];
  std::uint64_t control_size;  // of the control segment
  std::uint32_t partitions;    // rings in the topic (blocks in each segment), >= 1
  std::uint8_t lanes;          // 1: the partitions are priority lanes (lane p = priority p)
  std::uint8_t reserved2[3];
  std::uint64_t partition_size;          // bytes per data block
  std::uint64_t partition_control_size;  // bytes per control block
  // Block 0's copy: the schedule area of delayed messages (ScheduleHeader),
  // in the data segment after the last block; delay_slots 0: none.
  std::uint64_t schedule_offset;
  std::uint32_t delay_slots;   // schedule entries
  std::uint32_t delay_stride;  // bytes per entry
  // File topics: a hash of the kernel's boot id when shmbusd last served the
  // region (written by shmbusd at creation and adoption only). A region
  // that comes back after a reboot has seat pids that mean nothing now (a
  // pid may belong to another process), so shmbusd frees every seat.
  std::uint64_t boot;
  // File topics: TopicOptions::flush_interval in ms (0: none).
  std::uint32_t flush_interval_ms;
  std::uint32_t reserved3;

  alignas(kHotAlign) std::atomic<std::uint64_t> tail;  // next sequence to claim
  // 1 once shmbusd deleted the topic (Region::mark_deleted): waits end with
  // Status::TopicDeleted once what was published is drained. Checked only
  // when there is nothing to take, or (producers) after a join epoch change.
  alignas(kHotAlign) std::atomic<std::uint32_t> deleted;
  std::uint32_t reserved1;
  // Sequences given up (abandoned) rather than published, by producers and
  // by shmbusd for dead ones: tail - abandoned is what was published.
  std::atomic<std::uint64_t> abandoned;
};

// The head of the control segment: what subscribers write as well as producers.
struct alignas(kHotAlign) ControlHeader {
  // kControlMagic, stored (release) before the data segment's magic at
  // creation; `generation` is the data segment's, so a pair of files that do
  // not belong together (a topic re-created between two opens) is refused.
  std::atomic<std::uint64_t> magic;
  std::uint64_t generation;
  // Control-plane lock (joins, leaves, seat allocation): pid of the holder, 0 free.
  // Never taken on the data path.
  std::atomic<std::uint32_t> control_lock;
  std::uint32_t reserved0;
  // File topics: when everything published before it was last written to
  // disk (system-clock ns; 0: never), by shmbusd's flusher or a flush().
  // For reports only (a subscriber may write it too).
  std::atomic<std::uint64_t> flushed_ns;

  alignas(kHotAlign) EventCount data_event;   // consumers sleep here
  alignas(kHotAlign) EventCount space_event;  // producers sleep here (full ring)
  // Bumped when a group starts gating (a join); producers read it after each
  // claim and rescan the gate when it changed. Written only on joins.
  alignas(kHotAlign) std::atomic<std::uint64_t> join_epoch;
  // The highest position a group's cursor was ever set to other than by taking
  // messages: a start (attach, join) or a seek. Only grows. A sequence at or
  // above it that every gating group has passed was taken by each of them, so
  // it is complete: producers then skip the slot-free check (P0). Written on
  // joins and seeks only; on join_epoch's line, which producers already read.
  std::atomic<std::uint64_t> jump_mark;
};

// Claims a producer may hold unpublished at once (loans, plus one publish).
inline constexpr std::uint32_t kMaxInFlight = 8;

struct alignas(kCacheLine) ProducerSeat {
  std::atomic<std::uint32_t> state;  // SeatState
  std::atomic<std::uint32_t> pid;
  std::atomic<std::uint64_t> session;
  std::atomic<std::uint64_t> published;        // count, relaxed (statistics)
  std::atomic<std::uint64_t> published_bytes;  // payload bytes, relaxed (statistics)
  // Sequences claimed and not yet published (or kNone): the daemon marks
  // them abandoned if the producer dies, and never repairs one listed here
  // while the producer lives.
  std::atomic<std::uint64_t> in_flight[kMaxInFlight];
};

struct alignas(kCacheLine) MemberSeat {
  std::atomic<std::uint32_t> state;  // SeatState
  std::atomic<std::uint32_t> pid;
  std::atomic<std::uint64_t> session;
  // Hazard: the oldest sequence this member still reads, or kNone. Producers
  // never overwrite a slot at or after min(cursor, held) of a gating group.
  std::atomic<std::uint64_t> held;
  std::atomic<std::uint64_t> received;  // count, relaxed (statistics)
};

struct alignas(kHotAlign) GroupEntry {
  std::atomic<std::uint32_t> state;    // SeatState
  std::atomic<std::uint32_t> flags;    // GroupFlags
  std::atomic<std::uint32_t> members;  // live members (gates producers when > 0)
  // At-least-once groups (block 0's copy): deliveries after which a message
  // goes to the dead-letter topic instead. Written at creation.
  std::uint32_t max_deliveries;
  char name[kNameMax + 1];
  std::atomic<std::uint64_t> lost;     // messages skipped after being overrun
  std::atomic<std::uint64_t> corrupt;  // messages skipped for an invalid header
  // Partitioned groups (kGroupPartitioned), in each partition's copy: the
  // member (seat index + 1; 0: none) that owns this partition now, and the
  // one the last assignment gave it to. Ownership moves from owner to target
  // only when the owner lets go (it holds nothing of the partition) or dies.
  std::atomic<std::uint32_t> owner;
  std::atomic<std::uint32_t> target;
  // Block 0's copy: bumped by every assignment (a join, a leave, a death), so
  // a member learns of one by this one word.
  std::atomic<std::uint64_t> assignment;
  // Messages members took and did not return because their tag filter
  // (SubscriberOptions::tags) did not match.
  std::atomic<std::uint64_t> filtered;
  // Claim cursor: the next sequence a member of this group will take.
  alignas(kHotAlign) std::atomic<std::uint64_t> cursor;
  // At-least-once groups, block 0's copy, written under the control lock
  // (rare: a death, an adoption, a dead letter), read by members between
  // takes: orphan seats left, the number of orphanings ever (a member that
  // saw the same number has nothing new to adopt), messages delivered
  // again, and messages sent to the dead-letter topic.
  std::atomic<std::uint32_t> orphans;
  // Each partition's copy: bumped (release) by an adopter before it raises an
  // orphan's hazard in that partition; Ring::gate rescans a group whose count
  // moved during its scan (docs/memory-ordering.md, "Hand-over of a hazard").
  std::atomic<std::uint32_t> handovers;
  std::atomic<std::uint64_t> orphaned;
  std::atomic<std::uint64_t> redelivered;
  std::atomic<std::uint64_t> dead_lettered;
  // MemberSeat[max_members] follows at offset sizeof(GroupEntry).
};

// ---- the ack area: at-least-once groups (docs/acknowledgements.md) ----------
// After the last control block: for every group g and member seat m,
// kMaxHeld AckRecords at ((g * max_members + m) * kMaxHeld) records in. A
// member of an at-least-once group writes a record before it claims a run
// (the cursor CAS) and clears it when it releases the run, so what a dead
// member had taken and not released is exactly its records. Written only
// by the seat's holder, and under the control lock by whoever adopts an
// orphan's records. Untrusted like all of the control segment: an adopter
// bounds-checks every field.
inline constexpr std::uint32_t kAckRecords = 64;  // = kMaxHeld (ring.hpp)
struct AckRecord {
  // The first sequence of the run + 1; 0: the record is free. Relaxed
  // stores: the seat's holder orders them before its cursor CAS (release)
  // and its hazard's release; an adopter reads them under the control lock
  // after the holder died (its stores are then all visible).
  std::atomic<std::uint64_t> seq1;
  // ack_info(partition, count, deliveries).
  std::atomic<std::uint64_t> info;
};
constexpr std::uint64_t ack_info(std::uint32_t partition, std::uint32_t count,
                                 std::uint32_t deliveries) noexcept {
  return std::uint64_t{partition & 0xffffu} | std::uint64_t{deliveries & 0xffffu} << 16 |
         std::uint64_t{count} << 32;
}
constexpr std::uint32_t ack_partition(std::uint64_t info) noexcept {
  return static_cast<std::uint32_t>(info & 0xffffu);
}
constexpr std::uint32_t ack_deliveries(std::uint64_t info) noexcept {
  return static_cast<std::uint32_t>((info >> 16) & 0xffffu);
}
constexpr std::uint32_t ack_count(std::uint64_t info) noexcept {
  return static_cast<std::uint32_t>(info >> 32);
}
// The most deliveries a group may allow (its ack records count to 65535).
inline constexpr std::uint32_t kMaxDeliveries = 1000;

// The bytes a key of n bytes takes before the payload: n, rounded up to 8
// (64-bit: n may come from a damaged slot).
constexpr std::uint64_t key_span(std::uint32_t n) noexcept {
  return (std::uint64_t{n} + 7u) & ~std::uint64_t{7};
}

// SlotHeader::meta: the bytes before the payload, the key's (low 16 bits)
// and the encoded properties' after it (bits 16-30), and kMetaDelayed: the
// message was scheduled (Publisher::publish_at), and its due time, 8 bytes
// of system-clock ns, follows the key and properties (rounded up to 8).
// Both sizes fit: kMaxKey and kMaxPropertyBytes (properties.hpp) are below
// 32768.
static_assert(kMaxKey < 32768);
inline constexpr std::uint32_t kMetaDelayed = 1u << 31;
constexpr std::uint32_t meta_of(std::uint32_t key, std::uint32_t properties) noexcept {
  return key | properties << 16;
}
constexpr std::uint32_t meta_key(std::uint32_t meta) noexcept {
  return meta & 0xffffu;
}
constexpr std::uint32_t meta_properties(std::uint32_t meta) noexcept {
  return (meta >> 16) & 0x7fffu;
}
// Where a delayed message's due time is: after the key and properties,
// their bytes rounded up to 8.
constexpr std::uint64_t meta_due_offset(std::uint32_t meta) noexcept {
  return key_span(meta_key(meta) + meta_properties(meta));
}
// Where the payload starts after the key, properties and due time: 8-byte
// aligned (at most 2 * 32767 + 7 + 8).
constexpr std::uint64_t meta_span(std::uint32_t meta) noexcept {
  return meta_due_offset(meta) + ((meta & kMetaDelayed) != 0 ? 8 : 0);
}

struct SlotHeader {  // each slot starts on a cache line (stride is a multiple of 64)
  std::atomic<std::uint64_t> stamp;
  // The fields below are written by the producer before its release store of
  // `stamp` and read by consumers after the acquire load that sees it. They
  // are atomics (relaxed) only so that a reader racing an overwrite (policy
  // overwrite) reads a stale value instead of invoking undefined behaviour.
  std::atomic<std::uint32_t> length;
  std::atomic<std::uint32_t> producer_id;
  std::atomic<std::uint64_t> timestamp_ns;
  // The key at kSlotHeaderSize, its properties right after it; the payload
  // at kSlotHeaderSize + meta_span(meta), so it stays 8-byte aligned.
  std::atomic<std::uint32_t> meta;
  // properties.hpp's tag_hash of the message's `tag` property (0: none):
  // what a tag filter looks at first.
  std::atomic<std::uint32_t> tag_hash;
  // key, properties, then payload, within slot_size bytes from kSlotHeaderSize.
};

// ---- the schedule: delayed messages (docs/delayed.md) ------------------------
// Schedule area = ScheduleHeader | bitmap (one bit per entry, 64-bit words,
// rounded up to kHotAlign) | ScheduleEntry+message [delay_slots], each entry
// delay_stride bytes: the 64-byte entry, then a SlotHeader and the message's
// key, properties, due time and payload exactly as the slot will hold them,
// so moving it is one copy. Written by producers (insert) and shmbusd (move);
// a subscriber maps it read-only with the rest of the data segment.
inline constexpr std::uint32_t kMaxDelaySlots = 1u << 20;

// ScheduleEntry::state: the state in the low 32 bits, the pid of the process
// that put it there (a producer writing it, shmbusd moving it) in the high 32.
enum class EntryState : std::uint32_t {
  Free = 0,     // may be taken by an insert (CAS from 0)
  Writing = 1,  // a producer fills it; freed by shmbusd if the pid dies
  Ready = 2,    // scheduled: order, due_ns and the message are complete
  Moving = 3,   // shmbusd is appending it to its partition (target: the offset)
};
constexpr std::uint64_t entry_word(EntryState s, std::uint32_t pid) noexcept {
  return static_cast<std::uint64_t>(s) | std::uint64_t{pid} << 32;
}
constexpr EntryState entry_state(std::uint64_t w) noexcept {
  return static_cast<EntryState>(w & 0xffffffffu);
}
constexpr std::uint32_t entry_pid(std::uint64_t w) noexcept {
  return static_cast<std::uint32_t>(w >> 32);
}

struct alignas(kHotAlign) ScheduleHeader {
  // Publish order of delayed messages (ties of due time go in this order):
  // each insert's fetch_add when it becomes Ready.
  std::atomic<std::uint64_t> next_order;
  // Where the next insert starts looking for a free entry (fetch_add).
  std::atomic<std::uint32_t> hint;
  std::uint32_t reserved0;
  // The due time (system-clock ns) the mover sleeps until; 0 while it looks
  // at the bitmap, kNone when nothing is scheduled. An insert due earlier
  // (or any insert while it is 0) bumps `event` and wakes the mover.
  alignas(kHotAlign) std::atomic<std::uint64_t> armed;
  EventCount event;  // the mover sleeps here
  // Producers waiting for a free entry (a full schedule under Block) sleep
  // here; the mover notifies as it frees entries.
  alignas(kHotAlign) EventCount space;
  std::atomic<std::uint64_t> moved;    // messages appended to their partition (statistics)
  std::atomic<std::uint64_t> refused;  // entries shmbusd found invalid and dropped
};

struct alignas(kCacheLine) ScheduleEntry {
  std::atomic<std::uint64_t> state;   // entry_word(EntryState, pid)
  std::atomic<std::uint64_t> order;   // ScheduleHeader::next_order at publish
  std::atomic<std::uint64_t> due_ns;  // system-clock ns since the epoch
  // Moving: the offset shmbusd claimed in `partition`, stored before it
  // publishes there (kNone before the claim). A restarted shmbusd that finds
  // a Moving entry looks at that slot: published there, the entry is
  // retired; not, it is Ready again (docs/delayed.md, "Crashes").
  std::atomic<std::uint64_t> target;
  std::atomic<std::uint32_t> partition;
  std::uint32_t reserved0;
  std::uint64_t reserved1[3];
  // The message: a SlotHeader (stamp unused) and its bytes follow.
};
inline constexpr std::uint64_t kEntryHeaderSize = 64;

static_assert(std::atomic<std::uint64_t>::is_always_lock_free);
static_assert(std::atomic<std::uint32_t>::is_always_lock_free);
static_assert(std::atomic<std::uint8_t>::is_always_lock_free);
static_assert(std::is_standard_layout_v<TopicHeader>);
static_assert(std::is_standard_layout_v<ControlHeader>);
static_assert(std::is_standard_layout_v<GroupEntry>);
static_assert(std::is_standard_layout_v<SlotHeader>);
static_assert(offsetof(TopicHeader, tail) % kHotAlign == 0);
static_assert(offsetof(ControlHeader, data_event) % kHotAlign == 0);
static_assert(offsetof(ControlHeader, space_event) - offsetof(ControlHeader, data_event) >=
              kHotAlign);
static_assert(offsetof(GroupEntry, cursor) % kHotAlign == 0);
static_assert(offsetof(GroupEntry, cursor) >= kHotAlign, "cursor on its own line");
static_assert(sizeof(GroupEntry) % kHotAlign == 0);
static_assert(sizeof(MemberSeat) == kCacheLine, "one member per line: no false sharing");
static_assert(sizeof(ProducerSeat) == 2 * kCacheLine);
static_assert(sizeof(SlotHeader) == kSlotHeaderSize,
              "payload starts 32 bytes into the slot's first line");
static_assert(std::is_standard_layout_v<EventCount>);
static_assert(std::is_standard_layout_v<ProducerSeat>);
static_assert(std::is_standard_layout_v<MemberSeat>);
static_assert(std::is_standard_layout_v<ScheduleHeader>);
static_assert(std::is_standard_layout_v<ScheduleEntry>);
static_assert(std::is_standard_layout_v<AckRecord>);

// ---- the layout, pinned -----------------------------------------------------
// Every size and offset another process relies on. A change to any of these
// structures fails here: update the figures only together with kLayoutVersion
// (and the note above it), so that an old process refuses the new region
// instead of misreading it. kLayoutVersion == 10:
static_assert(kLayoutVersion == 10, "update the pinned layout below with the version");
static_assert(sizeof(EventCount) == 8);
static_assert(offsetof(EventCount, seq) == 0);
static_assert(offsetof(EventCount, waiters) == 4);
static_assert(sizeof(TopicHeader) == 512);
static_assert(offsetof(TopicHeader, magic) == 0);
static_assert(offsetof(TopicHeader, layout_version) == 8);
static_assert(offsetof(TopicHeader, header_size) == 12);
static_assert(offsetof(TopicHeader, generation) == 16);
static_assert(offsetof(TopicHeader, region_size) == 24);
static_assert(offsetof(TopicHeader, slot_count) == 32);
static_assert(offsetof(TopicHeader, slot_size) == 36);
static_assert(offsetof(TopicHeader, stride) == 40);
static_assert(offsetof(TopicHeader, policy) == 44);
static_assert(offsetof(TopicHeader, single_producer) == 45);
static_assert(offsetof(TopicHeader, shared_control) == 46);
static_assert(offsetof(TopicHeader, storage) == 47);
static_assert(offsetof(TopicHeader, max_producers) == 48);
static_assert(offsetof(TopicHeader, max_groups) == 52);
static_assert(offsetof(TopicHeader, max_members) == 56);
static_assert(offsetof(TopicHeader, group_stride) == 60);
static_assert(offsetof(TopicHeader, producers_offset) == 64);
static_assert(offsetof(TopicHeader, groups_offset) == 72);
static_assert(offsetof(TopicHeader, slots_offset) == 80);
static_assert(offsetof(TopicHeader, name) == 88);
static_assert(offsetof(TopicHeader, control_size) == 152);
static_assert(offsetof(TopicHeader, partitions) == 160);
static_assert(offsetof(TopicHeader, lanes) == 164);
static_assert(offsetof(TopicHeader, partition_size) == 168);
static_assert(offsetof(TopicHeader, partition_control_size) == 176);
static_assert(offsetof(TopicHeader, schedule_offset) == 184);
static_assert(offsetof(TopicHeader, delay_slots) == 192);
static_assert(offsetof(TopicHeader, delay_stride) == 196);
static_assert(offsetof(TopicHeader, boot) == 200);
static_assert(offsetof(TopicHeader, flush_interval_ms) == 208);
static_assert(offsetof(TopicHeader, tail) == 256);
static_assert(offsetof(TopicHeader, deleted) == 384);
static_assert(offsetof(TopicHeader, reserved1) == 388);
static_assert(offsetof(TopicHeader, abandoned) == 392);
static_assert(sizeof(ControlHeader) == 512);
static_assert(offsetof(ControlHeader, magic) == 0);
static_assert(offsetof(ControlHeader, generation) == 8);
static_assert(offsetof(ControlHeader, control_lock) == 16);
static_assert(offsetof(ControlHeader, reserved0) == 20);
static_assert(offsetof(ControlHeader, flushed_ns) == 24);
static_assert(offsetof(ControlHeader, data_event) == 128);
static_assert(offsetof(ControlHeader, space_event) == 256);
static_assert(offsetof(ControlHeader, join_epoch) == 384);
static_assert(offsetof(ControlHeader, jump_mark) == 392);
static_assert(sizeof(ProducerSeat) == 128);
static_assert(offsetof(ProducerSeat, state) == 0);
static_assert(offsetof(ProducerSeat, pid) == 4);
static_assert(offsetof(ProducerSeat, session) == 8);
static_assert(offsetof(ProducerSeat, published) == 16);
static_assert(offsetof(ProducerSeat, published_bytes) == 24);
static_assert(offsetof(ProducerSeat, in_flight) == 32);
static_assert(sizeof(MemberSeat) == 64);
static_assert(offsetof(MemberSeat, state) == 0);
static_assert(offsetof(MemberSeat, pid) == 4);
static_assert(offsetof(MemberSeat, session) == 8);
static_assert(offsetof(MemberSeat, held) == 16);
static_assert(offsetof(MemberSeat, received) == 24);
static_assert(sizeof(GroupEntry) == 256);
static_assert(offsetof(GroupEntry, state) == 0);
static_assert(offsetof(GroupEntry, flags) == 4);
static_assert(offsetof(GroupEntry, members) == 8);
static_assert(offsetof(GroupEntry, max_deliveries) == 12);
static_assert(offsetof(GroupEntry, name) == 16);
static_assert(offsetof(GroupEntry, lost) == 80);
static_assert(offsetof(GroupEntry, corrupt) == 88);
static_assert(offsetof(GroupEntry, owner) == 96);
static_assert(offsetof(GroupEntry, target) == 100);
static_assert(offsetof(GroupEntry, assignment) == 104);
static_assert(offsetof(GroupEntry, filtered) == 112);
static_assert(offsetof(GroupEntry, cursor) == 128);
static_assert(offsetof(GroupEntry, orphans) == 136);
static_assert(offsetof(GroupEntry, handovers) == 140);
static_assert(offsetof(GroupEntry, orphaned) == 144);
static_assert(offsetof(GroupEntry, redelivered) == 152);
static_assert(offsetof(GroupEntry, dead_lettered) == 160);
static_assert(sizeof(AckRecord) == 16);
static_assert(offsetof(AckRecord, seq1) == 0);
static_assert(offsetof(AckRecord, info) == 8);
static_assert(sizeof(SlotHeader) == 32);
static_assert(offsetof(SlotHeader, stamp) == 0);
static_assert(offsetof(SlotHeader, length) == 8);
static_assert(offsetof(SlotHeader, producer_id) == 12);
static_assert(offsetof(SlotHeader, timestamp_ns) == 16);
static_assert(offsetof(SlotHeader, meta) == 24);
static_assert(offsetof(SlotHeader, tag_hash) == 28);
static_assert(sizeof(ScheduleHeader) == 384);
static_assert(offsetof(ScheduleHeader, next_order) == 0);
static_assert(offsetof(ScheduleHeader, hint) == 8);
static_assert(offsetof(ScheduleHeader, armed) == 128);
static_assert(offsetof(ScheduleHeader, event) == 136);
static_assert(offsetof(ScheduleHeader, space) == 256);
static_assert(offsetof(ScheduleHeader, moved) == 264);
static_assert(offsetof(ScheduleHeader, refused) == 272);
static_assert(sizeof(ScheduleEntry) == kEntryHeaderSize);
static_assert(offsetof(ScheduleEntry, state) == 0);
static_assert(offsetof(ScheduleEntry, order) == 8);
static_assert(offsetof(ScheduleEntry, due_ns) == 16);
static_assert(offsetof(ScheduleEntry, target) == 24);
static_assert(offsetof(ScheduleEntry, partition) == 32);

}  // namespace shmbus::detail
