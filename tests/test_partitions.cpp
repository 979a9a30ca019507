// Partitions, keys, priority lanes and partitioned groups (issue 15), on
// topics made without a daemon: the region alone must carry every rule.
#include <sys/mman.h>

#include <algorithm>
#include <map>
#include <set>
#include <vector>

#include "shmbus/partition.hpp"
#include "test_util.hpp"

namespace shmbus::test {
namespace {

constexpr auto kWait = std::chrono::seconds(10);

ErrorCode create_error(const TopicOptions& o) {
  try {
    ScopedTopic t("bad", o);
  } catch (const Error& e) {
    return e.code();
  }
  return ErrorCode::SystemError;  // "no error": not a code these tests expect
}

TopicOptions partitioned(std::uint32_t partitions, std::uint32_t slots = 64,
                         std::uint32_t size = 64) {
  TopicOptions o = ring_options(slots, size);
  o.partitions = partitions;
  return o;
}

TopicOptions lanes(std::uint32_t priorities, std::uint32_t slots = 64) {
  TopicOptions o = ring_options(slots, 64);
  o.priorities = priorities;
  return o;
}

std::uint64_t u64_of(std::span<const std::byte> d) {
  std::uint64_t v = 0;
  std::memcpy(&v, d.data(), std::min(d.size(), sizeof v));
  return v;
}

std::span<const std::byte> bytes_of_u64(const std::uint64_t& v) {
  return std::as_bytes(std::span(&v, 1));
}

TEST(Partitions, OptionsAreChecked) {
  TopicOptions o = ring_options();
  o.partitions = 0;
  EXPECT_EQ(create_error(o), ErrorCode::InvalidArgument);
  o.partitions = 1025;
  EXPECT_EQ(create_error(o), ErrorCode::InvalidArgument);
  o.partitions = 1;
  o.priorities = 1;
  EXPECT_EQ(create_error(o), ErrorCode::InvalidArgument);
  o.priorities = 33;
  EXPECT_EQ(create_error(o), ErrorCode::InvalidArgument);
  o.priorities = 4;
  o.partitions = 2;
  EXPECT_EQ(create_error(o), ErrorCode::InvalidArgument);
  // What was created is what an opener reads back.
  ScopedTopic t("parts", partitioned(256, 2, 16));
  const TopicOptions back = Topic::open(t.name).options();
  EXPECT_EQ(back.partitions, 256u);
  EXPECT_EQ(back.priorities, 0u);
  ScopedTopic l("lanes", lanes(10));
  EXPECT_EQ(Topic::open(l.name).options().priorities, 10u);
  EXPECT_EQ(Topic::open(l.name).options().partitions, 1u);
}

TEST(Partitions, KeyedMessagesGoToKafkasPartitionInOrder) {
  ScopedTopic t("keyed", partitioned(8, 256, 64));
  auto sub = t.topic.subscriber({.group = {}, .start = StartFrom::Earliest});
  Publisher pub = t.topic.publisher();
  EXPECT_EQ(pub.partitions(), 8u);
  std::map<std::string, std::uint64_t> next;  // per key: the next sequence number
  for (std::uint64_t i = 0; i < 400; ++i) {
    const std::string key = "user-" + std::to_string(i % 37);
    ASSERT_EQ(pub.publish(key, bytes_of_u64(i)), Status::Ok);
  }
  std::map<std::string, std::uint64_t> last;
  for (int n = 0; n < 400; ++n) {
    Sample s;
    ASSERT_EQ(sub->receive(s, kWait), Status::Ok);
    const std::string key = string_of(s.key());
    EXPECT_EQ(s.partition(), partition_for_key(key, 8)) << key;
    EXPECT_EQ(s.priority(), 0u);
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(s.data().data()) % 8, 0u) << "payload aligned";
    const std::uint64_t v = u64_of(s.data());
    EXPECT_EQ(key, "user-" + std::to_string(v % 37));
    if (last.count(key) != 0) {
      EXPECT_GT(v, last[key]) << "per-key order";
    }
    last[key] = v;
  }
  Sample s;
  EXPECT_EQ(sub->try_receive(s), Status::WouldBlock);
  const TopicStatus st = t.topic.status();
  ASSERT_EQ(st.partitions.size(), 8u);
  std::uint64_t sum = 0;
  for (std::uint32_t p = 0; p < 8; ++p) {
    sum += st.partitions[p].tail;
    EXPECT_EQ(sub->lag(p), 0u);
  }
  EXPECT_EQ(sum, 400u);
  EXPECT_EQ(st.tail, 400u);
}

TEST(Partitions, ExplicitPartitionsAndBadRoutes) {
  ScopedTopic t("routes", partitioned(4, 16, 64));
  auto sub = t.topic.subscriber({.group = {}, .start = StartFrom::Earliest});
  Publisher pub = t.topic.publisher();
  const std::uint64_t v = 7;
  Route r = Route::with_key("k");
  r.partition = 3;  // an explicit partition wins over the key's; the key is kept
  ASSERT_EQ(pub.publish(r, bytes_of_u64(v)), Status::Ok);
  Sample s;
  ASSERT_EQ(sub->receive(s, kWait), Status::Ok);
  EXPECT_EQ(s.partition(), 3u);
  EXPECT_EQ(string_of(s.key()), "k");
  EXPECT_EQ(s.sequence(), 0u);  // offsets are per partition
  s.release();
  EXPECT_EQ(pub.publish(Route::to_partition(4), bytes_of_u64(v)), Status::NoSuchPartition);
  EXPECT_EQ(pub.publish(Route::with_priority(1), bytes_of_u64(v)), Status::NoSuchPartition);
  const std::string long_key(detail::kMaxKey + 1, 'k');
  EXPECT_EQ(pub.publish(long_key, bytes_of_u64(v)), Status::TooLarge);
  // Key (rounded up to 8) and payload share the slot's 64 bytes.
  const std::vector<std::byte> payload(56);
  EXPECT_EQ(pub.publish("12345678", payload), Status::Ok);
  EXPECT_EQ(pub.publish("123456789", payload), Status::TooLarge);
  ASSERT_EQ(sub->receive(s, kWait), Status::Ok);
  EXPECT_EQ(s.data().size(), 56u);
  EXPECT_EQ(string_of(s.key()), "12345678");
  // A keyed loan writes the key at once; the payload follows it.
  Loan l = pub.loan(Route::with_key("loan-key"), 8);
  ASSERT_TRUE(l);
  EXPECT_EQ(l.partition(), partition_for_key("loan-key", 4));
  std::memcpy(l.data().data(), &v, sizeof v);
  ASSERT_EQ(l.publish(), Status::Ok);
  ASSERT_EQ(sub->receive(s, kWait), Status::Ok);
  EXPECT_EQ(string_of(s.key()), "loan-key");
  EXPECT_EQ(u64_of(s.data()), 7u);
  EXPECT_EQ(s.partition(), partition_for_key("loan-key", 4));
  EXPECT_EQ(pub.loan(Route::to_partition(9), 8).status(), Status::NoSuchPartition);
}

TEST(Partitions, UnkeyedMessagesGoInStickyRuns) {
  ScopedTopic t("sticky", partitioned(4, 512, 16));
  auto sub = t.topic.subscriber({.group = {}, .start = StartFrom::Earliest});
  Publisher pub = t.topic.publisher();
  const std::uint64_t v = 1;
  for (std::uint32_t i = 0; i < 4 * Publisher::kStickyRun; ++i)
    ASSERT_EQ(pub.publish(bytes_of_u64(v)), Status::Ok);
  const TopicStatus st = t.topic.status();
  for (const PartitionStatus& p : st.partitions)
    EXPECT_EQ(p.tail, Publisher::kStickyRun);
}

TEST(Partitions, SeekAndLagPerPartition) {
  ScopedTopic t("seek", partitioned(3, 16, 16));
  auto sub = t.topic.subscriber({.group = "g", .start = StartFrom::Earliest});
  Publisher pub = t.topic.publisher();
  for (std::uint64_t i = 0; i < 5; ++i)
    ASSERT_EQ(pub.publish(Route::to_partition(1), bytes_of_u64(i)), Status::Ok);
  EXPECT_EQ(sub->lag(1), 5u);
  EXPECT_EQ(sub->lag(0), 0u);
  EXPECT_EQ(sub->lag(), 5u);
  sub->seek(1, 3);
  EXPECT_EQ(sub->position(1), 3u);
  EXPECT_EQ(sub->lag(), 2u);
  Sample s;
  ASSERT_EQ(sub->receive(s, kWait), Status::Ok);
  EXPECT_EQ(u64_of(s.data()), 3u);
  EXPECT_EQ(s.partition(), 1u);
  EXPECT_THROW(sub->seek(3, 0), Error);  // no partition 3
  EXPECT_THROW(sub->seek(0, 1), Error);  // past partition 0's tail
}

TEST(Partitions, SharedGroupMembersTakeEveryMessageOnce) {
  ScopedTopic t("shared", partitioned(4, 64, 16));
  auto a = t.topic.subscriber({.group = "g", .start = StartFrom::Earliest});
  auto b = t.topic.subscriber({.group = "g", .start = StartFrom::Earliest});
  EXPECT_EQ(a->group_mode(), GroupMode::Shared);
  constexpr std::uint64_t kCount = 2000;
  std::vector<std::atomic<int>> seen(kCount);
  std::atomic<std::uint64_t> taken{0};
  const auto consume = [&](Subscriber& s) {
    Sample x;
    while (taken.load() < kCount) {
      const Status st = s.receive(x, std::chrono::milliseconds(50));
      if (st == Status::Timeout) continue;
      if (st != Status::Ok) {
        ADD_FAILURE() << "receive: " << to_string(st);
        return;
      }
      seen[u64_of(x.data())].fetch_add(1);
      taken.fetch_add(1);
      // Released before the next wait: a member waiting while it holds a
      // sample holds its partition's ring back (the zero-copy contract).
      x.release();
    }
  };
  std::thread ta(consume, std::ref(*a)), tb(consume, std::ref(*b));
  Publisher pub = t.topic.publisher();
  for (std::uint64_t i = 0; i < kCount; ++i) {
    const Status st = pub.publish("k" + std::to_string(i % 10), bytes_of_u64(i));
    EXPECT_EQ(st, Status::Ok) << "message " << i;
    if (st != Status::Ok) taken.store(kCount);  // the consumers stop, and the test fails
  }
  ASSERT_TRUE(wait_until([&] { return taken.load() >= kCount; }, std::chrono::seconds(30)));
  ta.join();
  tb.join();
  for (std::uint64_t i = 0; i < kCount; ++i)
    EXPECT_EQ(seen[i].load(), 1) << i;
}

// ---- priority lanes ---------------------------------------------------------

TEST(Priority, BacklogComesInNonIncreasingPriorityAndPublishOrder) {
  ScopedTopic t("prio", lanes(4, 256));
  auto sub = t.topic.subscriber({.group = {}, .start = StartFrom::Earliest});
  Publisher pub = t.topic.publisher();
  EXPECT_EQ(pub.priorities(), 4u);
  EXPECT_EQ(pub.partitions(), 1u);
  for (std::uint64_t i = 0; i < 400; ++i)
    ASSERT_EQ(
        pub.publish(Route::with_priority(static_cast<std::uint32_t>((i * 7) % 4)), bytes_of_u64(i)),
        Status::Ok);
  ASSERT_EQ(pub.publish(bytes_of_u64(1000)), Status::Ok);  // unrouted: priority 0
  EXPECT_EQ(pub.publish(Route::with_priority(4), bytes_of_u64(1)), Status::NoSuchPartition);
  std::uint32_t prev = 4;
  std::map<std::uint32_t, std::uint64_t> last;
  for (int n = 0; n < 401; ++n) {
    Sample s;
    ASSERT_EQ(sub->receive(s, kWait), Status::Ok);
    const std::uint64_t v = u64_of(s.data());
    const std::uint32_t pr = s.priority();
    EXPECT_EQ(s.partition(), 0u);
    EXPECT_LE(pr, prev) << "message " << v;
    if (v != 1000) {
      EXPECT_EQ(pr, (v * 7) % 4);
    }
    if (last.count(pr) != 0) {
      EXPECT_GT(v, last[pr]) << "publish order within a lane";
    }
    last[pr] = v;
    prev = pr;
  }
  EXPECT_EQ(last[0], 1000u);
}

TEST(Priority, HighPriorityOvertakesTheLowBacklog) {
  ScopedTopic t("overtake", lanes(8, 256));
  auto sub = t.topic.subscriber({.group = {}, .start = StartFrom::Earliest});
  Publisher pub = t.topic.publisher();
  for (std::uint64_t i = 0; i < 100; ++i)
    ASSERT_EQ(pub.publish(Route::with_priority(1), bytes_of_u64(i)), Status::Ok);
  Sample s;
  for (std::uint64_t i = 0; i < 10; ++i) {
    ASSERT_EQ(sub->receive(s, kWait), Status::Ok);
    EXPECT_EQ(u64_of(s.data()), i);
    // A steady stream: each time the consumer took one, a new low one and,
    // now and then, an urgent one arrive.
    ASSERT_EQ(pub.publish(Route::with_priority(1), bytes_of_u64(100 + i)), Status::Ok);
  }
  ASSERT_EQ(pub.publish(Route::with_priority(7), bytes_of_u64(9999)), Status::Ok);
  ASSERT_EQ(sub->receive(s, kWait), Status::Ok);
  EXPECT_EQ(u64_of(s.data()), 9999u);
  EXPECT_EQ(s.priority(), 7u);
  ASSERT_EQ(sub->receive(s, kWait), Status::Ok);
  EXPECT_EQ(u64_of(s.data()), 10u) << "then the backlog, where it was";
}

// ---- partitioned groups -------------------------------------------------------

// Receives (without waiting long) until `s` owns exactly `want` partitions,
// releasing whatever it takes (there is nothing to take in these tests).
bool settles(Subscriber& s, std::size_t want) {
  return wait_until(
      [&] {
        Sample x;
        (void)s.try_receive(x);
        return s.owned_partitions().size() == want;
      },
      std::chrono::seconds(10));
}

std::set<std::uint32_t> owned(const Subscriber& s) {
  const auto v = s.owned_partitions();
  return {v.begin(), v.end()};
}

TEST(Partitioned, OwnershipIsDisjointBalancedAndSticky) {
  ScopedTopic t("assign", partitioned(8, 16, 16));
  const SubscriberOptions o{.group = "g", .group_mode = GroupMode::Partitioned};
  auto a = t.topic.subscriber(o);
  EXPECT_EQ(a->group_mode(), GroupMode::Partitioned);
  ASSERT_TRUE(settles(*a, 8));
  auto b = t.topic.subscriber(o);
  ASSERT_TRUE(settles(*a, 4));
  ASSERT_TRUE(settles(*b, 4));
  const auto a4 = owned(*a), b4 = owned(*b);
  for (const std::uint32_t p : a4)
    EXPECT_EQ(b4.count(p), 0u);
  auto c = t.topic.subscriber(o);
  // 3 + 3 + 2: the fewest partitions move (two, both to the newcomer).
  ASSERT_TRUE(wait_until(
      [&] {
        Sample x;
        (void)a->try_receive(x);
        (void)b->try_receive(x);
        (void)c->try_receive(x);
        return a->owned_partitions().size() + b->owned_partitions().size() +
                   c->owned_partitions().size() ==
               8;
      },
      std::chrono::seconds(10)));
  EXPECT_EQ(c->owned_partitions().size(), 2u);
  std::size_t kept = 0;
  for (const std::uint32_t p : owned(*a))
    kept += a4.count(p);
  for (const std::uint32_t p : owned(*b))
    kept += b4.count(p);
  EXPECT_EQ(kept, 6u);
  std::set<std::uint32_t> all;
  for (Subscriber* s : {a.get(), b.get(), c.get()})
    for (const std::uint32_t p : owned(*s))
      EXPECT_TRUE(all.insert(p).second) << "owned twice";
  // Status shows each partition's owner.
  for (const GroupStatus& g : t.topic.status().groups) {
    EXPECT_EQ(g.mode, GroupMode::Partitioned);
    ASSERT_EQ(g.partitions.size(), 8u);
    for (const GroupPartitionStatus& p : g.partitions)
      EXPECT_EQ(p.owner_pid, static_cast<std::uint32_t>(::getpid()));
  }
  b.reset();  // a leave: its partitions go to the others
  ASSERT_TRUE(wait_until(
      [&] {
        Sample x;
        (void)a->try_receive(x);
        (void)c->try_receive(x);
        return a->owned_partitions().size() + c->owned_partitions().size() == 8;
      },
      std::chrono::seconds(10)));
  EXPECT_EQ(a->owned_partitions().size(), 4u);
  // A joiner with the other mode is refused, saying which mode the group has.
  try {
    (void)t.topic.subscriber({.group = "g"});
    ADD_FAILURE() << "joined a partitioned group as shared";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
    EXPECT_NE(std::string(e.what()).find("partitioned"), std::string::npos) << e.what();
  }
}

TEST(Partitioned, APartitionMovesOnlyAfterItsOwnerReleasedEverything) {
  ScopedTopic t("handover", partitioned(2, 16, 16));
  const SubscriberOptions o{
      .group = "g", .start = StartFrom::Earliest, .group_mode = GroupMode::Partitioned};
  auto a = t.topic.subscriber(o);
  ASSERT_TRUE(settles(*a, 2));
  Publisher pub = t.topic.publisher();
  // Partition p gets 10 * p + offset: 0, 1, 2 and 10, 11, 12.
  for (std::uint32_t p = 0; p < 2; ++p)
    for (std::uint64_t i = 0; i < 3; ++i)
      ASSERT_EQ(pub.publish(Route::to_partition(p), bytes_of_u64(10 * p + i)), Status::Ok);
  // a holds the first message of each partition.
  Sample held[2];
  for (int n = 0; n < 6 && !(held[0] && held[1]); ++n) {
    Sample x;
    ASSERT_EQ(a->receive(x, kWait), Status::Ok);
    if (!held[x.partition()]) held[x.partition()] = std::move(x);
  }
  ASSERT_TRUE(held[0] && held[1]);
  ASSERT_EQ(held[0].sequence(), 0u);
  ASSERT_EQ(held[1].sequence(), 0u);
  auto b = t.topic.subscriber(o);  // one of the two partitions is now b's target
  Sample x;
  for (int i = 0; i < 20; ++i) {
    // b gets nothing while a holds samples of the partition b should take.
    EXPECT_NE(b->try_receive(x), Status::Ok);
    EXPECT_TRUE(b->owned_partitions().empty());
  }
  // a looks at its group (a receive) and sees the new assignment: it goes on
  // with the partition it keeps and takes nothing more from the one it lost.
  for (std::uint32_t p = 0; p < 2; ++p)
    for (std::uint64_t i = 3; i < 5; ++i)
      ASSERT_EQ(pub.publish(Route::to_partition(p), bytes_of_u64(10 * p + i)), Status::Ok);
  std::set<std::uint32_t> from_a;
  while (a->try_receive(x) == Status::Ok) {
    from_a.insert(x.partition());
    x.release();
  }
  ASSERT_EQ(from_a.size(), 1u) << "a went on with the partition it keeps only";
  const std::uint32_t moving = 1 - *from_a.begin();
  EXPECT_TRUE(b->owned_partitions().empty());
  // Releasing the last sample of the moving partition lets it go; b takes it
  // at its next receive and continues at the group's position there: nothing
  // skipped, nothing twice (a took the first message of it, b gets the second).
  held[moving].release();
  ASSERT_EQ(b->receive(x, kWait), Status::Ok);
  EXPECT_EQ(owned(*b), std::set<std::uint32_t>{moving});
  EXPECT_EQ(x.partition(), moving);
  EXPECT_EQ(x.sequence(), 1u);
  EXPECT_EQ(u64_of(x.data()), 10u * moving + 1);
}

TEST(Partitioned, MoreMembersThanPartitionsLeavesTheExtraIdle) {
  ScopedTopic t("idle", partitioned(2, 16, 16));
  const SubscriberOptions o{.group = "g", .group_mode = GroupMode::Partitioned};
  auto a = t.topic.subscriber(o);
  auto b = t.topic.subscriber(o);
  auto c = t.topic.subscriber(o);
  ASSERT_TRUE(wait_until(
      [&] {
        Sample x;
        for (Subscriber* s : {a.get(), b.get(), c.get()})
          (void)s->try_receive(x);
        return a->owned_partitions().size() + b->owned_partitions().size() +
                   c->owned_partitions().size() ==
               2;
      },
      std::chrono::seconds(10)));
  EXPECT_EQ(a->owned_partitions().size(), 1u);
  EXPECT_EQ(b->owned_partitions().size(), 1u);
  EXPECT_TRUE(c->owned_partitions().empty());
  a.reset();  // the idle member takes over a's partition
  ASSERT_TRUE(settles(*c, 1));
}

// ---- the multi-process test -------------------------------------------

constexpr std::uint32_t kProducers = 3;
constexpr std::uint32_t kKeys = 1000;  // per producer
constexpr std::uint32_t kPerKey = 5;   // messages per key
constexpr std::uint32_t kMessages = kProducers * kKeys * kPerKey;

struct Ledger {
  std::atomic<std::uint64_t> processed;  // by the partitioned group
  std::atomic<std::uint64_t> shared_taken;
  std::atomic<std::uint32_t> victim_holding;
  std::atomic<std::uint32_t> errors;
  std::atomic<std::uint32_t> count[kMessages];          // partitioned group's takes
  std::atomic<std::uint32_t> shared_count[kMessages];   // shared group's takes
  std::atomic<std::int32_t> last[kProducers * kKeys];   // last sequence processed per key
  std::atomic<std::uint32_t> busy[kProducers * kKeys];  // pid processing the key, 0: none
};

Ledger* make_ledger() {
  void* p =
      ::mmap(nullptr, sizeof(Ledger), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw std::runtime_error("mmap failed");
  auto* l = new (p) Ledger{};
  for (auto& x : l->last)
    x.store(-1);
  return l;
}

struct Msg {
  std::uint32_t producer, key, seq;
  [[nodiscard]] std::uint32_t key_index() const { return producer * kKeys + key; }
  [[nodiscard]] std::uint32_t index() const { return key_index() * kPerKey + seq; }
};

std::string key_name(std::uint32_t producer, std::uint32_t key) {
  return "p" + std::to_string(producer) + "-k" + std::to_string(key);
}

// Processing a message: no other live process may be processing its key, and
// its sequence must follow the key's last one. A key left busy by a process
// that died is free again (its processing ended with it).
void begin(Ledger& l, const Msg& m) {
  std::atomic<std::uint32_t>& busy = l.busy[m.key_index()];
  const auto me = static_cast<std::uint32_t>(::getpid());
  std::uint32_t was = busy.load();
  for (;;) {
    if (was != 0 && was != me && ::kill(static_cast<pid_t>(was), 0) == 0) {
      l.errors.fetch_add(1);  // two messages of one key in process at once
      break;
    }
    if (busy.compare_exchange_weak(was, me)) break;
  }
  const auto seq = static_cast<std::int32_t>(m.seq);
  if (l.last[m.key_index()].exchange(seq) >= seq) l.errors.fetch_add(1);  // out of order
  l.count[m.index()].fetch_add(1);
  l.processed.fetch_add(1);
}
void end(Ledger& l, const Msg& m) {
  l.busy[m.key_index()].store(0);
}

Msg msg_of(const Sample& s) {
  Msg m{};
  std::memcpy(&m, s.data().data(), std::min(s.data().size(), sizeof m));
  return m;
}

// Takes messages until `taken` reaches kMessages (within 120 s), checking
// each one and handing it to on_message.
template <class OnMessage>
int consume(Subscriber& sub, const std::atomic<std::uint64_t>& taken, OnMessage&& on_message) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (taken.load() < kMessages) {
    if (std::chrono::steady_clock::now() > deadline) return 3;
    Sample s;
    const Status st = sub.receive(s, std::chrono::milliseconds(100));
    if (st == Status::Timeout) continue;
    if (st != Status::Ok) return 4;
    const Msg m = msg_of(s);
    if (m.producer >= kProducers || m.key >= kKeys || m.seq >= kPerKey) return 5;
    on_message(m);
  }
  return 0;
}

int member(const std::string& topic, Ledger& l, bool victim) {
  Topic t = Topic::open(topic);
  auto sub = t.subscriber(
      {.group = "workers", .start = StartFrom::Earliest, .group_mode = GroupMode::Partitioned});
  std::uint32_t done = 0;
  return consume(*sub, l.processed, [&](const Msg& m) {
    begin(l, m);
    if (victim && ++done == 2000) {
      // Hold this one and two more, mid-processing, and wait to be killed.
      Sample more[2];
      for (Sample& x : more)
        if (sub->receive(x, std::chrono::seconds(5)) == Status::Ok) begin(l, msg_of(x));
      l.victim_holding.store(1);
      for (;;)
        ::pause();
    }
    end(l, m);
  });
}

int shared_member(const std::string& topic, Ledger& l) {
  Topic t = Topic::open(topic);
  auto sub = t.subscriber({.group = "audit", .start = StartFrom::Earliest});
  return consume(*sub, l.shared_taken, [&](const Msg& m) {
    l.shared_count[m.index()].fetch_add(1);
    l.shared_taken.fetch_add(1);
  });
}

int producer(const std::string& topic, std::uint32_t id) {
  Topic t = Topic::open(topic);
  Publisher pub = t.publisher({.timeout = std::chrono::seconds(60)});
  for (std::uint32_t seq = 0; seq < kPerKey; ++seq)
    for (std::uint32_t k = 0; k < kKeys; ++k) {
      const Msg m{id, k, seq};
      if (pub.publish(key_name(id, k), std::as_bytes(std::span(&m, 1))) != Status::Ok) return 6;
    }
  return 0;
}

TEST(Partitioned, KeyedStreamSurvivesAKilledMemberAndAJoinExactlyOnceInKeyOrder) {
  ScopedTopic t("stream", partitioned(16, 64, 64));
  Ledger* l = make_ledger();
  // Both groups exist before the first message (each starts at the earliest).
  std::vector<pid_t> members;
  const pid_t victim = spawn([&] { return member(t.name, *l, true); });
  members.push_back(spawn([&] { return member(t.name, *l, false); }));
  members.push_back(spawn([&] { return member(t.name, *l, false); }));
  const pid_t audit = spawn([&] { return shared_member(t.name, *l); });
  ASSERT_TRUE(wait_until(
      [&] {
        const TopicStatus st = t.topic.status();
        std::uint32_t n = 0;
        for (const GroupStatus& g : st.groups)
          n += g.members;
        return n == 4;
      },
      std::chrono::seconds(20)));
  std::vector<pid_t> producers;
  for (std::uint32_t i = 0; i < kProducers; ++i)
    producers.push_back(spawn([&, i] { return producer(t.name, i); }));
  // Mid-stream: the victim holds three samples it is processing.
  ASSERT_TRUE(wait_until([&] { return l->victim_holding.load() == 1; }, std::chrono::seconds(60)));
  ::kill(victim, SIGKILL);
  EXPECT_EQ(wait_child(victim, std::chrono::seconds(10)), 128 + SIGKILL);
  members.push_back(spawn([&] { return member(t.name, *l, false); }));  // a fourth joins
  for (const pid_t p : producers)
    EXPECT_EQ(wait_child(p, std::chrono::seconds(120)), 0);
  for (const pid_t p : members)
    EXPECT_EQ(wait_child(p, std::chrono::seconds(120)), 0);
  EXPECT_EQ(wait_child(audit, std::chrono::seconds(120)), 0);
  EXPECT_EQ(l->errors.load(), 0u);
  std::uint32_t wrong = 0, shared_wrong = 0;
  for (std::uint32_t i = 0; i < kMessages; ++i) {
    wrong += l->count[i].load() != 1;
    shared_wrong += l->shared_count[i].load() != 1;
  }
  EXPECT_EQ(wrong, 0u) << "messages not processed exactly once";
  EXPECT_EQ(shared_wrong, 0u) << "messages the shared group did not take exactly once";
  EXPECT_EQ(l->processed.load(), kMessages);
  ::munmap(l, sizeof(Ledger));
}

}  // namespace
}  // namespace shmbus::test
