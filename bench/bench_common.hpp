// The harness shared by shmbus-ipc-bench and shmbus-compare: two real
// processes (fork) pinned to their cores, a watchdog that kills a pair that
// stops making progress, ping-pong latency with one clock read per round trip,
// throughput with a sequence number checked on every message, and the physical
// limits of the machine (bare line, bare memcpy, raw futex, bare SPSC ring).
//
// Everything is inline: each benchmark is a few translation units that share
// the globals below (the control block is anonymous MAP_SHARED memory,
// inherited across fork).
#pragma once

#include <linux/futex.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <exception>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "shmbus/shmbus.hpp"

namespace shmbus_bench {

// ---- small utilities ----------------------------------------------------------

using Clock = std::chrono::steady_clock;

inline std::uint64_t now_ns() noexcept {
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
          .count());
}

constexpr std::uint64_t kTimeoutNs = 10'000'000'000ULL;  // any single wait
constexpr auto kTimeout = std::chrono::nanoseconds(kTimeoutNs);
constexpr int kTimeoutSeconds = 10;
// The parent kills a pair that shows no progress for this long. Longer than a
// child's own timeout, so that the child's more precise message wins.
constexpr std::uint64_t kNoProgressNs = 15'000'000'000ULL;
constexpr std::uint64_t kStop = ~std::uint64_t{0};
constexpr std::size_t kLine = 128;          // two cache lines: against adjacent-line prefetch
constexpr double kNearThresholdNs = 200.0;  // bare-line round trip, see BASELINES.md

inline std::string strprintf(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
inline std::string strprintf(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char buf[1024];
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  return buf;
}

inline std::string size_label(std::size_t n) {
  if (n >= (1u << 20) && n % (1u << 20) == 0) return std::to_string(n >> 20) + " MiB";
  if (n >= 1024 && n % 1024 == 0) return std::to_string(n >> 10) + " KiB";
  return std::to_string(n) + " B";
}

// 1234567 -> "1,234,567"
inline std::string group_digits(double v) {
  const long long n = std::llround(v);
  std::string s = std::to_string(n < 0 ? -n : n);
  for (int i = static_cast<int>(s.size()) - 3; i > 0; i -= 3)
    s.insert(static_cast<std::size_t>(i), ",");
  return n < 0 ? "-" + s : s;
}

inline std::string rate_label(double per_second, const char* unit) {
  if (per_second >= 1e9) return strprintf("%.2f G%s", per_second / 1e9, unit);
  if (per_second >= 1e6) return strprintf("%.2f M%s", per_second / 1e6, unit);
  if (per_second >= 1e3) return strprintf("%.1f k%s", per_second / 1e3, unit);
  return strprintf("%.0f %s", per_second, unit);
}

inline std::string ratio_label(double r) {
  if (!(r > 0) || !std::isfinite(r)) return "-";
  if (r < 0.1) return strprintf("1/%.0fx", 1.0 / r);  // e.g. zero-copy against a 1 MiB memcpy
  if (r >= 100) return strprintf("%.0fx", r);
  if (r >= 10) return strprintf("%.1fx", r);
  return strprintf("%.2fx", r);
}

// The same pause the library's spin loops use, so baselines and shmbus spin alike.
inline void cpu_pause() noexcept {
  shmbus::detail::cpu_relax();
}

// ---- the shared control block (anonymous MAP_SHARED, inherited across fork) ----

struct alignas(kLine) PaddedU64 {
  std::atomic<std::uint64_t> v;
};
struct alignas(kLine) PaddedU32 {
  std::atomic<std::uint32_t> v;
};
static_assert(sizeof(PaddedU64) == kLine && alignof(PaddedU64) == kLine);
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);
static_assert(std::atomic<std::uint32_t>::is_always_lock_free);
static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t), "futex word");

// One-way latency statistics, ns.
struct LatencyStats {
  std::uint64_t rounds = 0;
  double min = 0, p50 = 0, p99 = 0, p999 = 0, max = 0;
};

// An HDR-style log-bucketed histogram of nanosecond samples: exact below 128,
// then 64 linear sub-buckets per power of two (at most 1/64 = 1.6% wide), up
// to 2^40 ns. Fixed size, no allocation: it lives in the control block.
struct LogHistogram {
  static constexpr int kSubBits = 6;
  static constexpr std::uint64_t kSub = 1ULL << kSubBits;  // 64
  static constexpr std::uint64_t kExact = 2 * kSub;        // values below are exact
  static constexpr int kMaxBit = 40;                       // values >= 2^40 are clamped
  static constexpr std::size_t kBuckets = kExact + (kMaxBit - kSubBits - 1) * kSub;
  std::uint64_t counts[kBuckets];
  std::uint64_t total;
  double scale;  // multiply a bucket's bounds by this to get ns (0.5: round trips as one way)

  static std::size_t index(std::uint64_t v) noexcept {
    if (v < kExact) return static_cast<std::size_t>(v);
    if (v >= (1ULL << kMaxBit)) v = (1ULL << kMaxBit) - 1;
    const int top = 63 - __builtin_clzll(v);  // >= kSubBits + 1
    const std::uint64_t sub = (v >> (top - kSubBits)) & (kSub - 1);
    return static_cast<std::size_t>(kExact + static_cast<std::uint64_t>(top - kSubBits - 1) * kSub +
                                    sub);
  }
  // The bucket's smallest value and its width (raw units, before scale).
  static std::uint64_t lower(std::size_t i) noexcept {
    if (i < kExact) return i;
    const std::uint64_t k = (i - kExact) / kSub, sub = (i - kExact) % kSub;
    return (kSub + sub) << (k + 1);
  }
  static std::uint64_t width(std::size_t i) noexcept {
    return i < kExact ? 1 : 1ULL << ((i - kExact) / kSub + 1);
  }
  void clear(double s) noexcept {
    std::memset(counts, 0, sizeof counts);
    total = 0;
    scale = s;
  }
  void record(std::uint64_t v) noexcept {
    ++counts[index(v)];
    ++total;
  }
};
static_assert(std::is_trivially_copyable_v<LogHistogram>);

