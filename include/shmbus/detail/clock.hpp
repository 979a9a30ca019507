// The publish timestamp: CLOCK_MONOTONIC in nanoseconds, without a
// clock_gettime per message. clock_gettime orders the TSC read (lfence or
// rdtscp), so on the publish path it holds back the slot's stores. With the
// slot order of layout 2 that is the largest single cost left in a 64 B
// ping-pong (bench/README.md). StampClock reads the clock once per anchor and
// extrapolates from it with a bare rdtsc.
#pragma once

#include <time.h>

#include <algorithm>
#include <cstdint>

namespace shmbus::detail {

inline std::uint64_t now_ns() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000ULL +
         static_cast<std::uint64_t>(ts.tv_nsec);
}

// A per-object clock (not thread-safe: one per publisher).
//
// Each anchor is an exact (TSC, CLOCK_MONOTONIC) pair. For kAnchorNs after
// it, now() is anchor + elapsed ticks x rate. The rate is measured from the
// process's first anchor, so its error falls as the process lives. Rates are
// only used once that first anchor is kMinRateNs old. Until then, or where the
// TSC is not the kernel's clocksource, or off x86-64, every call reads the
// clock.
//
// Error bound: the rate error times the time since the anchor. An anchor is
// always the exact clock, so errors do not add up across anchors. NTP slews
// CLOCK_MONOTONIC by at most 500 ppm: 10 ns over kAnchorNs. now() never goes
// back (the TSC runs in step on all CPUs where it is the clocksource): until
// the next anchor it returns at least floor_, what the previous anchor would
// give at the moment of the new one. That is 20 ns ahead of the clock at most.
class StampClock {
 public:
  static constexpr std::uint64_t kAnchorNs = 20'000;    // 20 us between clock reads
  static constexpr std::uint64_t kMinRateNs = 200'000;  // 200 us of history for a rate

  std::uint64_t now() noexcept {
#if defined(__x86_64__)
    const std::uint64_t dt = __builtin_ia32_rdtsc() - anchor_tsc_;
    // rate_ == 0 makes limit_ 0: no extrapolation. A TSC read that is behind
    // the anchor (another CPU's) wraps dt and takes a new anchor too. No
    // overflow: dt * rate_ is the elapsed ns * 2^32, < 20 us * 2^32 < 2^47.
    if (dt < limit_) [[likely]]
      return std::max(anchor_ns_ + ((dt * rate_) >> 32), floor_);
#endif
    return reanchor();
  }

  // Reads the process-wide set-up (the clocksource, the first anchor) now, so
  // that the first now() on a publish path does not, and waits until that
  // anchor is kMinRateNs old (only the first call in a process waits), so
  // that clocks extrapolate from their first anchor. Before that, a short run
  // (a 1 MiB ping-pong lasts 2 ms) paid a clock read and two TSC reads per
  // message. Publishers call it on construction.
  static void prepare() noexcept;

  // True where now() may extrapolate: x86-64 with the TSC as the kernel's
  // clocksource.
  static bool tsc_usable() noexcept;

  // True once now() extrapolates (for tests).
  [[nodiscard]] bool extrapolating() const noexcept {
    return rate_ != 0;
  }

 private:
  std::uint64_t reanchor() noexcept;  // out of line: src/clock.cpp

  std::uint64_t anchor_tsc_ = 0;
  std::uint64_t anchor_ns_ = 0;
  std::uint64_t rate_ = 0;   // ns per tick, fixed point << 32; 0 until measured
  std::uint64_t limit_ = 0;  // ticks in kAnchorNs (0 while rate_ is 0)
  std::uint64_t floor_ = 0;  // the least now() returns until the next anchor
};

}  // namespace shmbus::detail
