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

// A dead member's ack record, read once: the segment is writable by any
// member, so nothing that decides (the sort least of all) reads a field twice.
struct RecordCopy {
  std::uint64_t seq1, info;
  std::uint32_t index;  // where it is in the table
};
// The records in use of a dead member's table, oldest first: the order it
// took them in (per partition). Relaxed loads: the member is dead, its
// stores are all visible, and the control lock (the caller's) orders
// earlier adopters' too.
std::vector<RecordCopy> sorted_records(const detail::AckRecord* recs) {
  std::vector<RecordCopy> out;
  for (std::uint32_t i = 0; i < detail::kAckRecords; ++i)
    if (const std::uint64_t s1 = recs[i].seq1.load(std::memory_order_relaxed); s1 != 0)
      out.push_back({s1, recs[i].info.load(std::memory_order_relaxed), i});
  std::sort(out.begin(), out.end(),
            [](const RecordCopy& a, const RecordCopy& b) { return a.seq1 < b.seq1; });
  return out;
}
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

bool Subscriber::adoption_due() const noexcept {
  // Relaxed: a hint; adopt() reads the records under the control lock.
  return (adopt_again_ && acks_used_ != kAllRecords) ||
         head_.state.group->orphaned.load(std::memory_order_relaxed) != orphaned_seen_;
}

