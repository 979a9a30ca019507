// shmbus-ipc-bench: cross-process latency and throughput of shmbus, measured
// beside the physical limits of the same machine in the same run.
//
// Every figure comes from two real processes (fork), pinned to separate cores
// unless --same-core. Latency is a ping-pong: one steady_clock read per round
// trip, warm-up excluded, one way = round trip / 2, percentiles (never means).
// Throughput is one producer process and one consumer process streaming a fixed
// count of messages, each row repeated round-robin (median and range reported:
// an SPSC stream is bimodal, see "msgs per consumer fetch"). Every message
// carries a sequence number that the receiver checks; a mismatch, a lost
// message or a hang (no answer within 10 s) fails the scenario with a message,
// the other scenarios still run, and the run exits with status 1.
//
// Baselines, in the same run (ratios taken across runs are not comparable):
//   bare line    two processes ping-ponging one cache line (the limit)
//   bare memcpy  the same, plus a memcpy of the payload into shared memory by
//                the sender and a read of it in place by the receiver
//   raw futex    futex wait/wake ping-pong (the floor of any blocking design)
//   bare ring    an SPSC ring in shared memory, index published per message
//                (and, as an upper bound, once per 16 messages)
// and a ~20 ms bare-line "bracket" at the start and end that tags the run
// "near" (< 200 ns round trip) or "far": the host moves the two vCPUs, and
// every figure moves with it, so compare only runs in the same state.

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
#include <span>
#include <string>
#include <vector>

#include "shmbus/shmbus.hpp"

#ifndef SHMBUS_BENCH_VERSION
#define SHMBUS_BENCH_VERSION "unknown"
#endif
#ifndef SHMBUS_BENCH_BUILD
#define SHMBUS_BENCH_BUILD "unknown"
#endif

