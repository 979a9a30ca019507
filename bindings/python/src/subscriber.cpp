// Subscriber for Python: receive, iteration and the group's counters.
#include "py_subscriber.hpp"

#include "wait.hpp"

namespace shmbus::python {

namespace {

// One receive from the core that waits at most `timeout` (0: try_receive);
// a slot with an invalid header is skipped and counted (sub.corrupt), and
// the next one taken. Counts a received sample in `held` (mu held).
Status receive_once(PySubscriber& ps, Subscriber& s, Sample& out,
                    std::chrono::nanoseconds timeout) noexcept {
  Status st;
  do
    st = timeout.count() == 0 ? s.try_receive(out) : s.receive(out, timeout);
  while (st == Status::Corrupt);
  if (st == Status::Ok) ++ps.held;
  return st;
}

// Makes the wrapped object for a received sample (already counted in `held`).
py::object wrap_sample(const py::object& self, PySubscriber& ps, Sample& out) {
  try {
    return to_python(std::make_unique<PySample>(self, &ps, std::move(out)));
  } catch (...) {
    auto lk = ps.lock();
    out.release();
    --ps.held;
    throw;
  }
}

// The next sample, or None when none came within `timeout`.
py::object receive(const py::object& self, std::optional<double> timeout) {
  PySubscriber& ps = self.cast<PySubscriber&>();
  const Deadline deadline(timeout);
  Sample out;
  Status st = ps.with_open(
      [&](Subscriber& s) { return receive_once(ps, s, out, std::chrono::nanoseconds(0)); });
  if (st == Status::WouldBlock && !deadline.zero())
    st = wait_until(deadline, ps, [&](Subscriber& s, std::chrono::nanoseconds left) {
      return receive_once(ps, s, out, left);
    });
  switch (st) {
    case Status::Ok:
      return wrap_sample(self, ps, out);
    case Status::WouldBlock:
    case Status::Timeout:
      return py::none();
    case Status::TooManyHeld:
      raise(exceptions().too_many_held,
            "the subscriber of topic '" + ps.topic + "' holds " +
                std::to_string(Subscriber::kMaxHeld) +
                " samples not yet released (the most it may); release them: sample.release(), "
                "a with block, or drop the arrays and memoryviews made from them");
    case Status::TopicDeleted:
      raise(exceptions().topic_deleted, "topic '" + ps.topic +
                                            "' was deleted; every message published before "
                                            "the delete was received");
    case Status::Invalid:
      ps.raise_closed();
    default:
      raise(exceptions().error, std::string("receive failed: ") + to_string(st));
  }
}

// Iteration: releases the sample yielded before (deferred while buffers
// made from it live), then receives. A member of a named group that held
// its previous sample while waiting would keep the ring from moving past it,
// and with competing members that can stall everyone.
py::object next_sample(const py::object& self, std::optional<double> timeout) {
  PySubscriber& ps = self.cast<PySubscriber&>();
  check_process(ps.pid, "Subscriber");
  if (PySample* prev = ps.last_yielded) {
    ps.last_yielded = nullptr;
    (void)prev->end();
  }
  py::object s = receive(self, timeout);
  if (!s.is_none()) ps.last_yielded = s.cast<PySample*>();
  return s;
}

struct SampleIterator {
  py::object sub;
  std::optional<double> timeout;
};

std::string subscriber_repr(const PySubscriber& ps) {
  std::string r = "<shmbus.Subscriber topic='" + ps.topic + "'";
  if (ps.core && !ps.core->group().empty()) r += " group='" + ps.core->group() + "'";
  if (ps.closing) r += " closed";
  return r + ">";
}

}  // namespace

py::object make_subscriber(const Topic& topic, const std::optional<std::string>& group,
                           const py::handle& start, bool durable, const std::string& wait,
                           double spin) {
  SubscriberOptions o;
  o.group = group.value_or("");
  o.durable = durable;
  o.wait = wait_arg(wait);
  o.spin = seconds_to_ns(spin, "spin");
  const StartPosition from = start_arg(start);
  o.start = from.from;
  o.offset = from.offset;
  WantCount wanted = make_want_count();
  o.interrupt = python_interrupt(wanted);
  std::unique_ptr<Subscriber> s;
  Policy policy;
  {
    py::gil_scoped_release nogil;
    s = topic.subscriber(o);
    policy = topic.options().policy;
  }
  return to_python(
      std::make_unique<PySubscriber>(std::move(s), std::move(wanted), topic.name(), policy));
}

void bind_subscriber(py::module_& m) {
  py::class_<SampleIterator>(m, "SampleIterator",
                             "Iterator over a subscriber's samples that ends when none comes "
                             "within its timeout (see Subscriber.iter).")
      .def(
          "__iter__", [](py::object self) { return self; }, "__iter__() -> SampleIterator")
      .def(
          "__next__",
          [](SampleIterator& it) {
            py::object s = next_sample(it.sub, it.timeout);
            if (s.is_none()) throw py::stop_iteration();
            return s;
          },
          "__next__() -> Sample\n\nReleases the sample yielded before, then receives the next;\n"
          "StopIteration when none comes within the timeout.");

  py::class_<PySubscriber, ForkSafePtr<PySubscriber>> sub(m, "Subscriber", R"doc(
The consumer side of a topic: a member of a consumer group (made by
Bus.subscriber). Every group sees every message; members of one group compete,
each message going to exactly one of them. Without a group name the
subscriber is a group of its own.

Blocking calls release the GIL and can be interrupted with Ctrl-C
(KeyboardInterrupt). Iterating (``for sample in sub:``) receives for ever;
``sub.iter(timeout)`` stops when nothing comes within the timeout. Iteration
releases each sample when the next one is asked for (as release() does:
arrays made from it stay valid and keep the slot until dropped); copy what
must outlive the step (``bytes(s)``, ``np.array(...)``) or use receive().

A held sample keeps its slot from being reused. In a named group the members
share one ring: a member that holds a sample (or an array made from one)
while waiting for the next stalls the producers once they are a ring ahead
of it, and with them the other members. Release before waiting.

Close with close() or a with block (deferred until held samples are released).
)doc");
  def_endpoint(sub, "subscriber",
               "close() -> None\n\nLeaves the group. Samples still held stay valid; the seat is "
               "freed when the\n"
               "last of them is released. Further calls raise Closed. Idempotent.");
  sub.def("receive", &receive, py::arg("timeout") = py::none(),
          R"doc(receive(timeout: float | None = None) -> Sample | None

Waits up to `timeout` seconds (None: for ever) for the next message.

Returns a Sample, or None when the timeout passed. timeout=0 never waits.
Raises TooManyHeld when 64 samples are held unreleased, Closed after close().)doc")
      .def(
          "try_receive", [](const py::object& self) { return receive(self, 0.0); },
          "try_receive() -> Sample | None\n\nThe next message if one is ready, else None; never "
          "waits.")
      .def(
          "__iter__", [](py::object self) { return self; }, "__iter__() -> Subscriber")
      .def(
          "__next__", [](const py::object& self) { return next_sample(self, std::nullopt); },
          "__next__() -> Sample\n\nReleases the sample yielded before, then waits for ever "
          "(interruptible) for\n"
          "the next message.")
      .def(
          "iter",
          [](py::object self, std::optional<double> timeout) {
            return SampleIterator{std::move(self), Deadline::checked(timeout)};
          },
          py::arg("timeout") = py::none(),
          "iter(timeout: float | None = None) -> SampleIterator\n\nAn iterator over samples that "
          "stops when none comes within `timeout` seconds.")
      .def(
          "seek",
          [](PySubscriber& ps, std::uint64_t sequence) {
            ps.with_open([&](Subscriber& s) { s.seek(sequence); });
          },
          py::arg("sequence"),
          "seek(sequence: int) -> None\n\nMoves the group's position to `sequence` (clamped to "
          "what the ring retains when\n"
          "read). For a named group this moves every member. InvalidArgument past the\n"
          "tail (messages not yet published): seek to the tail for 'latest'.")
      .def_property_readonly("lag", open_getter<PySubscriber>(&Subscriber::lag),
                             "Messages published but not yet taken by this group (a snapshot).")
      .def_property_readonly("position", open_getter<PySubscriber>(&Subscriber::position),
                             "The next sequence the group takes.")
      .def_property_readonly("lost", open_getter<PySubscriber>(&Subscriber::lost),
                             "Messages this group skipped because producers overwrote them first.")
      .def_property_readonly("corrupt", open_getter<PySubscriber>(&Subscriber::corrupt),
                             "Messages this group skipped because their slot header was invalid.")
      .def_property_readonly(
          "group",
          [](PySubscriber& ps) {
            return ps.with_open([](const Subscriber& s) -> std::optional<std::string> {
              if (s.group().empty()) return std::nullopt;
              return s.group();
            });
          },
          "The group's name, or None for a private group.")
      .def_property_readonly("slot_size", open_getter<PySubscriber>(&Subscriber::slot_size),
                             "The topic's slot size in bytes.")
      .def_property_readonly(
          "holding",
          [](PySubscriber& ps) {
            auto lk = ps.lock();
            return ps.held;
          },
          "How many received samples still hold their slot.")
      .def("__repr__", &subscriber_repr);

  for (const char* name : {"SampleIterator", "Subscriber"})
    set_public_module(m.attr(name));
}

}  // namespace shmbus::python
