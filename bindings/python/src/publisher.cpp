// Publisher for Python: publish (one copy), loan (in place), and waiting for
// room under policy 'block'.
#include "py_publisher.hpp"

#include <cstdio>
#include <span>

#include "wait.hpp"

namespace shmbus::python {

namespace {

std::string seconds_text(std::optional<double> t) {
  if (!t) return "ever";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g s", *t);
  return buf;
}

// Raises the Python exception for a data-plane status that is not Ok.
[[noreturn]] void raise_publish_status(Status st, const PyPublisher& pp, std::size_t size,
                                       std::optional<double> timeout) {
  switch (st) {
    case Status::Timeout:
      raise(exceptions().timeout,
            "topic '" + pp.topic + "' stayed full for " + seconds_text(timeout) +
                " (policy 'block'): no room for the message; consumers are slow or gone");
    case Status::WouldBlock:
      raise(exceptions().would_block, "topic '" + pp.topic + "' is full (policy '" +
                                          std::string(to_string(pp.policy)) +
                                          "'): the message was not accepted");
    case Status::TooLarge:
      raise(exceptions().too_large, "message of " + std::to_string(size) +
                                        " bytes is larger than topic '" + pp.topic +
                                        "''s slot size");
    case Status::TopicDeleted:
      raise(exceptions().topic_deleted,
            "topic '" + pp.topic + "' was deleted: the message was not published");
    case Status::Invalid:
      pp.raise_closed();
    default:
      raise(exceptions().error, std::string("publish failed: ") + to_string(st));
  }
}

// How long publish()/loan() wait: the publisher's timeout, or not at all.
std::optional<double> wait_time(const PyPublisher& pp, bool wait) {
  return wait ? pp.timeout : std::optional<double>(0.0);
}

// Publishes a copy of `data`; false when it was not accepted and `wait` is false.
bool publish(PyPublisher& pp, py::handle data, bool wait) {
  const BufferArg buf(data, PyBUF_C_CONTIGUOUS,
                      "publish needs a C-contiguous buffer (bytes, bytearray, memoryview, "
                      "array.array, NumPy array)");
  const auto bytes = buf.bytes();
  const std::optional<double> timeout = wait_time(pp, wait);
  const Deadline deadline(timeout);
  Status st = pp.with_open([&](Publisher& p) {
    if (bytes.size() < kReleaseGilBytes) return p.try_publish(bytes);
    py::gil_scoped_release nogil;
    return p.try_publish(bytes);
  });
  if (st == Status::WouldBlock && !deadline.zero())
    st = wait_until(deadline, pp, [&](Publisher& p, std::chrono::nanoseconds left) {
      return p.publish(bytes, left);
    });
  if (st == Status::Ok) return true;
  if (!wait && st == Status::WouldBlock) return false;
  raise_publish_status(st, pp, bytes.size(), timeout);
}

// Takes a loan; None when the ring is full and `wait` is false.
py::object take_loan(const py::object& self, std::size_t size, bool wait) {
  PyPublisher& pp = self.cast<PyPublisher&>();
  const std::optional<double> timeout = wait_time(pp, wait);
  const Deadline deadline(timeout);
  Loan loan;
  // One claim, counted in `held` when it succeeds (mu held).
  // `left`: how long it may wait; none: not at all.
  auto claim = [&](Publisher& p, std::optional<std::chrono::nanoseconds> left) {
    loan = left ? p.loan(size, *left) : p.try_loan(size);
    if (!loan) return loan.status();
    ++pp.held;
    return Status::Ok;
  };
  Status st = pp.with_open([&](Publisher& p) { return claim(p, std::nullopt); });
  if (st == Status::WouldBlock && !deadline.zero())
    st = wait_until(deadline, pp,
                    [&](Publisher& p, std::chrono::nanoseconds left) { return claim(p, left); });
  if (st == Status::Ok) {
    try {
      return to_python(std::make_unique<PyLoan>(self, &pp, std::move(loan)));
    } catch (...) {
      auto lk = pp.lock();
      loan.abandon();
      --pp.held;
      pp.finish_close_locked();
      throw;
    }
  }
  if (!wait && st == Status::WouldBlock) return py::none();
  raise_publish_status(st, pp, size, timeout);
}

}  // namespace

py::object make_publisher(const Topic& topic, std::optional<double> timeout,
                          const std::string& wait, double spin) {
  timeout = Deadline::checked(timeout);
  PublisherOptions o;
  o.wait = wait_arg(wait);
  o.spin = seconds_to_ns(spin, "spin");
  // Each call passes its own timeout (wait_until); this one bounds the wait a
  // try_publish makes for a group that joins under its claim.
  o.timeout = Deadline(timeout).remaining();
  WantCount wanted = make_want_count();
  o.interrupt = python_interrupt(wanted);
  std::optional<Publisher> p;
  Policy policy;
  {
    py::gil_scoped_release nogil;
    p.emplace(topic.publisher(o));
    policy = topic.options().policy;
  }
  return to_python(std::make_unique<PyPublisher>(std::move(*p), std::move(wanted), topic.name(),
                                                 policy, timeout));
}

void bind_publisher(py::module_& m) {
  py::class_<PyPublisher, ForkSafePtr<PyPublisher>> pub(m, "Publisher", R"doc(
The producer side of a topic (made by Bus.publisher).

publish(data) copies any C-contiguous buffer (bytes, bytearray, memoryview,
NumPy array) into the next slot: one copy, with the GIL released for large
messages. loan(n) hands out the slot itself for writing in place.

When the ring is full:
  * policy 'block': publish()/loan() wait up to `timeout` seconds (the
    publisher's, None: for ever; interruptible with Ctrl-C), then raise
    shmbus.Timeout;
  * policy 'reject': they raise shmbus.WouldBlock at once;
  * policy 'overwrite': never full (the oldest message is overwritten).
try_publish()/try_loan() never wait: they return False/None instead.

Close with close() or a with block (deferred until open loans end).
)doc");
  def_endpoint(pub, "publisher",
               "close() -> None\n\nFrees the producer seat (once open loans end). Further calls "
               "raise Closed.");
  pub.def(
         "publish", [](PyPublisher& pp, const py::object& data) { (void)publish(pp, data, true); },
         py::arg("data"),
         "publish(data: Buffer) -> None\n\nCopies `data` (any C-contiguous buffer) into the next "
         "slot and publishes it.\n"
         "Raises Timeout / WouldBlock when the ring stays full (see the class doc),\n"
         "TooLarge when larger than the slot size.")
      .def(
          "try_publish",
          [](PyPublisher& pp, const py::object& data) { return publish(pp, data, false); },
          py::arg("data"),
          "try_publish(data: Buffer) -> bool\n\nLike publish but never waits: False when the ring "
          "is full.")
      .def(
          "loan",
          [](const py::object& self, std::size_t size) { return take_loan(self, size, true); },
          py::arg("size"),
          "loan(size: int) -> Loan\n\nClaims a slot for `size` bytes written in place; waits for "
          "room like publish.\n"
          "Use as `with pub.loan(n) as buf: ...` (see Loan).")
      .def(
          "try_loan",
          [](const py::object& self, std::size_t size) { return take_loan(self, size, false); },
          py::arg("size"),
          "try_loan(size: int) -> Loan | None\n\nLike loan but never waits: None when the ring is "
          "full.")
      .def_property(
          "timeout", [](const PyPublisher& pp) { return pp.timeout; },
          [](PyPublisher& pp, std::optional<double> t) { pp.timeout = Deadline::checked(t); },
          "Seconds publish()/loan() wait for room under policy 'block' (None: for ever).")
      .def_property_readonly("slot_size", open_getter<PyPublisher>(&Publisher::slot_size),
                             "The topic's slot size in bytes.")
      .def_property_readonly("id", open_getter<PyPublisher>(&Publisher::id),
                             "This producer's seat number (Sample.producer_id of its messages).")
      .def("__repr__", [](const PyPublisher& pp) {
        return "<shmbus.Publisher topic='" + pp.topic + "' policy='" +
               std::string(to_string(pp.policy)) + "'" + (pp.closing ? " closed" : "") + ">";
      });
  set_public_module(pub);
}

}  // namespace shmbus::python
