#include "shmbus/detail/clock.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

namespace shmbus::detail {
namespace {

#if defined(__x86_64__)
// The TSC may stand in for CLOCK_MONOTONIC only where the kernel itself uses
// it as the clocksource: it then runs at a constant rate, through idle
// states, and in step on every CPU (the kernel checks, and falls back to
// another clocksource when it does not).
bool tsc_is_clocksource() noexcept {
  const int fd = ::open("/sys/devices/system/clocksource/clocksource0/current_clocksource",
                        O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  char buf[16] = {};
  const ssize_t n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  return n >= 3 && std::strncmp(buf, "tsc", 3) == 0 && (n == 3 || buf[3] == '\n');
}

// An exact (TSC, CLOCK_MONOTONIC) pair: the clock read between two TSC reads,
// paired with their midpoint, so it is off by at most half their distance
// (the width). That is ~80 ticks here (30 ns); an interrupt in between makes
// it thousands, and such a pair would put every value of its anchor off by
// as much. So it is read again until the width is at most `tight` (at most
// 16 times, keeping the tightest).
struct Pair {
  std::uint64_t tsc = 0, ns = 0;
  std::uint64_t width = ~std::uint64_t{0};
};
Pair read_pair(std::uint64_t tight) noexcept {
  Pair best;
  for (int attempt = 0; attempt < 16 && best.width > tight; ++attempt) {
    const std::uint64_t t1 = __builtin_ia32_rdtsc();
    const std::uint64_t ns = now_ns();
    const std::uint64_t t2 = __builtin_ia32_rdtsc();
    if (t2 - t1 < best.width) best = {t1 + (t2 - t1) / 2, ns, t2 - t1};
  }
  return best;
}

struct Origin {
  bool usable = false;
  Pair at;                  // the process's first anchor
  std::uint64_t tight = 0;  // the width a later pair may have: twice the best seen here
};

// Thread-safe, once. The tightest of 16 pairs sets what "tight" means on this
// machine (a clock_gettime that is a system call, not a vDSO read, is slower).
const Origin& origin() noexcept {
  static const Origin o = [] {
    Origin r;
    r.usable = tsc_is_clocksource();
    if (r.usable) {
      r.at = read_pair(0);
      r.tight = 2 * r.at.width;
    }
    return r;
  }();
  return o;
}
#endif

}  // namespace

void StampClock::prepare() noexcept {
#if defined(__x86_64__)
  const Origin& o = origin();
  if (!o.usable) return;
  // At most kMinRateNs, once per process: later calls find the origin old.
  while (now_ns() - o.at.ns < kMinRateNs)
    __builtin_ia32_pause();
#endif
}

bool StampClock::tsc_usable() noexcept {
#if defined(__x86_64__)
  return origin().usable;
#else
  return false;
#endif
}

std::uint64_t StampClock::reanchor() noexcept {
#if defined(__x86_64__)
  const Origin& o = origin();
  if (!o.usable) return now_ns();
  const Pair p = read_pair(o.tight);
  // The anchor is always the exact clock, so errors never add up from one
  // anchor to the next. So that now() never goes back, values of the new
  // anchor are held at least at what the old one would give now, which is
  // more than it ever returned. Only just past the old anchor's window: after
  // a longer pause the clock is far ahead of anything returned before.
  floor_ = 0;
  if (rate_ != 0 && p.tsc > anchor_tsc_ && p.tsc - anchor_tsc_ < 2 * limit_) {
    // No overflow: ticks * rate_ is the elapsed ns * 2^32, here < 40 us * 2^32 < 2^48.
    floor_ = anchor_ns_ + (((p.tsc - anchor_tsc_) * rate_) >> 32);
  }
  anchor_tsc_ = p.tsc;
  anchor_ns_ = p.ns;
  if (p.ns - o.at.ns >= kMinRateNs && p.tsc > o.at.tsc) {
    const double ns_per_tick =
        static_cast<double>(p.ns - o.at.ns) / static_cast<double>(p.tsc - o.at.tsc);
    rate_ = static_cast<std::uint64_t>(ns_per_tick * 4294967296.0);
    limit_ = static_cast<std::uint64_t>(static_cast<double>(kAnchorNs) / ns_per_tick);
  }
  return std::max(p.ns, floor_);
#else
  return now_ns();
#endif
}

}  // namespace shmbus::detail
