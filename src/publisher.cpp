#include "shmbus/publisher.hpp"

#include <unistd.h>

#include <algorithm>
#include <chrono>

#include "region.hpp"

namespace shmbus {

Publisher::Publisher(std::shared_ptr<detail::Region> region, const PublisherOptions& options)
    : region_(std::move(region)), options_(options) {
  detail::StampClock::prepare();
  detail::Region& r = *region_;
  // Checked before anything is written: the data segment of a region opened
  // with subscribe rights only is mapped read-only (a write would fault).
  if (r.read_only())
    throw Error(ErrorCode::PermissionDenied,
                "topic '" + r.topic_name() +
                    "' was opened with subscribe rights only (its messages are mapped "
                    "read-only here); ask the bus owner for a publish rule");
  ring_ = r.ring();
  state_.single_producer = r.single_producer();
  state_.gated = ring_.policy != Policy::Overwrite;
  // Relaxed: written before this process got the region (see the field).
  state_.gate_proves =
      state_.gated && r.header().shared_control.load(std::memory_order_relaxed) == 0;
  detail::ControlLock lock(r);
  std::uint32_t free_seat = r.max_producers();
  for (std::uint32_t i = 0; i < r.max_producers(); ++i) {
    // Relaxed: seats change only under the control lock, which we hold.
    const auto st = r.producer(i).state.load(std::memory_order_relaxed);
    if (st == static_cast<std::uint32_t>(detail::SeatState::Free)) {
      if (free_seat == r.max_producers()) free_seat = i;
    } else if (state_.single_producer) {
      throw Error(ErrorCode::ResourceExhausted,
                  "topic '" + r.topic_name() +
                      "' is single-producer and already has a publisher (pid " +
                      std::to_string(r.producer(i).pid.load(std::memory_order_relaxed)) +
                      "); close it first, or create the topic without single_producer");
    }
  }
  if (free_seat == r.max_producers())
    throw Error(ErrorCode::ResourceExhausted,
                "topic '" + r.topic_name() + "' has all " + std::to_string(r.max_producers()) +
                    " producer seats taken; close a publisher or create the topic with a "
                    "larger max_producers");
  state_.seat_index = free_seat;
  detail::ProducerSeat& seat = r.producer(free_seat);
  state_.seat = &seat;
  seat.pid.store(static_cast<std::uint32_t>(::getpid()), std::memory_order_relaxed);
  detail::start_session(seat.session);
  for (auto& f : seat.in_flight)
    f.store(detail::kNone, std::memory_order_relaxed);
  seat.published.store(0, std::memory_order_relaxed);
  seat.published_bytes.store(0, std::memory_order_relaxed);
  // Release: pairs with readers of the seat table (the daemon) that load state
  // with acquire; the fields above are set when they see Active.
  seat.state.store(static_cast<std::uint32_t>(detail::SeatState::Active),
                   std::memory_order_release);
  // Relaxed: only this producer writes the tail of a single-producer topic.
  state_.next = r.header().tail.load(std::memory_order_relaxed);
  // seq_cst as J2: the epoch first, then the scan; a join after this load is
  // seen at our first claim.
  state_.epoch = r.control().join_epoch.load(std::memory_order_seq_cst);
  detail::refresh_gate(ring_, state_, state_.next);
}

Publisher::Publisher(Publisher&& o) noexcept {
  *this = std::move(o);
}

Publisher& Publisher::operator=(Publisher&& o) noexcept {
  if (this != &o) {
    detach();
    region_ = std::move(o.region_);
    options_ = o.options_;
    ring_ = o.ring_;
    state_ = o.state_;
    clock_ = o.clock_;
    o.state_.seat = nullptr;
  }
  return *this;
}

Publisher::~Publisher() {
  detach();
}

void Publisher::detach() noexcept {
  if (state_.seat == nullptr || !region_) return;
  try {
    // The same release the daemon performs for a dead producer, only if the
    // seat is still ours; a claim still open (a loan that outlived its
    // publisher) is marked abandoned rather than left to stall consumers.
    region_->free_producer(state_.seat_index, static_cast<std::uint32_t>(::getpid()));
  } catch (...) {
    // The control lock timed out; the daemon frees the seat when we are gone.
  }
  state_.seat = nullptr;
}

Status Publisher::claim_contended(Patience p, detail::Attempt a, std::uint64_t& s) noexcept {
  for (;;) {
    // No room for s: wait for it, then try again. Raced: try the next.
    if (a == detail::Attempt::NoRoom) {
      if (Status st = wait_for_room(s, p); st != Status::Ok) return st;
    }
    a = detail::try_claim(ring_, state_, s);
    if (a == detail::Attempt::Claimed) return Status::Ok;
  }
}

Status Publisher::wait_for_room(std::uint64_t s, Patience p) noexcept {
  if (detail::deleted(ring_)) return Status::TopicDeleted;
  if (!p.wait) return Status::WouldBlock;
  // Reject refuses a full ring at once; a slot still being written by a
  // slower producer (or by our own unpublished loan) is waited for as below.
  if (ring_.policy == Policy::Reject && !detail::has_room(ring_, state_, s))
    return Status::WouldBlock;
  bool gone = false;
  const detail::Waited w = wait_for_space(p.timeout, [&] {
    if (detail::may_write(ring_, state_, s)) return true;
    gone = detail::deleted(ring_);  // the delete wakes this sleeper
    return gone;
  });
  return gone ? Status::TopicDeleted : detail::status_of(w, Status::Ok);
}

Status Publisher::after_join(Patience p, std::uint32_t index, std::uint64_t s,
                             std::uint64_t epoch) noexcept {
  // A group started gating after our cache was computed, and we own s
  // already: rescan. If the new group still needs the message in s's slot
  // (the joiner placed itself at most slot_count behind the tail), a waiting
  // call under Block waits for it as for a full ring, up to its timeout. The
  // interrupt is not honoured here: the claim is made, so no one else could
  // go first, and the wait ends as soon as the group consumes (or its member
  // dies and the daemon frees the seat).
  if (detail::deleted(ring_)) {
    // The delete bumped the epoch (Region::mark_deleted). Keep the old one:
    // every later claim comes here again and fails the same way.
    detail::abandon(ring_, state_, ring_.slot(s), s, index);
    return Status::TopicDeleted;
  }
  state_.epoch = epoch;
  detail::refresh_gate(ring_, state_, s);
  if (s < state_.gate_cache + ring_.count) return Status::Ok;
  const bool waits = p.wait && ring_.policy == Policy::Block;
  if (waits && detail::wait_for(
                   ring_.control->space_event, options_.wait, p.timeout, options_.spin,
                   detail::kNoInterrupt, [&] { return detail::has_room(ring_, state_, s); },
                   detail::kSpaceRecheck) == detail::Waited::Ready)
    return Status::Ok;
  // Give s up instead of writing over a message the group still needs: only
  // the stamp changes, so a copy of it the group holds keeps its payload,
  // and a group that has not taken it yet counts it lost (lapped); the
  // caller learns that nothing was accepted.
  detail::abandon(ring_, state_, ring_.slot(s), s, index);
  return waits ? Status::Timeout : Status::WouldBlock;
}

}  // namespace shmbus