constexpr int kA = 0;  // pinger / producer
constexpr int kB = 1;  // ponger / consumer

struct Control {
  PaddedU64 ready[2];      // the side has attached (subscriber/publisher made)
  PaddedU64 heartbeat[2];  // progress, for the parent's watchdog (relaxed)
  PaddedU64 line;          // the bare line; also the memcpy baseline's flag
  PaddedU32 futex_word;    // raw futex ping-pong
  PaddedU64 ring_head;     // bare SPSC ring: written by the producer only
  PaddedU64 ring_tail;     // bare SPSC ring: written by the consumer only
  // Results: plain data written by a child before it exits; the parent reads
  // them after waitpid() has reaped it (process exit orders the writes).
  LatencyStats lat;
  LogHistogram hist;  // the samples behind `lat`
  PaddedU64 done;     // a side says it has finished (for transports that need an end ack)
  std::uint64_t t_start_ns;
  std::uint64_t t_end_ns;
  std::uint64_t received;
  std::uint64_t fetches;  // consumer: times it found new messages after running dry (0: unknown)
  char error[2][512];
};
static_assert(offsetof(Control, ring_tail) - offsetof(Control, ring_head) >= kLine,
              "head and tail on separate lines");

inline Control* g_ctl = nullptr;
inline int g_role = -1;              // in a child: kA or kB; -1 in the parent
inline bool g_yield_spin = false;    // --same-core: a spinner must hand the core to its peer
inline bool g_read_payload = false;  // --read-payload: throughput consumers read every line
inline const char* g_tool = "shmbus-bench";  // the program's name, for messages
// In a child: end with exit() rather than _exit(), so that atexit handlers and
// static destructors run (an iceoryx client must deregister from RouDi).
inline bool g_exit_normally = false;

inline void reset_control() {
  for (int k = 0; k < 2; ++k) {
    g_ctl->ready[k].v.store(0, std::memory_order_relaxed);
    g_ctl->heartbeat[k].v.store(0, std::memory_order_relaxed);
    g_ctl->error[k][0] = '\0';
  }
  g_ctl->line.v.store(0, std::memory_order_relaxed);
  g_ctl->futex_word.v.store(0, std::memory_order_relaxed);
  g_ctl->ring_head.v.store(0, std::memory_order_relaxed);
  g_ctl->ring_tail.v.store(0, std::memory_order_relaxed);
  g_ctl->lat = LatencyStats{};
  g_ctl->hist.clear(0.5);
  g_ctl->done.v.store(0, std::memory_order_relaxed);
  g_ctl->t_start_ns = g_ctl->t_end_ns = g_ctl->received = g_ctl->fetches = 0;
}

// Ends a child with an error message kept for the parent's report.
[[noreturn]] inline void fail(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
[[noreturn]] inline void fail(const char* fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (g_role == kA || g_role == kB) {
    std::snprintf(g_ctl->error[g_role], sizeof g_ctl->error[g_role], "%s", msg);
    std::fprintf(stderr, "%s: %s (pid %d): %s\n", g_tool, g_role == kA ? "side A" : "side B",
                 static_cast<int>(::getpid()), msg);
    if (g_exit_normally) std::exit(1);
    ::_exit(1);
  }
  std::fprintf(stderr, "%s: %s\n", g_tool, msg);
  std::exit(1);
}

inline void heartbeat(std::uint64_t i) noexcept {
  // Relaxed: only the watchdog reads it, to see that something moves.
  if ((i & 1023) == 0) g_ctl->heartbeat[g_role].v.store(i + 1, std::memory_order_relaxed);
}

// Spins until done() is true. No clock read on the fast path: the deadline is
// set only after the first 1024 polls, then checked every 1024 polls.
template <class Done>
inline void spin_until(Done&& done, const char* what, std::uint64_t arg) {
  std::uint32_t n = 0;
  std::uint64_t deadline = 0;
  while (!done()) {
    if (g_yield_spin)
      ::sched_yield();
    else
      cpu_pause();
    if ((++n & 1023) == 0) {
      const std::uint64_t t = now_ns();
      if (deadline == 0)
        deadline = t + kTimeoutNs;
      else if (t > deadline)
        fail("no answer within %d s while waiting for %s %" PRIu64, kTimeoutSeconds, what, arg);
    }
  }
}

// The handshake: each side says it has attached, then waits for its peer.
inline void handshake() {
  const int peer = 1 - g_role;
  // Release: pairs with the peer's acquire below; what we set up before
  // (a subscriber's group, a publisher's seat) is in place when it proceeds.
  g_ctl->ready[g_role].v.store(1, std::memory_order_release);
  spin_until([&] { return g_ctl->ready[peer].v.load(std::memory_order_acquire) != 0; },
             "the peer's handshake", 0);
}

inline void* map_shared(std::size_t bytes) {
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  if (p == MAP_FAILED) fail("mmap of %zu bytes: %s", bytes, std::strerror(errno));
  return p;
}

struct SharedBuffer {
  explicit SharedBuffer(std::size_t n) : bytes(std::max<std::size_t>(n, 1)) {
    data = static_cast<std::byte*>(map_shared(bytes));
  }
  ~SharedBuffer() { ::munmap(data, bytes); }
  SharedBuffer(const SharedBuffer&) = delete;
  SharedBuffer& operator=(const SharedBuffer&) = delete;
  std::size_t bytes;
  std::byte* data = nullptr;
};

// ---- payloads -----------------------------------------------------------------

// A payload: the sequence number in the first 8 bytes, a fixed pattern after.
inline void fill_pattern(std::byte* p, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i)
    p[i] = static_cast<std::byte>((i * 131 + 7) & 0xff);
}
inline void put_seq(std::byte* p, std::uint64_t seq) noexcept {
  std::memcpy(p, &seq, 8);
}
inline std::uint64_t get_seq(const std::byte* p) noexcept {
  std::uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}
