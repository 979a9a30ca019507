// Waiting: spinning, yielding, and sleeping on a shared futex without lost
// wake-ups. The reasoning is in docs/memory-ordering.md ("Event counts").
#pragma once

#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <span>

#include "shmbus/detail/layout.hpp"
#include "shmbus/error.hpp"
#include "shmbus/options.hpp"

namespace shmbus::detail {

using Clock = std::chrono::steady_clock;

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#else
  asm volatile("" ::: "memory");
#endif
}

// True on a machine with one online CPU: spinning for a peer is then
// pointless (the peer needs this very CPU), so waits skip the spin phase.
bool single_cpu_machine() noexcept;

// Shared (not private) futex: the word lives in a region mapped by many processes.
// Returns false when the timeout passed; true when woken, interrupted or the
// word no longer held `expected`.
bool futex_wait(std::atomic<std::uint32_t>& word, std::uint32_t expected,
                std::chrono::nanoseconds timeout) noexcept;
void futex_wake_all(std::atomic<std::uint32_t>& word) noexcept;
// As futex_wait over several words at once (futex_waitv, Linux 5.16): returns
// when one of words[i] no longer holds keys[i], when woken, or at the timeout
// (false then). At most kMaxWaitMany words. On an older kernel it waits on the
// first word in slices of at most 1 ms, so the others are seen within that.
inline constexpr std::size_t kMaxWaitMany = 128;
bool futex_wait_many(std::span<std::atomic<std::uint32_t>* const> words,
                     std::span<const std::uint32_t> keys,
                     std::chrono::nanoseconds timeout) noexcept;

// A deadline that treats huge timeouts as "never" instead of overflowing.
class Deadline {
 public:
  Deadline(std::chrono::nanoseconds timeout, Clock::time_point now) noexcept
      : forever_(timeout >= std::chrono::hours(24 * 365)),
        at_(forever_ ? Clock::time_point::max() : now + timeout) {}
  [[nodiscard]] std::chrono::nanoseconds remaining() const noexcept {
    if (forever_) return std::chrono::hours(1);  // sleep in long slices, re-check
    return std::max(std::chrono::nanoseconds(0),
                    std::chrono::duration_cast<std::chrono::nanoseconds>(at_ - Clock::now()));
  }
  [[nodiscard]] bool forever() const noexcept { return forever_; }
  [[nodiscard]] bool passed() const noexcept { return passed(Clock::now()); }
  [[nodiscard]] bool passed(Clock::time_point now) const noexcept {
    return !forever_ && now >= at_;
  }

 private:
  bool forever_;
  Clock::time_point at_;
};

// Wakes every sleeper on `ev`.
inline void wake(EventCount& ev) noexcept {
  // Release: a sleeper that reads the new seq sees the caller's store.
  ev.seq.fetch_add(1, std::memory_order_release);
  futex_wake_all(ev.seq);
}

// Wakes every sleeper on `ev`, if any may sleep. Call after the store that
// makes the awaited condition true. Never misses a sleeper.
inline void notify(EventCount& ev) noexcept {
  // StoreLoad: the caller's store (stamp, cursor or hazard) must be ordered
  // before our read of `waiters`. Pairs with the seq_cst fetch_add in wait_for:
  // either the sleeper's re-check sees the store, or we see its waiters count.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (ev.waiters.load(std::memory_order_relaxed) != 0) wake(ev);
}

// notify() without the fence, for the consumer's release (a fence there would
// sit on every message's path). It can miss a sleeper that is going to sleep
// at this very moment. The space event is therefore used so that a miss only
// delays: producers asleep on it re-check at least every kSpaceRecheck
// (Publisher::wait_for_space), and a consumer calls the full notify() before
// it waits itself (docs/memory-ordering.md, "Event counts").
inline void notify_hint(EventCount& ev) noexcept {
  // Relaxed: a hint; nothing is ordered by it (see above).
  if (ev.waiters.load(std::memory_order_relaxed) != 0) wake(ev);
}

// The longest a producer sleeps on the space event before it re-checks: the
// bound on a wake-up missed by notify_hint(), and on waiting for a slot a
// slower producer completes (producers do not notify the space event).
inline constexpr std::chrono::nanoseconds kSpaceRecheck = std::chrono::milliseconds(1);

// How a wait ended.
enum class Waited : std::uint8_t { Ready, TimedOut, Interrupted };

// For waits no interrupt may end.
inline const Interrupt kNoInterrupt{};

// The status of a call whose wait ended `w`; `ready` is the status it had
// when the wait ended Ready.
[[nodiscard]] inline Status status_of(Waited w, Status ready) noexcept {
  switch (w) {
    case Waited::Ready:
      return ready;
    case Waited::TimedOut:
      return Status::Timeout;
    case Waited::Interrupted:
      break;
  }
  return Status::Interrupted;
}

// Calls an Interrupt's check no more often than its `every` (a Python check
// takes the GIL). Without a check, due() is false and costs a branch.
class InterruptClock {
 public:
  InterruptClock(const Interrupt& i, Clock::time_point now) noexcept
      : interrupt_(i), every_(std::clamp(i.every, kMin, kMax)), next_(now + every_) {}
  [[nodiscard]] bool armed() const noexcept { return static_cast<bool>(interrupt_.check); }
  // True when the check is due at `now` and says stop.
  [[nodiscard]] bool fired(Clock::time_point now) noexcept {
    if (!armed() || now < next_) return false;
    next_ = now + every_;
    return interrupt_.check();
  }
  // The longest a sleep may last before the check is due again.
  [[nodiscard]] std::chrono::nanoseconds sleep_bound() const noexcept {
    return armed() ? std::chrono::nanoseconds(every_) : std::chrono::nanoseconds::max();
  }

