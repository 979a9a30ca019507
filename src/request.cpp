// Request-reply on top of topics and properties (issue 16,
// docs/request-reply.md): Bus::request publishes with reply_to and
// correlation_id and waits on a private reply topic; Sample::reply publishes
// there without waiting.
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdio>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include "connection.hpp"
#include "os.hpp"
#include "shmbus/bus.hpp"
#include "shmbus/subscriber.hpp"

namespace shmbus {

namespace {

std::string hex(std::uint64_t v) {
  char b[17];
  std::snprintf(b, sizeof b, "%016llx", static_cast<unsigned long long>(v));
  return b;
}

std::string seconds_of(std::chrono::nanoseconds d) {
  char b[32];
  std::snprintf(b, sizeof b, "%g", std::chrono::duration<double>(d).count());
  return b;
}

}  // namespace

namespace detail {

// Publishers by topic name, for the requests of a Bus and the replies of a
// subscriber: at most 64 (then all are let go, freeing their seats).
class PublisherCache {
 public:
  // Throws what Bus::publisher throws (no such topic, no right to publish).
  Publisher& get(Bus& bus, std::string_view topic) {
    auto it = map_.find(topic);
    if (it == map_.end()) {
      if (map_.size() >= 64) map_.clear();
      it = map_.emplace(std::string(topic), bus.publisher(topic)).first;
    }
    return it->second;
  }
  void forget(std::string_view topic) {
    if (auto it = map_.find(topic); it != map_.end()) map_.erase(it);
  }
  void clear() noexcept { map_.clear(); }

 private:
  std::map<std::string, Publisher, std::less<>> map_;
};

// The requester side of one Bus (and its copies): its reply topic, a
// private subscriber of it, and a publisher per request topic.
class Requester {
 public:
  Requester(Bus bus, std::atomic<std::uint64_t>& stale) : bus_(std::move(bus)), stale_(&stale) {
    // Random suffix and correlation ids: a client that may publish requests
    // cannot guess another requester's next id and have a responder answer
    // it with a reply of its making.
    std::random_device rd;
    rng_.seed((std::uint64_t{rd()} << 32) ^ rd());
    name_ = std::string(kReplyTopicPrefix) + std::to_string(::getpid()) + "." + hex(rng_());
    // A responder never waits for a requester (policy reject: a full reply
    // topic drops); shmbusd gives every reply topic this geometry.
    Topic t = bus_.create_topic(name_, reply_topic_options());
    replies_ = t.subscriber({.group = {}, .start = StartFrom::Latest});
  }
  ~Requester() {
    publishers_.clear();
    replies_.reset();
    try {
      bus_.delete_topic(name_);
    } catch (...) {
      // The daemon is gone: it removes the topic when it finds us gone.
    }
  }
  Requester(const Requester&) = delete;
  Requester& operator=(const Requester&) = delete;

  std::vector<std::byte> request(std::string_view topic, const Route& route,
                                 std::span<const std::byte> data,
                                 std::chrono::nanoseconds timeout) {
    const auto until = std::chrono::steady_clock::now() + timeout;
    const auto left = [&] {
      return std::max(std::chrono::nanoseconds(0),
                      std::chrono::duration_cast<std::chrono::nanoseconds>(
                          until - std::chrono::steady_clock::now()));
    };
    Publisher& pub = publishers_.get(bus_, topic);
    const std::string id = hex(rng_()) + hex(rng_());
    std::vector<Property> props(route.properties.begin(), route.properties.end());
    props.push_back({"reply_to", name_});
    props.push_back({"correlation_id", id});
    Route r = route;
    r.properties = props;
    const std::string where = "request to topic '" + std::string(topic) + "'";
    if (const Status st = pub.publish(r, data, left()); st != Status::Ok)
      throw Error(st == Status::Timeout        ? ErrorCode::Timeout
                  : st == Status::TopicDeleted ? ErrorCode::NotFound
                                               : ErrorCode::InvalidArgument,
                  where + " not published: " + to_string(st) +
                      (st == Status::Timeout ? " (the topic stayed full)"
                       : st == Status::TooLarge
                           ? " (with its reply_to and correlation_id properties, about 90 "
                             "bytes, it does not fit the topic's slot of " +
                                 std::to_string(pub.slot_size()) + " bytes)"
                           : ""));
    for (;;) {
      Sample s;
      const Status st = replies_->receive(s, left());
      if (st == Status::Timeout || st == Status::WouldBlock)
        throw Error(ErrorCode::Timeout, where + ": no reply within " + seconds_of(timeout) +
                                            " s (is a responder subscribed?)");
      if (st != Status::Ok)
        throw Error(ErrorCode::SystemError, where + ": the reply topic failed: " + to_string(st));
      if (s.properties().get("correlation_id") == id) {
        const auto d = s.data();
        return {d.begin(), d.end()};
      }
      stale_->fetch_add(1, std::memory_order_relaxed);  // a counter
    }
  }

