// Inline hot path of Subscriber, Sample and Batch (included by subscriber.hpp):
// thin wrappers over the consumer side of detail/ring.hpp, and the waits.
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
  detail::unhold(sub_->ring_, sub_->state_, hold_);
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
  detail::unhold(sub_->ring_, sub_->state_, hold_);
  sub_ = nullptr;
}

inline std::span<const std::byte> Batch::data(std::size_t i) const noexcept {
  detail::SlotHeader& s = sub_->ring_.slot(first_ + i);
  // Bounded by the slot size: take() checked every length of the run.
  // Relaxed: ordered after that slot's acquire stamp load (C1) in take().
  const std::uint32_t n = std::min(s.length.load(std::memory_order_relaxed), sub_->ring_.slot_size);
  return {detail::payload(s), n};
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
    if (!detail::holds(sub_->ring_.slot(first_ + i).stamp.load(std::memory_order_relaxed),
                       first_ + i, sub_->ring_.count))
      return false;
  return true;
}

inline bool Sample::intact() const noexcept {
  if (slot_ == nullptr) return false;
  // Acquire fence: the payload reads before it are ordered before the stamp
  // load after it (the seqlock reader's second check).
  std::atomic_thread_fence(std::memory_order_acquire);
  return detail::holds(slot_->stamp.load(std::memory_order_relaxed), seq_, sub_->ring_.count);
}

// A taken message whose length exceeds the slot (a buggy or malicious writer):
// never read past the slot; count it, give it up, and say so.
inline Status Subscriber::reject_corrupt(std::uint32_t hold_index) noexcept {
  state_.group->corrupt.fetch_add(1, std::memory_order_relaxed);  // relaxed: a counter
  detail::unhold(ring_, state_, hold_index);
  return Status::Corrupt;
}

