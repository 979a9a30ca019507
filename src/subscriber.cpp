#include "shmbus/subscriber.hpp"

#include "shmbus/selector.hpp"
#include "watch.hpp"

#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <string_view>

#include "os.hpp"
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

std::string_view trimmed(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
    s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t'))
    s.remove_suffix(1);
  return s;
}

// SubscriberOptions::tags into its tags (none for "*" or empty), or
// InvalidArgument naming what is wrong.
void parse_tags(const std::string& expression, std::vector<std::string>& out) {
  const std::string_view all = trimmed(expression);
  if (all.empty() || all == "*") return;
  std::string_view rest = all;
  for (;;) {
    const auto bar = rest.find("||");
    const std::string_view tag = trimmed(rest.substr(0, bar));
    if (tag.empty() || tag == "*" || tag.find('|') != std::string_view::npos)
      throw Error(ErrorCode::InvalidArgument,
                  "tag filter '" + expression +
                      "' is not TAG || TAG ...: each tag non-empty and without '|' (or '*' "
                      "alone for every message)");
    if (tag.size() > kMaxPropertyBytes)
      throw Error(ErrorCode::InvalidArgument,
                  "tag filter '" + expression + "': a tag longer than a message can carry");
    out.emplace_back(tag);
    if (bar == std::string_view::npos) return;
    rest = rest.substr(bar + 2);
  }
}
}  // namespace

