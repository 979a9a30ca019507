// Loan for Python: a slot claimed for writing in place, with a writable
// buffer protocol, published or abandoned exactly once.
#include "py_publisher.hpp"

namespace shmbus::python {

namespace {

int loan_getbuffer(PyObject* obj, Py_buffer* view, int flags) {
  return buffer_slot<PyLoan>(obj, view, "Loan", [&](PyLoan& l) {
    l.check_open();
    fill_buffer(view, obj, l.loan.data(), false, flags);
  });
}

void loan_releasebuffer(PyObject*, Py_buffer*) {}

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

}  // namespace

PyLoan::PyLoan(py::object o, PyPublisher* p, Loan&& l) noexcept
    : owner(std::move(o)),
      pub(p),
      loan(std::move(l)),
      sequence(loan.sequence()),
      size(loan.data().size()),
      lane(loan.partition()),
      view(py::none()) {}

PyLoan::~PyLoan() {
  abandon();
}

void PyLoan::check_open() const {
  check_process(pid, "Loan");
  if (done)
    raise(exceptions().closed, "loan " + std::to_string(sequence) + " of topic '" + pub->topic +
                                   "' was already published or abandoned");
}

void PyLoan::publish(std::size_t n) {
  check_open();
  if (n > size)
    raise(exceptions().too_large,
          "cannot publish " + std::to_string(n) + " bytes of a loan of " + std::to_string(size));
  done = true;  // before anything that may let another thread in
  release_enter_view(*this);
  GilSafeLock lk(pub->mu);
  const Status st = loan.publish(n);
  --pub->held;
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
    --pub->held;
    pub->finish_close_locked();
  } catch (...) {
  }
}

void bind_loan(py::module_& m) {
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
      .def_property_readonly(
          "partition", [](const PyLoan& l) { return l.pub->priorities != 0 ? 0u : l.lane; },
          "The partition the message goes to (0 on a priority topic).")
      .def_property_readonly(
          "priority", [](const PyLoan& l) { return l.pub->priorities != 0 ? l.lane : 0u; },
          "Its priority (0 on a topic without priority lanes).")
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
            l.check_open();
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
  set_public_module(loan);
}

}  // namespace shmbus::python
