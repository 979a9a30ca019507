// Publisher and Loan: the producer side of a topic, thin handles over the ring
// protocol in detail/ring.hpp. The hot path is inline:
// an uncontended publish checks room and a free slot against its cached gate
// (loading the slot's stamp only when the gate does not prove it free), claims
// (one CAS, or an xchg for a single producer), loads the join epoch, copies the
// payload, reads the TSC for the timestamp, release-stores the slot's stamp,
// and does a fence plus one load to see whether a consumer sleeps. No syscall,
// no heap.
#pragma once

#include <bit>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <string_view>
#include <utility>

#include "shmbus/detail/clock.hpp"
#include "shmbus/detail/ring.hpp"
#include "shmbus/detail/wait.hpp"
#include "shmbus/error.hpp"
#include "shmbus/options.hpp"
#include "shmbus/properties.hpp"

namespace shmbus {

namespace detail {
class Region;  // src/region.hpp: the mapping, kept out of public headers
class Mover;   // src/schedule.hpp: shmbusd's mover of due messages
}  // namespace detail

class Publisher;
class Topic;

namespace detail {
// One partition (or priority lane) as a publisher sees it: its ring, and this
// publisher's side of the protocol there (its seat in that partition).
struct ProducerLane {
  Ring ring;
  ProducerState state;
};
}  // namespace detail

// Where a message goes on a topic of several partitions or priority lanes.
// A key is stored with the message (Sample::key) and, unless a partition is
// given, picks it: partition_for_key(key, partitions), Kafka's default. On a
// priority topic the priority picks the lane (0, the default, is the
// lowest). With neither, a partitioned topic takes the publisher's sticky
// partition: runs of kStickyRun messages, one partition after the other.
//
// Properties (name/value pairs, properties.hpp) are stored after the key and
// read with Sample::properties(); the one named "tag" is the message's tag.
struct Route {
  static constexpr std::uint32_t kNone = ~std::uint32_t{0};
  std::span<const std::byte> key{};
  std::uint32_t partition = kNone;  // explicit partition (wins over the key's)
  std::uint32_t priority = kNone;   // lane of a priority topic
  std::span<const Property> properties{};

  [[nodiscard]] static Route with_key(std::span<const std::byte> k) noexcept {
    Route r;
    r.key = k;
    return r;
  }
  [[nodiscard]] static Route with_key(std::string_view k) noexcept {
    return with_key(std::as_bytes(std::span(k.data(), k.size())));
  }
  [[nodiscard]] static Route to_partition(std::uint32_t p) noexcept {
    Route r;
    r.partition = p;
    return r;
  }
  [[nodiscard]] static Route with_priority(std::uint32_t p) noexcept {
    Route r;
    r.priority = p;
    return r;
  }
  [[nodiscard]] static Route with_properties(std::span<const Property> p) noexcept {
    Route r;
    r.properties = p;
    return r;
  }
};

namespace detail {
// The meta word (layout.hpp) and tag hash of a route's key and properties
// (Ok), or why they are refused: TooLarge for a key over kMaxKey,
// InvalidProperties for properties over their limits.
[[nodiscard]] Status route_meta(const Route& route, std::uint32_t& meta,
                                std::uint32_t& tag) noexcept;
// Writes the route's key, then its encoded properties, at `at`.
void write_meta(std::byte* at, const Route& route) noexcept;
}  // namespace detail

// A slot claimed for writing in place. Write into data(), then publish().
// Dropping a loan without publishing it publishes nothing: its sequence is
// marked abandoned and consumers skip it. Only the thread that took the loan
// may use it; it must not outlive its Publisher.
class Loan {
 public:
  Loan() = default;
  Loan(Loan&& o) noexcept { *this = std::move(o); }
  Loan& operator=(Loan&& o) noexcept {
    if (this != &o) {
      abandon();
      pub_ = o.pub_;
      lane_ = o.lane_;
      slot_ = o.slot_;
      seq_ = o.seq_;
      size_ = o.size_;
      meta_ = o.meta_;
      tag_ = o.tag_;
      partition_ = o.partition_;
      status_ = o.status_;
      claim_ = o.claim_;
      entry_ = o.entry_;
      due_ns_ = o.due_ns_;
      o.pub_ = nullptr;
      o.slot_ = nullptr;
    }
    return *this;
  }
  Loan(const Loan&) = delete;
  Loan& operator=(const Loan&) = delete;
  ~Loan() { abandon(); }

