// Subscriber, Sample and Batch: the consumer side. A subscriber is a member of
// a consumer group. Every group sees every message; members of one group
// compete, each message going to exactly one of them. Reads are zero-copy: a
// Sample views the slot in place until it is released.
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "shmbus/detail/ring.hpp"
#include "shmbus/detail/wait.hpp"
#include "shmbus/error.hpp"
#include "shmbus/options.hpp"
#include "shmbus/properties.hpp"

namespace shmbus {

namespace detail {
class Region;      // src/region.hpp: the mapping, kept out of public headers
class Connection;  // src/bus.cpp: a Bus's daemon connection
class Replier;     // src/request.cpp: Sample::reply's publishers
class Watch;       // src/watch.hpp: Subscriber::fd's eventfd
class Dispatcher;  // src/listener.cpp: a Listener's receiving thread
}  // namespace detail

class Bus;
class Listener;
class Publisher;
class Selector;
class Subscriber;
class Topic;
struct ListenOptions;

namespace detail {
// One partition (or priority lane) as a subscriber sees it: its ring, this
// member's side of the protocol there, and (partitioned groups) whether the
// member owns it.
struct ConsumerLane {
  Ring ring;
  ConsumerState state;
  std::uint32_t index = 0;  // the partition (or lane)
  bool owned = true;        // this member may take from it
  // Owned, but the group's assignment gave it to another member: take
  // nothing more, and let go once nothing taken from it is held.
  bool revoking = false;
};
}  // namespace detail

// Metadata of a message, filled by the copying reads.
struct MessageInfo {
  std::uint64_t sequence = 0;  // the offset in its partition
  // CLOCK_MONOTONIC at publish, to about 10 ns (detail::StampClock).
  std::uint64_t timestamp_ns = 0;
  std::uint32_t size = 0;
  std::uint32_t producer_id = 0;
  std::uint32_t partition = 0;        // the partition (or priority lane)
  std::uint32_t key_size = 0;         // bytes of key (Subscriber::receive_copy skips them)
  std::uint32_t properties_size = 0;  // bytes of encoded properties (skipped too)
  // A delayed message's due time (Publisher::publish_at), system-clock ns
  // since the epoch; 0 for a message published at once.
  std::uint64_t deliver_at_ns = 0;
  // As Sample::delivery_count (1 unless an at-least-once group redelivered it).
  std::uint32_t delivery_count = 1;
};

// A received message viewed in place. Valid until released (release() or the
// destructor). Must not outlive its Subscriber; use from one thread at a time.
// Under Policy::Overwrite a producer may overwrite the slot while the sample is
// held: check intact() after reading to know that what was read is good.
class Sample {
 public:
  Sample() = default;
  Sample(Sample&& o) noexcept { *this = std::move(o); }
  Sample& operator=(Sample&& o) noexcept;
  Sample(const Sample&) = delete;
  Sample& operator=(const Sample&) = delete;
  ~Sample() { release(); }

