// Delayed and scheduled messages (issue 16): Publisher::publish_at /
// publish_after / loan_at, the topic's schedule in shared memory, and
// shmbusd as the mover. Real daemons over their real sockets, real
// processes, real SIGKILLs. No test depends on how fast a process runs: a
// message is due either far in the future (never seen) or at a time the
// test then waits past with a timeout; order is checked only among messages
// whose publish returned before they were due (recorded by their producer).
#include <signal.h>
#include <sys/mman.h>

#include <algorithm>
#include <array>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "daemon_util.hpp"
#include "region.hpp"
#include "schedule.hpp"

namespace shmbus::test {
namespace {

using namespace std::chrono_literals;
using WallClock = std::chrono::system_clock;

constexpr auto kWait = 10s;

TopicOptions delay_options(std::uint32_t delay_slots, std::uint32_t slots = 64,
                           Policy policy = Policy::Block) {
  TopicOptions o = ring_options(slots, 64, policy);
  o.delay_slots = delay_slots;
  return o;
}

WallClock::time_point at_ns(std::uint64_t ns) {
  return WallClock::time_point(
      std::chrono::duration_cast<WallClock::duration>(std::chrono::nanoseconds(ns)));
}

struct Daemon {
  BusFixture f;
  DaemonProcess d{f.bus, f.socket};
  Daemon() { EXPECT_TRUE(d.start()); }
  Bus bus() const { return Bus::connect(f.options()); }
};

TEST(Delayed, ATopicWithoutAScheduleRefusesWithNoSchedule) {
  Daemon d;
  Bus bus = d.bus();
  Topic t = bus.create_topic("plain", ring_options());
  Publisher p = t.publisher();
  EXPECT_EQ(p.publish_after(1ms, bytes_of("x")), Status::NoSchedule);
  EXPECT_EQ(p.publish_at(WallClock::now(), bytes_of("x")), Status::NoSchedule);
  Loan l = p.loan_after(1ms, 8);
  EXPECT_FALSE(l);
  EXPECT_EQ(l.status(), Status::NoSchedule);
  EXPECT_EQ(bus.describe("plain").options.delay_slots, 0u);
}

TEST(Delayed, BadScheduleOptionsAreRefusedAtCreate) {
  Daemon d;
  Bus bus = d.bus();
  TopicOptions single = delay_options(8);
  single.single_producer = true;
  try {
    (void)bus.create_topic("single", single);
    FAIL() << "a single-producer topic with delay_slots was created";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
    EXPECT_NE(std::string(e.what()).find("single_producer"), std::string::npos) << e.what();
  }
  try {
    (void)bus.create_topic("huge", delay_options(detail::kMaxDelaySlots + 1));
    FAIL() << "delay_slots above the limit was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
  }
}

// Invisible until due; then appended as a fresh message with the offset it
// gets then, keeping its publish timestamp, producer id, key and
// properties, and saying when it was due.
TEST(Delayed, ADueMessageIsAppendedAsAFreshMessageWithItsOwnMetadata) {
  Daemon d;
  Bus bus = d.bus();
  Topic t = bus.create_topic("orders", delay_options(16));
  auto sub = t.subscriber({.group = "g", .start = StartFrom::Earliest});
  Publisher p = t.publisher();
  const auto far = WallClock::now() + 1h;
  ASSERT_EQ(p.publish_at(far, bytes_of("much later")), Status::Ok);
  const std::array<Property, 1> props{{{"tag", "TagA"}}};
  Route r = Route::with_key("user-7");
  r.properties = props;
  const auto due = WallClock::now() + 150ms;
  ASSERT_EQ(p.publish_at(r, due, bytes_of("soon"), kWait), Status::Ok);
  ASSERT_EQ(p.publish(bytes_of("now")), Status::Ok);

  Sample first;
  ASSERT_EQ(sub->receive(first, kWait), Status::Ok);
  EXPECT_EQ(string_of(first.data()), "now");
  EXPECT_EQ(first.sequence(), 0u) << "the delayed messages have no offset yet";
  EXPECT_FALSE(first.deliver_at().has_value());
  EXPECT_EQ(first.deliver_at_ns(), 0u);
  const std::uint64_t now_ts = first.timestamp_ns();
  first.release();

  Sample s;
  ASSERT_EQ(sub->receive(s, kWait), Status::Ok);
  const auto seen = WallClock::now();
  EXPECT_EQ(string_of(s.data()), "soon");
  EXPECT_EQ(s.sequence(), 1u);
  EXPECT_EQ(string_of(s.key()), "user-7");
  EXPECT_EQ(s.properties().tag(), "TagA");
  EXPECT_EQ(s.producer_id(), p.id());
  EXPECT_LT(s.timestamp_ns(), now_ts) << "the publish's own timestamp, not the move's";
  ASSERT_TRUE(s.deliver_at().has_value());
  EXPECT_EQ(*s.deliver_at(), due);
  EXPECT_GE(seen, due) << "delivered before it was due";
  s.release();

  // The mover retires the entry right after the publish we saw.
  EXPECT_TRUE(wait_until([&] { return bus.describe("orders").moved == 1; }, kWait));
  const TopicStatus st = bus.describe("orders");
  EXPECT_EQ(st.options.delay_slots, 16u);
  EXPECT_EQ(st.scheduled, 1u);
  EXPECT_EQ(st.overdue, 0u);
  EXPECT_EQ(st.next_due_ns,
            static_cast<std::uint64_t>(std::chrono::nanoseconds(far.time_since_epoch()).count()));
  EXPECT_EQ(st.moved, 1u);
  EXPECT_EQ(st.tail, 2u);
}

TEST(Delayed, ATimeInThePastDeliversAtOnceAndLoansScheduleOnPublish) {
  Daemon d;
  Bus bus = d.bus();
  Topic t = bus.create_topic("past", delay_options(4));
  auto sub = t.subscriber({.group = "g", .start = StartFrom::Earliest});
  Publisher p = t.publisher();
  const auto past = at_ns(1'000'000'000);  // 1970
  ASSERT_EQ(p.publish_at(past, bytes_of("late")), Status::Ok);
  Sample s;
  ASSERT_EQ(sub->receive(s, kWait), Status::Ok);
  EXPECT_EQ(string_of(s.data()), "late");
  EXPECT_EQ(s.deliver_at(), past);
  s.release();
  ASSERT_EQ(p.publish_after(-5s, bytes_of("negative")), Status::Ok);
  ASSERT_EQ(sub->receive(s, kWait), Status::Ok);
  EXPECT_EQ(string_of(s.data()), "negative");
  s.release();

  // The mover retires an entry right after the publish a consumer sees.
  ASSERT_TRUE(wait_until([&] { return bus.describe("past").scheduled == 0; }, kWait));
  {
    Loan dropped = p.loan_after(0ms, 8);
    ASSERT_TRUE(dropped);
    EXPECT_EQ(bus.describe("past").scheduled, 1u) << "a loan holds its entry";
  }
  EXPECT_EQ(bus.describe("past").scheduled, 0u) << "a dropped loan schedules nothing";
  Loan l = p.loan_at(past, 5);
  ASSERT_TRUE(l);
  EXPECT_EQ(l.sequence(), 0u);
  std::memcpy(l.data().data(), "loan!", 5);
  ASSERT_EQ(l.publish(5), Status::Ok);
  ASSERT_EQ(sub->receive(s, kWait), Status::Ok);
  EXPECT_EQ(string_of(s.data()), "loan!");
  EXPECT_EQ(s.deliver_at(), past);
  EXPECT_EQ(p.publish_after(1ms, std::vector<std::byte>(64)), Status::TooLarge)
      << "the due time takes 8 of the slot's bytes";
}

// A full schedule answers as a full ring: Reject and Overwrite refuse at
// once, Block waits up to its timeout. Nothing scheduled is dropped.
TEST(Delayed, AFullScheduleAnswersLikeAFullRingUnderEachPolicy) {
  Daemon d;
  Bus bus = d.bus();
  for (const Policy pol : {Policy::Reject, Policy::Overwrite, Policy::Block}) {
    const std::string name = "full" + std::to_string(static_cast<int>(pol));
    Topic t = bus.create_topic(name, delay_options(2, 64, pol));
    Publisher p = t.publisher();
    const auto far = WallClock::now() + 1h;
    ASSERT_EQ(p.publish_at(Route{}, far, bytes_of("a"), 0ms), Status::Ok);
    ASSERT_EQ(p.publish_at(Route{}, far, bytes_of("b"), 0ms), Status::Ok);
    const Status third = p.publish_at(Route{}, far, bytes_of("c"), 30ms);
    EXPECT_EQ(third, pol == Policy::Block ? Status::Timeout : Status::WouldBlock) << name;
    EXPECT_EQ(p.try_publish_at(Route{}, far, bytes_of("c")), Status::WouldBlock) << name;
    EXPECT_EQ(bus.describe(name).scheduled, 2u) << name << ": nothing scheduled was dropped";
  }
  // Under Block a waiting publish goes in once the mover frees an entry.
  Topic t = bus.create_topic("room", delay_options(2));
  auto sub = t.subscriber({.group = "g", .start = StartFrom::Earliest});
  Publisher p = t.publisher();
  const auto soon = WallClock::now() + 200ms;
  ASSERT_EQ(p.publish_at(soon, bytes_of("1")), Status::Ok);
  ASSERT_EQ(p.publish_at(soon, bytes_of("2")), Status::Ok);
  ASSERT_EQ(p.publish_at(Route{}, soon, bytes_of("3"), kWait), Status::Ok);
  std::vector<std::string> got;
  Sample s;
  while (got.size() < 3 && sub->receive(s, kWait) == Status::Ok) {
    got.push_back(string_of(s.data()));
    s.release();
  }
  EXPECT_EQ(got, (std::vector<std::string>{"1", "2", "3"})) << "same due time: publish order";
}

// The payload of the ordering test: who published it, its index, and when
// it is due.
struct Stamp {
  std::uint32_t producer, index;
  std::uint64_t due;
};

// 10,000 delayed messages from 3 processes, due 0-2 s after their publish:
// each arrives exactly once, never before it is due, and those whose publish
// returned before they were due arrive in due-time order (ties: publish
// order within a producer).
TEST(Delayed, TenThousandFromThreeProcessesArriveOnceInDueOrder) {
  constexpr std::uint32_t kProducers = 3, kEach = 3334, kTotal = kProducers * kEach;
  Daemon d;
  // Per message: 1 when its publish returned before its due time; [kTotal]:
  // the go signal. The producers are forked before this process has threads
  // (its Bus's), so that theirs are the first of their own (TSan's rule).
  auto* shared = static_cast<std::atomic<std::uint8_t>*>(
      ::mmap(nullptr, kTotal + 1, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  ASSERT_NE(shared, MAP_FAILED);
  std::atomic<std::uint8_t>* on_time = shared;
  std::atomic<std::uint8_t>& go = shared[kTotal];
  std::vector<pid_t> kids;
  for (std::uint32_t k = 0; k < kProducers; ++k)
    kids.push_back(spawn([&, k] {
      if (!wait_until([&] { return go.load(std::memory_order_acquire) == 1; }, 30s)) return 2;
      Bus b = Bus::connect(d.f.options());
      Publisher p = b.publisher("ordered");
      std::mt19937_64 rng(k * 7919 + 1);
      for (std::uint32_t i = 0; i < kEach; ++i) {
        // Whole milliseconds, so that many messages share a due time.
        const std::uint64_t due = (detail::wall_ns() / 1'000'000 + rng() % 2000) * 1'000'000;
        const Stamp m{k, i, due};
        if (p.publish_at(at_ns(due), std::as_bytes(std::span(&m, 1))) != Status::Ok) return 1;
        if (detail::wall_ns() < due) on_time[k * kEach + i].store(1, std::memory_order_relaxed);
      }
      return 0;
    }));
  Bus bus = d.bus();
  Topic t = bus.create_topic("ordered", delay_options(16384, 16384));
  auto sub = t.subscriber({.group = "g", .start = StartFrom::Earliest});
  go.store(1, std::memory_order_release);
  std::vector<Stamp> got;
  std::vector<std::uint64_t> seen_at;
  Sample s;
  while (got.size() < kTotal && sub->receive(s, kWait) == Status::Ok) {
    seen_at.push_back(detail::wall_ns());
    Stamp m{};
    ASSERT_EQ(s.data().size(), sizeof m);
    std::memcpy(&m, s.data().data(), sizeof m);
    EXPECT_EQ(s.deliver_at_ns(), m.due);
    got.push_back(m);
    s.release();
  }
  for (const pid_t k : kids)
    EXPECT_EQ(wait_child(k, 60s), 0);
  ASSERT_EQ(got.size(), kTotal);
  EXPECT_EQ(sub->try_receive(s), Status::WouldBlock) << "a message came twice";
  std::set<std::pair<std::uint32_t, std::uint32_t>> distinct;
  std::size_t checked = 0, early = 0, disorder = 0;
  const Stamp* last = nullptr;
  for (std::size_t n = 0; n < got.size(); ++n) {
    const Stamp& m = got[n];
    ASSERT_LT(m.producer, kProducers);
    ASSERT_LT(m.index, kEach);
    distinct.emplace(m.producer, m.index);
    if (seen_at[n] < m.due) ++early;
    if (on_time[m.producer * kEach + m.index].load(std::memory_order_relaxed) == 0) continue;
    ++checked;
    if (last != nullptr &&
        (m.due < last->due ||
         (m.due == last->due && m.producer == last->producer && m.index < last->index)))
      ++disorder;
    last = &m;
  }
  EXPECT_EQ(distinct.size(), kTotal) << "a message came twice or not at all";
  EXPECT_EQ(early, 0u) << "messages seen before they were due";
  EXPECT_EQ(disorder, 0u) << "out of due order among " << checked << " on-time messages";
  EXPECT_GT(checked, 0u);
  ::munmap(shared, kTotal + 1);
  EXPECT_TRUE(wait_until([&] { return bus.describe("ordered").scheduled == 0; }, kWait));
}

// Nothing lost, nothing twice: the daemon SIGKILLed 20 times while it moves
// 2,000 messages, restarted each time.
TEST(Delayed, EveryDueMessageIsAppendedExactlyOnceAcrossTwentyDaemonKills) {
  constexpr std::uint32_t kMessages = 2000, kKills = 20;
  BusFixture f;
  auto d = std::make_unique<DaemonProcess>(f.bus, f.socket);
  ASSERT_TRUE(d->start());
  std::unique_ptr<Subscriber> sub;
  Bus bus = Bus::connect(f.options());  // its connection dies with the first daemon
  {
    Topic t = bus.create_topic("kills", delay_options(4096, 4096));
    sub = t.subscriber({.group = "g", .start = StartFrom::Earliest});
    Publisher p = t.publisher();
    // Due over 3 s, in random order.
    const std::uint64_t base = detail::wall_ns();
    std::mt19937_64 rng(42);
    for (std::uint32_t i = 0; i < kMessages; ++i) {
      const std::uint64_t due = base + rng() % 3'000'000'000u;
      ASSERT_EQ(p.publish_at(at_ns(due), std::as_bytes(std::span(&i, 1))), Status::Ok);
    }
  }
  std::vector<std::uint32_t> count(kMessages, 0);
  std::uint32_t received = 0;
  const auto take = [&](std::chrono::milliseconds wait) {
    Sample s;
    if (sub->receive(s, wait) != Status::Ok) return false;
    std::uint32_t i = 0;
    EXPECT_EQ(s.data().size(), sizeof i);
    std::memcpy(&i, s.data().data(), sizeof i);
    EXPECT_LT(i, kMessages);
    if (i < kMessages) ++count[i];
    ++received;
    return true;
  };
  for (std::uint32_t k = 0; k < kKills; ++k) {
    // Kill once the mover has made progress since the last start (or all is
    // there): at a random point of some move.
    const std::uint32_t goal = std::min(kMessages, received + kMessages / (2 * kKills));
    while (received < goal && take(kWait)) {
    }
    d->kill9();
    d = std::make_unique<DaemonProcess>(f.bus, f.socket);
    ASSERT_TRUE(d->start()) << "restart " << k;
  }
  while (received < kMessages && take(kWait)) {
  }
  EXPECT_FALSE(take(200ms)) << "more messages than were published";
  std::uint32_t missing = 0, twice = 0;
  for (const std::uint32_t c : count) {
    missing += c == 0 ? 1 : 0;
    twice += c > 1 ? 1 : 0;
  }
  EXPECT_EQ(missing, 0u);
  EXPECT_EQ(twice, 0u);
  Bus after = Bus::connect(f.options());
  EXPECT_TRUE(wait_until([&] { return after.describe("kills").scheduled == 0; }, kWait));
}

// The daemon killed at the two steps of a move a restarted daemon must tell
// apart (SHMBUS_FAULT_MOVER): after it claimed the offset (the message is
// moved again; the claim is abandoned with the dead daemon's seat), and
// after it published there (the entry is retired, not moved twice).
TEST(Delayed, ADaemonKilledMidMoveDeliversTheMessageOnce) {
  for (const char* step : {"claimed", "published"}) {
    SCOPED_TRACE(step);
    BusFixture f;
    ::setenv("SHMBUS_FAULT_MOVER", step, 1);
    auto d = std::make_unique<DaemonProcess>(f.bus, f.socket);
    const bool started = d->start();
    ::unsetenv("SHMBUS_FAULT_MOVER");
    ASSERT_TRUE(started);
    Bus bus = Bus::connect(f.options());
    Topic t = bus.create_topic("mid", delay_options(4));
    auto sub = t.subscriber({.group = "g", .start = StartFrom::Earliest});
    Publisher p = t.publisher();
    ASSERT_EQ(p.publish_after(0ms, bytes_of("once")), Status::Ok);
    // The daemon dies at that step of this move.
    ASSERT_TRUE(wait_until([&] { return d->exited(); }, kWait));
    EXPECT_EQ(d->status(), 128 + SIGKILL);
    EXPECT_EQ(t.status().scheduled, 1u) << "the entry is Moving";
    d = std::make_unique<DaemonProcess>(f.bus, f.socket);
    ASSERT_TRUE(d->start());
    Sample s;
    ASSERT_EQ(sub->receive(s, kWait), Status::Ok);
    EXPECT_EQ(string_of(s.data()), "once");
    EXPECT_EQ(s.sequence(), std::string_view(step) == "claimed" ? 1u : 0u)
        << "moved again past the abandoned claim, or retired where it was published";
    s.release();
    EXPECT_TRUE(wait_until([&] { return t.status().scheduled == 0; }, kWait));
    // Nothing else comes: the abandoned claim is skipped, nothing twice.
    ASSERT_EQ(p.publish(bytes_of("marker")), Status::Ok);
    ASSERT_EQ(sub->receive(s, kWait), Status::Ok);
    EXPECT_EQ(string_of(s.data()), "marker");
  }
}

// While no daemon runs, due messages wait; the next daemon delivers them.
TEST(Delayed, DueMessagesWaitForTheDaemonAndComeWhenItIsBack) {
  BusFixture f;
  auto d = std::make_unique<DaemonProcess>(f.bus, f.socket);
  ASSERT_TRUE(d->start());
  Bus bus = Bus::connect(f.options());
  Topic t = bus.create_topic("waiting", delay_options(16));
  auto sub = t.subscriber({.group = "g", .start = StartFrom::Earliest});
  Publisher p = t.publisher();
  d->kill9();
  for (std::uint32_t i = 0; i < 10; ++i)
    ASSERT_EQ(p.publish_after(0ms, std::as_bytes(std::span(&i, 1))), Status::Ok);
  // No mover runs: nothing can have been appended.
  EXPECT_EQ(t.status().tail, 0u);
  EXPECT_EQ(t.status().scheduled, 10u);
  EXPECT_EQ(t.status().overdue, 10u);
  d = std::make_unique<DaemonProcess>(f.bus, f.socket);
  ASSERT_TRUE(d->start());
  for (std::uint32_t i = 0; i < 10; ++i) {
    Sample s;
    ASSERT_EQ(sub->receive(s, kWait), Status::Ok);
    std::uint32_t v = 99;
    std::memcpy(&v, s.data().data(), sizeof v);
    EXPECT_EQ(v, i) << "due at once, in publish order";
  }
}

// A producer SIGKILLed while it holds an entry (a delayed loan, Writing):
// the daemon's clean-up frees the entry.
TEST(Delayed, AProducerKilledWhileInsertingLeavesNoEntryBehind) {
  Daemon d;
  Bus bus = d.bus();
  Topic t = bus.create_topic("dying", delay_options(4));
  SharedCounters* sync = make_shared_counters();
  const pid_t kid = spawn([&] {
    Bus b = Bus::connect(d.f.options());
    Publisher p = b.publisher("dying");
    Loan l = p.loan_after(0ms, 8);
    if (!l) return 1;
    sync->value[0].store(1, std::memory_order_release);
    for (;;)
      ::pause();  // killed here, mid-insert
  });
  ASSERT_TRUE(
      wait_until([&] { return sync->value[0].load(std::memory_order_acquire) == 1; }, kWait));
  EXPECT_EQ(bus.describe("dying").scheduled, 1u);
  ::kill(kid, SIGKILL);
  EXPECT_EQ(wait_child(kid, kWait), 128 + SIGKILL);
  EXPECT_TRUE(wait_until([&] { return bus.describe("dying").scheduled == 0; }, kWait))
      << "the dead producer's entry was not freed";
  // And the schedule still works.
  auto sub = t.subscriber({.group = "g", .start = StartFrom::Earliest});
  Publisher p = t.publisher();
  ASSERT_EQ(p.publish_after(0ms, bytes_of("after")), Status::Ok);
  Sample s;
  ASSERT_EQ(sub->receive(s, kWait), Status::Ok);
  EXPECT_EQ(string_of(s.data()), "after");
}

// Entries written by hand into the schedule, as a hostile or broken
// producer could: the daemon refuses them (counted, logged), never copies
// out of bounds, and keeps moving the good ones.
TEST(Delayed, HostileEntriesAreRefusedAndTheGoodOnesStillMove) {
  Daemon d;
  Bus bus = d.bus();
  Topic t = bus.create_topic("hostile", delay_options(8));
  auto sub = t.subscriber({.group = "g", .start = StartFrom::Earliest});
  auto region = region_of(d.f.socket, d.f.bus, "hostile");
  const detail::Schedule& sc = region->schedule();
  ASSERT_NE(sc.header, nullptr);
  const auto forge = [&](std::uint32_t i, std::uint32_t len, std::uint32_t meta,
                         std::uint32_t partition) {
    detail::ScheduleEntry& e = sc.entry(i);
    detail::SlotHeader& m = sc.message(i);
    e.due_ns.store(0, std::memory_order_relaxed);
    e.partition.store(partition, std::memory_order_relaxed);
    m.length.store(len, std::memory_order_relaxed);
    m.meta.store(meta, std::memory_order_relaxed);
    e.state.store(detail::entry_word(detail::EntryState::Ready, 1), std::memory_order_release);
    sc.bitmap[0].fetch_or(std::uint64_t{1} << i, std::memory_order_seq_cst);
  };
  forge(5, 1u << 30, detail::kMetaDelayed, 0);     // a length past the slot
  forge(6, 4, detail::kMetaDelayed | 0xffffu, 0);  // a key past the slot
  forge(7, 4, detail::kMetaDelayed, 9);            // no such partition
  forge(4, 4, 0, 0);                               // not marked delayed
  Publisher p = t.publisher();
  ASSERT_EQ(p.publish_after(0ms, bytes_of("good")), Status::Ok);  // wakes the mover
  Sample s;
  ASSERT_EQ(sub->receive(s, kWait), Status::Ok);
  EXPECT_EQ(string_of(s.data()), "good");
  s.release();
  EXPECT_TRUE(wait_until([&] { return bus.describe("hostile").refused == 4; }, kWait))
      << bus.describe("hostile").refused;
  EXPECT_TRUE(wait_until([&] { return bus.describe("hostile").scheduled == 0; }, kWait));
  EXPECT_EQ(sub->try_receive(s), Status::WouldBlock) << "a refused entry was delivered";
}

}  // namespace
}  // namespace shmbus::test
