// Publisher, Loan, Subscriber and Sample for Python.
#include "pubsub.hpp"

#include <pybind11/stl.h>

#include <cstdio>
#include <cstring>
#include <span>

namespace shmbus::python {

namespace {

// A contiguous read-only view of any buffer-protocol object, released on scope exit.
class ReadBuffer {
 public:
  explicit ReadBuffer(py::handle obj) {
    if (PyObject_GetBuffer(obj.ptr(), &view_, PyBUF_C_CONTIGUOUS) != 0) {
      // Say what is wanted; keep the original reason (e.g. "not C-contiguous").
      py::error_already_set e;
      raise(PyExc_TypeError, std::string("publish needs a C-contiguous buffer (bytes, bytearray, "
                                         "memoryview, array.array, NumPy array): ") +
                                 e.what());
    }
  }
  ~ReadBuffer() { PyBuffer_Release(&view_); }
  ReadBuffer(const ReadBuffer&) = delete;
  ReadBuffer& operator=(const ReadBuffer&) = delete;
  [[nodiscard]] std::span<const std::byte> bytes() const noexcept {
    return {static_cast<const std::byte*>(view_.buf), static_cast<std::size_t>(view_.len)};
  }

 private:
  Py_buffer view_{};
};

std::string sample_name(const PySample& s) {
  return "sample " + std::to_string(s.sequence) + " of topic '" + s.sub->topic + "'";
}

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
    case Status::Invalid:
      raise(exceptions().closed, "the publisher of topic '" + pp.topic + "' is closed");
    default:
      raise(exceptions().error, std::string("publish failed: ") + to_string(st));
  }
}

// ---- the buffer protocol of Sample (read-only, counted) and Loan (writable) ----

char g_empty_payload = 0;  // what a zero-length buffer points at

// Sets the fork() error (see check_process) from a C slot; returns -1.
int forked_error(pid_t creator, const char* what) noexcept {
  try {
    check_process(creator, what);
  } catch (py::error_already_set& e) {
    e.restore();
  } catch (...) {
    PyErr_SetString(PyExc_RuntimeError, "shmbus object used in a fork() child");
  }
  return -1;
}

PySample* as_sample(PyObject* obj) noexcept {
  try {
    return py::handle(obj).cast<PySample*>();
  } catch (...) {
    return nullptr;
  }
}

int sample_getbuffer(PyObject* obj, Py_buffer* view, int flags) {
  view->obj = nullptr;
  PySample* s = as_sample(obj);
  if (s == nullptr) {
    PyErr_SetString(PyExc_BufferError, "not a shmbus.Sample");
    return -1;
  }
  if (s->pid != current_pid()) return forked_error(s->pid, "Sample");
  if (s->closed || !s->sample) {
    PyErr_SetString(exceptions().closed,
                    (sample_name(*s) + " was released: its data can no longer be read").c_str());
    return -1;
  }
  if ((flags & PyBUF_WRITABLE) == PyBUF_WRITABLE) {
    PyErr_SetString(PyExc_BufferError,
                    "a shmbus.Sample is read-only (it is the producer's slot in shared memory); "
                    "copy it to modify it: bytearray(sample) or numpy.array(...)");
    return -1;
  }
  const auto d = s->sample.data();
  void* buf = d.empty() ? static_cast<void*>(&g_empty_payload) : const_cast<std::byte*>(d.data());
  if (PyBuffer_FillInfo(view, obj, buf, static_cast<Py_ssize_t>(d.size()), 1, flags) != 0)
    return -1;
  ++s->exports;
  return 0;
}

void sample_releasebuffer(PyObject* obj, Py_buffer* /*view*/) {
  PySample* s = as_sample(obj);
  if (s == nullptr || s->exports == 0) return;
  if (--s->exports == 0 && s->closed) s->really_release();
}

PyLoan* as_loan(PyObject* obj) noexcept {
  try {
    return py::handle(obj).cast<PyLoan*>();
  } catch (...) {
    return nullptr;
  }
}