Subscriber::Subscriber(std::shared_ptr<detail::Region> region, const SubscriberOptions& options)
    : region_(std::move(region)), options_(options) {
  detail::Region& r = *region_;
  rings_ = r.partitions();
  lanes_ = r.lanes();
  if (rings_ > 1) rest_ = std::make_unique<detail::ConsumerLane[]>(rings_ - 1);
  const bool is_private = options.group.empty();
  for (std::uint32_t p = 0; p < rings_; ++p) {
    detail::ConsumerLane& l = lane(p);
    l.ring = r.ring(p);
    l.index = p;
    l.state.held.fill(detail::kNone);
    l.state.is_private = is_private;
    l.state.fast_private = is_private && !l.ring.checksummed;
  }
  if (!is_private) validate_name("group", options.group);
  const bool want_acks = options.delivery == Delivery::AtLeastOnce;
  if (want_acks && is_private)
    throw Error(ErrorCode::InvalidArgument,
                "at-least-once delivery needs a named group (its unacknowledged messages go to "
                "the group's other members): give the subscriber a group name");
  if (want_acks && r.topic_name().size() + 4 > detail::kNameMax)
    throw Error(ErrorCode::InvalidArgument,
                "at-least-once delivery needs a dead-letter topic '" + r.topic_name() +
                    ".dlq', longer than a topic name may be (" + std::to_string(detail::kNameMax) +
                    " bytes): use a topic name of at most " + std::to_string(detail::kNameMax - 4) +
                    " bytes");
  if (want_acks && (options.max_deliveries < 1 || options.max_deliveries > detail::kMaxDeliveries))
    throw Error(ErrorCode::InvalidArgument,
                "max_deliveries " + std::to_string(options.max_deliveries) + " is not 1 to " +
                    std::to_string(detail::kMaxDeliveries));
  parse_tags(options.tags, tags_);
  for (const std::string& t : tags_)
    tag_hashes_.push_back(tag_hash(t));
  simple_ = rings_ == 1 && tags_.empty();
  const std::string topic = r.topic_name();
  const bool want_partitioned = !is_private && options.group_mode == GroupMode::Partitioned;

  detail::ControlLock lock(r);
  // Relaxed loads below: groups and seats change only under the control lock.
  // Block 0's tables speak for all (they are kept identical).
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
  if (options.start == StartFrom::Offset)
    for (std::uint32_t p = 0; p < rings_; ++p)
      check_not_future(lane(p).ring, options.offset, "start at offset");
  if (fresh) {
    if (free_group == r.max_groups())
      throw Error(ErrorCode::ResourceExhausted,
                  "topic '" + topic + "' has all " + std::to_string(r.max_groups()) +
                      " consumer groups in use; close subscribers, delete unused groups, or "
                      "create the topic with a larger max_groups");
    g = free_group;
    // Blocks p > 0 first, block 0's state last: whoever finds the group in
    // block 0 finds it in every block.
    for (std::uint32_t p = rings_; p-- > 0;) {
      detail::GroupEntry& e = r.group(g, p);
      std::memset(e.name, 0, sizeof e.name);
      std::memcpy(e.name, options.group.data(), std::min(options.group.size(), detail::kNameMax));
      // Relaxed: a first estimate; the join below corrects it.
      const std::uint64_t tail = r.header(p).tail.load(std::memory_order_relaxed);
      std::uint64_t start = tail;
      if (options.start == StartFrom::Earliest) start = lane(p).ring.oldest(tail);
      if (options.start == StartFrom::Offset) start = options.offset;
      lane(p).ring.raise_jump_mark(start);
      // Release: a producer whose scan reads this cursor (G1, acquire) sees the
      // raised mark even if it reads the entry's old state and members (a
      // reused entry); the release of state below is not enough for that.
      e.cursor.store(start, std::memory_order_release);
      e.lost.store(0, std::memory_order_relaxed);
      e.corrupt.store(0, std::memory_order_relaxed);
      e.filtered.store(0, std::memory_order_relaxed);
      e.members.store(0, std::memory_order_relaxed);
      e.owner.store(0, std::memory_order_relaxed);
      e.target.store(0, std::memory_order_relaxed);
      e.flags.store((is_private ? detail::kGroupPrivate : 0u) |
                        (options.durable || want_acks ? detail::kGroupDurable : 0u) |
                        (want_partitioned ? detail::kGroupPartitioned : 0u) |
                        (want_acks ? detail::kGroupAtLeastOnce : 0u),
                    std::memory_order_relaxed);
      e.max_deliveries = want_acks ? options.max_deliveries : 0;
      e.orphans.store(0, std::memory_order_relaxed);
      e.orphaned.store(0, std::memory_order_relaxed);
      e.redelivered.store(0, std::memory_order_relaxed);
      e.dead_lettered.store(0, std::memory_order_relaxed);
      for (std::uint32_t m = 0; m < r.max_members(); ++m) {
        r.member(g, m, p).state.store(kFree, std::memory_order_relaxed);
        r.member(g, m, p).held.store(detail::kNone, std::memory_order_relaxed);
      }
      // Release: pairs with the acquire of state in Ring::gate; a producer that
      // sees the group active sees its cursor and seats initialised.
      e.state.store(kActive, std::memory_order_release);
    }
  } else if (!is_private) {
    if (r.at_least_once(g) != want_acks) {
      const Delivery d = r.at_least_once(g) ? Delivery::AtLeastOnce : Delivery::AtMostOnce;
      throw Error(
          ErrorCode::InvalidArgument,
          "group '" + options.group + "' of topic '" + topic + "' is " + std::string(to_string(d)) +
              " (chosen when it was created); join it with delivery " + std::string(to_string(d)) +
              " (CLI --delivery, Python delivery=), or use another group");
    }
    const bool partitioned =
        (r.group(g).flags.load(std::memory_order_relaxed) & detail::kGroupPartitioned) != 0;
    if (partitioned != want_partitioned) {
      const GroupMode mode = partitioned ? GroupMode::Partitioned : GroupMode::Shared;
      throw Error(ErrorCode::InvalidArgument,
                  "group '" + options.group + "' of topic '" + topic + "' is " +
                      std::string(to_string(mode)) +
                      " (chosen when it was created); join it with " + "group_mode " +
                      std::string(to_string(mode)) +
                      " (CLI --group-mode, Python mode=), or use another group");
    }
  }
  detail::GroupEntry& e = r.group(g);
  std::uint32_t m = 0;
  while (m < r.max_members() && r.member(g, m).state.load(std::memory_order_relaxed) != kFree)
    ++m;
  // At least once, every seat taken and some of them orphans (members died
  // holding samples, none left to adopt them): take an orphan's seat over,
  // its samples with it (resume_orphan_locked), if they fit one member's table.
  bool resume = false;
  if (m == r.max_members() && want_acks)
    for (std::uint32_t o = 0; o < r.max_members() && !resume; ++o) {
      if (r.member(g, o).state.load(std::memory_order_relaxed) !=
          static_cast<std::uint32_t>(detail::SeatState::Orphan))
        continue;
      std::uint64_t messages = 0;
      for (std::uint32_t i = 0; i < detail::kAckRecords; ++i) {
        // Relaxed: the orphan is dead; under the control lock.
        const detail::AckRecord& rec = r.acks(g, o)[i];
        if (rec.seq1.load(std::memory_order_relaxed) != 0)
          messages += detail::ack_count(rec.info.load(std::memory_order_relaxed));
      }
      if (messages <= detail::kAckRecords) {
        m = o;
        resume = true;
      }
    }
  if (m == r.max_members())
    throw Error(ErrorCode::ResourceExhausted,
                "group '" + options.group + "' of topic '" + topic + "' has all " +
                    std::to_string(r.max_members()) +
                    " member seats taken; create the topic with a larger max_members");
  group_index_ = g;
  member_index_ = m;
  if (want_acks) {
    acks_ = r.acks(g, m);
    // Bounded: the field is in the control segment, which any member may write.
    max_deliveries_ = std::clamp<std::uint32_t>(e.max_deliveries, 1, detail::kMaxDeliveries);
    pending_.reserve(detail::kAckRecords);
    if (!resume) {
      // A free seat's records are clear (its last holder released them, or
      // its adopters did); cleared again all the same (relaxed: ours now,
      // under the control lock).
      for (std::uint32_t i = 0; i < detail::kAckRecords; ++i)
        acks_[i].seq1.store(0, std::memory_order_relaxed);
    }
  }
  const bool was_gating =
      !fresh && (e.members.load(std::memory_order_relaxed) > 0 ||
                 (e.flags.load(std::memory_order_relaxed) & detail::kGroupDurable) != 0);
  for (std::uint32_t p = rings_; p-- > 0;) {
    detail::ConsumerLane& l = lane(p);
    detail::GroupEntry& ep = r.group(g, p);
    detail::MemberSeat& member = r.member(g, m, p);
    l.state.group = &ep;
    l.state.member = &member;
    member.pid.store(static_cast<std::uint32_t>(::getpid()), std::memory_order_relaxed);
    detail::start_session(member.session);
    // Relaxed: published by the state's release below. A resumed orphan's
    // hazard stays until resume_orphan_locked sets it to ours.
    if (!resume) member.held.store(detail::kNone, std::memory_order_relaxed);
    member.received.store(0, std::memory_order_relaxed);
    member.state.store(kActive, std::memory_order_release);  // release: as the group's state
    // Relaxed: ordered before the seq_cst fetch_add below, which producers
    // read (acquire) before they read flags.
    if (options.durable) ep.flags.fetch_or(detail::kGroupDurable, std::memory_order_relaxed);
    // seq_cst: the group gates from here (Ring::gate reads members).
    ep.members.fetch_add(1, std::memory_order_seq_cst);
    if (!was_gating) {
      // What a group that existed skips, or what an explicit offset does, is lost;
      // a fresh group starting at the latest or earliest retained message loses nothing.
      detail::start_gating(l.ring, ep, fresh && options_.start == StartFrom::Latest,
                           !fresh || options_.start == StartFrom::Offset);
    }
    // Relaxed: pos is used only by a private group, whose cursor only this
    // (new, sole) member writes, under the control lock we hold.
    l.state.pos = ep.cursor.load(std::memory_order_relaxed);
  }
  if (resume) resume_orphan_locked();
  partitioned_ =
      !is_private && (e.flags.load(std::memory_order_relaxed) & detail::kGroupPartitioned) != 0;
  if (partitioned_) {
    // A new member owns nothing yet: it takes the partitions the assignment
    // gives it as their owners let go (rebalance, on its first receive).
    for (std::uint32_t p = 0; p < rings_; ++p)
      lane(p).owned = false;
    r.assign_partitions_locked(g);
    unsettled_ = true;
  }
  if (partitioned_) detail::notify(*head_.ring.data_event);  // members asleep look at it
}