  [[nodiscard]] explicit operator bool() const noexcept { return slot_ != nullptr; }
  // The payload, 8-byte aligned in the slot.
  [[nodiscard]] std::span<const std::byte> data() const noexcept {
    return slot_ ? std::span<const std::byte>(detail::payload(*slot_, meta_), size_)
                 : std::span<const std::byte>();
  }
  // The message's key (empty for an unkeyed message), in the slot.
  [[nodiscard]] std::span<const std::byte> key() const noexcept {
    return slot_ ? std::span<const std::byte>(detail::payload(*slot_), detail::meta_key(meta_))
                 : std::span<const std::byte>();
  }
  // The message's properties (empty when it has none), in the slot after
  // the key. Bounds-checked as it is read (Properties).
  [[nodiscard]] Properties properties() const noexcept {
    return slot_ ? Properties({detail::payload(*slot_) + detail::meta_key(meta_),
                               detail::meta_properties(meta_)})
                 : Properties();
  }
  // The offset of the message in its partition.
  [[nodiscard]] std::uint64_t sequence() const noexcept { return seq_; }
  // The partition it came from (0 on a one-partition or a priority topic).
  [[nodiscard]] std::uint32_t partition() const noexcept;
  // Its priority (0 on a topic without priority lanes).
  [[nodiscard]] std::uint32_t priority() const noexcept;
  // As MessageInfo::timestamp_ns.
  [[nodiscard]] std::uint64_t timestamp_ns() const noexcept { return timestamp_ns_; }
  [[nodiscard]] std::uint32_t producer_id() const noexcept { return producer_id_; }
  // A delayed message's due time (Publisher::publish_at, publish_after): it
  // became visible then, with the offset it has. Empty for a message
  // published at once. deliver_at_ns(): the same in ns since the epoch, 0: none.
  [[nodiscard]] std::optional<std::chrono::system_clock::time_point> deliver_at() const noexcept {
    const std::uint64_t ns = deliver_at_ns();
    if (ns == 0) return std::nullopt;
    return std::chrono::system_clock::time_point(
        std::chrono::duration_cast<std::chrono::system_clock::duration>(
            std::chrono::nanoseconds(ns)));
  }
  [[nodiscard]] std::uint64_t deliver_at_ns() const noexcept {
    return slot_ ? detail::due_of(*slot_, meta_) : 0;
  }
  // True when the slot still holds this message, so everything read from
  // data() so far is what was published. Always true under Block and Reject.
  [[nodiscard]] bool intact() const noexcept;
  // Ends the zero-copy read: producers may reuse the slot. Idempotent.
  void release() noexcept;
  // Answers a request (Bus::request): publishes `data` to the requester's
  // reply topic (the reply_to property) with its correlation_id, without
  // waiting: a reply to a requester that is gone (TopicDeleted, NotFound as
  // TopicDeleted) or whose reply topic is full (WouldBlock) is dropped and
  // counted (Subscriber::replies_dropped), never blocks the responder.
  // NotARequest: the message has no reply_to / correlation_id; Invalid: the
  // sample is empty, or its topic did not come from a Bus (no daemon to
  // open the reply topic through); TooLarge: more than Bus::kMaxReplySize.
  [[nodiscard]] Status reply(std::span<const std::byte> data) const;

  // At-least-once groups (SubscriberOptions::delivery, docs/acknowledgements.md):
  // how many times the message was delivered to the group, this time
  // included (1 the first time; always 1 under at-most-once), and whether
  // it was delivered before (a member died or left holding it, or nacked it).
  [[nodiscard]] std::uint32_t delivery_count() const noexcept { return deliveries_; }
  [[nodiscard]] bool redelivered() const noexcept { return deliveries_ > 1; }
  // Gives the message back for redelivery at once (the sample is then
  // empty): the group's next receive returns it again, delivery_count() one
  // higher. Once it was delivered max_deliveries times, the message goes to
  // the dead-letter topic "<topic>.dlq" instead (made on first use with the
  // topic's geometry; properties dlq.topic, dlq.offset, dlq.partition,
  // dlq.reason, dlq.deliveries added to the message's own). Ok, or
  // Invalid: empty, or not an at-least-once group's; or the dead-letter
  // publish's error (then nothing changed: the sample is still held).
  [[nodiscard]] Status nack();

 private:
  friend class Subscriber;
  Subscriber* sub_ = nullptr;
  detail::ConsumerLane* lane_ = nullptr;
  detail::SlotHeader* slot_ = nullptr;
  std::uint64_t seq_ = 0;
  std::uint64_t timestamp_ns_ = 0;
  std::uint32_t size_ = 0;
  std::uint32_t producer_id_ = 0;
  std::uint32_t hold_ = 0;
  std::uint32_t meta_ = 0;  // the key's and properties' bytes (layout.hpp)
  std::uint32_t deliveries_ = 1;
};

// A run of consecutive messages taken with one claim. Released as a whole.
class Batch {
 public:
  Batch() = default;
  Batch(Batch&& o) noexcept { *this = std::move(o); }
  Batch& operator=(Batch&& o) noexcept;
  Batch(const Batch&) = delete;
  Batch& operator=(const Batch&) = delete;
  ~Batch() { release(); }