namespace {

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
constexpr std::size_t kLine = 128;  // two cache lines: against adjacent-line prefetch
constexpr double kNearThresholdNs = 200.0;  // bare-line round trip, see BASELINES.md

std::string strprintf(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
std::string strprintf(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char buf[1024];
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  return buf;
}

std::string size_label(std::size_t n) {
  if (n >= (1u << 20) && n % (1u << 20) == 0) return std::to_string(n >> 20) + " MiB";
  if (n >= 1024 && n % 1024 == 0) return std::to_string(n >> 10) + " KiB";
  return std::to_string(n) + " B";
}

// 1234567 -> "1,234,567"
std::string group_digits(double v) {
  const long long n = std::llround(v);
  std::string s = std::to_string(n < 0 ? -n : n);
  for (int i = static_cast<int>(s.size()) - 3; i > 0; i -= 3) s.insert(static_cast<std::size_t>(i), ",");
  return n < 0 ? "-" + s : s;
}

std::string rate_label(double per_second, const char* unit) {
  if (per_second >= 1e9) return strprintf("%.2f G%s", per_second / 1e9, unit);
  if (per_second >= 1e6) return strprintf("%.2f M%s", per_second / 1e6, unit);
  if (per_second >= 1e3) return strprintf("%.1f k%s", per_second / 1e3, unit);
  return strprintf("%.0f %s", per_second, unit);
}

std::string ratio_label(double r) {
  if (!(r > 0) || !std::isfinite(r)) return "-";
  if (r < 0.1) return strprintf("1/%.0fx", 1.0 / r);  // e.g. zero-copy against a 1 MiB memcpy
  if (r >= 100) return strprintf("%.0fx", r);
  if (r >= 10) return strprintf("%.1fx", r);
  return strprintf("%.2fx", r);
}

// The same pause the library's spin loops use, so baselines and shmbus spin alike.
inline void cpu_pause() noexcept { shmbus::detail::cpu_relax(); }

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
  std::uint64_t t_start_ns;
  std::uint64_t t_end_ns;
  std::uint64_t received;
  std::uint64_t fetches;  // consumer: times it found new messages after running dry (0: unknown)
  char error[2][512];
};
static_assert(offsetof(Control, ring_tail) - offsetof(Control, ring_head) >= kLine,
              "head and tail on separate lines");

Control* g_ctl = nullptr;
int g_role = -1;            // in a child: kA or kB; -1 in the parent
bool g_yield_spin = false;  // --same-core: a spinner must hand the core to its peer
bool g_read_payload = false;  // --read-payload: throughput consumers read every line

void reset_control() {
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
  g_ctl->t_start_ns = g_ctl->t_end_ns = g_ctl->received = g_ctl->fetches = 0;
}

// Ends a child with an error message kept for the parent's report.
[[noreturn]] void fail(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
[[noreturn]] void fail(const char* fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (g_role == kA || g_role == kB) {
    std::snprintf(g_ctl->error[g_role], sizeof g_ctl->error[g_role], "%s", msg);
    std::fprintf(stderr, "shmbus-ipc-bench: %s (pid %d): %s\n",
                 g_role == kA ? "side A" : "side B", static_cast<int>(::getpid()), msg);
    ::_exit(1);
  }
  std::fprintf(stderr, "shmbus-ipc-bench: %s\n", msg);
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
void handshake() {
  const int peer = 1 - g_role;
  // Release: pairs with the peer's acquire below; what we set up before
  // (a subscriber's group, a publisher's seat) is in place when it proceeds.
  g_ctl->ready[g_role].v.store(1, std::memory_order_release);
  spin_until([&] { return g_ctl->ready[peer].v.load(std::memory_order_acquire) != 0; },
             "the peer's handshake", 0);
}

void* map_shared(std::size_t bytes) {
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_POPULATE,
                   -1, 0);
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
void fill_pattern(std::byte* p, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) p[i] = static_cast<std::byte>((i * 131 + 7) & 0xff);
}
inline void put_seq(std::byte* p, std::uint64_t seq) noexcept { std::memcpy(p, &seq, 8); }
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

std::vector<std::byte> make_payload(std::size_t n) {
  std::vector<std::byte> v(n);
  fill_pattern(v.data(), n);
  return v;
}

LatencyStats one_way_stats(std::vector<std::uint64_t>& rt) {
  LatencyStats st;
  if (rt.empty()) return st;
  std::sort(rt.begin(), rt.end());
  const auto n = rt.size();
  // Nearest rank: the smallest sample with at least q of the samples at or below it.
  const auto pct = [&](double q) {
    auto idx = static_cast<std::size_t>(std::ceil(q * static_cast<double>(n)));
    idx = std::clamp<std::size_t>(idx, 1, n) - 1;
    return static_cast<double>(rt[idx]) / 2.0;
  };
  st.rounds = n;
  st.min = static_cast<double>(rt.front()) / 2.0;
  st.p50 = pct(0.50);
  st.p99 = pct(0.99);
  st.p999 = pct(0.999);
  st.max = static_cast<double>(rt.back()) / 2.0;
  return st;
}

// ---- process management (parent) ---------------------------------------------

pid_t g_child[2] = {0, 0};  // for the SIGINT handler
// Shm names of the topics created last, to unlink on SIGINT. A ring: at most
// two topics live at a time (each is removed when its scenario ends), and a
// stale name only makes shm_unlink fail with ENOENT. Names carry our pid.
constexpr int kCleanupSlots = 16;
char g_cleanup_names[kCleanupSlots][160];

void on_interrupt(int sig) {
  for (pid_t p : g_child)
    if (p > 0) ::kill(p, SIGKILL);
  for (auto& name : g_cleanup_names)
    if (name[0] != '\0') ::shm_unlink(name);
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}

void pin_to(int cpu) {
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
PairResult run_pair(const std::string& label, const std::function<void()>& side_a,
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
      e = strprintf("killed by signal %d (%s)", WTERMSIG(status[k]), strsignal(WTERMSIG(status[k])));
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

int g_topic_counter = 0;

// A topic owned by the parent for one scenario: created before fork, its name
// removed afterwards (and on SIGINT).
struct ScopedTopic {
  ScopedTopic(const std::string& role, const shmbus::TopicOptions& o) {
    const int n = g_topic_counter++;
    name = strprintf("ipcbench-%d-%d-%s", static_cast<int>(::getpid()), n, role.c_str());
    const std::string shm = "/" + shmbus::region_name("default", name);
    std::snprintf(g_cleanup_names[n % kCleanupSlots], sizeof g_cleanup_names[0], "%s", shm.c_str());
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
};

// Side A's loop skeleton: one clock read per round trip, warm-up excluded.
template <class RoundTrip>
void pinger_loop(const LatencyPlan& plan, RoundTrip&& round_trip) {
  const std::uint64_t cap = plan.duration_ns ? 1'000'000 : plan.iters;
  std::vector<std::uint64_t> rt(cap);  // touched here, not while measuring
  std::uint64_t n = 0;
  std::uint64_t t_prev = now_ns();
  std::uint64_t t_end = 0;
  for (std::uint64_t i = 0;; ++i) {
    round_trip(i);
    const std::uint64_t t = now_ns();
    if (i >= plan.warmup) {
      if (n == 0) t_end = t + plan.duration_ns;
      rt[n++] = t - t_prev;
      if (n == cap || (plan.duration_ns != 0 && t >= t_end)) break;
    }
    t_prev = t;
    heartbeat(i);
  }
  rt.resize(n);
  g_ctl->lat = one_way_stats(rt);
}

// Bare line (size 0) and bare memcpy (size > 0) ping-pong over one shared line.
// A writes 2i+1, B answers 2i+2. With a payload, the sender copies it into the
// shared buffer before its flag store and the receiver reads it in place.
void bare_pinger(const LatencyPlan& plan, std::size_t size, std::byte* ping_buf,
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

void bare_ponger(std::size_t size, const std::byte* ping_buf, std::byte* pong_buf) {
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

long futex(std::atomic<std::uint32_t>& w, int op, std::uint32_t val, const timespec* ts) {
  return ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&w), op, val, ts, nullptr, 0);
}

// Waits on the shared futex word until it holds `want` (or kStop32).
constexpr std::uint32_t kStop32 = ~std::uint32_t{0};
std::uint32_t futex_wait_for(std::atomic<std::uint32_t>& w, std::uint32_t want, std::uint64_t i) {
  std::uint64_t deadline = 0;
  for (;;) {
    // Acquire: pairs with the peer's release store before its wake.
    const std::uint32_t v = w.load(std::memory_order_acquire);
    if (v == want || v == kStop32) return v;
    timespec ts{1, 0};
    futex(w, FUTEX_WAIT, v, &ts);  // shared (not private): the word is in MAP_SHARED memory
    const std::uint64_t t = now_ns();
    if (deadline == 0) deadline = t + kTimeoutNs;
    else if (t > deadline)
      fail("raw futex: no answer within %d s in round %" PRIu64, kTimeoutSeconds, i);
  }
}

void futex_pinger(const LatencyPlan& plan) {
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

void futex_ponger() {
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
void shmbus_pinger(const LatencyPlan& plan, std::size_t size, const std::string& ping_name,
                   const std::string& pong_name, shmbus::WaitStrategy wait) {
  shmbus::Topic ping = shmbus::Topic::open(ping_name);
  shmbus::Topic pong = shmbus::Topic::open(pong_name);
  shmbus::PublisherOptions po;
  po.wait = wait;
  if (g_yield_spin) po.spin = std::chrono::nanoseconds(0);  // one core: spinning only delays the peer
  po.timeout = kTimeout;
  shmbus::Publisher pub = ping.publisher(po);
  shmbus::SubscriberOptions so;
  so.wait = wait;
  if (g_yield_spin) so.spin = std::chrono::nanoseconds(0);
  auto sub = pong.subscriber(so);  // attached before the handshake: no pong can be missed
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
}

void shmbus_ponger(std::uint64_t total, std::size_t size, const std::string& ping_name,
                   const std::string& pong_name, shmbus::WaitStrategy wait) {
  shmbus::Topic ping = shmbus::Topic::open(ping_name);
  shmbus::Topic pong = shmbus::Topic::open(pong_name);
  shmbus::PublisherOptions po;
  po.wait = wait;
  if (g_yield_spin) po.spin = std::chrono::nanoseconds(0);  // one core: spinning only delays the peer
  po.timeout = kTimeout;
  shmbus::Publisher pub = pong.publisher(po);
  shmbus::SubscriberOptions so;
  so.wait = wait;
  if (g_yield_spin) so.spin = std::chrono::nanoseconds(0);
  auto sub = ping.subscriber(so);
  handshake();
  for (std::uint64_t i = 0; i < total; ++i) {
    {
      shmbus::Sample s;
      if (const auto st = sub->receive(s, kTimeout); st != shmbus::Status::Ok)
        fail("shmbus: receive of ping %" PRIu64 ": %s", i, shmbus::to_string(st));
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

void ring_producer(const BareRing& r, std::uint64_t count, std::size_t size) {
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

std::uint64_t pattern_sum(std::size_t size) { return line_sum(make_payload(size).data(), size); }

void ring_consumer(const BareRing& r, std::uint64_t count, std::size_t size) {
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

void shmbus_producer(const std::string& name, std::uint64_t count, std::size_t size,
                     shmbus::WaitStrategy wait) {
  shmbus::Topic topic = shmbus::Topic::open(name);
  shmbus::PublisherOptions po;
  po.wait = wait;
  if (g_yield_spin) po.spin = std::chrono::nanoseconds(0);  // one core: spinning only delays the peer
  po.timeout = kTimeout;
  shmbus::Publisher pub = topic.publisher(po);
  auto src = make_payload(size);
  const std::span<const std::byte> msg(src.data(), size);
  handshake();  // the consumer's subscriber is attached: it gates us from here on
  g_ctl->t_start_ns = now_ns();
  for (std::uint64_t i = 0; i < count; ++i) {
    put_seq(src.data(), i);
    if (const auto st = pub.publish(msg); st != shmbus::Status::Ok)
      fail("shmbus: publish of message %" PRIu64 ": %s", i, shmbus::to_string(st));
    heartbeat(i);
  }
}

void shmbus_consumer(const std::string& name, std::uint64_t count, std::size_t size,
                     shmbus::WaitStrategy wait, std::size_t batch) {
  shmbus::Topic topic = shmbus::Topic::open(name);
  shmbus::SubscriberOptions so;
  so.wait = wait;
  if (g_yield_spin) so.spin = std::chrono::nanoseconds(0);
  auto sub = topic.subscriber(so);
  const std::uint64_t expect_sum = pattern_sum(size);
  handshake();
  const auto bad = [&](std::uint64_t want, std::span<const std::byte> d, std::uint64_t ring_seq) {
    fail("shmbus: expected message %" PRIu64 " of %zu B, got seq %" PRIu64
         " of %zu B (ring sequence %" PRIu64 ")%s",
         want, size, d.size() >= 8 ? get_seq(d.data()) : kStop, d.size(), ring_seq,
         d.size() == size && get_seq(d.data()) == want ? ": payload differs from what was sent" : "");
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

// ---- options ------------------------------------------------------------------

struct Options {
  std::vector<std::size_t> sizes{64, 4096, 1u << 20};
  std::uint64_t iters = 100'000;
  std::uint64_t warmup = 10'000;
  std::uint64_t count = 10'000'000;
  std::uint64_t repeat = 3;
  bool same_core = false;
  bool read_payload = false;
  bool latency = true;
  bool throughput = true;
  std::string json;
  int cpu_a = -1, cpu_b = -1;
};

constexpr std::size_t kLargeSize = 256 * 1024;       // fewer round trips from here on
constexpr std::uint64_t kByteBudget = 2ULL << 30;    // throughput bytes per scenario
constexpr std::uint64_t kRingBytes = 64ULL << 20;    // throughput ring size cap
// Repetitions after the first round of a size block run only while the block
// has taken less than this: a loaded machine keeps the run well under 2 minutes.
constexpr std::uint64_t kRepeatBudgetNs = 20'000'000'000ULL;

void usage(FILE* f) {
  std::fprintf(f,
      "Usage: shmbus-ipc-bench [options]\n"
      "\n"
      "Cross-process latency (ping-pong) and throughput of shmbus, beside the\n"
      "physical limits measured in the same run: a bare cache line, a bare memcpy\n"
      "through shared memory, a raw futex ping-pong and a bare SPSC ring. Two real\n"
      "processes (fork), pinned to two cores. Prints Markdown tables.\n"
      "\n"
      "Options:\n"
      "  --sizes LIST     payload sizes, e.g. 64,4KiB,1MiB (default); suffixes\n"
      "                   B, K/KiB, M/MiB; at least 8 bytes (the sequence number)\n"
      "  --iters N        measured round trips per latency row (default 100000;\n"
      "                   sizes >= 256 KiB and the raw futex row use fewer)\n"
      "  --warmup N       round trips before measuring (default 10000; scaled likewise)\n"
      "  --count N        throughput messages of 64 B or less (default 10000000);\n"
      "                   larger sizes send at most 2 GiB per row\n"
      "  --repeat N       runs of each throughput row, round-robin; the median is\n"
      "                   reported with the range (default 3: the rate is bimodal);\n"
      "                   rounds after the first stop once a size block took 20 s\n"
      "  --read-payload   throughput consumers read one word per cache line of every\n"
      "                   message and check it (default: the sequence number only)\n"
      "  --sections LIST  latency,throughput (default both)\n"
      "  --cores A,B      the two CPUs (default 0,1, else the first two allowed)\n"
      "  --same-core      put both processes on CPU A (spinners yield the core;\n"
      "                   busy-spin rows are skipped: they would burn whole time slices)\n"
      "  --quick          a short smoke run: --iters 10000 --warmup 1000 --count 1000000\n"
      "                   --repeat 1\n"
      "  --json FILE      also write the figures as JSON to FILE\n"
      "  -h, --help       this text\n"
      "\n"
      "Every wait times out after %d s: the scenario then fails with a message, the\n"
      "other scenarios still run, and the exit status is 1. Exit status 2: bad usage.\n",
      kTimeoutSeconds);
}

[[noreturn]] void usage_error(const std::string& msg) {
  std::fprintf(stderr, "shmbus-ipc-bench: %s\n(try --help)\n", msg.c_str());
  std::exit(2);
}

std::uint64_t parse_count(const std::string& opt, const std::string& v) {
  char* end = nullptr;
  errno = 0;
  const unsigned long long n = std::strtoull(v.c_str(), &end, 10);
  if (v.empty() || errno != 0 || *end != '\0' || v[0] == '-' || n == 0)
    usage_error(opt + " wants a positive whole number, got '" + v + "'");
  return n;
}

int parse_cpu(const std::string& v) {
  char* end = nullptr;
  errno = 0;
  const long n = std::strtol(v.c_str(), &end, 10);
  if (v.empty() || errno != 0 || *end != '\0' || n < 0 || n >= CPU_SETSIZE)
    usage_error("--cores wants two CPU numbers, e.g. 0,1; got '" + v + "'");
  return static_cast<int>(n);
}

std::size_t parse_size(const std::string& tok) {
  char* end = nullptr;
  errno = 0;
  const unsigned long long n = std::strtoull(tok.c_str(), &end, 10);
  if (end == tok.c_str() || errno != 0 || tok[0] == '-') usage_error("bad size '" + tok + "'");
  std::string suf(end);
  for (auto& c : suf) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  unsigned long long mult = 1;
  if (suf.empty() || suf == "b") mult = 1;
  else if (suf == "k" || suf == "kib" || suf == "kb") mult = 1024;
  else if (suf == "m" || suf == "mib" || suf == "mb") mult = 1024 * 1024;
  else usage_error("bad size suffix in '" + tok + "' (use B, KiB or MiB)");
  const unsigned long long bytes = n * mult;
  if (bytes < 8 || bytes > (64ULL << 20))
    usage_error("size '" + tok + "' must be between 8 B (the sequence number) and 64 MiB");
  return static_cast<std::size_t>(bytes);
}

std::vector<std::string> split(const std::string& s, char sep) {
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

Options parse_args(int argc, char** argv) {
  Options o;
  bool iters_set = false, warm_set = false, count_set = false, repeat_set = false, quick = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    std::string val;
    const auto eq = a.find('=');
    bool has_inline = false;
    if (a.rfind("--", 0) == 0 && eq != std::string::npos) {
      val = a.substr(eq + 1);
      a = a.substr(0, eq);
      has_inline = true;
    }
    const auto value = [&]() -> std::string {
      if (has_inline) return val;
      if (i + 1 >= argc) usage_error(a + " needs a value");
      return argv[++i];
    };
    if (a == "-h" || a == "--help") {
      usage(stdout);
      std::exit(0);
    } else if (a == "--sizes") {
      o.sizes.clear();
      for (const auto& t : split(value(), ',')) o.sizes.push_back(parse_size(t));
    } else if (a == "--iters") {
      o.iters = parse_count(a, value());
      iters_set = true;
    } else if (a == "--warmup") {
      const std::string v = value();
      o.warmup = v == "0" ? 0 : parse_count(a, v);
      warm_set = true;
    } else if (a == "--count") {
      o.count = parse_count(a, value());
      count_set = true;
    } else if (a == "--repeat") {
      o.repeat = parse_count(a, value());
      repeat_set = true;
    } else if (a == "--same-core") {
      o.same_core = true;
    } else if (a == "--read-payload") {
      o.read_payload = true;
    } else if (a == "--quick") {
      quick = true;
    } else if (a == "--json") {
      o.json = value();
    } else if (a == "--cores") {
      const auto parts = split(value(), ',');
      if (parts.size() != 2) usage_error("--cores wants two CPU numbers, e.g. 0,1");
      o.cpu_a = parse_cpu(parts[0]);
      o.cpu_b = parse_cpu(parts[1]);
    } else if (a == "--sections") {
      o.latency = o.throughput = false;
      for (const auto& t : split(value(), ',')) {
        if (t == "latency") o.latency = true;
        else if (t == "throughput") o.throughput = true;
        else usage_error("unknown section '" + t + "' (latency, throughput)");
      }
    } else {
      usage_error("unknown option '" + a + "'");
    }
  }
  if (quick) {
    if (!iters_set) o.iters = 10'000;
    if (!warm_set) o.warmup = 1'000;
    if (!count_set) o.count = 1'000'000;
    if (!repeat_set) o.repeat = 1;
  }
  return o;
}

// ---- machine info -------------------------------------------------------------

struct MachineInfo {
  std::string cpu_model, cpu_family, kernel, compiler, date;
  long nproc = 0;
  bool hypervisor = false;
};

MachineInfo machine_info() {
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
    while (!key.empty() && (key.back() == ' ' || key.back() == '\t')) key.pop_back();
    std::string v = line.substr(colon + 1);
    if (!v.empty() && v[0] == ' ') v.erase(0, 1);
    if (key == "model name") m.cpu_model = v;
    else if (key == "cpu family") family = v;
    else if (key == "model") model = v;
    else if (key == "flags") m.hypervisor = (" " + v + " ").find(" hypervisor ") != std::string::npos;
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

// ---- results and report -------------------------------------------------------

struct LatRow {
  std::string system;  // e.g. "shmbus loan/publish, busy-spin"
  std::string key;     // short stable id for JSON, e.g. "shmbus-busy-spin"
  std::size_t size = 0;
  bool baseline = false;
  bool ok = false;
  std::string error;
  LatencyStats st;
};

struct TputRun {
  double seconds = 0;
  std::uint64_t fetches = 0;  // 0: not known for this consumer
};

struct TputRow {
  std::string system, key;
  std::size_t size = 0;
  bool baseline = false;
  bool ok = true;  // false once a repetition failed
  std::string error;
  std::uint64_t count = 0;
  std::vector<TputRun> runs;
  std::function<PairResult()> run;  // one repetition

  [[nodiscard]] double rate(const TputRun& r) const {
    return r.seconds > 0 ? static_cast<double>(count) / r.seconds : 0;
  }
  // The median repetition by rate (the lower middle one for an even count).
  [[nodiscard]] const TputRun& median() const {
    std::vector<const TputRun*> v;
    for (const auto& r : runs) v.push_back(&r);
    std::sort(v.begin(), v.end(), [&](auto* a, auto* b) { return rate(*a) < rate(*b); });
    return *v[(v.size() - 1) / 2];
  }
  [[nodiscard]] double msgs_per_s() const { return runs.empty() ? 0 : rate(median()); }
  [[nodiscard]] double bytes_per_s() const { return msgs_per_s() * static_cast<double>(size); }
  [[nodiscard]] double min_rate() const {
    double m = 0;
    for (const auto& r : runs) m = (m == 0 || rate(r) < m) ? rate(r) : m;
    return m;
  }
  [[nodiscard]] double max_rate() const {
    double m = 0;
    for (const auto& r : runs) m = std::max(m, rate(r));
    return m;
  }
};

struct Bracket {
  bool ok = false;
  double rt_ns = 0;  // bare-line round trip, p50
  std::string error;
};

const char* state_of(double rt_ns) { return rt_ns < kNearThresholdNs ? "near" : "far"; }

// The 1-minute load average: other processes compete for the two cores, which
// the bracket (a placement check) does not see.
double load_average() {
  double l = -1;
  if (FILE* f = std::fopen("/proc/loadavg", "r")) {
    if (std::fscanf(f, "%lf", &l) != 1) l = -1;
    std::fclose(f);
  }
  return l;
}

std::string json_escape(const std::string& s) {
  std::string o;
  for (const char c : s) {
    switch (c) {
      case '"': o += "\\\""; break;
      case '\\': o += "\\\\"; break;
      case '\n': o += "\\n"; break;
      case '\t': o += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) o += strprintf("\\u%04x", c);
        else o += c;
    }
  }
  return o;
}

class Bench {
 public:
  explicit Bench(Options o) : opt_(std::move(o)) {}
  int run();

 private:
  Bracket bracket();
  void latency_section();
  void throughput_section();
  void print_latency_table(std::size_t size);
  void print_throughput_table(std::size_t size);
  void write_json(const MachineInfo& m);

  std::uint64_t iters_for(std::size_t size) const {
    return size >= kLargeSize ? std::max<std::uint64_t>(opt_.iters / 10, 100) : opt_.iters;
  }
  std::uint64_t warmup_for(std::size_t size) const {
    return size >= kLargeSize ? opt_.warmup / 10 : opt_.warmup;
  }
  std::uint64_t count_for(std::size_t size) const {
    return std::max<std::uint64_t>(std::min<std::uint64_t>(opt_.count, kByteBudget / size), 100);
  }
  int cpu_b() const { return opt_.same_core ? opt_.cpu_a : opt_.cpu_b; }
  const LatRow* find_lat(const std::string& key, std::size_t size) const {
    for (const auto& r : lat_)
      if (r.key == key && r.size == size && r.ok) return &r;
    return nullptr;
  }

  Options opt_;
  std::vector<LatRow> lat_;
  std::vector<TputRow> tput_;
  Bracket start_, end_;
  double load_start_ = -1, load_end_ = -1;
  std::vector<std::string> failures_;
};

Bracket Bench::bracket() {
  // Always on two separate CPUs when there are two: it measures the host's
  // placement of the vCPUs, not the run's.
  LatencyPlan plan;
  plan.warmup = 2000;
  plan.duration_ns = 20'000'000;
  g_yield_spin = opt_.cpu_a == opt_.cpu_b;
  const auto r = run_pair(
      "bracket: bare line, 20 ms", [&] { bare_pinger(plan, 0, nullptr, nullptr); },
      [&] { bare_ponger(0, nullptr, nullptr); }, opt_.cpu_a, opt_.cpu_b);
  g_yield_spin = opt_.same_core;
  Bracket b;
  b.ok = r.ok;
  b.error = r.error;
  if (r.ok) b.rt_ns = 2 * g_ctl->lat.p50;
  else failures_.push_back("bracket: " + r.error);
  return b;
}

void Bench::latency_section() {
  const int ca = opt_.cpu_a, cb = cpu_b();
  const auto record = [&](LatRow row, const PairResult& r) {
    row.ok = r.ok;
    row.error = r.error;
    if (r.ok) row.st = g_ctl->lat;
    else failures_.push_back(row.system + " " + size_label(row.size) + ": " + r.error);
    lat_.push_back(row);
  };

  // The raw futex row is size-independent and run once.
  {
    // ~60 us a round trip across cores here: fewer rounds keep the run short.
    LatencyPlan plan{std::min<std::uint64_t>(opt_.warmup, 1000),
                     std::min<std::uint64_t>(opt_.iters, 20'000), 0};
    LatRow row;
    row.system = "raw futex wait/wake";
    row.key = "raw-futex";
    row.baseline = true;
    record(row, run_pair("latency: raw futex", [&] { futex_pinger(plan); },
                         [&] { futex_ponger(); }, ca, cb));
  }

  for (const std::size_t size : opt_.sizes) {
    const LatencyPlan plan{warmup_for(size), iters_for(size), 0};
    const std::uint64_t total = plan.warmup + plan.iters;
    {
      // Re-measured for every size, right before the rows it is compared with:
      // the host can move the vCPUs (near/far) between blocks.
      const LatencyPlan line_plan{opt_.warmup, opt_.iters, 0};
      LatRow row;
      row.system = opt_.same_core ? "bare line (yield spin)" : "bare line (pause spin)";
      row.key = "bare-line";
      row.size = size;
      row.baseline = true;
      record(row, run_pair("latency: " + row.system + ", before the " + size_label(size) + " rows",
                           [&] { bare_pinger(line_plan, 0, nullptr, nullptr); },
                           [&] { bare_ponger(0, nullptr, nullptr); }, ca, cb));
    }
    {
      SharedBuffer ping(size), pong(size);
      LatRow row;
      row.system = "bare memcpy into shm + read in place";
      row.key = "bare-memcpy";
      row.size = size;
      row.baseline = true;
      record(row, run_pair("latency: bare memcpy " + size_label(size),
                           [&] { bare_pinger(plan, size, ping.data, pong.data); },
                           [&] { bare_ponger(size, ping.data, pong.data); }, ca, cb));
    }
    struct Mode {
      shmbus::WaitStrategy wait;
      const char* label;
      const char* key;
    };
    std::vector<Mode> modes;
    if (!opt_.same_core) modes.push_back({shmbus::WaitStrategy::BusySpin, "busy-spin", "shmbus-busy-spin"});
    modes.push_back({shmbus::WaitStrategy::SpinFutex, "spin-futex", "shmbus-spin-futex"});
    for (const Mode& m : modes) {
      shmbus::TopicOptions to;
      to.slot_count = 64;
      to.slot_size = static_cast<std::uint32_t>(size);
      to.policy = shmbus::Policy::Block;
      LatRow row;
      row.system = std::string("shmbus zero-copy, ") + m.label;
      row.key = m.key;
      row.size = size;
      try {
        ScopedTopic ping("ping", to), pong("pong", to);
        record(row, run_pair("latency: " + row.system + " " + size_label(size),
                             [&] { shmbus_pinger(plan, size, ping.name, pong.name, m.wait); },
                             [&] { shmbus_ponger(total, size, ping.name, pong.name, m.wait); },
                             ca, cb));
      } catch (const std::exception& e) {
        record(row, PairResult{false, std::string("set-up: ") + e.what()});
      }
    }
    print_latency_table(size);
  }
}

void Bench::throughput_section() {
  const int ca = opt_.cpu_a, cb = cpu_b();
  // On one core a busy spinner holds the core for its whole time slice.
  const auto wait = opt_.same_core ? shmbus::WaitStrategy::SpinYield : shmbus::WaitStrategy::BusySpin;
  const char* wait_label = opt_.same_core ? "spin-yield" : "busy-spin";
  for (const std::size_t size : opt_.sizes) {
    const std::uint64_t count = count_for(size);
    const std::size_t stride = (size + 63) / 64 * 64;
    std::uint64_t slots = 1024;
    while (slots > 64 && slots * (stride + 64) > kRingBytes) slots /= 2;
    const std::size_t first = tput_.size();

    for (const std::uint64_t every : {1, 16}) {
      TputRow row;
      row.system = every == 1
                       ? strprintf("bare SPSC ring (%" PRIu64 " slots, index per message)", slots)
                       : strprintf("bare SPSC ring (%" PRIu64 " slots, index every %" PRIu64
                                   " messages)", slots, every);
      row.key = every == 1 ? "bare-ring" : "bare-ring-every16";
      row.size = size;
      row.baseline = true;
      row.run = [=, label = row.system] {
        SharedBuffer mem(slots * stride);
        const BareRing ring{mem.data, stride, slots, every};
        return run_pair("throughput: " + label + " " + size_label(size),
                        [&] { ring_producer(ring, count, size); },
                        [&] { ring_consumer(ring, count, size); }, ca, cb);
      };
      tput_.push_back(std::move(row));
    }
    struct Variant {
      bool single_producer;
      std::size_t batch;
      const char* label;
      const char* key;
    };
    const Variant variants[] = {
        {true, 1, "single_producer topic, receive()", "shmbus-single-producer"},
        {false, 1, "multi-producer topic, receive()", "shmbus-multi-producer"},
        {true, 16, "single_producer topic, receive_batch(16)", "shmbus-single-producer-batch16"},
    };
    for (const Variant& v : variants) {
      shmbus::TopicOptions to;
      to.slot_count = static_cast<std::uint32_t>(slots);
      to.slot_size = static_cast<std::uint32_t>(size);
      to.policy = shmbus::Policy::Block;
      to.single_producer = v.single_producer;
      TputRow row;
      row.system = strprintf("shmbus publish() copy, %s, %s", wait_label, v.label);
      row.key = v.key;
      row.size = size;
      row.run = [=]() -> PairResult {
        try {
          ScopedTopic topic("tput", to);  // a fresh topic for every repetition
          return run_pair("throughput: shmbus " + std::string(v.label) + " " + size_label(size),
                          [&] { shmbus_producer(topic.name, count, size, wait); },
                          [&] { shmbus_consumer(topic.name, count, size, wait, v.batch); }, ca, cb);
        } catch (const std::exception& e) {
          return PairResult{false, std::string("set-up: ") + e.what()};
        }
      };
      tput_.push_back(std::move(row));
    }

    // Round-robin repetitions: every row sees the same drift of the machine.
    const std::uint64_t block_start = now_ns();
    for (std::uint64_t rep = 0; rep < opt_.repeat; ++rep) {
      if (rep > 0 && now_ns() - block_start > kRepeatBudgetNs) {
        std::fprintf(stderr, "  (time budget: %s rows get %" PRIu64 " of %" PRIu64 " runs)\n",
                     size_label(size).c_str(), rep, opt_.repeat);
        break;
      }
      for (std::size_t k = first; k < tput_.size(); ++k) {
        TputRow& row = tput_[k];
        row.count = count;
        if (!row.ok) continue;
        const PairResult r = row.run();
        if (r.ok && g_ctl->received != count) {
          row.ok = false;
          row.error = strprintf("consumer reported %" PRIu64 " messages, %" PRIu64 " sent",
                                g_ctl->received, count);
        } else if (!r.ok) {
          row.ok = false;
          row.error = r.error;
        } else {
          row.runs.push_back(
              {static_cast<double>(g_ctl->t_end_ns - g_ctl->t_start_ns) / 1e9, g_ctl->fetches});
        }
        if (!row.ok) failures_.push_back(row.system + " " + size_label(size) + ": " + row.error);
      }
    }
    print_throughput_table(size);
  }
}

void Bench::print_latency_table(std::size_t size) {
  const LatRow* line = find_lat("bare-line", size);
  const LatRow* copy = find_lat("bare-memcpy", size);
  std::printf("\n### One-way latency, %s (ns; round trip / 2)%s\n\n", size_label(size).c_str(),
              line ? strprintf(", bare line of this block: %s", state_of(2 * line->st.p50)).c_str() : "");
  std::printf("| system | rounds | p50 | p99 | p99.9 | max | p50 vs bare line | p50 vs bare memcpy |\n");
  std::printf("|---|---:|---:|---:|---:|---:|---:|---:|\n");
  std::vector<const LatRow*> rows;  // baselines first, the limit on top
  for (const char* key : {"bare-line", "bare-memcpy", "raw-futex"})
    for (const auto& r : lat_)
      if (r.key == key && (r.size == size || r.key == std::string("raw-futex"))) rows.push_back(&r);
  for (const auto& r : lat_)
    if (r.size == size && !r.baseline) rows.push_back(&r);
  for (const LatRow* r : rows) {
    std::string name = r->system + (r->size && r->key != "bare-line" ? " " + size_label(r->size) : "");
    if (r->baseline) name = "*" + name + "*";
    if (!r->ok) {
      std::printf("| %s | FAILED: %s | | | | | | |\n", name.c_str(), r->error.c_str());
      continue;
    }
    std::printf("| %s | %s | %s | %s | %s | %s | %s | %s |\n", name.c_str(),
                group_digits(static_cast<double>(r->st.rounds)).c_str(), group_digits(r->st.p50).c_str(),
                group_digits(r->st.p99).c_str(), group_digits(r->st.p999).c_str(),
                group_digits(r->st.max).c_str(),
                line ? ratio_label(r->st.p50 / line->st.p50).c_str() : "-",
                copy ? ratio_label(r->st.p50 / copy->st.p50).c_str() : "-");
  }
  std::printf("\n");
  for (const LatRow* r : rows) {
    if (r->baseline || !r->ok || !line) continue;
    std::printf("- %s %s p50 = %s bare line (%s ns)", r->system.c_str(), size_label(size).c_str(),
                ratio_label(r->st.p50 / line->st.p50).c_str(), group_digits(line->st.p50).c_str());
    if (copy)
      std::printf(", %s bare memcpy (%s ns)", ratio_label(r->st.p50 / copy->st.p50).c_str(),
                  group_digits(copy->st.p50).c_str());
    std::printf("; p99 = %s bare line p99", ratio_label(r->st.p99 / line->st.p99).c_str());
    // A blocking mode is judged against the raw futex in the same placement.
    if (const LatRow* fx = find_lat("raw-futex", 0); fx && r->key == "shmbus-spin-futex")
      std::printf("; p50 = %s raw futex (%s ns)", ratio_label(r->st.p50 / fx->st.p50).c_str(),
                  group_digits(fx->st.p50).c_str());
    std::printf("\n");
  }
  std::fflush(stdout);
}

void Bench::print_throughput_table(std::size_t size) {
  const TputRow* ring = nullptr;
  for (const auto& r : tput_)
    if (r.size == size && r.key == "bare-ring" && r.ok) ring = &r;
  std::printf("\n### Throughput, %s, one producer process, one consumer process\n\n",
              size_label(size).c_str());
  std::printf("| system | messages | median messages/s | range (runs) | median bytes/s | msgs per "
              "consumer fetch | vs bare ring (index per message) |\n");
  std::printf("|---|---:|---:|---:|---:|---:|---:|\n");
  for (const auto& r : tput_) {
    if (r.size != size) continue;
    const std::string name = r.baseline ? "*" + r.system + "*" : r.system;
    if (!r.ok) {
      std::printf("| %s | FAILED: %s | | | | | |\n", name.c_str(), r.error.c_str());
      continue;
    }
    const TputRun& med = r.median();
    const std::string per_fetch =
        med.fetches ? strprintf("%.1f", static_cast<double>(r.count) / static_cast<double>(med.fetches))
                    : std::string("-");
    std::printf("| %s | %s | %s | %s - %s (%zu) | %s | %s | %s |\n", name.c_str(),
                group_digits(static_cast<double>(r.count)).c_str(),
                rate_label(r.msgs_per_s(), "msg/s").c_str(), rate_label(r.min_rate(), "").c_str(),
                rate_label(r.max_rate(), "").c_str(), r.runs.size(),
                rate_label(r.bytes_per_s(), "B/s").c_str(),
                per_fetch.c_str(),
                ring ? ratio_label(r.msgs_per_s() / ring->msgs_per_s()).c_str() : "-");
  }
  std::printf("\n");
  if (ring)
    for (const auto& r : tput_)
      if (r.size == size && r.key != "bare-ring" && r.ok)
        std::printf("- %s %s = %s bare ring (%s)\n", r.system.c_str(), size_label(size).c_str(),
                    ratio_label(r.msgs_per_s() / ring->msgs_per_s()).c_str(),
                    rate_label(ring->msgs_per_s(), "msg/s").c_str());
  std::fflush(stdout);
}

void Bench::write_json(const MachineInfo& m) {
  std::string j = "{\n";
  j += strprintf("  \"tool\": \"shmbus-ipc-bench\",\n  \"shmbus_version\": \"%s\",\n", SHMBUS_BENCH_VERSION);
  j += "  \"machine\": {";
  j += "\"nproc\": " + std::to_string(m.nproc);
  j += ", \"cpu_model\": \"" + json_escape(m.cpu_model) + "\"";
  j += ", \"cpu_family\": \"" + json_escape(m.cpu_family) + "\"";
  j += ", \"hypervisor\": " + std::string(m.hypervisor ? "true" : "false");
  j += ", \"kernel\": \"" + json_escape(m.kernel) + "\"";
  j += ", \"compiler\": \"" + json_escape(m.compiler) + "\"";
  j += ", \"build\": \"" + json_escape(SHMBUS_BENCH_BUILD) + "\"";
  j += ", \"date\": \"" + json_escape(m.date) + "\"},\n";
  j += strprintf("  \"placement\": {\"same_core\": %s, \"cpu_a\": %d, \"cpu_b\": %d},\n",
                 opt_.same_core ? "true" : "false", opt_.cpu_a, cpu_b());
  j += strprintf("  \"throughput_consumer_reads_payload\": %s,\n", opt_.read_payload ? "true" : "false");
  const auto br = [&](const Bracket& b) {
    if (!b.ok) return std::string("null");
    return strprintf("{\"round_trip_ns\": %.1f, \"state\": \"%s\"}", b.rt_ns, state_of(b.rt_ns));
  };
  std::string state = "unknown";
  if (start_.ok && end_.ok)
    state = std::string(state_of(start_.rt_ns)) == state_of(end_.rt_ns) ? state_of(start_.rt_ns) : "mixed";
  j += "  \"bracket\": {\"start\": " + br(start_) + ", \"end\": " + br(end_) + ", \"state\": \"" +
       state + "\"},\n";
  j += strprintf("  \"load_average_1min\": {\"start\": %.2f, \"end\": %.2f},\n", load_start_, load_end_);
  j += "  \"latency\": [";
  for (std::size_t i = 0; i < lat_.size(); ++i) {
    const auto& r = lat_[i];
    j += i ? ",\n    " : "\n    ";
    j += "{\"system\": \"" + json_escape(r.system) + "\", \"key\": \"" + r.key + "\"";
    j += ", \"size\": " + std::to_string(r.size) + ", \"baseline\": " + (r.baseline ? "true" : "false");
    j += ", \"ok\": " + std::string(r.ok ? "true" : "false");
    if (r.ok)
      j += strprintf(", \"rounds\": %" PRIu64 ", \"one_way_ns\": {\"min\": %.1f, \"p50\": %.1f, "
                     "\"p99\": %.1f, \"p99_9\": %.1f, \"max\": %.1f}",
                     r.st.rounds, r.st.min, r.st.p50, r.st.p99, r.st.p999, r.st.max);
    else
      j += ", \"error\": \"" + json_escape(r.error) + "\"";
    j += "}";
  }
  j += "\n  ],\n  \"throughput\": [";
  for (std::size_t i = 0; i < tput_.size(); ++i) {
    const auto& r = tput_[i];
    j += i ? ",\n    " : "\n    ";
    j += "{\"system\": \"" + json_escape(r.system) + "\", \"key\": \"" + r.key + "\"";
    j += ", \"size\": " + std::to_string(r.size) + ", \"baseline\": " + (r.baseline ? "true" : "false");
    j += ", \"ok\": " + std::string(r.ok ? "true" : "false");
    j += ", \"messages\": " + std::to_string(r.count);
    if (r.ok) {
      j += strprintf(", \"median_messages_per_s\": %.1f, \"median_bytes_per_s\": %.1f", r.msgs_per_s(),
                     r.bytes_per_s());
      j += ", \"runs\": [";
      for (std::size_t k = 0; k < r.runs.size(); ++k)
        j += strprintf("%s{\"seconds\": %.6f, \"messages_per_s\": %.1f, \"consumer_fetches\": %" PRIu64 "}",
                       k ? ", " : "", r.runs[k].seconds, r.rate(r.runs[k]), r.runs[k].fetches);
      j += "]";
    } else {
      j += ", \"error\": \"" + json_escape(r.error) + "\"";
    }
    j += "}";
  }
  j += "\n  ],\n  \"failures\": [";
  for (std::size_t i = 0; i < failures_.size(); ++i)
    j += (i ? ", \"" : "\"") + json_escape(failures_[i]) + "\"";
  j += "]\n}\n";
  std::ofstream f(opt_.json);
  f << j;
  f.close();
  if (!f) {
    std::fprintf(stderr, "shmbus-ipc-bench: cannot write %s: %s\n", opt_.json.c_str(), std::strerror(errno));
    failures_.push_back("cannot write " + opt_.json);
  }
}

int Bench::run() {
  // CPUs: the requested pair, or 0 and 1 if allowed, else the first two allowed.
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  if (::sched_getaffinity(0, sizeof allowed, &allowed) != 0)
    fail("sched_getaffinity: %s", std::strerror(errno));
  std::vector<int> cpus;
  for (int c = 0; c < CPU_SETSIZE; ++c)
    if (CPU_ISSET(c, &allowed)) cpus.push_back(c);
  if (opt_.cpu_a < 0) {
    if (cpus.size() >= 2 && CPU_ISSET(0, &allowed) && CPU_ISSET(1, &allowed)) {
      opt_.cpu_a = 0;
      opt_.cpu_b = 1;
    } else if (cpus.size() >= 2) {
      opt_.cpu_a = cpus[0];
      opt_.cpu_b = cpus[1];
    } else {
      std::fprintf(stderr, "shmbus-ipc-bench: only one CPU is allowed; running on one core\n");
      opt_.cpu_a = opt_.cpu_b = cpus.empty() ? 0 : cpus[0];
      opt_.same_core = true;
    }
  } else {
    for (int c : {opt_.cpu_a, opt_.cpu_b})
      if (c >= CPU_SETSIZE || !CPU_ISSET(c, &allowed))
        usage_error("CPU " + std::to_string(c) + " is not available to this process");
  }
  g_yield_spin = opt_.same_core;
  g_read_payload = opt_.read_payload;

  const MachineInfo m = machine_info();
  std::printf("# shmbus-ipc-bench\n\n");
  std::printf("| machine | |\n|---|---|\n");
  std::printf("| CPU | %s (%s)%s |\n", m.cpu_model.c_str(), m.cpu_family.c_str(),
              m.hypervisor ? ", virtual machine" : "");
  std::printf("| online CPUs (nproc) | %ld |\n", m.nproc);
  std::printf("| kernel | %s |\n", m.kernel.c_str());
  std::printf("| compiler | %s, %s |\n", m.compiler.c_str(), SHMBUS_BENCH_BUILD);
  std::printf("| shmbus | %s |\n", SHMBUS_BENCH_VERSION);
  std::printf("| placement | %s |\n",
              opt_.same_core ? strprintf("both processes on CPU %d (spinners yield)", opt_.cpu_a).c_str()
                             : strprintf("side A on CPU %d, side B on CPU %d", opt_.cpu_a, opt_.cpu_b).c_str());
  std::printf("| date | %s |\n", m.date.c_str());
  std::printf("| plan | latency: %" PRIu64 " round trips after %" PRIu64
              " warm-up (/10 from %s); throughput: %" PRIu64 " messages (at most %s per row), %" PRIu64
              " runs per row |\n",
              opt_.iters, opt_.warmup, size_label(kLargeSize).c_str(), opt_.count,
              size_label(kByteBudget >> 20 << 20).c_str(), opt_.repeat);
  std::fflush(stdout);

  const auto t0 = now_ns();
  load_start_ = load_average();
  start_ = bracket();
  if (start_.ok)
    std::printf("\nBracket at start: bare-line round trip p50 = %.0f ns -> **%s**\n", start_.rt_ns,
                state_of(start_.rt_ns));

  if (opt_.latency) {
    std::printf("\n## Latency (ping-pong; one steady_clock read per round trip)\n");
    std::printf("\nshmbus rows: topics of 64 slots, slot size = payload, policy block; the sender\n"
                "loans a slot and writes only the 8-byte sequence number; the receiver checks it\n"
                "in place. Baselines in *italics*. Raw futex is size-independent (%s rounds).\n"
                "Spin-futex spins for the library's spin budget (50 us) before it sleeps, so with\n"
                "a peer on another core it seldom sleeps here; compare it with raw futex in\n"
                "--same-core runs.\n",
                group_digits(static_cast<double>(std::min<std::uint64_t>(opt_.iters, 20'000))).c_str());
    latency_section();
  }
  if (opt_.throughput) {
    std::printf("\n## Throughput (producer process -> consumer process; %s)\n",
                opt_.same_core ? "one CPU" : "cores split");
    std::printf("\nshmbus rows: publish() copies the payload; policy block; the consumer checks the\n"
                "sequence number of every message. Bare ring: same slot count, memcpy per message.\n"
                "Msgs per consumer fetch: ~1 when the consumer keeps up (each message is its own\n"
                "cache-line hand-off), large when the producer runs ahead and the consumer streams.\n");
    if (opt_.read_payload)
      std::printf("The consumer reads one word per cache line of every message (--read-payload):\n"
                  "bytes/s is payload delivered to the other core.\n");
    else
      std::printf("The consumer reads only the first 8 bytes of a message: above 64 B, bytes/s is\n"
                  "the rate the producer copies into shared memory (see --read-payload).\n");
    throughput_section();
  }

  end_ = bracket();
  load_end_ = load_average();
  std::printf("\n## Run state\n\n");
  std::printf("| bracket | bare-line round trip p50 | state |\n|---|---:|---|\n");
  for (const auto* b : {&start_, &end_}) {
    if (b->ok)
      std::printf("| %s | %.0f ns | %s |\n", b == &start_ ? "start" : "end", b->rt_ns, state_of(b->rt_ns));
    else
      std::printf("| %s | FAILED: %s | |\n", b == &start_ ? "start" : "end", b->error.c_str());
  }
  if (start_.ok && end_.ok) {
    const bool same = std::string(state_of(start_.rt_ns)) == state_of(end_.rt_ns);
    std::printf("\nRun tagged **%s**%s. Total time %.1f s.\n",
                same ? state_of(start_.rt_ns) : "mixed",
                same ? "" : " (the host moved the vCPUs during the run: do not compare its figures)",
                static_cast<double>(now_ns() - t0) / 1e9);
  }
  std::printf("\nLoad average (1 min) at start %.2f, at end %.2f%s\n", load_start_, load_end_,
              std::max(load_start_, load_end_) > 0.5
                  ? ": other processes competed for the cores; expect lower, noisier figures"
                  : "");
  if (!opt_.json.empty()) write_json(m);
  if (!failures_.empty()) {
    std::printf("\n## FAILURES (%zu)\n\n", failures_.size());
    for (const auto& f : failures_) std::printf("- %s\n", f.c_str());
    std::fflush(stdout);
    return 1;
  }
  std::fflush(stdout);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options opt = parse_args(argc, argv);
  g_ctl = static_cast<Control*>(map_shared(sizeof(Control)));
  new (g_ctl) Control{};
  struct sigaction sa{};
  sa.sa_handler = on_interrupt;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
  try {
    Bench bench(std::move(opt));
    return bench.run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "shmbus-ipc-bench: %s\n", e.what());
    return 1;
  }
}
