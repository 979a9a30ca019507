#include "shmbus/subscriber.hpp"

#include <unistd.h>

#include <cstring>

#include "region.hpp"
#include "shmbus/topic.hpp"

namespace shmbus {

namespace detail {

namespace {
// True when the slot of s shows s (or a later occupant) complete.
bool completed(const Ring& r, std::uint64_t s) noexcept {
  // Relaxed: after the caller's acquire load of the tail; nothing is read
  // through it. The caller asks only once it found damage, and a stale value
  // only picks the other remedy.
  return r.slot(s).stamp.load(std::memory_order_relaxed) >= stamp_published(s);
}
}  // namespace

// See ring.hpp ("a position that stays unpublished") for why nothing here can
// mistake a live producer, however slow, for damage.
Stall check_stalled(const Ring& r, ConsumerState& c) noexcept {
  // Acquire (a named group's cursor): pairs with the release of whoever set it
  // (C4, advance, seek, a start), so the tail load below is no older than a
  // tail that setter read or a claim whose stamp it acquired: without damage,
  // the position is at most the tail we read. A private group's position is
  // our own.
  const std::uint64_t at = c.is_private ? c.pos : c.group->cursor.load(std::memory_order_acquire);
  // Acquire: pairs with the claims (J1: the tail's seq_cst stores and CASes,
  // one release sequence), so each claim below it, and the P0 load its
  // producer made first, happen before the stamp loads below.
  const std::uint64_t tail = r.header->tail.load(std::memory_order_acquire);
  // Acquire: as C1; after the tail's load (see above).
  const std::uint64_t st = r.slot(at).stamp.load(std::memory_order_acquire);
  if (st >= stamp_published(at) || at == tail) return Stall::Waiting;  // take() decides
  const auto report = [&] {
    if (c.damage_reported) return Stall::Waiting;
    c.damage_reported = true;
    return Stall::Damaged;
  };
  if (at > tail) {
    // Past every claim. If the message before the position is complete, the
    // position is sound and the tail was damaged (producers will reuse
    // sequences): say so once. Otherwise the cursor was: resume at the oldest
    // message the ring retains, as a lapped reader does, re-delivering rather
    // than losing what the group may not have taken.
    if (completed(r, at - 1)) return report();
    const std::uint64_t to = r.oldest(tail);
    r.raise_jump_mark(to);  // a move other than by taking (TopicHeader::jump_mark)
    if (!advance(r, c, at, to)) return Stall::Waiting;         // another member moved it
    c.group->corrupt.fetch_add(1, std::memory_order_relaxed);  // relaxed: a counter
    return Stall::Skipped;
  }
  if (tail - at <= r.count && claim_pending(st, at, r.count)) return Stall::Waiting;
  // The stamp contradicts the claim of `at` or of at + count. Either it was
  // damaged, or the tail was: a real tail's last claim shows at least its
  // floor, so a tail that fails this was written by something else.
  if (tail > r.count &&
      r.slot(tail - 1).stamp.load(std::memory_order_relaxed) < claim_floor(tail - 1, r.count))
    return report();  // relaxed: after the tail's acquire, as in completed()
  if (!advance(r, c, at, at + 1)) return Stall::Waiting;
  c.group->corrupt.fetch_add(1, std::memory_order_relaxed);  // relaxed: a counter
  return Stall::Skipped;
}

}  // namespace detail

namespace {
constexpr auto kActive = static_cast<std::uint32_t>(detail::SeatState::Active);
constexpr auto kFree = static_cast<std::uint32_t>(detail::SeatState::Free);
}  // namespace

Subscriber::Subscriber(std::shared_ptr<detail::Region> region, const SubscriberOptions& options)
    : region_(std::move(region)), options_(options) {
  state_.held.fill(detail::kNone);
  detail::Region& r = *region_;
  ring_ = r.ring();
  const bool is_private = options.group.empty();
  state_.is_private = is_private;
  if (!is_private) validate_name("group", options.group);
  const std::string topic = r.topic_name();

  detail::ControlLock lock(r);
  // Relaxed loads below: groups and seats change only under the control lock.
  std::uint32_t g = r.max_groups();
  std::uint32_t free_group = r.max_groups();
  for (std::uint32_t i = 0; i < r.max_groups(); ++i) {
    detail::GroupEntry& e = r.group(i);
    const auto st = e.state.load(std::memory_order_relaxed);
    if (st == kFree) {
      if (free_group == r.max_groups()) free_group = i;
      continue;
    }
    if (!is_private && (e.flags.load(std::memory_order_relaxed) & detail::kGroupPrivate) == 0 &&
        std::strncmp(e.name, options.group.c_str(), detail::kNameMax) == 0) {
      g = i;
      break;
    }
  }
  const bool fresh = g == r.max_groups();
  if (options.start == StartFrom::Offset) check_not_future(options.offset, "start at offset");
  if (fresh) {
    if (free_group == r.max_groups())
      throw Error(ErrorCode::ResourceExhausted,
                  "topic '" + topic + "' has all " + std::to_string(r.max_groups()) +
                      " consumer groups in use; close subscribers, delete unused groups, or "
                      "create the topic with a larger max_groups");
    g = free_group;
    detail::GroupEntry& e = r.group(g);
    std::memset(e.name, 0, sizeof e.name);
    std::memcpy(e.name, options.group.data(), std::min(options.group.size(), detail::kNameMax));
    // Relaxed: a first estimate; the join below corrects it.
    const std::uint64_t tail = r.header().tail.load(std::memory_order_relaxed);
    std::uint64_t start = tail;
    if (options.start == StartFrom::Earliest) start = ring_.oldest(tail);
    if (options.start == StartFrom::Offset) start = options.offset;
    ring_.raise_jump_mark(start);
    // Release: a producer whose scan reads this cursor (G1, acquire) sees the
    // raised mark even if it reads the entry's old state and members (a
    // reused entry); the release of state below is not enough for that.
    e.cursor.store(start, std::memory_order_release);
    e.lost.store(0, std::memory_order_relaxed);
    e.corrupt.store(0, std::memory_order_relaxed);
    e.members.store(0, std::memory_order_relaxed);
    e.flags.store(
        (is_private ? detail::kGroupPrivate : 0u) | (options.durable ? detail::kGroupDurable : 0u),
        std::memory_order_relaxed);
    for (std::uint32_t m = 0; m < r.max_members(); ++m) {
      r.member(g, m).state.store(kFree, std::memory_order_relaxed);
      r.member(g, m).held.store(detail::kNone, std::memory_order_relaxed);
    }
    // Release: pairs with the acquire of state in Ring::gate; a producer that
    // sees the group active sees its cursor and seats initialised.
    e.state.store(kActive, std::memory_order_release);
  }
  detail::GroupEntry& e = r.group(g);
  std::uint32_t m = 0;
  while (m < r.max_members() && r.member(g, m).state.load(std::memory_order_relaxed) != kFree)
    ++m;
  if (m == r.max_members())
    throw Error(ErrorCode::ResourceExhausted,
                "group '" + options.group + "' of topic '" + topic + "' has all " +
                    std::to_string(r.max_members()) +
                    " member seats taken; create the topic with a larger max_members");
  group_index_ = g;
  member_index_ = m;
  state_.group = &e;
  detail::MemberSeat& member = r.member(g, m);
  state_.member = &member;
  member.pid.store(static_cast<std::uint32_t>(::getpid()), std::memory_order_relaxed);
  detail::start_session(member.session);
  member.held.store(detail::kNone, std::memory_order_relaxed);
  member.received.store(0, std::memory_order_relaxed);
  member.state.store(kActive, std::memory_order_release);  // release: as the group's state
  const bool was_gating =
      !fresh && (e.members.load(std::memory_order_relaxed) > 0 ||
                 (e.flags.load(std::memory_order_relaxed) & detail::kGroupDurable) != 0);
  // Relaxed: ordered before the seq_cst fetch_add below, which producers
  // read (acquire) before they read flags.
  if (options.durable) e.flags.fetch_or(detail::kGroupDurable, std::memory_order_relaxed);
  // seq_cst: the group gates from here (Ring::gate reads members).
  e.members.fetch_add(1, std::memory_order_seq_cst);
  if (!was_gating) {
    // What a group that existed skips, or what an explicit offset does, is lost;
    // a fresh group starting at the latest or earliest retained message loses nothing.
    detail::start_gating(ring_, e, fresh && options_.start == StartFrom::Latest,
                         !fresh || options_.start == StartFrom::Offset);
  }
  // Relaxed: pos is used only by a private group, whose cursor only this
  // (new, sole) member writes, under the control lock we hold.
  state_.pos = e.cursor.load(std::memory_order_relaxed);
}

void Subscriber::check_not_future(std::uint64_t sequence, const char* what) const {
  // Relaxed: the tail only grows; a sequence at or below any value read is fine.
  const std::uint64_t tail = ring_.header->tail.load(std::memory_order_relaxed);
  if (sequence <= tail) return;
  throw Error(ErrorCode::InvalidArgument,
              std::string("cannot ") + what + " " + std::to_string(sequence) + ": topic '" +
                  region_->topic_name() + "' has published up to " + std::to_string(tail) +
                  " (its tail); use at most " + std::to_string(tail) + " (= latest)");
}

// Out of line: keeps try_receive small enough to inline into wait loops.
Status Subscriber::try_receive_slow(Sample& out) noexcept {
  detail::Taken t;
  const Status st = detail::take(ring_, state_, 1, t);
  if (st != Status::Ok) return st;
  detail::SlotHeader& slot = ring_.slot(t.first);
  // Relaxed: the acquire load of its stamp (C1) in take() already made the
  // producer's stores before P1 visible.
  const std::uint32_t len = slot.length.load(std::memory_order_relaxed);
  if (len > ring_.slot_size) [[unlikely]]
    return reject_corrupt(t.hold);
  fill(out, slot, t.first, len, t.hold);
  return Status::Ok;
}

Subscriber::~Subscriber() {
  try {
    // The same release the daemon performs for a dead member: only if the seat
    // is still ours (the daemon may have reclaimed it, judging us dead), so it
    // is never freed twice. Wakes producers blocked on the ring.
    region_->free_member(group_index_, member_index_, static_cast<std::uint32_t>(::getpid()));
  } catch (...) {
    // The control lock timed out (a stuck process holds it). Leaving the seat
    // is the lesser harm: the daemon frees seats of dead processes.
  }
}

}  // namespace shmbus
