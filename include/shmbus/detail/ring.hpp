// The ring protocol: every step a producer or a consumer takes on a ring, as
// functions over the ring (`Ring`, a value over a span of the region) and the
// caller's own state (`ProducerState`, `ConsumerState`). Every synchronisation
// point of the data path is labelled here, in the order docs/memory-ordering.md
// argues them:
//
//   P0 (acquire)  slot_free: the previous occupant of a slot is complete
//   J1 (seq_cst)  try_claim: the claim (tail)            } the join protocol,
//   J2 (seq_cst)  record_claim: the join epoch after it   } with J3 in
//   J3 (seq_cst)  start_gating (src/ring.cpp): epoch, then tail   } start_gating
//   P1 (release)  commit: the slot's stamp, published
//   C1 (acquire)  take / try_take_private: the slot's stamp
//   C2 (release)  store_private_gate: a private group's cursor
//   C3 (release)  publish_hazard: a member's hazard
//   C4 (release)  take: a member's cursor CAS
//   G1 (acquire)  Ring::gate: a gating group's cursor
//   G2 (acquire)  Ring::gate: a member's hazard
//
// Region set-up (M1/M2, the magic) and seat allocation under the control lock
// are in src/region.cpp; sleeping and waking (event counts) in detail/wait.hpp.
// Publisher and Subscriber are thin handles over this file.
//
// Everything here is on the hot path: inline, no allocation, no exception, no
// system call except the wake-ups in wait.hpp's notify.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "shmbus/detail/layout.hpp"
#include "shmbus/detail/wait.hpp"
#include "shmbus/error.hpp"
#include "shmbus/options.hpp"

namespace shmbus::detail {

// CRC32C (src/crc32c.cpp): continues `crc` over n bytes (crc32c(0, ...) to start).
[[nodiscard]] std::uint32_t crc32c(std::uint32_t crc, const void* data, std::size_t n) noexcept;

// ---- stamps: who owns a slot ---------------------------------------------------
// Slot `s & mask` holds sequence s. Its stamp says what it holds:
//   stamp_published(s) = 2s+2  the message s is complete and readable
//   stamp_abandoned(s) = 2s+3  s was claimed, then given up; readers skip it
//   stamp_writing(s)   = 2s+1  a producer is writing s (overwrite policy only)
// A reader of s sees: < 2s+1 .. 2s+1 "not yet"; 2s+2 ready; 2s+3 skip;
// > 2s+3 "lapped" (the slot moved on to s + k*slot_count). Stamps of a slot
// only grow, so a reader never confuses generations.
constexpr std::uint64_t stamp_writing(std::uint64_t s) noexcept {
  return 2 * s + 1;
}
constexpr std::uint64_t stamp_published(std::uint64_t s) noexcept {
  return 2 * s + 2;
}
constexpr std::uint64_t stamp_abandoned(std::uint64_t s) noexcept {
  return 2 * s + 3;
}
// True when a slot stamped `st` still holds message s whole: s is published
// there, or the slot's next occupant s + count was given up before anything
// was written (only the stamp changes: Publisher::after_join).
constexpr bool holds(std::uint64_t st, std::uint64_t s, std::uint64_t count) noexcept {
  return st == stamp_published(s) || st == stamp_abandoned(s + count);
}

// The key of a slot (kSlotHeaderSize bytes into it) and its properties,
// followed by the payload at meta_span(meta) bytes after that.
[[nodiscard]] inline std::byte* payload(SlotHeader& s) noexcept {
  return reinterpret_cast<std::byte*>(&s) + kSlotHeaderSize;
}
[[nodiscard]] inline std::byte* payload(SlotHeader& s, std::uint32_t meta) noexcept {
  return payload(s) + meta_span(meta);
}
// True when a message of `len` payload bytes after the key and properties
// `meta` describes fits the slot: what a reader checks before it trusts any
// of the lengths.
[[nodiscard]] constexpr bool fits(std::uint32_t len, std::uint32_t meta,
                                  std::uint32_t slot_size) noexcept {
  return std::uint64_t{len} + meta_span(meta) <= slot_size;
}
// A delayed message's due time (kMetaDelayed), 0 for any other: 8 bytes
// after the key and properties, within the slot when `meta` fits it.
[[nodiscard]] inline std::uint64_t due_of(SlotHeader& s, std::uint32_t meta) noexcept {
  if ((meta & kMetaDelayed) == 0) return 0;
  std::uint64_t ns = 0;
  std::memcpy(&ns, payload(s) + meta_due_offset(meta), sizeof ns);
  return ns;
}
// The lengths of a published slot, and whether they fit. Relaxed loads: the
// caller made them after the stamp's acquire load (C1).
[[nodiscard]] inline bool well_formed(const SlotHeader& s, std::uint32_t slot_size) noexcept {
  return fits(s.length.load(std::memory_order_relaxed), s.meta.load(std::memory_order_relaxed),
              slot_size);
}

// A ring: its slots, the header words it synchronises on, and the group tables
// that gate it. A plain value (pointers into this process's mappings of the
// region's two segments, layout.hpp): publishers and subscribers keep a copy,
// so that a publish or a receive computes addresses from its own members.
struct Ring {
  std::byte* slots = nullptr;        // data segment (read-only to a subscriber)
  TopicHeader* header = nullptr;     // data segment
  ControlHeader* control = nullptr;  // control segment
  // Where consumers sleep: block 0's data_event, for every partition's ring
  // (a consumer of several partitions waits on one word).
  EventCount* data_event = nullptr;
  std::byte* groups = nullptr;  // control: GroupEntry (+ MemberSeat[max_members]) [max_groups]
  std::uint64_t count = 0;      // slot_count, a power of two
  std::uint64_t stride = 0;
  std::uint64_t group_stride = 0;
  std::uint32_t slot_size = 0;
  std::uint32_t max_groups = 0;
  std::uint32_t max_members = 0;
  Policy policy = Policy::Block;
  // A file topic's ring (Storage::File): each slot ends in its message's
  // checksum (checksum_of), written before the stamp and checked by readers.
  bool checksummed = false;