// Reads one 8-byte word per cache line after the first: reading a payload in
// place costs one line transfer per 64 bytes, whatever is done with the words.
inline std::uint64_t line_sum(const std::byte* p, std::size_t n) noexcept {
  std::uint64_t s = 0;
  for (std::size_t off = 64; off + 8 <= n; off += 64) {
    std::uint64_t w;
    std::memcpy(&w, p + off, 8);
    s += w;
  }
  return s;
}

inline std::vector<std::byte> make_payload(std::size_t n) {
  std::vector<std::byte> v(n);
  fill_pattern(v.data(), n);
  return v;
}

// Exact percentiles of the samples (sorted here), scaled by `scale` (0.5: the
// samples are round trips and the figures one way). Also fills `hist`, when
// given, with the same samples.
inline LatencyStats one_way_stats(std::vector<std::uint64_t>& rt, double scale = 0.5,
                                  LogHistogram* hist = nullptr) {
  LatencyStats st;
  if (hist) {
    hist->clear(scale);
    for (const std::uint64_t v : rt)
      hist->record(v);
  }
  if (rt.empty()) return st;
  std::sort(rt.begin(), rt.end());
  const auto n = rt.size();
  // Nearest rank: the smallest sample with at least q of the samples at or below it.
  const auto pct = [&](double q) {
    auto idx = static_cast<std::size_t>(std::ceil(q * static_cast<double>(n)));
    idx = std::clamp<std::size_t>(idx, 1, n) - 1;
    return static_cast<double>(rt[idx]) * scale;
  };
  st.rounds = n;
  st.min = static_cast<double>(rt.front()) * scale;
  st.p50 = pct(0.50);
  st.p99 = pct(0.99);
  st.p999 = pct(0.999);
  st.max = static_cast<double>(rt.back()) * scale;
  return st;
}

// ---- process management (parent) ---------------------------------------------

inline pid_t g_child[2] = {0, 0};  // for the SIGINT handler
// Shm names of the topics created last, to unlink on SIGINT. A ring: at most
// two topics live at a time (each is removed when its scenario ends), and a
// stale name only makes shm_unlink fail with ENOENT. Names carry our pid.
constexpr int kCleanupSlots = 16;
inline char g_cleanup_names[kCleanupSlots][160];
inline int g_cleanup_next = 0;

// Remembers a /dev/shm name ("/name") to unlink if the run is interrupted.
inline void cleanup_on_interrupt(const std::string& shm_name) {
  std::snprintf(g_cleanup_names[g_cleanup_next++ % kCleanupSlots], sizeof g_cleanup_names[0], "%s",
                shm_name.c_str());
}

// A scratch directory and the files in it, removed on SIGINT/SIGTERM too.
inline char g_scratch_files[4][512];
inline char g_scratch_dir[512];

// A daemon the benchmark started (iox-roudi): stopped on SIGINT/SIGTERM too.
inline volatile pid_t g_daemon_pid = 0;
inline char g_daemon_pid_file[512];  // removed with it

// Async-signal-safe: SIGTERM, up to 3 s for it to end, then SIGKILL.
inline void stop_daemon_from_signal() {
  const pid_t d = g_daemon_pid;
  if (d <= 0) return;
  ::kill(d, SIGTERM);
  for (int i = 0; i < 300; ++i) {
    if (::waitpid(d, nullptr, WNOHANG) == d) break;
    timespec ts{0, 10'000'000};
    ::nanosleep(&ts, nullptr);
    if (i == 299) {
      ::kill(d, SIGKILL);
      ::waitpid(d, nullptr, 0);
    }
  }
  g_daemon_pid = 0;
  if (g_daemon_pid_file[0] != '\0') ::unlink(g_daemon_pid_file);
}

inline void on_interrupt(int sig) {
  for (pid_t p : g_child)
    if (p > 0) ::kill(p, SIGKILL);
  for (pid_t p : g_child)
    if (p > 0) ::waitpid(p, nullptr, 0);
  stop_daemon_from_signal();
  for (auto& name : g_cleanup_names)
    if (name[0] != '\0') ::shm_unlink(name);
  for (auto& f : g_scratch_files)
    if (f[0] != '\0') ::unlink(f);
  if (g_scratch_dir[0] != '\0') ::rmdir(g_scratch_dir);
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}

inline void pin_to(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (::sched_setaffinity(0, sizeof set, &set) != 0)
    fail("sched_setaffinity(cpu %d): %s", cpu, std::strerror(errno));
}

struct PairResult {
  bool ok = false;
  std::string error;
};

