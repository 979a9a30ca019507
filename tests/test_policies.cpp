// Full-ring policies (block, reject, overwrite), which groups gate producers,
// and the wait strategies' wake-ups.
#include <thread>
#include <vector>

#include "region.hpp"

#include "test_util.hpp"

namespace shmbus::test {
namespace {

using namespace std::chrono_literals;

TopicOptions ring(std::uint32_t slots, Policy p, std::uint32_t size = 64) {
  return ring_options(slots, size, p);
}

TEST(PolicyReject, FullRingReturnsWouldBlockAtOnce) {
  ScopedTopic t("reject", ring(4, Policy::Reject));
  auto sub = t.topic.subscriber();
  Publisher pub = t.topic.publisher();
  for (int i = 0; i < 4; ++i)
    ASSERT_EQ(pub.publish(bytes_of("x")), Status::Ok);
  EXPECT_EQ(pub.publish(bytes_of("x")), Status::WouldBlock);  // even the waiting call
  EXPECT_EQ(pub.try_publish(bytes_of("x")), Status::WouldBlock);
  EXPECT_FALSE(pub.try_loan(1));
  Sample s;
  ASSERT_EQ(sub->try_receive(s), Status::Ok);
  s.release();
  EXPECT_EQ(pub.try_publish(bytes_of("y")), Status::Ok);
}

TEST(PolicyBlock, PublishTimesOutWhenNobodyConsumes) {
  ScopedTopic t("block-to", ring(4, Policy::Block));
  auto sub = t.topic.subscriber();
  PublisherOptions po;
  po.timeout = 20ms;
  Publisher pub = t.topic.publisher(po);
  for (int i = 0; i < 4; ++i)
    ASSERT_EQ(pub.publish(bytes_of("x")), Status::Ok);
  EXPECT_EQ(pub.try_publish(bytes_of("x")), Status::WouldBlock);
  EXPECT_EQ(pub.publish(bytes_of("x")), Status::Timeout);
  EXPECT_EQ(sub->lag(), 4u);  // nothing was half-accepted
}

// A producer blocked on a full ring sleeps (futex) and is woken by a release.
TEST(PolicyBlock, BlockedPublisherIsWokenByConsumer) {
  for (WaitStrategy w :
       {WaitStrategy::SpinFutex, WaitStrategy::SpinYield, WaitStrategy::BusySpin}) {
    ScopedTopic t("block-wake", ring(4, Policy::Block));
    SubscriberOptions so;
    so.wait = w;
    auto sub = t.topic.subscriber(so);
    auto region = detail::Region::open(region_name("default", t.name));
    PublisherOptions po;
    po.wait = w;
    po.timeout = 20s;
    constexpr int kCount = 2000;
    std::thread producer([&] {
      Publisher pub = t.topic.publisher(po);
      for (int i = 0; i < kCount; ++i) {
        const std::uint64_t v = i;
        ASSERT_EQ(pub.publish(std::as_bytes(std::span(&v, 1))), Status::Ok);
      }
    });
    Sample s;
    bool asleep = false;
    int sleeps = 0, woken_by_release = 0;
    for (std::uint64_t i = 0; i < kCount; ++i) {
      ASSERT_EQ(sub->receive(s, 20s), Status::Ok);
      std::uint64_t v = 0;
      std::memcpy(&v, s.data().data(), 8);
      ASSERT_EQ(v, i);
      const std::uint32_t seq_before = region->control().space_event.seq.load();
      s.release();
      if (asleep) {
        // Did the release wake the sleeping producer (bump the futex word)?
        // This thread saw `waiters` > 0 before releasing, so the release's
        // hint sees it too, unless the producer was just then inside its own
        // 1 ms re-check: counted, and required of at least one sleep below.
        if (region->control().space_event.seq.load() != seq_before) ++woken_by_release;
        asleep = false;
      }
      if (i % 500 == 0 && w == WaitStrategy::SpinFutex) {
        // Let the producer fill the ring and fall asleep on the futex: the
        // wake-up is what this tests.
        ASSERT_TRUE(wait_until(
            [&] {
              return region->control().space_event.waiters.load(std::memory_order_relaxed) > 0;
            },
            30s));
        asleep = true;
        ++sleeps;
      }
    }
    if (sleeps > 0) {
      EXPECT_GT(woken_by_release, 0) << "releases woke none of " << sleeps << " sleeps";
    }
    producer.join();
  }
}

TEST(PolicyBlock, OnlyGroupsWithMembersOrDurableGate) {
  ScopedTopic t("gating", ring(4, Policy::Block));
  Publisher pub = t.topic.publisher(PublisherOptions{WaitStrategy::SpinFutex, 1ms});
  // No subscribers: producers run free; the ring keeps the last 4.
  for (int i = 0; i < 10; ++i)
    ASSERT_EQ(pub.publish(bytes_of("x")), Status::Ok);
  SubscriberOptions g;
  g.group = "transient";
  { auto m = t.topic.subscriber(g); }  // joined and left: the group no longer gates
  for (int i = 0; i < 10; ++i)
    ASSERT_EQ(pub.publish(bytes_of("x")), Status::Ok);
  auto m = t.topic.subscriber(g);  // back: resumes at 10, which was overwritten
  Sample s;
  ASSERT_EQ(m->try_receive(s), Status::Ok);
  EXPECT_EQ(s.sequence(), 16u);  // the oldest retained
  EXPECT_EQ(m->lost(), 6u);
  s.release();
  SubscriberOptions d;
  d.group = "audit";
  d.durable = true;
  { auto a = t.topic.subscriber(d); }  // durable: gates with no members
  m.reset();
  for (int i = 0; i < 4; ++i)
    ASSERT_EQ(pub.publish(bytes_of("x")), Status::Ok);
  EXPECT_EQ(pub.publish(bytes_of("x")), Status::Timeout);
  auto a = t.topic.subscriber(d);
  EXPECT_EQ(a->lag(), 4u);
  ASSERT_EQ(a->try_receive(s), Status::Ok);
  EXPECT_EQ(a->lost(), 0u);
  s.release();
}

// Payload: sequence in the first 8 bytes, every other byte derived from it.
void fill_pattern(std::span<std::byte> d, std::uint64_t v) {
  std::memcpy(d.data(), &v, 8);
  for (std::size_t i = 8; i < d.size(); ++i)
    d[i] = static_cast<std::byte>((v * 131 + i) & 0xff);
}
bool pattern_ok(std::span<const std::byte> d) {
  std::uint64_t v = 0;
  std::memcpy(&v, d.data(), 8);
  for (std::size_t i = 8; i < d.size(); ++i)
    if (d[i] != static_cast<std::byte>((v * 131 + i) & 0xff)) return false;
  return true;
}

TEST(PolicyOverwrite, ProducersNeverWaitAndLaggardsCountWhatTheyLost) {
  ScopedTopic t("ow", ring(8, Policy::Overwrite));
  auto sub = t.topic.subscriber();
  Publisher pub = t.topic.publisher();
  Sample held;
  std::vector<std::byte> buf(64);
  fill_pattern(buf, 0);
  ASSERT_EQ(pub.publish(buf), Status::Ok);
  ASSERT_EQ(sub->try_receive(held), Status::Ok);
  EXPECT_TRUE(held.intact());
  for (std::uint64_t i = 1; i < 30; ++i) {
    fill_pattern(buf, i);
    ASSERT_EQ(pub.try_publish(buf), Status::Ok);  // never WouldBlock
  }
  EXPECT_FALSE(held.intact());  // its slot was reused: the reader can tell
  held.release();
  Sample s;
  ASSERT_EQ(sub->try_receive(s), Status::Ok);
  EXPECT_EQ(s.sequence(), 22u);  // 30 - 8: the oldest retained
  EXPECT_EQ(sub->lost(), 21u);   // 1..21
  EXPECT_TRUE(pattern_ok(s.data()));
}

// A writer thread laps a slow copying reader continuously: every message the
// reader gets is whole, and received + lost accounts for every sequence. The
// reader is slow by construction (as in MultiProcess.OverwriteSlowReader...):
// before each read it waits until the writer is more than two rings ahead.
TEST(PolicyOverwrite, CopyingReadsNeverReturnTornMessages) {
  constexpr std::uint32_t kSlots = 4;
  ScopedTopic t("ow-torn", ring(kSlots, Policy::Overwrite, 512));
  auto sub = t.topic.subscriber();
  constexpr std::uint64_t kCount = 200000;
  std::atomic<bool> done{false};
  std::thread writer([&] {
    Publisher pub = t.topic.publisher();
    for (std::uint64_t i = 0; i < kCount; ++i) {
      Loan l = pub.loan(512);
      if (!l) {
        ADD_FAILURE() << "loan " << i << ": " << to_string(l.status());
        break;
      }
      fill_pattern(l.data(), i);
      const Status st = l.publish();
      if (st != Status::Ok) {
        ADD_FAILURE() << "publish " << i << ": " << to_string(st);
        break;
      }
    }
    // Release: pairs with the reader's acquire loads; it has seen every publish.
    done.store(true, std::memory_order_release);
  });
  std::vector<std::byte> buf(512);
  std::uint64_t received = 0, last = 0;
  bool first = true;
  MessageInfo info;
  // A lambda, so that a failed ASSERT returns here and the writer is still joined.
  const auto read_all = [&] {
    for (;;) {
      // Two rings ahead: the slot at our position then holds a newer,
      // committed message (see the multi-process test). Acquire: as above.
      ASSERT_TRUE(wait_until(
          [&] { return sub->lag() > 2 * kSlots || done.load(std::memory_order_acquire); }, 120s))
          << "the writer stalled";
      const Status st = sub->receive_copy(buf, info, 1ms);
      if (st == Status::Ok) {
        ASSERT_TRUE(pattern_ok(std::span(buf).first(info.size))) << "torn at " << info.sequence;
        ASSERT_TRUE(first || info.sequence > last);
        first = false;
        last = info.sequence;
        ++received;
        continue;
      }
      ASSERT_EQ(st, Status::Timeout);
      if (done.load(std::memory_order_acquire) && sub->lag() == 0) break;
    }
  };
  read_all();
  writer.join();
  EXPECT_EQ(received + sub->lost(), kCount);
  EXPECT_GT(sub->lost(), 0u);  // the writer did lap the reader (forced above)
}

// ---- Interrupt: a wait ends early when the options' check says so ----------

constexpr WaitStrategy kStrategies[] = {WaitStrategy::BusySpin, WaitStrategy::SpinYield,
                                        WaitStrategy::SpinFutex};

// A check that says stop once another thread raised `flag`, counting its calls.
struct StopFlag {
  std::atomic<bool> flag{false};
  std::atomic<int> calls{0};
  Interrupt interrupt(std::chrono::nanoseconds every = 1ms) {
    return Interrupt{[this] {
                       // Relaxed: a counter, read after the waiter returned.
                       calls.fetch_add(1, std::memory_order_relaxed);
                       // Acquire: pairs with raise(); nothing else is published by it.
                       return flag.load(std::memory_order_acquire);
                     },
                     every};
  }
  void raise() { flag.store(true, std::memory_order_release); }
};

TEST(Interrupt, EndsAReceiveThatWouldWaitForEver) {
  for (const WaitStrategy w : kStrategies) {
    SCOPED_TRACE(to_string(w));
    ScopedTopic t("intr-recv", ring(4, Policy::Block));
    StopFlag stop;
    SubscriberOptions so;
    so.wait = w;
    so.interrupt = stop.interrupt();
    auto sub = t.topic.subscriber(so);
    // Nothing is ever published, so whether the flag goes up before or during
    // the wait, only the interrupt can end it.
    std::thread raiser([&] { stop.raise(); });
    Sample s;
    EXPECT_EQ(sub->receive(s, std::chrono::hours(24 * 3650)), Status::Interrupted);
    raiser.join();
    EXPECT_FALSE(s);
    EXPECT_GE(stop.calls.load(std::memory_order_relaxed), 1);
  }
}

TEST(Interrupt, EndsAPublishIntoAFullRingAndPublishesNothing) {
  for (const WaitStrategy w : kStrategies) {
    SCOPED_TRACE(to_string(w));
    ScopedTopic t("intr-pub", ring(4, Policy::Block));
    auto sub = t.topic.subscriber();  // gates, never reads until the end
    StopFlag stop;
    PublisherOptions po;
    po.wait = w;
    po.interrupt = stop.interrupt();
    Publisher pub = t.topic.publisher(po);
    for (int i = 0; i < 4; ++i)
      ASSERT_EQ(pub.publish(bytes_of("x")), Status::Ok);
    std::thread raiser([&] { stop.raise(); });
    EXPECT_EQ(pub.publish(bytes_of("late"), std::chrono::hours(24 * 3650)), Status::Interrupted);
    EXPECT_FALSE(pub.loan(8, std::chrono::hours(24 * 3650)));
    raiser.join();
    // Exactly the four accepted messages, then nothing: the interrupted calls
    // claimed no sequence (a claimed one would be an abandoned gap or a fifth).
    Sample s;
    for (int i = 0; i < 4; ++i) {
      ASSERT_EQ(sub->try_receive(s), Status::Ok);
      EXPECT_EQ(s.sequence(), static_cast<std::uint64_t>(i));
      s.release();
    }
    EXPECT_EQ(sub->try_receive(s), Status::WouldBlock);
    EXPECT_EQ(pub.try_publish(bytes_of("after")), Status::Ok);
    ASSERT_EQ(sub->try_receive(s), Status::Ok);
    EXPECT_EQ(s.sequence(), 4u);
  }
}

TEST(Interrupt, ReadyDataWinsAndTheCheckIsNotCalledWithoutAWait) {
  ScopedTopic t("intr-ready", ring(4, Policy::Block));
  StopFlag stop;
  stop.raise();  // would stop any wait at its first check
  SubscriberOptions so;
  so.interrupt = stop.interrupt();
  auto sub = t.topic.subscriber(so);
  Publisher pub = t.topic.publisher();
  ASSERT_EQ(pub.publish(bytes_of("x")), Status::Ok);
  Sample s;
  EXPECT_EQ(sub->receive(s, 10s), Status::Ok);
  EXPECT_EQ(stop.calls.load(std::memory_order_relaxed), 0);
}

TEST(Interrupt, AnEmptyCheckLeavesTheTimeoutInCharge) {
  ScopedTopic t("intr-none", ring(4, Policy::Block));
  auto sub = t.topic.subscriber();  // default options: no check
  Sample s;
  EXPECT_EQ(sub->receive(s, 5ms), Status::Timeout);
}

}  // namespace
}  // namespace shmbus::test
