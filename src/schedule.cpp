// Delayed messages: inserting into a topic's schedule (Publisher) and moving
// due messages into their partitions (shmbusd's Mover). The states and the
// crash rules are at the top of schedule.hpp; the reasoning is in
// docs/delayed.md.
#include "schedule.hpp"

#include <linux/futex.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <ctime>

#include "os.hpp"
#include "shmbus/detail/ring.hpp"
#include "shmbus/detail/wait.hpp"

namespace shmbus {

namespace {

using detail::entry_state;
using detail::entry_word;
using detail::EntryState;
using detail::Schedule;
using detail::ScheduleEntry;

std::uint32_t self_pid() noexcept {
  return static_cast<std::uint32_t>(::getpid());
}

// A wall-clock time as the schedule keeps it; before the epoch: 0 (due).
std::uint64_t ns_of(Publisher::WallClock::time_point t) noexcept {
  const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch());
  return ns.count() <= 0 ? 0 : static_cast<std::uint64_t>(ns.count());
}

// Takes a Free entry (Writing, ours): one pass over the schedule from the
// next hint. False when every entry is taken.
bool take_free(const Schedule& sc, std::uint32_t pid, std::uint32_t& out) noexcept {
  // Relaxed: the hint only spreads inserts over the entries; the CAS decides.
  const std::uint32_t start = sc.header->hint.fetch_add(1, std::memory_order_relaxed) % sc.capacity;
  for (std::uint32_t n = 0; n < sc.capacity; ++n) {
    const std::uint32_t i = start + n < sc.capacity ? start + n : start + n - sc.capacity;
    std::atomic<std::uint64_t>& state = sc.entry(i).state;
    // Relaxed: a look before the CAS, which is what orders.
    std::uint64_t w = state.load(std::memory_order_relaxed);
    if (w != 0) continue;
    // SYNC POINT E1 (acquire): pairs with the release store of Free (E4, the
    // mover's after it copied the message out; a writer's abandon): the last
    // user's reads of the entry are done before we write it.
    if (state.compare_exchange_strong(w, entry_word(EntryState::Writing, pid),
                                      std::memory_order_acquire, std::memory_order_relaxed)) {
      out = i;
      return true;
    }
  }
  return false;
}

// A filled Writing entry becomes Ready; the mover is woken if it sleeps
// past this message's due time.
void make_ready(const Schedule& sc, std::uint32_t i, std::uint32_t pid,
                std::uint64_t due) noexcept {
  ScheduleEntry& e = sc.entry(i);
  // Relaxed: the publish order is a number; the state's release carries it.
  e.order.store(sc.header->next_order.fetch_add(1, std::memory_order_relaxed),
                std::memory_order_relaxed);
  // SYNC POINT E2 (release): pairs with the mover's acquire load of the state
  // (E3): the message, due time, partition and order are visible to it.
  e.state.store(entry_word(EntryState::Ready, pid), std::memory_order_release);
  // seq_cst, and the load of `armed` after it: a Dekker pair with the mover,
  // which stores `armed` (seq_cst) before it reads the bitmap (seq_cst) and
  // again before it sleeps. Either its scan sees this bit, or this load sees
  // what it stored after that scan (0 or its wake-up time), so we wake it
  // when that is later than our due time (docs/delayed.md, "The timer").
  sc.bitmap[i / 64].fetch_or(std::uint64_t{1} << (i % 64), std::memory_order_seq_cst);
  const std::uint64_t armed = sc.header->armed.load(std::memory_order_seq_cst);
  if (armed == 0 || due < armed) detail::notify(sc.header->event);
}

void free_entry(const Schedule& sc, std::uint32_t i) noexcept {
  // SYNC POINT E4 (release): pairs with the next insert's acquire CAS (E1).
  sc.entry(i).state.store(0, std::memory_order_release);
  detail::notify(sc.header->space);
}

}  // namespace

namespace detail {

std::uint64_t wall_ns() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000u +
         static_cast<std::uint64_t>(ts.tv_nsec);
}