void Subscriber::check_not_future(const detail::Ring& r, std::uint64_t sequence,
                                  const char* what) const {
  // Relaxed: the tail only grows; a sequence at or below any value read is fine.
  const std::uint64_t tail = r.header->tail.load(std::memory_order_relaxed);
  if (sequence <= tail) return;
  std::string where;
  if (rings_ > 1)
    for (std::uint32_t p = 0; p < rings_; ++p)
      if (&lane(p).ring == &r)
        where = std::string(lanes_ ? " in priority lane " : " in partition ") + std::to_string(p);
  throw Error(ErrorCode::InvalidArgument,
              std::string("cannot ") + what + " " + std::to_string(sequence) + ": topic '" +
                  region_->topic_name() + "' has published up to " + std::to_string(tail) +
                  " (its tail" + where + "); use at most " + std::to_string(tail) + " (= latest)");
}

void Subscriber::seek(std::uint32_t partition, std::uint64_t offset) {
  if (partition >= rings_)
    throw Error(ErrorCode::InvalidArgument,
                "cannot seek in " + std::string(lanes_ ? "priority lane " : "partition ") +
                    std::to_string(partition) + ": topic '" + region_->topic_name() + "' has " +
                    std::to_string(rings_) + (lanes_ ? " lanes" : " partitions") + " (0 to " +
                    std::to_string(rings_ - 1) + ")");
  detail::ConsumerLane& l = lane(partition);
  check_not_future(l.ring, offset, "seek to");
  detail::seek(l.ring, l.state, offset);
}

