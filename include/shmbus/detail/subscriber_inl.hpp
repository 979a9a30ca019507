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
    lane_ = o.lane_;
    slot_ = o.slot_;
    seq_ = o.seq_;
    timestamp_ns_ = o.timestamp_ns_;
    size_ = o.size_;
    producer_id_ = o.producer_id_;
    hold_ = o.hold_;
    meta_ = o.meta_;
    deliveries_ = o.deliveries_;
    o.sub_ = nullptr;
    o.slot_ = nullptr;
  }
  return *this;
}

inline void Sample::release() noexcept {
  if (slot_ == nullptr) return;
  sub_->release(*lane_, hold_);
  slot_ = nullptr;
  sub_ = nullptr;
}

inline std::uint32_t Sample::partition() const noexcept {
  return lane_ == nullptr || sub_->lanes_ ? 0 : lane_->index;
}

inline std::uint32_t Sample::priority() const noexcept {
  return lane_ != nullptr && sub_->lanes_ ? lane_->index : 0;
}

inline Batch& Batch::operator=(Batch&& o) noexcept {
  if (this != &o) {
    release();
    sub_ = o.sub_;
    lane_ = o.lane_;
    first_ = o.first_;
    count_ = o.count_;
    hold_ = o.hold_;
    deliveries_ = o.deliveries_;
    o.sub_ = nullptr;
  }
  return *this;
}

inline void Batch::release() noexcept {
  if (sub_ == nullptr) return;
  sub_->release(*lane_, hold_);
  sub_ = nullptr;
}

namespace detail {
// The lengths of a slot that take() found well-formed, re-read and bounded
// again (a later overwrite may change them under Policy::Overwrite). Relaxed:
// ordered after that slot's acquire stamp load (C1) in take().
struct Lengths {
  std::uint32_t size, meta;
};
[[nodiscard]] inline Lengths lengths(const SlotHeader& s, std::uint32_t slot_size) noexcept {
  std::uint32_t meta = s.meta.load(std::memory_order_relaxed);
  if (meta_span(meta) > slot_size) meta = 0;  // overwritten meanwhile: no key, no properties
  const auto room = static_cast<std::uint32_t>(slot_size - meta_span(meta));
  return {std::min(s.length.load(std::memory_order_relaxed), room), meta};
}
}  // namespace detail

inline std::span<const std::byte> Batch::data(std::size_t i) const noexcept {
  detail::SlotHeader& s = lane_->ring.slot(first_ + i);
  const detail::Lengths n = detail::lengths(s, lane_->ring.slot_size);
  return {detail::payload(s, n.meta), n.size};
}

inline std::span<const std::byte> Batch::key(std::size_t i) const noexcept {
  detail::SlotHeader& s = lane_->ring.slot(first_ + i);
  return {detail::payload(s), detail::meta_key(detail::lengths(s, lane_->ring.slot_size).meta)};
}

inline Properties Batch::properties(std::size_t i) const noexcept {
  detail::SlotHeader& s = lane_->ring.slot(first_ + i);
  const std::uint32_t meta = detail::lengths(s, lane_->ring.slot_size).meta;
  return Properties({detail::payload(s) + detail::meta_key(meta), detail::meta_properties(meta)});
}

inline MessageInfo Batch::info(std::size_t i) const noexcept {
  detail::SlotHeader& s = lane_->ring.slot(first_ + i);
  MessageInfo m;
  m.sequence = first_ + i;
  const detail::Lengths n = detail::lengths(s, lane_->ring.slot_size);
  m.size = n.size;
  m.key_size = detail::meta_key(n.meta);
  m.properties_size = detail::meta_properties(n.meta);
  m.deliver_at_ns = detail::due_of(s, n.meta);
  m.partition = lane_->index;
  // Relaxed: ordered after the stamp's acquire (C1) in take(), like fill().
  m.timestamp_ns = s.timestamp_ns.load(std::memory_order_relaxed);
  m.producer_id = s.producer_id.load(std::memory_order_relaxed);
  return m;
}

