// Definitions of the shared helpers declared in common.hpp.
#include "common.hpp"

#include <pthread.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <string_view>
#include <utility>

#include "wait.hpp"

namespace shmbus::python {

namespace {

// Written at import and in a fork() child before any other thread exists
// there; read anywhere. Relaxed: no other data is published through it.
std::atomic<pid_t> g_pid{0};

// The thread that runs Python's signal handlers (threading.main_thread()).
std::atomic<unsigned long> g_main_thread{0};

void after_fork_in_child() {
  g_pid.store(::getpid(), std::memory_order_relaxed);  // relaxed: see g_pid
  // The forking thread is the child's main thread (as CPython makes it).
  g_main_thread.store(PyThread_get_thread_ident(), std::memory_order_relaxed);
}

char g_empty_payload = 0;  // what a zero-length buffer points at

}  // namespace

pid_t current_pid() noexcept {
  return g_pid.load(std::memory_order_relaxed);  // relaxed: see g_pid
}

void install_fork_handler() {
  g_pid.store(::getpid(), std::memory_order_relaxed);  // relaxed: see g_pid
  // The module may be imported from any thread: ask threading (GIL held).
  g_main_thread.store(
      py::module_::import("threading").attr("main_thread")().attr("ident").cast<unsigned long>(),
      std::memory_order_relaxed);  // relaxed: see g_main_thread
  if (const int err = ::pthread_atfork(nullptr, nullptr, &after_fork_in_child); err != 0)
    raise(PyExc_ImportError, std::string("shmbus: pthread_atfork failed: ") + std::strerror(err));
}

void check_process(pid_t creator, const char* what) {
  if (creator == current_pid()) return;
  raise(exceptions().error,
        std::string("this ") + what + " was made in process " + std::to_string(creator) +
            " and cannot be used in process " + std::to_string(current_pid()) +
            ", a fork() child of it; connect again in the child (with multiprocessing, use "
            "the 'spawn' or 'forkserver' start method)");
}

void raise(PyObject* type, const std::string& message) {
  PyErr_SetString(type, message.c_str());
  throw py::error_already_set();
}

PyObject* invalid_argument() {
  return exceptions().by_code[static_cast<int>(ErrorCode::InvalidArgument)];
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

GroupMode group_mode_arg(const std::string& s) {
  if (const auto m = parse_group_mode(s)) return *m;
  raise_bad_arg("mode", "'" + s + "'", kGroupModeNames);
}

std::optional<std::uint32_t> index_arg(const py::handle& value, const char* keyword) {
  if (value.is_none()) return std::nullopt;
  if (py::isinstance<py::int_>(value) && !py::isinstance<py::bool_>(value)) {
    // Negative or wider than 32 bits (the top value means "none" in C++): no index.
    const unsigned long long v = PyLong_AsUnsignedLongLong(value.ptr());
    if (!PyErr_Occurred() && v < 0xffffffffULL) return static_cast<std::uint32_t>(v);
    PyErr_Clear();
  }
  raise_bad_arg(keyword, py::repr(value).cast<std::string>(), "None or an int >= 0");
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

std::string python_spelling(std::string message) {
  // In order: a longer spelling before one it contains.
  static constexpr std::pair<std::string_view, std::string_view> kSpellings[] = {
      {"BusOptions::daemon_path", "shmbus.connect(daemon=...)"},
      {"Bus::connect()", "shmbus.connect()"},
      {"slot_count x slot_size", "slots x slot_size"},  // TopicOptions::slot_count
      {"slot_count ", "slots="},                        // "slot_count 3 is not a power of two"
      // A group joined with another mode (Subscriber's constructor).
      {"group_mode partitioned (CLI --group-mode, Python mode=)", "mode='partitioned'"},
      {"group_mode shared (CLI --group-mode, Python mode=)", "mode='shared'"},
  };
  for (const auto& [cpp, python] : kSpellings)
    for (auto at = message.find(cpp); at != std::string::npos;
         at = message.find(cpp, at + python.size()))
      message.replace(at, cpp.size(), python);
  return message;
}

BufferArg::BufferArg(py::handle obj, int flags, const char* needs) {
  if (PyObject_GetBuffer(obj.ptr(), &view_, flags) != 0) {
    // Say what is wanted; keep the original reason.
    py::error_already_set e;
    raise(PyExc_TypeError, std::string(needs) + ": " + e.what());
  }
}

KeyArg::KeyArg(const py::handle& key, const char* what) {
  if (key.is_none()) return;
  if (PyUnicode_Check(key.ptr())) {
    Py_ssize_t n = 0;
    const char* s = PyUnicode_AsUTF8AndSize(key.ptr(), &n);  // owned by the str
    if (s == nullptr) throw py::error_already_set();
    bytes_ = {reinterpret_cast<const std::byte*>(s), static_cast<std::size_t>(n)};
    return;
  }
  buffer_.emplace(key, PyBUF_C_CONTIGUOUS,
                  (std::string(what) + " needs a key of bytes (or any C-contiguous buffer), str "
                                       "or None")
                      .c_str());
  bytes_ = buffer_->bytes();
}

void set_public_module(py::handle type) {
  type.attr("__module__") = "shmbus";
}

void fill_buffer(Py_buffer* view, PyObject* obj, std::span<const std::byte> bytes, bool readonly,
                 int flags) {
  // PyBuffer_FillInfo refuses a writable request when `readonly` is set.
  void* buf =
      bytes.empty() ? static_cast<void*>(&g_empty_payload) : const_cast<std::byte*>(bytes.data());
  if (PyBuffer_FillInfo(view, obj, buf, static_cast<Py_ssize_t>(bytes.size()), readonly ? 1 : 0,
                        flags) != 0)
    throw py::error_already_set();
}

Interrupt python_interrupt(WantCount wanted) {
  Interrupt i;
  i.every = kInterruptEvery;
  // No GIL and no Python code in here: the waiter holds the endpoint's mutex,
  // and a signal handler or the garbage collector run from here could want it.
  i.check = [wanted = std::move(wanted)]() noexcept {
    // Relaxed: a hint (see GilSafeLock); the mutex orders the data.
    if (wanted->load(std::memory_order_relaxed) != 0) return true;
    // Only the main thread runs signal handlers: it leaves the core every
    // kInterruptEvery, and wait_until runs them with the mutex released.
    // Relaxed: written at import and in a fork() child, before any wait.
    return PyThread_get_thread_ident() == g_main_thread.load(std::memory_order_relaxed);
  };
  return i;
}

py::dict headers_dict(const Properties& props) {
  py::dict out;
  const auto str = [](std::string_view v) {
    return py::reinterpret_steal<py::object>(
        PyUnicode_DecodeUTF8(v.data(), static_cast<Py_ssize_t>(v.size()), "replace"));
  };
  for (const Property& p : props) {
    py::object k = str(p.name), v = str(p.value);
    if (!k || !v) throw py::error_already_set();
    out[k] = v;
  }
  return out;
}

}  // namespace shmbus::python