// Forks side A and side B, pinned to their CPUs, and waits for both with a
// watchdog. A child that fails or stops making progress gets its peer killed.
inline PairResult run_pair(const std::string& label, const std::function<void()>& side_a,
                           const std::function<void()>& side_b, int cpu_a, int cpu_b) {
  std::fprintf(stderr, "  running: %s\n", label.c_str());
  reset_control();
  std::fflush(stdout);
  std::fflush(stderr);
  sigset_t chld, old;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  ::sigprocmask(SIG_BLOCK, &chld, &old);
  const pid_t parent = ::getpid();
  const std::function<void()>* body[2] = {&side_a, &side_b};
  const int cpu[2] = {cpu_a, cpu_b};
  PairResult res;
  for (int k = 0; k < 2; ++k) {
    const pid_t pid = ::fork();
    if (pid < 0) {
      res.error = strprintf("fork: %s", std::strerror(errno));
      if (k == 1) {
        ::kill(g_child[0], SIGKILL);
        ::waitpid(g_child[0], nullptr, 0);
      }
      g_child[0] = g_child[1] = 0;
      ::sigprocmask(SIG_SETMASK, &old, nullptr);
      return res;
    }
    if (pid == 0) {
      g_role = k;
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(3);
      ::signal(SIGINT, SIG_DFL);
      ::signal(SIGTERM, SIG_DFL);
      ::sigprocmask(SIG_SETMASK, &old, nullptr);
      pin_to(cpu[k]);
      try {
        (*body[k])();
      } catch (const std::exception& e) {
        fail("%s", e.what());
      } catch (...) {
        fail("unknown exception");
      }
      if (g_exit_normally) std::exit(0);  // set by the body: it must deregister somewhere
      ::_exit(0);  // no destructors, no atexit, no stdio flush: the parent owns those
    }
    g_child[k] = pid;
  }

  bool alive[2] = {true, true};
  int status[2] = {0, 0};
  std::uint64_t last_hb[2] = {0, 0};
  std::uint64_t last_progress = now_ns();
  std::string why;
  const auto kill_alive = [&] {
    for (int k = 0; k < 2; ++k)
      if (alive[k]) {
        ::kill(g_child[k], SIGKILL);
        ::waitpid(g_child[k], &status[k], 0);
        alive[k] = false;
        status[k] = -1;  // killed by us
      }
  };
  while (alive[0] || alive[1]) {
    // Sleeps until a child ends, waking once a second for the watchdog: the
    // parent must not take cycles from the two pinned sides.
    timespec ts{1, 0};
    ::sigtimedwait(&chld, nullptr, &ts);
    for (int k = 0; k < 2; ++k) {
      if (!alive[k]) continue;
      int st = 0;
      if (::waitpid(g_child[k], &st, WNOHANG) == g_child[k]) {
        alive[k] = false;
        status[k] = st;
        if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0)) kill_alive();
      }
    }
    if (!alive[0] && !alive[1]) break;
    bool moved = false;
    for (int k = 0; k < 2; ++k) {
      const std::uint64_t hb = g_ctl->heartbeat[k].v.load(std::memory_order_relaxed) +
                               g_ctl->ready[k].v.load(std::memory_order_relaxed);
      if (hb != last_hb[k]) moved = true;
      last_hb[k] = hb;
    }
    if (moved) last_progress = now_ns();
    if (now_ns() - last_progress > kNoProgressNs) {
      why = strprintf("no progress for %llu s; killed both sides",
                      static_cast<unsigned long long>(kNoProgressNs / 1'000'000'000ULL));
      kill_alive();
    }
  }
  g_child[0] = g_child[1] = 0;
  // Drop a SIGCHLD still pending, then restore the mask.
  timespec zero{0, 0};
  while (::sigtimedwait(&chld, nullptr, &zero) > 0) {
  }
  ::sigprocmask(SIG_SETMASK, &old, nullptr);

  res.ok = why.empty();
  for (int k = 0; k < 2; ++k) {
    const char* side = k == kA ? "A" : "B";
    std::string e;
    if (g_ctl->error[k][0] != '\0') {
      e = g_ctl->error[k];
    } else if (status[k] == -1) {
      e = why.empty() ? "killed after its peer failed" : "killed by the watchdog";
    } else if (WIFSIGNALED(status[k])) {
      e = strprintf("killed by signal %d (%s)", WTERMSIG(status[k]),
                    strsignal(WTERMSIG(status[k])));
    } else if (WIFEXITED(status[k]) && WEXITSTATUS(status[k]) != 0) {
      e = strprintf("exited with status %d", WEXITSTATUS(status[k]));
    } else {
      continue;
    }
    res.ok = false;
    res.error += (res.error.empty() ? "" : "; ") + std::string("side ") + side + ": " + e;
  }
  if (!why.empty()) res.error += (res.error.empty() ? "" : "; ") + why;
  if (!res.ok) std::fprintf(stderr, "  FAILED: %s: %s\n", label.c_str(), res.error.c_str());
  return res;
}

// ---- topic names --------------------------------------------------------------

inline int g_topic_counter = 0;

// A topic owned by the parent for one scenario: created before fork, its name
// removed afterwards (and on SIGINT).
struct ScopedTopic {
  ScopedTopic(const std::string& role, const shmbus::TopicOptions& o) {
    const int n = g_topic_counter++;
    name = strprintf("ipcbench-%d-%d-%s", static_cast<int>(::getpid()), n, role.c_str());
    cleanup_on_interrupt("/" + shmbus::region_name("default", name));
    topic.emplace_back(shmbus::Topic::create(name, o));
  }
  ~ScopedTopic() {
    topic.clear();
    (void)shmbus::Topic::remove(name);
  }
  ScopedTopic(const ScopedTopic&) = delete;
  ScopedTopic& operator=(const ScopedTopic&) = delete;
  std::string name;
  std::vector<shmbus::Topic> topic;  // 0 or 1 (Topic has no default constructor)
};

// ---- latency scenarios (run in the children) ----------------------------------

struct LatencyPlan {
  std::uint64_t warmup = 0;
  std::uint64_t iters = 0;
  std::uint64_t duration_ns = 0;  // > 0: measure for this long instead (bracket)
  // Caps for slow transports (0: none). Warm-up ends after warmup_max_ns even
  // if fewer than `warmup` rounds ran; measuring ends after max_ns even if
  // fewer than `iters` rounds ran (the row reports how many it got).
  std::uint64_t warmup_max_ns = 0;
  std::uint64_t max_ns = 0;
};

// Side A's loop skeleton: one clock read per round trip, warm-up excluded.
// round_trip(i) sends ping i and waits for its pong. The stats and the
// histogram go to the control block.
template <class RoundTrip>
inline void pinger_loop(const LatencyPlan& plan, RoundTrip&& round_trip) {
  const std::uint64_t cap = plan.duration_ns ? 1'000'000 : plan.iters;
  std::vector<std::uint64_t> rt(cap);  // touched here, not while measuring
  std::uint64_t n = 0;
  const std::uint64_t t0 = now_ns();
  std::uint64_t t_prev = t0;
  std::uint64_t t_end = 0;
  bool warm = plan.warmup == 0;
  for (std::uint64_t i = 0;; ++i) {
    round_trip(i);
    const std::uint64_t t = now_ns();
    if (!warm &&
        (i + 1 >= plan.warmup || (plan.warmup_max_ns != 0 && t - t0 >= plan.warmup_max_ns))) {
      warm = true;  // this round was the last of the warm-up
    } else if (warm) {
      if (n == 0) t_end = t + (plan.duration_ns ? plan.duration_ns : plan.max_ns);
      rt[n++] = t - t_prev;
      if (n == cap || ((plan.duration_ns != 0 || plan.max_ns != 0) && t >= t_end)) break;
    }
    t_prev = t;
    heartbeat(i);
  }
  rt.resize(n);
  g_ctl->lat = one_way_stats(rt, 0.5, &g_ctl->hist);
}