inline bool Batch::intact() const noexcept {
  if (sub_ == nullptr) return false;
  std::atomic_thread_fence(std::memory_order_acquire);  // as in Sample::intact
  for (std::uint32_t i = 0; i < count_; ++i)
    if (!detail::holds(lane_->ring.slot(first_ + i).stamp.load(std::memory_order_relaxed),
                       first_ + i, lane_->ring.count))
      return false;
  return true;
}

inline bool Sample::intact() const noexcept {
  if (slot_ == nullptr) return false;
  // Acquire fence: the payload reads before it are ordered before the stamp
  // load after it (the seqlock reader's second check).
  std::atomic_thread_fence(std::memory_order_acquire);
  return detail::holds(slot_->stamp.load(std::memory_order_relaxed), seq_, lane_->ring.count);
}

// A taken message whose lengths exceed the slot (a buggy or malicious writer):
// never read past the slot; count it, give it up, and say so.
inline Status Subscriber::reject_corrupt(detail::ConsumerLane& l,
                                         std::uint32_t hold_index) noexcept {
  l.state.group->corrupt.fetch_add(1, std::memory_order_relaxed);  // relaxed: a counter
  release(l, hold_index);
  return Status::Corrupt;
}

// Points `out` at the taken message `seq` in `slot`, of valid lengths.
inline void Subscriber::fill(Sample& out, detail::ConsumerLane& l, detail::SlotHeader& slot,
                             std::uint64_t seq, std::uint32_t len, std::uint32_t meta,
                             std::uint32_t hold_index) noexcept {
  out.release();
  out.sub_ = this;
  out.lane_ = &l;
  out.slot_ = &slot;
  out.seq_ = seq;
  out.size_ = len;
  out.meta_ = meta;
  // Relaxed: ordered after the stamp's acquire load (C1) that found it published.
  out.timestamp_ns_ = slot.timestamp_ns.load(std::memory_order_relaxed);
  out.producer_id_ = slot.producer_id.load(std::memory_order_relaxed);
  out.hold_ = hold_index;
  out.deliveries_ = 1;
}

// The common case inline: one ring, a private group, the next message
// published and well-formed. Everything else (several rings, competing
// members, skips, a full hold table, a corrupt length) takes the general
// path, which decides from scratch.
inline Status Subscriber::take_one(Sample& out) noexcept {
  const Status st = simple_ ? take_from(head_, out) : take_filtered(out);
  return st == Status::WouldBlock ? nothing_to_take() : st;
}

inline Status Subscriber::try_receive(Sample& out) noexcept {
  const Status st = take_one(out);
  if (st != Status::WouldBlock) [[likely]]
    return st;
  return settle(st);
}

inline Status Subscriber::nothing_to_take() const noexcept {
  if (!detail::deleted(head_.ring)) [[likely]]
    return Status::WouldBlock;
  // Relaxed: a deleted topic's tail only moves by claims already in flight,
  // which end published or abandoned; a later call sees them.
  for (std::uint32_t p = 0; p < rings_; ++p)
    if (detail::position(lane(p).state) < lane(p).ring.header->tail.load(std::memory_order_relaxed))
      return Status::WouldBlock;
  return Status::TopicDeleted;
}

inline Status Subscriber::take_from(detail::ConsumerLane& l, Sample& out) noexcept {
  detail::ConsumerState& state = l.state;
  // A file topic's receive takes the general path, which checks checksums.
  if (state.fast_private && state.held_count != kMaxHeld) [[likely]] {
    std::uint32_t len = 0, meta = 0;
    Status not_ready = Status::WouldBlock;
    if (detail::SlotHeader* slot = detail::try_take_private(l.ring, state, len, meta, not_ready))
        [[likely]] {
      const std::uint64_t c = state.pos;
      // The sample `out` held goes first (as fill would do last): in the usual
      // `Sample s; while (receive(s))` loop it is the oldest held, and
      // releasing it after holding c would rescan the whole hold table.
      // Before pos moves, so that its release leaves the gate at c.
      out.release();
      state.pos = c + 1;  // the cursor (our gate) stays at c while the sample is held
      detail::count_received(state, 1);
      fill(out, l, *slot, c, len, meta, detail::hold(state, c));
      return Status::Ok;
    }
    if (not_ready == Status::WouldBlock) return Status::WouldBlock;
  }
  return take_slow(l, out);
}