  [[nodiscard]] std::size_t size() const noexcept { return sub_ ? count_ : 0; }
  [[nodiscard]] bool empty() const noexcept { return size() == 0; }
  [[nodiscard]] std::uint64_t first_sequence() const noexcept { return first_; }
  // The partition (or priority lane) of the whole batch.
  [[nodiscard]] std::uint32_t partition() const noexcept { return lane_ ? lane_->index : 0; }
  // The i-th message's payload, key and metadata (i < size()).
  [[nodiscard]] std::span<const std::byte> data(std::size_t i) const noexcept;
  [[nodiscard]] std::span<const std::byte> key(std::size_t i) const noexcept;
  [[nodiscard]] Properties properties(std::size_t i) const noexcept;
  [[nodiscard]] MessageInfo info(std::size_t i) const noexcept;
  // True when no message of the batch was overwritten (see Sample::intact).
  [[nodiscard]] bool intact() const noexcept;
  // As Sample's: a redelivered message comes alone, as a batch of one.
  [[nodiscard]] std::uint32_t delivery_count() const noexcept { return deliveries_; }
  [[nodiscard]] bool redelivered() const noexcept { return deliveries_ > 1; }
  void release() noexcept;

 private:
  friend class Subscriber;
  Subscriber* sub_ = nullptr;
  detail::ConsumerLane* lane_ = nullptr;
  std::uint64_t first_ = 0;
  std::uint32_t count_ = 0;
  std::uint32_t hold_ = 0;
  std::uint32_t deliveries_ = 1;
};

class Subscriber {
 public:
  // At most this many samples and batches may be held unreleased at once.
  static constexpr std::uint32_t kMaxHeld = detail::kMaxHeld;

  Subscriber(Subscriber&&) = delete;  // samples point at their subscriber
  Subscriber& operator=(Subscriber&&) = delete;
  Subscriber(const Subscriber&) = delete;
  Subscriber& operator=(const Subscriber&) = delete;
  ~Subscriber();

  // Takes the next message of the group, if one is ready; never waits.
  // Status::TopicDeleted once the topic was deleted and every message
  // published before that was taken by the group (every receive call alike).
  [[nodiscard]] Status try_receive(Sample& out) noexcept;
  // Waits up to `timeout` for the next message (Status::Timeout if none came).
  // Every receive call below whose wait times out (or that waited a second)
  // checks whether the position is stuck on damage, never on a slow producer:
  // a slot whose stamp contradicts the tail is skipped and counted in
  // corrupt(), a cursor past the tail goes back to the oldest retained message
  // (counted once), both returning Status::Corrupt; a damaged tail returns
  // Status::Corrupt once with position() unchanged. try_receive never does.
  [[nodiscard]] Status receive(Sample& out, std::chrono::nanoseconds timeout) noexcept;
  // Takes up to `max` consecutive ready messages of one partition with one
  // claim; waits up to `timeout` for the first.
  [[nodiscard]] Status receive_batch(Batch& out, std::size_t max,
                                     std::chrono::nanoseconds timeout) noexcept;
  // Copies the next message into `buffer` and releases its slot. The copy is
  // checked after it is made, so under Policy::Overwrite a message overwritten
  // mid-copy is skipped (and counted in lost()), never returned.
  // Status::TooLarge if `buffer` is too small (the message stays unconsumed).
  [[nodiscard]] Status receive_copy(std::span<std::byte> buffer, MessageInfo& info,
                                    std::chrono::nanoseconds timeout) noexcept;

