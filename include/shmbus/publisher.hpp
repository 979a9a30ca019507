// Publisher and Loan: the producer side of a topic. The hot path is inline:
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
#include "shmbus/detail/region.hpp"
#include "shmbus/detail/wait.hpp"
#include "shmbus/error.hpp"
#include "shmbus/options.hpp"

namespace shmbus {

class Publisher;

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
    return slot_ ? std::span<std::byte>(detail::Region::payload(*slot_), size_)
                 : std::span<std::byte>();
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
  Publisher(std::shared_ptr<detail::Region> region, const PublisherOptions& options);
  Publisher(Publisher&&) noexcept;
  Publisher& operator=(Publisher&&) noexcept;
  Publisher(const Publisher&) = delete;
  Publisher& operator=(const Publisher&) = delete;
  ~Publisher();

  // Copies `data` into the next slot and publishes it. Under Policy::Block waits
  // for room up to the publisher's timeout (Status::Timeout: not accepted).
  [[nodiscard]] Status publish(std::span<const std::byte> data) noexcept {
    return publish_impl(data, /*wait=*/true);
  }
  // Never waits: Status::WouldBlock when the ring is full (Block and Reject).
  [[nodiscard]] Status try_publish(std::span<const std::byte> data) noexcept {
    return publish_impl(data, /*wait=*/false);
  }
  // Claims a slot for `size` bytes written in place. Waits for room like publish.
  [[nodiscard]] Loan loan(std::size_t size) noexcept { return loan_impl(size, true); }
  [[nodiscard]] Loan try_loan(std::size_t size) noexcept { return loan_impl(size, false); }

  [[nodiscard]] std::uint32_t max_message_size() const noexcept { return region_->slot_size(); }
  [[nodiscard]] std::uint32_t id() const noexcept { return seat_index_; }
  [[nodiscard]] const PublisherOptions& options() const noexcept { return options_; }

 private:
  friend class Loan;

  Status publish_impl(std::span<const std::byte> data, bool wait) noexcept {
    if (data.size() > ring_.slot_size) [[unlikely]]
      return Status::TooLarge;
    // A free entry in the seat's in_flight table (loan_impl keeps one free).
    const auto index = static_cast<std::uint32_t>(std::countr_one(claims_used_));
    std::uint64_t s = 0;
    if (Status st = claim(wait, index, s); st != Status::Ok) [[unlikely]]
      return st;
    detail::SlotHeader& slot = ring_.slot(s);
    if (!data.empty()) std::memcpy(detail::Region::payload(slot), data.data(), data.size());
    commit(slot, s, static_cast<std::uint32_t>(data.size()), index);
    return Status::Ok;
  }

  Loan loan_impl(std::size_t size, bool wait) noexcept {
    Loan l;
    if (size > ring_.slot_size) [[unlikely]] {
      l.status_ = Status::TooLarge;
      return l;
    }
    // Loans take the lowest free entries and publish() returns its own at
    // once, so kMaxInFlight - 1 loans held fill exactly the entries below it:
    // one stays free for publish().
    const auto index = static_cast<std::uint32_t>(std::countr_one(claims_used_));
    if (index >= detail::kMaxInFlight - 1) [[unlikely]] {
      l.status_ = Status::TooManyHeld;
      return l;
    }
    l.status_ = claim(wait, index, l.seq_);
    if (l.status_ == Status::Ok) [[likely]] {
      l.pub_ = this;
      l.slot_ = &ring_.slot(l.seq_);
      l.size_ = static_cast<std::uint32_t>(size);
      l.claim_ = index;
    }
    return l;
  }

  // True when sequence s may be filled: no gating group still needs the
  // message its slot holds. Refreshes the cached gate only when it says full.
  bool has_room(std::uint64_t s) noexcept {
    if (s < gate_cache_ + ring_.count) [[likely]]
      return true;
    refresh_gate(s);
    return s < gate_cache_ + ring_.count;
  }

  // The cache never exceeds `s` (a sequence this producer is about to claim,
  // so at most the tail): the join protocol relies on that (see join_epoch).
  void refresh_gate(std::uint64_t s) noexcept;  // out of line: once per ring lap