ScheduleCounts count_schedule(const Region& r, std::uint64_t now_ns) noexcept {
  ScheduleCounts c;
  const Schedule& sc = r.schedule();
  for (std::uint32_t i = 0; i < sc.capacity; ++i) {
    const ScheduleEntry& e = sc.entry(i);
    // Acquire: pairs with E2; a count, so a racing change only shifts it.
    const std::uint64_t w = e.state.load(std::memory_order_acquire);
    if (w == 0) continue;
    ++c.scheduled;
    if (entry_state(w) != EntryState::Ready) continue;
    const std::uint64_t due = e.due_ns.load(std::memory_order_relaxed);
    if (due < now_ns) ++c.overdue;
    if (c.next_due_ns == 0 || due < c.next_due_ns) c.next_due_ns = std::max<std::uint64_t>(due, 1);
  }
  return c;
}

std::uint32_t free_writers_of(const Region& r, std::uint32_t pid) noexcept {
  const Schedule& sc = r.schedule();
  std::uint32_t freed = 0;
  for (std::uint32_t i = 0; i < sc.capacity; ++i) {
    std::uint64_t w = entry_word(EntryState::Writing, pid);
    // Relaxed on success: the dead writer's bytes are garbage nobody reads;
    // free_entry's release store is not needed, the CAS is the change.
    if (sc.entry(i).state.compare_exchange_strong(w, 0, std::memory_order_relaxed,
                                                  std::memory_order_relaxed))
      ++freed;
  }
  if (freed != 0) detail::notify(sc.header->space);
  return freed;
}

// ---- the mover --------------------------------------------------------------

namespace {

// Waits on `word` while it holds `expected`, until the wall-clock time
// `deadline_ns` (kNone: no deadline). An absolute CLOCK_REALTIME deadline
// (FUTEX_WAIT_BITSET): due times are wall-clock times, and the wait follows
// the clock when it is set.
void futex_wait_until(std::atomic<std::uint32_t>& word, std::uint32_t expected,
                      std::uint64_t deadline_ns) noexcept {
  timespec ts{};
  timespec* at = nullptr;
  if (deadline_ns != kNone) {
    ts.tv_sec = static_cast<time_t>(deadline_ns / 1'000'000'000u);
    ts.tv_nsec = static_cast<long>(deadline_ns % 1'000'000'000u);
    at = &ts;
  }
  // Not _PRIVATE: producers of other processes wake it.
  ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word),
            FUTEX_WAIT_BITSET | FUTEX_CLOCK_REALTIME, expected, at, nullptr,
            FUTEX_BITSET_MATCH_ANY);
}

// How long the mover waits for room in a full partition under Block before
// it looks at stop() and the clock again.
constexpr std::chrono::milliseconds kMoveWait{20};
// How soon it tries again after a partition refused (Reject) or its
// publisher could not be made.
constexpr std::uint64_t kRetryNs = 1'000'000;  // 1 ms
constexpr std::uint64_t kPublisherRetryNs = 1'000'000'000;
constexpr std::uint64_t kMaxSleepNs = 1'000'000'000;

}  // namespace

Mover::Mover(std::shared_ptr<Region> region, Log warn) noexcept
    : region_(std::move(region)), warn_(std::move(warn)) {
  known_.assign(region_->schedule().capacity, false);
  // Fault injection for the crash tests (tests/test_delayed.cpp): the
  // daemon kills itself at that step of its first move.
  if (const char* f = std::getenv("SHMBUS_FAULT_MOVER"); f != nullptr) {
    const std::string_view step(f);
    crash_at_ = step == "claimed" ? 1 : step == "published" ? 2 : 0;
  }
}

Mover::~Mover() = default;

void Mover::stop(bool wake_it) noexcept {
  // Relaxed: the wake's release, and run()'s acquire load of seq, order it
  // (without the wake, run() sees it at its next pass).
  stop_.store(true, std::memory_order_relaxed);
  if (wake_it) wake(region_->schedule().header->event);
}

void Mover::forget_publisher() noexcept {
  if (pub_) pub_->head_.state.seat = nullptr;  // its destructor then frees nothing
  pub_.reset();
}

void Mover::drop_publisher() noexcept {
  if (!pub_) return;
  Publisher last = std::move(*pub_);  // pub_ keeps no seat: its destructor touches nothing
  pub_.reset();
}  // `last` frees the seat here