  // Moves the group's position to `sequence` (clamped to what the ring retains
  // when it is read). For a named group this moves every member. Throws
  // Error(InvalidArgument) past the tail: the group would silently skip
  // messages not yet published (seek to the tail for "latest").
  // On a topic of several partitions (or lanes): every partition to `sequence`.
  void seek(std::uint64_t sequence);
  // Moves the group's position in one partition (or priority lane).
  // Throws Error(InvalidArgument) for a partition the topic lacks.
  void seek(std::uint32_t partition, std::uint64_t offset);
  // Messages published but not yet taken by this group (a guess under
  // concurrency): in total, and in one partition.
  [[nodiscard]] std::uint64_t lag() const noexcept;
  [[nodiscard]] std::uint64_t lag(std::uint32_t partition) const noexcept;
  // The group's position: the next sequence it will take (on a topic of
  // several partitions, the sum over them), and in one partition.
  [[nodiscard]] std::uint64_t position() const noexcept;
  [[nodiscard]] std::uint64_t position(std::uint32_t partition) const noexcept;
  // Messages this group skipped because producers overwrote them first.
  [[nodiscard]] std::uint64_t lost() const noexcept;
  // Messages this group skipped because their slot header was invalid.
  [[nodiscard]] std::uint64_t corrupt() const noexcept;
  // Messages this group's members took without returning them: their tag
  // did not match the filter (SubscriberOptions::tags).
  [[nodiscard]] std::uint64_t filtered() const noexcept;
  // Replies (Sample::reply) this subscriber dropped: their requester was
  // gone or its reply topic full.
  [[nodiscard]] std::uint64_t replies_dropped() const noexcept;
  [[nodiscard]] const std::string& group() const noexcept { return options_.group; }
  // The topic's slot size: the largest message, in bytes.
  [[nodiscard]] std::uint32_t slot_size() const noexcept { return head_.ring.slot_size; }
  // The topic's partitions (1 on a priority topic) and priority lanes (0: none).
  [[nodiscard]] std::uint32_t partitions() const noexcept { return lanes_ ? 1 : rings_; }
  [[nodiscard]] std::uint32_t priorities() const noexcept { return lanes_ ? rings_ : 0; }
  // The group's delivery mode, and (at least once) its max_deliveries.
  [[nodiscard]] Delivery delivery() const noexcept {
    return acks_ != nullptr ? Delivery::AtLeastOnce : Delivery::AtMostOnce;
  }
  [[nodiscard]] std::uint32_t max_deliveries() const noexcept { return max_deliveries_; }
  // At least once: messages this subscriber sent to the dead-letter topic.
  [[nodiscard]] std::uint64_t dead_lettered() const noexcept { return dead_lettered_; }
  // The group's mode (Shared for a private group).
  [[nodiscard]] GroupMode group_mode() const noexcept {
    return partitioned_ ? GroupMode::Partitioned : GroupMode::Shared;
  }
  // A partitioned group's member: the partitions it owns now (it takes only
  // from these). Every partition for other members.
  [[nodiscard]] std::vector<std::uint32_t> owned_partitions() const;

  // ---- event loops and push consumers (docs/event-loops.md) ----------------
  // True when a receive may find a message now, or the topic was deleted (a
  // receive then says so): a look at one stamp per partition, no system call.
  // A hint: a member of a shared group may find that another took it first.
  [[nodiscard]] bool ready() const noexcept;
  // A descriptor for epoll, poll, select, libuv, Boost.Asio or asyncio: it
  // becomes readable when a receive may find a message. Receive until a call
  // comes up empty (Status::WouldBlock or Status::Timeout): that call arms it
  // again, and it stays quiet until the next message. Spurious readiness is
  // possible (a peer member took the message); read nothing from it. Made on
  // the first call, owned by the subscriber (do not close it). Waking through
  // it costs a thread hop more than a sleeping receive (src/watch.hpp).
  // Throws Error(ResourceExhausted) when no eventfd can be made.
  [[nodiscard]] int fd();
  // Calls `handler` for each message on `options.threads` worker threads
  // until the returned Listener is destroyed (listener.hpp). The subscriber
  // must outlive the Listener, and must not be used otherwise meanwhile.
  [[nodiscard]] Listener listen(std::function<void(const Sample&)> handler,
                                const ListenOptions& options);
  [[nodiscard]] Listener listen(std::function<void(const Sample&)> handler);

