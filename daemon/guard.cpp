// The SIGBUS guard and the size check of daemon/guard.hpp.
#include "guard.hpp"

#include <signal.h>
#include <sys/stat.h>

#include <atomic>
#include <cerrno>
#include <mutex>

#include "os.hpp"
#include "region.hpp"
#include "shmbus/error.hpp"

namespace shmbus::daemon {

namespace {

// This thread's innermost guard. Read by the handler: a plain pointer with
// constant initialisation, in a static library linked into the executable
// (initial- or local-exec TLS), so reading it is async-signal-safe (no lazy
// allocation of the TLS block, as a dlopen-ed library could need).
constinit thread_local guard_detail::Frame* t_innermost = nullptr;

struct sigaction g_previous {};  // written once, before the handler is installed
std::once_flag g_installed;

void on_sigbus(int sig, siginfo_t* info, void*) {
  // Async-signal-safe only: a TLS read, siglongjmp, sigaction, raise.
  if (guard_detail::Frame* f = t_innermost; f != nullptr) {
    t_innermost = f->outer;
    siglongjmp(f->env, 1);
  }
  // Not inside a guard: a real bug. Put the earlier action back; a fault
  // (si_code > 0: sent by the kernel) then happens again when the faulting
  // instruction is retried and takes that action with its true siginfo; a
  // SIGBUS sent by someone is sent again.
  (void)::sigaction(SIGBUS, &g_previous, nullptr);
  if (info == nullptr || info->si_code <= 0) (void)::raise(sig);
}

}  // namespace

namespace guard_detail {

void enter(Frame& f) noexcept {
  f.outer = t_innermost;
  // A signal barrier, not a fence between threads: the handler runs on this
  // thread and must see the frame complete before it becomes reachable.
  std::atomic_signal_fence(std::memory_order_release);
  t_innermost = &f;
}

void leave(Frame& f) noexcept {
  t_innermost = f.outer;
  std::atomic_signal_fence(std::memory_order_release);  // as in enter
}

}  // namespace guard_detail

void install_sigbus_guard() {
  std::call_once(g_installed, [] {
    struct sigaction sa {};
    sa.sa_sigaction = on_sigbus;
    // SA_NODEFER: SIGBUS is not blocked while the handler runs, so leaving it
    // by siglongjmp needs no mask restored (guarded() saves none).
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    if (::sigemptyset(&sa.sa_mask) != 0 || ::sigaction(SIGBUS, &sa, &g_previous) != 0)
      throw Error(ErrorCode::SystemError,
                  "installing the SIGBUS handler: " + detail::errno_text(errno));
  });
}

bool region_intact(const detail::Region& r, std::string& why) {
  const detail::Layout l = detail::compute_layout(detail::options_of(r));
  // The daemon opens its regions by name, so it always has the descriptors; a
  // region mapped from passed descriptors (a client's) has none to check.
  const struct {
    int fd;
    std::uint64_t expected;
    const char* what;
  } segments[] = {{r.data_fd(), l.size, "data"}, {r.control_fd(), l.control_size, "control"}};
  for (const auto& seg : segments) {
    if (seg.fd < 0) continue;
    struct stat st {};
    if (::fstat(seg.fd, &st) != 0) {
      why = std::string("cannot be checked (fstat of its ") + seg.what +
            " segment: " + detail::errno_text(errno) + ")";
      return false;
    }
    if (static_cast<std::uint64_t>(st.st_size) == seg.expected) continue;
    why = std::string("has a ") + seg.what + " segment of " + std::to_string(st.st_size) +
          " bytes, " + std::to_string(seg.expected) + " expected";
    return false;
  }
  return true;
}

bool region_intact(const detail::Region& r) {
  std::string why;
  return region_intact(r, why);
}

}  // namespace shmbus::daemon