int loan_getbuffer(PyObject* obj, Py_buffer* view, int flags) {
  view->obj = nullptr;
  PyLoan* l = as_loan(obj);
  if (l == nullptr) {
    PyErr_SetString(PyExc_BufferError, "not a shmbus.Loan");
    return -1;
  }
  if (l->pid != current_pid()) return forked_error(l->pid, "Loan");
  if (l->done) {
    PyErr_SetString(exceptions().closed, ("loan " + std::to_string(l->sequence) + " of topic '" +
                                          l->pub->topic + "' was already published or abandoned")
                                             .c_str());
    return -1;
  }
  const auto d = l->loan.data();
  void* buf = d.empty() ? static_cast<void*>(&g_empty_payload) : static_cast<void*>(d.data());
  return PyBuffer_FillInfo(view, obj, buf, static_cast<Py_ssize_t>(d.size()), 0, flags);
}

void loan_releasebuffer(PyObject*, Py_buffer*) {}

// Makes the wrapped object for a received sample (the subscriber already
// counted it in `holding`).
py::object wrap_sample(const py::object& self, PySubscriber& ps, Sample& out) {
  std::unique_ptr<PySample> p;
  try {
    p = std::make_unique<PySample>(self, &ps, std::move(out));
  } catch (...) {
    check_process(ps.pid, "Subscriber");  // before locking: see ForkSafePtr
    GilSafeLock lk(ps.mu);
    out.release();
    --ps.holding;
    throw;
  }
  return py::cast(p.release(), py::return_value_policy::take_ownership);
}

// Receives with the GIL released in slices; None on timeout.
py::object receive(const py::object& self, std::optional<double> timeout) {
  PySubscriber& ps = self.cast<PySubscriber&>();
  const Deadline deadline(timeout);
  Sample out;
  Status st;
  {
    check_process(ps.pid, "Subscriber");  // before locking: see ForkSafePtr
    GilSafeLock lk(ps.mu);
    Subscriber& s = ps.open_or_raise();
    do
      st = s.try_receive(out);
    while (st == Status::Corrupt);  // skipped and counted (sub.corrupt); take the next
    if (st == Status::Ok) ++ps.holding;
  }
  if (st == Status::WouldBlock && !deadline.zero()) {
    for (;;) {
      const auto slice = deadline.slice();
      if (slice.count() == 0) break;
      {
        py::gil_scoped_release nogil;
        std::lock_guard lk(ps.mu);
        if (ps.closing || !ps.sub) {
          st = Status::Invalid;
        } else {
          do
            st = ps.sub->receive(out, slice);
          while (st == Status::Corrupt);
          if (st == Status::Ok) ++ps.holding;
        }
      }
      if (st != Status::Timeout) break;
      check_signals();  // nothing is held here; KeyboardInterrupt propagates
      if (deadline.passed()) break;
    }
  }
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
    case Status::Invalid:
      raise(exceptions().closed, "the subscriber of '" + ps.topic + "' is closed");
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
    prev->closed = true;
    if (prev->exports == 0) prev->really_release();
  }
  py::object s = receive(self, timeout);
  if (!s.is_none()) ps.last_yielded = s.cast<PySample*>();
  return s;
}

// Publishes a copy of `data`; false when it was not accepted and `raise_full` is false.
bool publish(PyPublisher& pp, py::handle data, bool wait) {
  const ReadBuffer buf(data);
  const auto bytes = buf.bytes();
  const bool big = bytes.size() >= kReleaseGilBytes;
  const std::optional<double> timeout = wait ? pp.timeout : std::optional<double>(0.0);
  const Deadline deadline(timeout);
  Status st;
  {
    check_process(pp.pid, "Publisher");  // before locking: see ForkSafePtr
    GilSafeLock lk(pp.mu);
    Publisher& p = pp.open_or_raise();
    if (big) {
      py::gil_scoped_release nogil;
      st = p.try_publish(bytes);
    } else {
      st = p.try_publish(bytes);
    }
  }
  if (st == Status::WouldBlock && !deadline.zero()) {
    for (;;) {
      {
        py::gil_scoped_release nogil;
        std::lock_guard lk(pp.mu);
        st = pp.closing || !pp.pub ? Status::Invalid : pp.pub->publish(bytes);  // one slice
      }
      if (st != Status::Timeout) break;
      check_signals();
      if (deadline.passed()) break;
    }
  }
  if (st == Status::Ok) return true;
  if (!wait && st == Status::WouldBlock) return false;
  raise_publish_status(st, pp, bytes.size(), timeout);
}