 private:
  friend class Sample;
  friend class Batch;
  friend class detail::Replier;
  friend class Selector;
  friend class detail::Dispatcher;
  Status reply(const Sample& s, std::span<const std::byte> data);
  // The event count consumers of this topic sleep on (every partition's).
  [[nodiscard]] detail::EventCount& data_event() const noexcept { return *head_.ring.data_event; }
  // may_have_data without the clock of at-least-once peer checks: a message,
  // a redelivery or an orphan to adopt.
  [[nodiscard]] bool has_data() const noexcept;
  // A public receive call's result: an empty one arms fd() again.
  Status settle(Status st) noexcept {
    if ((st == Status::WouldBlock || st == Status::Timeout) && watch_ != nullptr) [[unlikely]]
      rearm();
    return st;
  }
  void rearm() noexcept;
  // try_receive without settle: the take inside the waits.
  Status take_one(Sample& out) noexcept;
  // At least once: gives a held sample back, to be delivered again next
  // with its delivery count plus `more` (a Listener's unhandled samples at
  // stop: 0; one whose nack failed: 1, so it goes the dead-letter way again,
  // retried every kStuckRetry, not at once).
  void give_back(Sample& s, std::uint32_t more = 0) noexcept;
  // The only constructor's caller; registers the seat (group_index_,
  // member_index_) with shmbusd when the topic came from a Bus.
  friend class Topic;

  Subscriber(std::shared_ptr<detail::Region> region, const SubscriberOptions& options);
  [[nodiscard]] std::uint32_t group_index() const noexcept { return group_index_; }
  [[nodiscard]] std::uint32_t member_index() const noexcept { return member_index_; }