// Bare line (size 0) and bare memcpy (size > 0) ping-pong over one shared line.
// A writes 2i+1, B answers 2i+2. With a payload, the sender copies it into the
// shared buffer before its flag store and the receiver reads it in place.
inline void bare_pinger(const LatencyPlan& plan, std::size_t size, std::byte* ping_buf,
                        const std::byte* pong_buf) {
  std::atomic<std::uint64_t>& line = g_ctl->line.v;
  auto src = make_payload(size);
  const std::uint64_t expect_sum = size ? line_sum(src.data(), size) : 0;
  handshake();
  pinger_loop(plan, [&](std::uint64_t i) {
    if (size) {
      put_seq(src.data(), i);
      std::memcpy(ping_buf, src.data(), size);
    }
    // Release: pairs with B's acquire load; the payload copy is visible to B.
    line.store(2 * i + 1, std::memory_order_release);
    spin_until([&] { return line.load(std::memory_order_acquire) == 2 * i + 2; }, "pong of round",
               i);
    if (size) {
      if (get_seq(pong_buf) != i || line_sum(pong_buf, size) != expect_sum)
        fail("bare memcpy: pong %" PRIu64 " carries seq %" PRIu64 " or a wrong payload", i,
             get_seq(pong_buf));
    }
  });
  line.store(kStop, std::memory_order_release);
}

inline void bare_ponger(std::size_t size, const std::byte* ping_buf, std::byte* pong_buf) {
  std::atomic<std::uint64_t>& line = g_ctl->line.v;
  auto src = make_payload(size);
  const std::uint64_t expect_sum = size ? line_sum(src.data(), size) : 0;
  handshake();
  for (std::uint64_t i = 0;; ++i) {
    std::uint64_t v = 0;
    // Acquire: pairs with A's release store.
    spin_until(
        [&] {
          v = line.load(std::memory_order_acquire);
          return v == 2 * i + 1 || v == kStop;
        },
        "ping of round", i);
    if (v == kStop) return;
    if (size) {
      if (get_seq(ping_buf) != i || line_sum(ping_buf, size) != expect_sum)
        fail("bare memcpy: ping %" PRIu64 " carries seq %" PRIu64 " or a wrong payload", i,
             get_seq(ping_buf));
      put_seq(src.data(), i);
      std::memcpy(pong_buf, src.data(), size);
    }
    line.store(2 * i + 2, std::memory_order_release);  // release: pairs with A's acquire
    heartbeat(i);
  }
}

inline long futex(std::atomic<std::uint32_t>& w, int op, std::uint32_t val, const timespec* ts) {
  return ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&w), op, val, ts, nullptr, 0);
}

// Waits on the shared futex word until it holds `want` (or kStop32).
constexpr std::uint32_t kStop32 = ~std::uint32_t{0};
inline std::uint32_t futex_wait_for(std::atomic<std::uint32_t>& w, std::uint32_t want,
                                    std::uint64_t i) {
  std::uint64_t deadline = 0;
  for (;;) {
    // Acquire: pairs with the peer's release store before its wake.
    const std::uint32_t v = w.load(std::memory_order_acquire);
    if (v == want || v == kStop32) return v;
    timespec ts{1, 0};
    futex(w, FUTEX_WAIT, v, &ts);  // shared (not private): the word is in MAP_SHARED memory
    const std::uint64_t t = now_ns();
    if (deadline == 0)
      deadline = t + kTimeoutNs;
    else if (t > deadline)
      fail("raw futex: no answer within %d s in round %" PRIu64, kTimeoutSeconds, i);
  }
}