std::vector<std::uint32_t> Subscriber::owned_partitions() const {
  std::vector<std::uint32_t> out;
  for (std::uint32_t p = 0; p < rings_; ++p)
    if (lane(p).owned) out.push_back(p);
  return out;
}

Status Subscriber::skip_torn(detail::ConsumerLane& l, std::uint32_t max,
                             detail::Taken& t) noexcept {
  for (;;) {
    // detail::take checked the first message (a run of more is whole).
    if (t.whole) return Status::Ok;
    // Lengths that do not fit are Corrupt, reported by the caller; only a
    // checksum that does not match over lengths that do is a torn write.
    if (!detail::well_formed(l.ring.slot(t.first), l.ring.slot_size)) return Status::Ok;
    // Relaxed: a counter. Released (and, at least once, acknowledged): the
    // message cannot be delivered, and is lost, not redelivered.
    l.state.group->lost.fetch_add(1, std::memory_order_relaxed);
    release(l, t.hold);
    if (const Status st = take_once(l, max, t); st != Status::Ok) return st;
  }
}

// Out of line: keeps take_from small enough to inline into wait loops.
Status Subscriber::take_slow(detail::ConsumerLane& l, Sample& out) noexcept {
  if (acks_ != nullptr && rings_ == 1)
    if (const Status st = redeliver(out); st != Status::WouldBlock) return st;
  detail::Taken t;
  const Status st = take_run(l, 1, t);
  if (st == Status::WouldBlock && acks_ != nullptr && rings_ == 1) check_peers();
  if (st != Status::Ok) return st;
  detail::SlotHeader& slot = l.ring.slot(t.first);
  // Relaxed: the acquire load of its stamp (C1) in take() already made the
  // producer's stores before P1 visible.
  const std::uint32_t len = slot.length.load(std::memory_order_relaxed);
  const std::uint32_t meta = slot.meta.load(std::memory_order_relaxed);
  if (!detail::fits(len, meta, l.ring.slot_size)) [[unlikely]]
    return reject_corrupt(l, t.hold);
  fill(out, l, slot, t.first, len, meta, t.hold);
  return Status::Ok;
}

namespace {
// The lanes of a topic of several rings, in the order a receive looks at
// them: from the highest priority lane down (strict priority), or from the
// partition of the current run, each partition for a run of `burst` takes
// before the next (so no partition starves another, and a run stays on one
// partition's cache lines).
template <class Lane, class Take>
Status scan_lanes(bool lanes, std::uint32_t rings, std::uint32_t& current,
                  std::uint32_t& burst_left, std::uint32_t burst, Lane&& lane, Take&& take) {
  if (lanes) {
    for (std::uint32_t p = rings; p-- > 0;) {
      detail::ConsumerLane& l = lane(p);
      if (!l.owned || l.revoking) continue;
      const Status st = take(l);
      if (st != Status::WouldBlock) return st;
    }
    return Status::WouldBlock;
  }
  for (std::uint32_t i = 0; i <= rings; ++i) {
    detail::ConsumerLane& l = lane(current);
    if (burst_left != 0 && l.owned && !l.revoking) {
      const Status st = take(l);
      if (st != Status::WouldBlock) {
        if (st == Status::Ok) --burst_left;
        return st;
      }
    }
    current = current + 1 == rings ? 0 : current + 1;
    burst_left = burst;
  }
  return Status::WouldBlock;
}
}  // namespace