  [[nodiscard]] detail::ConsumerLane& lane(std::uint32_t p) noexcept {
    return p == 0 ? head_ : rest_[p - 1];
  }
  [[nodiscard]] const detail::ConsumerLane& lane(std::uint32_t p) const noexcept {
    return p == 0 ? head_ : rest_[p - 1];
  }
  // One lane's take (the inline common case, then the general one).
  Status take_from(detail::ConsumerLane& l, Sample& out) noexcept;
  Status take_slow(detail::ConsumerLane& l, Sample& out) noexcept;
  // A topic of several rings: the next lane with a message (strict priority,
  // or runs of kBurst per partition in turn), partitioned ownership first.
  Status take_any(Sample& out) noexcept;
  Status take_batch_any(Batch& out, std::uint32_t max) noexcept;
  // Both of them: `take(lane)` on the lanes in scan order, after a
  // rebalance the assignment asks for (and, idle, one that looks at peers).
  template <class Take, class Again>
  Status take_next(Take&& take, Again&& again) noexcept;
  Status take_batch(detail::ConsumerLane& l, Batch& out, std::uint32_t max) noexcept;
  // With a tag filter: takes until a message matches (one at a time for a
  // batch), returning the others; WouldBlock after kFilterRun returned ones,
  // so a call on a stream of other tags still ends.
  Status take_filtered(Sample& out) noexcept;
  Status take_batch_filtered(Batch& out) noexcept;
  [[nodiscard]] bool wanted(detail::SlotHeader& slot, std::uint32_t meta) const noexcept;
  void count_filtered(detail::ConsumerLane& l) noexcept;
  static constexpr int kFilterRun = 256;
  static constexpr std::uint32_t kBurst = 32;
  // Partitioned groups: follows the group's assignment (lets go of revoked
  // partitions that hold nothing, takes assigned ones their owner let go),
  // and looks for dead members when nothing was there to take.
  void rebalance(bool idle) noexcept;
  void check_peers() noexcept;
  // At least once, idle: time to look for dead peers (a coarse clock read,
  // a few ns: this runs in a wait's spin loop).
  [[nodiscard]] bool peer_check_due() const noexcept;
  // CLOCK_MONOTONIC_COARSE in ns (vDSO, no system call; a few ms of grain).
  [[nodiscard]] static std::int64_t monotonic_ns() noexcept;
  void let_go(detail::ConsumerLane& l) noexcept;
  [[nodiscard]] bool assignment_changed() const noexcept {
    // Relaxed: a hint; rebalance() loads it again with acquire.
    return partitioned_ && (unsettled_ || head_.state.group->assignment.load(
                                              std::memory_order_relaxed) != assignment_seen_);
  }
  [[nodiscard]] bool may_have_data() const noexcept;
  // Throws Error(InvalidArgument), naming the tail, when `sequence` is past it.
  void check_not_future(const detail::Ring& r, std::uint64_t sequence, const char* what) const;
  // What "nothing to take" means: WouldBlock, or TopicDeleted once the topic
  // was deleted and the group has taken everything claimed before.
  [[nodiscard]] Status nothing_to_take() const noexcept;
  void fill(Sample& out, detail::ConsumerLane& l, detail::SlotHeader& slot, std::uint64_t seq,
            std::uint32_t len, std::uint32_t meta, std::uint32_t hold) noexcept;
  Status reject_corrupt(detail::ConsumerLane& l, std::uint32_t hold) noexcept;
  // The one release of a sample or batch: its hold, then (partitioned) a
  // partition let go once nothing of it is held.
  void release(detail::ConsumerLane& l, std::uint32_t hold) noexcept {
    if (acks_ != nullptr) [[unlikely]]
      acknowledge(l, hold);
    detail::unhold(l.ring, l.state, hold);
    if (l.revoking && l.state.held_count == 0) [[unlikely]]
      let_go(l);
  }
  template <class Attempt>
  Status wait_then(std::chrono::nanoseconds timeout, Attempt&& attempt) noexcept;
  // wait_then, checking a position stuck that long for damage (detail::check_stalled).
  static constexpr std::chrono::nanoseconds kStallCheck = std::chrono::seconds(1);
  // How often a partitioned member with nothing to take looks at its group
  // (assignment, dead members), at most.
  static constexpr std::chrono::nanoseconds kGroupCheck = std::chrono::milliseconds(50);
  template <class Attempt>
  Status wait_checked(std::chrono::nanoseconds timeout, Attempt&& attempt) noexcept;

  // ---- at least once (src/acknowledge.cpp, docs/acknowledgements.md) --------
  // Clears the ack record of a held entry: before unhold releases the
  // hazard, so a member that dies in between leaves nothing to redeliver.
  void acknowledge(detail::ConsumerLane& l, std::uint32_t hold) noexcept {
    const std::uint8_t r = l.state.record_of[hold];
    // Relaxed: ordered before the hazard's release store in unhold (C3).
    acks_[r].seq1.store(0, std::memory_order_relaxed);
    acks_used_ &= ~(std::uint64_t{1} << r);
  }
  // take_once; in a file topic, a first message whose checksum does not match (torn by
  // a power cut) is counted lost and skipped (skip_torn): the run returned
  // is whole (detail::take checked the others).
  Status take_run(detail::ConsumerLane& l, std::uint32_t max, detail::Taken& t) noexcept {
    const Status st = take_once(l, max, t);
    if (st == Status::Ok && l.ring.checksummed) [[unlikely]]
      return skip_torn(l, max, t);
    return st;
  }
  // detail::take, with an ack record under at least once.
  Status take_once(detail::ConsumerLane& l, std::uint32_t max, detail::Taken& t) noexcept {
    if (acks_ == nullptr) [[likely]]
      return detail::take(l.ring, l.state, max, t);
    return take_recorded(l, max, t);
  }
  Status skip_torn(detail::ConsumerLane& l, std::uint32_t max, detail::Taken& t) noexcept;
  Status take_recorded(detail::ConsumerLane& l, std::uint32_t max, detail::Taken& t) noexcept;
  // A message to deliver again (adopted from a dead member, or nacked):
  // WouldBlock when there is none.
  Status redeliver(Sample& out) noexcept;
  Status redeliver(Batch& out) noexcept;
  // Orphans to look at: the group's orphaned count moved, or an adoption
  // stopped early (a full table, a busy lock) and there is room now.
  [[nodiscard]] bool adoption_due() const noexcept;
  // Messages whose dead letter failed (no right to make <topic>.dlq, the
  // daemon down): still held, tried again every kStuckRetry.
  void retry_stuck() noexcept;
  static constexpr std::chrono::nanoseconds kStuckRetry = std::chrono::seconds(1);
  // A joiner that found only orphan seats takes one over, its records
  // becoming its own (control lock held; see the constructor).
  void resume_orphan_locked() noexcept;
  void hold_again(detail::ConsumerLane& l, std::uint64_t seq, std::uint32_t deliveries) noexcept;
  // Takes over the ack records of the group's orphans (control lock) into
  // pending_, partitioned: of the partitions this member owns.
  void adopt() noexcept;
  void adopt_locked() noexcept;
  Status nack(Sample& s);
  // Copies a held message to the dead-letter topic; Ok once published.
  Status dead_letter(detail::ConsumerLane& l, std::uint64_t seq, std::uint32_t deliveries,
                     std::string_view reason) noexcept;
  struct Pending {
    std::uint64_t seq;
    std::uint32_t lane, hold, deliveries;  // deliveries: this one's count
  };

