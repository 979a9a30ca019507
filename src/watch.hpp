// Descriptors for event loops (Subscriber::fd, Selector::fd): an eventfd made
// readable when a subscriber may have a message. A futex cannot be polled, so
// one thread per process (the waker) sleeps on the event counts of every armed
// descriptor at once (futex_waitv) and writes the eventfd when one moves.
//
// A descriptor is armed by its owner's thread once a receive came up empty
// (Watch::arm): it declares itself asleep on the topic's data event (waiters
// += 1, as a sleeping receive does), takes the event's key, and looks for data
// once more; only then does the waker wait for that key to move. Producers
// therefore make a system call only while someone is asleep, as with a
// sleeping receive: a subscriber that is busy consuming costs them nothing.
// The waker signals the eventfd and ends the declaration; the next empty
// receive drains the eventfd and arms again. docs/event-loops.md has the cost.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>

#include "shmbus/detail/layout.hpp"

namespace shmbus::detail {

class Watch {
 public:
  Watch();  // its own eventfd; throws Error(ResourceExhausted) when none can be made
  // Signals `fd`, another Watch's (a Selector's watches share one descriptor).
  explicit Watch(int fd) noexcept : fd_(fd), owns_(false) {}
  ~Watch();
  Watch(const Watch&) = delete;
  Watch& operator=(const Watch&) = delete;

  [[nodiscard]] int fd() const noexcept { return fd_; }
  // Makes the descriptor readable (write 1), or empties it.
  void signal() noexcept;
  void drain() noexcept;
  // Arms the descriptor on `ev` (kept mapped by `keep`), unless it is armed
  // there already: declares a sleeper, then calls `empty()` (the owner's
  // look for data, on its own thread). Data found: the declaration ends and
  // the descriptor is signalled now. Otherwise the waker signals it once a
  // notifier bumps `ev`.
  template <class Empty>
  void arm(EventCount& ev, const std::shared_ptr<void>& keep, Empty&& empty) {
    // Drained first, armed or not (a shared descriptor is drained by its
    // owner, Selector::wait): a signal still there is stale. The waker
    // disarms before it signals, so a live declaration has not signalled
    // yet, and one that fired is seen disarmed below once its signal was
    // drained here (the eventfd orders the two): that wake is not lost, as
    // the look below finds what it announced.
    if (owns_) drain();
    if (armed_.load(std::memory_order_acquire)) return;  // pairs with the waker's release
    // seq_cst: pairs with the fence in notify() (Dekker), as in wait_many:
    // the look below sees a publish, or its notifier sees the sleeper.
    ev.waiters.fetch_add(1, std::memory_order_seq_cst);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    // Acquire: a bump read here means the look below sees its store.
    const std::uint32_t key = ev.seq.load(std::memory_order_acquire);
    if (!empty()) {
      ev.waiters.fetch_sub(1, std::memory_order_relaxed);  // relaxed: as Uncount
      signal();
      return;
    }
    try {
      hand_over(ev, key, keep);
    } catch (...) {
      ev.waiters.fetch_sub(1, std::memory_order_relaxed);  // relaxed: as Uncount
      throw;
    }
  }
  // Ends every declaration this descriptor still has with the waker.
  void disarm() noexcept;

 private:
  void hand_over(EventCount& ev, std::uint32_t key, const std::shared_ptr<void>& keep);
  friend class Waker;
  int fd_ = -1;
  bool owns_ = true;
  // Set by the owner at its first hand-over: from then on the waker may be
  // about to signal fd_ (it disarms first), so disarm() must take its mutex.
  bool handed_ = false;
  // True while the waker waits on this descriptor's behalf. Written under
  // the waker's mutex only: true when it takes the declaration, false when it
  // ends it (before it signals); read by the owner, release/acquire.
  std::atomic<bool> armed_{false};
};

}  // namespace shmbus::detail