// Takes a loan; None when the ring is full and `wait` is false.
py::object take_loan(const py::object& self, std::size_t size, bool wait) {
  PyPublisher& pp = self.cast<PyPublisher&>();
  const std::optional<double> timeout = wait ? pp.timeout : std::optional<double>(0.0);
  const Deadline deadline(timeout);
  Loan loan;
  {
    check_process(pp.pid, "Publisher");  // before locking: see ForkSafePtr
    GilSafeLock lk(pp.mu);
    loan = pp.open_or_raise().try_loan(size);
    if (loan) ++pp.loans;
  }
  if (!loan && loan.status() == Status::WouldBlock && !deadline.zero()) {
    for (;;) {
      {
        py::gil_scoped_release nogil;
        std::lock_guard lk(pp.mu);
        if (pp.closing || !pp.pub) {
          loan = Loan();  // status Invalid
        } else {
          loan = pp.pub->loan(size);  // one slice
          if (loan) ++pp.loans;
        }
      }
      if (loan || loan.status() != Status::Timeout) break;
      check_signals();
      if (deadline.passed()) break;
    }
  }
  if (loan) {
    std::unique_ptr<PyLoan> p;
    try {
      p = std::make_unique<PyLoan>(self, &pp, std::move(loan));
    } catch (...) {
      check_process(pp.pid, "Publisher");  // before locking: see ForkSafePtr
      GilSafeLock lk(pp.mu);
      loan.abandon();
      --pp.loans;
      pp.finish_close_locked();
      throw;
    }
    return py::cast(p.release(), py::return_value_policy::take_ownership);
  }
  if (!wait && loan.status() == Status::WouldBlock) return py::none();
  raise_publish_status(loan.status(), pp, size, timeout);
}

// Releases the memoryview __enter__ handed out, if nothing else uses it, so
// that writes through it after the loan ends raise instead of changing a
// published message.
void release_enter_view(PyLoan& l) {
  if (l.view.is_none()) return;
  py::object mv = l.view();  // weakref -> the memoryview or None
  l.view = py::none();
  if (mv.is_none()) return;
  PyObject* r = PyObject_CallMethod(mv.ptr(), "release", nullptr);
  if (r == nullptr)
    PyErr_Clear();  // BufferError: arrays made from it still use it (see the Loan doc)
  else
    Py_DECREF(r);
}

std::string subscriber_repr(const PySubscriber& ps) {
  std::string r = "<shmbus.Subscriber topic='" + ps.topic + "'";
  if (ps.sub && !ps.sub->group().empty()) r += " group='" + ps.sub->group() + "'";
  if (ps.closing) r += " closed";
  return r + ">";
}

}  // namespace

// ---- PySubscriber / PySample ------------------------------------------------

PySubscriber::~PySubscriber() = default;

Subscriber& PySubscriber::open_or_raise() {
  check_process(pid, "Subscriber");
  if (closing || !sub) raise(exceptions().closed, "the subscriber of '" + topic + "' is closed");
  return *sub;
}

void PySubscriber::finish_close_locked() {
  if (closing && holding == 0) sub.reset();
}

PySample::PySample(py::object o, PySubscriber* s, Sample&& smp) noexcept
    : owner(std::move(o)),
      sub(s),
      sample(std::move(smp)),
      sequence(sample.sequence()),
      timestamp_ns(sample.timestamp_ns()),
      size(static_cast<std::uint32_t>(sample.data().size())),
      producer_id(sample.producer_id()) {}

PySample::~PySample() {
  if (sub->last_yielded == this) sub->last_yielded = nullptr;
  closed = true;
  really_release();
}

void PySample::really_release() noexcept {
  if (!sample || pid != current_pid()) return;  // never on the parent's behalf
  try {
    GilSafeLock lk(sub->mu);  // may let another thread run first
    if (!sample) return;      // which released it already
    sample.release();
    --sub->holding;
    sub->finish_close_locked();
  } catch (...) {
    // Only a failure to release the GIL could land here; the slot is then
    // given back by the Sample's own destructor.
  }
}