 private:
  // `every` is clamped: no futex loop at 0, no clock overflow near max().
  static constexpr std::chrono::nanoseconds kMin = std::chrono::microseconds(100);
  static constexpr std::chrono::nanoseconds kMax = std::chrono::hours(1);
  const Interrupt& interrupt_;
  std::chrono::nanoseconds every_;
  Clock::time_point next_;
};

// Waits until `ready()` returns true, the timeout passes, or `interrupt` says
// stop (checked at each wake-up, at most every interrupt.every). Callers have
// just found `ready` false, so the first call comes after the clock is read.
// `ready` may have side effects (a successful claim); it is called until it
// returns true once, and a ready condition wins over a timeout or an interrupt
// seen at the same turn. Each sleep lasts at most `max_sleep` before `ready`
// is re-checked. The sleep is on every event count of `events` at once
// (at most kMaxWaitMany): whichever a notifier bumps ends it.
template <class Ready>
Waited wait_many(std::span<EventCount* const> events, WaitStrategy strategy,
                 std::chrono::nanoseconds timeout, std::chrono::nanoseconds spin_budget,
                 const Interrupt& interrupt, Ready&& ready,
                 std::chrono::nanoseconds max_sleep = std::chrono::nanoseconds::max()) noexcept {
  const auto start = Clock::now();  // one clock read for every limit
  const Deadline deadline(timeout, start);
  InterruptClock stop(interrupt, start);
  const auto last_look = [&] { return ready() ? Waited::Ready : Waited::TimedOut; };
  const bool spin =
      strategy == WaitStrategy::BusySpin || (spin_budget.count() > 0 && !single_cpu_machine());
  const auto spin_until = start + spin_budget;
  // A busy spin with no deadline and no interrupt never reads the clock.
  const bool watch = !deadline.forever() || stop.armed() || strategy != WaitStrategy::BusySpin;
  for (std::uint32_t i = 1; spin; ++i) {
    if (ready()) return Waited::Ready;
    cpu_relax();
    if (watch && (i & 255) == 0) {
      const auto now = Clock::now();
      if (deadline.passed(now)) return last_look();
      if (stop.fired(now)) return Waited::Interrupted;
      if (strategy != WaitStrategy::BusySpin && now >= spin_until) break;
    }
  }
  if (strategy == WaitStrategy::SpinYield) {
    for (std::uint32_t i = 1;; ++i) {
      if (ready()) return Waited::Ready;
      ::sched_yield();
      if ((i & 15) == 0) {
        const auto now = Clock::now();
        if (deadline.passed(now)) return last_look();
        if (stop.fired(now)) return Waited::Interrupted;
      }
    }
  }
  const std::size_t n = std::min(events.size(), kMaxWaitMany);
  // The sleeper is counted once for the whole sleeping phase, re-checks
  // included: a notifier never sees it gone while it may still sleep.
  // seq_cst: pairs with the fence in notify() (Dekker): each re-check below
  // sees the awaited store, or the notifier sees waiters != 0.
  for (std::size_t e = 0; e < n; ++e)
    events[e]->waiters.fetch_add(1, std::memory_order_seq_cst);
  struct Uncount {
    std::span<EventCount* const> evs;
    // Relaxed: the count only decides whether notifiers call futex_wake.
    ~Uncount() {
      for (EventCount* ev : evs)
        ev->waiters.fetch_sub(1, std::memory_order_relaxed);
    }
  } uncount{events.first(n)};
  std::atomic<std::uint32_t>* words[kMaxWaitMany];
  std::uint32_t keys[kMaxWaitMany];
  for (std::size_t e = 0; e < n; ++e)
    words[e] = &events[e]->seq;
  const auto sleep_cap = std::min(max_sleep, stop.sleep_bound());
  for (;;) {
    // The fence makes the Dekker pairing formal under the C++ model (a fence on
    // each side); on x86 the locked add above already is one, the first time.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    // Acquire: if this reads a value a notifier bumped, the re-check sees its store.
    for (std::size_t e = 0; e < n; ++e)
      keys[e] = words[e]->load(std::memory_order_acquire);
    if (ready()) return Waited::Ready;
    const auto left = deadline.remaining();
    if (left.count() == 0) return Waited::TimedOut;
    if (stop.armed() && stop.fired(Clock::now())) return Waited::Interrupted;
    const auto slice = std::min(left, sleep_cap);
    if (n == 1)
      futex_wait(*words[0], keys[0], slice);
    else
      futex_wait_many({words, n}, {keys, n}, slice);
  }
}

// wait_many on one event count: how a publisher and a subscriber wait.
template <class Ready>
Waited wait_for(EventCount& ev, WaitStrategy strategy, std::chrono::nanoseconds timeout,
                std::chrono::nanoseconds spin_budget, const Interrupt& interrupt, Ready&& ready,
                std::chrono::nanoseconds max_sleep = std::chrono::nanoseconds::max()) noexcept {
  EventCount* const one[1] = {&ev};
  return wait_many(one, strategy, timeout, spin_budget, interrupt, ready, max_sleep);
}

}  // namespace shmbus::detail
