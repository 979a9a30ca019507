// The _shmbus extension module: the exception classes and the module's init.
// The public package is bindings/python/shmbus/__init__.py, which re-exports
// everything defined here under the name `shmbus`.
#include "common.hpp"
#include "shmbus/partition.hpp"
#include "shmbus/version.hpp"
#include "wait.hpp"

namespace shmbus::python {

namespace {

Exceptions g_exceptions;

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
                          "Base class of every shmbus error. The message is the C++ library's,\n"
                          "naming the Python spelling of what it names (slots=, daemon=).\n"
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
  sub(ErrorCode::InUse, "InUse",
      "Refused while producers or members are attached (delete_topic(if_unused=True)).", nullptr,
      "in_use");
  e.timeout = new_exception(
      m, "Timeout",
      "A blocking call's timeout passed first: publish/loan found the ring full until the\n"
      "publisher's timeout (policy 'block'), or Bus.request got no reply in time. Also a\n"
      "TimeoutError.",
      bases(e.error, PyExc_TimeoutError), "timeout");
  e.by_code[static_cast<int>(ErrorCode::Timeout)] = e.timeout;  // Bus.request
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
  e.topic_deleted = new_exception(
      m, "TopicDeleted",
      "The topic was deleted (Bus.delete_topic, `shmbus topic delete`): publish raises it at\n"
      "once, receive once every message published before the delete was received.",
      bases(e.error), "topic_deleted");

  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const Error& err) {
      const auto i = static_cast<std::size_t>(err.code());
      PyObject* cls = i < std::size(g_exceptions.by_code) && g_exceptions.by_code[i] != nullptr
                          ? g_exceptions.by_code[i]
                          : g_exceptions.error;
      PyErr_SetString(cls, python_spelling(err.what()).c_str());
    }
  });
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
  bind_sample(m);
  bind_batch(m);
  bind_subscriber(m);
  bind_loan(m);
  bind_publisher(m);
  bind_bus(m);
  m.def(
      "partition_for_key",
      [](py::handle key, std::int64_t partitions) {
        if (partitions < 1 || partitions > 0xffffffffLL)
          throw shmbus::Error(shmbus::ErrorCode::InvalidArgument,
                              "partitions=" + std::to_string(partitions) +
                                  " is out of range; a topic has at least one partition");
        // A str is its UTF-8 bytes, as Kafka's StringSerializer sends it.
        if (PyUnicode_Check(key.ptr())) {
          Py_ssize_t n = 0;
          const char* s = PyUnicode_AsUTF8AndSize(key.ptr(), &n);
          if (s == nullptr) throw py::error_already_set();
          return shmbus::partition_for_key(std::string_view(s, static_cast<std::size_t>(n)),
                                           static_cast<std::uint32_t>(partitions));
        }
        const BufferArg buf(key, PyBUF_C_CONTIGUOUS,
                            "partition_for_key needs a key of bytes (or any C-contiguous "
                            "buffer) or str");
        return shmbus::partition_for_key(buf.bytes(), static_cast<std::uint32_t>(partitions));
      },
      py::arg("key"), py::arg("partitions"),
      "partition_for_key(key: bytes | str, partitions: int) -> int\n\n"
      "The partition Kafka's default partitioner gives a message with this key\n"
      "(murmur2, seed 0x9747b28c, made positive, modulo `partitions`), as the Java\n"
      "client and librdkafka compute it; a str key is hashed as its UTF-8 bytes.");
  m.attr("__version__") = shmbus::version();  // the library's, generated by CMake
  m.attr("INTERRUPT_CHECK_SECONDS") = std::chrono::duration<double>(kInterruptEvery).count();
}
