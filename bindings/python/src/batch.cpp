// Batch for Python: consecutive messages taken with one claim and given back
// as one (Subscriber.receive_batch), and BatchSample, one message of a batch
// viewed in place with a read-only buffer protocol.
//
// A BatchSample holds its Batch object, so a buffer exported from it (view
// -> BatchSample -> Batch) keeps every slot of the batch held until the
// view is released, as a Sample's buffers keep its slot.
#include <utility>
#include <vector>

#include "py_subscriber.hpp"
#include "wait.hpp"

namespace shmbus::python {

namespace {

class PyBatch : public HeldSlots<Batch> {
 public:
  // May throw (memory): then the slots are given back by ~HeldSlots.
  PyBatch(py::object owner, PySubscriber* sub, Batch&& b, bool lanes)
      : HeldSlots(std::move(owner), sub, std::move(b)),
        first(value.first_sequence()),
        partition(lanes ? 0 : value.partition()),
        priority(lanes ? value.partition() : 0) {
    infos.reserve(value.size());
    for (std::size_t i = 0; i < value.size(); ++i)
      infos.push_back(value.info(i));
  }
  PyBatch(const PyBatch&) = delete;
  PyBatch& operator=(const PyBatch&) = delete;

  std::uint64_t first;
  std::uint32_t partition;         // of the whole batch (0 on a priority topic)
  std::uint32_t priority;          // its lane on a priority topic (else 0)
  std::vector<MessageInfo> infos;  // one per message, read when received, kept after release()

  [[nodiscard]] std::size_t size() const noexcept { return infos.size(); }
  [[nodiscard]] std::string name() const {
    return "batch of " + std::to_string(size()) + " messages from sequence " +
           std::to_string(first) + " of topic '" + sub->topic + "'";
  }
  const Batch& open_or_raise() const {
    return HeldSlots::open_or_raise("Batch", [&] { return name(); });
  }
  // Message i's payload, of the size it had when received (i < size()).
  [[nodiscard]] std::span<const std::byte> data(std::size_t i) const {
    // The payload's start, and the size read when received (<= the slot size).
    return {open_or_raise().data(i).data(), infos[i].size};
  }
  // Message i's key, of the size it had when received.
  [[nodiscard]] std::span<const std::byte> key(std::size_t i) const {
    return {open_or_raise().key(i).data(), infos[i].key_size};
  }
};

// One message of a batch. Holds the batch object (and so its slots).
struct PyBatchSample {
  py::object batch_obj;  // the Batch
  PyBatch* batch;
  std::size_t index;

