// Process control: the two sides of every measurement are real processes
// (fork), each pinned to its core, that meet in a control block of anonymous
// MAP_SHARED memory. The parent (PairRunner) forks them, watches their
// progress, kills a pair that hangs or whose other side failed, and cleans up
// after an interrupt. A side (Side) handshakes with its peer, reports
// progress, waits with a timeout and fails with a message for the report.
#pragma once

#include <sched.h>
#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

#include "stats.hpp"

namespace shmbus_bench {

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

// The same pause the library's spin loops use, so baselines and shmbus spin alike.
void cpu_pause() noexcept;

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

constexpr int kA = 0;  // pinger / producer
constexpr int kB = 1;  // ponger / consumer

// Shared by the parent and both sides of a pair; reset before every pair.
struct Control {
  PaddedU64 ready[2];      // the side has attached (subscriber/publisher made)
  PaddedU64 heartbeat[2];  // progress, for the parent's watchdog (relaxed)
  PaddedU64 line;          // the bare line; also the memcpy baseline's flag
  PaddedU32 futex_word;    // raw futex ping-pong
  PaddedU64 ring_tail;     // bare SPSC ring: next index to write; the producer's alone
  PaddedU64 ring_head;     // bare SPSC ring: next index to read; the consumer's alone
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

  void reset() noexcept;
};
static_assert(offsetof(Control, ring_head) - offsetof(Control, ring_tail) >= kLine,
              "head and tail on separate lines");

// How the sides of one pair behave.
struct PairOptions {
  bool yield_spin = false;  // both on one core: a spinner hands the core to its peer
};

// One side of a pair, in its own process: what its body gets.
class Side {
 public:
  Side(Control& ctl, int role, PairOptions opt, const char* tool) noexcept
      : ctl_(&ctl), role_(role), opt_(opt), tool_(tool) {}

  [[nodiscard]] Control& ctl() const noexcept { return *ctl_; }
  [[nodiscard]] int role() const noexcept { return role_; }
  [[nodiscard]] bool yield_spin() const noexcept { return opt_.yield_spin; }

  // End with exit() rather than _exit(), so that atexit handlers and static
  // destructors run (an iceoryx client must deregister from RouDi).
  void exit_normally() noexcept { exit_normally_ = true; }
  [[nodiscard]] bool exits_normally() const noexcept { return exit_normally_; }

  // Ends this side's process with a message kept for the parent's report.
  [[noreturn]] void fail(const char* fmt, ...) const __attribute__((format(printf, 2, 3)));

  // Progress for the parent's watchdog, every 1024 steps.
  void heartbeat(std::uint64_t i) const noexcept {
    // Relaxed: only the watchdog reads it, to see that something moves.
    if ((i & 1023) == 0) ctl_->heartbeat[role_].v.store(i + 1, std::memory_order_relaxed);
  }

  // Spins until done() is true. No clock read on the fast path: the deadline
  // is set only after the first 1024 polls, then checked every 1024 polls.
  template <class Done>
  void spin_until(Done&& done, const char* what, std::uint64_t arg) const {
    std::uint32_t n = 0;
    std::uint64_t deadline = 0;
    while (!done()) {
      if (opt_.yield_spin)
        ::sched_yield();
      else
        cpu_pause();
      if ((++n & 1023) == 0) {
        const std::uint64_t t = now_ns();
        if (deadline == 0)
          deadline = t + kTimeoutNs;
        else if (t > deadline)
          timed_out(what, arg);
      }
    }
  }

  // Each side says it has attached, then waits for its peer.
  void handshake() const;
  void pin_to(int cpu) const;

 private:
  [[noreturn]] void timed_out(const char* what, std::uint64_t arg) const;
  Control* ctl_;
  int role_;
  PairOptions opt_;
  const char* tool_;
  bool exit_normally_ = false;
};

// Anonymous MAP_SHARED memory, inherited across fork. Throws std::system_error.
void* map_shared(std::size_t bytes);

struct SharedBuffer {
  explicit SharedBuffer(std::size_t n);
  ~SharedBuffer();
  SharedBuffer(const SharedBuffer&) = delete;
  SharedBuffer& operator=(const SharedBuffer&) = delete;
  std::size_t bytes;
  std::byte* data = nullptr;
};

struct PairResult {
  bool ok = false;
  std::string error;
};

using SideBody = std::function<void(Side&)>;

// The parent: the control block, the pair running now, and what an interrupt
// (SIGINT, SIGTERM, SIGHUP) must clean up. One per program; its handlers stay
// installed while it lives.
class PairRunner {
 public:
  explicit PairRunner(const char* tool);
  ~PairRunner();
  PairRunner(const PairRunner&) = delete;
  PairRunner& operator=(const PairRunner&) = delete;

  [[nodiscard]] const char* tool() const noexcept { return tool_; }
  [[nodiscard]] const Control& ctl() const noexcept { return *ctl_; }

  // Forks side A and side B, pinned to their CPUs, and waits for both with a
  // watchdog. A child that fails or stops making progress gets its peer killed.
  PairResult run(const std::string& label, const SideBody& side_a, const SideBody& side_b,
                 int cpu_a, int cpu_b, PairOptions opt = {});

  // A /dev/shm name ("/name") to unlink if the run is interrupted. At most
  // kCleanupNames are remembered (the oldest are forgotten): only a few live
  // at a time, and a stale name only makes shm_unlink fail with ENOENT.
  void unlink_on_interrupt(const std::string& shm_name);
  // A scratch file, and the directory that holds them, removed on an interrupt.
  void remove_on_interrupt(const std::string& path);
  void set_scratch_dir(const std::string& dir);
  // A daemon the run started (iox-roudi), stopped on an interrupt too, and
  // the file that holds its pid, removed with it.
  void set_daemon(pid_t pid, const std::string& pid_file);
  [[nodiscard]] pid_t daemon() const noexcept {
    return daemon_pid_.load(std::memory_order_relaxed);  // relaxed: see child_
  }
  // SIGTERM, up to 3 s for it to end, then SIGKILL; reaps it. Async-signal-safe.
  void stop_daemon() noexcept;
  // A number unique within this run, for the names of topics and queues.
  int next_id() noexcept { return next_id_++; }

 private:
  static constexpr int kCleanupNames = 16;
  static constexpr int kScratchFiles = 4;
  static void on_signal(int sig);
  void cleanup_from_signal() noexcept;
  void forget_children() noexcept;

  const char* tool_;
  Control* ctl_ = nullptr;
  // What an interrupt must clean up. The handler runs on the thread that
  // stores these, so relaxed atomics (lock-free, hence async-signal-safe)
  // suffice: a signal sees every store made before it on this thread.
  std::atomic<pid_t> child_[2] = {0, 0};
  static_assert(std::atomic<pid_t>::is_always_lock_free);
  char names_[kCleanupNames][160] = {};
  int next_name_ = 0;
  char files_[kScratchFiles][512] = {};
  int next_file_ = 0;
  char scratch_dir_[512] = {};
  std::atomic<pid_t> daemon_pid_ = 0;
  char daemon_pid_file_[512] = {};
  int next_id_ = 0;
};

}  // namespace shmbus_bench
