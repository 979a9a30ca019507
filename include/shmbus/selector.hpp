// Selector: waits on subscribers of several topics at once, with one sleep
// (not a thread per subscriber), like iceoryx's WaitSet. docs/event-loops.md.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <vector>

#include "shmbus/error.hpp"
#include "shmbus/options.hpp"

namespace shmbus {

class Subscriber;
namespace detail {
struct EventCount;
class Watch;
}  // namespace detail

struct SelectorOptions {
  // As SubscriberOptions::wait and ::spin: how wait() waits.
  WaitStrategy wait = WaitStrategy::SpinFutex;
  std::chrono::nanoseconds spin = kDefaultSpin;
  Interrupt interrupt{};  // see Interrupt
};

class Selector {
 public:
  // The most subscribers of different topics one selector waits on.
  static constexpr std::size_t kMaxTopics = 127;

  explicit Selector(SelectorOptions options = {});
  ~Selector();
  Selector(const Selector&) = delete;
  Selector& operator=(const Selector&) = delete;

  // Adds a subscriber (used from the selector's thread, like the selector).
  // A subscriber destroyed first leaves the selector by itself.
  // Throws Error(InvalidArgument) when it is there already, and
  // Error(ResourceExhausted) past kMaxTopics topics.
  void add(Subscriber& s);
  // Removes it; false when it was not there.
  bool remove(Subscriber& s) noexcept;
  [[nodiscard]] std::size_t size() const noexcept { return subs_.size(); }

  // Waits up to `timeout` until one of the subscribers is ready()
  // (a receive may find a message, or its topic was deleted), and fills
  // `ready` with those that are, in the order they were added. Ok;
  // Timeout (ready empty); Interrupted (options.interrupt said stop).
  [[nodiscard]] Status wait(std::vector<Subscriber*>& ready,
                            std::chrono::nanoseconds timeout) noexcept;
  // The same, returning the ready subscribers (empty on timeout).
  [[nodiscard]] std::vector<Subscriber*> wait(std::chrono::nanoseconds timeout);

  // A descriptor for epoll and the like, readable while a subscriber may be
  // ready: made on the first call, owned by the selector. Each wait() (call
  // wait(0) when it is readable) empties it, and it is armed again on the
  // subscribers that were not ready; it stays readable while some were.
  // Throws Error(ResourceExhausted) when no eventfd can be made.
  [[nodiscard]] int fd();

 private:
  friend class Subscriber;
  void forget(Subscriber& s) noexcept;  // the subscriber is going away
  void rebuild_events();
  void arm_idle();

  SelectorOptions options_;
  std::vector<Subscriber*> subs_;
  std::vector<detail::EventCount*> events_;  // distinct, one per topic
  std::unique_ptr<detail::Watch> fd_;        // fd(): the descriptor
  // Per topic, the watch that signals fd_ (events_'s order).
  std::vector<std::unique_ptr<detail::Watch>> watches_;
};

}  // namespace shmbus