  // True when the loan holds a slot; otherwise status() says why not.
  [[nodiscard]] explicit operator bool() const noexcept { return slot_ != nullptr; }
  [[nodiscard]] Status status() const noexcept { return status_; }
  // The writable payload, `size` bytes as requested (empty if no slot is held).
  [[nodiscard]] std::span<std::byte> data() const noexcept {
    return slot_ ? std::span<std::byte>(detail::payload(*slot_, meta_), size_)
                 : std::span<std::byte>();
  }
  // The offset the message will have; 0 for a delayed loan (loan_at), whose
  // offset is given when it comes due.
  [[nodiscard]] std::uint64_t sequence() const noexcept { return seq_; }
  // The partition (or priority lane) the loan's slot is in.
  [[nodiscard]] std::uint32_t partition() const noexcept { return partition_; }
  // Publishes the first `size` bytes (default: the size loaned; at most that).
  [[nodiscard]] Status publish() noexcept { return publish(size_); }
  [[nodiscard]] Status publish(std::size_t size) noexcept;
  // Gives the slot up; consumers skip its sequence.
  void abandon() noexcept;

 private:
  friend class Publisher;
  Publisher* pub_ = nullptr;
  detail::ProducerLane* lane_ = nullptr;
  detail::SlotHeader* slot_ = nullptr;
  std::uint64_t seq_ = 0;
  std::uint32_t size_ = 0;
  std::uint32_t meta_ = 0;  // the key's and properties' bytes (layout.hpp)
  std::uint32_t tag_ = 0;   // the tag's hash (0: none)
  std::uint32_t partition_ = 0;
  std::uint32_t claim_ = 0;  // index of this claim in the seat's in_flight table
  // A delayed loan (Publisher::loan_at): the schedule entry whose message
  // slot_ points at, and its due time; kNoEntry for a loan of a ring slot.
  static constexpr std::uint32_t kNoEntry = ~std::uint32_t{0};
  std::uint32_t entry_ = kNoEntry;
  std::uint64_t due_ns_ = 0;
  Status status_ = Status::Invalid;
};

class Publisher {
 public:
  // Unkeyed messages of a partitioned topic go to one partition for this many
  // messages, then to the next (Kafka's sticky partitioner, in runs).
  static constexpr std::uint32_t kStickyRun = 64;

  Publisher(Publisher&&) noexcept;
  Publisher& operator=(Publisher&&) noexcept;
  Publisher(const Publisher&) = delete;
  Publisher& operator=(const Publisher&) = delete;
  ~Publisher();

  // A file topic: returns once everything published to the topic before the
  // call (by this publisher and every other) is on disk, msync; nothing to
  // do for a memory topic. Not on the hot path: throws Error(SystemError).
  void flush();

