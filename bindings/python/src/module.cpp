// The _shmbus extension module: exception classes, helpers, module init.
// The public package is bindings/python/shmbus/__init__.py, which re-exports
// everything defined here under the name `shmbus`.
#include <pthread.h>
#include <unistd.h>

#include <atomic>
#include <cmath>

#include "common.hpp"
#include "shmbus/version.hpp"

namespace shmbus::python {

namespace {

Exceptions g_exceptions;
std::atomic<pid_t> g_pid{0};

void after_fork_in_child() {
  g_pid.store(::getpid(), std::memory_order_relaxed);
}

PyObject* new_exception(py::module_& m, const char* name, const char* doc, PyObject* bases,
                        const char* code) {
  const std::string qualified = std::string("shmbus.") + name;
  PyObject* cls = PyErr_NewExceptionWithDoc(qualified.c_str(), doc, bases, nullptr);
  if (cls == nullptr) throw py::error_already_set();
  if (code != nullptr) PyObject_SetAttrString(cls, "code", py::str(code).ptr());
  // The module keeps the reference; the pointer in g_exceptions borrows it.
  m.add_object(name, py::reinterpret_steal<py::object>(cls));
  return cls;
}

PyObject* bases(PyObject* a, PyObject* b = nullptr) {
  // A new reference on purpose: PyErr_NewExceptionWithDoc does not steal it,
  // and the tuple lives as long as the classes (for ever).
  return b == nullptr ? PyTuple_Pack(1, a) : PyTuple_Pack(2, a, b);
}

}  // namespace

Exceptions& exceptions() {
  return g_exceptions;
}

void register_exceptions(py::module_& m) {
  Exceptions& e = g_exceptions;
  e.error = new_exception(m, "Error",
                          "Base class of every shmbus error. The message is the C++ library's.\n"
                          "Subclasses carry a class attribute `code` (a short string).",
                          bases(PyExc_Exception), "error");
  auto sub = [&](ErrorCode c, const char* name, const char* doc, PyObject* extra,
                 const char* code) {
    PyObject* cls = new_exception(m, name, doc, bases(e.error, extra), code);
    e.by_code[static_cast<int>(c)] = cls;
  };
  sub(ErrorCode::InvalidArgument, "InvalidArgument",
      "A name, size or option is out of range (also a ValueError).", PyExc_ValueError,
      "invalid_argument");
  sub(ErrorCode::NotFound, "NotFound", "No topic by that name (also a LookupError).",
      PyExc_LookupError, "not_found");
  sub(ErrorCode::AlreadyExists, "AlreadyExists", "A topic by that name exists already.", nullptr,
      "already_exists");
  sub(ErrorCode::PermissionDenied, "PermissionDenied",
      "The daemon's rules or the OS refused access (also a PermissionError).",
      PyExc_PermissionError, "permission_denied");
  sub(ErrorCode::VersionMismatch, "VersionMismatch",
      "The topic region was made by another layout version.", nullptr, "version_mismatch");
  sub(ErrorCode::Corrupt, "Corrupt", "The topic region's header does not describe a valid topic.",
      nullptr, "corrupt");
  sub(ErrorCode::ResourceExhausted, "ResourceExhausted",
      "No free producer seat, consumer group or member seat.", nullptr, "resource_exhausted");
  sub(ErrorCode::SystemError, "SystemFailure",
      "A system call failed (C++ ErrorCode::SystemError); the message carries the errno text.",
      nullptr, "system_error");
  sub(ErrorCode::DaemonUnavailable, "DaemonUnavailable",
      "No shmbusd answers on the socket and none could be started.", nullptr, "daemon_unavailable");
  e.timeout = new_exception(
      m, "Timeout",
      "A blocking call's timeout passed first: publish/loan found the ring full until the\n"
      "publisher's timeout (policy 'block'). Also a TimeoutError.",
      bases(e.error, PyExc_TimeoutError), "timeout");
  e.would_block =
      new_exception(m, "WouldBlock",
                    "publish/loan found the ring full and the topic's policy is 'reject'\n"
                    "(or timeout=0). Also a BlockingIOError.",
                    bases(e.error, PyExc_BlockingIOError), "would_block");
  e.too_large = new_exception(m, "TooLarge",
                              "The message is larger than the topic's slot size (also a "
                              "ValueError).",
                              bases(e.error, PyExc_ValueError), "too_large");
  e.too_many_held =
      new_exception(m, "TooManyHeld",
                    "The subscriber holds the most unreleased samples it may (64): release some.",
                    bases(e.error), "too_many_held");
  e.closed = new_exception(
      m, "Closed",
      "The object was released, published or closed: a Sample after release(), a Loan after\n"
      "publish()/abandon(), a Publisher or Subscriber after close(). Also a ValueError.",
      bases(e.error, PyExc_ValueError), "closed");

  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const Error& err) {
      const auto i = static_cast<std::size_t>(err.code());
      PyObject* cls = i < std::size(g_exceptions.by_code) && g_exceptions.by_code[i] != nullptr
                          ? g_exceptions.by_code[i]
                          : g_exceptions.error;
      PyErr_SetString(cls, err.what());
    }
  });
}

