#include <linux/futex.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <ctime>

#include "shmbus/detail/wait.hpp"

namespace shmbus::detail {

static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t),
              "the futex word is the atomic's storage");

bool futex_wait(std::atomic<std::uint32_t>& word, std::uint32_t expected,
                std::chrono::nanoseconds timeout) noexcept {
  timespec ts{};
  ts.tv_sec = static_cast<time_t>(timeout.count() / 1'000'000'000);
  ts.tv_nsec = static_cast<long>(timeout.count() % 1'000'000'000);
  // FUTEX_WAIT (not _PRIVATE): the word is in memory shared between processes.
  const long rc = ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAIT,
                            expected, &ts, nullptr, 0);
  return !(rc == -1 && errno == ETIMEDOUT);
}

bool single_cpu_machine() noexcept {
  static const bool one = ::sysconf(_SC_NPROCESSORS_ONLN) == 1;
  return one;
}

void futex_wake_all(std::atomic<std::uint32_t>& word) noexcept {
  ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAKE, INT_MAX, nullptr,
            nullptr, 0);
}

#ifndef SYS_futex_waitv
#define SYS_futex_waitv 449  // the same number on every architecture (Linux 5.16)
#endif

namespace {
// struct futex_waitv of <linux/futex.h>, spelled out: the kernel headers of
// an older build host may lack it, the running kernel decides.
struct WaitV {
  std::uint64_t val;
  std::uint64_t uaddr;
  std::uint32_t flags;
  std::uint32_t reserved;
};
constexpr std::uint32_t kFutex2Size32 = 0x02;  // FUTEX2_SIZE_U32; not FUTEX2_PRIVATE: shared
std::atomic<bool> no_waitv{false};
}  // namespace

bool futex_wait_many(std::span<std::atomic<std::uint32_t>* const> words,
                     std::span<const std::uint32_t> keys,
                     std::chrono::nanoseconds timeout) noexcept {
  const std::size_t n = std::min({words.size(), keys.size(), kMaxWaitMany});
  if (n == 0) {
    timespec ts{static_cast<time_t>(timeout.count() / 1'000'000'000),
                static_cast<long>(timeout.count() % 1'000'000'000)};
    return ::nanosleep(&ts, nullptr) != 0;  // nothing to wake us: the whole timeout
  }
  // Relaxed: a cache of what the kernel said; every thread may find out itself.
  if (n > 1 && !no_waitv.load(std::memory_order_relaxed)) {
    WaitV v[kMaxWaitMany];
    for (std::size_t i = 0; i < n; ++i)
      v[i] = {keys[i], reinterpret_cast<std::uintptr_t>(words[i]), kFutex2Size32, 0};
    timespec now{};
    ::clock_gettime(CLOCK_MONOTONIC, &now);
    const std::int64_t at = std::int64_t{now.tv_sec} * 1'000'000'000 + now.tv_nsec +
                            std::min<std::int64_t>(timeout.count(), std::int64_t{1} << 60);
    timespec abs{static_cast<time_t>(at / 1'000'000'000), static_cast<long>(at % 1'000'000'000)};
    const long rc = ::syscall(SYS_futex_waitv, v, static_cast<unsigned>(n), 0u, &abs,
                              static_cast<int>(CLOCK_MONOTONIC));
    if (rc >= 0 || errno == EAGAIN || errno == EINTR) return true;  // woken, or moved already
    if (errno == ETIMEDOUT) return false;
    // ENOSYS (before Linux 5.16), or a kernel that refuses the call otherwise:
    // the one-word fallback from now on, never a call that fails at once.
    no_waitv.store(true, std::memory_order_relaxed);
  }
  // One word (or no futex_waitv): sleep on the first, others seen within 1 ms.
  const auto slice =
      n == 1 ? timeout : std::min<std::chrono::nanoseconds>(timeout, std::chrono::milliseconds(1));
  if (!futex_wait(*words[0], keys[0], slice)) return slice < timeout;
  return true;
}

}  // namespace shmbus::detail