// ---- PyPublisher / PyLoan ----------------------------------------------------

Publisher& PyPublisher::open_or_raise() {
  check_process(pid, "Publisher");
  if (closing || !pub) raise(exceptions().closed, "the publisher of '" + topic + "' is closed");
  return *pub;
}

void PyPublisher::finish_close_locked() {
  if (closing && loans == 0) pub.reset();
}

PyLoan::PyLoan(py::object o, PyPublisher* p, Loan&& l) noexcept
    : owner(std::move(o)),
      pub(p),
      loan(std::move(l)),
      sequence(loan.sequence()),
      size(loan.data().size()),
      view(py::none()) {}

PyLoan::~PyLoan() {
  abandon();
}

void PyLoan::publish(std::size_t n) {
  check_process(pid, "Loan");
  if (done)
    raise(exceptions().closed, "loan " + std::to_string(sequence) + " of topic '" + pub->topic +
                                   "' was already published or abandoned");
  if (n > size)
    raise(exceptions().too_large,
          "cannot publish " + std::to_string(n) + " bytes of a loan of " + std::to_string(size));
  done = true;  // before anything that may let another thread in
  release_enter_view(*this);
  GilSafeLock lk(pub->mu);
  const Status st = loan.publish(n);
  --pub->loans;
  pub->finish_close_locked();
  if (st != Status::Ok) raise(exceptions().error, std::string("publish failed: ") + to_string(st));
}

void PyLoan::abandon() noexcept {
  if (done || pid != current_pid()) return;
  done = true;
  try {
    release_enter_view(*this);
  } catch (...) {
    PyErr_Clear();
  }
  try {
    GilSafeLock lk(pub->mu);
    loan.abandon();
    --pub->loans;
    pub->finish_close_locked();
  } catch (...) {
  }
}

// ---- factories -----------------------------------------------------------------

py::object make_publisher(Bus& bus, const Topic& topic, std::optional<double> timeout,
                          const std::string& wait, double spin) {
  if (timeout) (void)Deadline(timeout);  // validates
  PublisherOptions o;
  o.wait = wait_arg(wait);
  o.spin = seconds_to_ns(spin, "spin");
  // The C++ publisher waits one slice at a time; the Python side loops until
  // the publisher's own timeout, checking for Ctrl-C in between.
  o.timeout = kWaitSlice;
  std::optional<Publisher> p;
  Policy policy;
  {
    py::gil_scoped_release nogil;
    p.emplace(bus.publisher(topic, o));
    policy = topic.info().policy;
  }
  auto pp = std::make_unique<PyPublisher>(std::move(*p), topic.name(), policy, timeout);
  return py::cast(pp.release(), py::return_value_policy::take_ownership);
}

py::object make_subscriber(Bus& bus, const Topic& topic, const std::optional<std::string>& group,
                           const py::object& start, bool durable, const std::string& wait,
                           double spin) {
  SubscriberOptions o;
  o.group = group.value_or("");
  o.durable = durable;
  o.wait = wait_arg(wait);
  o.spin = seconds_to_ns(spin, "spin");
  const StartPosition from = start_arg(start);
  o.start = from.from;
  o.offset = from.offset;
  std::unique_ptr<Subscriber> s;
  Policy policy;
  {
    py::gil_scoped_release nogil;
    s = bus.subscriber(topic, o);
    policy = topic.info().policy;
  }
  auto ps = std::make_unique<PySubscriber>(std::move(s), topic.name(), policy);
  return py::cast(ps.release(), py::return_value_policy::take_ownership);
}

// ---- bindings ------------------------------------------------------------------

namespace {

struct SampleIterator {
  py::object sub;
  std::optional<double> timeout;
};

}  // namespace