void Mover::rescan() noexcept {
  rescan_.store(true, std::memory_order_relaxed);  // as stop()
  wake(region_->schedule().header->event);
}

Recovered Mover::recover(const Region& r, bool previous_boot) noexcept {
  const auto alive = [&](std::uint32_t pid) {
    return !previous_boot && process_alive(static_cast<pid_t>(pid));
  };
  Recovered out;
  const Schedule& sc = r.schedule();
  for (std::uint32_t i = 0; i < sc.capacity; ++i) {
    ScheduleEntry& e = sc.entry(i);
    // Acquire: pairs with E2 and the mover's release CAS to Moving (E5), so
    // the target it stored before it published is read below. The writer
    // that stored it is dead: nothing changes under this loop but inserts.
    std::uint64_t w = e.state.load(std::memory_order_acquire);
    const std::uint32_t pid = entry_pid(w);
    std::uint64_t next = w;
    switch (entry_state(w)) {
      case EntryState::Free:
      case EntryState::Ready:
        continue;
      case EntryState::Writing:
        if (alive(pid)) continue;
        next = 0;
        ++out.freed;
        break;
      case EntryState::Moving: {
        // A mover that still runs (a daemon on its way out) finishes its move.
        if (pid != self_pid() && alive(pid)) continue;
        const std::uint64_t t = e.target.load(std::memory_order_relaxed);
        const std::uint32_t p = e.partition.load(std::memory_order_relaxed);
        bool delivered = false;
        if (t != kNone && p < r.partitions()) {
          // Acquire: a published stamp's message is complete (P1). Before
          // the dead mover's seat is freed, an unpublished claim of t cannot
          // be lapped: a stamp past abandoned(t) is t published, then reused.
          const std::uint64_t st = r.slot(t, p).stamp.load(std::memory_order_acquire);
          delivered = st == stamp_published(t) || st > stamp_abandoned(t);
        }
        next = delivered ? 0 : entry_word(EntryState::Ready, pid);
        ++(delivered ? out.retired : out.requeued);
        break;
      }
      default:
        next = 0;  // no state we write: a hostile or torn word
        ++out.refused;
        break;
    }
    // Release: the next insert's acquire CAS (E1) or the mover's load (E3).
    e.state.compare_exchange_strong(w, next, std::memory_order_release, std::memory_order_relaxed);
  }
  return out;
}

void Mover::found(std::uint32_t i) {
  if (i >= known_.size() || known_[i]) return;
  const ScheduleEntry& e = region_->schedule().entry(i);
  // SYNC POINT E3 (acquire): pairs with E2: the entry is complete when Ready.
  if (entry_state(e.state.load(std::memory_order_acquire)) != EntryState::Ready) return;
  heap_.push_back({e.due_ns.load(std::memory_order_relaxed),
                   e.order.load(std::memory_order_relaxed), i, round_});
  std::push_heap(heap_.begin(), heap_.end(), later);
  known_[i] = true;
}

void Mover::scan_bits() {
  const Schedule& sc = region_->schedule();
  const std::uint32_t words = (sc.capacity + 63) / 64;
  for (std::uint32_t w = 0; w < words; ++w) {
    // seq_cst: the mover's half of the Dekker pair in make_ready.
    if (sc.bitmap[w].load(std::memory_order_seq_cst) == 0) continue;
    std::uint64_t bits = sc.bitmap[w].exchange(0, std::memory_order_seq_cst);
    while (bits != 0) {
      found(w * 64 + static_cast<std::uint32_t>(std::countr_zero(bits)));
      bits &= bits - 1;
    }
  }
}

void Mover::scan_all() {
  const Schedule& sc = region_->schedule();
  // The bits first (a Ready after this sets its bit again), then every state.
  for (std::uint32_t w = 0; w < (sc.capacity + 63) / 64; ++w)
    (void)sc.bitmap[w].exchange(0, std::memory_order_seq_cst);  // an RMW, as scan_bits
  for (std::uint32_t i = 0; i < sc.capacity; ++i)
    found(i);
}

