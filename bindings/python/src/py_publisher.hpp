// The Python Publisher and the Loans it hands out.
//
// Lifetimes: Loan -> Publisher object -> shmbus::Publisher -> region mapping,
// so a loan's buffer never points at unmapped memory.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <optional>
#include <string>

#include "common.hpp"
#include "endpoint.hpp"
#include "shmbus/bus.hpp"
#include "shmbus/publisher.hpp"

namespace shmbus::python {

// `held`: loans not yet published or abandoned.
class PyPublisher : public Endpoint<std::optional<Publisher>> {
 public:
  PyPublisher(Publisher&& p, WantCount wanted, std::string topic, Policy policy,
              std::optional<double> t)
      : Endpoint(std::move(p), std::move(wanted), std::move(topic), policy, "Publisher",
                 "publisher"),
        timeout(t),
        slot_size(core->slot_size()),
        partitions(core->partitions()),
        priorities(core->priorities()) {}

  std::optional<double> timeout;  // seconds a publish waits for room; None: forever
  // The topic's, for messages (fixed for its life; readable after close()).
  std::uint32_t slot_size;
  std::uint32_t partitions;
  std::uint32_t priorities;
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
  std::uint32_t lane;  // the partition (or priority lane) of its slot
  pid_t pid = current_pid();
  bool done = false;  // published or abandoned
  py::object view;    // weak reference to the memoryview __enter__ returned

  // Raises unless the loan may still be written (a fork() child; Closed once done).
  void check_open() const;
  // Publishes the first `n` bytes (GIL held).
  void publish(std::size_t n);
  // Abandons the loan if still open (GIL held; never throws).
  void abandon() noexcept;
};

// Used by Bus.publisher.
py::object make_publisher(const Topic& topic, std::optional<double> timeout,
                          const std::string& wait, double spin);

}  // namespace shmbus::python
