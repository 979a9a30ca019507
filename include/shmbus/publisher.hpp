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
#include <utility>

#include "shmbus/detail/clock.hpp"
#include "shmbus/detail/ring.hpp"
#include "shmbus/detail/wait.hpp"
#include "shmbus/error.hpp"
#include "shmbus/options.hpp"

namespace shmbus {

namespace detail {
class Region;  // src/region.hpp: the mapping, kept out of public headers
}  // namespace detail

class Publisher;
class Topic;

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
      slot_ = o.slot_;
      seq_ = o.seq_;
      size_ = o.size_;
      status_ = o.status_;
      claim_ = o.claim_;
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
    return slot_ ? std::span<std::byte>(detail::payload(*slot_), size_) : std::span<std::byte>();
  }
  [[nodiscard]] std::uint64_t sequence() const noexcept { return seq_; }
  // Publishes the first `size` bytes (default: the size loaned; at most that).
  [[nodiscard]] Status publish() noexcept { return publish(size_); }
  [[nodiscard]] Status publish(std::size_t size) noexcept;
  // Gives the slot up; consumers skip its sequence.
  void abandon() noexcept;

 private:
  friend class Publisher;
  Publisher* pub_ = nullptr;
  detail::SlotHeader* slot_ = nullptr;
  std::uint64_t seq_ = 0;
  std::uint32_t size_ = 0;
  std::uint32_t claim_ = 0;  // index of this claim in the seat's in_flight table
  Status status_ = Status::Invalid;
};

class Publisher {
 public:
  Publisher(Publisher&&) noexcept;
  Publisher& operator=(Publisher&&) noexcept;
  Publisher(const Publisher&) = delete;
  Publisher& operator=(const Publisher&) = delete;
  ~Publisher();

  // Copies `data` into the next slot and publishes it. Under Policy::Block waits
  // for room up to the publisher's timeout (Status::Timeout: not accepted).
  // Status::Interrupted: the options' interrupt ended the wait, nothing published.
  [[nodiscard]] Status publish(std::span<const std::byte> data) noexcept {
    return publish_impl(data, {true, options_.timeout});
  }
  // The same, waiting up to `timeout` instead of the publisher's timeout.
  [[nodiscard]] Status publish(std::span<const std::byte> data,
                               std::chrono::nanoseconds timeout) noexcept {
    return publish_impl(data, {true, timeout});
  }
  // Never waits: Status::WouldBlock when the ring is full (Block and Reject).
  [[nodiscard]] Status try_publish(std::span<const std::byte> data) noexcept {
    return publish_impl(data, {false, options_.timeout});
  }
  // Claims a slot for `size` bytes written in place. Waits for room like publish.
  [[nodiscard]] Loan loan(std::size_t size) noexcept {
    return loan_impl(size, {true, options_.timeout});
  }
  [[nodiscard]] Loan loan(std::size_t size, std::chrono::nanoseconds timeout) noexcept {
    return loan_impl(size, {true, timeout});
  }
  [[nodiscard]] Loan try_loan(std::size_t size) noexcept {
    return loan_impl(size, {false, options_.timeout});
  }

  // The topic's slot size: the largest message, in bytes.
  [[nodiscard]] std::uint32_t slot_size() const noexcept { return ring_.slot_size; }
  // This publisher's producer seat: Sample::producer_id() of what it publishes.
  [[nodiscard]] std::uint32_t id() const noexcept { return state_.seat_index; }
  [[nodiscard]] const PublisherOptions& options() const noexcept { return options_; }

 private:
  friend class Loan;
  friend class Topic;  // the only constructor's caller (Bus::publisher goes through it)

  Publisher(std::shared_ptr<detail::Region> region, const PublisherOptions& options);

  // How a call waits: for room only when `wait`, and up to `timeout` (each
  // of its two waits: for room, and for a group that joined under its claim).
  struct Patience {
    bool wait;
    std::chrono::nanoseconds timeout;
  };

