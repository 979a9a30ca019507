// Push consumers: Subscriber::listen calls a handler for each message on a
// pool of worker threads (RocketMQ's push consumer, Kafka Streams' tasks).
// docs/event-loops.md.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>

namespace shmbus {

class Sample;

struct ListenOptions {
  // Worker threads calling the handler (1 to 64).
  std::uint32_t threads = 1;
  // All messages of one key (or, unkeyed, of one partition) go to the same
  // worker, in order. Otherwise any free worker takes the next message.
  bool ordered_by_key = false;
  // Samples received but not yet handled, at most (0: 4 per thread, at most
  // 60). The bound holds the ring back, not memory: a slow handler slows the
  // group down as a slow receive loop would.
  std::uint32_t max_in_flight = 0;
};

namespace detail {
class Dispatcher;
}

// Running handlers: destroying it (or stop()) stops receiving, lets the
// handlers already running return, and joins every thread. What was received
// but not yet handled is handled first under at-most-once (nothing is lost),
// and given back under at-least-once (it comes again, with its delivery count).
// A handler's return releases the sample (under at-least-once: acknowledges
// it). A handler that throws: under at-least-once the sample is nacked
// (Sample::nack: delivered again, or dead-lettered after max_deliveries);
// under at-most-once it is released and counted in failed().
class Listener {
 public:
  Listener() noexcept;
  Listener(Listener&&) noexcept;
  Listener& operator=(Listener&&) noexcept;
  ~Listener();

  // Stops as the destructor does. Idempotent.
  void stop() noexcept;
  [[nodiscard]] bool running() const noexcept;
  // Handlers that returned, and that threw.
  [[nodiscard]] std::uint64_t handled() const noexcept;
  [[nodiscard]] std::uint64_t failed() const noexcept;

 private:
  friend class Subscriber;
  explicit Listener(std::unique_ptr<detail::Dispatcher> d) noexcept;
  std::unique_ptr<detail::Dispatcher> d_;
};

}  // namespace shmbus