void bind_pubsub(py::module_& m) {
  // -- Sample
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
          "The message's sequence number in its topic.")
      .def_property_readonly(
          "timestamp_ns", [](const PySample& s) { return s.timestamp_ns; },
          "CLOCK_MONOTONIC at publish, in ns (comparable with time.monotonic_ns()).")
      .def_property_readonly(
          "producer_id", [](const PySample& s) { return s.producer_id; },
          "The publishing producer's seat number.")
      .def_property_readonly(
          "size", [](const PySample& s) { return s.size; }, "Payload size in bytes.")
      .def("__len__", [](const PySample& s) { return s.size; })
      .def_property_readonly(
          "released", [](const PySample& s) { return s.closed; },
          "True after release() (or the end of a with block).")
      .def_property_readonly(
          "exports", [](const PySample& s) { return s.exports; },
          "How many exported buffers (memoryviews, NumPy arrays) are alive.")
      .def_property_readonly(
          "intact",
          [](const PySample& s) {
            check_process(s.pid, "Sample");
            if (s.closed || !s.sample) raise(exceptions().closed, sample_name(s) + " was released");
            return s.sample.intact();
          },
          "True when the slot still holds this message, so what was read so far is what was\n"
          "published. Always True under policies 'block' and 'reject'.")
      .def(
          "tobytes",
          [](const PySample& s) {
            check_process(s.pid, "Sample");
            if (s.closed || !s.sample) raise(exceptions().closed, sample_name(s) + " was released");
            const auto d = s.sample.data();
            return py::bytes(reinterpret_cast<const char*>(d.data()), d.size());
          },
          "tobytes() -> bytes\n\nA copy of the payload.")
      .def(
          "release",
          [](PySample& s) {
            check_process(s.pid, "Sample");
            s.closed = true;
            if (s.exports != 0) return false;
            s.really_release();
            return true;
          },
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
            check_process(s.pid, "Sample");
            s.closed = true;
            if (s.exports == 0) s.really_release();
            return false;
          },
          "__exit__(*exc) -> False\n\nReleases the sample (deferred while exported buffers are "
          "alive).")
      .def("__repr__", [](const PySample& s) {
        return "<shmbus.Sample topic='" + s.sub->topic +
               "' sequence=" + std::to_string(s.sequence) + " size=" + std::to_string(s.size) +
               (s.closed ? " released" : "") + ">";
      });

  // -- iterator with a timeout
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

  // -- Subscriber
  py::class_<PySubscriber, ForkSafePtr<PySubscriber>>(m, "Subscriber", R"doc(
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
)doc")
      .def("receive", &receive, py::arg("timeout") = py::none(),
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
            if (timeout) (void)Deadline(timeout);  // validates
            return SampleIterator{std::move(self), timeout};
          },
          py::arg("timeout") = py::none(),
          "iter(timeout: float | None = None) -> SampleIterator\n\nAn iterator over samples that "
          "stops when none comes within `timeout` seconds.")
      .def(
          "seek",
          [](PySubscriber& ps, std::uint64_t sequence) {
            check_process(ps.pid, "Subscriber");  // before locking: see ForkSafePtr
            GilSafeLock lk(ps.mu);
            ps.open_or_raise().seek(sequence);
          },
          py::arg("sequence"),
          "seek(sequence: int) -> None\n\nMoves the group's position to `sequence` (clamped to "
          "what the ring retains when\n"
          "read). For a named group this moves every member.")
      .def_property_readonly(
          "lag",
          [](PySubscriber& ps) {
            check_process(ps.pid, "Subscriber");  // before locking: see ForkSafePtr
            GilSafeLock lk(ps.mu);
            return ps.open_or_raise().lag();
          },
          "Messages published but not yet taken by this group (a snapshot).")
      .def_property_readonly(
          "position",
          [](PySubscriber& ps) {
            check_process(ps.pid, "Subscriber");  // before locking: see ForkSafePtr
            GilSafeLock lk(ps.mu);
            return ps.open_or_raise().position();
          },
          "The next sequence the group takes.")
      .def_property_readonly(
          "lost",
          [](PySubscriber& ps) {
            check_process(ps.pid, "Subscriber");  // before locking: see ForkSafePtr
            GilSafeLock lk(ps.mu);
            return ps.open_or_raise().lost();
          },
          "Messages this group skipped because producers overwrote them first.")
      .def_property_readonly(
          "corrupt",
          [](PySubscriber& ps) {
            check_process(ps.pid, "Subscriber");  // before locking: see ForkSafePtr
            GilSafeLock lk(ps.mu);
            return ps.open_or_raise().corrupt();
          },
          "Messages this group skipped because their slot header was invalid.")
      .def_property_readonly(
          "group",
          [](PySubscriber& ps) -> std::optional<std::string> {
            check_process(ps.pid, "Subscriber");  // before locking: see ForkSafePtr
            GilSafeLock lk(ps.mu);
            const std::string& g = ps.open_or_raise().group();
            if (g.empty()) return std::nullopt;
            return g;
          },
          "The group's name, or None for a private group.")
      .def_property_readonly(
          "max_message_size",
          [](PySubscriber& ps) {
            check_process(ps.pid, "Subscriber");  // before locking: see ForkSafePtr
            GilSafeLock lk(ps.mu);
            return ps.open_or_raise().max_message_size();
          },
          "The topic's slot size in bytes.")
      .def_property_readonly(
          "topic", [](const PySubscriber& ps) { return ps.topic; }, "The topic's name.")
      .def_property_readonly(
          "policy", [](const PySubscriber& ps) { return to_string(ps.policy); },
          "The topic's policy: 'block', 'reject' or 'overwrite'.")
      .def_property_readonly(
          "holding",
          [](PySubscriber& ps) {
            check_process(ps.pid, "Subscriber");  // before locking: see ForkSafePtr
            GilSafeLock lk(ps.mu);
            return ps.holding;
          },
          "How many received samples still hold their slot.")
      .def_property_readonly(
          "closed", [](const PySubscriber& ps) { return ps.closing; }, "True after close().")
      .def(
          "close",
          [](PySubscriber& ps) {
            check_process(ps.pid, "Subscriber");
            GilSafeLock lk(ps.mu);
            ps.closing = true;
            ps.finish_close_locked();
          },
          "close() -> None\n\nLeaves the group. Samples still held stay valid; the seat is freed "
          "when the\n"
          "last of them is released. Further calls raise Closed. Idempotent.")
      .def(
          "__enter__", [](py::object self) { return self; }, "__enter__() -> Subscriber")
      .def(
          "__exit__",
          [](PySubscriber& ps, const py::args&) {
            check_process(ps.pid, "Subscriber");
            GilSafeLock lk(ps.mu);
            ps.closing = true;
            ps.finish_close_locked();
            return false;
          },
          "__exit__(*exc) -> False\n\nCloses the subscriber (see close()).")
      .def("__repr__", [](const PySubscriber& ps) { return subscriber_repr(ps); });

  // -- Loan
  py::class_<PyLoan, ForkSafePtr<PyLoan>> loan(m, "Loan", py::buffer_protocol(), py::is_final(),
                                               R"doc(
A slot claimed for writing in place (made by Publisher.loan).

    with pub.loan(n) as buf:          # buf: a writable memoryview of n bytes
        np.frombuffer(buf, dtype=np.float32)[:] = values
    # published here; abandoned instead if the block raised

The Loan itself supports the (writable) buffer protocol too, and has
publish(size=None) and abandon() for use without a with block. A loan that is
dropped unpublished is abandoned (consumers skip its sequence number).

When the loan ends, the memoryview handed out by __enter__ is released, so
writing through it raises. Arrays made from that memoryview (or from the
loan) that are kept beyond the loan still point at the slot: writing through
them after the publish would change a message consumers may be reading. Do
not keep them.
)doc");
  auto* loan_type = reinterpret_cast<PyHeapTypeObject*>(loan.ptr());
  loan_type->as_buffer.bf_getbuffer = loan_getbuffer;
  loan_type->as_buffer.bf_releasebuffer = loan_releasebuffer;
  loan.def_property_readonly(
          "sequence", [](const PyLoan& l) { return l.sequence; },
          "The sequence number the message will have.")
      .def_property_readonly(
          "size", [](const PyLoan& l) { return l.size; }, "Bytes loaned.")
      .def("__len__", [](const PyLoan& l) { return l.size; })
      .def_property_readonly(
          "done", [](const PyLoan& l) { return l.done; }, "True once published or abandoned.")
      .def(
          "publish",
          [](PyLoan& l, std::optional<std::size_t> size) { l.publish(size.value_or(l.size)); },
          py::arg("size") = py::none(),
          "publish(size: int | None = None) -> None\n\nPublishes the first `size` bytes (default: "
          "all that was loaned).")
      .def(
          "abandon",
          [](PyLoan& l) {
            check_process(l.pid, "Loan");
            l.abandon();
          },
          "abandon() -> None\n\nGives the slot up unpublished; consumers skip its sequence. "
          "Idempotent.")
      .def(
          "__enter__",
          [](py::object self) {
            PyLoan& l = self.cast<PyLoan&>();
            check_process(l.pid, "Loan");
            if (l.done)
              raise(exceptions().closed,
                    "loan " + std::to_string(l.sequence) + " was already ended");
            py::object mv = py::reinterpret_steal<py::object>(PyMemoryView_FromObject(self.ptr()));
            if (!mv) throw py::error_already_set();
            l.view = py::module_::import("weakref").attr("ref")(mv);
            return mv;
          },
          "__enter__() -> memoryview\n\nA writable memoryview straight into the slot.")
      .def(
          "__exit__",
          [](PyLoan& l, const py::object& type, const py::object&, const py::object&) {
            if (l.done) return false;
            if (type.is_none())
              l.publish(l.size);
            else
              l.abandon();
            return false;
          },
          "__exit__(*exc) -> False\n\nPublishes the loan, or abandons it if the block raised.")
      .def("__repr__", [](const PyLoan& l) {
        return "<shmbus.Loan topic='" + l.pub->topic + "' sequence=" + std::to_string(l.sequence) +
               " size=" + std::to_string(l.size) + (l.done ? " done" : "") + ">";
      });

  // -- Publisher
  py::class_<PyPublisher, ForkSafePtr<PyPublisher>>(m, "Publisher", R"doc(
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
Timeouts are honoured to within 50 ms (waits run in 50 ms slices).

Close with close() or a with block (deferred until open loans end).
)doc")
      .def(
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
          [](PyPublisher& pp, std::optional<double> t) {
            if (t) (void)Deadline(t);  // validates
            pp.timeout = t;
          },
          "Seconds publish()/loan() wait for room under policy 'block' (None: for ever).")
      .def_property_readonly(
          "max_message_size",
          [](PyPublisher& pp) {
            check_process(pp.pid, "Publisher");  // before locking: see ForkSafePtr
            GilSafeLock lk(pp.mu);
            return pp.open_or_raise().max_message_size();
          },
          "The topic's slot size in bytes.")
      .def_property_readonly(
          "id",
          [](PyPublisher& pp) {
            check_process(pp.pid, "Publisher");  // before locking: see ForkSafePtr
            GilSafeLock lk(pp.mu);
            return pp.open_or_raise().id();
          },
          "This producer's seat number (Sample.producer_id of its messages).")
      .def_property_readonly(
          "topic", [](const PyPublisher& pp) { return pp.topic; }, "The topic's name.")
      .def_property_readonly(
          "policy", [](const PyPublisher& pp) { return to_string(pp.policy); },
          "The topic's policy: 'block', 'reject' or 'overwrite'.")
      .def_property_readonly(
          "closed", [](const PyPublisher& pp) { return pp.closing; }, "True after close().")
      .def(
          "close",
          [](PyPublisher& pp) {
            check_process(pp.pid, "Publisher");
            GilSafeLock lk(pp.mu);
            pp.closing = true;
            pp.finish_close_locked();
          },
          "close() -> None\n\nFrees the producer seat (once open loans end). Further calls raise "
          "Closed.")
      .def(
          "__enter__", [](py::object self) { return self; }, "__enter__() -> Publisher")
      .def(
          "__exit__",
          [](PyPublisher& pp, const py::args&) {
            check_process(pp.pid, "Publisher");
            GilSafeLock lk(pp.mu);
            pp.closing = true;
            pp.finish_close_locked();
            return false;
          },
          "__exit__(*exc) -> False\n\nCloses the publisher (see close()).")
      .def("__repr__", [](const PyPublisher& pp) {
        return "<shmbus.Publisher topic='" + pp.topic + "' policy='" +
               std::string(to_string(pp.policy)) + "'" + (pp.closing ? " closed" : "") + ">";
      });

  for (const char* name : {"Sample", "SampleIterator", "Subscriber", "Loan", "Publisher"})
    set_public_module(m.attr(name));
}

}  // namespace shmbus::python
