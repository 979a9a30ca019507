// Subscriber for Python: receive, iteration and the group's counters.
#include "py_subscriber.hpp"

#include "wait.hpp"

namespace shmbus::python {

namespace {

// The next sample, or None when none came within `timeout`.
py::object receive(const py::object& self, std::optional<double> timeout) {
  PySubscriber& ps = self.cast<PySubscriber&>();
  const Deadline deadline(timeout);
  Sample out;
  const Status st =
      attempt_then_wait(deadline, ps, [&](Subscriber& s, std::chrono::nanoseconds left) {
        return receive_counted(
            ps, [&] { return left.count() == 0 ? s.try_receive(out) : s.receive(out, left); });
      });
  if (st == Status::Ok) return wrap_received<PySample>(self, ps, out);
  if (st == Status::WouldBlock || st == Status::Timeout) return py::none();
  raise_receive_status(st, ps);
}

// The type receive_copy returns: shmbus.MessageInfo, a named tuple (made at
// import; the module owns it).
py::handle g_message_info;

void make_message_info(py::module_& m) {
  py::object t =
      py::module_::import("collections")
          .attr("namedtuple")("MessageInfo",
                              py::make_tuple("size", "sequence", "timestamp_ns", "producer_id"),
                              py::arg("module") = "shmbus");
  t.attr("__doc__") =
      "MessageInfo(size, sequence, timestamp_ns, producer_id)\n\n"
      "What Subscriber.receive_copy copied: `size` bytes of message `sequence`,\n"
      "published at `timestamp_ns` (CLOCK_MONOTONIC) by producer seat `producer_id`.";
  m.attr("MessageInfo") = t;
  g_message_info = t;  // borrowed: the module keeps it
}

// Copies the next message into `buffer`; its MessageInfo, or None when none
// came within `timeout`.
py::object receive_copy(PySubscriber& ps, py::handle buffer, std::optional<double> timeout) {
  const BufferArg buf(buffer, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS,
                      "receive_copy needs a writable C-contiguous buffer (bytearray, writable "
                      "memoryview, NumPy array)");
  const std::span<std::byte> into = buf.writable();
  const Deadline deadline(timeout);
  MessageInfo info;
  std::uint32_t slot_size = 0;
  // A large copy is made with the GIL released, as publish does.
  const bool large = into.size() >= kReleaseGilBytes;
  const Status st = attempt_then_wait(
      deadline, ps,
      [&](Subscriber& s, std::chrono::nanoseconds left) {
        slot_size = s.slot_size();
        return skip_corrupt([&] { return s.receive_copy(into, info, left); });
      },
      large);
  switch (st) {
    case Status::Ok:
      return g_message_info(info.size, info.sequence, info.timestamp_ns, info.producer_id);
    case Status::WouldBlock:
    case Status::Timeout:
      return py::none();
    case Status::TooLarge:
      raise(exceptions().too_large, "buffer of " + std::to_string(into.size()) +
                                        " bytes is smaller than the slot size " +
                                        std::to_string(slot_size) + " of topic '" + ps.topic +
                                        "' (receive_copy needs room for any message)");
    default:
      raise_receive_status(st, ps);
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

void raise_receive_status(Status st, const PySubscriber& ps) {
  switch (st) {
    case Status::TooManyHeld:
      raise(exceptions().too_many_held,
            "the subscriber of topic '" + ps.topic + "' holds " +
                std::to_string(Subscriber::kMaxHeld) +
                " samples not yet released (the most it may; a batch counts as one); release "
                "them: sample.release(), a with block, or drop the arrays and memoryviews made "
                "from them");
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
      .def("receive_batch", &receive_batch, py::arg("max"), py::arg("timeout") = py::none(),
           R"doc(receive_batch(max: int, timeout: float | None = None) -> Batch | None

Waits up to `timeout` seconds (None: for ever) for the next message, and takes
it with up to max - 1 more that are ready: consecutive messages, one claim.

Returns a Batch (a sequence of BatchSamples, zero copy, released as one), or
None when the timeout passed. A batch counts as one held sample.
InvalidArgument for max < 1; otherwise raises as receive() does.)doc")
      .def("receive_copy", &receive_copy, py::arg("buffer"), py::arg("timeout") = py::none(),
           R"doc(receive_copy(buffer: Buffer, timeout: float | None = None) -> MessageInfo | None

Waits up to `timeout` seconds (None: for ever) for the next message, copies it
into `buffer` (writable and C-contiguous: a bytearray, a writable memoryview, a
NumPy array) and gives its slot back at once.

Returns a MessageInfo(size, sequence, timestamp_ns, producer_id): the message
is buffer[:size]. None when the timeout passed. TypeError for a read-only or
non-contiguous buffer; TooLarge when the buffer is smaller than the slot size
(checked first, whatever the message's size). Under policy 'overwrite' a
message overwritten while it was copied is skipped (counted in lost), never
returned. Otherwise raises as receive() does.)doc")
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
      .def_property_readonly(
          "lag",
          open_getter<PySubscriber>(
              static_cast<std::uint64_t (Subscriber::*)() const noexcept>(&Subscriber::lag)),
          "Messages published but not yet taken by this group (a snapshot).")
      .def_property_readonly(
          "position",
          open_getter<PySubscriber>(
              static_cast<std::uint64_t (Subscriber::*)() const noexcept>(&Subscriber::position)),
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
          "How many received samples and batches still hold their slots.")
      .def("__repr__", &subscriber_repr);

  make_message_info(m);
  for (const char* name : {"SampleIterator", "Subscriber"})
    set_public_module(m.attr(name));
}

}  // namespace shmbus::python
