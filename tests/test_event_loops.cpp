// Push consumers, selectors and descriptors for event loops (issue 18), through
// a real shmbusd and real producer processes. Interleavings that matter (a
// publish right as a waiter goes to sleep, a listener destroyed mid-stream)
// are forced through flags in shared memory, never by timing.
#include <poll.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <sys/types.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "daemon_util.hpp"
#include "shmbus/listener.hpp"
#include "shmbus/selector.hpp"

namespace shmbus::test {
namespace {

using namespace std::chrono_literals;

constexpr auto kWait = 60s;

struct Served {
  BusFixture f;
  DaemonProcess d{f.bus, f.socket};
  Served() { EXPECT_TRUE(d.start()); }
};

// A checksummed message: its index and a hash of it.
struct Payload {
  std::uint64_t index;
  std::uint64_t check;
};
std::uint64_t check_of(std::uint64_t i) {
  return (i + 0x9e3779b97f4a7c15ULL) * 0xbf58476d1ce4e5b9ULL;
}
std::span<const std::byte> bytes(const Payload& p) {
  return {reinterpret_cast<const std::byte*>(&p), sizeof p};
}
// The payload of a sample, or index ~0 when its size or checksum is wrong.
Payload payload_of(std::span<const std::byte> d) {
  Payload p{~0ULL, 0};
  if (d.size() != sizeof p) return p;
  std::memcpy(&p, d.data(), sizeof p);
  if (p.check != check_of(p.index)) p.index = ~0ULL;
  return p;
}

// A child that connects once `go` is set and publishes `n` checksummed
// messages to `topic` (keyed "k<i % keys>" when keys > 0).
pid_t producer(const Served& env, std::atomic<std::uint64_t>& go, const std::string& topic,
               std::uint64_t n, std::uint32_t keys = 0) {
  return spawn([&env, &go, topic, n, keys] {
    if (!wait_until([&] { return go.load() != 0; }, kWait)) return 2;
    Bus b = Bus::connect(env.f.options());
    Publisher pub = b.publisher(topic);
    for (std::uint64_t i = 0; i < n; ++i) {
      const Payload p{i, check_of(i)};
      const Status st =
          keys == 0 ? pub.publish(bytes(p), kWait)
                    : pub.publish(Route::with_key("k" + std::to_string(i % keys)), bytes(p), kWait);
      if (st != Status::Ok) return 3;
    }
    return 0;
  });
}

// How many messages were not handled exactly once.
std::uint64_t not_once(const std::vector<std::atomic<std::uint8_t>>& seen) {
  std::uint64_t wrong = 0;
  for (const auto& c : seen)
    wrong += c.load() != 1;
  return wrong;
}

SubscriberOptions earliest(std::string group = "", Delivery d = Delivery::AtMostOnce) {
  SubscriberOptions o;
  o.group = std::move(group);
  o.start = StartFrom::Earliest;
  o.delivery = d;
  return o;
}

// ---- Listener ----------------------------------------------------------------

TEST(Listener, ThreeWorkersHandleEveryMessageExactlyOnce) {
  Served env;
  SharedCounters* sh = make_shared_counters();
  constexpr std::uint64_t kCount = 100'000;
  const pid_t child = producer(env, sh->value[0], "stream", kCount);
  Bus bus = Bus::connect(env.f.options());
  bus.create_topic("stream", ring_options(1024, 64));
  auto sub = bus.subscriber("stream", earliest());
  std::vector<std::atomic<std::uint8_t>> seen(kCount);
  std::atomic<std::uint64_t> bad{0};
  ListenOptions lo;
  lo.threads = 3;
  Listener l = sub->listen(
      [&](const Sample& s) {
        const Payload p = payload_of(s.data());
        if (p.index >= kCount) {
          bad.fetch_add(1);
          return;
        }
        seen[p.index].fetch_add(1);
      },
      lo);
  EXPECT_TRUE(l.running());
  sh->value[0].store(1);
  ASSERT_TRUE(wait_until([&] { return l.handled() + bad.load() >= kCount; }, kWait)) << l.handled();
  EXPECT_EQ(wait_child(child, 10s), 0);
  l.stop();
  EXPECT_FALSE(l.running());
  EXPECT_EQ(bad.load(), 0u);
  EXPECT_EQ(l.handled(), kCount);
  EXPECT_EQ(l.failed(), 0u);
  EXPECT_EQ(not_once(seen), 0u);
}

TEST(Listener, OrderedByKeyKeepsEveryKeysOrder) {
  Served env;
  SharedCounters* sh = make_shared_counters();
  constexpr std::uint64_t kCount = 20'000;
  constexpr std::uint32_t kKeys = 8;
  const pid_t child = producer(env, sh->value[0], "keyed", kCount, kKeys);
  Bus bus = Bus::connect(env.f.options());
  TopicOptions o = ring_options(256, 64);
  o.partitions = 4;
  bus.create_topic("keyed", o);
  auto sub = bus.subscriber("keyed", earliest());
  // Each key is handled by one worker only, so its slot needs no atomic.
  std::array<std::uint64_t, kKeys> next{};
  for (std::uint32_t k = 0; k < kKeys; ++k)
    next[k] = k;  // key k's first message
  std::atomic<std::uint64_t> out_of_order{0};
  ListenOptions lo;
  lo.threads = 4;
  lo.ordered_by_key = true;
  Listener l = sub->listen(
      [&](const Sample& s) {
        const Payload p = payload_of(s.data());
        const std::uint32_t k = static_cast<std::uint32_t>(p.index % kKeys);
        if (p.index == ~0ULL || string_of(s.key()) != "k" + std::to_string(k) ||
            p.index != next[k]) {
          out_of_order.fetch_add(1);
          return;
        }
        next[k] += kKeys;
      },
      lo);
  sh->value[0].store(1);
  ASSERT_TRUE(wait_until([&] { return l.handled() >= kCount; }, kWait)) << l.handled();
  EXPECT_EQ(wait_child(child, 10s), 0);
  l.stop();
  EXPECT_EQ(out_of_order.load(), 0u);
  for (std::uint32_t k = 0; k < kKeys; ++k)
    EXPECT_EQ(next[k], kCount + k) << k;
}

// Under at least once, a Listener destroyed while samples are queued for its
// workers gives them back: the next listener handles them, and every message
// is handled exactly once overall (what a handler finished was acknowledged).
TEST(Listener, DestroyedMidStreamLosesNothingUnderAtLeastOnce) {
  Served env;
  SharedCounters* sh = make_shared_counters();
  constexpr std::uint64_t kCount = 20'000;
  const pid_t child = producer(env, sh->value[0], "jobs", kCount);
  Bus bus = Bus::connect(env.f.options());
  bus.create_topic("jobs", ring_options(256, 64));
  auto sub = bus.subscriber("jobs", earliest("work", Delivery::AtLeastOnce));
  std::vector<std::atomic<std::uint8_t>> seen(kCount);
  std::atomic<std::uint64_t> bad{0}, again{0};
  const auto handler = [&](const Sample& s) {
    const Payload p = payload_of(s.data());
    if (p.index >= kCount) {
      bad.fetch_add(1);
      return;
    }
    if (s.delivery_count() != 1) again.fetch_add(1);
    seen[p.index].fetch_add(1);
  };
  ListenOptions lo;
  lo.threads = 3;
  std::uint64_t first = 0;
  {
    Listener l = sub->listen(handler, lo);
    sh->value[0].store(1);
    ASSERT_TRUE(wait_until([&] { return l.handled() >= kCount / 4; }, kWait));
    // Destroyed here, mid-stream, with samples queued and handlers running.
  }
  for (auto& c : seen)
    first += c.load();
  EXPECT_GE(first, kCount / 4);
  Listener l2 = sub->listen(handler, lo);
  ASSERT_TRUE(wait_until([&] { return first + l2.handled() + bad.load() >= kCount; }, kWait))
      << first << " + " << l2.handled();
  EXPECT_EQ(wait_child(child, 10s), 0);
  l2.stop();
  EXPECT_EQ(bad.load(), 0u);
  EXPECT_EQ(again.load(), 0u);  // given back, not redelivered: never handed to anyone
  EXPECT_EQ(not_once(seen), 0u);
}

TEST(Listener, AHandlerThatThrowsNacksUnderAtLeastOnceAndCountsUnderAtMostOnce) {
  Served env;
  SharedCounters* sh = make_shared_counters();
  constexpr std::uint64_t kCount = 1'000;
  const pid_t child = producer(env, sh->value[0], "flaky", kCount);
  Bus bus = Bus::connect(env.f.options());
  bus.create_topic("flaky", ring_options(2048, 64));
  auto alo = bus.subscriber("flaky", earliest("work", Delivery::AtLeastOnce));
  auto amo = bus.subscriber("flaky", earliest("plain"));
  std::vector<std::atomic<std::uint32_t>> alo_count(kCount), amo_count(kCount);
  const auto flaky = [](std::vector<std::atomic<std::uint32_t>>& count) {
    return [&count](const Sample& s) {
      const Payload p = payload_of(s.data());
      if (p.index >= kCount) throw std::runtime_error("bad payload");
      count[p.index].fetch_add(1);
      // Every tenth message fails its first delivery.
      if (p.index % 10 == 0 && s.delivery_count() == 1) throw std::runtime_error("flaky");
    };
  };
  ListenOptions lo;
  lo.threads = 2;
  Listener a = alo->listen(flaky(alo_count), lo);
  Listener b = amo->listen(flaky(amo_count), lo);
  sh->value[0].store(1);
  ASSERT_TRUE(wait_until(
      [&] { return a.handled() >= kCount && b.handled() + b.failed() >= kCount; }, kWait));
  EXPECT_EQ(wait_child(child, 10s), 0);
  a.stop();
  b.stop();
  EXPECT_EQ(a.failed(), kCount / 10);
  EXPECT_EQ(b.failed(), kCount / 10);
  EXPECT_EQ(b.handled(), kCount - kCount / 10);
  for (std::uint64_t i = 0; i < kCount; ++i) {
    EXPECT_EQ(alo_count[i].load(), i % 10 == 0 ? 2u : 1u) << i;  // nacked, then handled
    EXPECT_EQ(amo_count[i].load(), 1u) << i;                     // failed, not again
  }
}

TEST(Listener, BadOptionsAreRefused) {
  Served env;
  Bus bus = Bus::connect(env.f.options());
  bus.create_topic("t", ring_options(8, 64));
  auto sub = bus.subscriber("t", earliest());
  ListenOptions lo;
  lo.threads = 0;
  EXPECT_THROW((void)sub->listen([](const Sample&) {}, lo), Error);
  lo.threads = 1;
  lo.max_in_flight = 1000;
  EXPECT_THROW((void)sub->listen([](const Sample&) {}, lo), Error);
  EXPECT_THROW((void)sub->listen(nullptr), Error);
}

// ---- Selector ----------------------------------------------------------------

// Drains `s`, checking every message's checksum and that offsets come in
// order; returns how many it took.
std::uint64_t drain(Subscriber& s, std::uint64_t& next, std::uint64_t& bad) {
  std::uint64_t n = 0;
  Sample m;
  while (s.try_receive(m) == Status::Ok) {
    const Payload p = payload_of(m.data());
    if (p.index != next) ++bad;
    next = p.index + 1;
    ++n;
  }
  return n;
}

TEST(Selector, FourTopicsFedByFourProcessesEveryMessageSeen) {
  Served env;
  SharedCounters* sh = make_shared_counters();
  const std::array<std::uint64_t, 4> counts{20'000, 5'000, 500, 50};
  std::vector<pid_t> kids;
  for (std::size_t t = 0; t < counts.size(); ++t)
    kids.push_back(producer(env, sh->value[0], "sel" + std::to_string(t), counts[t]));
  Bus bus = Bus::connect(env.f.options());
  std::vector<std::unique_ptr<Subscriber>> subs;
  Selector sel;
  for (std::size_t t = 0; t < counts.size(); ++t) {
    bus.create_topic("sel" + std::to_string(t), ring_options(128, 64));
    subs.push_back(bus.subscriber("sel" + std::to_string(t), earliest()));
    sel.add(*subs.back());
  }
  EXPECT_EQ(sel.size(), 4u);
  sh->value[0].store(1);
  std::array<std::uint64_t, 4> got{}, next{};
  std::uint64_t bad = 0, wakes = 0;
  const auto done = [&] {
    for (std::size_t t = 0; t < counts.size(); ++t)
      if (got[t] < counts[t]) return false;
    return true;
  };
  std::vector<Subscriber*> ready;
  while (!done()) {
    ASSERT_EQ(sel.wait(ready, kWait), Status::Ok) << got[0] << " " << got[1] << " " << got[2];
    ++wakes;
    for (Subscriber* s : ready)
      for (std::size_t t = 0; t < subs.size(); ++t)
        if (subs[t].get() == s) got[t] += drain(*s, next[t], bad);
  }
  for (pid_t k : kids)
    EXPECT_EQ(wait_child(k, 10s), 0);
  EXPECT_EQ(bad, 0u);
  EXPECT_EQ(got, counts);
  EXPECT_TRUE(sel.wait(0ns).empty());
  EXPECT_TRUE(sel.remove(*subs[0]));
  EXPECT_FALSE(sel.remove(*subs[0]));
  EXPECT_THROW(sel.add(*subs[1]), Error);
}

// A child that publishes message i to `topic` once sh.value[1] reaches i + 1
// (after sh.value[0] is set), `rounds` times: the parent cues each publish
// right as its waiter is about to sleep.
pid_t on_cue_producer(const Served& env, SharedCounters& sh, const std::string& topic,
                      std::uint64_t rounds) {
  return spawn([&env, &sh, topic, rounds] {
    if (!wait_until([&] { return sh.value[0].load() != 0; }, kWait)) return 2;
    Bus b = Bus::connect(env.f.options());
    Publisher pub = b.publisher(topic);
    for (std::uint64_t i = 0; i < rounds; ++i) {
      if (!wait_until([&] { return sh.value[1].load() == i + 1; }, kWait)) return 3;
      const Payload p{i, check_of(i)};
      if (pub.publish(bytes(p), kWait) != Status::Ok) return 4;
    }
    return 0;
  });
}

// A producer that publishes one message each time the selector says it is
// about to wait: the publish lands anywhere in the selector's way to sleep
// (its spin, its declaration, the futex call). A lost wake-up would leave
// the wait to time out.
TEST(Selector, APublishAsTheSelectorGoesToSleepWakesIt) {
  Served env;
  SharedCounters* sh = make_shared_counters();
  constexpr std::uint64_t kRounds = 300;
  const pid_t child = on_cue_producer(env, *sh, "edge", kRounds);
  Bus bus = Bus::connect(env.f.options());
  bus.create_topic("edge", ring_options(16, 64));
  bus.create_topic("quiet", ring_options(16, 64));
  auto edge = bus.subscriber("edge", earliest());
  auto quiet = bus.subscriber("quiet", earliest());
  // Every other round waits without spinning: the publish then lands in the
  // declaration or the futex call more often than in the spin.
  SelectorOptions sleepy;
  sleepy.spin = 0ns;
  Selector spinning, sleeping(sleepy);
  for (Selector* sel : {&spinning, &sleeping}) {
    sel->add(*quiet);
    sel->add(*edge);
  }
  sh->value[0].store(1);
  std::uint64_t next = 0, bad = 0, got = 0;
  for (std::uint64_t i = 0; i < kRounds; ++i) {
    sh->value[1].store(i + 1);  // publish now
    std::vector<Subscriber*> ready;
    Selector& sel = i % 2 == 0 ? spinning : sleeping;
    ASSERT_EQ(sel.wait(ready, kWait), Status::Ok) << "round " << i;
    ASSERT_EQ(ready.size(), 1u);
    EXPECT_EQ(ready[0], edge.get());
    got += drain(*edge, next, bad);
    ASSERT_EQ(got, i + 1);
  }
  EXPECT_EQ(wait_child(child, 10s), 0);
  EXPECT_EQ(bad, 0u);
}

// This thread's CPU time (user + system), in clock ticks.
std::uint64_t thread_cpu_ticks() {
  std::ifstream f("/proc/self/task/" + std::to_string(::gettid()) + "/stat");
  std::string line;
  std::getline(f, line);
  // Fields after the command (which may hold spaces) start past the last ')'.
  std::istringstream rest(line.substr(line.rfind(')') + 2));
  std::string field;
  std::uint64_t utime = 0, stime = 0;
  for (int i = 3; rest >> field; ++i) {
    if (i == 14) utime = std::stoull(field);
    if (i == 15) {
      stime = std::stoull(field);
      break;
    }
  }
  return utime + stime;
}

TEST(Selector, AnIdleWaitHonoursItsTimeoutAndUsesNoCpu) {
  Served env;
  Bus bus = Bus::connect(env.f.options());
  std::vector<std::unique_ptr<Subscriber>> subs;
  Selector sel;
  for (int t = 0; t < 3; ++t) {
    bus.create_topic("idle" + std::to_string(t), ring_options(8, 64));
    subs.push_back(bus.subscriber("idle" + std::to_string(t), earliest()));
    sel.add(*subs.back());
  }
  const std::uint64_t before = thread_cpu_ticks();
  const auto start = std::chrono::steady_clock::now();
  std::vector<Subscriber*> ready;
  EXPECT_EQ(sel.wait(ready, 1s), Status::Timeout);
  EXPECT_GE(std::chrono::steady_clock::now() - start, 1s);
  EXPECT_TRUE(ready.empty());
  // A spinning wait burns ~100 ticks a second (USER_HZ); a sleeping one ~0.
  EXPECT_LE(thread_cpu_ticks() - before, 10u);
  // A zero timeout does not wait, a short one returns.
  EXPECT_EQ(sel.wait(ready, 0ns), Status::Timeout);
  EXPECT_EQ(sel.wait(ready, 5ms), Status::Timeout);
}

// ---- descriptors ---------------------------------------------------------------

TEST(EventLoop, EpollOverThreeSubscriberFdsAndATimerfd) {
  Served env;
  SharedCounters* sh = make_shared_counters();
  const std::array<std::uint64_t, 3> counts{10'000, 1'000, 100};
  std::vector<pid_t> kids;
  for (std::size_t t = 0; t < counts.size(); ++t)
    kids.push_back(producer(env, sh->value[0], "ep" + std::to_string(t), counts[t]));
  Bus bus = Bus::connect(env.f.options());
  std::vector<std::unique_ptr<Subscriber>> subs;
  const int ep = ::epoll_create1(EPOLL_CLOEXEC);
  ASSERT_GE(ep, 0);
  for (std::size_t t = 0; t < counts.size(); ++t) {
    bus.create_topic("ep" + std::to_string(t), ring_options(64, 64));
    subs.push_back(bus.subscriber("ep" + std::to_string(t), earliest()));
    epoll_event e{};
    e.events = EPOLLIN;
    e.data.u64 = t;
    ASSERT_EQ(::epoll_ctl(ep, EPOLL_CTL_ADD, subs.back()->fd(), &e), 0);
  }
  EXPECT_EQ(subs[0]->fd(), subs[0]->fd());  // one descriptor per subscriber
  const int tfd = ::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
  ASSERT_GE(tfd, 0);
  itimerspec every{{0, 5'000'000}, {0, 5'000'000}};
  ASSERT_EQ(::timerfd_settime(tfd, 0, &every, nullptr), 0);
  epoll_event te{};
  te.events = EPOLLIN;
  te.data.u64 = 99;
  ASSERT_EQ(::epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &te), 0);
  sh->value[0].store(1);