  // 3 when the ring has at least four slots, else 0 (see slot()).
  std::uint64_t swap = 0;

  // Sequences fill each block of four slots in the order 0, 2, 1, 3 (bits 0
  // and 1 of the index swapped), so the next sequence sits in the next slot
  // only from the end of one block to the start of the next (and in rings of
  // two slots). In a sequential walk the CPU's prefetchers pull in the slot
  // after the one just read, which is the slot the consumer waits on and the
  // producer is about to write: on Zen 3 that costs 10-15 ns one way in a
  // ping-pong (bench/README.md). Streaming still covers each block in one pass.
  [[nodiscard]] SlotHeader& slot(std::uint64_t seq) const noexcept {
    std::uint64_t i = seq & (count - 1);
    // Bits 0 and 1 differ: flip both (swap), else leave i as it is.
    i ^= (0 - ((i ^ (i >> 1)) & 1)) & swap;
    return *reinterpret_cast<SlotHeader*>(slots + i * stride);
  }
  // The oldest sequence the ring still retains when `tail` is the next to claim.
  [[nodiscard]] std::uint64_t oldest(std::uint64_t tail) const noexcept {
    return tail > count ? tail - count : 0;
  }
  [[nodiscard]] GroupEntry& group(std::uint32_t g) const noexcept {
    return *reinterpret_cast<GroupEntry*>(groups + std::size_t{g} * group_stride);
  }
  [[nodiscard]] MemberSeat& member(std::uint32_t g, std::uint32_t m) const noexcept {
    return reinterpret_cast<MemberSeat*>(reinterpret_cast<std::byte*>(&group(g)) +
                                         sizeof(GroupEntry))[m];
  }

  // Records that a group's cursor is about to be set to `to` other than by
  // taking messages: a start or a seek (see TopicHeader::jump_mark). Call it
  // before that cursor store, which is (or is followed by) a release that
  // producers acquire: a producer that sees the new cursor then sees the mark.
  void raise_jump_mark(std::uint64_t to) const noexcept {
    std::atomic<std::uint64_t>& mark = control->jump_mark;
    // Relaxed (load and CAS): ordered before the caller's release, as above.
    // The mark only grows, so a failed CAS that reads a higher value is done.
    std::uint64_t seen = mark.load(std::memory_order_relaxed);
    while (seen < to && !mark.compare_exchange_weak(seen, to, std::memory_order_relaxed)) {
    }
  }

