// The Python-side objects around Publisher/Loan and Subscriber/Sample.
//
// Lifetimes (what keeps the shared memory mapped):
//   exported buffer (memoryview, NumPy array) -> Sample or Loan object
//   Sample -> Subscriber object -> shmbus::Subscriber -> region mapping
//   Loan   -> Publisher object  -> shmbus::Publisher  -> region mapping
// so no Python object can ever point at unmapped memory.
//
// Threads: shmbus::Subscriber, Publisher, Sample and Loan are single-threaded.
// Every call into them (including a sample's release, which may happen in
// any thread's garbage collection) is made under the owner's mutex.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "common.hpp"
#include "shmbus/bus.hpp"
#include "shmbus/publisher.hpp"
#include "shmbus/subscriber.hpp"

namespace shmbus::python {

class PySubscriber {
 public:
  PySubscriber(std::unique_ptr<Subscriber> s, std::string topic, Policy policy)
      : sub(std::move(s)), topic(std::move(topic)), policy(policy) {}
  ~PySubscriber();

  pid_t pid = current_pid();  // the process that made it (see ForkSafePtr)
  std::mutex mu;
  std::unique_ptr<Subscriber> sub;  // null once closed (and every sample released)
  std::string topic;
  Policy policy;
  bool closing = false;       // close() was called: no new calls
  std::uint32_t holding = 0;  // samples that still hold a slot (under mu)
  // The sample iteration yielded last; released when the next is asked for
  // (GIL). Cleared by that sample's destructor.
  class PySample* last_yielded = nullptr;

  // The subscriber, or raises shmbus.Closed (GIL and mu held).
  Subscriber& open_or_raise();
  // Destroys the C++ subscriber once closing and nothing holds a slot (mu held).
  void finish_close_locked();
};

class PySample {
 public:
  PySample(py::object owner, PySubscriber* sub, Sample&& s) noexcept;
  ~PySample();

  // Declared first, destroyed last: the sample is released before its
  // subscriber may go away.
  py::object owner;  // the Subscriber object
  PySubscriber* sub;
  Sample sample;  // holds the slot until `really_release`
  std::uint64_t sequence;
  std::uint64_t timestamp_ns;
  std::uint32_t size;
  std::uint32_t producer_id;
  pid_t pid = current_pid();
  bool closed = false;        // release() was called: the data may no longer be used
  std::uint32_t exports = 0;  // live buffer exports (memoryviews, arrays)

  // Gives the slot back now (GIL held; takes the subscriber's mutex).
  void really_release() noexcept;
};

class PyPublisher {
 public:
  PyPublisher(Publisher&& p, std::string topic, Policy policy, std::optional<double> timeout)
      : pub(std::move(p)), topic(std::move(topic)), policy(policy), timeout(timeout) {}

  pid_t pid = current_pid();
  std::mutex mu;
  std::optional<Publisher> pub;  // empty once closed (and every loan finished)
  std::string topic;
  Policy policy;
  std::optional<double> timeout;  // seconds a publish waits for room; None: forever
  bool closing = false;
  std::uint32_t loans = 0;  // loans not yet published or abandoned (under mu)

  Publisher& open_or_raise();
  void finish_close_locked();
};

class PyLoan {
 public:
  PyLoan(py::object owner, PyPublisher* pub, Loan&& l) noexcept;
  ~PyLoan();

  py::object owner;  // the Publisher object; declared first, destroyed last
  PyPublisher* pub;
  Loan loan;
  std::uint64_t sequence;
  std::size_t size;
  pid_t pid = current_pid();
  bool done = false;  // published or abandoned
  py::object view;    // weak reference to the memoryview __enter__ returned

  // Publishes the first `n` bytes (GIL held).
  void publish(std::size_t n);
  // Abandons the loan if still open (GIL held; never throws).
  void abandon() noexcept;
};

// A Bus and the process that connected it.
struct PyBus {
  Bus bus;
  pid_t pid = current_pid();
  Bus& get() {
    check_process(pid, "Bus");
    return bus;
  }
};

// Factories used by Bus.publisher / Bus.subscriber.
py::object make_publisher(Bus& bus, const Topic& topic, std::optional<double> timeout,
                          const std::string& wait, double spin);
py::object make_subscriber(Bus& bus, const Topic& topic, const std::optional<std::string>& group,
                           const py::object& start, bool durable, const std::string& wait,
                           double spin);

}  // namespace shmbus::python
