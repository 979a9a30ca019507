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
// paired with their midpoint, so it is off by at most half their distance.
// That is ~80 ticks here (30 ns); an interrupt in between makes it thousands,
// and such a pair would put every value of its anchor off by as much: read
// again (at most 16 times, keeping the tightest).
struct Pair {
  std::uint64_t tsc = 0, ns = 0;
};
Pair read_pair() noexcept {
  constexpr std::uint64_t kTightTicks = 400;
  Pair best;
  std::uint64_t best_width = ~std::uint64_t{0};
  for (int attempt = 0; attempt < 16 && best_width > kTightTicks; ++attempt) {
    const std::uint64_t t1 = __builtin_ia32_rdtsc();
    const std::uint64_t ns = now_ns();
    const std::uint64_t t2 = __builtin_ia32_rdtsc();
    if (t2 - t1 < best_width) {
      best_width = t2 - t1;
      best = {t1 + (t2 - t1) / 2, ns};
    }
  }
  return best;
}

struct Origin {
  bool usable = false;
  Pair at;
};

// The process's first anchor; thread-safe, once.
const Origin& origin() noexcept {
  static const Origin o = [] {
    Origin r;
    r.usable = tsc_is_clocksource();
    if (r.usable) r.at = read_pair();
    return r;
  }();
  return o;
}
#endif

}  // namespace

void StampClock::prepare() noexcept {
#if defined(__x86_64__)
  (void)origin();
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
  const Pair p = read_pair();
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