template <class Attempt>
inline Status Subscriber::wait_then(std::chrono::nanoseconds timeout, Attempt&& attempt) noexcept {
  Status result = attempt();
  if (result == Status::WouldBlock) result = nothing_to_take();
  if (result != Status::WouldBlock) return result;
  // Before we wait: the fenced notify that a release leaves out, so that a
  // producer that missed one of our hints does not sleep while we do.
  if (head_.ring.policy == Policy::Block)
    for (std::uint32_t p = 0; p < rings_; ++p)
      detail::notify(lane(p).ring.control->space_event);
  const auto ready = [&] {
    // The cheap look first: a spinning wait polls one stamp per turn (and
    // the deleted flag, on a line written only by the delete and by abandons).
    if (may_have_data()) result = attempt();
    if (result == Status::WouldBlock) result = nothing_to_take();
    return result != Status::WouldBlock;
  };
  // A partitioned member wakes now and then to follow its group (a hand-over,
  // a dead member) even when no message comes.
  // So does a member of an at-least-once group (a dead member's samples).
  const detail::Waited w = detail::wait_for(
      *head_.ring.data_event, options_.wait, timeout, options_.spin, options_.interrupt, ready,
      partitioned_ || acks_ != nullptr ? kGroupCheck : std::chrono::nanoseconds::max());
  return detail::status_of(w, result);
}

inline bool Subscriber::may_have_data() const noexcept {
  return has_data() || (acks_ != nullptr && peer_check_due());
}

inline bool Subscriber::ready() const noexcept {
  return has_data() || detail::deleted(head_.ring);
}

inline bool Subscriber::has_data() const noexcept {
  if (acks_ != nullptr && (!pending_.empty() || adoption_due())) return true;
  if (rings_ == 1) [[likely]]
    return detail::may_have_data(head_.ring, head_.state);
  if (assignment_changed()) return true;
  for (std::uint32_t p = 0; p < rings_; ++p) {
    const detail::ConsumerLane& l = lane(p);
    if (l.owned && !l.revoking && detail::may_have_data(l.ring, l.state)) return true;
  }
  return false;
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
    for (std::uint32_t p = 0; p < rings_; ++p) {
      detail::ConsumerLane& l = lane(p);
      if (l.owned && detail::check_stalled(l.ring, l.state) != detail::Stall::Waiting)
        return Status::Corrupt;
    }
    if (timeout <= slice) return Status::Timeout;
    timeout -= slice;  // at least a slice passed, so this never waits longer than asked
  }
}

inline Status Subscriber::receive(Sample& out, std::chrono::nanoseconds timeout) noexcept {
  if (simple_) [[likely]]
    return settle(wait_checked(timeout, [&] { return take_from(head_, out); }));
  return settle(wait_checked(timeout, [&] { return take_filtered(out); }));
}

inline Status Subscriber::take_batch(detail::ConsumerLane& l, Batch& out,
                                     std::uint32_t max) noexcept {
  if (acks_ != nullptr && rings_ == 1) [[unlikely]]
    if (const Status st = redeliver(out); st != Status::WouldBlock) return st;
  detail::Taken t;
  const Status st =
      take_run(l, static_cast<std::uint32_t>(std::min<std::uint64_t>(max, l.ring.count)), t);
  if (st == Status::WouldBlock && acks_ != nullptr && rings_ == 1) [[unlikely]]
    check_peers();
  if (st != Status::Ok) return st;
  // take() ends a run before an invalid length, so only the first can be bad.
  if (!detail::well_formed(l.ring.slot(t.first), l.ring.slot_size)) [[unlikely]]
    return reject_corrupt(l, t.hold);
  out.release();
  out.sub_ = this;
  out.lane_ = &l;
  out.first_ = t.first;
  out.count_ = t.count;
  out.hold_ = t.hold;
  out.deliveries_ = 1;
  return Status::Ok;
}

