#include "process.hpp"

#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <new>
#include <system_error>

#include "report.hpp"
#include "shmbus/shmbus.hpp"

namespace shmbus_bench {

void cpu_pause() noexcept {
  shmbus::detail::cpu_relax();
}

// Relaxed throughout: no child runs yet, and fork() orders these stores
// before anything a child does.
void Control::reset() noexcept {
  for (int k = 0; k < 2; ++k) {
    ready[k].v.store(0, std::memory_order_relaxed);
    heartbeat[k].v.store(0, std::memory_order_relaxed);
    error[k][0] = '\0';
  }
  line.v.store(0, std::memory_order_relaxed);
  futex_word.v.store(0, std::memory_order_relaxed);
  ring_tail.v.store(0, std::memory_order_relaxed);
  ring_head.v.store(0, std::memory_order_relaxed);
  lat = LatencyStats{};
  hist.clear(0.5);
  done.v.store(0, std::memory_order_relaxed);
  t_start_ns = t_end_ns = received = fetches = 0;
}

// ---- a side ---------------------------------------------------------------------

void Side::fail(const char* fmt, ...) const {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  std::snprintf(ctl_->error[role_], sizeof ctl_->error[role_], "%s", msg);
  std::fprintf(stderr, "%s: %s (pid %d): %s\n", tool_, role_ == kA ? "side A" : "side B",
               static_cast<int>(::getpid()), msg);
  if (exit_normally_) std::exit(1);
  ::_exit(1);
}

void Side::timed_out(const char* what, std::uint64_t arg) const {
  fail("no answer within %d s while waiting for %s %" PRIu64, kTimeoutSeconds, what, arg);
}

void Side::handshake() const {
  const int peer = 1 - role_;
  // Release: pairs with the peer's acquire below; what we set up before
  // (a subscriber's group, a publisher's seat) is in place when it proceeds.
  ctl_->ready[role_].v.store(1, std::memory_order_release);
  spin_until([&] { return ctl_->ready[peer].v.load(std::memory_order_acquire) != 0; },
             "the peer's handshake", 0);
}

void Side::pin_to(int cpu) const {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (::sched_setaffinity(0, sizeof set, &set) != 0)
    fail("sched_setaffinity(cpu %d): %s", cpu, std::strerror(errno));
}

// ---- shared memory --------------------------------------------------------------

void* map_shared(std::size_t bytes) {
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  if (p == MAP_FAILED)
    throw std::system_error(errno, std::generic_category(), strprintf("mmap of %zu bytes", bytes));
  return p;
}

SharedBuffer::SharedBuffer(std::size_t n) : bytes(n > 0 ? n : 1) {
  data = static_cast<std::byte*>(map_shared(bytes));
}

SharedBuffer::~SharedBuffer() {
  ::munmap(data, bytes);
}

// ---- the parent -----------------------------------------------------------------

namespace {
// The runner whose pair and scratch state an interrupt cleans up. A signal
// handler reaches it only through static storage; it is set and cleared by
// the runner's constructor and destructor, and read only by the handler.
PairRunner* g_signal_runner = nullptr;

void copy_name(char* dst, std::size_t cap, const std::string& s) {
  std::snprintf(dst, cap, "%s", s.c_str());
}
}  // namespace

PairRunner::PairRunner(const char* tool) : tool_(tool) {
  ctl_ = new (map_shared(sizeof(Control))) Control{};
  g_signal_runner = this;
  struct sigaction sa {};
  sa.sa_handler = &PairRunner::on_signal;
  sigemptyset(&sa.sa_mask);
  for (const int sig : {SIGINT, SIGTERM, SIGHUP})
    if (::sigaction(sig, &sa, nullptr) != 0)
      throw std::system_error(errno, std::generic_category(), "sigaction");
}

PairRunner::~PairRunner() {
  stop_daemon();  // never leave a daemon behind
  struct sigaction sa {};
  sa.sa_handler = SIG_DFL;
  sigemptyset(&sa.sa_mask);
  for (const int sig : {SIGINT, SIGTERM, SIGHUP})
    (void)::sigaction(sig, &sa, nullptr);  // restoring the default cannot fail here
  g_signal_runner = nullptr;
  ::munmap(ctl_, sizeof(Control));
}

void PairRunner::unlink_on_interrupt(const std::string& shm_name) {
  copy_name(names_[next_name_++ % kCleanupNames], sizeof names_[0], shm_name);
}

void PairRunner::remove_on_interrupt(const std::string& path) {
  if (next_file_ < kScratchFiles) copy_name(files_[next_file_++], sizeof files_[0], path);
}

void PairRunner::set_scratch_dir(const std::string& dir) {
  copy_name(scratch_dir_, sizeof scratch_dir_, dir);
}

void PairRunner::set_daemon(pid_t pid, const std::string& pid_file) {
  copy_name(daemon_pid_file_, sizeof daemon_pid_file_, pid_file);
  daemon_pid_.store(pid, std::memory_order_relaxed);  // relaxed: see child_
}

void PairRunner::stop_daemon() noexcept {
  const pid_t d = daemon_pid_.load(std::memory_order_relaxed);  // relaxed: see child_
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
  daemon_pid_.store(0, std::memory_order_relaxed);
  if (daemon_pid_file_[0] != '\0') ::unlink(daemon_pid_file_);
}

void PairRunner::cleanup_from_signal() noexcept {
  pid_t pids[2];
  for (int k = 0; k < 2; ++k)
    pids[k] = child_[k].load(std::memory_order_relaxed);  // relaxed: see child_
  for (const pid_t p : pids)
    if (p > 0) ::kill(p, SIGKILL);
  for (const pid_t p : pids)
    if (p > 0) ::waitpid(p, nullptr, 0);
  stop_daemon();
  for (const auto& name : names_)
    if (name[0] != '\0') ::shm_unlink(name);
  for (const auto& f : files_)
    if (f[0] != '\0') ::unlink(f);
  if (scratch_dir_[0] != '\0') ::rmdir(scratch_dir_);
}

void PairRunner::forget_children() noexcept {
  for (auto& c : child_)
    c.store(0, std::memory_order_relaxed);  // relaxed: see child_
}

void PairRunner::on_signal(int sig) {
  if (g_signal_runner) g_signal_runner->cleanup_from_signal();
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}

PairResult PairRunner::run(const std::string& label, const SideBody& side_a, const SideBody& side_b,
                           int cpu_a, int cpu_b, PairOptions opt) {
  std::fprintf(stderr, "  running: %s\n", label.c_str());
  ctl_->reset();
  std::fflush(stdout);
  std::fflush(stderr);
  sigset_t chld, old;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  if (::sigprocmask(SIG_BLOCK, &chld, &old) != 0)
    return PairResult{false, strprintf("sigprocmask: %s", std::strerror(errno))};
  const pid_t parent = ::getpid();
  const SideBody* body[2] = {&side_a, &side_b};
  const int cpu[2] = {cpu_a, cpu_b};
  pid_t pids[2] = {0, 0};
  PairResult res;
  for (int k = 0; k < 2; ++k) {
    const pid_t pid = ::fork();
    if (pid < 0) {
      res.error = strprintf("fork: %s", std::strerror(errno));
      if (k == 1) {
        ::kill(pids[0], SIGKILL);
        ::waitpid(pids[0], nullptr, 0);
      }
      forget_children();
      ::sigprocmask(SIG_SETMASK, &old, nullptr);
      return res;
    }
    if (pid == 0) {
      Side side(*ctl_, k, opt, tool_);
      if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) side.fail("prctl: %s", std::strerror(errno));
      if (::getppid() != parent) ::_exit(3);
      ::signal(SIGINT, SIG_DFL);
      ::signal(SIGTERM, SIG_DFL);
      ::signal(SIGHUP, SIG_DFL);
      ::sigprocmask(SIG_SETMASK, &old, nullptr);
      side.pin_to(cpu[k]);
      try {
        (*body[k])(side);
      } catch (const std::exception& e) {
        side.fail("%s", e.what());
      } catch (...) {
        side.fail("unknown exception");
      }
      if (side.exits_normally()) std::exit(0);  // it must deregister somewhere
      ::_exit(0);  // no destructors, no atexit, no stdio flush: the parent owns those
    }
    pids[k] = pid;
    child_[k].store(pid, std::memory_order_relaxed);  // relaxed: see child_
  }

