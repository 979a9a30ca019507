// Group administration on a region (shmbusd runs these for Bus::delete_group
// and Bus::reset_group): under the region's control lock, refused while the
// group has live members, since their positions are theirs to move.
#include <cstring>
#include <string>

#include "region.hpp"
#include "shmbus/error.hpp"
#include "shmbus/topic.hpp"

namespace shmbus::detail {

namespace {
constexpr auto kFree = static_cast<std::uint32_t>(SeatState::Free);
}  // namespace

GroupEntry& Region::named_group_locked(const std::string& name, const char* doing) {
  validate_name("group", name);
  // Relaxed loads: groups change only under the control lock, which we hold.
  for (std::uint32_t i = 0; i < ring_.max_groups; ++i) {
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
    return e;
  }
  throw Error(ErrorCode::NotFound, "topic '" + topic_name() + "' has no group '" + name +
                                       "' (shmbus group list shows its groups)");
}

void Region::delete_group(const std::string& name) {
  {
    ControlLock lock(*this);
    GroupEntry& e = named_group_locked(name, "delete");
    // Release: pairs with the acquire of state in Ring::gate; a durable group
    // stops gating producers here.
    e.state.store(kFree, std::memory_order_release);
  }
  notify(ring_.control->space_event);  // producers it held back may go on
}

std::uint64_t Region::reset_group(const std::string& name, StartPosition to) {
  std::uint64_t target = 0;
  {
    ControlLock lock(*this);
    GroupEntry& e = named_group_locked(name, "reset");
    // Relaxed: the tail only grows; any value read is a valid bound.
    const std::uint64_t tail = ring_.header->tail.load(std::memory_order_relaxed);
    switch (to.from) {
      case StartFrom::Latest:
        target = tail;
        break;
      case StartFrom::Earliest:
        target = ring_.oldest(tail);
        break;
      case StartFrom::Offset:
        if (to.offset > tail)
          throw Error(ErrorCode::InvalidArgument,
                      "cannot reset group '" + name + "' to " + std::to_string(to.offset) +
                          ": topic '" + topic_name() + "' has published up to " +
                          std::to_string(tail) + " (its tail); use at most " +
                          std::to_string(tail) + " (= latest)");
        target = to.offset;
        break;
    }
    // As a seek (detail::seek): jumping is not taking, so raise the jump mark
    // first; then the cursor, an RMW with release (no member holds anything:
    // there are none). A position below what the ring retains is counted in
    // `lost` when the group next reads, as for any overrun group.
    ring_.raise_jump_mark(target);
    (void)e.cursor.exchange(target, std::memory_order_release);
  }
  notify(ring_.control->space_event);  // moving forward makes room
  return target;
}

}  // namespace shmbus::detail