// Samples waiting to be delivered again, or orphans to adopt first.
Status Subscriber::redeliver(Sample& out) noexcept {
  if (adoption_due()) [[unlikely]]
    adopt();
  if (!stuck_.empty()) [[unlikely]]
    retry_stuck();
  while (!pending_.empty()) {
    const Pending p = pending_.front();
    pending_.erase(pending_.begin());
    detail::ConsumerLane& l = lane(p.lane);
    detail::SlotHeader& slot = l.ring.slot(p.seq);
    // Acquire: as C1 (take). Under overwrite the slot may have moved on
    // since it was adopted: then the message is lost to the group.
    if (!detail::holds(slot.stamp.load(std::memory_order_acquire), p.seq, l.ring.count)) {
      l.state.group->lost.fetch_add(1, std::memory_order_relaxed);  // relaxed: a counter
      release(l, p.hold);
      continue;
    }
    // Relaxed: after the acquire above. Checked before a dead letter too:
    // a torn message must not become a whole one in the .dlq.
    const std::uint32_t len = slot.length.load(std::memory_order_relaxed);
    const std::uint32_t meta = slot.meta.load(std::memory_order_relaxed);
    if (!detail::fits(len, meta, l.ring.slot_size)) {
      (void)reject_corrupt(l, p.hold);
      continue;
    }
    if (!detail::intact(l.ring, slot, p.seq)) {
      // A file topic's message torn by a power cut: lost, as in take_run.
      l.state.group->lost.fetch_add(1, std::memory_order_relaxed);  // relaxed: a counter
      release(l, p.hold);
      continue;
    }
    if (p.deliveries > max_deliveries_) {
      // Delivered max_deliveries times already (its members died with it).
      if (dead_letter(l, p.seq, p.deliveries - 1, "max_deliveries") != Status::Ok) {
        // It stays held (nothing is dropped) and is tried again every second,
        // without making every receive wait for it.
        stuck_.push_back(p);
        stuck_retry_ns_ = monotonic_ns() + kStuckRetry.count();
        continue;
      }
      release(l, p.hold);
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

void Subscriber::retry_stuck() noexcept {
  if (monotonic_ns() < stuck_retry_ns_) return;
  std::vector<Pending> again;
  again.swap(stuck_);
  for (const Pending& p : again) {
    detail::ConsumerLane& l = lane(p.lane);
    if (dead_letter(l, p.seq, p.deliveries - 1, "max_deliveries") == Status::Ok)
      release(l, p.hold);
    else
      stuck_.push_back(p);
  }
  stuck_retry_ns_ = monotonic_ns() + kStuckRetry.count();
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

// Holds message s of lane l again, with a record of its own, and queues it
// for delivery (its `d` deliveries so far, one more to come). A message no
// longer in its slot (overwrite) is lost. The caller has a free record and
// hold entry, and publishes the lane's hazard afterwards.
void Subscriber::hold_again(detail::ConsumerLane& l, std::uint64_t s, std::uint32_t d) noexcept {
  // Acquire: as C1.
  if (!detail::holds(l.ring.slot(s).stamp.load(std::memory_order_acquire), s, l.ring.count)) {
    l.state.group->lost.fetch_add(1, std::memory_order_relaxed);  // relaxed: a counter
    return;
  }
  const std::uint32_t h = detail::hold(l.state, s);
  const auto ri = static_cast<std::uint32_t>(std::countr_one(acks_used_));
  acks_used_ |= std::uint64_t{1} << ri;
  // Relaxed: as take's record stores; published by the hazard's release after.
  acks_[ri].info.store(detail::ack_info(l.index, 1, d), std::memory_order_relaxed);
  acks_[ri].seq1.store(s + 1, std::memory_order_relaxed);
  l.state.record_of[h] = static_cast<std::uint8_t>(ri);
  pending_.push_back({s, l.index, h, d + 1});
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
  // Never wait for the lock here (a receive, maybe of timeout 0): one try;
  // busy (or held by a stuck process), the next receive tries again.
  if (!region_->try_lock_control()) {
    adopt_again_ = true;
    lock_busy_ = true;
    return;
  }
  lock_busy_ = false;
  adopt_locked();
  region_->unlock_control();
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
    for (const RecordCopy& c : sorted_records(recs)) {
      detail::AckRecord& rec = recs[c.index];
      const std::uint64_t seq1 = c.seq1;
      const std::uint64_t info = c.info;
      const std::uint32_t p = detail::ack_partition(info);
      const std::uint32_t n = detail::ack_count(info);
      const std::uint32_t d = detail::ack_deliveries(info);
      if (p >= rings_ || n == 0 || n > lane(p).ring.count) {
        // Not a record a member wrote: drop it, counted.
        rec.seq1.store(0, std::memory_order_relaxed);
        g0.corrupt.fetch_add(1, std::memory_order_relaxed);  // relaxed: a counter
        continue;
      }
      detail::ConsumerLane& l = lane(p);
      // Its partition's owner adopts it (and a partition on its way to
      // another member is left to that one).
      if (partitioned_ && (!l.owned || l.revoking)) continue;
      std::uint32_t taken = 0;
      while (taken < n) {
        if (acks_used_ == kAllRecords || l.state.held_count == kMaxHeld) {
          adopt_again_ = true;  // the rest once this member released some
          break;
        }
        hold_again(l, seq1 - 1 + taken, d);
        ++taken;
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
      detail::MemberSeat& seat = r.member(group_index_, m, p);
      // Relaxed: only we (under the lock) write an orphan's hazard.
      if (seat.held.load(std::memory_order_relaxed) == oldest) continue;
      // Release (RMW): the hand-over Ring::gate watches for, after our own
      // hazard's release above and before the orphan's is raised.
      lane(p).state.group->handovers.fetch_add(1, std::memory_order_release);
      // Release: pairs with G2.
      seat.held.store(oldest, std::memory_order_release);
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

void Subscriber::resume_orphan_locked() noexcept {
  detail::Region& r = *region_;
  // Its records, copied once (the segment is untrusted), then cleared: each
  // message that is still there becomes a held sample of ours with a
  // record of its own, to be delivered again. The seat's hazards still
  // cover them all until publish_hazard below sets them to ours.
  const std::vector<RecordCopy> records = sorted_records(acks_);
  for (std::uint32_t i = 0; i < detail::kAckRecords; ++i)
    acks_[i].seq1.store(0, std::memory_order_relaxed);  // relaxed: under the control lock
  for (const RecordCopy& c : records) {
    const std::uint32_t p = detail::ack_partition(c.info), n = detail::ack_count(c.info),
                        d = detail::ack_deliveries(c.info);
    if (p >= rings_ || n == 0 || n > lane(p).ring.count) {
      head_.state.group->corrupt.fetch_add(1, std::memory_order_relaxed);  // a counter
      continue;
    }
    detail::ConsumerLane& l = lane(p);
    for (std::uint32_t k = 0; k < n && acks_used_ != kAllRecords; ++k)
      hold_again(l, c.seq1 - 1 + k, d);
  }
  // Our hazards (the seat's): release, C3. Same seat, so no hand-over.
  for (std::uint32_t p = 0; p < rings_; ++p)
    detail::publish_hazard(lane(p).ring, lane(p).state);
  head_.state.group->orphans.fetch_sub(1, std::memory_order_relaxed);  // relaxed: under the lock
  (void)r;
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
    // A copy of the key, properties and payload first: under overwrite a
    // producer may be rewriting the slot, and a torn copy must not become a
    // dead letter (it is lost, like any overwritten message).
    const std::size_t span = detail::meta_span(n.meta) + n.size;
    std::vector<std::byte> copy(span);
    detail::copy_racy(copy.data(), detail::payload(slot), span);
    std::atomic_thread_fence(std::memory_order_acquire);  // as Sample::intact
    if (!detail::holds(slot.stamp.load(std::memory_order_relaxed), seq, l.ring.count)) {
      l.state.group->lost.fetch_add(1, std::memory_order_relaxed);  // relaxed: a counter
      return Status::Ok;                                            // nothing left to dead-letter
    }
    const Properties own({copy.data() + detail::meta_key(n.meta), detail::meta_properties(n.meta)});
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
    route.key = {copy.data(), detail::meta_key(n.meta)};
    route.properties = props;
    const std::span<const std::byte> data{copy.data() + detail::meta_span(n.meta), n.size};
    // Never waits (a receive or a nack calls this): a dead-letter topic has
    // no groups until someone reads it, so it is full only if its readers lag.
    Status st = dead_letters_->try_publish(route, data);
    if (st == Status::TooLarge || st == Status::InvalidProperties) {
      // The dlq.* properties do not fit beside the message's own: keep ours.
      route.properties = std::span<const Property>(props).last(5);
      st = dead_letters_->try_publish(route, data);
    }
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
