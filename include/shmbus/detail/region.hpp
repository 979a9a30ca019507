// A mapped topic region: the mapping plus accessors that turn the header's
// validated offsets into pointers. Created or opened by src/region.cpp, which
// checks every field read from the file before any accessor is used.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>

#include "shmbus/detail/layout.hpp"
#include "shmbus/options.hpp"

namespace shmbus::detail {

// Layout arithmetic shared by create (to size the region) and open (to check it).
struct Layout {
  std::uint64_t stride, group_stride, producers_offset, groups_offset, slots_offset, size;
};
[[nodiscard]] Layout compute_layout(std::uint32_t slot_count, std::uint32_t slot_size,
                                    std::uint32_t max_producers, std::uint32_t max_groups,
                                    std::uint32_t max_members) noexcept;

// What the data path needs to reach a slot. Publishers and subscribers keep
// a copy, so that a publish or receive computes a slot's address from its own
// members instead of through the shared_ptr to the Region.
struct Ring {
  std::byte* slots = nullptr;
  TopicHeader* header = nullptr;
  std::uint64_t count = 0;  // slot_count, a power of two
  std::uint64_t stride = 0;
  std::uint32_t slot_size = 0;
  Policy policy = Policy::Block;

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
  // Records that a group's cursor is about to be set to `to` other than by
  // taking messages: a start or a seek (see TopicHeader::jump_mark). Call it
  // before that cursor store, which is (or is followed by) a release that
  // producers acquire: a producer that sees the new cursor then sees the mark.
  void raise_jump_mark(std::uint64_t to) const noexcept {
    std::atomic<std::uint64_t>& mark = header->jump_mark;
    // Relaxed (load and CAS): ordered before the caller's release, as above.
    // The mark only grows, so a failed CAS that reads a higher value is done.
    std::uint64_t seen = mark.load(std::memory_order_relaxed);
    while (seen < to && !mark.compare_exchange_weak(seen, to, std::memory_order_relaxed)) {
    }
  }
};

class Region {
 public:
  // Creates the named region (fails with AlreadyExists) or opens and validates it.
  static std::shared_ptr<Region> create(const std::string& shm_name, std::string_view topic,
                                        const TopicOptions& options);
  static std::shared_ptr<Region> open(const std::string& shm_name);
  // Maps and validates a region passed as a descriptor (from shmbusd over its
  // socket); the caller keeps ownership of fd and may close it afterwards.
  static std::shared_ptr<Region> from_fd(int fd, const std::string& shm_name);
  // The descriptor of a region opened by name (to pass to a client), or -1.
  [[nodiscard]] int fd() const noexcept;
  // Keeps `owner` alive as long as this mapping (a client's daemon connection).
  void set_owner(std::shared_ptr<void> owner) { owner_ = std::move(owner); }
  // Unlinks the region's name; processes that mapped it keep their mapping.
  static bool remove(const std::string& shm_name);

  Region(const Region&) = delete;
  Region& operator=(const Region&) = delete;
  ~Region();

  [[nodiscard]] const Ring& ring() const noexcept { return ring_; }
  [[nodiscard]] TopicHeader& header() const noexcept { return *ring_.header; }
  [[nodiscard]] std::uint64_t slot_count() const noexcept { return ring_.count; }
  [[nodiscard]] std::uint32_t slot_size() const noexcept { return ring_.slot_size; }
  [[nodiscard]] Policy policy() const noexcept { return ring_.policy; }
  [[nodiscard]] bool single_producer() const noexcept { return single_producer_; }
  [[nodiscard]] std::uint32_t max_producers() const noexcept { return max_producers_; }
  [[nodiscard]] std::uint32_t max_groups() const noexcept { return max_groups_; }
  [[nodiscard]] std::uint32_t max_members() const noexcept { return max_members_; }
  [[nodiscard]] const std::string& shm_name() const noexcept { return shm_name_; }
  // The topic's name as stored in the header (bounded: the field may lack a NUL).
  [[nodiscard]] std::string topic_name() const {
    const TopicHeader& h = header();
    return std::string(h.name, ::strnlen(h.name, sizeof h.name));
  }

