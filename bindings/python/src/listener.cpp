// Subscriber.listen: a push consumer (shmbus::Listener) calling a Python
// callback on worker threads, the GIL taken only around each call.
#include <memory>
#include <optional>
#include <string>

#include "py_subscriber.hpp"
#include "shmbus/listener.hpp"

namespace shmbus::python {

namespace {

// What the callback gets: a copy of the message (the slot is released when
// the callback returns, so nothing may point into it afterwards).
struct PyMessage {
  py::bytes data;
  py::bytes key;
  py::dict headers;
  std::uint64_t sequence = 0;
  std::uint64_t timestamp_ns = 0;
  std::uint32_t partition = 0;
  std::uint32_t priority = 0;
  std::uint32_t producer_id = 0;
  std::uint32_t delivery_count = 1;
};

py::bytes bytes_of(std::span<const std::byte> d) {
  return {reinterpret_cast<const char*>(d.data()), d.size()};
}

// The callback, dropped with the GIL held whichever thread lets go last.
struct Callback {
  py::object f;
  explicit Callback(py::object fn) : f(std::move(fn)) {}
  Callback(const Callback&) = delete;
  Callback& operator=(const Callback&) = delete;
  ~Callback() {
    py::gil_scoped_acquire gil;
    f = py::object();
  }
};

class PyListener {
 public:
  PyListener(py::object sub, PySubscriber* ps) : sub_(std::move(sub)), ps_(ps) {}
  PyListener(const PyListener&) = delete;
  PyListener& operator=(const PyListener&) = delete;
  ~PyListener() { close(); }

  std::optional<Listener> listener;

  // Stops the listener (GIL held on entry: released while the workers end,
  // as they may be waiting for it), then gives the subscriber back.
  void close() {
    if (!listener) return;
    {
      py::gil_scoped_release nogil;
      listener->stop();
    }
    handled_ = listener->handled();
    failed_ = listener->failed();
    listener.reset();
    GilSafeLock lk(ps_->mu);
    ps_->busy = nullptr;
    --ps_->held;
    ps_->finish_close_locked();
  }
  [[nodiscard]] bool running() const { return listener && listener->running(); }
  [[nodiscard]] std::uint64_t handled() const { return listener ? listener->handled() : handled_; }
  [[nodiscard]] std::uint64_t failed() const { return listener ? listener->failed() : failed_; }
  [[nodiscard]] const std::string& topic() const { return ps_->topic; }