bool Mover::ensure_publisher() {
  if (pub_) return true;
  const std::uint64_t now = wall_ns();
  if (now < next_publisher_try_) return false;
  PublisherOptions o;
  o.spin = std::chrono::nanoseconds(0);  // the mover sleeps, it never owns a core
  o.timeout = kMoveWait;
  try {
    pub_ = Publisher(region_, o);
    seat_.store(pub_->id(), std::memory_order_relaxed);  // see seat()
    return true;
  } catch (const std::exception& ex) {
    next_publisher_try_ = now + kPublisherRetryNs;
    warn_("due messages wait: the mover cannot publish (" + std::string(ex.what()) + ")");
    return false;
  }
}

Status Mover::move(std::uint32_t i) {
  const Schedule& sc = region_->schedule();
  ScheduleEntry& e = sc.entry(i);
  SlotHeader& msg = sc.message(i);
  std::uint64_t w = e.state.load(std::memory_order_acquire);   // E3, as in found()
  if (entry_state(w) != EntryState::Ready) return Status::Ok;  // gone
  // Everything below comes from a producer's write into shared memory:
  // checked before it is used (and used only as read here, once).
  const std::uint32_t len = msg.length.load(std::memory_order_relaxed);
  const std::uint32_t meta = msg.meta.load(std::memory_order_relaxed);
  const std::uint32_t part = e.partition.load(std::memory_order_relaxed);
  const char* why = nullptr;
  if ((meta & kMetaDelayed) == 0)
    why = "its message is not marked delayed";
  else if (!fits(len, meta, region_->slot_size()))
    why = "its message's lengths do not fit the topic's slot";
  else if (part >= region_->partitions())
    why = "it names no partition of the topic";
  else if (!intact(region_->ring(), msg, kNone))
    why = "its message's checksum does not match (torn by a power cut)";
  if (why != nullptr) {
    if (e.state.compare_exchange_strong(w, 0, std::memory_order_release,
                                        std::memory_order_relaxed)) {
      // Relaxed: a statistic.
      sc.header->refused.fetch_add(1, std::memory_order_relaxed);
      detail::notify(sc.header->space);
      warn_("schedule entry " + std::to_string(i) + " (pid " + std::to_string(entry_pid(w)) +
            ") refused and freed: " + why);
    }
    return Status::Ok;
  }
  // Relaxed: ordered before the CAS's release (E5).
  e.target.store(kNone, std::memory_order_relaxed);
  // SYNC POINT E5 (acq_rel): acquire as E3; release: a restarted daemon that
  // reads Moving (recover) reads the target stored before it.
  if (!e.state.compare_exchange_strong(w, entry_word(EntryState::Moving, self_pid()),
                                       std::memory_order_acq_rel, std::memory_order_relaxed))
    return Status::Ok;  // changed under us (a hostile writer): look again later
  Publisher& pub = *pub_;
  detail::ProducerLane& l = pub.lane(part);
  const auto index = static_cast<std::uint32_t>(std::countr_one(l.state.claims_used));
  std::uint64_t s = 0;
  if (const Status st = pub.claim(l, {true, kMoveWait}, index, s); st != Status::Ok) {
    // Nothing claimed: Ready again, for the next try. A CAS: only if the
    // entry is still ours (release as E2).
    std::uint64_t mine = entry_word(EntryState::Moving, self_pid());
    e.state.compare_exchange_strong(mine, w, std::memory_order_release, std::memory_order_relaxed);
    return st;
  }
  // Relaxed: the stamp's release in commit (P1) publishes it with the
  // message; a restarted daemon reads it after this process is dead.
  e.target.store(s, std::memory_order_relaxed);
  if (crash_at_ == 1) [[unlikely]]
    ::raise(SIGKILL);
  SlotHeader& slot = l.ring.slot(s);
  // Key, properties, due time and payload are laid out as in the slot.
  std::memcpy(detail::payload(slot), detail::payload(msg), meta_span(meta) + len);
  detail::commit_as(l.ring, l.state, slot, s, len, meta,
                    msg.tag_hash.load(std::memory_order_relaxed), index,
                    msg.timestamp_ns.load(std::memory_order_relaxed),
                    msg.producer_id.load(std::memory_order_relaxed));
  if (crash_at_ == 2) [[unlikely]]
    ::raise(SIGKILL);
  free_entry(sc, i);
  sc.header->moved.fetch_add(1, std::memory_order_relaxed);  // a statistic
  return Status::Ok;
}

