// Group administration on a region (shmbusd runs these for Bus::delete_group
// and Bus::reset_group): under the region's control lock, refused while the
// group has live members, since their positions are theirs to move.
#include <cstring>
#include <string>
#include <vector>

#include "region.hpp"
#include "shmbus/error.hpp"
#include "shmbus/topic.hpp"

namespace shmbus::detail {

namespace {
constexpr auto kFree = static_cast<std::uint32_t>(SeatState::Free);
}  // namespace

std::uint32_t Region::named_group_locked(const std::string& name, const char* doing) {
  validate_name("group", name);
  // Relaxed loads: groups change only under the control lock, which we hold.
  for (std::uint32_t i = 0; i < options_.max_groups; ++i) {
    GroupEntry& e = group(i);
    if (e.state.load(std::memory_order_relaxed) == kFree ||
        (e.flags.load(std::memory_order_relaxed) & kGroupPrivate) != 0 ||
        std::strncmp(e.name, name.c_str(), kNameMax) != 0)
      continue;
    if (const std::uint32_t n = e.members.load(std::memory_order_relaxed); n != 0)
      throw Error(ErrorCode::InUse, "cannot " + std::string(doing) + " group '" + name +
                                        "' of topic '" + topic_name() + "': it has " +
                                        std::to_string(n) +
                                        " live member(s); stop them first (shmbus group "
                                        "describe shows their pids)");
    return i;
  }
  throw Error(ErrorCode::NotFound, "topic '" + topic_name() + "' has no group '" + name +
                                       "' (shmbus group list shows its groups)");
}

void Region::delete_group(const std::string& name) {
  {
    ControlLock lock(*this);
    const std::uint32_t g = named_group_locked(name, "delete");
    for (std::uint32_t p = 0; p < partitions(); ++p)
      // Release: pairs with the acquire of state in Ring::gate; a durable group
      // stops gating producers here.
      group(g, p).state.store(kFree, std::memory_order_release);
  }
  for (std::uint32_t p = 0; p < partitions(); ++p)
    notify(control(p).space_event);  // producers it held back may go on
}

std::uint64_t Region::reset_group(const std::string& name, StartPosition to) {
  std::uint64_t target = 0;
  {
    ControlLock lock(*this);
    const std::uint32_t g = named_group_locked(name, "reset");
    // An offset is one per partition: check it against every tail first.
    for (std::uint32_t p = 0; p < partitions(); ++p) {
      // Relaxed: the tail only grows; any value read is a valid bound.
      const std::uint64_t tail = header(p).tail.load(std::memory_order_relaxed);
      if (to.from == StartFrom::Offset && to.offset > tail)
        throw Error(ErrorCode::InvalidArgument,
                    "cannot reset group '" + name + "' to " + std::to_string(to.offset) +
                        ": topic '" + topic_name() + "' has published up to " +
                        std::to_string(tail) + " (its tail" +
                        (partitions() > 1 ? " in partition " + std::to_string(p) : "") +
                        "); use at most " + std::to_string(tail) + " (= latest)");
    }
    for (std::uint32_t p = 0; p < partitions(); ++p) {
      const Ring& ring = rings_[p];
      const std::uint64_t tail = ring.header->tail.load(std::memory_order_relaxed);  // as above
      std::uint64_t at = to.offset;
      if (to.from == StartFrom::Latest) at = tail;
      if (to.from == StartFrom::Earliest) at = ring.oldest(tail);
      // As a seek (detail::seek): jumping is not taking, so raise the jump mark
      // first; then the cursor, an RMW with release (no member holds anything:
      // there are none). A position below what the ring retains is counted in
      // `lost` when the group next reads, as for any overrun group.
      ring.raise_jump_mark(at);
      (void)group(g, p).cursor.exchange(at, std::memory_order_release);
      if (p == 0) target = at;
    }
    // At least once: a reset is the user's decision about where the group
    // is, unacknowledged messages of dead members included: they go (else
    // their hazards would keep holding producers back behind the new position).
    for (std::uint32_t m = 0; m < options_.max_members; ++m) {
      // Relaxed: seats change only under the control lock, which we hold.
      if (member(g, m).state.load(std::memory_order_relaxed) !=
          static_cast<std::uint32_t>(SeatState::Orphan))
        continue;
      for (std::uint32_t i = 0; i < kAckRecords; ++i)
        acks(g, m)[i].seq1.store(0, std::memory_order_relaxed);  // relaxed: as above
      for (std::uint32_t p = partitions(); p-- > 0;) {
        // Release: producers that read the cleared hazard (G2) may reuse the slots.
        member(g, m, p).held.store(kNone, std::memory_order_release);
        // Release: pairs with the acquire of a later attach.
        member(g, m, p).state.store(kFree, std::memory_order_release);
      }
    }
    group(g).orphans.store(0, std::memory_order_relaxed);  // relaxed: under the lock
  }
  for (std::uint32_t p = 0; p < partitions(); ++p)
    notify(control(p).space_event);  // moving forward makes room
  return target;
}

std::uint32_t Region::owner_pid(std::uint32_t g, std::uint32_t p) const noexcept {
  // Relaxed: a snapshot for reports and for a member deciding whether to
  // check an owner's life; nothing is read through it.
  const std::uint32_t o = group(g, p).owner.load(std::memory_order_relaxed);
  if (o == 0 || o > options_.max_members) return 0;
  return member(g, o - 1).pid.load(std::memory_order_relaxed);
}

// Sticky assignment, as Kafka's sticky assignor: n live members get
// floor(P/n) or floor(P/n) + 1 partitions each (P % n of them the larger
// share). A partition keeps its target while that member is live and under
// its share; the others go to the members with the fewest.
void Region::assign_partitions_locked(std::uint32_t g) noexcept {
  const std::uint32_t parts = partitions();
  const std::uint32_t seats = options_.max_members;
  // Relaxed loads and stores below: under the control lock; members read the
  // targets after an acquire of the assignment word, bumped (release) last.
  std::vector<bool> live(seats, false);
  std::uint32_t n = 0;
  for (std::uint32_t m = 0; m < seats; ++m)
    if (member(g, m).state.load(std::memory_order_relaxed) ==
        static_cast<std::uint32_t>(SeatState::Active)) {
      live[m] = true;
      ++n;
    }
  std::vector<std::uint32_t> target(parts, 0), count(seats, 0);
  for (std::uint32_t p = 0; p < parts; ++p) {
    GroupEntry& e = group(g, p);
    // An owner that is gone owns nothing: its samples went with it.
    const std::uint32_t o = e.owner.load(std::memory_order_relaxed);
    if (o != 0 && (o > seats || !live[o - 1])) e.owner.store(0, std::memory_order_release);
    target[p] = e.target.load(std::memory_order_relaxed);
  }
  if (n != 0) {
    const std::uint32_t share = parts / n;
    std::uint32_t extra = parts % n;  // members that may have share + 1
    // Keep what fits the share, then let members that had more keep one more.
    for (int pass = 0; pass < 2; ++pass)
      for (std::uint32_t p = 0; p < parts; ++p) {
        const std::uint32_t t = target[p];
        if ((t & 0x8000'0000u) != 0) continue;  // kept in the first pass
        if (t == 0 || t > seats || !live[t - 1]) {
          target[p] = 0;
          continue;
        }
        if (pass == 0) {
          if (count[t - 1] < share) {
            ++count[t - 1];
            target[p] = t | 0x8000'0000u;  // kept
          }
        } else {
          if (count[t - 1] == share && extra > 0) {
            ++count[t - 1];
            --extra;
            target[p] = t | 0x8000'0000u;
          } else {
            target[p] = 0;
          }
        }
      }
    for (std::uint32_t p = 0; p < parts; ++p) {
      target[p] &= 0x7fff'ffffu;
      if (target[p] != 0) continue;
      // To the live member with the fewest (a member may reach share + 1
      // only while extra shares are left).
      std::uint32_t best = seats;
      for (std::uint32_t m = 0; m < seats; ++m)
        if (live[m] && (count[m] < share || (count[m] == share && extra > 0)) &&
            (best == seats || count[m] < count[best]))
          best = m;
      if (best == seats) continue;  // cannot happen: the shares add up to parts
      if (count[best] == share) --extra;
      ++count[best];
      target[p] = best + 1;
    }
  } else {
    target.assign(parts, 0);
  }
  for (std::uint32_t p = 0; p < parts; ++p)
    group(g, p).target.store(target[p], std::memory_order_relaxed);
  // Release: a member that acquires the new value sees the targets above
  // and the owners cleared.
  group(g).assignment.fetch_add(1, std::memory_order_release);
}

}  // namespace shmbus::detail