  // True when the previous occupant of s's slot (s - slot_count) is complete,
  // so s may be written there. A producer can lap a slower one (or one of its
  // own loans) when nothing gates: under overwrite, or with no live group; and
  // a group that started or sought past an unfinished message does not wait
  // for it either.
  bool slot_free(std::uint64_t s) const noexcept {
    if (s < ring_.count) return true;
    const std::uint64_t prev = s - ring_.count;
    // Proven by the last gate scan: every gating group had passed prev, and
    // prev is at or above every start and seek (jump_mark), so each of them
    // took it, which it does only once prev is complete. Its writer's stores
    // happen before ours: P1, the consumer's C1, its release of the cursor
    // (C2/C4) and our acquire of that cursor (G1). This saves the stamp load
    // below, a load of the very line the consumer spins on.
    if (gated_ && prev >= proven_floor_ && prev < gate_cache_) return true;
    // SYNC POINT P0 (acquire): pairs with P1 (or the abandon store) of the
    // producer of prev, so its payload writes happen before ours.
    return ring_.slot(s).stamp.load(std::memory_order_acquire) >= detail::stamp_published(prev);
  }

  bool may_write(std::uint64_t s) noexcept { return (!gated_ || has_room(s)) && slot_free(s); }

  enum class Attempt : std::uint8_t { Claimed, NoRoom, Raced };

  // One attempt to claim the next sequence, without waiting: Claimed; NoRoom
  // when `s` (the sequence tried) may not be written yet; Raced when another
  // producer claimed it first (`s` is then the tail that won).
  Attempt try_claim(std::uint64_t& s) noexcept {
    detail::TopicHeader& h = *ring_.header;
    if (single_producer_) {
      s = next_;
      if (!may_write(s)) [[unlikely]]
        return Attempt::NoRoom;
      next_ = s + 1;
      // SYNC POINT J1 (seq_cst): the claim is ordered before our load of the
      // join epoch (J2, in claim), against a joiner's epoch bump and tail load
      // (J3). The tail tells no one that data is ready (the stamp does).
      h.tail.store(s + 1, std::memory_order_seq_cst);
      return Attempt::Claimed;
    }
    // Relaxed: a candidate; the CAS below decides.
    s = h.tail.load(std::memory_order_relaxed);
    if (!may_write(s)) [[unlikely]]
      return Attempt::NoRoom;
    // J1 as above (seq_cst; on x86 the same locked instruction as relaxed).
    // The checks above were for exactly this s, so when the CAS succeeds its
    // slot is free: a completed occupant's stamp never goes back.
    return h.tail.compare_exchange_strong(s, s + 1, std::memory_order_seq_cst,
                                          std::memory_order_relaxed)
               ? Attempt::Claimed
               : Attempt::Raced;
  }

  // Claims the next sequence into in_flight entry `index` once its slot may be
  // written; under overwrite the slot's stamp then says "being written"
  // (seqlock-style, for readers). Nothing is claimed unless Ok is returned.
  Status claim(bool wait, std::uint32_t index, std::uint64_t& s) noexcept {
    if (const Attempt a = try_claim(s); a != Attempt::Claimed) [[unlikely]] {
      if (Status st = claim_contended(wait, a, s); st != Status::Ok) return st;
    }
    // Relaxed: read by the daemon after this process died, to mark the
    // sequence abandoned, and to leave it alone while we live; stored at once
    // after the claim so that the window in which a claim is unrecorded is a
    // few instructions. Nothing synchronises through it.
    seat_->in_flight[index].store(s, std::memory_order_relaxed);
    claims_used_ = static_cast<std::uint8_t>(claims_used_ | (1u << index));
    if (gated_) {
      // SYNC POINT J2 (seq_cst): pairs with J3 in the subscriber's join. Either
      // we see the bump and rescan (the new group then gates us), or the
      // joiner's tail load sees our claim and starts the group above what
      // this claim may overwrite.
      const std::uint64_t epoch = ring_.header->join_epoch.load(std::memory_order_seq_cst);
      if (epoch != epoch_) [[unlikely]]
        after_join(s, epoch);
    } else {
      // Overwrite: a reader may still be reading the previous occupant. Mark
      // "being written" before the payload changes, so that it sees the stamp
      // change and discards what it read. The release fence orders this store
      // before the payload stores that follow. Under block and reject no
      // reader can be on this slot (the gate and the join protocol see to
      // it), and skipping the store saves a cache-line transfer per message.
      ring_.slot(s).stamp.store(detail::stamp_writing(s), std::memory_order_relaxed);
      std::atomic_thread_fence(std::memory_order_release);
    }
    return Status::Ok;
  }

