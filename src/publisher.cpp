#include "shmbus/publisher.hpp"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>

#include "region.hpp"
#include "shmbus/partition.hpp"

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
  rings_ = r.partitions();
  lanes_ = r.lanes();
  if (rings_ > 1) rest_ = std::make_unique<detail::ProducerLane[]>(rings_ - 1);
  const bool gated = r.policy() != Policy::Overwrite;
  // Relaxed: written before this process got the region (see the field).
  const bool proves = gated && r.header().shared_control.load(std::memory_order_relaxed) == 0;
  for (std::uint32_t p = 0; p < rings_; ++p) {
    detail::ProducerLane& l = lane(p);
    l.ring = r.ring(p);
    l.state.single_producer = r.single_producer();
    l.state.gated = gated;
    l.state.gate_proves = proves;
  }
  detail::ControlLock lock(r);
  std::uint32_t free_seat = r.max_producers();
  for (std::uint32_t i = 0; i < r.max_producers(); ++i) {
    // Relaxed: seats change only under the control lock, which we hold.
    // Block 0's table speaks for all: seats are taken and freed together.
    const auto st = r.producer(i).state.load(std::memory_order_relaxed);
    if (st == static_cast<std::uint32_t>(detail::SeatState::Free)) {
      if (free_seat == r.max_producers()) free_seat = i;
    } else if (r.single_producer()) {
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
  // Blocks p > 0 first, block 0's state last: an observer that sees block 0's
  // seat taken sees the others taken too (free_producer frees in the reverse order).
  for (std::uint32_t p = rings_; p-- > 0;) {
    detail::ProducerLane& l = lane(p);
    l.state.seat_index = free_seat;
    detail::ProducerSeat& seat = r.producer(free_seat, p);
    l.state.seat = &seat;
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
    l.state.next = r.header(p).tail.load(std::memory_order_relaxed);
    // seq_cst as J2: the epoch first, then the scan; a join after this load is
    // seen at our first claim.
    l.state.epoch = r.control(p).join_epoch.load(std::memory_order_seq_cst);
    detail::refresh_gate(l.ring, l.state, l.state.next);
  }
  // Publishers of one topic start their sticky runs on different partitions.
  sticky_ = free_seat % rings_;
  sticky_left_ = kStickyRun;
}

detail::ProducerLane& Publisher::sticky() noexcept {
  if (sticky_left_ == 0) {
    sticky_ = sticky_ + 1 == rings_ ? 0 : sticky_ + 1;
    sticky_left_ = kStickyRun;
  }
  --sticky_left_;
  return lane(sticky_);
}

namespace detail {

Status route_meta(const Route& route, std::uint32_t& meta, std::uint32_t& tag) noexcept {
  if (route.key.size() > kMaxKey) return Status::TooLarge;
  std::uint32_t props = 0;
  if (const Status st = encoded_size(route.properties, props); st != Status::Ok) return st;
  meta = meta_of(static_cast<std::uint32_t>(route.key.size()), props);
  tag = 0;
  for (const Property& p : route.properties)
    if (p.name == "tag") {
      tag = tag_hash(p.value);
      break;  // the first "tag", as Properties::get finds it
    }
  return Status::Ok;
}

void write_meta(std::byte* at, const Route& route) noexcept {
  if (!route.key.empty()) std::memcpy(at, route.key.data(), route.key.size());
  encode(route.properties, at + route.key.size());
}

}  // namespace detail

Status Publisher::resolve(const Route& route, detail::ProducerLane*& out) noexcept {
  if (lanes_) {
    // A priority topic: the priority picks the lane; a partition, if given,
    // must be 0 (it has one partition).
    if (route.partition != Route::kNone && route.partition != 0) return Status::NoSuchPartition;
    const std::uint32_t pr = route.priority == Route::kNone ? 0 : route.priority;
    if (pr >= rings_) return Status::NoSuchPartition;
    out = &lane(pr);
    return Status::Ok;
  }
  if (route.priority != Route::kNone && route.priority != 0) return Status::NoSuchPartition;
  if (route.partition != Route::kNone) {
    if (route.partition >= rings_) return Status::NoSuchPartition;
    out = &lane(route.partition);
  } else if (!route.key.empty() && rings_ > 1) {
    out = &lane((murmur2(route.key) & 0x7fffffffu) % rings_);
  } else {
    out = &unrouted();
  }
  return Status::Ok;
}

Publisher::Publisher(Publisher&& o) noexcept {
  *this = std::move(o);
}

Publisher& Publisher::operator=(Publisher&& o) noexcept {
  if (this != &o) {
    detach();
    region_ = std::move(o.region_);
    options_ = o.options_;
    head_ = o.head_;
    rest_ = std::move(o.rest_);
    rings_ = o.rings_;
    lanes_ = o.lanes_;
    sticky_ = o.sticky_;
    sticky_left_ = o.sticky_left_;
    clock_ = o.clock_;
    o.head_.state.seat = nullptr;
  }
  return *this;
}

Publisher::~Publisher() {
  detach();
}

void Publisher::flush() {
  if (!region_) throw Error(ErrorCode::InvalidArgument, "flush on an empty (moved-from) publisher");
  detail::flush_region(*region_, region_->topic_name());
}

void Publisher::detach() noexcept {
  if (head_.state.seat == nullptr || !region_) return;
  try {
    // The same release the daemon performs for a dead producer, only if the
    // seat is still ours; a claim still open (a loan that outlived its
    // publisher) is marked abandoned rather than left to stall consumers.
    region_->free_producer(head_.state.seat_index, static_cast<std::uint32_t>(::getpid()));
  } catch (...) {
    // The control lock timed out; the daemon frees the seat when we are gone.
  }
  head_.state.seat = nullptr;
}

Status Publisher::claim_contended(detail::ProducerLane& l, Patience p, detail::Attempt a,
                                  std::uint64_t& s) noexcept {
  for (;;) {
    // No room for s: wait for it, then try again. Raced: try the next.
    if (a == detail::Attempt::NoRoom) {
      if (Status st = wait_for_room(l, s, p); st != Status::Ok) return st;
    }
    a = detail::try_claim(l.ring, l.state, s);
    if (a == detail::Attempt::Claimed) return Status::Ok;
  }
}

Status Publisher::wait_for_room(detail::ProducerLane& l, std::uint64_t s, Patience p) noexcept {
  const detail::Ring& ring = l.ring;
  detail::ProducerState& state = l.state;
  if (detail::deleted(ring)) return Status::TopicDeleted;
  if (!p.wait) return Status::WouldBlock;
  // Reject refuses a full ring at once; a slot still being written by a
  // slower producer (or by our own unpublished loan) is waited for as below.
  if (ring.policy == Policy::Reject && !detail::has_room(ring, state, s)) return Status::WouldBlock;
  bool gone = false;
  const detail::Waited w = wait_for_space(l, p.timeout, [&] {
    if (detail::may_write(ring, state, s)) return true;
    gone = detail::deleted(ring);  // the delete wakes this sleeper
    return gone;
  });
  return gone ? Status::TopicDeleted : detail::status_of(w, Status::Ok);
}

Status Publisher::after_join(detail::ProducerLane& l, Patience p, std::uint32_t index,
                             std::uint64_t s, std::uint64_t epoch) noexcept {
  const detail::Ring& ring = l.ring;
  detail::ProducerState& state = l.state;
  // A group started gating after our cache was computed, and we own s
  // already: rescan. If the new group still needs the message in s's slot
  // (the joiner placed itself at most slot_count behind the tail), a waiting
  // call under Block waits for it as for a full ring, up to its timeout. The
  // interrupt is not honoured here: the claim is made, so no one else could
  // go first, and the wait ends as soon as the group consumes (or its member
  // dies and the daemon frees the seat).
  if (detail::deleted(ring)) {
    // The delete bumped the epoch (Region::mark_deleted). Keep the old one:
    // every later claim comes here again and fails the same way.
    detail::abandon(ring, state, ring.slot(s), s, index);
    return Status::TopicDeleted;
  }
  state.epoch = epoch;
  detail::refresh_gate(ring, state, s);
  if (s < state.gate_cache + ring.count) return Status::Ok;
  const bool waits = p.wait && ring.policy == Policy::Block;
  if (waits && detail::wait_for(
                   ring.control->space_event, options_.wait, p.timeout, options_.spin,
                   detail::kNoInterrupt, [&] { return detail::has_room(ring, state, s); },
                   detail::kSpaceRecheck) == detail::Waited::Ready)
    return Status::Ok;
  // Give s up instead of writing over a message the group still needs: only
  // the stamp changes, so a copy of it the group holds keeps its payload,
  // and a group that has not taken it yet counts it lost (lapped); the
  // caller learns that nothing was accepted.
  detail::abandon(ring, state, ring.slot(s), s, index);
  return waits ? Status::Timeout : Status::WouldBlock;
}

}  // namespace shmbus