  // The lowest position any gating group still needs (its claim cursor or a
  // member's hazard), or kNone when nothing gates. A producer may fill
  // sequence s only when s < gate + slot_count. Out of line (src/ring.cpp):
  // it runs once per ring lap, not per message.
  [[nodiscard]] std::uint64_t gate() const noexcept;
};

// ---- checksums: file topics (docs/durability.md, "Torn writes") -------------
// A file topic's slot may reach the disk in pieces: after a power cut its
// stamp can say "published" over a payload that never got there. Each
// message therefore carries a CRC32C of its header fields, key, properties
// and payload, seeded with its sequence (a stale lap's bytes under a new
// stamp do not match), stored in the slot's trailer before the stamp (P1).
// A reader that finds a mismatch counts the message lost and skips it.
[[nodiscard]] inline std::atomic<std::uint32_t>& checksum_of(const Ring& r,
                                                             SlotHeader& slot) noexcept {
  return *reinterpret_cast<std::atomic<std::uint32_t>*>(reinterpret_cast<std::byte*>(&slot) +
                                                        r.stride - kSlotTrailer);
}
// The checksum of message s; `len` and `meta` must fit the slot.
[[nodiscard]] inline std::uint32_t slot_checksum(SlotHeader& slot, std::uint64_t s,
                                                 std::uint32_t len, std::uint32_t meta,
                                                 std::uint32_t producer_id, std::uint64_t now,
                                                 std::uint32_t tag_hash) noexcept {
  struct {
    std::uint64_t seq, timestamp;
    std::uint32_t length, producer, meta, tag;
  } const fields{s, now, len, producer_id, meta, tag_hash};
  static_assert(sizeof fields == 32, "no padding bytes in the checksum");
  return crc32c(crc32c(0, &fields, sizeof fields), payload(slot), meta_span(meta) + len);
}
// True when published message s in `slot` is whole: its lengths fit and, in
// a file topic, its checksum matches. Relaxed loads: the caller made them
// after the stamp's acquire load (C1), which orders the producer's stores
// before P1, the checksum's among them.
[[nodiscard]] inline bool intact(const Ring& r, SlotHeader& slot, std::uint64_t s) noexcept {
  const std::uint32_t len = slot.length.load(std::memory_order_relaxed);
  const std::uint32_t meta = slot.meta.load(std::memory_order_relaxed);
  if (!fits(len, meta, r.slot_size)) return false;
  if (!r.checksummed) return true;
  return checksum_of(r, slot).load(std::memory_order_relaxed) ==
         slot_checksum(slot, s, len, meta, slot.producer_id.load(std::memory_order_relaxed),
                       slot.timestamp_ns.load(std::memory_order_relaxed),
                       slot.tag_hash.load(std::memory_order_relaxed));
}

// ==== producer side ============================================================

// One publisher's private view of the ring protocol (process memory, never shared).
struct ProducerState {
  ProducerSeat* seat = nullptr;
  std::uint64_t gate_cache = 0;  // a lower bound of the gate, this process only
  // The jump mark of the scan that set gate_cache (kNone when nothing gated):
  // sequences in [proven_floor, gate_cache) are complete (see slot_free).
  std::uint64_t proven_floor = kNone;
  std::uint64_t next = 0;        // single producer: the next sequence to claim
  std::uint64_t epoch = 0;       // the join epoch gate_cache was computed in
  std::uint8_t claims_used = 0;  // which in_flight entries hold a claim
  std::uint32_t seat_index = 0;
  bool single_producer = false;
  bool gated = true;  // policy is not overwrite: gating groups hold producers back
  // gated, and the control segment is the owner's alone (TopicHeader::
  // shared_control): the gate scan may prove a slot free (slot_free).
  bool gate_proves = true;
};

// Rescans the gate into p.gate_cache, never above `s` (a sequence this
// producer is about to claim, so at most the tail: the join protocol relies on
// that), and records the jump mark the scan proves from (src/ring.cpp).
void refresh_gate(const Ring& r, ProducerState& p, std::uint64_t s) noexcept;

// True when sequence s may be filled: no gating group still needs the message
// its slot holds. Refreshes the cached gate only when it says full.
[[nodiscard]] inline bool has_room(const Ring& r, ProducerState& p, std::uint64_t s) noexcept {
  if (s < p.gate_cache + r.count) [[likely]]
    return true;
  refresh_gate(r, p, s);
  return s < p.gate_cache + r.count;
}

// True when the previous occupant of s's slot (s - slot_count) is complete, so
// s may be written there. A producer can lap a slower one (or one of its own
// loans) when nothing gates: under overwrite, or with no live group; and a
// group that started or sought past an unfinished message does not wait for it
// either.
[[nodiscard]] inline bool slot_free(const Ring& r, const ProducerState& p,
                                    std::uint64_t s) noexcept {
  if (s < r.count) return true;
  const std::uint64_t prev = s - r.count;
  // Proven by the last gate scan: every gating group had passed prev, and prev
  // is at or above every start and seek (jump_mark), so each of them took it,
  // which it does only once prev is complete. Its writer's stores happen
  // before ours: P1, the consumer's C1, its release of the cursor (C2/C4) and
  // our acquire of that cursor (G1). This saves the stamp load below, a load
  // of the very line the consumer spins on.
  // Only when no one but the owner can write those cursors (gate_proves).
  if (p.gate_proves && prev >= p.proven_floor && prev < p.gate_cache) return true;
  // SYNC POINT P0 (acquire): pairs with P1 (or the abandon store) of the
  // producer of prev, so its payload writes happen before ours.
  return r.slot(s).stamp.load(std::memory_order_acquire) >= stamp_published(prev);
}

[[nodiscard]] inline bool may_write(const Ring& r, ProducerState& p, std::uint64_t s) noexcept {
  return (!p.gated || has_room(r, p, s)) && slot_free(r, p, s);
}

enum class Attempt : std::uint8_t { Claimed, NoRoom, Raced };

// One attempt to claim the next sequence, without waiting: Claimed; NoRoom
// when `s` (the sequence tried) may not be written yet; Raced when another
// producer claimed it first (`s` is then the tail that won).
[[nodiscard]] inline Attempt try_claim(const Ring& r, ProducerState& p, std::uint64_t& s) noexcept {
  TopicHeader& h = *r.header;
  if (p.single_producer) {
    s = p.next;
    if (!may_write(r, p, s)) [[unlikely]]
      return Attempt::NoRoom;
    p.next = s + 1;
    // SYNC POINT J1 (seq_cst): the claim is ordered before our load of the
    // join epoch (J2, in record_claim), against a joiner's epoch bump and tail
    // load (J3). The tail tells no one that data is ready (the stamp does).
    h.tail.store(s + 1, std::memory_order_seq_cst);
    return Attempt::Claimed;
  }
  // Relaxed: a candidate; the CAS below decides.
  s = h.tail.load(std::memory_order_relaxed);
  if (!may_write(r, p, s)) [[unlikely]]
    return Attempt::NoRoom;
  // J1 as above (seq_cst; on x86 the same locked instruction as relaxed).
  // The checks above were for exactly this s, so when the CAS succeeds its
  // slot is free: a completed occupant's stamp never goes back.
  return h.tail.compare_exchange_strong(s, s + 1, std::memory_order_seq_cst,
                                        std::memory_order_relaxed)
             ? Attempt::Claimed
             : Attempt::Raced;
}

// After a successful claim of s into in_flight entry `index`: records it for
// the daemon, then checks the join epoch (gated) or marks the slot "being
// written" (overwrite). Returns false when a group joined since the gate was
// cached, or the topic was deleted: the caller must then decide in its slow
// path (the Publisher's after_join), with s already claimed.
[[nodiscard]] inline bool record_claim(const Ring& r, ProducerState& p, std::uint32_t index,
                                       std::uint64_t s, std::uint64_t& epoch) noexcept {
  // Relaxed: read by the daemon after this process died, to mark the sequence
  // abandoned, and to leave it alone while we live; stored at once after the
  // claim so that the window in which a claim is unrecorded is a few
  // instructions. Nothing synchronises through it.
  p.seat->in_flight[index].store(s, std::memory_order_relaxed);
  p.claims_used = static_cast<std::uint8_t>(p.claims_used | (1u << index));
  if (p.gated) {
    // SYNC POINT J2 (seq_cst): pairs with J3 in start_gating. Either we see
    // the bump and rescan (the new group then gates us), or the joiner's tail
    // load sees our claim and starts the group above what this claim may
    // overwrite.
    epoch = r.control->join_epoch.load(std::memory_order_seq_cst);
    return epoch == p.epoch;
  }
  // Overwrite: a reader may still be reading the previous occupant. Mark
  // "being written" before the payload changes, so that it sees the stamp
  // change and discards what it read. The release fence orders this store
  // before the payload stores that follow. Under block and reject no reader
  // can be on this slot (the gate and the join protocol see to it), and
  // skipping the store saves a cache-line transfer per message.
  r.slot(s).stamp.store(stamp_writing(s), std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_release);
  // No join epoch to watch here, so look at the deleted flag itself (data
  // header, on a line written only by the delete and by abandons). Relaxed:
  // it orders nothing; the caller's slow path reads it again with acquire.
  if (r.header->deleted.load(std::memory_order_relaxed) != 0) [[unlikely]] {
    epoch = p.epoch;
    return false;
  }
  return true;
}

inline void release_claim(ProducerState& p, std::uint32_t index) noexcept {
  // Relaxed: as the store in record_claim.
  p.seat->in_flight[index].store(kNone, std::memory_order_relaxed);
  p.claims_used = static_cast<std::uint8_t>(p.claims_used & ~(1u << index));
}

// Publishes claimed sequence s (its key, properties and payload already
// written), stamped `now`.
// commit() as producer `producer_id` at time `now`: shmbusd's mover keeps a
// delayed message's own (src/schedule.cpp).
inline void commit_as(const Ring& r, ProducerState& p, SlotHeader& slot, std::uint64_t s,
                      std::uint32_t size, std::uint32_t meta, std::uint32_t tag_hash,
                      std::uint32_t index, std::uint64_t now, std::uint32_t producer_id) noexcept {
  // Relaxed: ordered before the stamp's release store below.
  slot.length.store(size, std::memory_order_relaxed);
  slot.meta.store(meta, std::memory_order_relaxed);
  slot.tag_hash.store(tag_hash, std::memory_order_relaxed);
  slot.producer_id.store(producer_id, std::memory_order_relaxed);
  slot.timestamp_ns.store(now, std::memory_order_relaxed);
  // A file topic's checksum, relaxed as the fields above (the caller checked
  // that size and meta fit the slot).
  if (r.checksummed) [[unlikely]]
    checksum_of(r, slot).store(slot_checksum(slot, s, size, meta, producer_id, now, tag_hash),
                               std::memory_order_relaxed);
  // SYNC POINT P1 (release): pairs with the consumer's acquire load of the
  // stamp (C1); the payload and fields above are visible to a consumer that
  // sees stamp_published(s).
  slot.stamp.store(stamp_published(s), std::memory_order_release);
  release_claim(p, index);
  ProducerSeat& seat = *p.seat;
  // Relaxed: statistics, written only by this producer (one line with in_flight).
  seat.published.store(seat.published.load(std::memory_order_relaxed) + 1,
                       std::memory_order_relaxed);
  seat.published_bytes.store(seat.published_bytes.load(std::memory_order_relaxed) + size,
                             std::memory_order_relaxed);
  notify(*r.data_event);
}

inline void commit(const Ring& r, ProducerState& p, SlotHeader& slot, std::uint64_t s,
                   std::uint32_t size, std::uint32_t meta, std::uint32_t tag_hash,
                   std::uint32_t index, std::uint64_t now) noexcept {
  commit_as(r, p, slot, s, size, meta, tag_hash, index, now, p.seat_index);
}

// Gives claimed sequence s up: consumers skip it.
inline void abandon(const Ring& r, ProducerState& p, SlotHeader& slot, std::uint64_t s,
                    std::uint32_t index) noexcept {
  // Relaxed: a counter for reports (tail - abandoned = published).
  r.header->abandoned.fetch_add(1, std::memory_order_relaxed);
  // Release: pairs with C1 like P1; consumers skip the sequence (and never
  // look at an abandoned slot's other fields).
  slot.stamp.store(stamp_abandoned(s), std::memory_order_release);
  release_claim(p, index);
  notify(*r.data_event);
}

// True once shmbusd deleted the topic (Region::mark_deleted).
[[nodiscard]] inline bool deleted(const Ring& r) noexcept {
  // Acquire: pairs with mark_deleted's release store; nothing else is read
  // through it (the epoch bump and the wake-ups do the ordering that matters).
  return r.header->deleted.load(std::memory_order_acquire) != 0;
}

// ==== consumer side ============================================================

// At most this many samples and batches a member may hold unreleased at once.
inline constexpr std::uint32_t kMaxHeld = 64;

// One group member's private view (process memory, never shared): its seats,
// and the sequences it holds.
struct ConsumerState {
  GroupEntry* group = nullptr;
  MemberSeat* member = nullptr;
  bool is_private = false;  // a private group: one member, consumes without CAS
  // is_private, and not a file topic's ring (whose checksums the general
  // path checks): the receive may take try_take_private's fast path.
  bool fast_private = false;
  std::uint64_t pos = 0;  // private group: the next sequence to take
  std::uint32_t held_count = 0;
  std::uint64_t held_min = kNone;
  std::array<std::uint64_t, kMaxHeld> held{};  // sequence held, or kNone
  bool damage_reported = false;                // check_stalled returned Damaged (it does so once)
  // At-least-once groups: the ack record the next take writes (null: the
  // group is at-most-once, and take writes none), the partition it goes in
  // the record with, and for each held entry the record that covers it.
  AckRecord* record = nullptr;
  std::uint32_t record_partition = 0;
  std::array<std::uint8_t, kMaxHeld> record_of{};
};
static_assert(kMaxHeld == kAckRecords, "one ack record per held entry");

// Records that seq is held; returns its entry. A free entry must exist.
[[nodiscard]] inline std::uint32_t hold(ConsumerState& c, std::uint64_t seq) noexcept {
  std::uint32_t i = 0;
  while (c.held[i] != kNone)
    ++i;  // a free entry exists: the caller checked the count
  c.held[i] = seq;
  ++c.held_count;
  c.held_min = std::min(c.held_min, seq);
  return i;
}

inline void count_received(ConsumerState& c, std::uint32_t k) noexcept {
  // Relaxed: a statistic, written only by this member.
  c.member->received.store(c.member->received.load(std::memory_order_relaxed) + k,
                           std::memory_order_relaxed);
}

// A private group's gate: the oldest sample still held, else the position.
inline void store_private_gate(ConsumerState& c) noexcept {
  // SYNC POINT C2 (release): pairs with G1 in Ring::gate. Our reads of the
  // released slots happen before a producer that sees the new cursor
  // overwrites them.
  c.group->cursor.store(c.held_count != 0 ? c.held_min : c.pos, std::memory_order_release);
}

// Wakes producers blocked on a full ring, after a skip or seek moved the gate
// (rare: the full, fenced notify; a release only hints, see publish_hazard).
inline void room_made(const Ring& r) noexcept {
  if (r.policy == Policy::Block) notify(r.control->space_event);
}

inline void publish_hazard(const Ring& r, ConsumerState& c) noexcept {
  if (c.is_private) {
    store_private_gate(c);
  } else {
    // SYNC POINT C3 (release): pairs with G2 in Ring::gate, as C2.
    c.member->held.store(c.held_min, std::memory_order_release);
  }
  // On every message's path (a consumer releases, then typically publishes its
  // answer): a hint, with no fence. A producer that goes to sleep at this
  // moment may miss it; it is then woken by our notify() before we wait
  // (Subscriber::wait_then) or by its own re-check (kSpaceRecheck). See
  // docs/memory-ordering.md, "Event counts".
  if (r.policy == Policy::Block) notify_hint(r.control->space_event);
}

// Releases held entry `index`: producers may reuse its slot.
inline void unhold(const Ring& r, ConsumerState& c, std::uint32_t index) noexcept {
  const std::uint64_t seq = c.held[index];
  c.held[index] = kNone;
  --c.held_count;
  if (seq == c.held_min) {
    c.held_min = kNone;
    if (c.held_count != 0)
      for (std::uint64_t h : c.held)
        c.held_min = std::min(c.held_min, h);
  }
  publish_hazard(r, c);
}

// Moves the group's position from `from` to `to` (skipping abandoned, overrun
// or corrupt messages). False if another member moved it first.
[[nodiscard]] inline bool advance(const Ring& r, ConsumerState& c, std::uint64_t from,
                                  std::uint64_t to) noexcept {
  if (c.is_private) {
    c.pos = to;
    if (c.held_count != 0) return true;  // the gate stays at the oldest held sample
    store_private_gate(c);
  } else if (!c.group->cursor.compare_exchange_strong(from, to, std::memory_order_release,
                                                      std::memory_order_relaxed)) {
    return false;  // release on success: as C4 in take
  }
  room_made(r);  // skipping moved the gate: a blocked producer may go on
  return true;
}

// A run of messages taken by one claim.
struct Taken {
  std::uint64_t first = 0;
  std::uint32_t count = 0;
  std::uint32_t hold = 0;  // the held entry that covers the run
  // The first message is intact (its lengths fit and, in a file topic, its
  // checksum matches). When not, the run is that message alone.
  bool whole = true;
};

// Takes up to `max` consecutive published messages at the group's position
// with one claim (skipping abandoned ones, and counting overrun ones as lost).
// WouldBlock when the next message is not yet published.
[[nodiscard]] inline Status take(const Ring& r, ConsumerState& c, std::uint32_t max,
                                 Taken& out) noexcept {
  if (c.held_count == kMaxHeld) [[unlikely]]
    return Status::TooManyHeld;
  for (;;) {
    // Relaxed: the stamp's acquire load below is what makes the slot readable;
    // a stale cursor only makes the CAS fail.
    const std::uint64_t at = c.is_private ? c.pos : c.group->cursor.load(std::memory_order_relaxed);
    SlotHeader& slot = r.slot(at);
    // SYNC POINT C1 (acquire): pairs with P1 (commit) and the abandon store.
    const std::uint64_t st = slot.stamp.load(std::memory_order_acquire);
    if (st < stamp_published(at)) return Status::WouldBlock;
    if (st == stamp_published(at)) [[likely]] {
      std::uint32_t k = 1;
      // C1 again (acquire) for each further slot of the run.
      // A run stops before a slot whose lengths are invalid (or, in a file
      // topic, whose checksum does not match), so that slot is taken alone
      // and reported or skipped (Subscriber, Taken::whole) instead of inside
      // a batch. Length loads are relaxed: each follows that slot's acquire
      // stamp load (C1).
      const bool whole = intact(r, slot, at);
      const std::uint32_t run_max = whole ? max : 1;
      while (k < run_max &&
             r.slot(at + k).stamp.load(std::memory_order_acquire) == stamp_published(at + k) &&
             intact(r, r.slot(at + k), at + k))
        ++k;
      if (c.is_private) {
        c.pos = at + k;  // the cursor (our gate) stays at `at` while the messages are held
      } else {
        // Hazard before claim: stored before the CAS, whose release makes it
        // visible to any producer that reads the advanced cursor (G1, then G2).
        // Release (not relaxed): a producer that reads this value through
        // another member's later CAS must still see our earlier reads done.
        if (c.held_count == 0) c.member->held.store(at, std::memory_order_release);
        if (c.record != nullptr) {
          // At least once: the record before the claim, so that a member
          // that dies right after the CAS leaves it (docs/acknowledgements.md).
          // Relaxed: ordered before the CAS by its release; read by an
          // adopter only after this process died, under the control lock.
          c.record->info.store(ack_info(c.record_partition, k, 1), std::memory_order_relaxed);
          c.record->seq1.store(at + 1, std::memory_order_relaxed);
        }
        std::uint64_t expected = at;
        // SYNC POINT C4 (release): pairs with G1; see above.
        if (!c.group->cursor.compare_exchange_strong(expected, at + k, std::memory_order_release,
                                                     std::memory_order_relaxed)) {
          // Another member took `at`: withdraw the hazard (release, as C3),
          // and the record (relaxed: as above).
          if (c.record != nullptr) c.record->seq1.store(0, std::memory_order_relaxed);
          if (c.held_count == 0) c.member->held.store(kNone, std::memory_order_release);
          continue;
        }
      }
      out.first = at;
      out.count = k;
      out.whole = whole;
      out.hold = hold(c, at);
      count_received(c, k);
      return Status::Ok;
    }
    if (st == stamp_abandoned(at)) {
      (void)advance(r, c, at, at + 1);  // if another member moved on, retry from there
      continue;
    }
    // Lapped: producers overwrote `at` (Policy::Overwrite, a group that had no
    // members, or a start before what the ring retains). Resume at the oldest
    // retained message and count what was skipped.
    // Relaxed: only where to resume; a stale tail resumes lower, and the
    // stamps checked there decide (a still-overwritten slot is skipped again).
    const std::uint64_t tail = r.header->tail.load(std::memory_order_relaxed);
    const std::uint64_t to = std::max(at + 1, r.oldest(tail));
    if (advance(r, c, at, to))
      // Relaxed: a counter; whoever moved the cursor counts the skip, once.
      c.group->lost.fetch_add(to - at, std::memory_order_relaxed);
  }
}

// The common case of take, for a private group: the next message published and
// well-formed. Returns its slot and length, or nullptr when the general path
// (take) must decide (not published, abandoned, lapped, a bad length, a full
// hold table; never called for a file topic: ConsumerState::fast_private). On
// success the caller holds it via hold(c, seq) after releasing
// whatever it must release first (Subscriber::try_receive).
[[nodiscard]] inline SlotHeader* try_take_private(const Ring& r, ConsumerState& c,
                                                  std::uint32_t& len, std::uint32_t& meta,
                                                  Status& not_ready) noexcept {
  const std::uint64_t at = c.pos;
  SlotHeader& slot = r.slot(at);
  // C1 (acquire), as in take().
  const std::uint64_t st = slot.stamp.load(std::memory_order_acquire);
  if (st < stamp_published(at)) {
    not_ready = Status::WouldBlock;
    return nullptr;
  }
  // Relaxed: ordered after the stamp's acquire load (C1), as in take().
  len = slot.length.load(std::memory_order_relaxed);
  meta = slot.meta.load(std::memory_order_relaxed);
  if (st != stamp_published(at) || !fits(len, meta, r.slot_size)) [[unlikely]] {
    not_ready = Status::Invalid;  // not a status to return: take the general path
    return nullptr;
  }
  return &slot;
}

// False only when the next message to take is not yet published. A hint:
// whatever it says, take() decides with its own acquire load.
[[nodiscard]] inline bool may_have_data(const Ring& r, const ConsumerState& c) noexcept {
  // Relaxed (both): take() loads cursor and stamp again. After the waiter's
  // seq_cst fence in wait_for (Dekker with notify), the stamp load here still
  // sees a publish that the notifier did not wake us for.
  const std::uint64_t at = c.is_private ? c.pos : c.group->cursor.load(std::memory_order_relaxed);
  return r.slot(at).stamp.load(std::memory_order_relaxed) >= stamp_published(at);
}

// Moves the group's position to `sequence`. For a named group this moves every
// member; do it while they are quiet.
inline void seek(const Ring& r, ConsumerState& c, std::uint64_t sequence) noexcept {
  // Jumping over messages is not taking them: producers must not infer from
  // this cursor that they are complete (TopicHeader::jump_mark).
  r.raise_jump_mark(sequence);
  if (c.is_private) {
    c.pos = sequence;
    store_private_gate(c);
  } else {
    // Release, as C4, and a read-modify-write: it continues the cursor's
    // release sequence, so a producer that reads the sought value still
    // synchronises with the members' earlier CASes and sees their hazards.
    (void)c.group->cursor.exchange(sequence, std::memory_order_release);
  }
  room_made(r);
}

// The group's position: the next sequence it will take (a snapshot).
[[nodiscard]] inline std::uint64_t position(const ConsumerState& c) noexcept {
  // Relaxed: a snapshot for reporting.
  return c.is_private ? c.pos : c.group->cursor.load(std::memory_order_relaxed);
}

// ---- a position that stays unpublished: a slow producer, or damage? ----------
// A reader that finds nothing to take cannot tell at once a producer still
// writing from a slot or header a stray write damaged. When a wait times out
// (Subscriber::wait_checked) it asks check_stalled, which decides from what
// only damage can produce, never from how long it waited:
//
// A producer claims s (the tail passes s) only after it saw the slot's
// previous occupant s - count complete (P0, or the gate proof in slot_free):
// its stamp at least claim_floor(s). Stamps only grow, and until s is
// published or abandoned no one else writes that slot: the claim of
// s + count waits for s in turn. So while a live producer (however slow)
// holds s, the slot shows one of claim_pending(s): the previous occupant's final
// stamp, or writing(s) (overwrite); and the tail is at most s + count.
// Reading the tail with acquire before the stamp makes this hold for what we
// read, not only in real time: the claim of every sequence below the tail,
// and the P0 load made before it, happen before our stamp load, which by
// read-read coherence sees at least what P0 saw. A shmbusd repair only raises
// a stamp (abandon_unpublished, to abandoned(s)). Hence a position below the
// tail whose stamp is below published(s) and not in claim_pending(s), or one more
// than a ring below the tail, shows damage to that stamp or to the tail; and
// a position above the tail, damage to the cursor or the tail (whoever set a
// cursor read a tail at least as high, or acquired a stamp whose claim made
// it so, before its release; we acquire the cursor before the tail).
//
// A stuck claim of a dead producer also shows claim_pending(s): check_stalled
// leaves it alone (shmbusd abandons it after ~1 s when no live producer lists
// it in flight; on a daemonless topic the reader waits, as before).

// The lowest stamp the slot of a claimed sequence s can show (see above).
constexpr std::uint64_t claim_floor(std::uint64_t s, std::uint64_t count) noexcept {
  return s >= count ? stamp_published(s - count) : 0;
}

// True when stamp `st` of claimed sequence s is one a live producer can leave
// while it writes s: the previous occupant's final stamp, or writing(s).
constexpr bool claim_pending(std::uint64_t st, std::uint64_t s, std::uint64_t count) noexcept {
  if (st == stamp_writing(s)) return true;
  return s >= count ? st == claim_floor(s, count) || st == stamp_abandoned(s - count) : st == 0;
}

enum class Stall : std::uint8_t {
  Waiting,  // nothing a reader can prove wrong: not claimed yet, or being written
  Skipped,  // the position's slot (or the group's cursor) was damaged: counted
            // in the group's corrupt count and moved past (or back into the ring)
  Damaged,  // the tail contradicts the slots: reported once, the position stays
};

// Looks at the position a wait timed out on; `c` is the caller's own state.
// Out of line (src/subscriber.cpp): it runs only after a wait timed out.
[[nodiscard]] Stall check_stalled(const Ring& r, ConsumerState& c) noexcept;

// A group that has just become gating (its first member joined, under the
// control lock) starts no lower than what a producer that cached the gate
// before the join may still overwrite (src/ring.cpp). `floor_at_tail`: a fresh
// group that starts at the latest message. `count_as_lost`: what the cursor
// is raised over is added to the group's lost count.
void start_gating(const Ring& r, GroupEntry& group, bool floor_at_tail,
                  bool count_as_lost) noexcept;

}  // namespace shmbus::detail