  std::array<std::uint64_t, 3> got{}, next{};
  std::uint64_t bad = 0, ticks = 0, quiet_wakes = 0;
  bool all = false;
  std::uint64_t ticks_when_done = 0;
  // Until every message came, then three timer ticks more: the descriptors
  // of drained subscribers stay quiet meanwhile (one spurious wake each at most).
  while (!all || ticks < ticks_when_done + 3) {
    epoll_event evs[8];
    const int n = ::epoll_wait(ep, evs, 8, static_cast<int>(kWait / 1ms));
    ASSERT_GT(n, 0) << "epoll_wait timed out: " << got[0] << " " << got[1] << " " << got[2];
    for (int i = 0; i < n; ++i) {
      if (evs[i].data.u64 == 99) {
        std::uint64_t expirations = 0;
        ASSERT_EQ(::read(tfd, &expirations, sizeof expirations),
                  static_cast<ssize_t>(sizeof expirations));
        ticks += expirations;
        continue;
      }
      const std::size_t t = evs[i].data.u64;
      const std::uint64_t took = drain(*subs[t], next[t], bad);  // ends WouldBlock: re-armed
      got[t] += took;
      if (all && took == 0) ++quiet_wakes;
    }
    if (!all && got == counts) {
      all = true;
      ticks_when_done = ticks;
    }
  }
  for (pid_t k : kids)
    EXPECT_EQ(wait_child(k, 10s), 0);
  EXPECT_EQ(bad, 0u);
  EXPECT_EQ(got, counts);
  EXPECT_LE(quiet_wakes, 3u);
  ::close(tfd);
  ::close(ep);
}

// As the selector's edge test, through a subscriber's descriptor and poll().
TEST(EventLoop, APublishAsTheDescriptorIsArmedMakesItReadable) {
  Served env;
  SharedCounters* sh = make_shared_counters();
  constexpr std::uint64_t kRounds = 300;
  const pid_t child = on_cue_producer(env, *sh, "edge", kRounds);
  Bus bus = Bus::connect(env.f.options());
  bus.create_topic("edge", ring_options(16, 64));
  auto sub = bus.subscriber("edge", earliest());
  const int fd = sub->fd();
  Selector sel;  // a selector's descriptor over the same subscriber, alongside
  sel.add(*sub);
  const int sfd = sel.fd();
  sh->value[0].store(1);
  std::uint64_t next = 0, bad = 0, got = 0;
  for (std::uint64_t i = 0; i < kRounds; ++i) {
    Sample none;
    ASSERT_EQ(sub->try_receive(none), Status::WouldBlock);  // arms fd
    EXPECT_TRUE(sel.wait(0ns).empty());                     // arms sfd
    sh->value[1].store(i + 1);                              // publish now
    bool sub_readable = false, sel_readable = false;
    while (!sub_readable || !sel_readable) {
      pollfd p[2] = {{fd, POLLIN, 0}, {sfd, POLLIN, 0}};
      ASSERT_GT(::poll(p, 2, static_cast<int>(kWait / 1ms)), 0) << "round " << i;
      sub_readable = sub_readable || (p[0].revents & POLLIN) != 0;
      sel_readable = sel_readable || (p[1].revents & POLLIN) != 0;
    }
    got += drain(*sub, next, bad);
    ASSERT_EQ(got, i + 1);
  }
  EXPECT_EQ(wait_child(child, 10s), 0);
  EXPECT_EQ(bad, 0u);
}

}  // namespace
}  // namespace shmbus::test
