// Delayed messages: a topic's schedule area (layout.hpp, docs/delayed.md) as
// the library's producers insert into it and shmbusd's mover empties it.
//
// An entry goes Free -> Writing (a producer's CAS; it then fills the
// message) -> Ready (order and due time set; its bit set in the bitmap, the
// mover woken if it is due before the mover's armed time) -> Moving (the
// mover's CAS; target set to the offset it claimed before it publishes
// there) -> Free (after the publish). Crashes:
//   a producer dies in Writing: shmbusd frees the entry (free_writers_of);
//   shmbusd dies in Moving: the next shmbusd, before it frees the dead
//   daemon's producer seat, looks at the target slot (recover): published,
//   the entry is retired; not, it is Ready again, and the claim is abandoned
//   with the seat. So a due message is appended exactly once.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "region.hpp"
#include "shmbus/publisher.hpp"

namespace shmbus::detail {

// What recover() found: entries retired, made Ready again, freed (a dead
// writer's) and refused (an invalid state).
struct Recovered {
  std::uint32_t retired = 0, requeued = 0, freed = 0, refused = 0;
};

// The numbers describe and stat show.
struct ScheduleCounts {
  std::uint64_t scheduled = 0;    // entries taken (Writing, Ready, Moving)
  std::uint64_t overdue = 0;      // Ready and due before `now`
  std::uint64_t next_due_ns = 0;  // the earliest Ready entry's due time; 0: none
};
[[nodiscard]] ScheduleCounts count_schedule(const Region& r, std::uint64_t now_ns) noexcept;

// Frees entries left Writing by `pid` (a producer that died); returns how many.
std::uint32_t free_writers_of(const Region& r, std::uint32_t pid) noexcept;

// The wall clock in ns since the epoch, as due times are kept.
[[nodiscard]] std::uint64_t wall_ns() noexcept;

// shmbusd's mover of one topic's due messages, run on a thread of its own.
class Mover {
 public:
  using Log = std::function<void(const std::string&)>;
  Mover(std::shared_ptr<Region> region, Log warn) noexcept;
  ~Mover();
  Mover(const Mover&) = delete;
  Mover& operator=(const Mover&) = delete;

  // Resolves what a dead mover and dead writers left (see the top of this
  // file). Call before the dead daemon's producer seats are freed.
  // `previous_boot`: the region comes back after a reboot, so no pid in it
  // names a process of ours, whether or not one runs under it now.
  static Recovered recover(const Region& r, bool previous_boot = false) noexcept;

  // Moves due messages until stop(): sleeps on the schedule's event until
  // the earliest due time (a futex wait with an absolute CLOCK_REALTIME
  // deadline), re-armed when an earlier one is inserted.
  void run() noexcept;
  // Thread-safe: run() returns soon after; without `wake` (a damaged
  // region: not touched) within its 1 s sleep cap.
  void stop(bool wake = true) noexcept;
  // After run() returned, for a damaged region: lets go of the producer
  // seat without touching the region (the seat stays taken in it).
  void forget_publisher() noexcept;
  // After run() returned: frees the mover's producer seat. The region is
  // touched only by the last step, so a fault there (a damaged region, under
  // the daemon's guard) leaves nothing to be destroyed twice.
  void drop_publisher() noexcept;
  // Thread-safe: the producer seat the mover publishes from, once it has
  // one (its first move); kNoSeat before.
  static constexpr std::uint32_t kNoSeat = ~std::uint32_t{0};
  [[nodiscard]] std::uint32_t seat() const noexcept {
    return seat_.load(std::memory_order_relaxed);  // a number, read for reporting
  }
  // Thread-safe: the next pass reads every entry, not only the bitmap (a
  // producer died: its Ready entry's bit may be missing).
  void rescan() noexcept;

 private:
  struct Item {
    std::uint64_t due, order;
    std::uint32_t index;
    // The scan that found it. It is moved only after a later scan, which
    // sees every entry that became Ready before it did (their bits were set
    // before its own): so messages due at the same time, published one
    // after the other, are appended in publish order (docs/delayed.md).
    std::uint64_t round;
  };
  // The heap's order: the earliest due first, ties in publish order.
  static bool later(const Item& a, const Item& b) noexcept;
  void found(std::uint32_t i);
  void scan_bits();
  void scan_all();
  // Ok: moved (or dropped as invalid, or gone); else why it waits.
  Status move(std::uint32_t i);
  bool ensure_publisher();

  std::shared_ptr<Region> region_;
  Log warn_;
  std::optional<Publisher> pub_;
  std::uint64_t next_publisher_try_ = 0;
  std::uint64_t round_ = 0;  // scans made
  int crash_at_ = 0;         // SHMBUS_FAULT_MOVER (tests only): 1 claimed, 2 published
  std::vector<Item> heap_;
  std::vector<bool> known_;  // entries in heap_
  std::atomic<bool> stop_{false};
  std::atomic<bool> rescan_{true};
  std::atomic<std::uint32_t> seat_{kNoSeat};
};

}  // namespace shmbus::detail