bool Mover::later(const Item& a, const Item& b) noexcept {
  return a.due != b.due ? a.due > b.due : a.order > b.order;
}

void Mover::run() noexcept {
  const Schedule& sc = region_->schedule();
  EventCount& ev = sc.header->event;
  // Its sleeps end at due times: a timer slack of 1 us instead of the
  // default 50 us (this thread only; best effort).
  (void)::prctl(PR_SET_TIMERSLACK, 1000UL, 0UL, 0UL, 0UL);
  // The mover counts as a waiter for as long as it runs, so that an insert
  // due before `armed` always bumps the event (notify).
  ev.waiters.store(1, std::memory_order_seq_cst);
  while (!stop_.load(std::memory_order_relaxed)) {
    // Acquire: pairs with wake()'s release: what a waker stored before is seen.
    const std::uint32_t key = ev.seq.load(std::memory_order_acquire);
    // seq_cst: the Dekker pair with make_ready (see there).
    sc.header->armed.store(0, std::memory_order_seq_cst);
    // The clock before the scan: an entry due by `now` that was Ready by
    // then is found by this scan, so nothing due later is moved before it.
    const std::uint64_t now = wall_ns();
    ++round_;
    if (rescan_.exchange(false, std::memory_order_relaxed))
      scan_all();
    else
      scan_bits();
    std::uint64_t wake_at = kNone;
    bool again = false;
    while (!heap_.empty() && heap_.front().due <= now && !stop_.load(std::memory_order_relaxed)) {
      if (heap_.front().round == round_) {
        again = true;  // found by this scan: one more scan first (see Item::round)
        break;
      }
      if (!ensure_publisher()) {
        wake_at = next_publisher_try_;
        break;
      }
      const std::uint32_t i = heap_.front().index;
      const Status st = move(i);
      if (st == Status::Ok) {
        std::pop_heap(heap_.begin(), heap_.end(), later);
        heap_.pop_back();
        known_[i] = false;
        continue;
      }
      if (st == Status::TopicDeleted) return;
      // The partition is full (Block: we waited kMoveWait; Reject: at once):
      // the head of the schedule waits, and everything due after it.
      wake_at = wall_ns() + kRetryNs;
      break;
    }
    if (again) continue;
    if (wake_at == kNone && !heap_.empty()) wake_at = heap_.front().due;
    if (wake_at != kNone && wake_at <= now) continue;
    sc.header->armed.store(wake_at, std::memory_order_seq_cst);  // as above
    // At most kMaxSleepNs: stop() is seen even if its wake-up is lost (a
    // region that faults), and a clock set back does not oversleep by more.
    futex_wait_until(ev.seq, key, std::min(wake_at, wall_ns() + kMaxSleepNs));
  }
  ev.waiters.store(0, std::memory_order_relaxed);  // a hint only (see above)
}

}  // namespace detail

// ---- the producer's side ------------------------------------------------------