pid_t current_pid() noexcept {
  return g_pid.load(std::memory_order_relaxed);
}

void install_fork_handler() {
  g_pid.store(::getpid(), std::memory_order_relaxed);
  ::pthread_atfork(nullptr, nullptr, &after_fork_in_child);
}

void check_process(pid_t creator, const char* what) {
  if (creator == current_pid()) return;
  raise(g_exceptions.error,
        std::string("this ") + what + " was made in process " + std::to_string(creator) +
            " and cannot be used in process " + std::to_string(current_pid()) +
            ", a fork() child of it; connect again in the child (with multiprocessing, use "
            "the 'spawn' or 'forkserver' start method)");
}

void raise(PyObject* type, const std::string& message) {
  PyErr_SetString(type, message.c_str());
  throw py::error_already_set();
}

Deadline::Deadline(std::optional<double> seconds) {
  if (!seconds) {
    forever_ = true;
    return;
  }
  const double s = *seconds;
  if (std::isnan(s) || s < 0)
    raise(invalid_argument(),
          "timeout must be None (wait for ever) or a number of seconds >= 0, not " +
              std::to_string(s));
  zero_ = s == 0;
  if (s > 1e9) {  // ~31 years: for ever, without overflowing the clock
    forever_ = true;
    return;
  }
  at_ =
      Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
}

std::chrono::nanoseconds Deadline::slice() const noexcept {
  if (forever_) return kWaitSlice;
  const auto left = std::chrono::duration_cast<std::chrono::nanoseconds>(at_ - Clock::now());
  if (left.count() <= 0) return std::chrono::nanoseconds(0);
  return std::min<std::chrono::nanoseconds>(left, kWaitSlice);
}

PyObject* invalid_argument() {
  return g_exceptions.by_code[static_cast<int>(ErrorCode::InvalidArgument)];
}

namespace {

[[noreturn]] void raise_bad_arg(const char* keyword, const std::string& given,
                                std::string_view accepted) {
  raise(invalid_argument(),
        std::string(keyword) + "=" + given + ": expected " + std::string(accepted));
}

}  // namespace

Policy policy_arg(const std::string& s) {
  if (const auto p = parse_policy(s)) return *p;
  raise_bad_arg("policy", "'" + s + "'", kPolicyNames);
}

WaitStrategy wait_arg(const std::string& s) {
  if (const auto w = parse_wait_strategy(s)) return *w;
  raise_bad_arg("wait", "'" + s + "'", kWaitStrategyNames);
}

StartPosition start_arg(const py::handle& start) {
  if (py::isinstance<py::str>(start)) {
    if (const auto p = parse_start(start.cast<std::string>())) return *p;
  } else if (py::isinstance<py::int_>(start) && !py::isinstance<py::bool_>(start)) {
    // Wider than std::uint64_t or negative: not an offset.
    std::uint64_t v = PyLong_AsUnsignedLongLong(start.ptr());
    if (!PyErr_Occurred()) return StartPosition{StartFrom::Offset, v};
    PyErr_Clear();
  }
  raise_bad_arg("start", py::repr(start).cast<std::string>(),
                std::string(kStartNames) + " (an int >= 0)");
}

std::chrono::nanoseconds seconds_to_ns(double seconds, const char* what) {
  if (std::isnan(seconds) || seconds < 0 || seconds > 3600)
    raise(invalid_argument(), std::string(what) + " must be between 0 and 3600 seconds");
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
      std::chrono::duration<double>(seconds));
}

void set_public_module(py::handle type) {
  type.attr("__module__") = "shmbus";
}

}  // namespace shmbus::python

PYBIND11_MODULE(_shmbus, m) {
  using namespace shmbus::python;
  m.doc() = "Compiled part of the shmbus package; import `shmbus` instead.";
  // Docstrings start with a Python-style signature line of their own (the
  // generated ones would name C++-side types such as `object`).
  py::options options;
  options.disable_function_signatures();
  install_fork_handler();
  register_exceptions(m);
  bind_pubsub(m);
  bind_bus(m);
  m.attr("__version__") = shmbus::version();
  m.attr("WAIT_SLICE_SECONDS") = std::chrono::duration<double>(kWaitSlice).count();
}
