// Shared pieces of the Python bindings: the exception classes, fork()
// safety, a mutex that is taken without ever blocking other Python threads
// on the GIL, argument parsing and the buffer protocol's plumbing.
#pragma once

#include <pybind11/pybind11.h>
// In every file, so each sees the same casters for std::optional and the rest.
#include <pybind11/stl.h>
#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>

#include "shmbus/error.hpp"
#include "shmbus/options.hpp"
#include "shmbus/properties.hpp"

namespace shmbus::python {

namespace py = pybind11;

// Messages at least this large are copied with the GIL released.
inline constexpr std::size_t kReleaseGilBytes = 64 * 1024;

// ---- exceptions ------------------------------------------------------------------

// The exception classes (created once at import, owned by the module).
struct Exceptions {
  PyObject* error = nullptr;   // shmbus.Error
  PyObject* by_code[11] = {};  // indexed by shmbus::ErrorCode
  PyObject* timeout = nullptr;
  PyObject* would_block = nullptr;
  PyObject* too_large = nullptr;
  PyObject* too_many_held = nullptr;
  PyObject* closed = nullptr;
  PyObject* topic_deleted = nullptr;
};
Exceptions& exceptions();
PyObject* invalid_argument();  // shmbus.InvalidArgument
void register_exceptions(py::module_& m);

// A C++ library message as a Python user should read it: the C++ spellings
// it names (BusOptions::daemon_path, slot_count, ...) replaced by the Python
// ones (shmbus.connect(daemon=...), slots=, ...).
std::string python_spelling(std::string message);

// Sets a Python exception of `type` and unwinds to pybind11 (GIL held).
[[noreturn]] void raise(PyObject* type, const std::string& message);

// An endpoint's mutex (every call into a Subscriber or Publisher takes it),
// and how many threads are waiting to take it. A call that waits in the core
// holds the mutex with the GIL released; its core Interrupt (see
// python_interrupt) ends the wait when `wanted` is not zero, so the waiter
// lets the others in (a release, close(), another call) and then waits again.
using WantCount = std::shared_ptr<std::atomic<std::uint32_t>>;
[[nodiscard]] inline WantCount make_want_count() {
  return std::make_shared<std::atomic<std::uint32_t>>(0);
}
struct EndpointMutex {
  explicit EndpointMutex(WantCount w) : wanted(std::move(w)) {}
  std::mutex m;
  WantCount wanted;  // shared with the core's Interrupt (python_interrupt)
};

// The core's Interrupt for a Python endpoint whose mutex counts its waiting
// threads in `wanted`: stops a wait when another thread wants the mutex, and
// in the main thread every kInterruptEvery, so that wait_until can run the
// signal handlers (Ctrl-C) with the mutex released. It takes no GIL and runs
// no Python code. Made before the endpoint, which gets `wanted`.
Interrupt python_interrupt(WantCount wanted);

// Locks `mu` with the GIL held by the caller. When another thread holds the
// mutex (it may be waiting in a receive with the GIL released), this thread
// counts itself in mu.wanted and waits for it with the GIL released, and
// never holds the mutex while waiting for the GIL: so the two never
// deadlock, and a thread that waits for the GIL (up to the interpreter's
// switch interval) does not hold up the others.
class GilSafeLock {
 public:
  explicit GilSafeLock(EndpointMutex& mu) : m_(mu.m) {
    if (m_.try_lock()) return;
    // Relaxed: a hint read by the holder's interrupt check; the mutex itself
    // orders everything the two threads share. Counted down by a destructor,
    // so that even a thread ended in place (taking the GIL while the
    // interpreter finalizes) does not leave a waiter yielding to it for ever.
    struct Wanting {
      std::atomic<std::uint32_t>& n;
      explicit Wanting(std::atomic<std::uint32_t>& c) : n(c) {
        n.fetch_add(1, std::memory_order_relaxed);
      }
      ~Wanting() { n.fetch_sub(1, std::memory_order_relaxed); }
      Wanting(const Wanting&) = delete;
      Wanting& operator=(const Wanting&) = delete;
    } wanting(*mu.wanted);
    while (!m_.try_lock()) {
      py::gil_scoped_release nogil;
      std::lock_guard wait_for_holder(m_);
    }
  }
  ~GilSafeLock() { m_.unlock(); }
  GilSafeLock(const GilSafeLock&) = delete;
  GilSafeLock& operator=(const GilSafeLock&) = delete;

