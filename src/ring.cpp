// The out-of-line steps of the ring protocol (include/shmbus/detail/ring.hpp):
// the gate scan (G1, G2), and the join (J3). Each runs once per ring lap or
// once per join, never per message.
#include "shmbus/detail/ring.hpp"

namespace shmbus::detail {

std::uint64_t Ring::gate() const noexcept {
  std::uint64_t g = kNone;
  for (std::uint32_t i = 0; i < max_groups; ++i) {
    const GroupEntry& e = group(i);
    // Acquire: pairs with the release stores of the group's state (the
    // Subscriber constructor, Region::free_member), so a live group's cursor
    // and seats are initialised when we see it active.
    if (e.state.load(std::memory_order_acquire) != static_cast<std::uint32_t>(SeatState::Active))
      continue;
    // Acquire: pairs with the release fetch_sub in free_member (a group seen
    // without members has its last hazard cleared) and orders the flags load
    // after it, so a durable flag set by a joiner whose member we saw
    // counted is seen too. Relaxed flags: ordered by that acquire.
    const std::uint32_t members = e.members.load(std::memory_order_acquire);
    const std::uint32_t flags = e.flags.load(std::memory_order_relaxed);
    if (members == 0 && (flags & kGroupDurable) == 0) continue;
    // SYNC POINT G1 (acquire): pairs with the release of a member's cursor
    // CAS (C4) or a private group's cursor store (C2). Reading the cursor
    // first makes the hazards stored before that CAS visible below.
    g = std::min(g, e.cursor.load(std::memory_order_acquire));
    if ((flags & kGroupPrivate) != 0) continue;
    // At-least-once groups: an adopter (Subscriber::adopt_locked) stores its
    // own hazard (release), bumps `handovers` (release RMW), then raises the
    // hazard of the orphan it took the samples from. A scan that read the
    // raised hazard (acquire) sees the bump at its second load of the count;
    // a scan whose first load already saw the bump sees the adopter's
    // lowered hazard. So a scan with the count unchanged missed no hand-over;
    // one that saw it move scans again (adoptions are rare: after a death).
    const bool acked = (flags & kGroupAtLeastOnce) != 0;
    for (;;) {
      // Acquire (both): pairs with the adopter's release bump.
      const std::uint32_t before = acked ? e.handovers.load(std::memory_order_acquire) : 0;
      std::uint64_t h = kNone;
      for (std::uint32_t m = 0; m < max_members; ++m) {
        // SYNC POINT G2 (acquire): pairs with a member's release of its hazard
        // (C3, or the hazard store before C4), so the member's reads of the
        // slot happen before our overwrite.
        h = std::min(h, member(i, m).held.load(std::memory_order_acquire));
      }
      if (!acked || e.handovers.load(std::memory_order_acquire) == before) {
        g = std::min(g, h);
        break;
      }
    }
  }
  return g;
}

void refresh_gate(const Ring& r, ProducerState& p, std::uint64_t s) noexcept {
  // seq_cst fence: our earlier claims (tail stores) are ordered before the
  // scan's loads, against a joiner's members.fetch_add / tail load (Dekker).
  std::atomic_thread_fence(std::memory_order_seq_cst);
  const std::uint64_t gate = r.gate();
  p.gate_cache = std::min(gate, s);
  // Relaxed: after the scan's acquire loads (state, G1), so it is at least
  // the mark raised before any group or cursor value the scan saw.
  p.proven_floor = gate == kNone ? kNone : r.control->jump_mark.load(std::memory_order_relaxed);
}

// The group has just become visible to producers, but a producer may hold a
// gate cache computed before that and keep claiming up to slot_count past it.
// Producers read the join epoch after every claim (J2): bumping it here means
// every later claim rescans and sees this group. A claim that did not see the
// bump is already counted in the tail we load after it (J3, Dekker), and can
// only overwrite a message more than slot_count behind that tail. So the group
// starts no lower than tail - slot_count, and what it skips is counted as lost
// (for a group that existed, or an explicit offset), never returned torn.
void start_gating(const Ring& r, GroupEntry& group, bool floor_at_tail,
                  bool count_as_lost) noexcept {
  // SYNC POINT J3 (seq_cst, both): pairs with J1/J2 in try_claim/record_claim.
  // The epoch (control segment) and the tail (data segment) are in different
  // mappings; seq_cst orders them in one total order all the same.
  r.control->join_epoch.fetch_add(1, std::memory_order_seq_cst);
  const std::uint64_t tail = r.header->tail.load(std::memory_order_seq_cst);
  const std::uint64_t floor = floor_at_tail ? tail : r.oldest(tail);
  // Relaxed: the caller holds the control lock and the group had no members,
  // so no one else moves this cursor; producers read it with acquire (G1)
  // after the seq_cst operations above.
  const std::uint64_t cursor = group.cursor.load(std::memory_order_relaxed);
  if (cursor >= floor) return;
  r.raise_jump_mark(floor);
  // Release: as C2/C4; producers read the cursor with acquire (G1).
  group.cursor.store(floor, std::memory_order_release);
  if (count_as_lost)
    group.lost.fetch_add(floor - cursor, std::memory_order_relaxed);  // relaxed: a counter
}

}  // namespace shmbus::detail