 private:
  Bus bus_;
  std::string name_;
  std::unique_ptr<Subscriber> replies_;
  PublisherCache publishers_;
  std::mt19937_64 rng_;
  std::atomic<std::uint64_t>* stale_;  // the slot's
};

struct RequesterSlot {
  std::mutex mu;  // one request at a time (see Bus::request)
  std::unique_ptr<Requester> requester;
  std::atomic<std::uint64_t> stale{0};  // read without mu (Bus::stale_replies)
};

std::shared_ptr<RequesterSlot> make_requester_slot() {
  return std::make_shared<RequesterSlot>();
}

// A responder's publishers to reply topics.
class Replier {
 public:
  explicit Replier(std::shared_ptr<Connection> c) : bus_(std::move(c)) {}

  Status reply(std::string_view to, std::string_view id, std::span<const std::byte> data) {
    if (data.size() > Bus::kMaxReplySize) return Status::TooLarge;
    Publisher* pub = nullptr;
    try {
      pub = &publishers_.get(bus_, to);
    } catch (const Error&) {
      // No such topic (the requester closed, or died and shmbusd removed
      // it), or no right to publish there.
      return dropped(Status::TopicDeleted);
    }
    const std::array<Property, 1> props{{{"correlation_id", id}}};
    Route r;
    r.properties = props;
    const Status st = pub->try_publish(r, data);
    if (st == Status::Ok) return st;
    if (st == Status::TopicDeleted) publishers_.forget(to);
    return dropped(st);
  }
  std::atomic<std::uint64_t> dropped_count{0};

 private:
  Status dropped(Status st) {
    dropped_count.fetch_add(1, std::memory_order_relaxed);  // a counter
    return st;
  }
  Bus bus_;
  PublisherCache publishers_;
};

}  // namespace detail

std::vector<std::byte> Bus::request(std::string_view topic, std::span<const std::byte> data,
                                    std::chrono::nanoseconds timeout) {
  return request(topic, Route{}, data, timeout);
}

std::vector<std::byte> Bus::request(std::string_view topic, const Route& route,
                                    std::span<const std::byte> data,
                                    std::chrono::nanoseconds timeout) {
  validate_name("topic", topic);
  std::lock_guard lock(requester_->mu);
  if (!requester_->requester)
    requester_->requester = std::make_unique<detail::Requester>(Bus(conn_), requester_->stale);
  return requester_->requester->request(topic, route, data, timeout);
}

std::uint64_t Bus::stale_replies() const noexcept {
  return requester_->stale.load(std::memory_order_relaxed);  // a counter
}

Status Sample::reply(std::span<const std::byte> data) const {
  if (slot_ == nullptr || sub_ == nullptr) return Status::Invalid;
  return sub_->reply(*this, data);
}

Status Subscriber::reply(const Sample& s, std::span<const std::byte> data) {
  const Properties p = s.properties();
  const auto to = p.get("reply_to");
  const auto id = p.get("correlation_id");
  // Only a reply topic: a request cannot make a responder publish elsewhere.
  if (!to || !id || detail::reply_topic_pid(*to) == 0) return Status::NotARequest;
  if (!bus_) return Status::Invalid;
  // A Listener's handlers reply from several worker threads at once.
  std::lock_guard lk(reply_mu_);
  if (!replier_) replier_ = std::make_shared<detail::Replier>(bus_);
  return replier_->reply(*to, *id, data);
}

std::uint64_t Subscriber::replies_dropped() const noexcept {
  return replier_ ? replier_->dropped_count.load(std::memory_order_relaxed) : 0;
}

}  // namespace shmbus