  void release_claim(std::uint32_t index) noexcept {
    // Relaxed: as the store in claim().
    seat_->in_flight[index].store(detail::kNone, std::memory_order_relaxed);
    claims_used_ = static_cast<std::uint8_t>(claims_used_ & ~(1u << index));
  }

  void commit(detail::SlotHeader& slot, std::uint64_t s, std::uint32_t size,
              std::uint32_t index) noexcept {
    const std::uint64_t now = clock_.now();
    // Relaxed: ordered before the stamp's release store below.
    slot.length.store(size, std::memory_order_relaxed);
    slot.producer_id.store(seat_index_, std::memory_order_relaxed);
    slot.timestamp_ns.store(now, std::memory_order_relaxed);
    // SYNC POINT P1 (release): pairs with the consumer's acquire load of the
    // stamp (C1 in subscriber.hpp); the payload and fields above are visible
    // to a consumer that sees stamp_published(s).
    slot.stamp.store(detail::stamp_published(s), std::memory_order_release);
    release_claim(index);
    // Relaxed: statistics, written only by this producer (one line with in_flight).
    seat_->published.store(seat_->published.load(std::memory_order_relaxed) + 1,
                           std::memory_order_relaxed);
    seat_->published_bytes.store(seat_->published_bytes.load(std::memory_order_relaxed) + size,
                                 std::memory_order_relaxed);
    detail::notify(ring_.header->data_event);
  }

  void abandon(detail::SlotHeader& slot, std::uint64_t s, std::uint32_t index) noexcept {
    // Release: pairs with C1 like P1; consumers skip the sequence (and never
    // look at an abandoned slot's other fields).
    slot.stamp.store(detail::stamp_abandoned(s), std::memory_order_release);
    release_claim(index);
    detail::notify(ring_.header->data_event);
  }

  // The slow path of claim, after attempt `a` failed for `s`: waits for room,
  // retries after a lost race.
  Status claim_contended(bool wait, Attempt a, std::uint64_t& s) noexcept;
  Status wait_for_room(std::uint64_t s, bool wait) noexcept;
  // Every wait on the space event goes through here: it bounds each sleep by
  // kSpaceRecheck (consumers only hint on release, see detail::notify_hint).
  template <class Ready>
  bool wait_for_space(std::chrono::nanoseconds timeout, Ready&& ready) noexcept {
    return detail::wait_for(ring_.header->space_event, options_.wait, timeout, options_.spin,
                            std::forward<Ready>(ready), detail::kSpaceRecheck);
  }
  void after_join(std::uint64_t s, std::uint64_t epoch) noexcept;
  void detach() noexcept;

  std::shared_ptr<detail::Region> region_;
  PublisherOptions options_;
  detail::ProducerSeat* seat_ = nullptr;
  detail::Ring ring_;             // the region's geometry, copied
  detail::StampClock clock_;      // the slots' timestamps
  std::uint64_t gate_cache_ = 0;  // a lower bound of the gate, this process only
  // The jump mark of the scan that set gate_cache_ (kNone when nothing gated):
  // sequences in [proven_floor_, gate_cache_) are complete (see slot_free).
  std::uint64_t proven_floor_ = detail::kNone;
  std::uint64_t next_ = 0;        // single-producer: the next sequence to claim
  std::uint64_t epoch_ = 0;       // the join epoch gate_cache_ was computed in
  std::uint8_t claims_used_ = 0;  // which in_flight entries hold a claim
  std::uint32_t seat_index_ = 0;
  bool single_producer_ = false;
  bool gated_ = true;  // policy is not overwrite: gating groups hold producers back
};

inline Status Loan::publish(std::size_t size) noexcept {
  if (slot_ == nullptr) return Status::Invalid;
  if (size > size_) return Status::TooLarge;
  pub_->commit(*slot_, seq_, static_cast<std::uint32_t>(size), claim_);
  slot_ = nullptr;
  pub_ = nullptr;
  return Status::Ok;
}

inline void Loan::abandon() noexcept {
  if (slot_ == nullptr) return;
  pub_->abandon(*slot_, seq_, claim_);
  slot_ = nullptr;
  pub_ = nullptr;
}

}  // namespace shmbus
