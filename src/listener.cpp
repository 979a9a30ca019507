// Listener: Subscriber::listen's push consumer (docs/event-loops.md).
//
// One dispatcher thread owns the subscriber: it receives, hands each sample
// to a worker through a moodycamel BlockingConcurrentQueue, and releases (or
// nacks) the samples the workers hand back through a ConcurrentQueue. A
// Subscriber is single-threaded, so no worker ever releases a sample itself.
// At most max_in_flight samples are out at once: they are held in the ring,
// so a slow handler holds producers back (backpressure), not memory.
#include "shmbus/listener.hpp"

#include <concurrentqueue/blockingconcurrentqueue.h>
#include <concurrentqueue/concurrentqueue.h>

#include <algorithm>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "shmbus/detail/wait.hpp"
#include "shmbus/subscriber.hpp"

namespace shmbus {
namespace detail {

class Dispatcher {
 public:
  Dispatcher(Subscriber& sub, std::function<void(const Sample&)> handler, const ListenOptions& o)
      : sub_(sub),
        handler_(std::move(handler)),
        threads_(o.threads),
        max_(o.max_in_flight != 0 ? o.max_in_flight : std::min(4 * o.threads, kMaxInFlight)),
        by_key_(o.ordered_by_key),
        at_least_once_(sub.delivery() == Delivery::AtLeastOnce) {
    if (threads_ == 0 || threads_ > kMaxThreads)
      throw Error(ErrorCode::InvalidArgument, "ListenOptions::threads must be 1 to " +
                                                  std::to_string(kMaxThreads) + ", not " +
                                                  std::to_string(threads_));
    if (max_ > kMaxInFlight)
      throw Error(ErrorCode::InvalidArgument,
                  "ListenOptions::max_in_flight must be at most " + std::to_string(kMaxInFlight) +
                      " (0: 4 per thread), not " + std::to_string(max_));
    if (!handler_) throw Error(ErrorCode::InvalidArgument, "Subscriber::listen needs a handler");
    const std::uint32_t queues = by_key_ ? threads_ : 1;
    for (std::uint32_t q = 0; q < queues; ++q)
      queues_.push_back(std::make_unique<moodycamel::BlockingConcurrentQueue<Sample>>());
    try {
      for (std::uint32_t w = 0; w < threads_; ++w)
        workers_.emplace_back([this, w] { work(by_key_ ? w : 0); });
      dispatcher_ = std::thread([this] { dispatch(); });
    } catch (...) {
      stop();
      throw;
    }
  }
  ~Dispatcher() { stop(); }
  Dispatcher(const Dispatcher&) = delete;
  Dispatcher& operator=(const Dispatcher&) = delete;

  // Called by the thread that owns the Listener (and so the subscriber).
  void stop() noexcept {
    if (stopped_) return;
    stopped_ = true;
    // Release: the dispatcher's acquire load sees it; notify wakes it if asleep.
    stopping_.store(true, std::memory_order_release);
    notify(done_event_);
    if (dispatcher_.joinable()) dispatcher_.join();
    // The dispatcher has stopped receiving: one empty sample per worker ends it
    // (after what its queue held before, or, shared, whichever it meets first).
    for (std::uint32_t w = 0; w < workers_.size(); ++w)
      queues_[by_key_ ? w : 0]->enqueue(Sample());
    for (std::thread& t : workers_)
      t.join();
    // Alone now: what is still queued is handled here (at most once) or given
    // back (at least once), and every returned sample settled.
    for (auto& q : queues_) {
      Sample s;
      while (q->try_dequeue(s))
        if (s) finish(s);
    }
    Returned r;
    while (returned_.try_dequeue(r))
      settle(r);
  }

  [[nodiscard]] bool running() const noexcept {
    return !stopping_.load(std::memory_order_relaxed);  // relaxed: a report
  }
  std::atomic<std::uint64_t> handled{0};  // relaxed: counters
  std::atomic<std::uint64_t> failed{0};

 private:
  static constexpr std::uint32_t kMaxThreads = 64;
  static constexpr std::uint32_t kMaxInFlight = Subscriber::kMaxHeld - 4;
  enum class Outcome : std::uint8_t { Handled, Threw, Unhandled };
  struct Returned {
    Sample sample;
    Outcome outcome = Outcome::Handled;
  };

  // Calls the handler (or, at least once and stopping, does not) and hands
  // the sample back to the dispatcher.
  void finish(Sample& s) noexcept {
    Outcome o = Outcome::Handled;
    // Acquire: pairs with stop()'s release (only a hint of when to stop).
    if (at_least_once_ && stopping_.load(std::memory_order_acquire)) {
      o = Outcome::Unhandled;
    } else {
      try {
        handler_(s);
        handled.fetch_add(1, std::memory_order_relaxed);
      } catch (...) {
        failed.fetch_add(1, std::memory_order_relaxed);
        o = Outcome::Threw;
      }
    }
    Returned r{std::move(s), o};
    // enqueue returns false when it cannot allocate: try again (the sample
    // must reach the dispatcher, the only thread that may release it).
    while (!returned_.enqueue(std::move(r)))
      std::this_thread::yield();
    notify(done_event_);  // the dispatcher may be asleep waiting for room
  }

  void work(std::uint32_t q) noexcept {
    for (;;) {
      Sample s;
      queues_[q]->wait_dequeue(s);
      if (!s) return;  // stop()'s end marker
      finish(s);
    }
  }