  [[nodiscard]] SlotHeader& slot(std::uint64_t seq) const noexcept { return ring_.slot(seq); }
  [[nodiscard]] static std::byte* payload(SlotHeader& s) noexcept {
    return reinterpret_cast<std::byte*>(&s) + kSlotHeaderSize;
  }
  [[nodiscard]] ProducerSeat& producer(std::uint32_t i) const noexcept {
    return reinterpret_cast<ProducerSeat*>(base_ + producers_offset_)[i];
  }
  [[nodiscard]] GroupEntry& group(std::uint32_t g) const noexcept {
    return *reinterpret_cast<GroupEntry*>(base_ + groups_offset_ + std::size_t{g} * group_stride_);
  }
  [[nodiscard]] MemberSeat& member(std::uint32_t g, std::uint32_t m) const noexcept {
    return reinterpret_cast<MemberSeat*>(reinterpret_cast<std::byte*>(&group(g)) +
                                         sizeof(GroupEntry))[m];
  }

  // The lowest position any gating group still needs (its claim cursor or a
  // member's hazard), or kNone when nothing gates. A producer may fill
  // sequence s only when s < gate + slot_count.
  [[nodiscard]] std::uint64_t compute_gate() const noexcept {
    std::uint64_t gate = kNone;
    for (std::uint32_t g = 0; g < max_groups_; ++g) {
      const GroupEntry& e = group(g);
      // Acquire: pairs with the release in attach/detach, so a live group's
      // cursor and seats are initialised when we see it active.
      if (e.state.load(std::memory_order_acquire) != static_cast<std::uint32_t>(SeatState::Active))
        continue;
      // Acquire: pairs with the release fetch_sub in free_member (a group seen
      // without members has its last hazard cleared) and orders the flags load
      // after it, so a durable flag set by a joiner whose member we saw
      // counted is seen too. Relaxed flags: ordered by that acquire.
      const std::uint32_t members = e.members.load(std::memory_order_acquire);
      const std::uint32_t flags = e.flags.load(std::memory_order_relaxed);
      if (members == 0 && (flags & kGroupDurable) == 0) continue;
      // SYNC POINT G1 (acquire): pairs with the release of a member's cursor
      // CAS (or a private group's cursor store). Reading the cursor first makes
      // the hazards stored before that CAS visible below.
      gate = std::min(gate, e.cursor.load(std::memory_order_acquire));
      if ((flags & kGroupPrivate) != 0) continue;
      for (std::uint32_t m = 0; m < max_members_; ++m) {
        // SYNC POINT G2 (acquire): pairs with a member's release of its hazard,
        // so the member's reads of the slot happen before our overwrite.
        gate = std::min(gate, member(g, m).held.load(std::memory_order_acquire));
      }
    }
    return gate;
  }

  // ---- freeing seats: by their owner on close, by shmbusd when the owner died --
  // Each does nothing unless the seat is still held by `pid` (checked under the
  // control lock: it may have been freed, and reused, meanwhile), so a seat is
  // never freed twice.
  // Frees a producer seat; sequences it claimed and never published are marked
  // abandoned so consumers skip them.
  void free_producer(std::uint32_t seat, std::uint32_t pid);
  // Frees a member seat: its hazard no longer gates; wakes blocked producers.
  void free_member(std::uint32_t group, std::uint32_t member, std::uint32_t pid);
  // Marks claimed-but-unpublished sequence s abandoned. False if it was
  // published (or abandoned) meanwhile, or s's slot was never claimed for s.
  bool abandon_unpublished(std::uint64_t s) noexcept;

  // Control-plane lock over seat and group allocation (never the data path).
  // A holder that died is detected by pid and the lock is taken over.
  void lock_control() const;
  void unlock_control() const noexcept;

 private:
  Region() = default;
  void init_accessors(const TopicOptions& validated, const Layout& layout);
  void validate(const std::string& where, std::uint64_t size);

  std::string shm_name_;
  struct Mapping;  // Boost.Interprocess objects, kept out of public headers
  std::unique_ptr<Mapping> mapping_;
  std::shared_ptr<void> owner_;
  std::byte* base_ = nullptr;
  Ring ring_;
  std::uint64_t producers_offset_ = 0;
  std::uint64_t groups_offset_ = 0;
  std::uint64_t group_stride_ = 0;
  std::uint32_t max_producers_ = 0;
  std::uint32_t max_groups_ = 0;
  std::uint32_t max_members_ = 0;
  bool single_producer_ = false;
};

class ControlLock {
 public:
  explicit ControlLock(const Region& r) : r_(r) { r_.lock_control(); }
  ~ControlLock() { r_.unlock_control(); }
  ControlLock(const ControlLock&) = delete;
  ControlLock& operator=(const ControlLock&) = delete;

 private:
  const Region& r_;
};

}  // namespace shmbus::detail