  Status publish_impl(std::span<const std::byte> data, Patience p) noexcept {
    if (data.size() > ring_.slot_size) [[unlikely]]
      return Status::TooLarge;
    // A free entry in the seat's in_flight table (loan_impl keeps one free).
    const auto index = static_cast<std::uint32_t>(std::countr_one(state_.claims_used));
    std::uint64_t s = 0;
    if (Status st = claim(p, index, s); st != Status::Ok) [[unlikely]]
      return st;
    detail::SlotHeader& slot = ring_.slot(s);
    if (!data.empty()) std::memcpy(detail::payload(slot), data.data(), data.size());
    detail::commit(ring_, state_, slot, s, static_cast<std::uint32_t>(data.size()), index,
                   clock_.now());
    return Status::Ok;
  }

  Loan loan_impl(std::size_t size, Patience p) noexcept {
    Loan l;
    if (size > ring_.slot_size) [[unlikely]] {
      l.status_ = Status::TooLarge;
      return l;
    }
    // Loans take the lowest free entries and publish() returns its own at
    // once, so kMaxInFlight - 1 loans held fill exactly the entries below it:
    // one stays free for publish().
    const auto index = static_cast<std::uint32_t>(std::countr_one(state_.claims_used));
    if (index >= detail::kMaxInFlight - 1) [[unlikely]] {
      l.status_ = Status::TooManyHeld;
      return l;
    }
    l.status_ = claim(p, index, l.seq_);
    if (l.status_ == Status::Ok) [[likely]] {
      l.pub_ = this;
      l.slot_ = &ring_.slot(l.seq_);
      l.size_ = static_cast<std::uint32_t>(size);
      l.claim_ = index;
    }
    return l;
  }

  // Claims the next sequence into in_flight entry `index` once its slot may be
  // written (detail/ring.hpp: try_claim, record_claim). Nothing is claimed
  // unless Ok is returned.
  Status claim(Patience p, std::uint32_t index, std::uint64_t& s) noexcept {
    if (const detail::Attempt a = detail::try_claim(ring_, state_, s);
        a != detail::Attempt::Claimed) [[unlikely]] {
      if (Status st = claim_contended(p, a, s); st != Status::Ok) return st;
    }
    std::uint64_t epoch = 0;
    if (!detail::record_claim(ring_, state_, index, s, epoch)) [[unlikely]]
      return after_join(p, index, s, epoch);
    return Status::Ok;
  }

  // The slow path of claim, after attempt `a` failed for `s`: waits for room,
  // retries after a lost race.
  Status claim_contended(Patience p, detail::Attempt a, std::uint64_t& s) noexcept;
  Status wait_for_room(std::uint64_t s, Patience p) noexcept;
  // Every wait on the space event goes through here: it bounds each sleep by
  // kSpaceRecheck (consumers only hint on release, see detail::notify_hint).
  template <class Ready>
  detail::Waited wait_for_space(std::chrono::nanoseconds timeout, Ready&& ready) noexcept {
    return detail::wait_for(ring_.control->space_event, options_.wait, timeout, options_.spin,
                            options_.interrupt, std::forward<Ready>(ready), detail::kSpaceRecheck);
  }
  // After record_claim found that a group joined since the gate was cached:
  // Ok when s may be written; otherwise s is given up (abandoned) and the
  // call fails as a full ring would.
  Status after_join(Patience p, std::uint32_t index, std::uint64_t s, std::uint64_t epoch) noexcept;
  void detach() noexcept;

  std::shared_ptr<detail::Region> region_;
  PublisherOptions options_;
  detail::Ring ring_;            // the region's ring, copied
  detail::ProducerState state_;  // this publisher's side of the protocol
  detail::StampClock clock_;     // the slots' timestamps
};

inline Status Loan::publish(std::size_t size) noexcept {
  if (slot_ == nullptr) return Status::Invalid;
  if (size > size_) return Status::TooLarge;
  detail::commit(pub_->ring_, pub_->state_, *slot_, seq_, static_cast<std::uint32_t>(size), claim_,
                 pub_->clock_.now());
  slot_ = nullptr;
  pub_ = nullptr;
  return Status::Ok;
}

inline void Loan::abandon() noexcept {
  if (slot_ == nullptr) return;
  detail::abandon(pub_->ring_, pub_->state_, *slot_, seq_, claim_);
  slot_ = nullptr;
  pub_ = nullptr;
}

}  // namespace shmbus