  // On the dispatcher (or, stopped, the owner's thread): the subscriber's side.
  void settle(Returned& r) noexcept {
    --in_flight_;
    switch (r.outcome) {
      case Outcome::Handled:
        r.sample.release();
        return;
      case Outcome::Unhandled:
        sub_.give_back(r.sample);
        return;
      case Outcome::Threw:
        if (at_least_once_ && r.sample.nack() != Status::Ok)
          sub_.give_back(r.sample, 1);  // the dead letter failed: tried again, never lost
        r.sample.release();
        return;
    }
  }

  void route(Sample& s) {
    ++in_flight_;
    std::size_t q = 0;
    if (by_key_) {
      const auto k = s.key();
      q = (k.empty() ? s.partition()
                     : std::hash<std::string_view>{}(
                           std::string_view(reinterpret_cast<const char*>(k.data()), k.size()))) %
          threads_;
    }
    if (!queues_[q]->enqueue(std::move(s))) {
      --in_flight_;  // no memory for the queue: the sample goes back to the group
      if (at_least_once_)
        sub_.give_back(s);
      else
        finish(s);  // handled here rather than lost
    }
  }

  bool settle_returned() noexcept {
    bool any = false;
    Returned r;
    while (returned_.try_dequeue(r)) {
      settle(r);
      any = true;
    }
    if (any) no_room_ = false;
    return any;
  }

  // Takes what there is room for; true when it took anything.
  bool take() {
    bool any = false;
    Sample s;
    while (in_flight_ < max_) {
      const Status st = sub_.take_one(s);
      if (st == Status::Ok) {
        route(s);
        any = true;
      } else if (st == Status::TooManyHeld) {
        no_room_ = true;  // the caller holds samples too: wait for a return
        break;
      } else if (st == Status::TopicDeleted) {
        ended_ = true;  // and drained: nothing more will come
        break;
      } else if (st != Status::Corrupt) {
        break;  // WouldBlock
      }
    }
    return any;
  }

  void dispatch() noexcept {
    try {
      EventCount* const events[2] = {&sub_.data_event(), &done_event_};
      for (;;) {
        const bool settled = settle_returned();
        // Acquire: pairs with stop()'s release.
        if (stopping_.load(std::memory_order_acquire)) return;
        if ((!ended_ && take()) || settled) continue;
        const Waited w = wait_many(events, sub_.options_.wait, std::chrono::milliseconds(50),
                                   sub_.options_.spin, kNoInterrupt, [&] {
                                     // Relaxed: hints, each looked at again after the wait.
                                     return stopping_.load(std::memory_order_relaxed) ||
                                            returned_.size_approx() != 0 ||
                                            (in_flight_ < max_ && sub_.may_have_data());
                                   });
        if (w == Waited::TimedOut && in_flight_ < max_ && !no_room_ && !ended_) {
          // Idle for a while: a receive's own upkeep (a stuck position, dead
          // peers, a partition hand-over), done by a receive that waits 0.
          Sample s;
          if (sub_.receive(s, std::chrono::nanoseconds(0)) == Status::Ok) route(s);
        }
      }
    } catch (...) {
      // Out of memory in a queue: stop receiving; stop() settles what is out.
      stopping_.store(true, std::memory_order_release);
    }
  }

  Subscriber& sub_;
  std::function<void(const Sample&)> handler_;
  std::uint32_t threads_;
  std::uint32_t max_;
  bool by_key_;
  bool at_least_once_;
  std::uint32_t in_flight_ = 0;  // the dispatcher's (then the owner's)
  bool no_room_ = false;         // the subscriber's hold table is full: wait for a return
  bool ended_ = false;           // the topic was deleted and drained
  bool stopped_ = false;         // the owner's
  std::atomic<bool> stopping_{false};
  EventCount done_event_{};  // workers bump it after returning a sample
  std::vector<std::unique_ptr<moodycamel::BlockingConcurrentQueue<Sample>>> queues_;
  moodycamel::ConcurrentQueue<Returned> returned_;
  std::vector<std::thread> workers_;
  std::thread dispatcher_;
};

}  // namespace detail

Listener::Listener() noexcept = default;
Listener::Listener(std::unique_ptr<detail::Dispatcher> d) noexcept : d_(std::move(d)) {}
Listener::Listener(Listener&&) noexcept = default;
Listener& Listener::operator=(Listener&& o) noexcept {
  if (this != &o) {
    stop();
    d_ = std::move(o.d_);
  }
  return *this;
}
Listener::~Listener() {
  stop();
}
void Listener::stop() noexcept {
  if (d_) d_->stop();
}
bool Listener::running() const noexcept {
  return d_ && d_->running();
}
std::uint64_t Listener::handled() const noexcept {
  return d_ ? d_->handled.load(std::memory_order_relaxed) : 0;
}
std::uint64_t Listener::failed() const noexcept {
  return d_ ? d_->failed.load(std::memory_order_relaxed) : 0;
}

Listener Subscriber::listen(std::function<void(const Sample&)> handler,
                            const ListenOptions& options) {
  return Listener(std::make_unique<detail::Dispatcher>(*this, std::move(handler), options));
}

Listener Subscriber::listen(std::function<void(const Sample&)> handler) {
  return listen(std::move(handler), ListenOptions{});
}

void Subscriber::give_back(Sample& s, std::uint32_t more) noexcept {
  if (!s) return;
  if (acks_ == nullptr) {
    s.release();
    return;
  }
  try {
    // Next to be delivered, still held (its record and hazard stay), as nack
    // but with the same delivery count: it was never handed to anyone.
    pending_.insert(pending_.begin(),
                    Pending{s.seq_, s.lane_->index, s.hold_, s.deliveries_ + more});
    s.slot_ = nullptr;
    s.sub_ = nullptr;
  } catch (...) {
    (void)s.nack();  // no memory for the list: nack's own path
  }
}

}  // namespace shmbus
