// Inline hot path of Subscriber, Sample and Batch (included by subscriber.hpp).
#pragma once

#include <algorithm>
#include <cstring>

namespace shmbus {

inline Sample& Sample::operator=(Sample&& o) noexcept {
  if (this != &o) {
    release();
    sub_ = o.sub_;
    slot_ = o.slot_;
    seq_ = o.seq_;
    timestamp_ns_ = o.timestamp_ns_;
    size_ = o.size_;
    producer_id_ = o.producer_id_;
    hold_ = o.hold_;
    o.sub_ = nullptr;
    o.slot_ = nullptr;
  }
  return *this;
}

inline void Sample::release() noexcept {
  if (slot_ == nullptr) return;
  sub_->unhold(hold_);
  slot_ = nullptr;
  sub_ = nullptr;
}

inline Batch& Batch::operator=(Batch&& o) noexcept {
  if (this != &o) {
    release();
    sub_ = o.sub_;
    first_ = o.first_;
    count_ = o.count_;
    hold_ = o.hold_;
    o.sub_ = nullptr;
  }
  return *this;
}

inline void Batch::release() noexcept {
  if (sub_ == nullptr) return;
  sub_->unhold(hold_);
  sub_ = nullptr;
}

inline std::span<const std::byte> Batch::data(std::size_t i) const noexcept {
  detail::SlotHeader& s = sub_->ring_.slot(first_ + i);
  // Bounded by the slot size: take() checked every length of the run.
  // Relaxed: ordered after that slot's acquire stamp load (C1) in take().
  const std::uint32_t n = std::min(s.length.load(std::memory_order_relaxed), sub_->ring_.slot_size);
  return {detail::Region::payload(s), n};
}

inline MessageInfo Batch::info(std::size_t i) const noexcept {
  detail::SlotHeader& s = sub_->ring_.slot(first_ + i);
  MessageInfo m;
  m.sequence = first_ + i;
  // Relaxed: ordered after the stamp's acquire (C1) in take(), like fill().
  m.size = std::min(s.length.load(std::memory_order_relaxed), sub_->ring_.slot_size);
  m.timestamp_ns = s.timestamp_ns.load(std::memory_order_relaxed);
  m.producer_id = s.producer_id.load(std::memory_order_relaxed);
  return m;
}

inline bool Batch::intact() const noexcept {
  if (sub_ == nullptr) return false;
  std::atomic_thread_fence(std::memory_order_acquire);  // as in Sample::intact
  for (std::uint32_t i = 0; i < count_; ++i)
    if (sub_->ring_.slot(first_ + i).stamp.load(std::memory_order_relaxed) !=
        detail::stamp_published(first_ + i))
      return false;
  return true;
}

inline std::uint32_t Subscriber::hold(std::uint64_t seq) noexcept {
  std::uint32_t i = 0;
  while (held_[i] != detail::kNone)
    ++i;  // a free entry exists: take() checked the count
  held_[i] = seq;
  ++held_count_;
  held_min_ = std::min(held_min_, seq);
  return i;
}

// A private group's gate: the oldest sample still held, else the position.
inline void Subscriber::store_private_gate() noexcept {
  // SYNC POINT C2 (release): pairs with G1 in compute_gate. Our reads of the
  // released slots happen before a producer that sees the new cursor
  // overwrites them.
  group_->cursor.store(held_count_ != 0 ? held_min_ : pos_, std::memory_order_release);
}

inline void Subscriber::publish_hazard() noexcept {
  if (private_) {
    store_private_gate();
  } else {
    // SYNC POINT C3 (release): pairs with G2 in compute_gate, as C2.
    member_->held.store(held_min_, std::memory_order_release);
  }
  // On every message's path (a consumer releases, then typically publishes
  // its answer): a hint, with no fence. A producer that goes to sleep at this
  // moment may miss it; it is then woken by our notify() before we wait
  // (wait_then) or by its own re-check (kSpaceRecheck). See
  // docs/memory-ordering.md, "Event counts".
  if (ring_.policy == Policy::Block) detail::notify_hint(ring_.header->space_event);
}

inline void Subscriber::unhold(std::uint32_t index) noexcept {
  const std::uint64_t seq = held_[index];
  held_[index] = detail::kNone;
  --held_count_;
  if (seq == held_min_) {
    held_min_ = detail::kNone;
    if (held_count_ != 0)
      for (std::uint64_t h : held_)
        held_min_ = std::min(held_min_, h);
  }
  publish_hazard();
}

// Moves the group's position from `from` to `to` (skipping abandoned, overrun
// or corrupt messages). False if another member moved it first.
inline bool Subscriber::advance(std::uint64_t from, std::uint64_t to) noexcept {
  if (private_) {
    pos_ = to;
    if (held_count_ != 0) return true;  // the gate stays at the oldest held sample
    store_private_gate();
  } else if (!group_->cursor.compare_exchange_strong(from, to, std::memory_order_release,
                                                     std::memory_order_relaxed)) {
    return false;  // release on success: as C4 below
  }
  room_made();  // skipping moved the gate: a blocked producer may go on
  return true;
}

// Wakes producers blocked on a full ring, after a skip or seek moved the gate
// (rare: the full, fenced notify; a release only hints, see publish_hazard).
inline void Subscriber::room_made() noexcept {
  if (ring_.policy == Policy::Block) detail::notify(ring_.header->space_event);
}

inline Status Subscriber::take(std::uint64_t& first, std::uint32_t& count, std::uint32_t max,
                               std::uint32_t& hold_index) noexcept {
  if (held_count_ == kMaxHeld) [[unlikely]]
    return Status::TooManyHeld;
  for (;;) {
    // Relaxed: the stamp's acquire load below is what makes the slot readable;
    // a stale cursor only makes the CAS fail.
    const std::uint64_t c = private_ ? pos_ : group_->cursor.load(std::memory_order_relaxed);
    detail::SlotHeader& slot = ring_.slot(c);
    // SYNC POINT C1 (acquire): pairs with P1 (publish) and the abandon store.
    const std::uint64_t st = slot.stamp.load(std::memory_order_acquire);
    if (st < detail::stamp_published(c)) return Status::WouldBlock;
    if (st == detail::stamp_published(c)) [[likely]] {
      std::uint32_t k = 1;
      // C1 again (acquire) for each further slot of the run.
      // A run stops before a slot whose length is invalid, so that slot is
      // taken alone and reported (fill) instead of inside a batch. Length loads
      // are relaxed: each follows that slot's acquire stamp load (C1).
      const std::uint32_t run_max =
          slot.length.load(std::memory_order_relaxed) <= ring_.slot_size ? max : 1;
      while (k < run_max &&
             ring_.slot(c + k).stamp.load(std::memory_order_acquire) ==
                 detail::stamp_published(c + k) &&
             ring_.slot(c + k).length.load(std::memory_order_relaxed) <= ring_.slot_size)
        ++k;
      if (private_) {
        pos_ = c + k;  // the cursor (our gate) stays at c while the messages are held
      } else {
        // Hazard before claim: stored before the CAS, whose release makes it
        // visible to any producer that reads the advanced cursor (G1, then G2).
        // Release (not relaxed): a producer that reads this value through
        // another member's later CAS must still see our earlier reads done.
        if (held_count_ == 0) member_->held.store(c, std::memory_order_release);
        std::uint64_t expected = c;
        // SYNC POINT C4 (release): pairs with G1; see above.
        if (!group_->cursor.compare_exchange_strong(expected, c + k, std::memory_order_release,
                                                    std::memory_order_relaxed)) {
          // Another member took c: withdraw the hazard (release, as C3).
          if (held_count_ == 0) member_->held.store(detail::kNone, std::memory_order_release);
          continue;
        }
      }
      first = c;
      count = k;
      hold_index = hold(c);
      count_received(k);
      return Status::Ok;
    }
    if (st == detail::stamp_abandoned(c)) {
      (void)advance(c, c + 1);  // if another member moved on, retry from there
      continue;
    }
    // Lapped: producers overwrote c (Policy::Overwrite, a group that had no
    // members, or a start before what the ring retains). Resume at the oldest
    // retained message and count what was skipped.
    // Relaxed: only where to resume; a stale tail resumes lower, and the
    // stamps checked there decide (a still-overwritten slot is skipped again).
    const std::uint64_t tail = ring_.header->tail.load(std::memory_order_relaxed);
    const std::uint64_t oldest = ring_.oldest(tail);
    const std::uint64_t to = std::max(c + 1, oldest);
    if (advance(c, to))
      // Relaxed: a counter; whoever moved the cursor counts the skip, once.
      group_->lost.fetch_add(to - c, std::memory_order_relaxed);
  }
}

inline Status Subscriber::fill(Sample& out, std::uint64_t seq, std::uint32_t hold_index) noexcept {
  detail::SlotHeader& slot = ring_.slot(seq);
  // Relaxed loads of the slot's fields: the acquire load of its stamp (C1) in
  // take() already made the producer's stores before P1 visible.
  const std::uint32_t len = slot.length.load(std::memory_order_relaxed);
  if (len > ring_.slot_size) [[unlikely]]
    return reject_corrupt(hold_index);
  set_sample(out, slot, seq, len, hold_index);
  return Status::Ok;
}

// A taken message whose length exceeds the slot (a buggy or malicious writer):
// never read past the slot; count it, give it up, and say so.
inline Status Subscriber::reject_corrupt(std::uint32_t hold_index) noexcept {
  group_->corrupt.fetch_add(1, std::memory_order_relaxed);  // relaxed: a counter
  unhold(hold_index);
  return Status::Corrupt;
}

inline void Subscriber::set_sample(Sample& out, detail::SlotHeader& slot, std::uint64_t seq,
                                   std::uint32_t len, std::uint32_t hold_index) noexcept {
  out.release();
  out.sub_ = this;
  out.slot_ = &slot;
  out.seq_ = seq;
  out.size_ = len;
  // Relaxed: ordered after the stamp's acquire load (C1) that found it published.
  out.timestamp_ns_ = slot.timestamp_ns.load(std::memory_order_relaxed);
  out.producer_id_ = slot.producer_id.load(std::memory_order_relaxed);
  out.hold_ = hold_index;
}

inline void Subscriber::count_received(std::uint32_t k) noexcept {
  // Relaxed: a statistic, written only by this member.
  member_->received.store(member_->received.load(std::memory_order_relaxed) + k,
                          std::memory_order_relaxed);
}

// The common case inline: a private group, the next message published and
// well-formed. Everything else (competing members, skips, a full hold table,
// a corrupt length) takes the general path, which decides from scratch.
inline Status Subscriber::try_receive(Sample& out) noexcept {
  if (private_ && held_count_ != kMaxHeld) [[likely]] {
    const std::uint64_t c = pos_;
    detail::SlotHeader& slot = ring_.slot(c);
    // C1 (acquire), as in take().
    const std::uint64_t st = slot.stamp.load(std::memory_order_acquire);
    if (st < detail::stamp_published(c)) return Status::WouldBlock;
    // Relaxed: ordered after the stamp's acquire load (C1), as in fill().
    const std::uint32_t len = slot.length.load(std::memory_order_relaxed);
    if (st == detail::stamp_published(c) && len <= ring_.slot_size) [[likely]] {
      // The sample `out` held goes first (as set_sample would do last): in
      // the usual `Sample s; while (receive(s))` loop it is the oldest held,
      // and releasing it after holding c would rescan the whole hold table.
      // Before pos_ moves, so that its release leaves the gate at c.
      out.release();
      pos_ = c + 1;  // the cursor (our gate) stays at c while the sample is held
      count_received(1);
      set_sample(out, slot, c, len, hold(c));
      return Status::Ok;
    }
  }
  return try_receive_slow(out);
}

template <class Attempt>
inline Status Subscriber::wait_then(std::chrono::nanoseconds timeout, Attempt&& attempt) noexcept {
  Status result = attempt();
  if (result != Status::WouldBlock) return result;
  // Before we wait: the fenced notify that a release leaves out, so that a
  // producer that missed one of our hints does not sleep while we do.
  if (ring_.policy == Policy::Block) detail::notify(ring_.header->space_event);
  const bool ready =
      detail::wait_for(ring_.header->data_event, options_.wait, timeout, options_.spin, [&] {
        // The cheap look first: a spinning wait polls one stamp per turn.
        if (!may_have_data()) return false;
        result = attempt();
        return result != Status::WouldBlock;
      });
  return ready ? result : Status::Timeout;
}

// False only when the next message to take is not yet published. A hint:
// whatever it says, take() decides with its own acquire load.
inline bool Subscriber::may_have_data() const noexcept {
  // Relaxed (both): take() loads cursor and stamp again. After the waiter's
  // seq_cst fence in wait_for (Dekker with notify), the stamp load here still
  // sees a publish that the notifier did not wake us for.
  const std::uint64_t c = private_ ? pos_ : group_->cursor.load(std::memory_order_relaxed);
  return ring_.slot(c).stamp.load(std::memory_order_relaxed) >= detail::stamp_published(c);
}

inline Status Subscriber::receive(Sample& out, std::chrono::nanoseconds timeout) noexcept {
  return wait_then(timeout, [&] { return try_receive(out); });
}

inline Status Subscriber::receive_batch(Batch& out, std::size_t max,
                                        std::chrono::nanoseconds timeout) noexcept {
  if (max == 0) return Status::Invalid;
  const auto limit = static_cast<std::uint32_t>(std::min<std::size_t>(max, ring_.count));
  return wait_then(timeout, [&] {
    std::uint64_t first = 0;
    std::uint32_t count = 0, hold_index = 0;
    const Status st = take(first, count, limit, hold_index);
    if (st != Status::Ok) return st;
    // take() ends a run before an invalid length, so only the first can be bad.
    // Relaxed: after the stamp's acquire load (C1) in take().
    if (ring_.slot(first).length.load(std::memory_order_relaxed) > ring_.slot_size) [[unlikely]]
      return reject_corrupt(hold_index);
    out.release();
    out.sub_ = this;
    out.first_ = first;
    out.count_ = count;
    out.hold_ = hold_index;
    return Status::Ok;
  });
}

namespace detail {
// The seqlock reader's copy: under Policy::Overwrite a producer may be writing
// the same bytes. The result is checked against the stamp afterwards and
// discarded if torn, so the race is benign by design; TSan is told so here and
// only here.
#if defined(__clang__) || defined(__GNUC__)
__attribute__((no_sanitize("thread")))
#endif
inline void
copy_racy(std::byte* dst, const std::byte* src, std::size_t n) noexcept {
  for (std::size_t i = 0; i < n; ++i)
    dst[i] = src[i];
}
}  // namespace detail

inline Status Subscriber::receive_copy(std::span<std::byte> buffer, MessageInfo& info,
                                       std::chrono::nanoseconds timeout) noexcept {
  if (buffer.size() < ring_.slot_size) return Status::TooLarge;
  return wait_then(timeout, [&] {
    for (;;) {
      Sample s;
      const Status st = try_receive(s);
      if (st != Status::Ok) return st;
      const auto d = s.data();
      if (ring_.policy == Policy::Overwrite)
        detail::copy_racy(buffer.data(), d.data(), d.size());
      else
        std::memcpy(buffer.data(), d.data(), d.size());
      if (!s.intact()) {
        group_->lost.fetch_add(1, std::memory_order_relaxed);  // relaxed: a counter
        continue;
      }
      info.sequence = s.sequence();
      info.timestamp_ns = s.timestamp_ns();
      info.size = static_cast<std::uint32_t>(d.size());
      info.producer_id = s.producer_id();
      return Status::Ok;
    }
  });
}

inline void Subscriber::seek(std::uint64_t sequence) noexcept {
  // Jumping over messages is not taking them: producers must not infer from
  // this cursor that they are complete (TopicHeader::jump_mark).
  ring_.raise_jump_mark(sequence);
  if (private_) {
    pos_ = sequence;
    store_private_gate();
  } else {
    // Release, as C4, and a read-modify-write: it continues the cursor's
    // release sequence, so a producer that reads the sought value still
    // synchronises with the members' earlier CASes and sees their hazards.
    (void)group_->cursor.exchange(sequence, std::memory_order_release);
  }
  room_made();
}

inline std::uint64_t Subscriber::position() const noexcept {
  // Relaxed: a snapshot for reporting.
  return private_ ? pos_ : group_->cursor.load(std::memory_order_relaxed);
}

inline std::uint64_t Subscriber::lag() const noexcept {
  // Relaxed: a snapshot for reporting, like position().
  const std::uint64_t tail = ring_.header->tail.load(std::memory_order_relaxed);
  const std::uint64_t p = position();
  return tail > p ? tail - p : 0;
}

inline std::uint64_t Subscriber::lost() const noexcept {
  // Relaxed (here and in corrupt()): counters, read for reporting.
  return group_->lost.load(std::memory_order_relaxed);
}

inline std::uint64_t Subscriber::corrupt() const noexcept {
  return group_->corrupt.load(std::memory_order_relaxed);
}

}  // namespace shmbus
