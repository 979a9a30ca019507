// The Python Subscriber and the Samples it receives.
//
// Lifetimes (what keeps the shared memory mapped):
//   exported buffer (memoryview, NumPy array) -> Sample object
//   Sample -> Subscriber object -> shmbus::Subscriber -> region mapping
// so no Python object can ever point at unmapped memory.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "common.hpp"
#include "endpoint.hpp"
#include "shmbus/bus.hpp"
#include "shmbus/subscriber.hpp"

namespace shmbus::python {

class PySample;

// `held`: the samples that still hold a slot.
class PySubscriber : public Endpoint<std::unique_ptr<Subscriber>> {
 public:
  PySubscriber(std::unique_ptr<Subscriber> s, std::string topic, Policy policy)
      : Endpoint(std::move(s), std::move(topic), policy, "Subscriber", "subscriber") {}

  // The sample iteration yielded last; released when the next is asked for
  // (GIL). Cleared by that sample's destructor.
  PySample* last_yielded = nullptr;
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

  // The sample, or raises (a fork() child; Closed after release()).
  const Sample& open_or_raise() const;
  // Ends the sample: its data may no longer be used, and the slot is given
  // back now unless buffers exported from it live (then when the last goes).
  // True when given back now (GIL held).
  bool end() noexcept;
  // Gives the slot back now (GIL held; takes the subscriber's mutex).
  void really_release() noexcept;
};

// Used by Bus.subscriber.
py::object make_subscriber(Bus& bus, const Topic& topic, const std::optional<std::string>& group,
                           const py::handle& start, bool durable, const std::string& wait,
                           double spin);

}  // namespace shmbus::python