template <class Take, class Again>
Status Subscriber::take_next(Take&& take, Again&& again) noexcept {
  const auto lane_of = [this](std::uint32_t p) -> detail::ConsumerLane& { return lane(p); };
  if (assignment_changed()) [[unlikely]]
    rebalance(false);
  // At least once: what is to be delivered again first (a partition's new
  // owner gets what the old one left before anything newer of it).
  if (acks_ != nullptr) {
    if (const Status st = again(); st != Status::WouldBlock) return st;
    // A partitioned group keeps a key's order: nothing new of a partition
    // before what a dead owner left of it, so wait for the lock.
    if (partitioned_ && lock_busy_ && adoption_due()) return Status::WouldBlock;
  }
  Status st = scan_lanes(lanes_, rings_, current_, burst_left_, kBurst, lane_of, take);
  if (st == Status::WouldBlock && (partitioned_ || acks_ != nullptr)) {
    if (partitioned_)
      rebalance(true);
    else
      check_peers();
    if (acks_ != nullptr)
      if (const Status again_st = again(); again_st != Status::WouldBlock) return again_st;
    st = scan_lanes(lanes_, rings_, current_, burst_left_, kBurst, lane_of, take);
  }
  return st;
}

Status Subscriber::take_filtered(Sample& out) noexcept {
  for (int i = 0; i < kFilterRun; ++i) {
    const Status st = rings_ == 1 ? take_from(head_, out) : take_any(out);
    if (st != Status::Ok || tags_.empty() || wanted(*out.slot_, out.meta_)) return st;
    detail::ConsumerLane& l = *out.lane_;
    out.release();
    count_filtered(l);
  }
  return Status::WouldBlock;
}

Status Subscriber::take_batch_filtered(Batch& out) noexcept {
  for (int i = 0; i < kFilterRun; ++i) {
    const Status st = rings_ == 1 ? take_batch(head_, out, 1) : take_batch_any(out, 1);
    if (st != Status::Ok) return st;
    detail::SlotHeader& slot = out.lane_->ring.slot(out.first_);
    if (wanted(slot, detail::lengths(slot, out.lane_->ring.slot_size).meta)) return st;
    detail::ConsumerLane& l = *out.lane_;
    out.release();
    count_filtered(l);
  }
  return Status::WouldBlock;
}

// The tag's hash in the header first (one load on the line take() read), then
// the tag itself: a hash that matches by chance does not let a message through.
bool Subscriber::wanted(detail::SlotHeader& slot, std::uint32_t meta) const noexcept {
  // Relaxed: ordered after the stamp's acquire load (C1) in the take.
  const std::uint32_t h = slot.tag_hash.load(std::memory_order_relaxed);
  if (h == 0 || std::find(tag_hashes_.begin(), tag_hashes_.end(), h) == tag_hashes_.end())
    return false;
  const auto tag =
      Properties({detail::payload(slot) + detail::meta_key(meta), detail::meta_properties(meta)})
          .tag();
  return tag && std::find(tags_.begin(), tags_.end(), *tag) != tags_.end();
}

void Subscriber::count_filtered(detail::ConsumerLane& l) noexcept {
  l.state.group->filtered.fetch_add(1, std::memory_order_relaxed);  // relaxed: a counter
}

Status Subscriber::take_any(Sample& out) noexcept {
  return take_next([&](detail::ConsumerLane& l) { return take_from(l, out); },
                   [&] { return redeliver(out); });
}

Status Subscriber::take_batch_any(Batch& out, std::uint32_t max) noexcept {
  return take_next([&](detail::ConsumerLane& l) { return take_batch(l, out, max); },
                   [&] { return redeliver(out); });
}

