// Sample for Python: a received message viewed in place, with a read-only,
// counted buffer protocol.
#include "py_subscriber.hpp"

namespace shmbus::python {

namespace {

std::string sample_name(const PySample& s) {
  return "sample " + std::to_string(s.sequence) + " of topic '" + s.sub->topic + "'";
}

int sample_getbuffer(PyObject* obj, Py_buffer* view, int flags) {
  return buffer_slot<PySample>(obj, view, "Sample", [&](PySample& s) {
    const Sample& sample = s.open_or_raise();
    if ((flags & PyBUF_WRITABLE) == PyBUF_WRITABLE)
      raise(PyExc_BufferError,
            "a shmbus.Sample is read-only (it is the producer's slot in shared memory); "
            "copy it to modify it: bytearray(sample) or numpy.array(...)");
    fill_buffer(view, obj, sample.data(), true, flags);
    ++s.exports;
  });
}

void sample_releasebuffer(PyObject* obj, Py_buffer* /*view*/) {
  try {
    if (auto* s = py::handle(obj).cast<PySample*>()) s->unexport();
  } catch (...) {
  }
}

int key_getbuffer(PyObject* obj, Py_buffer* view, int flags) {
  return buffer_slot<PyKeyBuffer>(obj, view, "_KeyBuffer", [&](PyKeyBuffer& k) {
    if ((flags & PyBUF_WRITABLE) == PyBUF_WRITABLE)
      raise(PyExc_BufferError,
            "a message key is read-only (it is in the producer's slot in shared memory); copy "
            "it to modify it: bytearray(sample.key)");
    k.on_export();
    try {
      fill_buffer(view, obj, k.bytes, true, flags);
    } catch (...) {
      k.on_release();
      throw;
    }
  });
}

void key_releasebuffer(PyObject* obj, Py_buffer* /*view*/) {
  try {
    if (auto* k = py::handle(obj).cast<PyKeyBuffer*>()) k->on_release();
  } catch (...) {
  }
}

}  // namespace

void bind_key_buffer(py::module_& m) {
  py::class_<PyKeyBuffer, ForkSafePtr<PyKeyBuffer>> cls(
      m, "_KeyBuffer", py::buffer_protocol(), py::is_final(),
      "What a Sample.key or BatchSample.key memoryview views: the key in its slot.");
  auto* type = reinterpret_cast<PyHeapTypeObject*>(cls.ptr());
  type->as_buffer.bf_getbuffer = key_getbuffer;
  type->as_buffer.bf_releasebuffer = key_releasebuffer;
  set_public_module(cls);
}

PySample::PySample(py::object o, PySubscriber* s, Sample&& smp) noexcept
    : HeldSlots(std::move(o), s, std::move(smp)),
      sequence(value.sequence()),
      timestamp_ns(value.timestamp_ns()),
      deliver_at_ns(value.deliver_at_ns()),
      size(static_cast<std::uint32_t>(value.data().size())),
      producer_id(value.producer_id()),
      key_size(static_cast<std::uint32_t>(value.key().size())),
      partition(value.partition()),
      priority(value.priority()),
      delivery_count(value.delivery_count()) {}

PySample::~PySample() {
  if (sub->last_yielded == this) sub->last_yielded = nullptr;
}

const Sample& PySample::open_or_raise() const {
  return HeldSlots::open_or_raise("Sample", [&] { return sample_name(*this); });
}

void bind_sample(py::module_& m) {
  bind_key_buffer(m);
  py::class_<PySample, ForkSafePtr<PySample>> sample(m, "Sample", py::buffer_protocol(),
                                                     py::is_final(), R"doc(
A received message, viewed in place in the topic's shared memory (zero copy).

Supports the buffer protocol, read-only: ``memoryview(sample)``,
``bytes(sample)``, ``np.frombuffer(sample, dtype=...)`` all see the slot itself.
Every exported buffer keeps the sample alive, and the sample keeps its
Subscriber and the mapping alive, so such a view can never dangle.

While a sample is held, its slot is not reused (under policy 'block' and
'reject' a full ring waits for it): release samples promptly with
``release()``, a ``with`` block, or by dropping the last reference. A
subscriber may hold at most 64 unreleased samples.

``release()`` ends the sample: later data access (buffer, ``tobytes()``,
``intact``) raises :class:`shmbus.Closed`. If buffers exported earlier
(NumPy arrays, memoryviews) are still alive, they stay valid and the slot is
given back when the last of them is dropped (``release()`` then returns False).
Under policy 'overwrite' producers may overwrite a held slot: check
``intact`` after reading.

A Sample must be used from one thread at a time.
)doc");
  auto* sample_type = reinterpret_cast<PyHeapTypeObject*>(sample.ptr());
  sample_type->as_buffer.bf_getbuffer = sample_getbuffer;
  sample_type->as_buffer.bf_releasebuffer = sample_releasebuffer;
  sample
      .def_property_readonly(
          "sequence", [](const PySample& s) { return s.sequence; },
          "The message's sequence number (its offset) in its partition.")
      .def_property_readonly(
          "timestamp_ns", [](const PySample& s) { return s.timestamp_ns; },
          "CLOCK_MONOTONIC at publish, in ns (comparable with time.monotonic_ns()).")
      .def_property_readonly(
          "deliver_at", [](const PySample& s) { return seconds_or_none(s.deliver_at_ns); },
          "A delayed message's due time (publish(..., delay=, deliver_at=)) in seconds\n"
          "since the epoch, comparable with time.time(); None for a message published at once.")
      .def_property_readonly(
          "deliver_at_ns", [](const PySample& s) { return ns_or_none(s.deliver_at_ns); },
          "deliver_at in ns since the epoch (time.time_ns()); None when not delayed.")
      .def_property_readonly(
          "delivery_count", [](const PySample& s) { return s.delivery_count; },
          "How many times the message was delivered to the group, this time included\n"
          "(1 the first time; always 1 under delivery='at_most_once').")
      .def_property_readonly(
          "redelivered", [](const PySample& s) { return s.delivery_count > 1; },
          "True when the message was delivered before (a member died or closed holding it,\n"
          "or nacked it): at_least_once groups.")
      .def(
          "nack",
          [](PySample& s) {
            switch (s.nack_checked("Sample")) {
              case Status::Ok:
                return;
              case Status::Invalid:
                raise(invalid_argument(),
                      "nack() needs a received, unreleased sample of a group with "
                      "delivery='at_least_once'");
              case Status::TooManyHeld:
                raise(invalid_argument(),
                      "nack() while buffers exported from the sample (memoryviews, NumPy "
                      "arrays) are alive: drop them first");
              case Status::NoDeadLetter:
              default:
                raise(exceptions().error,
                      "nack(): the message was delivered max_deliveries times, and its "
                      "dead-letter topic '<topic>.dlq' could not be made or published to "
                      "(the sample is still held)");
            }
          },
          R"doc(nack() -> None

Gives the message back for redelivery at once (the sample is then released):
the group's next receive returns it again, delivery_count one higher. Once it
was delivered max_deliveries times it goes to the dead-letter topic
'<topic>.dlq' instead, with headers dlq.topic, dlq.offset, dlq.partition,
dlq.reason and dlq.deliveries added to its own.)doc")
      .def_property_readonly(
          "producer_id", [](const PySample& s) { return s.producer_id; },
          "The publishing producer's seat number.")
      .def_property_readonly(
          "size", [](const PySample& s) { return s.size; }, "Payload size in bytes.")
      .def("__len__", [](const PySample& s) { return s.size; })
      .def_property_readonly(
          "key",
          [](const py::object& self) {
            auto& s = self.cast<PySample&>();
            PySample* p = &s;
            return key_view(self, s, [p] { return p->open_or_raise().key(); });
          },
          R"doc(The message's key: a read-only memoryview of it in the slot (zero copy;
bytes(sample.key) copies it; it compares equal to bytes), or None for a
message published without a key (b"" is no key). Like the payload's
buffers, the memoryview keeps the slot held while it lives. Closed after
release().)doc")
      .def_property_readonly(
          "key_size", [](const PySample& s) { return s.key_size; }, "Bytes of key (0: no key).")
      .def_property_readonly(
          "headers", [](const PySample& s) { return headers_dict(s.open_or_raise().properties()); },
          R"doc(The message's properties (Kafka's headers) as a new dict of str to str
(bytes that are not UTF-8 decode with U+FFFD); {} when it has none. The
"tag" entry is its tag. Closed after release().)doc")
      .def_property_readonly(
          "partition", [](const PySample& s) { return s.partition; },
          "The partition it came from (0 on a one-partition or a priority topic).")
      .def_property_readonly(
          "priority", [](const PySample& s) { return s.priority; },
          "Its priority lane (0 on a topic without priority lanes).")
      .def_property_readonly(
          "released", [](const PySample& s) { return s.closed; },
          "True after release() (or the end of a with block).")
      .def_property_readonly(
          "exports", [](const PySample& s) { return s.exports; },
          "How many exported buffers (memoryviews, NumPy arrays) are alive.")
      .def_property_readonly(
          "intact", [](const PySample& s) { return s.open_or_raise().intact(); },
          "True when the slot still holds this message, so what was read so far is what was\n"
          "published. Always True under policies 'block' and 'reject'.")
      .def(
          "tobytes",
          [](const PySample& s) {
            const auto d = s.open_or_raise().data();
            return py::bytes(reinterpret_cast<const char*>(d.data()), d.size());
          },
          "tobytes() -> bytes\n\nA copy of the payload.")
      .def(
          "reply",
          [](const PySample& s, const py::object& data) {
            const BufferArg buf(data, PyBUF_C_CONTIGUOUS,
                                "reply needs a C-contiguous buffer (bytes, bytearray, "
                                "memoryview, NumPy array)");
            const Status st = s.open_or_raise().reply(buf.bytes());
            switch (st) {
              case Status::Ok:
                return true;
              case Status::TopicDeleted:
              case Status::WouldBlock:
                return false;
              case Status::NotARequest:
                raise(invalid_argument(),
                      "this message is no request: it lacks the reply_to and correlation_id "
                      "headers Bus.request sets");
              case Status::TooLarge:
                raise(exceptions().too_large, "a reply of " + std::to_string(buf.bytes().size()) +
                                                  " bytes is larger than the 16384 a reply may "
                                                  "have");
              default:
                raise(invalid_argument(),
                      "cannot reply: the subscriber's topic was not opened through a Bus (" +
                          std::string(to_string(st)) + ")");
            }
          },
          py::arg("data"),
          R"doc(reply(data: Buffer) -> bool

Answers a request (Bus.request): publishes `data` to the requester's reply
topic with its correlation_id, without waiting. Returns True when it was
published, False when it was dropped because the requester is gone or its
reply topic is full (counted in Subscriber.replies_dropped); never blocks.
Raises InvalidArgument for a message that is no request.)doc")
      .def(
          "release", [](PySample& s) { return s.end_checked("Sample"); },
          R"doc(release() -> bool

Ends the sample: its data may no longer be accessed, and its slot is given back.

Returns True when the slot was given back now, False when buffers exported
earlier (NumPy arrays, memoryviews) are still alive: they stay valid, and the
slot is given back when the last one is dropped. Idempotent.)doc")
      .def(
          "__enter__", [](py::object self) { return self; }, "__enter__() -> Sample")
      .def(
          "__exit__",
          [](PySample& s, const py::args&) {
            (void)s.end_checked("Sample");
            return false;
          },
          "__exit__(*exc) -> False\n\nReleases the sample (deferred while exported buffers are "
          "alive).")
      .def("__repr__", [](const PySample& s) {
        std::string r = "<shmbus.Sample topic='" + s.sub->topic + "'";
        if (s.partition != 0) r += " partition=" + std::to_string(s.partition);
        if (s.priority != 0) r += " priority=" + std::to_string(s.priority);
        return r + " sequence=" + std::to_string(s.sequence) + " size=" + std::to_string(s.size) +
               (s.key_size != 0 ? " key_size=" + std::to_string(s.key_size) : "") +
               (s.closed ? " released" : "") + ">";
      });
  set_public_module(sample);
}

}  // namespace shmbus::python