inline Status Subscriber::receive_batch(Batch& out, std::size_t max,
                                        std::chrono::nanoseconds timeout) noexcept {
  if (max == 0) return Status::Invalid;
  const auto limit = static_cast<std::uint32_t>(std::min<std::size_t>(max, head_.ring.count));
  if (simple_) [[likely]]
    return settle(wait_checked(timeout, [&] { return take_batch(head_, out, limit); }));
  if (!tags_.empty())
    return settle(wait_checked(timeout, [&] { return take_batch_filtered(out); }));
  return settle(wait_checked(timeout, [&] { return take_batch_any(out, limit); }));
}

namespace detail {
// The seqlock reader's copy: under Policy::Overwrite a producer may be writing
// the same bytes. The result is checked against the stamp afterwards and
// discarded if torn, so the race is benign by design; TSan is told so here
// and in the CRC32C of a file topic's slot (src/crc32c.cpp), for the same
// reason.
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
  if (buffer.size() < head_.ring.slot_size) return Status::TooLarge;
  return settle(wait_checked(timeout, [&] {
    for (;;) {
      Sample s;
      const Status st = take_one(s);
      if (st != Status::Ok) return st;
      const auto d = s.data();
      if (head_.ring.policy == Policy::Overwrite)
        detail::copy_racy(buffer.data(), d.data(), d.size());
      else
        std::memcpy(buffer.data(), d.data(), d.size());
      if (!s.intact()) {
        s.lane_->state.group->lost.fetch_add(1, std::memory_order_relaxed);  // relaxed: a counter
        continue;
      }
      info.sequence = s.sequence();
      info.timestamp_ns = s.timestamp_ns();
      info.size = static_cast<std::uint32_t>(d.size());
      info.producer_id = s.producer_id();
      info.partition = s.lane_->index;
      info.key_size = detail::meta_key(s.meta_);
      info.properties_size = detail::meta_properties(s.meta_);
      info.deliver_at_ns = s.deliver_at_ns();
      info.delivery_count = s.delivery_count();
      return Status::Ok;
    }
  }));
}

inline void Subscriber::seek(std::uint64_t sequence) {
  for (std::uint32_t p = 0; p < rings_; ++p)
    check_not_future(lane(p).ring, sequence, "seek to");
  for (std::uint32_t p = 0; p < rings_; ++p)
    detail::seek(lane(p).ring, lane(p).state, sequence);
}

inline std::uint64_t Subscriber::position(std::uint32_t partition) const noexcept {
  return partition < rings_ ? detail::position(lane(partition).state) : 0;
}

inline std::uint64_t Subscriber::position() const noexcept {
  if (rings_ == 1) [[likely]]
    return detail::position(head_.state);
  std::uint64_t sum = 0;
  for (std::uint32_t p = 0; p < rings_; ++p)
    sum += position(p);
  return sum;
}

inline std::uint64_t Subscriber::lag(std::uint32_t partition) const noexcept {
  if (partition >= rings_) return 0;
  const detail::ConsumerLane& l = lane(partition);
  // Relaxed: a snapshot for reporting, like position().
  const std::uint64_t tail = l.ring.header->tail.load(std::memory_order_relaxed);
  const std::uint64_t p = detail::position(l.state);
  return tail > p ? tail - p : 0;
}

inline std::uint64_t Subscriber::lag() const noexcept {
  std::uint64_t sum = 0;
  for (std::uint32_t p = 0; p < rings_; ++p)
    sum += lag(p);
  return sum;
}

inline std::uint64_t Subscriber::lost() const noexcept {
  std::uint64_t sum = 0;
  // Relaxed (here and in corrupt()): counters, read for reporting.
  for (std::uint32_t p = 0; p < rings_; ++p)
    sum += lane(p).state.group->lost.load(std::memory_order_relaxed);
  return sum;
}

inline std::uint64_t Subscriber::filtered() const noexcept {
  std::uint64_t sum = 0;
  for (std::uint32_t p = 0; p < rings_; ++p)
    sum += lane(p).state.group->filtered.load(std::memory_order_relaxed);  // a counter
  return sum;
}

inline std::uint64_t Subscriber::corrupt() const noexcept {
  std::uint64_t sum = 0;
  for (std::uint32_t p = 0; p < rings_; ++p)
    sum += lane(p).state.group->corrupt.load(std::memory_order_relaxed);
  return sum;
}

}  // namespace shmbus
