// What the Python Subscriber and Publisher share: the C++ object they wrap,
// the mutex every call into it takes, the process that made it, and the
// deferred close (the C++ object goes only once no sample or loan holds a
// slot of it).
//
// Threads: shmbus::Subscriber, Publisher, Sample and Loan are single-threaded.
// Every call into them (including a sample's release, which may happen in
// any thread's garbage collection) is made under the owner's mutex.
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <utility>

#include "common.hpp"

namespace shmbus::python {

// Holder: std::unique_ptr<Subscriber> or std::optional<Publisher>.
template <class Holder>
class Endpoint {
 public:
  using Core = std::remove_reference_t<decltype(*std::declval<Holder&>())>;

  // `type_name` ("Subscriber") names it in the fork() error, `noun`
  // ("subscriber") in Closed.
  // `wanted`: the count python_interrupt was made with for the core object.
  Endpoint(Holder c, WantCount wanted, std::string topic_name, Policy p, const char* type_name,
           const char* noun)
      : mu(std::move(wanted)),
        core(std::move(c)),
        topic(std::move(topic_name)),
        policy(p),
        type_name_(type_name),
        noun_(noun) {}

  pid_t pid = current_pid();  // the process that made it (see ForkSafePtr)
  EndpointMutex mu;
  Holder core;  // empty once closed and nothing holds a slot
  std::string topic;
  Policy policy;
  bool closing = false;  // close() was called: no new calls
  // Set while another thread owns the C++ object (a Listener): no calls, and
  // raise_closed says why.
  const char* busy = nullptr;
  std::uint32_t held = 0;  // samples or loans that still hold a slot (under mu)

  // The prologue of every call: refuses a fork() child (before locking: see
  // ForkSafePtr), then takes the mutex (GIL held).
  [[nodiscard]] GilSafeLock lock() {
    check_process(pid, type_name_);
    return GilSafeLock(mu);
  }
  // The C++ object, or null once closed (mu held).
  [[nodiscard]] Core* open_locked() noexcept {
    return closing || busy != nullptr || !core ? nullptr : &*core;
  }
  // The C++ object, or raises shmbus.Closed (GIL and mu held).
  Core& open_or_raise() {
    if (Core* c = open_locked()) return *c;
    raise_closed();
  }
  [[noreturn]] void raise_closed() const {
    if (busy != nullptr && !closing)
      raise(exceptions().error, std::string("the ") + noun_ + " of topic '" + topic + "' " + busy);
    raise(exceptions().closed, std::string("the ") + noun_ + " of topic '" + topic + "' is closed");
  }
  // f(core) under the lock; raises Closed when closed (GIL held).
  template <class F>
  auto with_open(F&& f) {
    auto lk = lock();
    return std::invoke(std::forward<F>(f), open_or_raise());
  }
  // Destroys the C++ object once closing and nothing holds a slot (mu held).
  void finish_close_locked() {
    if (closing && held == 0) core.reset();
  }
  void close() {
    auto lk = lock();
    closing = true;
    finish_close_locked();
  }

 private:
  const char* type_name_;
  const char* noun_;
};

// Adds what Subscriber and Publisher share to their Python class: topic,
// policy, closed, close() (documented by `close_doc`) and the with block.
// `noun`: "subscriber" or "publisher".
template <class Owner>
void def_endpoint(py::class_<Owner, ForkSafePtr<Owner>>& cls, const char* noun,
                  const char* close_doc) {
  // Static, one per class: the docstrings must outlive the module.
  static const std::string enter_doc =
      "__enter__() -> " + cls.attr("__name__").template cast<std::string>();
  static const std::string exit_doc =
      std::string("__exit__(*exc) -> False\n\nCloses the ") + noun + " (see close()).";
  cls.def_property_readonly(
         "topic", [](const Owner& o) { return o.topic; }, "The topic's name.")
      .def_property_readonly(
          "policy", [](const Owner& o) { return to_string(o.policy); },
          "The topic's policy: 'block', 'reject' or 'overwrite'.")
      .def_property_readonly(
          "closed", [](const Owner& o) { return o.closing; }, "True after close().")
      .def(
          "close", [](Owner& o) { o.close(); }, close_doc)
      .def(
          "__enter__", [](py::object self) { return self; }, enter_doc.c_str())
      .def(
          "__exit__",
          [](Owner& o, const py::args&) {
            o.close();
            return false;
          },
          exit_doc.c_str());
}

// A read-only property of the wrapped C++ object: `get` is a member function
// pointer of Owner::Core, called under the owner's lock.
template <class Owner, class Get>
auto open_getter(Get get) {
  return [get](Owner& o) { return o.with_open([get](auto& c) { return std::invoke(get, c); }); };
}

}  // namespace shmbus::python