  // Copies `data` into the next slot and publishes it. Under Policy::Block waits
  // for room up to the publisher's timeout (Status::Timeout: not accepted).
  // Status::Interrupted: the options' interrupt ended the wait, nothing published.
  [[nodiscard]] Status publish(std::span<const std::byte> data) noexcept {
    return publish_impl(unrouted(), data, Route{}, {true, options_.timeout});
  }
  // The same, waiting up to `timeout` instead of the publisher's timeout.
  [[nodiscard]] Status publish(std::span<const std::byte> data,
                               std::chrono::nanoseconds timeout) noexcept {
    return publish_impl(unrouted(), data, Route{}, {true, timeout});
  }
  // Never waits: Status::WouldBlock when the ring is full (Block and Reject).
  [[nodiscard]] Status try_publish(std::span<const std::byte> data) noexcept {
    return publish_impl(unrouted(), data, Route{}, {false, options_.timeout});
  }
  // A keyed message: stored with its key, in partition_for_key(key, partitions).
  // The key, properties and payload together must fit the slot: their
  // bytes, the key's and properties' rounded up to 8, at most slot_size
  // (else TooLarge), and a key is at most kMaxKey bytes.
  [[nodiscard]] Status publish(std::span<const std::byte> key,
                               std::span<const std::byte> data) noexcept {
    return publish(Route::with_key(key), data);
  }
  [[nodiscard]] Status publish(std::string_view key, std::span<const std::byte> data) noexcept {
    return publish(Route::with_key(key), data);
  }
  // Routed: a key, an explicit partition, a priority (see Route).
  // Status::NoSuchPartition for a partition or priority the topic lacks.
  [[nodiscard]] Status publish(const Route& route, std::span<const std::byte> data) noexcept {
    return publish(route, data, options_.timeout);
  }
  [[nodiscard]] Status publish(const Route& route, std::span<const std::byte> data,
                               std::chrono::nanoseconds timeout) noexcept {
    detail::ProducerLane* lane = nullptr;
    if (const Status st = resolve(route, lane); st != Status::Ok) return st;
    return publish_impl(*lane, data, route, {true, timeout});
  }
  [[nodiscard]] Status try_publish(const Route& route, std::span<const std::byte> data) noexcept {
    detail::ProducerLane* lane = nullptr;
    if (const Status st = resolve(route, lane); st != Status::Ok) return st;
    return publish_impl(*lane, data, route, {false, options_.timeout});
  }
  // Claims a slot for `size` bytes written in place. Waits for room like publish.
  [[nodiscard]] Loan loan(std::size_t size) noexcept {
    return loan_impl(unrouted(), size, Route{}, {true, options_.timeout});
  }
  [[nodiscard]] Loan loan(std::size_t size, std::chrono::nanoseconds timeout) noexcept {
    return loan_impl(unrouted(), size, Route{}, {true, timeout});
  }
  [[nodiscard]] Loan try_loan(std::size_t size) noexcept {
    return loan_impl(unrouted(), size, Route{}, {false, options_.timeout});
  }
  // A routed loan: the key (if any) is written into the slot at once.
  [[nodiscard]] Loan loan(const Route& route, std::size_t size) noexcept {
    return loan(route, size, options_.timeout);
  }
  [[nodiscard]] Loan loan(const Route& route, std::size_t size,
                          std::chrono::nanoseconds timeout) noexcept {
    return routed_loan(route, size, {true, timeout});
  }
  [[nodiscard]] Loan try_loan(const Route& route, std::size_t size) noexcept {
    return routed_loan(route, size, {false, options_.timeout});
  }

