// At-least-once groups (docs/acknowledgements.md): the ack records a member
// writes for what it takes, their adoption from members that died holding
// samples, redelivery, nack and the dead-letter topic. Everything here is off
// the common path: a take writes its record inline (ring.hpp's take), a
// release clears it inline (Subscriber::acknowledge); the rest runs only
// after a death, a nack or a dead letter.
#include <algorithm>
#include <bit>
#include <string>
#include <vector>

#include "region.hpp"
#include "shmbus/bus.hpp"
#include "shmbus/publisher.hpp"
#include "shmbus/subscriber.hpp"
#include "shmbus/topic.hpp"

namespace shmbus {

namespace {
constexpr auto kOrphan = static_cast<std::uint32_t>(detail::SeatState::Orphan);
constexpr auto kFreeSeat = static_cast<std::uint32_t>(detail::SeatState::Free);
constexpr std::uint64_t kAllRecords = ~std::uint64_t{0};
}  // namespace

Status Subscriber::take_recorded(detail::ConsumerLane& l, std::uint32_t max,
                                 detail::Taken& t) noexcept {
  if (acks_used_ == kAllRecords) return Status::TooManyHeld;
  const auto r = static_cast<std::uint32_t>(std::countr_one(acks_used_));
  l.state.record = &acks_[r];
  l.state.record_partition = l.index;
  const Status st = detail::take(l.ring, l.state, max, t);
  l.state.record = nullptr;
  if (st == Status::Ok) {
    acks_used_ |= std::uint64_t{1} << r;
    l.state.record_of[t.hold] = static_cast<std::uint8_t>(r);
  }
  return st;
}

// Samples waiting to be delivered again, or orphans to adopt first.
Status Subscriber::redeliver(Sample& out) noexcept {
  // Relaxed: a hint; adopt() reads the records under the control lock.
  if (adopt_again_ || head_.state.group->orphaned.load(std::memory_order_relaxed) != orphaned_seen_)
      [[unlikely]]
    adopt();
  while (!pending_.empty()) {
    const Pending p = pending_.front();
    pending_.erase(pending_.begin());
    detail::ConsumerLane& l = lane(p.lane);
    detail::SlotHeader& slot = l.ring.slot(p.seq);
    if (p.deliveries > max_deliveries_) {
      // Delivered max_deliveries times already (its members died with it).
      if (dead_letter(l, p.seq, p.deliveries - 1, "max_deliveries") != Status::Ok) {
        pending_.push_back(p);  // try again later; it stays held
        return Status::WouldBlock;
      }
      release(l, p.hold);
      continue;
    }
    // Acquire: as C1 (take). Under overwrite the slot may have moved on
    // since it was adopted: then the message is lost to the group.
    if (!detail::holds(slot.stamp.load(std::memory_order_acquire), p.seq, l.ring.count)) {
      l.state.group->lost.fetch_add(1, std::memory_order_relaxed);  // relaxed: a counter
      release(l, p.hold);
      continue;
    }
    // Relaxed: after the acquire above.
    const std::uint32_t len = slot.length.load(std::memory_order_relaxed);
    const std::uint32_t meta = slot.meta.load(std::memory_order_relaxed);
    if (!detail::fits(len, meta, l.ring.slot_size)) {
      (void)reject_corrupt(l, p.hold);
      continue;
    }
    // The record counts this delivery before the application sees it.
    // Relaxed: read by an adopter only after we died, under the control lock.
    acks_[l.state.record_of[p.hold]].info.store(detail::ack_info(l.index, 1, p.deliveries),
                                                std::memory_order_relaxed);
    fill(out, l, slot, p.seq, len, meta, p.hold);
    out.deliveries_ = p.deliveries;
    // Relaxed: a counter, block 0's.
    head_.state.group->redelivered.fetch_add(1, std::memory_order_relaxed);
    return Status::Ok;
  }
  return Status::WouldBlock;
}

Status Subscriber::redeliver(Batch& out) noexcept {
  Sample s;
  const Status st = redeliver(s);
  if (st != Status::Ok) return st;
  // The sample's hold becomes the batch's (a batch of one).
  out.release();
  out.sub_ = this;
  out.lane_ = s.lane_;
  out.first_ = s.seq_;
  out.count_ = 1;
  out.hold_ = s.hold_;
  out.deliveries_ = s.deliveries_;
  s.slot_ = nullptr;  // handed over, not released
  s.sub_ = nullptr;
  return Status::Ok;
}

void Subscriber::adopt() noexcept {
  detail::GroupEntry& g0 = *head_.state.group;
  adopt_again_ = false;
  // Acquire: pairs with the release bump in free_member, so the orphan
  // count below includes that orphan. (Relaxed: orphans; see there.)
  const std::uint64_t seen = g0.orphaned.load(std::memory_order_acquire);
  if (g0.orphans.load(std::memory_order_relaxed) == 0) {
    orphaned_seen_ = seen;
    return;
  }
  try {
    detail::ControlLock lock(*region_);
    adopt_locked();
  } catch (...) {
    adopt_again_ = true;  // the lock is held by a stuck process: next time
    return;
  }
  orphaned_seen_ = seen;
}

// Moves the orphans' records into this member's, message by message (a
// record of a batch is split), oldest record first per orphan. For each
// partition touched: our hazard is published (release) before the orphan's
// is raised, which is what Ring::gate's second pass relies on; our records
// are written before the orphan's are cleared, so a death in between
// delivers twice, never loses.
void Subscriber::adopt_locked() noexcept {
  detail::Region& r = *region_;
  detail::GroupEntry& g0 = *head_.state.group;
  for (std::uint32_t m = 0; m < r.max_members(); ++m) {
    // Relaxed: seats change only under the control lock, which we hold.
    if (m == member_index_ ||
        r.member(group_index_, m).state.load(std::memory_order_relaxed) != kOrphan)
      continue;
    detail::AckRecord* recs = r.acks(group_index_, m);
    // Oldest first: the order the orphan took them in (per partition).
    std::vector<std::uint32_t> order;
    for (std::uint32_t i = 0; i < detail::kAckRecords; ++i)
      if (recs[i].seq1.load(std::memory_order_relaxed) != 0) order.push_back(i);
    std::sort(order.begin(), order.end(), [&](std::uint32_t a, std::uint32_t b) {
      return recs[a].seq1.load(std::memory_order_relaxed) <
             recs[b].seq1.load(std::memory_order_relaxed);
    });
    for (const std::uint32_t i : order) {
      detail::AckRecord& rec = recs[i];
      // Relaxed (the record's fields): the orphan is dead; its stores are
      // all visible, and the control lock orders earlier adopters' too.
      const std::uint64_t seq1 = rec.seq1.load(std::memory_order_relaxed);
      const std::uint64_t info = rec.info.load(std::memory_order_relaxed);
      const std::uint32_t p = detail::ack_partition(info);
      const std::uint32_t n = detail::ack_count(info);
      const std::uint32_t d = detail::ack_deliveries(info);
      if (seq1 == 0) continue;
      if (p >= rings_ || n == 0 || n > lane(p).ring.count) {
        // Not a record a member wrote: drop it, counted.
        rec.seq1.store(0, std::memory_order_relaxed);
        g0.corrupt.fetch_add(1, std::memory_order_relaxed);  // relaxed: a counter
        continue;
      }
      detail::ConsumerLane& l = lane(p);
      if (partitioned_ && !l.owned) continue;  // its partition's owner adopts it
      std::uint32_t taken = 0;
      while (taken < n) {
        if (acks_used_ == kAllRecords || l.state.held_count == kMaxHeld) {
          adopt_again_ = true;  // the rest once this member released some
          break;
        }
        const std::uint64_t s = seq1 - 1 + taken;
        ++taken;
        // Acquire: as C1. A message no longer in its slot (overwrite) is lost.
        if (!detail::holds(l.ring.slot(s).stamp.load(std::memory_order_acquire), s, l.ring.count)) {
          l.state.group->lost.fetch_add(1, std::memory_order_relaxed);  // relaxed: a counter
          continue;
        }
        const std::uint32_t h = detail::hold(l.state, s);
        const auto ri = static_cast<std::uint32_t>(std::countr_one(acks_used_));
        acks_used_ |= std::uint64_t{1} << ri;
        // Relaxed: as take's record stores; published by the hazard's release below.
        acks_[ri].info.store(detail::ack_info(p, 1, d), std::memory_order_relaxed);
        acks_[ri].seq1.store(s + 1, std::memory_order_relaxed);
        l.state.record_of[h] = static_cast<std::uint8_t>(ri);
        pending_.push_back({s, p, h, d + 1});
      }
      // Our hazard first (release, C3), then the orphan's record.
      detail::publish_hazard(l.ring, l.state);
      if (taken == n) {
        rec.seq1.store(0, std::memory_order_relaxed);
      } else {
        rec.info.store(detail::ack_info(p, n - taken, d), std::memory_order_relaxed);
        rec.seq1.store(seq1 + taken, std::memory_order_relaxed);
      }
      if (adopt_again_) break;
    }
    // The orphan's hazards: the oldest of what is left in each partition.
    bool left = false;
    for (std::uint32_t p = 0; p < rings_; ++p) {
      std::uint64_t oldest = detail::kNone;
      for (std::uint32_t i = 0; i < detail::kAckRecords; ++i) {
        const std::uint64_t s1 = recs[i].seq1.load(std::memory_order_relaxed);
        if (s1 == 0) continue;
        left = true;
        if (detail::ack_partition(recs[i].info.load(std::memory_order_relaxed)) == p)
          oldest = std::min(oldest, s1 - 1);
      }
      // Release: pairs with G2, after our own hazard's release above.
      r.member(group_index_, m, p).held.store(oldest, std::memory_order_release);
    }
    if (!left) {
      // Nothing left: the seat is free (its hazards are clear above).
      for (std::uint32_t p = rings_; p-- > 0;)
        // Release: pairs with the acquire of a later attach.
        r.member(group_index_, m, p).state.store(kFreeSeat, std::memory_order_release);
      g0.orphans.fetch_sub(1, std::memory_order_relaxed);  // relaxed: under the lock
    }
    if (adopt_again_) break;
  }
}

Status Sample::nack() {
  if (slot_ == nullptr || sub_ == nullptr) return Status::Invalid;
  return sub_->nack(*this);
}

Status Subscriber::nack(Sample& s) {
  if (acks_ == nullptr) return Status::Invalid;
  detail::ConsumerLane& l = *s.lane_;
  if (s.deliveries_ >= max_deliveries_) {
    if (const Status st = dead_letter(l, s.seq_, s.deliveries_, "nacked"); st != Status::Ok)
      return st;
    s.release();
    return Status::Ok;
  }
  // Next to be delivered, still held (its record and hazard stay).
  pending_.insert(pending_.begin(), Pending{s.seq_, l.index, s.hold_, s.deliveries_ + 1});
  s.slot_ = nullptr;
  s.sub_ = nullptr;
  return Status::Ok;
}

Status Subscriber::dead_letter(detail::ConsumerLane& l, std::uint64_t seq, std::uint32_t deliveries,
                               std::string_view reason) noexcept {
  detail::Region& r = *region_;
  const std::string topic = r.topic_name();
  try {
    if (!dead_letters_) {
      const std::string name = topic + ".dlq";
      TopicOptions o = detail::options_of(r);
      o.partitions = 1;
      o.priorities = 0;
      o.delay_slots = 0;
      if (bus_) {
        Bus bus(bus_);
        dead_letters_ = std::make_unique<Publisher>(
            bus.create_topic(name, o, /*if_not_exists=*/true).publisher());
      } else {
        // A topic without a daemon: its dead letters beside it, on its bus.
        const std::string& shm = r.shm_name();
        const std::string prefix = "shmbus.";
        std::string bus_name = "default";
        if (shm.size() > prefix.size() + topic.size() + 1)
          bus_name = shm.substr(prefix.size(), shm.size() - prefix.size() - topic.size() - 1);
        Topic t = [&] {
          try {
            return Topic::create(name, o, bus_name);
          } catch (const Error& e) {
            if (e.code() != ErrorCode::AlreadyExists) throw;
            return Topic::open(name, bus_name);
          }
        }();
        dead_letters_ = std::make_unique<Publisher>(t.publisher());
      }
    }
    detail::SlotHeader& slot = l.ring.slot(seq);
    const detail::Lengths n = detail::lengths(slot, l.ring.slot_size);
    const Properties own(
        {detail::payload(slot) + detail::meta_key(n.meta), detail::meta_properties(n.meta)});
    std::vector<Property> props;
    for (const Property& p : own)
      if (p.name.substr(0, 4) != "dlq.") props.push_back(p);
    const std::string offset = std::to_string(seq), part = std::to_string(l.index),
                      count = std::to_string(deliveries);
    props.push_back({"dlq.topic", topic});
    props.push_back({"dlq.offset", offset});
    props.push_back({"dlq.partition", part});
    props.push_back({"dlq.reason", reason});
    props.push_back({"dlq.deliveries", count});
    Route route;
    route.key = {detail::payload(slot), detail::meta_key(n.meta)};
    route.properties = props;
    const Status st = dead_letters_->publish(route, {detail::payload(slot, n.meta), n.size},
                                             std::chrono::seconds(1));
    if (st != Status::Ok) return st;
  } catch (const Error&) {
    return Status::NoDeadLetter;
  }
  ++dead_lettered_;
  // Relaxed: a counter, block 0's.
  head_.state.group->dead_lettered.fetch_add(1, std::memory_order_relaxed);
  return Status::Ok;
}

}  // namespace shmbus