// Points `out` at the taken message `seq` in `slot`, of valid length `len`.
inline void Subscriber::fill(Sample& out, detail::SlotHeader& slot, std::uint64_t seq,
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

// The common case inline: a private group, the next message published and
// well-formed. Everything else (competing members, skips, a full hold table,
// a corrupt length) takes the general path, which decides from scratch.
inline Status Subscriber::try_receive(Sample& out) noexcept {
  const Status st = take_one(out);
  return st == Status::WouldBlock ? nothing_to_take() : st;
}

inline Status Subscriber::nothing_to_take() const noexcept {
  if (!detail::deleted(ring_)) [[likely]]
    return Status::WouldBlock;
  // Relaxed: a deleted topic's tail only moves by claims already in flight,
  // which end published or abandoned; a later call sees them.
  return position() >= ring_.header->tail.load(std::memory_order_relaxed) ? Status::TopicDeleted
                                                                          : Status::WouldBlock;
}

inline Status Subscriber::take_one(Sample& out) noexcept {
  if (state_.is_private && state_.held_count != kMaxHeld) [[likely]] {
    std::uint32_t len = 0;
    Status not_ready = Status::WouldBlock;
    if (detail::SlotHeader* slot = detail::try_take_private(ring_, state_, len, not_ready))
        [[likely]] {
      const std::uint64_t c = state_.pos;
      // The sample `out` held goes first (as fill would do last): in the usual
      // `Sample s; while (receive(s))` loop it is the oldest held, and
      // releasing it after holding c would rescan the whole hold table.
      // Before pos moves, so that its release leaves the gate at c.
      out.release();
      state_.pos = c + 1;  // the cursor (our gate) stays at c while the sample is held
      detail::count_received(state_, 1);
      fill(out, *slot, c, len, detail::hold(state_, c));
      return Status::Ok;
    }
    if (not_ready == Status::WouldBlock) return Status::WouldBlock;
  }
  return try_receive_slow(out);
}

template <class Attempt>
inline Status Subscriber::wait_then(std::chrono::nanoseconds timeout, Attempt&& attempt) noexcept {
  Status result = attempt();
  if (result == Status::WouldBlock) result = nothing_to_take();
  if (result != Status::WouldBlock) return result;
  // Before we wait: the fenced notify that a release leaves out, so that a
  // producer that missed one of our hints does not sleep while we do.
  if (ring_.policy == Policy::Block) detail::notify(ring_.control->space_event);
  const auto ready = [&] {
    // The cheap look first: a spinning wait polls one stamp per turn (and
    // the deleted flag, on a line written only by the delete and by abandons).
    if (detail::may_have_data(ring_, state_)) result = attempt();
    if (result == Status::WouldBlock) result = nothing_to_take();
    return result != Status::WouldBlock;
  };
  const detail::Waited w = detail::wait_for(ring_.control->data_event, options_.wait, timeout,
                                            options_.spin, options_.interrupt, ready);
  return detail::status_of(w, result);
}

// wait_then in slices of at most kStallCheck. A slice that times out asks
// whether the position is stuck on damage rather than on a slow producer (off
// the hot path: only once there was nothing to take for a whole slice, which
// is min(timeout, kStallCheck): a 2 ms receive checks every 2 ms. The check's
// argument does not depend on time, so checking often is safe.)
template <class Attempt>
inline Status Subscriber::wait_checked(std::chrono::nanoseconds timeout,
                                       Attempt&& attempt) noexcept {
  for (;;) {
    const std::chrono::nanoseconds slice = std::min(timeout, kStallCheck);
    const Status st = wait_then(slice, attempt);
    if (st != Status::Timeout) [[likely]]
      return st;
    if (detail::check_stalled(ring_, state_) != detail::Stall::Waiting) return Status::Corrupt;
    if (timeout <= slice) return Status::Timeout;
    timeout -= slice;  // at least a slice passed, so this never waits longer than asked
  }
}

inline Status Subscriber::receive(Sample& out, std::chrono::nanoseconds timeout) noexcept {
  return wait_checked(timeout, [&] { return take_one(out); });
}

inline Status Subscriber::receive_batch(Batch& out, std::size_t max,
                                        std::chrono::nanoseconds timeout) noexcept {
  if (max == 0) return Status::Invalid;
  const auto limit = static_cast<std::uint32_t>(std::min<std::size_t>(max, ring_.count));
  return wait_checked(timeout, [&] {
    detail::Taken t;
    const Status st = detail::take(ring_, state_, limit, t);
    if (st != Status::Ok) return st;
    // take() ends a run before an invalid length, so only the first can be bad.
    // Relaxed: after the stamp's acquire load (C1) in take().
    if (ring_.slot(t.first).length.load(std::memory_order_relaxed) > ring_.slot_size) [[unlikely]]
      return reject_corrupt(t.hold);
    out.release();
    out.sub_ = this;
    out.first_ = t.first;
    out.count_ = t.count;
    out.hold_ = t.hold;
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
  return wait_checked(timeout, [&] {
    for (;;) {
      Sample s;
      const Status st = take_one(s);
      if (st != Status::Ok) return st;
      const auto d = s.data();
      if (ring_.policy == Policy::Overwrite)
        detail::copy_racy(buffer.data(), d.data(), d.size());
      else
        std::memcpy(buffer.data(), d.data(), d.size());
      if (!s.intact()) {
        state_.group->lost.fetch_add(1, std::memory_order_relaxed);  // relaxed: a counter
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

inline void Subscriber::seek(std::uint64_t sequence) {
  check_not_future(sequence, "seek to");
  detail::seek(ring_, state_, sequence);
}

inline std::uint64_t Subscriber::position() const noexcept {
  return detail::position(state_);
}

inline std::uint64_t Subscriber::lag() const noexcept {
  // Relaxed: a snapshot for reporting, like position().
  const std::uint64_t tail = ring_.header->tail.load(std::memory_order_relaxed);
  const std::uint64_t p = position();
  return tail > p ? tail - p : 0;
}

inline std::uint64_t Subscriber::lost() const noexcept {
  // Relaxed (here and in corrupt()): counters, read for reporting.
  return state_.group->lost.load(std::memory_order_relaxed);
}

inline std::uint64_t Subscriber::corrupt() const noexcept {
  return state_.group->corrupt.load(std::memory_order_relaxed);
}

}  // namespace shmbus