 private:
  std::mutex& m_;
};

// ---- fork() --------------------------------------------------------------------
// A process made by fork() inherits the parent's objects: their seats, their
// daemon connection (whose background thread does not exist in the child)
// and their held slots. Using them there would act on the parent's behalf,
// and destroying them would free the parent's seats or wait for a thread
// that is not there. So every object remembers the process that made it:
// in another process its methods raise, and it is never destroyed (leaked,
// on purpose: the child's own objects are unaffected).

// getpid(), kept current across fork() by a pthread_atfork handler (which
// also keeps the main thread's id current, for python_interrupt).
pid_t current_pid() noexcept;
void install_fork_handler();
// Raises shmbus.Error if `creator` is not this process.
void check_process(pid_t creator, const char* what);

// The pybind11 holder of every class that refers to shared memory or to the
// daemon: a unique_ptr that leaks its object instead of destroying it in a
// fork() child.
template <class T>
class ForkSafePtr {
 public:
  ForkSafePtr() = default;
  explicit ForkSafePtr(T* p) noexcept : p_(p), pid_(current_pid()) {}
  ForkSafePtr(ForkSafePtr&& o) noexcept : p_(std::move(o.p_)), pid_(o.pid_) {}
  ForkSafePtr& operator=(ForkSafePtr&&) = delete;
  ForkSafePtr(const ForkSafePtr&) = delete;
  ForkSafePtr& operator=(const ForkSafePtr&) = delete;
  ~ForkSafePtr() {
    if (p_ && pid_ != current_pid()) (void)p_.release();
  }
  [[nodiscard]] T* get() const noexcept { return p_.get(); }