// Partitioned groups (see GroupEntry::owner): a member takes only from the
// partitions it owns. An assignment (a join, a leave, a death) names each
// partition's next owner (target); the owner lets go once it holds nothing
// taken from it, and the target takes it then, at the group's cursor there.
// Everything goes through the region: no daemon needed.
void Subscriber::rebalance(bool idle) noexcept {
  // Acquire: pairs with the release bump in assign_partitions_locked; the
  // targets it wrote, and the owners it cleared, are visible below.
  const std::uint64_t a = head_.state.group->assignment.load(std::memory_order_acquire);
  const std::uint32_t me = member_index_ + 1;
  bool settled = true;
  for (std::uint32_t p = 0; p < rings_; ++p) {
    detail::ConsumerLane& l = lane(p);
    detail::GroupEntry& e = *l.state.group;
    // Relaxed: after the acquire above.
    const std::uint32_t target = e.target.load(std::memory_order_relaxed);
    if (l.owned) {
      l.revoking = target != me;
      if (!l.revoking) continue;
      if (l.state.held_count == 0)
        let_go(l);
      else
        settled = false;  // let go when its last sample is released (release())
    } else if (target == me) {
      std::uint32_t expected = 0;
      // Acquire: pairs with the previous owner's release in let_go (or the
      // clean-up's clearing): its takes, cursor moves included, happen
      // before ours, so we continue exactly where it stopped.
      if (e.owner.compare_exchange_strong(expected, me, std::memory_order_acquire,
                                          std::memory_order_relaxed) ||
          expected == me) {
        l.owned = true;
        l.revoking = false;
        adopt_again_ = acks_ != nullptr;  // what a dead owner left of it comes first
      } else {
        settled = false;  // its owner still holds samples of it
      }
    }
  }
  assignment_seen_ = a;
  unsettled_ = !settled;
  if (idle) check_peers();
}

// Nothing to take: now and then, look for members that died without the
// daemon seeing it (it may be down), and free their seats: their
// partitions then go to the members left, and (at least once) what they
// held to the group.
std::int64_t Subscriber::monotonic_ns() noexcept {
  timespec ts{};
  (void)::clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

bool Subscriber::peer_check_due() const noexcept {
  return monotonic_ns() - last_peer_check_ns_ >= kGroupCheck.count();
}

void Subscriber::check_peers() noexcept {
  const std::int64_t now = monotonic_ns();
  if (now - last_peer_check_ns_ < kGroupCheck.count()) return;
  last_peer_check_ns_ = now;
  detail::Region& r = *region_;
  for (std::uint32_t m = 0; m < r.max_members(); ++m) {
    const detail::MemberSeat& seat = r.member(group_index_, m);
    // Acquire: pairs with the seat's release store when it was taken, so the
    // pid is the taker's; free_member re-checks under the control lock.
    const std::uint32_t st = seat.state.load(std::memory_order_acquire);
    if (m == member_index_ || st == kFree ||
        st == static_cast<std::uint32_t>(detail::SeatState::Orphan))
      continue;
    const std::uint32_t pid = seat.pid.load(std::memory_order_relaxed);
    if (pid == 0 || detail::process_alive(static_cast<pid_t>(pid))) continue;
    try {
      r.free_member(group_index_, m, pid);
    } catch (...) {
      // The control lock is held by a stuck process: try again next time.
    }
  }
}

void Subscriber::let_go(detail::ConsumerLane& l) noexcept {
  std::uint32_t expected = member_index_ + 1;
  // Release: pairs with the next owner's acquire CAS in rebalance; our takes
  // from the partition (cursor CASes) and released hazards happen before its
  // first take. Fails only if a clean-up already cleared it (we were judged dead).
  (void)l.state.group->owner.compare_exchange_strong(expected, 0, std::memory_order_release,
                                                     std::memory_order_relaxed);
  l.owned = false;
  l.revoking = false;
  detail::notify(*l.ring.data_event);  // the next owner may be asleep waiting for it
}

Subscriber::~Subscriber() {
  while (!selectors_.empty())
    selectors_.back()->forget(*this);  // takes itself off selectors_
  try {
    // The same release the daemon performs for a dead member: only if the seat
    // is still ours (the daemon may have reclaimed it, judging us dead), so it
    // is never freed twice. Wakes producers blocked on the ring, and gives a
    // partitioned group's partitions to the members left.
    region_->free_member(group_index_, member_index_, static_cast<std::uint32_t>(::getpid()));
  } catch (...) {
    // The control lock timed out (a stuck process holds it). Leaving the seat
    // is the lesser harm: the daemon frees seats of dead processes.
  }
}

}  // namespace shmbus
