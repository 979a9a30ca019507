// Faults with real processes and real SIGKILLs against a real shmbusd process:
// a consumer killed holding samples, a producer killed between claim and
// publish, the daemon killed mid-traffic and restarted. In each, every group
// still sees every published message exactly once, counted.
#include <sys/mman.h>

#include "daemon_util.hpp"

namespace shmbus::test {
namespace {

using namespace std::chrono_literals;

struct Shared {
  std::atomic<std::uint64_t> v[32];
};
Shared* shared_block() {
  void* p =
      ::mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  return new (p) Shared{};
}

std::uint64_t value_of(const Sample& s) {
  std::uint64_t v = 0;
  std::memcpy(&v, s.data().data(), 8);
  return v;
}

TopicOptions ring(std::uint32_t slots) {
  TopicOptions o;
  o.slot_count = slots;
  o.slot_size = 64;
  return o;
}

// Receives `n` messages whose payloads are 0..n-1 in order; returns 0 if so.
int receive_in_order(Subscriber& sub, std::uint64_t n, std::atomic<std::uint64_t>* progress) {
  Sample s;
  for (std::uint64_t i = 0; i < n; ++i) {
    const Status st = sub.receive(s, 60s);  // a bound for a stall, not a pace
    if (st != Status::Ok) {
      std::fprintf(stderr, "receive %llu: %s\n", (unsigned long long)i, to_string(st));
      return 20;
    }
    if (value_of(s) != i) {
      std::fprintf(stderr, "expected %llu got %llu\n", (unsigned long long)i,
                   (unsigned long long)value_of(s));
      return 21;
    }
    s.release();
    if (progress != nullptr) progress->store(i + 1, std::memory_order_relaxed);
  }
  return 0;
}

TEST(Faults, ConsumerKilledWhileHoldingSamplesDoesNotBlockProducers) {
  BusFixture f;
  DaemonProcess d(f.bus, f.socket);
  ASSERT_TRUE(d.start());
  Bus bus = Bus::connect(f.options());
  Topic topic = bus.create_topic("t", ring(16));
  Shared* sh = shared_block();
  const BusOptions opts = f.options();
  constexpr std::uint64_t kMessages = 2000;

  SubscriberOptions live;
  live.group = "live";
  auto watcher = topic.subscriber(live);  // a group that must see everything

  const pid_t victim = spawn([&]() -> int {
    Bus b = Bus::connect(opts);
    SubscriberOptions so;
    so.group = "slow";
    auto sub = b.subscriber("t", so);
    sh->v[0].store(1);  // joined
    std::vector<Sample> held(5);
    for (auto& s : held)
      if (sub->receive(s, 20s) != Status::Ok) return 30;
    sh->v[1].store(1);  // holding 5 samples; now wait to be killed
    wait_until([] { return false; }, 60s);
    return 31;
  });
  ASSERT_TRUE(wait_until([&] { return sh->v[0].load() == 1; }, 20s));
  PublisherOptions po;
  po.timeout = 60s;  // until the daemon has freed the dead member's seat: no set time
  Publisher pub = topic.publisher(po);
  for (std::uint64_t i = 0; i < 5; ++i)
    ASSERT_EQ(pub.publish(std::as_bytes(std::span(&i, 1))), Status::Ok);
  ASSERT_TRUE(wait_until([&] { return sh->v[1].load() == 1; }, 20s));
  ::kill(victim, SIGKILL);
  // Under block, the dead member's hazard would stop producers after 16
  // messages; the daemon frees it, so all of these go through.
  std::thread consumer([&] { EXPECT_EQ(receive_in_order(*watcher, kMessages, nullptr), 0); });
  for (std::uint64_t i = 5; i < kMessages; ++i)
    ASSERT_EQ(pub.publish(std::as_bytes(std::span(&i, 1))), Status::Ok) << i;
  consumer.join();
  EXPECT_EQ(wait_child(victim, 10s), 128 + SIGKILL);
  const TopicStatus st = bus.describe("t");
  for (const GroupStatus& g : st.groups) {
    if (g.name == "slow") {
      EXPECT_EQ(g.members, 0u);
    }
  }
}

TEST(Faults, ProducerKilledBetweenClaimAndPublishIsSkipped) {
  BusFixture f;
  DaemonProcess d(f.bus, f.socket);
  ASSERT_TRUE(d.start());
  Bus bus = Bus::connect(f.options());
  Topic topic = bus.create_topic("t", ring(256));  // room for all 110: read after publishing
  Shared* sh = shared_block();
  const BusOptions opts = f.options();
  SubscriberOptions g1, g2;
  g1.group = "a";
  g2.group = "b";
  auto a = topic.subscriber(g1);
  auto b = topic.subscriber(g2);

  const pid_t victim = spawn([&]() -> int {
    Bus bb = Bus::connect(opts);
    Publisher p = bb.publisher("t");
    for (std::uint64_t i = 0; i < 10; ++i)
      if (p.publish(std::as_bytes(std::span(&i, 1))) != Status::Ok) return 40;
    Loan l = p.loan(8);  // claims sequence 10 and never publishes it
    if (!l) return 41;
    sh->v[0].store(1);
    wait_until([] { return false; }, 60s);
    return 42;
  });
  ASSERT_TRUE(wait_until([&] { return sh->v[0].load() == 1; }, 20s));
  ::kill(victim, SIGKILL);
  EXPECT_EQ(wait_child(victim, 10s), 128 + SIGKILL);
  Publisher pub = topic.publisher();
  for (std::uint64_t i = 10; i < 110; ++i)
    ASSERT_EQ(pub.publish(std::as_bytes(std::span(&i, 1))), Status::Ok);
  // Both groups get 0..109 (the abandoned claim, sequence 10, is skipped).
  EXPECT_EQ(receive_in_order(*a, 110, nullptr), 0);
  EXPECT_EQ(receive_in_order(*b, 110, nullptr), 0);
  EXPECT_EQ(bus.describe("t").tail, 111u);
}

TEST(Faults, DaemonKilledMidTrafficLosesNothingAndIsAdoptedOnRestart) {
  BusFixture f;
  auto d1 = std::make_unique<DaemonProcess>(f.bus, f.socket);
  ASSERT_TRUE(d1->start());
  constexpr std::uint64_t kMessages = 300000;
  {
    Bus bus = Bus::connect(f.options());
    bus.create_topic("t", ring(256));
  }
  // [0] consumer joined, [1] progress, [2] new daemon pid, [3] old daemon killed
  Shared* sh = shared_block();
  const BusOptions opts = f.options();  // autospawn off: the test restarts the daemon
  const pid_t consumer = spawn([&]() -> int {
    Bus b = Bus::connect(opts);
    SubscriberOptions so;
    so.group = "g";
    auto sub = b.subscriber("t", so);
    sh->v[0].store(1);
    const int rc = receive_in_order(*sub, kMessages, &sh->v[1]);
    if (rc != 0) return rc;
    // The bus reconnected to the new daemon by itself.
    if (!wait_until([&] { return b.daemon_pid() == static_cast<int>(sh->v[2].load()); }, 60s))
      return 50;
    return 0;
  });
  ASSERT_TRUE(wait_until([&] { return sh->v[0].load() == 1; }, 20s));
  const pid_t producer = spawn([&]() -> int {
    Bus b = Bus::connect(opts);
    PublisherOptions po;
    po.timeout = 30s;
    Publisher p = b.publisher("t", po);
    for (std::uint64_t i = 0; i < kMessages; ++i) {
      // The second half only once the daemon is dead: traffic is then in
      // flight across the kill however fast this process runs (without the
      // gate, all of it could be through before the kill on a loaded machine).
      if (i == kMessages / 2 && !wait_until([&] { return sh->v[3].load() != 0; }, 120s)) return 62;
      if (p.publish(std::as_bytes(std::span(&i, 1))) != Status::Ok) return 60;
    }
    if (!wait_until([&] { return b.daemon_pid() == static_cast<int>(sh->v[2].load()); }, 60s))
      return 61;
    return 0;
  });
  ASSERT_TRUE(wait_until([&] { return sh->v[1].load() > kMessages / 10; }, 60s));
  d1->kill9();                                    // mid-traffic
  const std::uint64_t at_kill = sh->v[1].load();  // at most kMessages / 2: the gate
  sh->v[3].store(1);
  // Traffic goes on without the daemon.
  ASSERT_TRUE(wait_until([&] { return sh->v[1].load() > at_kill + kMessages / 10; }, 60s))
      << "traffic stopped with the daemon";
  DaemonProcess d2(f.bus, f.socket);
  ASSERT_TRUE(d2.start());
  sh->v[2].store(static_cast<std::uint64_t>(d2.pid()));
  EXPECT_EQ(wait_child(producer, 120s), 0);
  EXPECT_EQ(wait_child(consumer, 120s), 0);
  // The restarted daemon adopted the region with its position.
  Bus bus = Bus::connect(f.options());
  const auto topics = bus.topics();
  ASSERT_EQ(topics.size(), 1u);
  EXPECT_EQ(topics[0].name, "t");
  EXPECT_EQ(topics[0].tail, kMessages);
  ASSERT_EQ(topics[0].groups.size(), 1u);
  EXPECT_EQ(topics[0].groups[0].position, kMessages);
}

// Issue 15: a partitioned group rebalances through the region alone. With
// the daemon SIGKILLed, a member joins and another leaves; the partitions
// move, and every message is taken exactly once.
TEST(Faults, PartitionedGroupRebalancesWithTheDaemonDown) {
  BusFixture f;
  DaemonProcess d(f.bus, f.socket);
  ASSERT_TRUE(d.start());
  constexpr std::uint64_t kHalf = 2000;
  constexpr std::uint64_t kTotal = 2 * kHalf;
  {
    // The parent forks the members below: it must not have a Bus (whose
    // monitor thread would make the fork multi-threaded) until they run.
    Bus setup = Bus::connect(f.options());
    TopicOptions o = ring(64);
    o.partitions = 8;
    setup.create_topic("t", o);
  }
  // [0..2] member a, b, c joined; [3] daemon dead; [4] c: leave; [5] c left;
  // [6] taken in all; [7] taken by b; [8] errors; [9] b has the region
  // (the daemon is killed only then); [16..] per-message counts
  // live in `counts`.
  Shared* sh = shared_block();
  void* mem = ::mmap(nullptr, kTotal * sizeof(std::atomic<std::uint32_t>), PROT_READ | PROT_WRITE,
                     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(mem, MAP_FAILED);
  auto* counts = new (mem) std::atomic<std::uint32_t>[kTotal] {};
  const BusOptions opts = f.options();
  const SubscriberOptions so{
      .group = "g", .start = StartFrom::Earliest, .group_mode = GroupMode::Partitioned};
  // Takes messages until all are taken (or, for c, until told to leave).
  const auto consume = [&](Subscriber& sub, bool is_b, bool leaves) -> int {
    const auto deadline = std::chrono::steady_clock::now() + 60s;
    while (sh->v[6].load() < kTotal) {
      if (leaves && sh->v[4].load() != 0) return 0;
      if (std::chrono::steady_clock::now() > deadline) return 30;
      Sample s;
      const Status st = sub.receive(s, 50ms);
      if (st == Status::Timeout) continue;
      if (st != Status::Ok) return 31;
      const std::uint64_t v = value_of(s);
      if (v >= kTotal) return 32;
      counts[v].fetch_add(1);
      sh->v[6].fetch_add(1);
      if (is_b) sh->v[7].fetch_add(1);
    }
    return 0;
  };
  const pid_t a = spawn([&]() -> int {
    Bus b = Bus::connect(opts);
    auto sub = b.subscriber("t", so);
    sh->v[0].store(1);
    return consume(*sub, false, false);
  });
  const pid_t c = spawn([&]() -> int {
    Bus b = Bus::connect(opts);
    {
      auto sub = b.subscriber("t", so);
      sh->v[2].store(1);
      if (const int rc = consume(*sub, false, true); rc != 0) return rc;
    }  // leaves here, with the daemon down
    sh->v[5].store(1);
    return 0;
  });
  const pid_t b = spawn([&]() -> int {
    Bus bb = Bus::connect(opts);
    Topic t = bb.open_topic("t");  // the region, while the daemon still runs
    sh->v[9].store(1);
    if (!wait_until([&] { return sh->v[3].load() != 0; }, 60s)) return 40;
    auto sub = t.subscriber(so);  // joins with the daemon dead
    sh->v[1].store(1);
    return consume(*sub, true, false);
  });
  ASSERT_TRUE(wait_until(
      [&] { return sh->v[0].load() == 1 && sh->v[2].load() == 1 && sh->v[9].load() == 1; }, 20s));
  Bus bus = Bus::connect(f.options());
  PublisherOptions po;
  po.timeout = 30s;
  Publisher pub = bus.publisher("t", po);
  const auto publish = [&](std::uint64_t from, std::uint64_t to) {
    for (std::uint64_t i = from; i < to; ++i)
      ASSERT_EQ(pub.publish("key-" + std::to_string(i % 97), std::as_bytes(std::span(&i, 1))),
                Status::Ok);
  };
  publish(0, kHalf);
  ASSERT_TRUE(wait_until([&] { return sh->v[6].load() >= kHalf / 2; }, 30s));
  d.kill9();
  sh->v[3].store(1);
  ASSERT_TRUE(wait_until([&] { return sh->v[1].load() == 1; }, 20s)) << "b joined";
  sh->v[4].store(1);  // c leaves
  ASSERT_TRUE(wait_until([&] { return sh->v[5].load() == 1; }, 20s)) << "c left";
  publish(kHalf, kTotal);
  EXPECT_EQ(wait_child(a, 90s), 0);
  EXPECT_EQ(wait_child(b, 90s), 0);
  EXPECT_EQ(wait_child(c, 90s), 0);
  std::uint64_t wrong = 0;
  for (std::uint64_t i = 0; i < kTotal; ++i)
    wrong += counts[i].load() != 1;
  EXPECT_EQ(wrong, 0u) << "messages not taken exactly once";
  EXPECT_GT(sh->v[7].load(), 0u) << "no partition moved to the member that joined";
  ::munmap(mem, kTotal * sizeof(std::atomic<std::uint32_t>));
}

}  // namespace
}  // namespace shmbus::test
