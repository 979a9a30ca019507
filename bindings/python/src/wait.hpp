// How a Python call waits for the C++ core: the deadline a Python timeout
// names, and wait_until, the one loop that releases the GIL, waits, and lets
// Ctrl-C through. Every blocking call (receive, publish, loan) goes through
// wait_until, so a change in how the core waits lands here alone.
#pragma once

#include <pybind11/pybind11.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "common.hpp"
#include "shmbus/error.hpp"

namespace shmbus::python {

// How often a waiting call looks for Ctrl-C and for other threads that want
// its object (python_interrupt): the latency of Ctrl-C and of close().
inline constexpr std::chrono::milliseconds kInterruptEvery{50};

// A timeout in seconds from Python: None means "wait forever".
class Deadline {
 public:
  using Clock = std::chrono::steady_clock;

  explicit Deadline(std::optional<double> seconds) {
    if (!seconds) return;
    const double s = *seconds;
    if (std::isnan(s) || s < 0)
      raise(invalid_argument(),
            "timeout must be None (wait for ever) or a number of seconds >= 0, not " +
                std::to_string(s));
    zero_ = s == 0;
    if (s > 1e9) return;  // ~31 years: for ever, without overflowing the clock
    forever_ = false;
    at_ = Clock::now() +
          std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
  }
  // Raises InvalidArgument unless `seconds` is a valid timeout; returns it.
  static std::optional<double> checked(std::optional<double> seconds) {
    (void)Deadline(seconds);
    return seconds;
  }

  // True when the caller asked not to wait at all (timeout=0).
  [[nodiscard]] bool zero() const noexcept { return zero_; }
  [[nodiscard]] bool passed() const noexcept { return !forever_ && Clock::now() >= at_; }
  // What is left of the deadline (for ever: a timeout the core treats as such).
  [[nodiscard]] std::chrono::nanoseconds remaining() const noexcept {
    if (forever_) return std::chrono::hours(24 * 365 * 100);
    const auto left = std::chrono::duration_cast<std::chrono::nanoseconds>(at_ - Clock::now());
    return std::max(left, std::chrono::nanoseconds(0));
  }

 private:
  bool forever_ = true;
  bool zero_ = false;
  Clock::time_point at_{};
};

// Waits until `attempt(core, timeout)` returns anything but Status::Timeout,
// or `deadline` passes (then returns Status::Timeout). `attempt` is one call
// into the core that waits at most `timeout`, its wait ended early by the
// endpoint's python_interrupt; it runs with the GIL released and `owner.mu`
// held, on owner.open_locked(), and is not called once the owner is closed
// (then Status::Invalid is returned). After an interrupt, with the mutex
// released and the GIL held, the signal handlers run (a KeyboardInterrupt
// propagates from here), every thread that wanted the owner goes first, and
// the wait resumes with what is left of the deadline.
template <class Owner, class Attempt>
Status wait_until(const Deadline& deadline, Owner& owner, Attempt&& attempt) {
  for (;;) {
    const auto left = deadline.remaining();
    if (left.count() == 0) return Status::Timeout;
    Status st;
    {
      py::gil_scoped_release nogil;
      {
        std::lock_guard lk(owner.mu.m);
        auto* core = owner.open_locked();
        st = core == nullptr ? Status::Invalid : attempt(*core, left);
      }
      if (st == Status::Interrupted) {
        // Let every thread that asked for the mutex through before taking it
        // again (they need the GIL, which we do not hold here). Relaxed: a
        // hint, as in GilSafeLock.
        while (owner.mu.wanted->load(std::memory_order_relaxed) != 0)
          std::this_thread::yield();
      }
    }
    if (st != Status::Interrupted) return st;
    if (PyErr_CheckSignals() != 0) throw py::error_already_set();
  }
}

// A receive's whole wait: `attempt(core, 0)` first, under the owner's lock
// and with the GIL held (released around it when `nogil_first`, for a large
// copy); then, when nothing was ready (WouldBlock, or Timeout from a core
// call that waited 0) and the deadline allows, wait_until with the same
// attempt. Returns the last attempt's status.
template <class Owner, class Attempt>
Status attempt_then_wait(const Deadline& deadline, Owner& owner, Attempt&& attempt,
                         bool nogil_first = false) {
  Status st = owner.with_open([&](auto& core) {
    if (!nogil_first) return attempt(core, std::chrono::nanoseconds(0));
    py::gil_scoped_release nogil;
    return attempt(core, std::chrono::nanoseconds(0));
  });
  if ((st == Status::WouldBlock || st == Status::Timeout) && !deadline.zero())
    st = wait_until(deadline, owner, attempt);
  return st;
}

}  // namespace shmbus::python