  bool alive[2] = {true, true};
  int status[2] = {0, 0};
  std::uint64_t last_hb[2] = {0, 0};
  std::uint64_t last_progress = now_ns();
  std::string why;
  const auto kill_alive = [&] {
    for (int k = 0; k < 2; ++k)
      if (alive[k]) {
        ::kill(pids[k], SIGKILL);
        ::waitpid(pids[k], &status[k], 0);
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
      if (::waitpid(pids[k], &st, WNOHANG) == pids[k]) {
        alive[k] = false;
        status[k] = st;
        if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0)) kill_alive();
      }
    }
    if (!alive[0] && !alive[1]) break;
    bool moved = false;
    for (int k = 0; k < 2; ++k) {
      // Relaxed: the watchdog only needs to see that the values move.
      const std::uint64_t hb = ctl_->heartbeat[k].v.load(std::memory_order_relaxed) +
                               ctl_->ready[k].v.load(std::memory_order_relaxed);
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
  forget_children();
  // Drop a SIGCHLD still pending, then restore the mask.
  timespec zero{0, 0};
  while (::sigtimedwait(&chld, nullptr, &zero) > 0) {
  }
  ::sigprocmask(SIG_SETMASK, &old, nullptr);

  res.ok = why.empty();
  for (int k = 0; k < 2; ++k) {
    const char* side = k == kA ? "A" : "B";
    std::string e;
    if (ctl_->error[k][0] != '\0') {
      e = ctl_->error[k];
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

}  // namespace shmbus_bench
