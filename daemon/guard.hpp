// Keeping shmbusd alive when a region it maps is truncated under it (issue 14):
// a client holding a writable descriptor of a region can ftruncate it, and the
// next daemon access to a vanished page raises SIGBUS. The daemon checks the
// file's size before it touches a region (region_intact) and runs each access
// inside guarded(), which turns a SIGBUS there into `false` instead of death;
// the caller then quarantines the topic (daemon.hpp, TopicEntry::damaged).
#pragma once

#include <csetjmp>
#include <string>
#include <utility>

namespace shmbus::detail {
class Region;
}

namespace shmbus::daemon {

// True while the file behind `r` is exactly the size its layout maps (neither
// shrunk, which makes pages vanish, nor grown, which nobody may do either).
// The one place that knows which descriptors back a region.
[[nodiscard]] bool region_intact(const detail::Region& r);
// The same; when not intact, `why` says what is wrong ("is 0 bytes, 8448 expected").
[[nodiscard]] bool region_intact(const detail::Region& r, std::string& why);

// Installs the process's SIGBUS handler (once; later calls do nothing). A
// SIGBUS inside guarded() returns there; any other SIGBUS gets the action
// that was installed before (by default: the process dies, as a bug should).
// Throws shmbus::Error if sigaction fails.
void install_sigbus_guard();

namespace guard_detail {
struct Frame {
  sigjmp_buf env;
  Frame* outer;  // the guard this one is nested in, or null
};
void enter(Frame& f) noexcept;  // f becomes this thread's innermost guard
void leave(Frame& f) noexcept;  // f's outer guard is innermost again
}  // namespace guard_detail

// Runs f(); returns false if a SIGBUS hit while it ran (install_sigbus_guard()
// must have run), true otherwise. An exception from f leaves the guard and
// propagates.
//
// A SIGBUS leaves f by siglongjmp: destructors of f's locals (and of whatever
// f called) do not run. So f must be a section that only reads and writes
// region memory, or whose skipped clean-up is harmless: a held control lock
// (in region memory: the region is quarantined and never used again), or a
// partly built status or error, even an exception in flight (a bounded leak,
// once per quarantined topic). Never a section that holds a process-wide lock
// (a mutex, malloc's) while it touches the region.
template <class F>
[[nodiscard]] bool guarded(F&& f) {
  guard_detail::Frame frame;
  // The mask is not saved (0, no system call): the handler runs with the
  // mask of the code it interrupted (SA_NODEFER, empty sa_mask), so jumping
  // out of it leaves the mask as it was.
  if (sigsetjmp(frame.env, 0) != 0) return false;  // the handler already left the frame
  guard_detail::enter(frame);
  try {
    std::forward<F>(f)();
  } catch (...) {
    guard_detail::leave(frame);
    throw;
  }
  guard_detail::leave(frame);
  return true;
}

}  // namespace shmbus::daemon