inline void futex_pinger(const LatencyPlan& plan) {
  std::atomic<std::uint32_t>& w = g_ctl->futex_word.v;
  handshake();
  pinger_loop(plan, [&](std::uint64_t i) {
    const auto k = static_cast<std::uint32_t>(i % 0x7fff'0000u);
    w.store(2 * k + 1, std::memory_order_release);
    futex(w, FUTEX_WAKE, 1, nullptr);
    futex_wait_for(w, 2 * k + 2, i);
  });
  w.store(kStop32, std::memory_order_release);
  futex(w, FUTEX_WAKE, 1, nullptr);
}

inline void futex_ponger() {
  std::atomic<std::uint32_t>& w = g_ctl->futex_word.v;
  handshake();
  for (std::uint64_t i = 0;; ++i) {
    const auto k = static_cast<std::uint32_t>(i % 0x7fff'0000u);
    if (futex_wait_for(w, 2 * k + 1, i) == kStop32) return;
    w.store(2 * k + 2, std::memory_order_release);
    futex(w, FUTEX_WAKE, 1, nullptr);
    heartbeat(i);
  }
}

// shmbus zero-copy ping-pong: loan, write the sequence number in the first 8
// bytes (the rest of the payload is not touched, as in iceoryx zero-copy),
// publish; the peer receives a Sample, checks the number in place, releases.
// How a shmbus side waits: the strategy, and the spin budget of SpinFutex and
// SpinYield (negative: the library's default, or 0 when both sides share a core,
// where spinning only delays the peer).
struct ShmbusWait {
  shmbus::WaitStrategy wait = shmbus::WaitStrategy::SpinFutex;
  std::int64_t spin_ns = -1;
};

// Sets the wait strategy and spin budget of either side's options from `w`.
template <class Options>
inline Options with_wait(Options o, const ShmbusWait& w) {
  o.wait = w.wait;
  if (w.spin_ns >= 0)
    o.spin = std::chrono::nanoseconds(w.spin_ns);
  else if (g_yield_spin)
    o.spin = std::chrono::nanoseconds(0);
  return o;
}

inline shmbus::PublisherOptions publisher_options(const ShmbusWait& w) {
  shmbus::PublisherOptions po = with_wait(shmbus::PublisherOptions{}, w);
  po.timeout = kTimeout;
  return po;
}

inline shmbus::SubscriberOptions subscriber_options(const ShmbusWait& w) {
  return with_wait(shmbus::SubscriberOptions{}, w);
}

// The pinger ends the ping-pong with a message whose sequence number is kStop
// (the ponger does not answer it), so the ponger needs no round count.
inline void shmbus_pinger(const LatencyPlan& plan, std::size_t size, const std::string& ping_name,
                          const std::string& pong_name, ShmbusWait w) {
  shmbus::Topic ping = shmbus::Topic::open(ping_name);
  shmbus::Topic pong = shmbus::Topic::open(pong_name);
  shmbus::Publisher pub = ping.publisher(publisher_options(w));
  auto sub = pong.subscriber(
      subscriber_options(w));  // attached before the handshake: no pong can be missed
  handshake();
  pinger_loop(plan, [&](std::uint64_t i) {
    shmbus::Loan loan = pub.loan(size);
    if (!loan)
      fail("shmbus: loan(%zu) for ping %" PRIu64 ": %s", size, i, shmbus::to_string(loan.status()));
    put_seq(loan.data().data(), i);
    if (const auto st = loan.publish(); st != shmbus::Status::Ok)
      fail("shmbus: publish of ping %" PRIu64 ": %s", i, shmbus::to_string(st));
    shmbus::Sample s;
    if (const auto st = sub->receive(s, kTimeout); st != shmbus::Status::Ok)
      fail("shmbus: receive of pong %" PRIu64 ": %s", i, shmbus::to_string(st));
    if (s.data().size() != size || get_seq(s.data().data()) != i)
      fail("shmbus: expected pong %" PRIu64 " of %zu B, got seq %" PRIu64
           " of %zu B (ring sequence %" PRIu64 ")",
           i, size, s.data().size() >= 8 ? get_seq(s.data().data()) : kStop, s.data().size(),
           s.sequence());
    s.release();
  });
  shmbus::Loan loan = pub.loan(size);
  if (!loan)
    fail("shmbus: loan(%zu) for the stop message: %s", size, shmbus::to_string(loan.status()));
  put_seq(loan.data().data(), kStop);
  if (const auto st = loan.publish(); st != shmbus::Status::Ok)
    fail("shmbus: publish of the stop message: %s", shmbus::to_string(st));
}

inline void shmbus_ponger(std::size_t size, const std::string& ping_name,
                          const std::string& pong_name, ShmbusWait w) {
  shmbus::Topic ping = shmbus::Topic::open(ping_name);
  shmbus::Topic pong = shmbus::Topic::open(pong_name);
  shmbus::Publisher pub = pong.publisher(publisher_options(w));
  auto sub = ping.subscriber(subscriber_options(w));
  handshake();
  for (std::uint64_t i = 0;; ++i) {
    {
      shmbus::Sample s;
      if (const auto st = sub->receive(s, kTimeout); st != shmbus::Status::Ok)
        fail("shmbus: receive of ping %" PRIu64 ": %s", i, shmbus::to_string(st));
      if (s.data().size() == size && get_seq(s.data().data()) == kStop) return;
      if (s.data().size() != size || get_seq(s.data().data()) != i)
        fail("shmbus: expected ping %" PRIu64 " of %zu B, got seq %" PRIu64
             " of %zu B (ring sequence %" PRIu64 ")",
             i, size, s.data().size() >= 8 ? get_seq(s.data().data()) : kStop, s.data().size(),
             s.sequence());
    }  // released
    shmbus::Loan loan = pub.loan(size);
    if (!loan)
      fail("shmbus: loan(%zu) for pong %" PRIu64 ": %s", size, i, shmbus::to_string(loan.status()));
    put_seq(loan.data().data(), i);
    if (const auto st = loan.publish(); st != shmbus::Status::Ok)
      fail("shmbus: publish of pong %" PRIu64 ": %s", i, shmbus::to_string(st));
    heartbeat(i);
  }
}

// ---- throughput scenarios -----------------------------------------------------

// The bare SPSC ring: head and tail on separate 128-byte lines, each side
// caching the other's index and reloading it only when the ring looks full or
// empty; each side publishes its index after every `publish_every` messages
// (1: per message), and always before it waits.
struct BareRing {
  std::byte* slots;
  std::size_t stride;
  std::uint64_t capacity;  // power of two, > publish_every
  std::uint64_t publish_every;
  std::byte* slot(std::uint64_t i) const { return slots + (i & (capacity - 1)) * stride; }
};

inline void ring_producer(const BareRing& r, std::uint64_t count, std::size_t size) {
  std::atomic<std::uint64_t>& head = g_ctl->ring_head.v;
  std::atomic<std::uint64_t>& tail = g_ctl->ring_tail.v;
  auto src = make_payload(size);
  handshake();
  g_ctl->t_start_ns = now_ns();
  std::uint64_t tail_cache = 0;
  for (std::uint64_t h = 0; h < count; ++h) {
    if (h - tail_cache == r.capacity) {
      head.store(h, std::memory_order_release);  // all we wrote is visible before we wait
      // Acquire: pairs with the consumer's release of tail; its read of the
      // slot is done before we overwrite it.
      spin_until(
          [&] {
            tail_cache = tail.load(std::memory_order_acquire);
            return h - tail_cache < r.capacity;
          },
          "room for message", h);
    }
    put_seq(src.data(), h);
    std::memcpy(r.slot(h), src.data(), size);
    // Release: pairs with the consumer's acquire of head; the slot is written.
    if ((h + 1) % r.publish_every == 0) head.store(h + 1, std::memory_order_release);
    heartbeat(h);
  }
  head.store(count, std::memory_order_release);
}

// With --read-payload, reads one word per cache line of a message in place and
// checks it against the pattern; false if it does not match.
inline bool payload_ok(const std::byte* p, std::size_t n, std::uint64_t expect_sum) noexcept {
  return !g_read_payload || line_sum(p, n) == expect_sum;
}

inline std::uint64_t pattern_sum(std::size_t size) {
  return line_sum(make_payload(size).data(), size);
}

inline void ring_consumer(const BareRing& r, std::uint64_t count, std::size_t size) {
  const std::uint64_t expect_sum = pattern_sum(size);
  std::atomic<std::uint64_t>& head = g_ctl->ring_head.v;
  std::atomic<std::uint64_t>& tail = g_ctl->ring_tail.v;
  handshake();
  std::uint64_t head_cache = 0;
  std::uint64_t fetches = 0;
  for (std::uint64_t t = 0; t < count; ++t) {
    if (t == head_cache) {
      ++fetches;
      tail.store(t, std::memory_order_release);  // free what we read before we wait
      // Acquire: pairs with the producer's release of head.
      spin_until(
          [&] {
            head_cache = head.load(std::memory_order_acquire);
            return head_cache != t;
          },
          "message", t);
    }
    if (get_seq(r.slot(t)) != t || !payload_ok(r.slot(t), size, expect_sum))
      fail("bare ring: expected seq %" PRIu64 ", got %" PRIu64 " (or a wrong payload)", t,
           get_seq(r.slot(t)));
    // Release: pairs with the producer's acquire of tail.
    if ((t + 1) % r.publish_every == 0) tail.store(t + 1, std::memory_order_release);
    heartbeat(t);
  }
  g_ctl->t_end_ns = now_ns();
  g_ctl->received = count;
  g_ctl->fetches = fetches;
}

// publish() copies the payload into the slot; with `loan`, the producer loans
// the slot and writes the whole payload in place (the zero-copy API; the same
// bytes are written either way).
inline void shmbus_producer(const std::string& name, std::uint64_t count, std::size_t size,
                            ShmbusWait w, bool loan = false) {
  shmbus::Topic topic = shmbus::Topic::open(name);
  shmbus::Publisher pub = topic.publisher(publisher_options(w));
  auto src = make_payload(size);
  const std::span<const std::byte> msg(src.data(), size);
  handshake();  // the consumer's subscriber is attached: it gates us from here on
  g_ctl->t_start_ns = now_ns();
  for (std::uint64_t i = 0; i < count; ++i) {
    put_seq(src.data(), i);
    if (loan) {
      shmbus::Loan l = pub.loan(size);
      if (!l)
        fail("shmbus: loan(%zu) for message %" PRIu64 ": %s", size, i,
             shmbus::to_string(l.status()));
      std::memcpy(l.data().data(), src.data(), size);
      if (const auto st = l.publish(); st != shmbus::Status::Ok)
        fail("shmbus: publish of message %" PRIu64 ": %s", i, shmbus::to_string(st));
    } else if (const auto st = pub.publish(msg); st != shmbus::Status::Ok) {
      fail("shmbus: publish of message %" PRIu64 ": %s", i, shmbus::to_string(st));
    }
    heartbeat(i);
  }
}

inline void shmbus_consumer(const std::string& name, std::uint64_t count, std::size_t size,
                            ShmbusWait w, std::size_t batch) {
  shmbus::Topic topic = shmbus::Topic::open(name);
  auto sub = topic.subscriber(subscriber_options(w));
  const std::uint64_t expect_sum = pattern_sum(size);
  handshake();
  const auto bad = [&](std::uint64_t want, std::span<const std::byte> d, std::uint64_t ring_seq) {
    fail("shmbus: expected message %" PRIu64 " of %zu B, got seq %" PRIu64
         " of %zu B (ring sequence %" PRIu64 ")%s",
         want, size, d.size() >= 8 ? get_seq(d.data()) : kStop, d.size(), ring_seq,
         d.size() == size && get_seq(d.data()) == want ? ": payload differs from what was sent"
                                                       : "");
  };
  std::uint64_t i = 0;
  if (batch <= 1) {
    shmbus::Sample s;
    for (; i < count; ++i) {
      if (const auto st = sub->receive(s, kTimeout); st != shmbus::Status::Ok)
        fail("shmbus: receive of message %" PRIu64 ": %s", i, shmbus::to_string(st));
      const auto d = s.data();
      if (d.size() != size || get_seq(d.data()) != i || !payload_ok(d.data(), size, expect_sum))
        bad(i, d, s.sequence());
      s.release();
      heartbeat(i);
    }
  } else {
    shmbus::Batch b;
    std::uint64_t batches = 0;
    while (i < count) {
      ++batches;
      if (const auto st = sub->receive_batch(b, batch, kTimeout); st != shmbus::Status::Ok)
        fail("shmbus: receive_batch at message %" PRIu64 ": %s", i, shmbus::to_string(st));
      for (std::size_t j = 0; j < b.size(); ++j, ++i) {
        const auto d = b.data(j);
        if (d.size() != size || get_seq(d.data()) != i || !payload_ok(d.data(), size, expect_sum))
          bad(i, d, b.first_sequence() + j);
      }
      b.release();
      heartbeat(i);
    }
    if (i != count) fail("shmbus: received %" PRIu64 " messages, %" PRIu64 " expected", i, count);
    g_ctl->fetches = batches;
  }
  g_ctl->t_end_ns = now_ns();
  g_ctl->received = i;
}

// ---- command line -------------------------------------------------------------

[[noreturn]] inline void usage_error(const std::string& msg) {
  std::fprintf(stderr, "%s: %s\n(try --help)\n", g_tool, msg.c_str());
  std::exit(2);
}

// One command-line option: "--opt=value" or "--opt value". The loop index is
// advanced past a separate value when value() takes it.
struct Arg {
  std::string name;
  std::string inline_value;
  bool has_inline = false;
  int argc;
  char** argv;
  int& i;
  Arg(int c, char** v, int& index) : argc(c), argv(v), i(index) {
    name = argv[i];
    if (const auto eq = name.find('='); name.rfind("--", 0) == 0 && eq != std::string::npos) {
      inline_value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_inline = true;
    }
  }
  std::string value() {
    if (has_inline) return inline_value;
    if (i + 1 >= argc) usage_error(name + " needs a value");
    return argv[++i];
  }
};

inline std::uint64_t parse_count(const std::string& opt, const std::string& v) {
  char* end = nullptr;
  errno = 0;
  const unsigned long long n = std::strtoull(v.c_str(), &end, 10);
  if (v.empty() || errno != 0 || *end != '\0' || v[0] == '-' || n == 0)
    usage_error(opt + " wants a positive whole number, got '" + v + "'");
  return n;
}

inline int parse_cpu(const std::string& v) {
  char* end = nullptr;
  errno = 0;
  const long n = std::strtol(v.c_str(), &end, 10);
  if (v.empty() || errno != 0 || *end != '\0' || n < 0 || n >= CPU_SETSIZE)
    usage_error("--cores wants two CPU numbers, e.g. 0,1; got '" + v + "'");
  return static_cast<int>(n);
}

inline std::size_t parse_size(const std::string& tok) {
  char* end = nullptr;
  errno = 0;
  const unsigned long long n = std::strtoull(tok.c_str(), &end, 10);
  if (end == tok.c_str() || errno != 0 || tok[0] == '-') usage_error("bad size '" + tok + "'");
  std::string suf(end);
  for (auto& c : suf)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  unsigned long long mult = 1;
  if (suf.empty() || suf == "b")
    mult = 1;
  else if (suf == "k" || suf == "kib" || suf == "kb")
    mult = 1024;
  else if (suf == "m" || suf == "mib" || suf == "mb")
    mult = 1024 * 1024;
  else
    usage_error("bad size suffix in '" + tok + "' (use B, KiB or MiB)");
  const unsigned long long bytes = n * mult;
  if (bytes < 8 || bytes > (64ULL << 20))
    usage_error("size '" + tok + "' must be between 8 B (the sequence number) and 64 MiB");
  return static_cast<std::size_t>(bytes);
}

inline std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::size_t b = 0;
  for (;;) {
    const std::size_t e = s.find(sep, b);
    out.push_back(s.substr(b, e == std::string::npos ? std::string::npos : e - b));
    if (e == std::string::npos) break;
    b = e + 1;
  }
  return out;
}

// A --sections list: sets the flag of each section named in `list` and clears
// the others; an unknown name is a usage error that lists the known ones.
inline void parse_sections(const std::string& list,
                           std::initializer_list<std::pair<const char*, bool*>> sections) {
  std::string known;
  for (const auto& [name, flag] : sections) {
    *flag = false;
    known += (known.empty() ? "" : ", ") + std::string(name);
  }
  for (const auto& t : split(list, ',')) {
    bool found = false;
    for (const auto& [name, flag] : sections)
      if (t == name) *flag = found = true;
    if (!found) usage_error("unknown section '" + t + "' (" + known + ")");
  }
}

// ---- machine info -------------------------------------------------------------

struct MachineInfo {
  std::string cpu_model, cpu_family, kernel, compiler, date;
  long nproc = 0;
  bool hypervisor = false;
};

inline MachineInfo machine_info() {
  MachineInfo m;
  m.nproc = ::sysconf(_SC_NPROCESSORS_ONLN);
  std::ifstream f("/proc/cpuinfo");
  std::string line, family, model;
  while (std::getline(f, line)) {
    const auto colon = line.find(':');
    if (colon == std::string::npos) {
      if (!m.cpu_model.empty()) break;  // first processor only
      continue;
    }
    std::string key = line.substr(0, colon);
    while (!key.empty() && (key.back() == ' ' || key.back() == '\t'))
      key.pop_back();
    std::string v = line.substr(colon + 1);
    if (!v.empty() && v[0] == ' ') v.erase(0, 1);
    if (key == "model name")
      m.cpu_model = v;
    else if (key == "cpu family")
      family = v;
    else if (key == "model")
      model = v;
    else if (key == "flags")
      m.hypervisor = (" " + v + " ").find(" hypervisor ") != std::string::npos;
  }
  if (!family.empty()) m.cpu_family = "family " + family + " model " + model;
  utsname u{};
  if (::uname(&u) == 0) m.kernel = std::string(u.sysname) + " " + u.release + " " + u.machine;
#if defined(__clang__)
  m.compiler = std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  m.compiler = std::string("g++ ") + __VERSION__;
#else
  m.compiler = "unknown";
#endif
  char buf[64];
  const std::time_t t = std::time(nullptr);
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S %Z", std::localtime(&t));
  m.date = buf;
  return m;
}

inline const char* state_of(double rt_ns) {
  return rt_ns < kNearThresholdNs ? "near" : "far";
}

// The 1-minute load average: other processes compete for the two cores, which
// the bracket (a placement check) does not see.
inline double load_average() {
  double l = -1;
  if (FILE* f = std::fopen("/proc/loadavg", "r")) {
    if (std::fscanf(f, "%lf", &l) != 1) l = -1;
    std::fclose(f);
  }
  return l;
}

inline std::string json_escape(const std::string& s) {
  std::string o;
  for (const char c : s) {
    switch (c) {
      case '"':
        o += "\\\"";
        break;
      case '\\':
        o += "\\\\";
        break;
      case '\n':
        o += "\\n";
        break;
      case '\t':
        o += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20)
          o += strprintf("\\u%04x", c);
        else
          o += c;
    }
  }
  return o;
}

}  // namespace shmbus_bench