 private:
  py::object sub_;  // keeps the subscriber (and its mapping) alive
  PySubscriber* ps_;
  std::uint64_t handled_ = 0, failed_ = 0;
};

py::object listen(const py::object& self, const py::object& callback, std::uint32_t threads,
                  bool ordered_by_key, std::uint32_t max_in_flight) {
  PySubscriber& ps = self.cast<PySubscriber&>();
  if (!PyCallable_Check(callback.ptr()))
    raise(PyExc_TypeError, "listen needs a callable (callback(message)), not " +
                               std::string(py::str(py::type::of(callback).attr("__name__"))));
  auto cb = std::make_shared<Callback>(callback);
  auto handler = [cb](const Sample& s) {
    py::gil_scoped_acquire gil;
    try {
      PyMessage m;
      m.data = bytes_of(s.data());
      m.key = bytes_of(s.key());
      m.headers = headers_dict(s.properties());
      m.sequence = s.sequence();
      m.timestamp_ns = s.timestamp_ns();
      m.partition = s.partition();
      m.priority = s.priority();
      m.producer_id = s.producer_id();
      m.delivery_count = s.delivery_count();
      cb->f(py::cast(std::move(m)));
    } catch (py::error_already_set& e) {
      // Reported as asyncio reports a callback's exception (sys.unraisablehook),
      // then counted (failed) and, at least once, nacked by the Listener.
      e.discard_as_unraisable(cb->f);
      throw std::runtime_error("the callback raised");
    }
  };
  ListenOptions o;
  o.threads = threads;
  o.ordered_by_key = ordered_by_key;
  o.max_in_flight = max_in_flight;
  auto pl = std::make_unique<PyListener>(self, &ps);
  {
    auto lk = ps.lock();
    Subscriber& s = ps.open_or_raise();
    if (ps.held != 0)
      raise(exceptions().error, "the subscriber of topic '" + ps.topic + "' holds " +
                                    std::to_string(ps.held) +
                                    " samples: release them before listen() (the listener's "
                                    "thread then owns the subscriber)");
    try {
      pl->listener.emplace(s.listen(handler, o));
    } catch (const Error& e) {
      raise(invalid_argument(), e.what());
    }
    ps.busy = "is listening: close its listener first (listener.close() or a with block)";
    ++ps.held;  // close() waits for the listener
  }
  return py::cast(std::move(pl));
}

}  // namespace

void bind_listener(py::module_& m, py::class_<PySubscriber, ForkSafePtr<PySubscriber>>& sub) {
  py::class_<PyMessage>(m, "Message",
                        "A message handed to a listener's callback: a copy (the slot is "
                        "released\nwhen the callback returns).")
      .def_readonly("data", &PyMessage::data, "The payload (bytes).")
      .def_readonly("key", &PyMessage::key, "The key (bytes; empty: none).")
      .def_readonly("headers", &PyMessage::headers, "The properties, a dict of str to str.")
      .def_readonly("sequence", &PyMessage::sequence, "Its offset in its partition.")
      .def_readonly("timestamp_ns", &PyMessage::timestamp_ns, "CLOCK_MONOTONIC at publish.")
      .def_readonly("partition", &PyMessage::partition, "The partition it came from.")
      .def_readonly("priority", &PyMessage::priority, "Its priority (0: none).")
      .def_readonly("producer_id", &PyMessage::producer_id, "The producer seat.")
      .def_readonly("delivery_count", &PyMessage::delivery_count,
                    "Deliveries to the group, this one included (at least once).")
      .def("__bytes__", [](const PyMessage& msg) { return msg.data; })
      .def("__len__", [](const PyMessage& msg) { return py::len(msg.data); })
      .def("__repr__", [](const PyMessage& msg) {
        return "<shmbus.Message sequence=" + std::to_string(msg.sequence) +
               " partition=" + std::to_string(msg.partition) +
               " size=" + std::to_string(py::len(msg.data)) + ">";
      });

  py::class_<PyListener>(m, "Listener", R"doc(
A running push consumer (Subscriber.listen): worker threads call the callback
for each message. close() (or the end of a with block) stops receiving, lets
running callbacks return and joins the threads; what was received but not
handled is handled first (at most once) or given back to the group (at least
once). A callback that raises is reported (sys.unraisablehook) and counted in
failed; under at-least-once its message is nacked and comes again.
)doc")
      .def("close", &PyListener::close, "close() -> None\n\nStops it (see the class). Idempotent.")
      .def("__enter__", [](py::object self) { return self; })
      .def("__exit__",
           [](PyListener& l, const py::args&) {
             l.close();
             return false;
           })
      .def_property_readonly("running", &PyListener::running, "True until close().")
      .def_property_readonly("handled", &PyListener::handled, "Callbacks that returned.")
      .def_property_readonly("failed", &PyListener::failed, "Callbacks that raised.")
      .def("__repr__", [](const PyListener& l) {
        return "<shmbus.Listener topic='" + l.topic() + "' handled=" + std::to_string(l.handled()) +
               (l.running() ? "" : " closed") + ">";
      });

  sub.def("listen", &listen, py::arg("callback"), py::arg("threads") = 1,
          py::arg("ordered_by_key") = false, py::arg("max_in_flight") = 0,
          R"doc(listen(callback, threads=1, ordered_by_key=False, max_in_flight=0) -> Listener

Calls callback(message) for each message (a Message: a copy of the data,
key, headers and metadata) on `threads` worker threads, the GIL taken only
around each call, until the Listener is closed (use it as a context manager).
ordered_by_key=True: all messages of a key (unkeyed: of a partition) go to
one worker, in order. max_in_flight: messages received but not yet handled,
at most (0: 4 per thread, at most 60); they are held in the ring, so slow
callbacks hold producers back. Meanwhile the subscriber takes no other calls.
Raises Error when the subscriber holds samples, InvalidArgument for bad
options.)doc");
}

}  // namespace shmbus::python