  [[nodiscard]] const MessageInfo& info() const noexcept { return batch->infos[index]; }
};

int batch_sample_getbuffer(PyObject* obj, Py_buffer* view, int flags) {
  return buffer_slot<PyBatchSample>(obj, view, "BatchSample", [&](PyBatchSample& s) {
    const auto bytes = s.batch->data(s.index);
    if ((flags & PyBUF_WRITABLE) == PyBUF_WRITABLE)
      raise(PyExc_BufferError,
            "a shmbus.BatchSample is read-only (it is the producer's slot in shared memory); "
            "copy it to modify it: bytearray(item) or numpy.array(...)");
    fill_buffer(view, obj, bytes, true, flags);
    ++s.batch->exports;
  });
}

void batch_sample_releasebuffer(PyObject* obj, Py_buffer* /*view*/) {
  try {
    if (auto* s = py::handle(obj).cast<PyBatchSample*>()) s->batch->unexport();
  } catch (...) {
  }
}

// The item at `i` (negative: from the end), or IndexError.
py::object item(const py::object& self, std::int64_t i) {
  auto& b = self.cast<PyBatch&>();
  const auto n = static_cast<std::int64_t>(b.size());
  if (i < 0) i += n;
  if (i < 0 || i >= n) throw py::index_error("batch index out of range");
  return to_python(
      std::make_unique<PyBatchSample>(PyBatchSample{self, &b, static_cast<std::size_t>(i)}));
}

py::list items(const py::object& self) {
  py::list l;
  const auto n = static_cast<std::int64_t>(self.cast<PyBatch&>().size());
  for (std::int64_t i = 0; i < n; ++i)
    l.append(item(self, i));
  return l;
}

std::string batch_sample_repr(const PyBatchSample& s) {
  return "<shmbus.BatchSample topic='" + s.batch->sub->topic +
         "' sequence=" + std::to_string(s.info().sequence) +
         " size=" + std::to_string(s.info().size) + (s.batch->closed ? " released" : "") + ">";
}

void bind_batch_sample(py::module_& m) {
  py::class_<PyBatchSample, ForkSafePtr<PyBatchSample>> cls(m, "BatchSample", py::buffer_protocol(),
                                                            py::is_final(),
                                                            R"doc(
One message of a Batch, viewed in place in the topic's shared memory (zero copy).

Supports the buffer protocol, read-only, as Sample does: ``memoryview(item)``,
``bytes(item)``, ``np.frombuffer(item, dtype=...)``. An exported buffer keeps the
whole batch held (its slots are not reused) until the buffer is released, even
after batch.release(). After the batch is released, the data of an item that
has no such buffer can no longer be read (Closed); its metadata can.
)doc");
  auto* type = reinterpret_cast<PyHeapTypeObject*>(cls.ptr());
  type->as_buffer.bf_getbuffer = batch_sample_getbuffer;
  type->as_buffer.bf_releasebuffer = batch_sample_releasebuffer;
  cls.def_property_readonly(
         "sequence", [](const PyBatchSample& s) { return s.info().sequence; },
         "The message's sequence number in its topic.")
      .def_property_readonly(
          "timestamp_ns", [](const PyBatchSample& s) { return s.info().timestamp_ns; },
          "CLOCK_MONOTONIC at publish, in ns (comparable with time.monotonic_ns()).")
      .def_property_readonly(
          "deliver_at",
          [](const PyBatchSample& s) { return seconds_or_none(s.info().deliver_at_ns); },
          "As Sample.deliver_at.")
      .def_property_readonly(
          "producer_id", [](const PyBatchSample& s) { return s.info().producer_id; },
          "The publishing producer's seat number.")
      .def_property_readonly(
          "size", [](const PyBatchSample& s) { return s.info().size; }, "Payload size in bytes.")
      .def("__len__", [](const PyBatchSample& s) { return s.info().size; })
      .def_property_readonly(
          "key",
          [](const py::object& self) {
            const auto& s = self.cast<const PyBatchSample&>();
            PyBatch* b = s.batch;
            const std::size_t i = s.index;
            // The batch's exports: a key's memoryview holds the batch as an item's buffer does.
            return key_view(s.batch_obj, *b, [b, i] { return b->key(i); });
          },
          "The message's key: a read-only memoryview of it in the slot (zero copy), or None\n"
          "for a message published without a key; it keeps the batch's slots held while it\n"
          "lives, as an item's buffers do. Closed once the batch was released.")
      .def_property_readonly(
          "key_size", [](const PyBatchSample& s) { return s.info().key_size; },
          "Bytes of key (0: no key).")
      .def_property_readonly(
          "headers",
          [](const PyBatchSample& s) {
            return headers_dict(s.batch->open_or_raise().properties(s.index));
          },
          "The message's properties as a new dict of str to str ({} when none), as\n"
          "Sample.headers. Closed once the batch was released.")
      .def_property_readonly(
          "partition", [](const PyBatchSample& s) { return s.batch->partition; },
          "The partition it came from (the batch's).")
      .def_property_readonly(
          "priority", [](const PyBatchSample& s) { return s.batch->priority; },
          "Its priority lane (the batch's; 0 on a topic without lanes).")
      .def_property_readonly(
          "batch", [](const PyBatchSample& s) { return s.batch_obj; }, "The Batch it belongs to.")
      .def(
          "tobytes",
          [](const PyBatchSample& s) {
            const auto d = s.batch->data(s.index);
            return py::bytes(reinterpret_cast<const char*>(d.data()), d.size());
          },
          "tobytes() -> bytes\n\nA copy of the payload.")
      .def("__repr__", &batch_sample_repr);
  set_public_module(cls);
}

std::string batch_repr(const PyBatch& b) {
  std::string r = "<shmbus.Batch topic='" + b.sub->topic + "'";
  if (b.partition != 0) r += " partition=" + std::to_string(b.partition);
  if (b.priority != 0) r += " priority=" + std::to_string(b.priority);
  return r + " first_sequence=" + std::to_string(b.first) + " len=" + std::to_string(b.size()) +
         (b.closed ? " released" : "") + ">";
}

}  // namespace

py::object receive_batch(const py::object& self, std::int64_t max, std::optional<double> timeout) {
  PySubscriber& ps = self.cast<PySubscriber&>();
  if (max < 1) raise(invalid_argument(), "max=" + std::to_string(max) + ": expected an int >= 1");
  const Deadline deadline(timeout);
  Batch out;
  bool lanes = false;
  const Status st =
      attempt_then_wait(deadline, ps, [&](Subscriber& s, std::chrono::nanoseconds left) {
        lanes = s.priorities() != 0;
        return receive_counted(
            ps, [&] { return s.receive_batch(out, static_cast<std::size_t>(max), left); });
      });
  if (st == Status::WouldBlock || st == Status::Timeout) return py::none();
  if (st != Status::Ok) raise_receive_status(st, ps);
  return wrap_received<PyBatch>(self, ps, out, lanes);
}

void bind_batch(py::module_& m) {
  bind_batch_sample(m);
  py::class_<PyBatch, ForkSafePtr<PyBatch>> cls(m, "Batch", py::is_final(), R"doc(
Consecutive messages taken with one claim (Subscriber.receive_batch), viewed in
place and given back as one.

A sequence of BatchSample: ``len(batch)``, ``batch[i]`` (negative i from the
end), ``for item in batch:``. Each item supports the read-only buffer protocol,
as Sample does.

While a batch is held, none of its slots is reused (under policy 'block' and
'reject' a full ring waits for them): release it promptly with ``release()``,
a ``with`` block, or by dropping the last reference to it and its items. It
counts as one of the 64 samples a subscriber may hold.

``release()`` ends the batch: later data access raises Closed. Buffers
exported from its items earlier stay valid and keep every slot of the batch
held until the last of them is dropped (``release()`` then returns False).
Under policy 'overwrite' producers may overwrite held slots: check ``intact``
after reading.

A Batch must be used from one thread at a time.
)doc");
  cls.def("__len__", &PyBatch::size)
      .def("__getitem__", &item, py::arg("index"),
           "__getitem__(index: int) -> BatchSample\n\nThe message at `index` (negative: from "
           "the end); IndexError out of range.")
      .def(
          "__iter__", [](const py::object& self) { return py::iter(items(self)); },
          "__iter__() -> Iterator[BatchSample]")
      .def_property_readonly(
          "first_sequence", [](const PyBatch& b) { return b.first; },
          "The first message's sequence number (the others follow it) in its partition.")
      .def_property_readonly(
          "partition", [](const PyBatch& b) { return b.partition; },
          "The partition every message of the batch came from (0 on a priority topic).")
      .def_property_readonly(
          "priority", [](const PyBatch& b) { return b.priority; },
          "The priority lane every message of the batch came from (0 without lanes).")
      .def_property_readonly(
          "released", [](const PyBatch& b) { return b.closed; },
          "True after release() (or the end of a with block).")
      .def_property_readonly(
          "exports", [](const PyBatch& b) { return b.exports; },
          "How many buffers exported from its items (memoryviews, NumPy arrays) are alive.")
      .def_property_readonly(
          "intact", [](const PyBatch& b) { return b.open_or_raise().intact(); },
          "True when no message of the batch was overwritten, so what was read so far is\n"
          "what was published. Always True under policies 'block' and 'reject'.")
      .def(
          "release", [](PyBatch& b) { return b.end_checked("Batch"); },
          R"doc(release() -> bool

Ends the batch: the data of its items may no longer be accessed, and its slots
are given back, all at once.

Returns True when they were given back now, False when buffers exported from
its items (NumPy arrays, memoryviews) are still alive: they stay valid, and the
slots are given back when the last one is dropped. Idempotent.)doc")
      .def(
          "__enter__", [](py::object self) { return self; }, "__enter__() -> Batch")
      .def(
          "__exit__",
          [](PyBatch& b, const py::args&) {
            (void)b.end_checked("Batch");
            return false;
          },
          "__exit__(*exc) -> False\n\nReleases the batch (deferred while exported buffers are "
          "alive).")
      .def("__repr__", &batch_repr);
  set_public_module(cls);
}

}  // namespace shmbus::python
