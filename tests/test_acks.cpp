// At-least-once groups (issue 17): acknowledgement by release, redelivery of
// what a SIGKILLed member held, nack, and the dead-letter topic, through a
// real shmbusd and real processes. Every interleaving that matters is forced
// through flags in shared memory (a member announces that it holds samples
// before it is killed; the producer publishes a stage only when told), never
// by timing.
#include <signal.h>
#include <sys/mman.h>

#include <random>
#include <string>
#include <vector>

#include "daemon_util.hpp"

namespace shmbus::test {
namespace {

using namespace std::chrono_literals;

constexpr auto kWait = 60s;

struct Served {
  BusFixture f;
  DaemonProcess d{f.bus, f.socket};
  Served() { EXPECT_TRUE(d.start()); }
};

template <class T>
T* shared_object() {
  void* p = ::mmap(nullptr, sizeof(T), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw std::runtime_error("mmap failed");
  return new (p) T{};
}

SubscriberOptions at_least_once(std::uint32_t max_deliveries = kDefaultMaxDeliveries) {
  SubscriberOptions o;
  o.group = "work";
  o.start = StartFrom::Earliest;
  o.delivery = Delivery::AtLeastOnce;
  o.max_deliveries = max_deliveries;
  return o;
}

// A checksummed message: its index and a hash of it.
struct Payload {
  std::uint64_t index;
  std::uint64_t check;
};
std::uint64_t check_of(std::uint64_t i) {
  return (i + 0x9e3779b97f4a7c15ULL) * 0xbf58476d1ce4e5b9ULL;
}

TEST(AtLeastOnce, AMemberKilledHoldingSamplesHasThemRedelivered) {
  Served env;
  SharedCounters* sh = make_shared_counters();
  const std::string topic = "jobs";
  const pid_t member = spawn([&] {
    if (!wait_until([&] { return sh->value[1].load() == 1; }, kWait)) return 2;
    Bus b = Bus::connect(env.f.options());
    auto sub = b.subscriber(topic, at_least_once());
    std::vector<Sample> held(3);
    for (Sample& s : held)
      if (sub->receive(s, kWait) != Status::Ok) return 3;
    sh->value[0].store(1);  // holding 0, 1 and 2: kill me now
    for (;;)
      ::pause();
  });
  Bus bus = Bus::connect(env.f.options());
  Topic t = bus.create_topic(topic, ring_options(16, 64));
  Publisher pub = t.publisher();
  for (int i = 0; i < 5; ++i)
    ASSERT_EQ(pub.publish(bytes_of("m" + std::to_string(i)), 1s), Status::Ok);
  sh->value[1].store(1);
  ASSERT_TRUE(wait_until([&] { return sh->value[0].load() == 1; }, kWait));
  ::kill(member, SIGKILL);
  ASSERT_EQ(wait_child(member, 10s), 128 + SIGKILL);

  auto sub = bus.subscriber(topic, at_least_once());
  EXPECT_EQ(sub->delivery(), Delivery::AtLeastOnce);
  std::vector<std::uint32_t> count(5, 0);
  for (int n = 0; n < 5; ++n) {
    Sample s;
    ASSERT_EQ(sub->receive(s, kWait), Status::Ok) << n;
    ASSERT_LT(s.sequence(), 5u);
    EXPECT_EQ(string_of(s.data()), "m" + std::to_string(s.sequence()));
    count[s.sequence()] = s.delivery_count();
    EXPECT_EQ(s.redelivered(), s.sequence() < 3) << s.sequence();
  }
  EXPECT_EQ(count, (std::vector<std::uint32_t>{2, 2, 2, 1, 1}));
  Sample none;
  EXPECT_EQ(sub->receive(none, 20ms), Status::Timeout);
  const GroupStatus g = bus.describe_group(topic, "work");
  EXPECT_EQ(g.delivery, Delivery::AtLeastOnce);
  EXPECT_EQ(g.redelivered, 3u);
  EXPECT_EQ(g.unacked_orphans, 0u);
}

// Every seat an orphan (max_members 1: the only member died holding
// samples): the next member takes the orphan's seat over, samples included.
TEST(AtLeastOnce, AMemberJoiningAGroupOfOrphansOnlyTakesOneOver) {
  Served env;
  SharedCounters* sh = make_shared_counters();
  const pid_t member = spawn([&] {
    if (!wait_until([&] { return sh->value[1].load() == 1; }, kWait)) return 2;
    Bus b = Bus::connect(env.f.options());
    auto sub = b.subscriber("solo", at_least_once());
    std::vector<Sample> held(2);
    for (Sample& s : held)
      if (sub->receive(s, kWait) != Status::Ok) return 3;
    sh->value[0].store(1);
    for (;;)
      ::pause();
  });
  Bus bus = Bus::connect(env.f.options());
  TopicOptions o = ring_options(16, 64);
  o.max_members = 1;
  Topic t = bus.create_topic("solo", o);
  Publisher pub = t.publisher();
  for (int i = 0; i < 3; ++i)
    ASSERT_EQ(pub.publish(bytes_of("s" + std::to_string(i)), 1s), Status::Ok);
  sh->value[1].store(1);
  ASSERT_TRUE(wait_until([&] { return sh->value[0].load() == 1; }, kWait));
  ::kill(member, SIGKILL);
  ASSERT_EQ(wait_child(member, 10s), 128 + SIGKILL);
  // The daemon makes it an orphan once it sees the pid gone.
  ASSERT_TRUE(wait_until([&] { return bus.describe_group("solo", "work").orphans == 1; }, kWait));
  auto sub = bus.subscriber("solo", at_least_once());
  std::vector<std::uint32_t> count(3, 0);
  for (int n = 0; n < 3; ++n) {
    Sample s;
    ASSERT_EQ(sub->receive(s, kWait), Status::Ok);
    ASSERT_LT(s.sequence(), 3u);
    count[s.sequence()] = s.delivery_count();
  }
  EXPECT_EQ(count, (std::vector<std::uint32_t>{2, 2, 1}));
  EXPECT_EQ(bus.describe_group("solo", "work").orphans, 0u);
}

// A reset moves the group, and what dead members left goes with it.
TEST(AtLeastOnce, AResetClearsWhatDeadMembersLeft) {
  Served env;
  SharedCounters* sh = make_shared_counters();
  const pid_t member = spawn([&] {
    if (!wait_until([&] { return sh->value[1].load() == 1; }, kWait)) return 2;
    Bus b = Bus::connect(env.f.options());
    auto sub = b.subscriber("reset", at_least_once());
    Sample s;
    if (sub->receive(s, kWait) != Status::Ok) return 3;
    sh->value[0].store(1);
    for (;;)
      ::pause();
  });
  Bus bus = Bus::connect(env.f.options());
  Topic t = bus.create_topic("reset", ring_options(4, 64));
  Publisher pub = t.publisher();
  ASSERT_EQ(pub.publish(bytes_of("x"), 1s), Status::Ok);
  sh->value[1].store(1);
  ASSERT_TRUE(wait_until([&] { return sh->value[0].load() == 1; }, kWait));
  ::kill(member, SIGKILL);
  ASSERT_EQ(wait_child(member, 10s), 128 + SIGKILL);
  ASSERT_TRUE(wait_until([&] { return bus.describe_group("reset", "work").orphans == 1; }, kWait));
  // The orphan's hazard holds the ring: 3 more fit, the 4th would wait.
  for (int i = 0; i < 3; ++i)
    ASSERT_EQ(pub.try_publish(bytes_of("y")), Status::Ok);
  EXPECT_EQ(pub.try_publish(bytes_of("z")), Status::WouldBlock);
  bus.reset_group("reset", "work", {StartFrom::Latest, 0});
  EXPECT_EQ(bus.describe_group("reset", "work").orphans, 0u);
  EXPECT_EQ(pub.try_publish(bytes_of("z")), Status::Ok);
}

TEST(AtLeastOnce, AGroupKeepsItsDeliveryModeAndNeedsAName) {
  Served env;
  Bus bus = Bus::connect(env.f.options());
  Topic t = bus.create_topic("modes", ring_options(16, 64));
  auto first = t.subscriber(at_least_once());
  SubscriberOptions plain;
  plain.group = "work";
  EXPECT_THROW((void)t.subscriber(plain), Error);
  SubscriberOptions unnamed = at_least_once();
  unnamed.group.clear();
  EXPECT_THROW((void)t.subscriber(unnamed), Error);
  EXPECT_THROW((void)t.subscriber(at_least_once(0)), Error);
  // A member that joins later takes the group's limit, not its own.
  auto second = t.subscriber(at_least_once(9));
  EXPECT_EQ(second->max_deliveries(), kDefaultMaxDeliveries);
}

TEST(AtLeastOnce, APoisonMessageNackedMaxDeliveriesTimesGoesToTheDeadLetterTopic) {
  Served env;
  Bus bus = Bus::connect(env.f.options());
  Topic t = bus.create_topic("orders", ring_options(16, 128));
  auto sub = t.subscriber(at_least_once(3));
  Publisher pub = t.publisher();
  for (int i = 0; i < 8; ++i) {
    const std::string body = i == 4 ? "poison" : "ok" + std::to_string(i);
    const std::array<Property, 1> props{{{"kind", i == 4 ? "bad" : "good"}}};
    Route r;
    r.properties = props;
    ASSERT_EQ(pub.publish(r, bytes_of(body), 1s), Status::Ok);
  }
  std::vector<std::uint32_t> poison_deliveries;
  std::vector<std::uint64_t> good;
  for (;;) {
    Sample s;
    const Status st = sub->receive(s, 50ms);
    if (st == Status::Timeout) break;
    ASSERT_EQ(st, Status::Ok);
    if (string_of(s.data()) == "poison") {
      poison_deliveries.push_back(s.delivery_count());
      ASSERT_EQ(s.nack(), Status::Ok);
      EXPECT_FALSE(s);  // given back
    } else {
      good.push_back(s.sequence());
      EXPECT_FALSE(s.redelivered());
    }
  }
  EXPECT_EQ(poison_deliveries, (std::vector<std::uint32_t>{1, 2, 3}));
  EXPECT_EQ(good, (std::vector<std::uint64_t>{0, 1, 2, 3, 5, 6, 7}));
  EXPECT_EQ(sub->dead_lettered(), 1u);
  // The dead letter: the payload and properties, and where it came from.
  Topic dlq = bus.open_topic("orders.dlq");
  EXPECT_EQ(dlq.options().slot_size, 128u);
  auto reader = dlq.subscriber({.group = {}, .start = StartFrom::Earliest});
  Sample d;
  ASSERT_EQ(reader->receive(d, kWait), Status::Ok);
  EXPECT_EQ(string_of(d.data()), "poison");
  const Properties p = d.properties();
  EXPECT_EQ(p.get("kind"), "bad");
  EXPECT_EQ(p.get("dlq.topic"), "orders");
  EXPECT_EQ(p.get("dlq.offset"), "4");
  EXPECT_EQ(p.get("dlq.partition"), "0");
  EXPECT_EQ(p.get("dlq.reason"), "nacked");
  EXPECT_EQ(p.get("dlq.deliveries"), "3");
  EXPECT_EQ(bus.describe_group("orders", "work").dead_lettered, 1u);
  // Under at most once, nack is refused.
  SubscriberOptions amo;
  amo.group = "other";
  amo.start = StartFrom::Earliest;
  auto plain = t.subscriber(amo);
  Sample s;
  ASSERT_EQ(plain->receive(s, kWait), Status::Ok);
  EXPECT_EQ(s.nack(), Status::Invalid);
}

// A partitioned group: the partition's next owner gets what the dead owner
// held first, in offset order, then the rest.
TEST(AtLeastOnce, APartitionsNextOwnerGetsTheUnacknowledgedMessagesFirstInOrder) {
  Served env;
  SharedCounters* sh = make_shared_counters();
  const std::string topic = "keyed";
  SubscriberOptions o = at_least_once();
  o.group_mode = GroupMode::Partitioned;
  const pid_t member = spawn([&] {
    if (!wait_until([&] { return sh->value[1].load() == 1; }, kWait)) return 2;
    Bus b = Bus::connect(env.f.options());
    auto sub = b.subscriber(topic, o);
    std::vector<Sample> held;
    while (held.size() < 3) {
      Sample s;
      if (sub->receive(s, kWait) != Status::Ok) return 3;
      if (s.partition() == 0) held.push_back(std::move(s));
    }
    sh->value[0].store(1);
    for (;;)
      ::pause();
  });
  Bus bus = Bus::connect(env.f.options());
  TopicOptions to = ring_options(16, 64);
  to.partitions = 2;
  Topic t = bus.create_topic(topic, to);
  Publisher pub = t.publisher();
  for (int i = 0; i < 6; ++i)
    ASSERT_EQ(pub.publish(Route::to_partition(0), bytes_of("p0-" + std::to_string(i)), 1s),
              Status::Ok);
  sh->value[1].store(1);
  ASSERT_TRUE(wait_until([&] { return sh->value[0].load() == 1; }, kWait));
  ::kill(member, SIGKILL);
  ASSERT_EQ(wait_child(member, 10s), 128 + SIGKILL);
  auto sub = bus.subscriber(topic, o);
  std::vector<std::uint64_t> order;
  std::vector<bool> again;
  while (order.size() < 6) {
    Sample s;
    ASSERT_EQ(sub->receive(s, kWait), Status::Ok);
    ASSERT_EQ(s.partition(), 0u);
    order.push_back(s.sequence());
    again.push_back(s.redelivered());
  }
  EXPECT_EQ(order, (std::vector<std::uint64_t>{0, 1, 2, 3, 4, 5}));
  EXPECT_EQ(again, (std::vector<bool>{true, true, true, false, false, false}));
}

// Shared state of the kill test: what each message's processings were, and
// the kill protocol (a member that holds samples once `distinct` reached
// `target` claims the request, says so in `victim` and waits to be killed).
constexpr std::uint64_t kMessages = 100'000;
constexpr int kKills = 10;
constexpr std::uint64_t kStage = 9'000;  // messages the producer may publish per kill
struct KillTest {
  std::atomic<std::uint32_t> processed[kMessages];
  std::atomic<std::uint32_t> flagged[kMessages];  // processings flagged redelivered
  std::atomic<std::uint64_t> distinct;
  std::atomic<std::uint64_t> bad;
  std::atomic<std::uint64_t> target;
  std::atomic<std::int32_t> victim;
  std::atomic<std::uint32_t> request;
  std::atomic<std::uint32_t> stage;  // the producer publishes below stage * kStage
  std::atomic<std::uint32_t> ready;
  std::atomic<std::uint32_t> done;
};

int run_member(const BusOptions& bo, KillTest& k, int slot, unsigned seed) {
  if (!wait_until([&] { return k.ready.load() == 1; }, kWait)) return 2;
  Bus b = Bus::connect(bo);
  auto sub = b.subscriber("work", at_least_once(1000));
  std::mt19937 rng(seed);
  std::vector<Sample> held;
  std::size_t hold_up_to = 1 + rng() % 8;
  while (k.done.load() == 0) {
    Sample s;
    const Status st = sub->receive(s, 20ms);
    if (st == Status::Ok) {
      Payload p{};
      if (s.data().size() != sizeof p) return 4;
      std::memcpy(&p, s.data().data(), sizeof p);
      if (p.index >= kMessages || p.check != check_of(p.index)) {
        k.bad.fetch_add(1);
        return 5;
      }
      if (s.redelivered()) k.flagged[p.index].fetch_add(1);
      if (k.processed[p.index].fetch_add(1) == 0) k.distinct.fetch_add(1);
      held.push_back(std::move(s));
      if (k.request.load() == 1 && k.distinct.load() >= k.target.load()) {
        std::int32_t none = -1;
        if (k.victim.compare_exchange_strong(none, slot))
          for (;;)
            ::pause();  // holding samples: SIGKILL me
      }
    } else if (st != Status::Timeout) {
      return 6;
    }
    if (held.size() >= hold_up_to || st == Status::Timeout) {
      held.clear();  // acknowledged
      hold_up_to = 1 + rng() % 8;
    }
  }
  return 0;
}

TEST(AtLeastOnce, ThreeMembersTenKillsEveryMessageAtLeastOnceDuplicatesFlagged) {
  Served env;
  KillTest* k = shared_object<KillTest>();
  k->victim.store(-1);
  const BusOptions bo = env.f.options();
  const auto producer = spawn([&] {
    if (!wait_until([&] { return k->ready.load() == 1; }, kWait)) return 2;
    Bus b = Bus::connect(bo);
    Publisher pub = b.publisher("work");
    for (std::uint64_t i = 0; i < kMessages; ++i) {
      if (!wait_until([&] { return k->done.load() == 1 || i < k->stage.load() * kStage; }, kWait))
        return 3;
      const Payload p{i, check_of(i)};
      if (pub.publish(std::as_bytes(std::span(&p, 1)), kWait) != Status::Ok) return 4;
    }
    return 0;
  });
  pid_t members[3];
  unsigned seed = 1;
  for (int m = 0; m < 3; ++m)
    members[m] = spawn([&, m] { return run_member(bo, *k, m, seed + m); });
  seed += 3;
  // The topic, made by a child: this process forks members all along, so
  // it has no Bus (and no threads) until the end.
  // And the group, before anything is published: an at-least-once group is
  // durable, so it gates the producer from here on, members or not.
  const pid_t maker = spawn([&] {
    Bus b = Bus::connect(bo);
    Topic t = b.create_topic("work", ring_options(256, 64));
    (void)t.subscriber(at_least_once(1000));
    return 0;
  });
  ASSERT_EQ(wait_child(maker, kWait), 0);
  k->ready.store(1);
  std::mt19937 rng(42);
  for (int kill = 0; kill < kKills; ++kill) {
    // A moment within this stage's messages, then the stage.
    k->target.store(kill * kStage + 1 + rng() % (kStage - 1));
    k->victim.store(-1);
    k->request.store(1);
    k->stage.store(static_cast<std::uint32_t>(kill + 1));  // only now
    ASSERT_TRUE(wait_until([&] { return k->victim.load() >= 0; }, kWait)) << "kill " << kill;
    const int v = k->victim.load();
    ::kill(members[v], SIGKILL);
    ASSERT_EQ(wait_child(members[v], 10s), 128 + SIGKILL);
    k->request.store(0);
    members[v] = spawn([&, v] { return run_member(bo, *k, v, seed); });
    ++seed;
  }
  k->stage.store(kKills + 100);  // the rest
  if (!wait_until([&] { return k->distinct.load() == kMessages; }, 120s)) {
    ADD_FAILURE() << k->distinct.load() << " of " << kMessages;
    std::uint64_t shown = 0;
    for (std::uint64_t i = 0; i < kMessages && shown < 10; ++i)
      if (k->processed[i].load() == 0) {
        std::printf("missing %llu\n", static_cast<unsigned long long>(i));
        ++shown;
      }
    const pid_t show = spawn([&] {
      Bus b = Bus::connect(bo);
      const TopicStatus t = b.describe("work");
      for (const GroupStatus& g : t.groups)
        std::printf(
            "group %s members %u position %llu lag %llu orphans %u unacked %llu "
            "redelivered %llu lost %llu tail %llu\n",
            g.name.c_str(), g.members, static_cast<unsigned long long>(g.position),
            static_cast<unsigned long long>(g.lag), g.orphans,
            static_cast<unsigned long long>(g.unacked_orphans),
            static_cast<unsigned long long>(g.redelivered), static_cast<unsigned long long>(g.lost),
            static_cast<unsigned long long>(t.tail));
      return 0;
    });
    (void)wait_child(show, kWait);
  }
  k->done.store(1);
  EXPECT_EQ(wait_child(producer, kWait), 0);
  for (pid_t m : members)
    EXPECT_EQ(wait_child(m, kWait), 0);
  EXPECT_EQ(k->bad.load(), 0u);
  std::uint64_t missing = 0, unflagged_twice = 0, flagged = 0;
  for (std::uint64_t i = 0; i < kMessages; ++i) {
    const std::uint32_t n = k->processed[i].load(), f = k->flagged[i].load();
    if (n == 0) ++missing;
    if (n - f > 1) ++unflagged_twice;  // a duplicate that did not say so
    flagged += f;
  }
  EXPECT_EQ(missing, 0u);
  EXPECT_EQ(unflagged_twice, 0u);
  // Each victim held at least one sample, each delivered again.
  EXPECT_GE(flagged, static_cast<std::uint64_t>(kKills));
  Bus bus = Bus::connect(bo);
  const GroupStatus g = bus.describe_group("work", "work");
  EXPECT_GE(g.redelivered, static_cast<std::uint64_t>(kKills));
  EXPECT_EQ(g.unacked_orphans, 0u);
  EXPECT_EQ(g.members, 0u);
}

}  // namespace
}  // namespace shmbus::test
