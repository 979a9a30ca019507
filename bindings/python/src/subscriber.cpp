// Subscriber for Python: receive, iteration and the group's counters.
#include "py_subscriber.hpp"

#include <cstring>

#include <pybind11/eval.h>

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

// The type receive_copy returns: shmbus.MessageInfo, a named tuple of four
// fields (as before partitions came, so unpacking it keeps working) with
// `partition` and `key_size` as attributes beside them, as os.stat_result
// has fields outside its tuple. Made at import; the module owns it.
py::handle g_message_info;

void make_message_info(py::module_& m) {
  py::dict scope;
  scope["__name__"] = "shmbus";
  py::exec(R"py(
import collections as _collections

class MessageInfo(_collections.namedtuple(
        "MessageInfo", ("size", "sequence", "timestamp_ns", "producer_id"))):
    """MessageInfo(size, sequence, timestamp_ns, producer_id, partition=0, key_size=0)

What Subscriber.receive_copy copied: `size` bytes of message `sequence` (its
offset in its partition), published at `timestamp_ns` (CLOCK_MONOTONIC) by
producer seat `producer_id`. The tuple has these four fields; `partition`
(the partition, or the priority lane on a priority topic) and `key_size`
(bytes of key, which receive_copy does not copy) are attributes beside them."""

    def __new__(cls, size, sequence, timestamp_ns, producer_id, partition=0, key_size=0):
        self = super().__new__(cls, size, sequence, timestamp_ns, producer_id)
        self.partition = partition
        self.key_size = key_size
        return self

    def __repr__(self):
        return (f"MessageInfo(size={self.size}, sequence={self.sequence}, "
                f"timestamp_ns={self.timestamp_ns}, producer_id={self.producer_id}, "
                f"partition={self.partition}, key_size={self.key_size})")
)py",
           scope);
  py::object t = scope["MessageInfo"];
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
      return g_message_info(info.size, info.sequence, info.timestamp_ns, info.producer_id,
                            info.partition, info.key_size);
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