  std::shared_ptr<detail::Region> region_;
  SubscriberOptions options_;
  detail::AckRecord* acks_ = nullptr;  // this member's records (null: at most once)
  std::uint64_t acks_used_ = 0;        // which of them hold a run
  std::uint32_t max_deliveries_ = 0;
  std::uint64_t orphaned_seen_ = 0;  // GroupEntry::orphaned when this member last adopted
  bool adopt_again_ = false;         // adopt even if orphaned_seen_ is current
  bool lock_busy_ = false;           // the last adoption found the control lock taken
  std::vector<Pending> pending_;     // to deliver again, oldest first
  std::vector<Pending> stuck_;       // due for the dead-letter topic, which failed
  std::int64_t stuck_retry_ns_ = 0;
  std::uint64_t dead_lettered_ = 0;
  std::unique_ptr<class Publisher> dead_letters_;  // to "<topic>.dlq", made on first use
  detail::ConsumerLane head_;                      // partition (or lane) 0
  std::unique_ptr<detail::ConsumerLane[]> rest_;   // partitions 1 .. rings_ - 1
  std::uint32_t rings_ = 1;
  bool simple_ = true;  // one ring and no tag filter: receive's fast path
  // The tag filter (SubscriberOptions::tags) and its hashes; empty: none.
  std::vector<std::string> tags_;
  std::vector<std::uint32_t> tag_hashes_;
  bool lanes_ = false;            // the rings are priority lanes
  bool partitioned_ = false;      // a member of a partitioned group
  bool unsettled_ = false;        // partitioned: a hand-over is still under way
  std::uint32_t current_ = 0;     // the partition a run is taken from
  std::uint32_t burst_left_ = 0;  // messages left in its run
  std::uint64_t assignment_seen_ = 0;
  std::int64_t last_peer_check_ns_ = 0;
  // Where this member sits in the region's tables (for shmbusd's bookkeeping).
  std::uint32_t group_index_ = 0;
  std::uint32_t member_index_ = 0;
  // The daemon connection of the Bus the topic came from (null: none), and
  // Sample::reply's publishers to reply topics, made on the first reply.
  std::shared_ptr<detail::Connection> bus_;
  std::shared_ptr<detail::Replier> replier_;
  std::mutex reply_mu_;                   // reply() may be called from a Listener's workers at once
  std::unique_ptr<detail::Watch> watch_;  // fd(), made on first use
  std::vector<Selector*> selectors_;      // the selectors holding this subscriber
};

}  // namespace shmbus

#include "shmbus/detail/subscriber_inl.hpp"