 private:
  std::unique_ptr<T> p_;
  pid_t pid_ = 0;
};

// Hands a newly made object to Python, which then owns it.
template <class T>
py::object to_python(std::unique_ptr<T> p) {
  return py::cast(p.release(), py::return_value_policy::take_ownership);
}

// ---- arguments ------------------------------------------------------------------
// The library's parsers (shmbus/options.hpp) applied to Python arguments; a
// value they do not accept raises InvalidArgument naming the keyword and
// listing what the library accepts.
Policy policy_arg(const std::string& s);           // policy=
WaitStrategy wait_arg(const std::string& s);       // wait=
GroupMode group_mode_arg(const std::string& s);    // mode= (of a subscriber's group)
StartPosition start_arg(const py::handle& start);  // start=: a name, or an int >= 0
std::chrono::nanoseconds seconds_to_ns(double seconds, const char* what);
// A wall-clock time in ns since the epoch as Python shows it: an int of ns,
// or float seconds (time.time()); None for 0 (none: not a delayed message,
// nothing scheduled).
inline py::object ns_or_none(std::uint64_t ns) {
  return ns == 0 ? py::object(py::none()) : py::object(py::int_(ns));
}
inline py::object seconds_or_none(std::uint64_t ns) {
  return ns == 0 ? py::object(py::none()) : py::object(py::float_(static_cast<double>(ns) / 1e9));
}
// A partition or priority argument (partition=, priority=): None, or an int
// >= 0 that fits 32 bits (else InvalidArgument naming `keyword`).
std::optional<std::uint32_t> index_arg(const py::handle& value, const char* keyword);

// ---- the buffer protocol (Sample: read-only; Loan: writable) ----------------------

// The body of a bf_getbuffer slot of a T: `fill(T&)` raises a Python error
// (the object is closed, the request is refused) or calls fill_buffer.
// Returns 0, or -1 with the error set, as the C API wants.
template <class T, class Fill>
int buffer_slot(PyObject* obj, Py_buffer* view, const char* type_name, Fill&& fill) noexcept {
  view->obj = nullptr;
  T* t = nullptr;
  try {
    t = py::handle(obj).cast<T*>();
  } catch (...) {
  }
  if (t == nullptr) {
    PyErr_Format(PyExc_BufferError, "not a shmbus.%s", type_name);
    return -1;
  }
  try {
    fill(*t);
    return 0;
  } catch (py::error_already_set& e) {
    e.restore();
  } catch (...) {
    PyErr_Format(PyExc_RuntimeError, "shmbus.%s: could not export its buffer", type_name);
  }
  return -1;
}
// A contiguous view of a buffer-protocol argument, taken with `flags`
// (PyBUF_C_CONTIGUOUS, with PyBUF_WRITABLE to write) and released on scope
// exit. A refused request raises TypeError: `needs`, ": ", then the reason
// (e.g. "not C-contiguous").
class BufferArg {
 public:
  BufferArg(py::handle obj, int flags, const char* needs);
  ~BufferArg() { PyBuffer_Release(&view_); }
  BufferArg(const BufferArg&) = delete;
  BufferArg& operator=(const BufferArg&) = delete;
  [[nodiscard]] std::span<const std::byte> bytes() const noexcept {
    return {static_cast<const std::byte*>(view_.buf), static_cast<std::size_t>(view_.len)};
  }
  // Only for a view taken with PyBUF_WRITABLE.
  [[nodiscard]] std::span<std::byte> writable() const noexcept {
    return {static_cast<std::byte*>(view_.buf), static_cast<std::size_t>(view_.len)};
  }
  // As a table of rows (a view taken with PyBUF_C_CONTIGUOUS, which has a
  // shape): a 2-D buffer's first dimension, else one row of everything.
  [[nodiscard]] std::size_t rows() const noexcept {
    return view_.ndim >= 2 && view_.shape != nullptr ? static_cast<std::size_t>(view_.shape[0]) : 1;
  }
  [[nodiscard]] int ndim() const noexcept { return view_.ndim; }
  [[nodiscard]] std::size_t itemsize() const noexcept {
    return static_cast<std::size_t>(view_.itemsize);
  }

 private:
  Py_buffer view_{};
};

// A message key from Python (key=, partition_for_key): a str (its UTF-8
// bytes, as Kafka's StringSerializer sends it) or any C-contiguous buffer,
// viewed in place for the life of the KeyArg. None: no key (empty bytes).
// Anything else raises TypeError naming `what` (the call).
class KeyArg {
 public:
  KeyArg(const py::handle& key, const char* what);
  KeyArg(const KeyArg&) = delete;
  KeyArg& operator=(const KeyArg&) = delete;
  [[nodiscard]] std::span<const std::byte> bytes() const noexcept { return bytes_; }

 private:
  std::optional<BufferArg> buffer_;
  std::span<const std::byte> bytes_;
};

// Fills `view` over `bytes` (a zero-length buffer points at a static byte).
void fill_buffer(Py_buffer* view, PyObject* obj, std::span<const std::byte> bytes, bool readonly,
                 int flags);

// A message's properties as a new dict of str to str (invalid UTF-8 decodes
// with U+FFFD).
[[nodiscard]] py::dict headers_dict(const Properties& props);

// Gives a pybind11-made type the module name users import ("shmbus").
void set_public_module(py::handle type);

void bind_sample(py::module_& m);
void bind_batch(py::module_& m);
void bind_subscriber(py::module_& m);
void bind_loan(py::module_& m);
void bind_publisher(py::module_& m);
void bind_bus(py::module_& m);

}  // namespace shmbus::python

PYBIND11_DECLARE_HOLDER_TYPE(T, shmbus::python::ForkSafePtr<T>)
