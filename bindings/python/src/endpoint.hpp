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
  Endpoint(Holder c, std::string topic_name, Policy p, const char* type_name, const char* noun)
      : core(std::move(c)),
        topic(std::move(topic_name)),
        policy(p),
        type_name_(type_name),
        noun_(noun) {}

  pid_t pid = current_pid();  // the process that made it (see ForkSafePtr)
  std::mutex mu;
  Holder core;  // empty once closed and nothing holds a slot
  std::string topic;
  Policy policy;
  bool closing = false;    // close() was called: no new calls
  std::uint32_t held = 0;  // samples or loans that still hold a slot (under mu)

  // The prologue of every call: refuses a fork() child (before locking: see
  // ForkSafePtr), then takes the mutex (GIL held).
  [[nodiscard]] GilSafeLock lock() {
    check_process(pid, type_name_);
    return GilSafeLock(mu);
  }
  // The C++ object, or null once closed (mu held).
  [[nodiscard]] Core* open_locked() noexcept { return closing || !core ? nullptr : &*core; }
  // The C++ object, or raises shmbus.Closed (GIL and mu held).
  Core& open_or_raise() {
    if (Core* c = open_locked()) return *c;
    raise_closed();
  }
  [[noreturn]] void raise_closed() const {
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

// A read-only property of the wrapped C++ object: `get` is a member function
// pointer of Owner::Core, called under the owner's lock.
template <class Owner, class Get>
auto open_getter(Get get) {
  return [get](Owner& o) { return o.with_open([get](auto& c) { return std::invoke(get, c); }); };
}

}  // namespace shmbus::python