// receive_into: copies up to rows(buffer) messages, one per row of a 2-D
// buffer (or the one row of a 1-D buffer), waiting up to `timeout` for the
// first; the rest are those ready. Returns how many (0 on timeout), their
// sizes in `sizes` (a writable buffer of uint32, one per row) when given.
std::size_t receive_into(PySubscriber& ps, py::handle buffer, std::optional<double> timeout,
                         py::handle sizes) {
  const BufferArg buf(buffer, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS,
                      "receive_into needs a writable C-contiguous buffer (a NumPy array of "
                      "shape (n, size), a bytearray for one message)");
  const auto all = buf.writable();
  const std::size_t rows = buf.rows();
  const std::size_t row = rows == 0 ? 0 : all.size() / rows;
  std::optional<BufferArg> sz;
  std::span<std::uint32_t> out_sizes;
  if (!sizes.is_none()) {
    sz.emplace(sizes, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS,
               "receive_into: sizes= needs a writable C-contiguous buffer of uint32 "
               "(np.zeros(n, dtype=np.uint32))");
    const auto b = sz->writable();
    if (sz->itemsize() != 4 || b.size() / 4 < rows)
      raise(PyExc_ValueError, "receive_into: sizes= must hold one uint32 per row (" +
                                  std::to_string(rows) + "), not " + std::to_string(b.size()) +
                                  " bytes of items of " + std::to_string(sz->itemsize()));
    out_sizes = {reinterpret_cast<std::uint32_t*>(b.data()), rows};
  }
  const std::uint32_t slot_size = ps.with_open([](Subscriber& s) { return s.slot_size(); });
  if (row < slot_size)
    raise(exceptions().too_large, "rows of " + std::to_string(row) +
                                      " bytes are smaller than the slot size " +
                                      std::to_string(slot_size) + " of topic '" + ps.topic +
                                      "' (receive_into needs room for any message in each row)");
  if (rows == 0) return 0;
  const Deadline deadline(timeout);
  std::size_t got = 0;
  const auto put = [&](std::span<const std::byte> d) {
    std::memcpy(all.data() + got * row, d.data(), d.size());
    if (!out_sizes.empty()) out_sizes[got] = static_cast<std::uint32_t>(d.size());
    ++got;
  };
  const bool overwrite = ps.policy == Policy::Overwrite;
  const Status st = attempt_then_wait(
      deadline, ps,
      [&](Subscriber& s, std::chrono::nanoseconds left) {
        return skip_corrupt([&] {
          if (overwrite) {
            // Each copy checked against the stamp after it is made (receive_copy).
            MessageInfo info;
            Status r = s.receive_copy(all.subspan(got * row, row), info, left);
            while (r == Status::Ok) {
              if (!out_sizes.empty()) out_sizes[got] = info.size;
              if (++got == rows) break;
              r = s.receive_copy(all.subspan(got * row, row), info, std::chrono::nanoseconds(0));
            }
            return got != 0 ? Status::Ok : r;
          }
          // Block and reject: runs taken with one claim each, copied, released.
          Batch b;
          Status r = s.receive_batch(b, rows - got, left);
          while (r == Status::Ok) {
            for (std::size_t i = 0; i < b.size(); ++i)
              put(b.data(i));
            b.release();
            if (got == rows) break;
            r = s.receive_batch(b, rows - got, std::chrono::nanoseconds(0));
          }
          return got != 0 ? Status::Ok : r;
        });
      },
      true);
  switch (st) {
    case Status::Ok:
    case Status::WouldBlock:
    case Status::Timeout:
      return got;
    default:
      if (got != 0) return got;  // the error comes again with the next call
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

// The partition (or priority lane) `value` names, or InvalidArgument
// naming `keyword` and what the topic has.
std::uint32_t lane_arg(const Subscriber& s, const std::string& topic, const py::handle& value,
                       const char* keyword) {
  const std::optional<std::uint32_t> p = index_arg(value, keyword);
  const bool lanes = s.priorities() != 0;
  const std::uint32_t n = lanes ? s.priorities() : s.partitions();
  if (p && *p < n) return *p;
  std::string has = std::to_string(n) + (lanes ? " priority lane" : " partition");
  if (n != 1) has += "s";
  raise(invalid_argument(), std::string(keyword) + "=" + py::repr(value).cast<std::string>() +
                                ": topic '" + topic + "' has " + has + ", 0 to " +
                                std::to_string(n - 1) +
                                (lanes ? " (on a priority topic a partition names a lane)" : ""));
}

std::string subscriber_repr(const PySubscriber& ps) {
  std::string r = "<shmbus.Subscriber topic='" + ps.topic + "'";
  if (ps.core && !ps.core->group().empty()) r += " group='" + ps.core->group() + "'";
  if (ps.core && ps.core->group_mode() == GroupMode::Partitioned) r += " mode='partitioned'";
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
                           double spin, const std::string& mode,
                           const std::optional<std::string>& tags, const std::string& delivery,
                           std::uint32_t max_deliveries) {
  SubscriberOptions o;
  const auto d = parse_delivery(delivery);
  if (!d)
    raise(invalid_argument(), "delivery='" + delivery + "' is not " + std::string(kDeliveryNames));
  o.delivery = *d;
  o.max_deliveries = max_deliveries;
  if (o.delivery == Delivery::AtLeastOnce && !group)
    raise(invalid_argument(),
          "delivery='at_least_once' needs a group name (group=...): what a member leaves "
          "unacknowledged goes to the group's other members");
  o.group = group.value_or("");
  o.tags = tags.value_or("");
  o.group_mode = group_mode_arg(mode);
  if (o.group_mode == GroupMode::Partitioned && o.group.empty())
    raise(invalid_argument(),
          "mode='partitioned' needs a group name (group=...): a private group has one member, "
          "which owns every partition");
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

On a topic of several partitions a receive takes from each partition in
turn (runs of 32); on a priority topic, the oldest message of the highest
lane that has one. A group made with mode='partitioned' gives each partition
to one member at a time (owned_partitions), so a key's messages are taken in
order, by one member.

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
is buffer[:size] (the payload only: its key is not copied; info.key_size
says how long it was, info.partition where it came from). None when the timeout passed. TypeError for a read-only or
non-contiguous buffer; TooLarge when the buffer is smaller than the slot size
(checked first, whatever the message's size). Under policy 'overwrite' a
message overwritten while it was copied is skipped (counted in lost), never
returned. Otherwise raises as receive() does.)doc")
      .def(
          "receive_into", &receive_into, py::arg("buffer"), py::arg("timeout") = py::none(),
          py::arg("sizes") = py::none(),
          R"doc(receive_into(buffer: Buffer, timeout: float | None = None, sizes: Buffer | None = None) -> int

Copies messages into the rows of `buffer` (writable and C-contiguous: a
NumPy array of shape (n, row_bytes), each row one message; a 1-D buffer is
one row), without a Python-level loop: waits up to `timeout` seconds (None:
for ever) for the first, then takes the others that are ready, up to n, in
runs of one claim each. Returns how many rows were filled (0 when the
timeout passed). `sizes`, a writable uint32 buffer of at least n items
(np.zeros(n, dtype=np.uint32)), receives each message's size; without it,
messages of a fixed size are the rows as they are. Payloads only (no keys).
TooLarge when a row is smaller than the slot size. Under policy 'overwrite'
each copy is checked, and one overwritten meanwhile is skipped (lost).)doc")
      .def(
          "fileno",
          [](PySubscriber& ps) { return ps.with_open([](Subscriber& s) { return s.fd(); }); },
          R"doc(fileno() -> int

A descriptor that becomes readable when a receive may find a message, so
select, selectors, epoll and asyncio's loop.add_reader take the subscriber
directly. Receive until a call returns None (nothing ready): that call arms
it again. Readiness is a hint (a peer member may take the message first);
never read from the descriptor, and do not close it (the subscriber owns it).)doc")
      .def_property_readonly(
          "ready",
          [](PySubscriber& ps) { return ps.with_open([](Subscriber& s) { return s.ready(); }); },
          "True when a receive may find a message now (or the topic was deleted), without\n"
          "waiting: a look at shared memory, no system call.")
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
          [](PySubscriber& ps, std::uint64_t sequence, const py::object& partition) {
            ps.with_open([&](Subscriber& s) {
              if (partition.is_none())
                s.seek(sequence);
              else
                s.seek(lane_arg(s, ps.topic, partition, "partition"), sequence);
            });
          },
          py::arg("sequence"), py::arg("partition") = py::none(),
          R"doc(seek(sequence: int, partition: int | None = None) -> None

Moves the group's position to `sequence` (clamped to what the ring retains
when read): in `partition` (on a priority topic: that lane), or in every
partition when None. For a named group this moves every member.
InvalidArgument past the tail (messages not yet published): seek to the tail
for 'latest'; or for a partition the topic lacks.)doc")
      .def_property_readonly(
          "lag",
          open_getter<PySubscriber>(
              static_cast<std::uint64_t (Subscriber::*)() const noexcept>(&Subscriber::lag)),
          "Messages published but not yet taken by this group (a snapshot), summed over the\n"
          "partitions (lag_of(p): one partition's).")
      .def_property_readonly(
          "position",
          open_getter<PySubscriber>(
              static_cast<std::uint64_t (Subscriber::*)() const noexcept>(&Subscriber::position)),
          "The next sequence the group takes; on a topic of several partitions (or lanes)\n"
          "the sum over them (position_of(p): one partition's).")
      .def(
          "lag_of",
          [](PySubscriber& ps, const py::object& partition) {
            return ps.with_open([&](const Subscriber& s) {
              return s.lag(lane_arg(s, ps.topic, partition, "partition"));
            });
          },
          py::arg("partition"),
          "lag_of(partition: int) -> int\n\nThe group's lag in one partition (on a priority "
          "topic: one lane);\nInvalidArgument for a partition the topic lacks.")
      .def(
          "position_of",
          [](PySubscriber& ps, const py::object& partition) {
            return ps.with_open([&](const Subscriber& s) {
              return s.position(lane_arg(s, ps.topic, partition, "partition"));
            });
          },
          py::arg("partition"),
          "position_of(partition: int) -> int\n\nThe next offset the group takes in one "
          "partition (on a priority topic:\none lane); InvalidArgument for a partition the "
          "topic lacks.")
      .def_property_readonly("partitions", open_getter<PySubscriber>(&Subscriber::partitions),
                             "The topic's partitions (1 on a priority topic).")
      .def_property_readonly("priorities", open_getter<PySubscriber>(&Subscriber::priorities),
                             "The topic's priority lanes (0: none).")
      .def_property_readonly(
          "mode",
          [](PySubscriber& ps) {
            return ps.with_open([](const Subscriber& s) { return to_string(s.group_mode()); });
          },
          "The group's mode: 'shared' (members take from any partition) or 'partitioned'\n"
          "(each partition owned by one member at a time). 'shared' for a private group.")
      .def_property_readonly(
          "owned_partitions",
          [](PySubscriber& ps) {
            return ps.with_open([](const Subscriber& s) { return s.owned_partitions(); });
          },
          "The partitions this member takes from now, ascending (a list). In a partitioned\n"
          "group: those it owns; it gets the ones the group's assignment gives it as their\n"
          "previous owners let go (once they hold no sample of them), and it follows the\n"
          "assignment when it receives. Otherwise every partition (or lane).")
      .def_property_readonly("filtered", open_getter<PySubscriber>(&Subscriber::filtered),
                             "Messages the group took without returning them: their tag did "
                             "not match the filter (tags=).")
      .def_property_readonly("replies_dropped",
                             open_getter<PySubscriber>(&Subscriber::replies_dropped),
                             "Replies (Sample.reply) dropped: their requester was gone or its "
                             "reply topic full.")
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
  bind_listener(m, sub);

  make_message_info(m);
  for (const char* name : {"SampleIterator", "Subscriber"})
    set_public_module(m.attr(name));
}

}  // namespace shmbus::python
