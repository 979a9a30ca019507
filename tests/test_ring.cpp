// The ring's semantics in one process: publish/receive, loans, batches, groups,
// start positions, seek and lag, corrupt slots; and a multi-threaded stress
// test that the TSan build checks for races.
#include <map>
#include <set>
#include <vector>

#include "region.hpp"
#include "test_util.hpp"

namespace shmbus::test {
namespace {

using namespace std::chrono_literals;

TopicOptions small(std::uint32_t slots = 8, std::uint32_t size = 64, Policy p = Policy::Block) {
  return ring_options(slots, size, p);
}

// Sequences fill each block of four slots in the order 0, 2, 1, 3 (see
// detail::Ring::slot); every sequence of a lap gets its own slot.
TEST(Ring, SlotOrderSwapsTheMiddleOfEachBlockOfFour) {
  for (const std::uint64_t count : {2u, 4u, 8u, 1024u}) {
    SCOPED_TRACE("slot_count " + std::to_string(count));
    std::vector<std::byte> slots(count * 128);
    detail::Ring r;
    r.slots = slots.data();
    r.count = count;
    r.stride = 128;
    r.swap = count >= 4 ? 3 : 0;
    const auto index = [&](std::uint64_t seq) {
      return static_cast<std::uint64_t>(reinterpret_cast<std::byte*>(&r.slot(seq)) - r.slots) /
             r.stride;
    };
    std::set<std::uint64_t> used;
    for (std::uint64_t seq = 0; seq < count; ++seq) {
      const std::uint64_t i = index(seq);
      EXPECT_LT(i, count);
      used.insert(i);
      EXPECT_EQ(index(seq + 5 * count), i) << "the same slot on every lap";
    }
    EXPECT_EQ(used.size(), count);
    if (count >= 4) {
      const std::uint64_t expect[] = {0, 2, 1, 3, 4, 6, 5, 7};
      for (std::uint64_t seq = 0; seq < std::min<std::uint64_t>(count, 8); ++seq)
        EXPECT_EQ(index(seq), expect[seq]) << "sequence " << seq;
    } else {
      EXPECT_EQ(index(0), 0u);
      EXPECT_EQ(index(1), 1u);
    }
  }
}

TEST(Ring, PublishThenReceiveInOrderWithMetadata) {
  ScopedTopic t("basic", small());
  auto sub = t.topic.subscriber();
  Publisher pub = t.topic.publisher();
  for (int i = 0; i < 5; ++i)
    ASSERT_EQ(pub.publish(bytes_of("m" + std::to_string(i))), Status::Ok);
  EXPECT_EQ(sub->lag(), 5u);
  for (int i = 0; i < 5; ++i) {
    Sample s;
    ASSERT_EQ(sub->try_receive(s), Status::Ok);
    EXPECT_EQ(string_of(s.data()), "m" + std::to_string(i));
    EXPECT_EQ(s.sequence(), static_cast<std::uint64_t>(i));
    EXPECT_GT(s.timestamp_ns(), 0u);
    EXPECT_EQ(s.producer_id(), pub.id());
    EXPECT_TRUE(s.intact());
  }
  Sample none;
  EXPECT_EQ(sub->try_receive(none), Status::WouldBlock);
  EXPECT_FALSE(none);
  EXPECT_EQ(sub->receive(none, 1ms), Status::Timeout);
  EXPECT_EQ(sub->lag(), 0u);
}

TEST(Ring, ZeroLengthAndFullSizeMessages) {
  ScopedTopic t("sizes", small(8, 100));
  auto sub = t.topic.subscriber();
  Publisher pub = t.topic.publisher();
  std::vector<std::byte> big(100, std::byte{7}), too_big(101);
  EXPECT_EQ(pub.publish({}), Status::Ok);
  EXPECT_EQ(pub.publish(big), Status::Ok);
  EXPECT_EQ(pub.publish(too_big), Status::TooLarge);
  EXPECT_EQ(pub.loan(101).status(), Status::TooLarge);
  Sample s;
  ASSERT_EQ(sub->try_receive(s), Status::Ok);
  EXPECT_EQ(s.data().size(), 0u);
  ASSERT_EQ(sub->try_receive(s), Status::Ok);
  EXPECT_EQ(s.data().size(), 100u);
  EXPECT_EQ(s.data()[99], std::byte{7});
  s.release();
  EXPECT_EQ(sub->try_receive(s), Status::WouldBlock);  // the rejected one left no trace
}

TEST(Ring, LoanWritesInPlaceAndDroppedLoanPublishesNothing) {
  ScopedTopic t("loan", small());
  auto sub = t.topic.subscriber();
  Publisher pub = t.topic.publisher();
  {
    Loan l = pub.loan(16);
    ASSERT_TRUE(l);
    std::memcpy(l.data().data(), "dropped", 7);
  }  // dropped: abandoned
  {
    Loan l = pub.loan(16);
    ASSERT_TRUE(l);
    std::memcpy(l.data().data(), "in place", 8);
    EXPECT_EQ(l.publish(8), Status::Ok);
    EXPECT_EQ(l.publish(), Status::Invalid);  // once only
  }
  Loan l = pub.loan(4);
  EXPECT_EQ(l.publish(5), Status::TooLarge);
  l.abandon();
  Sample s;
  ASSERT_EQ(sub->try_receive(s), Status::Ok);
  EXPECT_EQ(string_of(s.data()), "in place");
  EXPECT_EQ(s.sequence(), 1u);  // sequence 0 was abandoned and skipped
  s.release();
  EXPECT_EQ(sub->try_receive(s), Status::WouldBlock);  // 2 abandoned too
  EXPECT_EQ(sub->lag(), 0u);
  // The ring is not leaking slots: it can be filled and drained many times.
  for (int round = 0; round < 10; ++round) {
    for (int i = 0; i < 8; ++i) {
      Loan x = pub.try_loan(8);
      ASSERT_TRUE(x) << to_string(x.status());
      if (i % 2 == 0) {
        ASSERT_EQ(x.publish(), Status::Ok);
      }
    }
    int got = 0;
    while (sub->try_receive(s) == Status::Ok)
      ++got;
    s.release();
    EXPECT_EQ(got, 4);
  }
}

TEST(Ring, HeldSampleBlocksReuseOfItsSlot) {
  ScopedTopic t("held", small(4, 16, Policy::Reject));
  auto sub = t.topic.subscriber();
  Publisher pub = t.topic.publisher();
  ASSERT_EQ(pub.publish(bytes_of("first")), Status::Ok);
  Sample held;
  ASSERT_EQ(sub->try_receive(held), Status::Ok);
  for (int i = 0; i < 3; ++i)
    ASSERT_EQ(pub.try_publish(bytes_of("x")), Status::Ok);
  EXPECT_EQ(pub.try_publish(bytes_of("x")), Status::WouldBlock);  // would overwrite `held`
  EXPECT_EQ(string_of(held.data()), "first");
  // Receiving more does not free the held slot either (out-of-order release).
  Sample a, b;
  ASSERT_EQ(sub->try_receive(a), Status::Ok);
  ASSERT_EQ(sub->try_receive(b), Status::Ok);
  a.release();
  EXPECT_EQ(pub.try_publish(bytes_of("x")), Status::WouldBlock);
  held.release();
  EXPECT_EQ(pub.try_publish(bytes_of("x")), Status::Ok);
  EXPECT_EQ(pub.try_publish(bytes_of("x")), Status::Ok);
  EXPECT_EQ(pub.try_publish(bytes_of("x")), Status::WouldBlock);  // b still held
}

TEST(Ring, TooManyHeldSamplesIsAStatusNotACrash) {
  ScopedTopic t("toomany", small(128, 8));
  auto sub = t.topic.subscriber();
  Publisher pub = t.topic.publisher();
  for (int i = 0; i < 70; ++i)
    ASSERT_EQ(pub.publish(bytes_of("x")), Status::Ok);
  std::vector<Sample> held(Subscriber::kMaxHeld);
  for (auto& s : held)
    ASSERT_EQ(sub->try_receive(s), Status::Ok);
  Sample extra;
  EXPECT_EQ(sub->try_receive(extra), Status::TooManyHeld);
  held[10].release();
  EXPECT_EQ(sub->try_receive(extra), Status::Ok);
  EXPECT_EQ(extra.sequence(), 64u);
}

TEST(Ring, BatchReceiveTakesARunWithOneClaim) {
  ScopedTopic t("batch", small(16, 16));
  auto sub = t.topic.subscriber();
  Publisher pub = t.topic.publisher();
  for (int i = 0; i < 10; ++i)
    ASSERT_EQ(pub.publish(bytes_of(std::to_string(i))), Status::Ok);
  Batch b;
  ASSERT_EQ(sub->receive_batch(b, 4, 0ms), Status::Ok);
  ASSERT_EQ(b.size(), 4u);
  for (std::size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(string_of(b.data(i)), std::to_string(i));
    EXPECT_EQ(b.info(i).sequence, i);
  }
  EXPECT_TRUE(b.intact());
  ASSERT_EQ(sub->receive_batch(b, 100, 0ms), Status::Ok);  // moving in releases the old one
  EXPECT_EQ(b.size(), 6u);
  EXPECT_EQ(b.first_sequence(), 4u);
  b.release();
  EXPECT_EQ(sub->receive_batch(b, 4, 1ms), Status::Timeout);
  EXPECT_EQ(sub->receive_batch(b, 0, 1ms), Status::Invalid);
}

TEST(Ring, EveryGroupSeesEveryMessageMembersCompete) {
  ScopedTopic t("groups", small(64, 16));
  SubscriberOptions ga, gb;
  ga.group = "a";
  gb.group = "b";
  auto a1 = t.topic.subscriber(ga), a2 = t.topic.subscriber(ga), b1 = t.topic.subscriber(gb);
  auto priv = t.topic.subscriber();
  Publisher pub = t.topic.publisher();
  for (int i = 0; i < 40; ++i)
    ASSERT_EQ(pub.publish(bytes_of(std::to_string(i))), Status::Ok);
  std::multiset<std::uint64_t> group_a;
  Sample s;
  for (int i = 0; i < 20; ++i) {
    ASSERT_EQ(a1->try_receive(s), Status::Ok);
    group_a.insert(s.sequence());
    ASSERT_EQ(a2->try_receive(s), Status::Ok);
    group_a.insert(s.sequence());
  }
  EXPECT_EQ(a1->try_receive(s), Status::WouldBlock);
  EXPECT_EQ(group_a.size(), 40u);
  EXPECT_EQ(std::set<std::uint64_t>(group_a.begin(), group_a.end()).size(), 40u);  // no duplicates
  for (std::uint64_t i = 0; i < 40; ++i) {
    ASSERT_EQ(b1->try_receive(s), Status::Ok);
    EXPECT_EQ(s.sequence(), i);
    ASSERT_EQ(priv->try_receive(s), Status::Ok);
    EXPECT_EQ(s.sequence(), i);
  }
  EXPECT_EQ(a1->group(), "a");
}

TEST(Ring, NamedGroupKeepsItsPositionAcrossMembers) {
  ScopedTopic t("resume", small(16, 16));
  SubscriberOptions g;
  g.group = "workers";
  Publisher pub = t.topic.publisher();
  {
    auto m = t.topic.subscriber(g);
    for (int i = 0; i < 6; ++i)
      ASSERT_EQ(pub.publish(bytes_of(std::to_string(i))), Status::Ok);
    Sample s;
    for (int i = 0; i < 3; ++i)
      ASSERT_EQ(m->try_receive(s), Status::Ok);
  }
  g.start = StartFrom::Latest;  // ignored: the group exists and resumes where it was
  auto m = t.topic.subscriber(g);
  EXPECT_EQ(m->position(), 3u);
  EXPECT_EQ(m->lag(), 3u);
  Sample s;
  ASSERT_EQ(m->try_receive(s), Status::Ok);
  EXPECT_EQ(s.sequence(), 3u);
}

TEST(Ring, StartPositionsAndSeek) {
  ScopedTopic t("start", small(8, 16));
  Publisher pub = t.topic.publisher();
  for (int i = 0; i < 12; ++i)
    ASSERT_EQ(pub.publish(bytes_of(std::to_string(i))), Status::Ok);
  Sample s;
  SubscriberOptions latest, earliest, offset, old;
  earliest.start = StartFrom::Earliest;
  offset.start = StartFrom::Offset;
  offset.offset = 10;
  old.start = StartFrom::Offset;
  old.offset = 1;  // no longer retained: 8 slots hold 4..11
  auto l = t.topic.subscriber(latest), e = t.topic.subscriber(earliest),
       o = t.topic.subscriber(offset), x = t.topic.subscriber(old);
  EXPECT_EQ(l->try_receive(s), Status::WouldBlock);
  ASSERT_EQ(e->try_receive(s), Status::Ok);
  EXPECT_EQ(s.sequence(), 4u);
  EXPECT_EQ(string_of(s.data()), "4");
  ASSERT_EQ(o->try_receive(s), Status::Ok);
  EXPECT_EQ(s.sequence(), 10u);
  ASSERT_EQ(x->try_receive(s), Status::Ok);
  EXPECT_EQ(s.sequence(), 4u);
  EXPECT_EQ(x->lost(), 3u);  // 1, 2, 3 were gone: counted, not hidden
  s.release();
  e->seek(9);
  ASSERT_EQ(e->try_receive(s), Status::Ok);
  EXPECT_EQ(s.sequence(), 9u);
  s.release();
  EXPECT_EQ(e->lag(), 2u);
  ASSERT_EQ(pub.publish(bytes_of("12")), Status::Ok);
  ASSERT_EQ(l->try_receive(s), Status::Ok);
  EXPECT_EQ(s.sequence(), 12u);
  s.release();  // a sample must not outlive its subscriber
}

TEST(Ring, AStartOrSeekPastTheTailIsRefusedNamingTheTail) {
  ScopedTopic t("future", small(8, 16));
  Publisher pub = t.topic.publisher();
  for (int i = 0; i < 3; ++i)
    ASSERT_EQ(pub.publish(bytes_of("m")), Status::Ok);
  SubscriberOptions future;
  future.start = StartFrom::Offset;
  future.offset = 999999;  // would silently skip 999,996 messages not yet published
  try {
    (void)t.topic.subscriber(future);
    FAIL() << "a start past the tail was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
    EXPECT_NE(std::string(e.what()).find("tail"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("at most 3"), std::string::npos) << e.what();
  }
  future.offset = 3;  // the tail itself: latest
  auto at_tail = t.topic.subscriber(future);
  EXPECT_EQ(at_tail->position(), 3u);
  EXPECT_THROW(at_tail->seek(4), Error);
  at_tail->seek(3);
  at_tail->seek(0);  // the past is fine (clamped to what the ring retains)
  EXPECT_EQ(t.topic.status().groups.size(), 1u) << "the refused start left no group behind";
}

TEST(Ring, CorruptLengthIsReportedAndSkipped) {
  ScopedTopic t("corrupt", small(8, 16));
  auto sub = t.topic.subscriber();
  Publisher pub = t.topic.publisher();
  for (int i = 0; i < 3; ++i)
    ASSERT_EQ(pub.publish(bytes_of("ok")), Status::Ok);
  // A buggy process scribbles over slot 1's length field.
  auto region = detail::Region::open(region_name("default", t.name));
  region->slot(1).length.store(1u << 30, std::memory_order_relaxed);
  Sample s;
  ASSERT_EQ(sub->try_receive(s), Status::Ok);
  EXPECT_EQ(s.sequence(), 0u);
  s.release();
  EXPECT_EQ(sub->try_receive(s), Status::Corrupt);
  EXPECT_EQ(sub->corrupt(), 1u);
  ASSERT_EQ(sub->try_receive(s), Status::Ok);
  EXPECT_EQ(s.sequence(), 2u);
  EXPECT_EQ(s.data().size(), 2u);
  s.release();
  // Batches stop before a corrupt slot and report it on its own.
  for (int i = 0; i < 3; ++i)
    ASSERT_EQ(pub.publish(bytes_of("ok")), Status::Ok);
  region->slot(4).length.store(999, std::memory_order_relaxed);
  Batch b;
  ASSERT_EQ(sub->receive_batch(b, 8, 0ms), Status::Ok);
  EXPECT_EQ(b.size(), 1u);
  b.release();
  EXPECT_EQ(sub->receive_batch(b, 8, 0ms), Status::Corrupt);
  ASSERT_EQ(sub->receive_batch(b, 8, 0ms), Status::Ok);
  EXPECT_EQ(b.first_sequence(), 5u);
}

TEST(Ring, CopyingReceive) {
  ScopedTopic t("copy", small(8, 32));
  auto sub = t.topic.subscriber();
  Publisher pub = t.topic.publisher();
  ASSERT_EQ(pub.publish(bytes_of("copied")), Status::Ok);
  std::vector<std::byte> small_buf(8), buf(32);
  MessageInfo info;
  EXPECT_EQ(sub->receive_copy(small_buf, info, 0ms), Status::TooLarge);
  ASSERT_EQ(sub->receive_copy(buf, info, 0ms), Status::Ok);
  EXPECT_EQ(info.size, 6u);
  EXPECT_EQ(string_of(std::span(buf).first(info.size)), "copied");
  EXPECT_EQ(sub->receive_copy(buf, info, 1ms), Status::Timeout);
}

// Several producer threads and competing consumer threads in one process, so
// that ThreadSanitizer can see every access of the protocol.
void run_threads(Policy policy, WaitStrategy wait, std::uint64_t per_producer) {
  constexpr int kProducers = 3, kMembers = 2;
  const std::uint64_t total = kProducers * per_producer;
  TopicOptions o = small(64, 16, policy);
  ScopedTopic t("threads", o);
  SubscriberOptions shared, solo;
  shared.group = "shared";
  shared.wait = solo.wait = wait;
  std::vector<std::unique_ptr<Subscriber>> members;
  for (int i = 0; i < kMembers; ++i)
    members.push_back(t.topic.subscriber(shared));
  auto lone = t.topic.subscriber(solo);
  std::atomic<std::int64_t> remaining{static_cast<std::int64_t>(total)};
  std::vector<std::vector<std::uint64_t>> seen(kMembers);
  std::vector<std::thread> threads;
  // One bound for the whole run instead of one per receive: a thread starved
  // for a while on a loaded machine only slows the run down (a lost message
  // still fails the counts below, once this passes).
  const auto deadline = std::chrono::steady_clock::now() + 120s;
  const auto in_time = [&] { return std::chrono::steady_clock::now() < deadline; };
  for (int m = 0; m < kMembers; ++m) {
    threads.emplace_back([&, m] {
      Sample s;
      while (remaining.load(std::memory_order_relaxed) > 0 && in_time()) {
        if (members[m]->receive(s, 50ms) != Status::Ok) continue;
        std::uint64_t v = 0;
        std::memcpy(&v, s.data().data(), sizeof v);
        seen[m].push_back(v);
        s.release();
        remaining.fetch_sub(1, std::memory_order_relaxed);
      }
    });
  }
  std::map<int, std::uint64_t> lone_next;
  std::uint64_t lone_count = 0;
  std::thread lone_thread([&] {
    Sample s;
    while (lone_count < total && in_time()) {
      const Status st = lone->receive(s, 50ms);
      if (st == Status::Timeout) continue;
      if (st != Status::Ok) {
        ADD_FAILURE() << "lone receive: " << to_string(st);
        break;
      }
      std::uint64_t v = 0;
      std::memcpy(&v, s.data().data(), sizeof v);
      const int p = static_cast<int>(v >> 32);
      EXPECT_EQ(v & 0xffffffff, lone_next[p]) << "producer " << p << " out of order";
      lone_next[p] = (v & 0xffffffff) + 1;
      ++lone_count;
    }
  });
  for (int p = 0; p < kProducers; ++p) {
    threads.emplace_back([&, p] {
      PublisherOptions po;
      po.wait = wait;
      po.timeout = 60s;  // the consumers may be starved for a while, not lost
      Publisher pub = t.topic.publisher(po);
      for (std::uint64_t i = 0; i < per_producer; ++i) {
        const std::uint64_t v = (std::uint64_t(p) << 32) | i;
        ASSERT_EQ(pub.publish(std::as_bytes(std::span(&v, 1))), Status::Ok);
      }
    });
  }
  for (auto& th : threads)
    th.join();
  lone_thread.join();
  EXPECT_EQ(lone_count, total);
  std::set<std::uint64_t> all;
  std::uint64_t received = 0;
  for (auto& v : seen) {
    received += v.size();
    all.insert(v.begin(), v.end());
  }
  EXPECT_EQ(received, total);
  EXPECT_EQ(all.size(), received) << "a message was delivered twice";
}

TEST(RingThreads, ManyProducersCompetingMembersSpinFutex) {
  run_threads(Policy::Block, WaitStrategy::SpinFutex, 20000);
}
TEST(RingThreads, ManyProducersCompetingMembersBusySpin) {
  // Six spinning threads on two cores: fewer messages, same checks.
  run_threads(Policy::Block, WaitStrategy::BusySpin, 2000);
}
TEST(RingThreads, ManyProducersCompetingMembersSpinYield) {
  run_threads(Policy::Block, WaitStrategy::SpinYield, 20000);
}

}  // namespace
}  // namespace shmbus::test