  // ---- delayed messages (docs/delayed.md) ----
  // Schedules `data` for `when` (wall-clock time, as RocketMQ's delivery
  // time): it is invisible until due, then shmbusd appends it to its
  // partition as a fresh message (its offset given then), keeping this
  // publish's timestamp, producer id, key and properties; Sample::deliver_at
  // says when it was due. A time in the past delivers at once. The route
  // (key, partition, priority) is resolved now. A full schedule answers like
  // a full ring: Block waits up to the timeout (Timeout), Reject and
  // Overwrite refuse (WouldBlock; nothing scheduled is ever dropped).
  // NoSchedule: the topic was created with delay_slots 0. The message and
  // its due time (8 bytes) must fit the slot (TooLarge).
  using WallClock = std::chrono::system_clock;
  [[nodiscard]] Status publish_at(WallClock::time_point when,
                                  std::span<const std::byte> data) noexcept {
    return publish_at(Route{}, when, data, options_.timeout);
  }
  [[nodiscard]] Status publish_at(const Route& route, WallClock::time_point when,
                                  std::span<const std::byte> data) noexcept {
    return publish_at(route, when, data, options_.timeout);
  }
  [[nodiscard]] Status publish_at(const Route& route, WallClock::time_point when,
                                  std::span<const std::byte> data,
                                  std::chrono::nanoseconds timeout) noexcept {
    return schedule_impl(route, when, data, {true, timeout});
  }
  [[nodiscard]] Status try_publish_at(const Route& route, WallClock::time_point when,
                                      std::span<const std::byte> data) noexcept {
    return schedule_impl(route, when, data, {false, options_.timeout});
  }
  // Due `delay` from now (a negative or zero delay: at once).
  [[nodiscard]] Status publish_after(std::chrono::nanoseconds delay,
                                     std::span<const std::byte> data) noexcept {
    return publish_at(Route{}, due_after(delay), data, options_.timeout);
  }
  [[nodiscard]] Status publish_after(const Route& route, std::chrono::nanoseconds delay,
                                     std::span<const std::byte> data) noexcept {
    return publish_at(route, due_after(delay), data, options_.timeout);
  }
  // A delayed loan: write into data(), then publish() schedules it (the
  // order among messages due at the same time is publish()'s). Dropped, it
  // schedules nothing.
  [[nodiscard]] Loan loan_at(WallClock::time_point when, std::size_t size) noexcept {
    return loan_at(Route{}, when, size);
  }
  [[nodiscard]] Loan loan_at(const Route& route, WallClock::time_point when,
                             std::size_t size) noexcept {
    return schedule_loan(route, when, size, {true, options_.timeout});
  }
  [[nodiscard]] Loan loan_after(std::chrono::nanoseconds delay, std::size_t size) noexcept {
    return loan_at(Route{}, due_after(delay), size);
  }
  [[nodiscard]] Loan loan_after(const Route& route, std::chrono::nanoseconds delay,
                                std::size_t size) noexcept {
    return loan_at(route, due_after(delay), size);
  }

  // The topic's slot size: the largest message, in bytes.
  [[nodiscard]] std::uint32_t slot_size() const noexcept { return head_.ring.slot_size; }
  // The topic's partitions (1 on a priority topic) and priority lanes (0: none).
  [[nodiscard]] std::uint32_t partitions() const noexcept { return lanes_ ? 1 : rings_; }
  [[nodiscard]] std::uint32_t priorities() const noexcept { return lanes_ ? rings_ : 0; }
  // This publisher's producer seat: Sample::producer_id() of what it publishes.
  [[nodiscard]] std::uint32_t id() const noexcept { return head_.state.seat_index; }
  [[nodiscard]] const PublisherOptions& options() const noexcept { return options_; }

 private:
  friend class Loan;
  friend class Topic;          // the only constructor's caller (Bus::publisher goes through it)
  friend class detail::Mover;  // shmbusd's mover appends due messages (src/schedule.cpp)

  Publisher(std::shared_ptr<detail::Region> region, const PublisherOptions& options);

  // How a call waits: for room only when `wait`, and up to `timeout` (each
  // of its two waits: for room, and for a group that joined under its claim).
  struct Patience {
    bool wait;
    std::chrono::nanoseconds timeout;
  };

  [[nodiscard]] detail::ProducerLane& lane(std::uint32_t p) noexcept {
    return p == 0 ? head_ : rest_[p - 1];
  }
  // Where an unrouted message goes: the only ring, lane 0 (the lowest
  // priority), or the sticky partition.
  [[nodiscard]] detail::ProducerLane& unrouted() noexcept {
    if (rings_ == 1 || lanes_) [[likely]]
      return head_;
    return sticky();
  }
  detail::ProducerLane& sticky() noexcept;
  // The lane a route names (Ok), or why there is none.
  Status resolve(const Route& route, detail::ProducerLane*& out) noexcept;
  Loan routed_loan(const Route& route, std::size_t size, Patience p) noexcept {
    detail::ProducerLane* l = nullptr;
    if (const Status st = resolve(route, l); st != Status::Ok) {
      Loan bad;
      bad.status_ = st;
      return bad;
    }
    return loan_impl(*l, size, route, p);
  }
  [[nodiscard]] std::uint32_t index_of(const detail::ProducerLane& l) const noexcept {
    return &l == &head_ ? 0 : static_cast<std::uint32_t>(&l - rest_.get()) + 1;
  }

