// The Python Subscriber, the Samples and Batches it receives, and what the
// two share: the slots they hold and how they give them back.
//
// Lifetimes (what keeps the shared memory mapped):
//   exported buffer (memoryview, NumPy array) -> Sample object
//   exported buffer -> BatchSample object -> Batch object
//   Sample, Batch -> Subscriber object -> shmbus::Subscriber -> region mapping
// so no Python object can ever point at unmapped memory.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <utility>

#include "common.hpp"
#include "endpoint.hpp"
#include "shmbus/bus.hpp"
#include "shmbus/subscriber.hpp"

namespace shmbus::python {

class PySample;

// `held`: the samples and batches that still hold slots.
class PySubscriber : public Endpoint<std::unique_ptr<Subscriber>> {
 public:
  PySubscriber(std::unique_ptr<Subscriber> s, WantCount wanted, std::string topic, Policy policy)
      : Endpoint(std::move(s), std::move(wanted), std::move(topic), policy, "Subscriber",
                 "subscriber") {}

  // The sample iteration yielded last; released when the next is asked for
  // (GIL). Cleared by that sample's destructor.
  PySample* last_yielded = nullptr;
};

// True while `s` (or `b`) holds its slots.
[[nodiscard]] inline bool holds_slots(const Sample& s) noexcept {
  return static_cast<bool>(s);
}
[[nodiscard]] inline bool holds_slots(const Batch& b) noexcept {
  return !b.empty();
}

// What a Python Sample and Batch share: a received T (shmbus::Sample or
// shmbus::Batch) that holds slots of its subscriber, counted once in the
// subscriber's `held`, and the buffers exported from it that keep them held.
template <class T>
class HeldSlots {
 public:
  HeldSlots(py::object o, PySubscriber* s, T&& t) noexcept
      : owner(std::move(o)), sub(s), value(std::move(t)) {}
  ~HeldSlots() {
    closed = true;
    really_release();
  }
  HeldSlots(const HeldSlots&) = delete;
  HeldSlots& operator=(const HeldSlots&) = delete;

  // Declared first, destroyed last: the slots are released before their
  // subscriber may go away.
  py::object owner;  // the Subscriber object
  PySubscriber* sub;
  T value;  // holds the slots until `really_release`
  pid_t pid = current_pid();
  bool closed = false;        // release() was called: the data may no longer be used
  std::uint32_t exports = 0;  // live buffer exports (memoryviews, arrays)

  // The value, or raises: shmbus.Error in a fork() child (`type_name`
  // names the class), Closed after release() (`name` names the object).
  template <class Name>
  const T& open_or_raise(const char* type_name, Name&& name) const {
    check_process(pid, type_name);
    if (closed || !holds_slots(value))
      raise(exceptions().closed, name() + " was released: its data can no longer be read");
    return value;
  }
  // Ends it: its data may no longer be used, and the slots are given back
  // now unless buffers exported from it live (then when the last goes).
  // True when given back now (GIL held).
  bool end() noexcept {
    closed = true;
    if (exports != 0) return false;
    really_release();
    return true;
  }
  // release() and __exit__ from Python: end(), refused in a fork() child
  // (`type_name` names the class).
  bool end_checked(const char* type_name) {
    check_process(pid, type_name);
    return end();
  }
  // One exported buffer was released (GIL held).
  void unexport() noexcept {
    if (exports == 0) return;
    if (--exports == 0 && closed) really_release();
  }
  // Sample.nack(): gives the message back for redelivery (or to the
  // dead-letter topic) instead of releasing it; as end(), but refused while
  // buffers exported from it live (GIL held).
  Status nack_checked(const char* type_name) {
    check_process(pid, type_name);
    if (closed || !holds_slots(value)) return Status::Invalid;
    if (exports != 0) return Status::TooManyHeld;  // the caller says what to do
    GilSafeLock lk(sub->mu);
    const Status st = value.nack();
    if (st == Status::Ok) {
      closed = true;
      --sub->held;
      sub->finish_close_locked();
    }
    return st;
  }
  // Gives the slots back now (GIL held; takes the subscriber's mutex).
  void really_release() noexcept {
    if (!holds_slots(value) || pid != current_pid()) return;  // never on the parent's behalf
    try {
      GilSafeLock lk(sub->mu);          // may let another thread run first
      if (!holds_slots(value)) return;  // which released it already
      value.release();
      --sub->held;
      sub->finish_close_locked();
    } catch (...) {
      // Only a failure to release the GIL could land here; the slots are
      // then given back by the value's own destructor.
    }
  }
};

class PySample : public HeldSlots<Sample> {
 public:
  PySample(py::object owner, PySubscriber* sub, Sample&& s) noexcept;
  ~PySample();
  PySample(const PySample&) = delete;
  PySample& operator=(const PySample&) = delete;