Status Publisher::schedule_claim(const Route& route, std::size_t size, Patience p,
                                 std::uint64_t due_ns, Loan& out) noexcept {
  const detail::Schedule& sc = region_->schedule();
  if (sc.header == nullptr) return Status::NoSchedule;
  detail::ProducerLane* l = nullptr;
  if (const Status st = resolve(route, l); st != Status::Ok) return st;
  std::uint32_t meta = 0, tag = 0;
  if (const Status st = detail::route_meta(route, meta, tag); st != Status::Ok) return st;
  meta |= detail::kMetaDelayed;
  if (size + detail::meta_span(meta) > l->ring.slot_size) return Status::TooLarge;
  if (detail::deleted(l->ring)) return Status::TopicDeleted;
  const std::uint32_t pid = self_pid();
  std::uint32_t i = 0;
  if (!take_free(sc, pid, i)) {
    // A full schedule answers as a full ring: only Block waits; Overwrite
    // refuses too, as nothing scheduled is ever dropped for a newcomer.
    if (!p.wait || l->ring.policy != Policy::Block) return Status::WouldBlock;
    bool gone = false;
    const detail::Waited w = detail::wait_for(
        sc.header->space, options_.wait, p.timeout, options_.spin, options_.interrupt,
        [&] {
          // A delete is seen at the next recheck (every 10 ms): it does not
          // wake the schedule's space sleepers.
          gone = detail::deleted(l->ring);
          return gone || take_free(sc, pid, i);
        },
        std::chrono::milliseconds(10));
    if (gone) return Status::TopicDeleted;  // no entry was taken
    if (w != detail::Waited::Ready) return detail::status_of(w, Status::Ok);
  }
  detail::ScheduleEntry& e = sc.entry(i);
  detail::SlotHeader& msg = sc.message(i);
  // Relaxed: all published by make_ready's release store (E2).
  e.due_ns.store(due_ns, std::memory_order_relaxed);
  e.partition.store(index_of(*l), std::memory_order_relaxed);
  e.target.store(detail::kNone, std::memory_order_relaxed);
  msg.meta.store(meta, std::memory_order_relaxed);
  msg.tag_hash.store(tag, std::memory_order_relaxed);
  msg.producer_id.store(head_.state.seat_index, std::memory_order_relaxed);
  std::byte* at = detail::payload(msg);
  if (meta != detail::kMetaDelayed) detail::write_meta(at, route);
  std::memcpy(at + detail::meta_due_offset(meta), &due_ns, sizeof due_ns);
  out.pub_ = this;
  out.lane_ = l;
  out.slot_ = &msg;
  out.size_ = static_cast<std::uint32_t>(size);
  out.meta_ = meta;
  out.tag_ = tag;
  out.partition_ = index_of(*l);
  out.entry_ = i;
  out.due_ns_ = due_ns;
  out.seq_ = 0;
  return Status::Ok;
}

Status Publisher::schedule_commit(Loan& l, std::size_t size) noexcept {
  const detail::Schedule& sc = region_->schedule();
  detail::SlotHeader& msg = *l.slot_;
  // Relaxed: published by make_ready's release (E2).
  msg.length.store(static_cast<std::uint32_t>(size), std::memory_order_relaxed);
  const std::uint64_t now = clock_.now();
  msg.timestamp_ns.store(now, std::memory_order_relaxed);
  // A file topic's entry carries its message's checksum as a slot does (the
  // entry's message has the slot's stride, trailer included), seeded with
  // kNone for "not yet in a ring": the mover checks it before it moves.
  if (head_.ring.checksummed)
    detail::checksum_of(head_.ring, msg)
        .store(detail::slot_checksum(msg, detail::kNone, static_cast<std::uint32_t>(size),
                                     msg.meta.load(std::memory_order_relaxed),
                                     msg.producer_id.load(std::memory_order_relaxed), now,
                                     msg.tag_hash.load(std::memory_order_relaxed)),
               std::memory_order_relaxed);
  make_ready(sc, l.entry_, self_pid(), l.due_ns_);
  l.slot_ = nullptr;
  l.pub_ = nullptr;
  return Status::Ok;
}

void Publisher::schedule_abandon(Loan& l) noexcept {
  free_entry(region_->schedule(), l.entry_);
  l.slot_ = nullptr;
  l.pub_ = nullptr;
}

Loan Publisher::schedule_loan(const Route& route, WallClock::time_point when, std::size_t size,
                              Patience p) noexcept {
  Loan l;
  l.status_ = schedule_claim(route, size, p, ns_of(when), l);
  return l;
}

Status Publisher::schedule_impl(const Route& route, WallClock::time_point when,
                                std::span<const std::byte> data, Patience p) noexcept {
  Loan l;
  if (const Status st = schedule_claim(route, data.size(), p, ns_of(when), l); st != Status::Ok)
    return st;
  if (!data.empty()) std::memcpy(detail::payload(*l.slot_, l.meta_), data.data(), data.size());
  return schedule_commit(l, data.size());
}

}  // namespace shmbus