  Status publish_impl(detail::ProducerLane& l, std::span<const std::byte> data, const Route& route,
                      Patience p) noexcept {
    std::uint32_t meta = 0, tag = 0;
    if (!route.key.empty() || !route.properties.empty()) [[unlikely]]
      if (const Status st = detail::route_meta(route, meta, tag); st != Status::Ok) return st;
    if (data.size() + detail::meta_span(meta) > l.ring.slot_size) [[unlikely]]
      return Status::TooLarge;
    // A free entry in the seat's in_flight table (loan_impl keeps one free).
    const auto index = static_cast<std::uint32_t>(std::countr_one(l.state.claims_used));
    std::uint64_t s = 0;
    if (Status st = claim(l, p, index, s); st != Status::Ok) [[unlikely]]
      return st;
    detail::SlotHeader& slot = l.ring.slot(s);
    if (!data.empty()) std::memcpy(detail::payload(slot, meta), data.data(), data.size());
    // The key and properties after the payload: they share the slot's first
    // line with the header, which commit() writes next, so that line (the one
    // a waiting consumer keeps reading for the stamp) is written in one burst
    // (measured: 1.47x -> 1.30x of a plain publish's time, bench/partitions.cpp).
    if (meta != 0) [[unlikely]]
      detail::write_meta(detail::payload(slot), route);
    detail::commit(l.ring, l.state, slot, s, static_cast<std::uint32_t>(data.size()), meta, tag,
                   index, clock_.now());
    return Status::Ok;
  }

  Loan loan_impl(detail::ProducerLane& ln, std::size_t size, const Route& route,
                 Patience p) noexcept {
    Loan l;
    std::uint32_t meta = 0, tag = 0;
    if (!route.key.empty() || !route.properties.empty()) [[unlikely]]
      if (const Status st = detail::route_meta(route, meta, tag); st != Status::Ok) {
        l.status_ = st;
        return l;
      }
    if (size + detail::meta_span(meta) > ln.ring.slot_size) [[unlikely]] {
      l.status_ = Status::TooLarge;
      return l;
    }
    // Loans take the lowest free entries and publish() returns its own at
    // once, so kMaxInFlight - 1 loans held fill exactly the entries below it:
    // one stays free for publish().
    const auto index = static_cast<std::uint32_t>(std::countr_one(ln.state.claims_used));
    if (index >= detail::kMaxInFlight - 1) [[unlikely]] {
      l.status_ = Status::TooManyHeld;
      return l;
    }
    l.status_ = claim(ln, p, index, l.seq_);
    if (l.status_ == Status::Ok) [[likely]] {
      l.pub_ = this;
      l.lane_ = &ln;
      l.slot_ = &ln.ring.slot(l.seq_);
      l.size_ = static_cast<std::uint32_t>(size);
      l.meta_ = meta;
      l.tag_ = tag;
      l.partition_ = index_of(ln);
      l.claim_ = index;
      if (meta != 0) detail::write_meta(detail::payload(*l.slot_), route);
    }
    return l;
  }

  // Claims the next sequence of lane `l` into in_flight entry `index` once its
  // slot may be written (detail/ring.hpp: try_claim, record_claim). Nothing is
  // claimed unless Ok is returned.
  Status claim(detail::ProducerLane& l, Patience p, std::uint32_t index,
               std::uint64_t& s) noexcept {
    if (const detail::Attempt a = detail::try_claim(l.ring, l.state, s);
        a != detail::Attempt::Claimed) [[unlikely]] {
      if (Status st = claim_contended(l, p, a, s); st != Status::Ok) return st;
    }
    std::uint64_t epoch = 0;
    if (!detail::record_claim(l.ring, l.state, index, s, epoch)) [[unlikely]]
      return after_join(l, p, index, s, epoch);
    return Status::Ok;
  }