  std::uint64_t sequence;
  std::uint64_t timestamp_ns;
  std::uint64_t deliver_at_ns;  // 0: not a delayed message
  std::uint32_t size;
  std::uint32_t producer_id;
  std::uint32_t key_size;
  std::uint32_t partition;
  std::uint32_t priority;
  std::uint32_t delivery_count;

  // The sample, or raises (a fork() child; Closed after release()).
  const Sample& open_or_raise() const;
};

// A received message's key as Python sees it (Sample.key, BatchSample.key): a
// read-only memoryview of the key in its slot (zero copy), or None for an
// unkeyed message. The memoryview's exporter counts in the sample's (or the
// batch's) `exports`, as the payload's buffers do, so the slots stay held
// while the memoryview lives, even after release().
// `open()` raises unless the owner's data may still be read and returns the
// key; `owner` is the Sample or Batch object; `held` its HeldSlots.
template <class T, class Open>
py::object key_view(const py::object& owner, HeldSlots<T>& held, Open&& open);

// The exporter behind key_view's memoryview (bound as shmbus._KeyBuffer).
struct PyKeyBuffer {
  py::object owner;  // the Sample or Batch object: keeps it (and its slots) alive
  std::span<const std::byte> bytes;
  std::function<void()> on_export;   // counts an export; raises once released
  std::function<void()> on_release;  // counts it down
};
void bind_key_buffer(py::module_& m);

template <class T, class Open>
py::object key_view(const py::object& owner, HeldSlots<T>& held, Open&& open) {
  const std::span<const std::byte> key = open();
  if (key.empty()) return py::none();
  HeldSlots<T>* h = &held;
  auto exporter = std::make_unique<PyKeyBuffer>(
      PyKeyBuffer{owner, key,
                  [h, open] {
                    (void)open();  // raises (Closed, a fork() child) before anything is counted
                    ++h->exports;
                  },
                  [h] { h->unexport(); }});
  py::object obj = to_python(std::move(exporter));
  py::object mv = py::reinterpret_steal<py::object>(PyMemoryView_FromObject(obj.ptr()));
  if (!mv) throw py::error_already_set();
  return mv;
}

// Calls `take()` (one core receive) until it returns anything but
// Status::Corrupt: a slot with an invalid header is skipped and counted
// (sub.corrupt), and the next one taken.
template <class Take>
Status skip_corrupt(Take&& take) noexcept {
  Status st;
  do
    st = take();
  while (st == Status::Corrupt);
  return st;
}
// skip_corrupt, counting what was received (a sample or a batch) in `held`
// (mu held).
template <class Take>
Status receive_counted(PySubscriber& ps, Take&& take) noexcept {
  const Status st = skip_corrupt(take);
  if (st == Status::Ok) ++ps.held;
  return st;
}

// Makes the Python object Py(self, &ps, std::move(out)) for what was
// received into `out` (already counted in `held`); on failure gives the
// slots back (unless a Py made and destroyed already did) and raises.
template <class Py, class T, class... Extra>
py::object wrap_received(const py::object& self, PySubscriber& ps, T& out, Extra&&... extra) {
  try {
    return to_python(
        std::make_unique<Py>(self, &ps, std::move(out), std::forward<Extra>(extra)...));
  } catch (...) {
    auto lk = ps.lock();
    if (holds_slots(out)) {
      out.release();
      --ps.held;
    }
    throw;
  }
}

// Raises the Python exception for a receive's status (not Ok, WouldBlock or
// Timeout, which are no error).
[[noreturn]] void raise_receive_status(Status st, const PySubscriber& ps);

// Used by Bus.subscriber.
py::object make_subscriber(const Topic& topic, const std::optional<std::string>& group,
                           const py::handle& start, bool durable, const std::string& wait,
                           double spin, const std::string& mode,
                           const std::optional<std::string>& tags,
                           const std::string& delivery = "at_most_once",
                           std::uint32_t max_deliveries = kDefaultMaxDeliveries);

// Subscriber.receive_batch (batch.cpp).
py::object receive_batch(const py::object& self, std::int64_t max, std::optional<double> timeout);

// Subscriber.listen and the Listener and Message classes (listener.cpp).
void bind_listener(py::module_& m, py::class_<PySubscriber, ForkSafePtr<PySubscriber>>& sub);

}  // namespace shmbus::python