  // The slow path of claim, after attempt `a` failed for `s`: waits for room,
  // retries after a lost race.
  Status claim_contended(detail::ProducerLane& l, Patience p, detail::Attempt a,
                         std::uint64_t& s) noexcept;
  Status wait_for_room(detail::ProducerLane& l, std::uint64_t s, Patience p) noexcept;
  // Every wait on the space event goes through here: it bounds each sleep by
  // kSpaceRecheck (consumers only hint on release, see detail::notify_hint).
  template <class Ready>
  detail::Waited wait_for_space(detail::ProducerLane& l, std::chrono::nanoseconds timeout,
                                Ready&& ready) noexcept {
    return detail::wait_for(l.ring.control->space_event, options_.wait, timeout, options_.spin,
                            options_.interrupt, std::forward<Ready>(ready), detail::kSpaceRecheck);
  }
  // After record_claim found that a group joined since the gate was cached:
  // Ok when s may be written; otherwise s is given up (abandoned) and the
  // call fails as a full ring would.
  Status after_join(detail::ProducerLane& l, Patience p, std::uint32_t index, std::uint64_t s,
                    std::uint64_t epoch) noexcept;
  void detach() noexcept;

  // Delayed messages (src/schedule.cpp).
  [[nodiscard]] static WallClock::time_point due_after(std::chrono::nanoseconds d) noexcept {
    const WallClock::time_point now = WallClock::now();
    // Saturated: a huge delay is "never", not a wrap into the past.
    const auto room = WallClock::time_point::max() - now;
    const auto dd = std::chrono::duration_cast<WallClock::duration>(d);
    return dd > room ? WallClock::time_point::max() : now + dd;
  }
  Status schedule_impl(const Route& route, WallClock::time_point when,
                       std::span<const std::byte> data, Patience p) noexcept;
  Loan schedule_loan(const Route& route, WallClock::time_point when, std::size_t size,
                     Patience p) noexcept;
  // Takes a free schedule entry for a message of `size` bytes on `route`
  // (Writing, its header filled in), or says why not.
  Status schedule_claim(const Route& route, std::size_t size, Patience p, std::uint64_t due_ns,
                        Loan& out) noexcept;
  // publish() of a delayed loan: the entry becomes Ready.
  Status schedule_commit(Loan& l, std::size_t size) noexcept;
  void schedule_abandon(Loan& l) noexcept;

  std::shared_ptr<detail::Region> region_;
  PublisherOptions options_;
  detail::ProducerLane head_;  // partition (or lane) 0: the region's ring, copied
  std::unique_ptr<detail::ProducerLane[]> rest_;  // partitions 1 .. rings_ - 1
  std::uint32_t rings_ = 1;
  bool lanes_ = false;             // the rings are priority lanes
  std::uint32_t sticky_ = 0;       // the sticky partition of unrouted messages
  std::uint32_t sticky_left_ = 0;  // messages left in its run
  detail::StampClock clock_;       // the slots' timestamps
};

inline Status Loan::publish(std::size_t size) noexcept {
  if (slot_ == nullptr) return Status::Invalid;
  if (size > size_) return Status::TooLarge;
  if (entry_ != kNoEntry) [[unlikely]]
    return pub_->schedule_commit(*this, size);
  detail::commit(lane_->ring, lane_->state, *slot_, seq_, static_cast<std::uint32_t>(size), meta_,
                 tag_, claim_, pub_->clock_.now());
  slot_ = nullptr;
  pub_ = nullptr;
  return Status::Ok;
}

inline void Loan::abandon() noexcept {
  if (slot_ == nullptr) return;
  if (entry_ != kNoEntry) [[unlikely]] {
    pub_->schedule_abandon(*this);
    return;
  }
  detail::abandon(lane_->ring, lane_->state, *slot_, seq_, claim_);
  slot_ = nullptr;
  pub_ = nullptr;
}

}  // namespace shmbus
