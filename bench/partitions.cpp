// shmbus-partition-bench: what partitions, keys and priority lanes cost
// (issue 15), as interleaved pairs in one run (each round measures the plain
// one-ring topic and the variant back to back, so a drift of the host shows
// in both), two processes pinned to two cores, busy-spin:
//
//   throughput  64 B publish()+receive() of a 1-partition topic of 1024 slots
//               against keyed publish(key, ...) + receive() of a 16-partition
//               topic, with 1024 slots per partition (16x the memory: the
//               keys spread over 2 MiB of slots instead of 128 KiB) and with
//               64 per partition (the same memory as the one ring)
//   latency     64 B one-way p50 (ping-pong / 2) of a 1-lane topic against an
//               8-lane priority topic, messages on the top lane (one look) and
//               on the bottom lane (the receive looks at 7 empty lanes first)
//   properties  64 B publish()+receive() on one partition, plain against
//               with two properties (a tag and a trace id) on every message
//   delivery    a named group, at-most-once against at-least-once (issue 17):
//               64 B throughput and one-way p50
//   rebalance   a partitioned group of one member draining a 16-partition
//               backlog; a second member joins: the time from its join to its
//               first message (the owner notices at its next receive, lets go
//               of the partitions it lost once it holds nothing of them)
//
//   shmbus-partition-bench [--rounds N] [--messages N] [--iters N]
//
// Run it on an otherwise idle machine: two spinning processes own both cores.
#include <sched.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <shmbus/shmbus.hpp>
#include <string>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;
constexpr auto kTimeout = std::chrono::seconds(30);

std::uint64_t now_ns() {
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
          .count());
}

void pin(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu % std::max(1, static_cast<int>(::sysconf(_SC_NPROCESSORS_ONLN))), &set);
  (void)::sched_setaffinity(0, sizeof set, &set);  // best effort
}

// Results and handshakes between the parent and its two children.
struct Shared {
  std::atomic<std::uint32_t> ready;
  std::atomic<std::uint32_t> go;
  std::atomic<std::uint64_t> result[1 << 16];
};

Shared* shared_block() {
  void* p =
      ::mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    std::perror("mmap");
    std::exit(1);
  }
  return new (p) Shared{};
}

[[noreturn]] void die(const char* what, shmbus::Status st) {
  std::fprintf(stderr, "shmbus-partition-bench: %s: %s\n", what, shmbus::to_string(st));
  std::_Exit(2);
}

template <class F>
pid_t child(int cpu, F&& f) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    pin(cpu);
    try {
      f();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "shmbus-partition-bench: %s\n", e.what());
      std::_Exit(1);
    }
    std::_Exit(0);
  }
  return pid;
}

void reap(pid_t pid) {
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::fprintf(stderr, "shmbus-partition-bench: a child failed\n");
    std::exit(1);
  }
}

bool wait_flag(const std::atomic<std::uint32_t>& f, std::uint32_t v) {
  const auto until = Clock::now() + kTimeout;
  while (f.load(std::memory_order_acquire) < v)
    if (Clock::now() > until) return false;
  return true;
}

std::string topic_name(const char* what) {
  return std::string("pbench-") + what + "-" + std::to_string(::getpid());
}

shmbus::SubscriberOptions spin_sub(const std::string& group = {},
                                   shmbus::GroupMode mode = shmbus::GroupMode::Shared) {
  shmbus::SubscriberOptions o;
  o.group = group;
  o.group_mode = mode;
  o.wait = shmbus::WaitStrategy::BusySpin;
  o.start = shmbus::StartFrom::Earliest;
  return o;
}

shmbus::PublisherOptions spin_pub() {
  shmbus::PublisherOptions o;
  o.wait = shmbus::WaitStrategy::BusySpin;
  return o;
}

// ---- throughput ---------------------------------------------------------------

// What each message carries besides its 64 B payload.
enum class Load { Plain, Keyed, Properties };

// Messages per second of n 64 B messages, producer to consumer.
double throughput(std::uint32_t partitions, Load load, std::uint64_t n, std::uint32_t slots = 1024,
                  const shmbus::SubscriberOptions& so = spin_sub()) {
  shmbus::TopicOptions o;
  o.slot_count = slots;
  // Room for a key of up to 16 bytes, or the two properties (28 bytes,
  // 32 in the slot), before the 64 B payload; the slots' stride is 128 bytes
  // in every case (32-byte header + 64, 80 or 96, to a line).
  o.slot_size = load == Load::Keyed ? 80 : load == Load::Properties ? 96 : 64;
  o.partitions = partitions;
  const std::string name = topic_name("tp");
  shmbus::Topic::remove(name);
  shmbus::Topic topic = shmbus::Topic::create(name, o);
  Shared* sh = shared_block();
  auto sub = topic.subscriber(so);  // before the producer: it sees everything
  const pid_t consumer = child(1, [&] {
    shmbus::Sample s;
    sh->ready.store(1, std::memory_order_release);
    const std::uint64_t start = now_ns();
    for (std::uint64_t i = 0; i < n; ++i)
      if (const auto st = sub->receive(s, kTimeout); st != shmbus::Status::Ok) die("receive", st);
    sh->result[0].store(now_ns() - start, std::memory_order_release);
  });
  const pid_t producer = child(0, [&] {
    std::vector<std::string> keys;
    for (int k = 0; k < 1000; ++k)
      keys.push_back("user-" + std::to_string(k));
    // A tag and an 8-byte trace id: 4 + 3 + 4 and 4 + 5 + 8 bytes encoded.
    const std::array<shmbus::Property, 2> props{{{"tag", "TagA"}, {"trace", "0123abcd"}}};
    const shmbus::Route with_props = shmbus::Route::with_properties(props);
    shmbus::Publisher pub = topic.publisher(spin_pub());
    std::byte payload[64] = {};
    if (!wait_flag(sh->ready, 1)) die("consumer start", shmbus::Status::Timeout);
    for (std::uint64_t i = 0; i < n; ++i) {
      std::memcpy(payload, &i, sizeof i);
      const auto st = load == Load::Keyed        ? pub.publish(keys[i % keys.size()], payload)
                      : load == Load::Properties ? pub.publish(with_props, payload)
                                                 : pub.publish(payload);
      if (st != shmbus::Status::Ok) die("publish", st);
    }
  });
  reap(producer);
  reap(consumer);
  sub.reset();
  const double secs = static_cast<double>(sh->result[0].load()) / 1e9;
  ::munmap(sh, sizeof(Shared));
  shmbus::Topic::remove(name);
  return static_cast<double>(n) / secs;
}

// ---- latency --------------------------------------------------------------------

// The p50 one-way latency (round trip / 2) of 64 B messages on topics of
// `lanes` priority lanes (0: a plain topic), published on lane `lane`.
double latency_p50(std::uint32_t lanes, std::uint32_t lane, std::uint64_t iters,
                   const shmbus::SubscriberOptions& so = spin_sub()) {
  shmbus::TopicOptions o;
  o.slot_count = 64;
  o.slot_size = 64;
  o.single_producer = true;
  o.priorities = lanes;
  const std::string ab = topic_name("ab"), ba = topic_name("ba");
  shmbus::Topic::remove(ab);
  shmbus::Topic::remove(ba);
  shmbus::Topic tab = shmbus::Topic::create(ab, o), tba = shmbus::Topic::create(ba, o);
  Shared* sh = shared_block();
  const std::uint64_t warm = iters / 10;
  const auto route = lanes != 0 ? shmbus::Route::with_priority(lane) : shmbus::Route{};
  const pid_t ponger = child(1, [&] {
    auto sub = tab.subscriber(so);
    shmbus::Publisher pub = tba.publisher(spin_pub());
    sh->ready.store(1, std::memory_order_release);
    shmbus::Sample s;
    for (std::uint64_t i = 0; i < warm + iters; ++i) {
      if (const auto st = sub->receive(s, kTimeout); st != shmbus::Status::Ok) die("pong", st);
      if (const auto st = pub.publish(route, s.data()); st != shmbus::Status::Ok) die("pong", st);
    }
  });
  const pid_t pinger = child(0, [&] {
    auto sub = tba.subscriber(spin_sub());
    shmbus::Publisher pub = tab.publisher(spin_pub());
    if (!wait_flag(sh->ready, 1)) die("ponger start", shmbus::Status::Timeout);
    std::vector<std::uint64_t> rtt;
    rtt.reserve(iters);
    std::byte payload[64] = {};
    shmbus::Sample s;
    for (std::uint64_t i = 0; i < warm + iters; ++i) {
      const std::uint64_t t0 = now_ns();
      if (const auto st = pub.publish(route, payload); st != shmbus::Status::Ok) die("ping", st);
      if (const auto st = sub->receive(s, kTimeout); st != shmbus::Status::Ok) die("ping", st);
      s.release();
      if (i >= warm) rtt.push_back(now_ns() - t0);
    }
    std::nth_element(rtt.begin(), rtt.begin() + static_cast<std::ptrdiff_t>(rtt.size() / 2),
                     rtt.end());
    sh->result[0].store(rtt[rtt.size() / 2], std::memory_order_release);
  });
  reap(pinger);
  reap(ponger);
  const double p50 = static_cast<double>(sh->result[0].load()) / 2.0;
  ::munmap(sh, sizeof(Shared));
  shmbus::Topic::remove(ab);
  shmbus::Topic::remove(ba);
  return p50;
}

// ---- rebalance -------------------------------------------------------------------

// Nanoseconds from a second member's join to its first message, `times` times.
std::vector<std::uint64_t> rebalance(std::uint32_t times) {
  shmbus::TopicOptions o;
  o.slot_count = 1024;
  o.slot_size = 64;
  o.partitions = 16;
  o.policy = shmbus::Policy::Overwrite;  // a backlog that never blocks the feeder
  const std::string name = topic_name("rb");
  shmbus::Topic::remove(name);
  shmbus::Topic topic = shmbus::Topic::create(name, o);
  Shared* sh = shared_block();
  // The feeder keeps every partition's backlog full; member a drains; the
  // parent's joiner measures. go: 1 while running, 2 to stop.
  const pid_t feeder_and_a = child(0, [&] {
    auto a = topic.subscriber(spin_sub("g", shmbus::GroupMode::Partitioned));
    shmbus::Publisher pub = topic.publisher(spin_pub());
    std::byte payload[64] = {};
    shmbus::Sample s;
    sh->ready.store(1, std::memory_order_release);
    for (std::uint64_t i = 0; sh->go.load(std::memory_order_acquire) < 2; ++i) {
      (void)pub.publish(shmbus::Route::to_partition(static_cast<std::uint32_t>(i % 16)), payload);
      (void)a->try_receive(s);  // holds one sample at a time, as a worker does
    }
  });
  if (!wait_flag(sh->ready, 1)) die("member start", shmbus::Status::Timeout);
  pin(1);
  std::vector<std::uint64_t> out;
  for (std::uint32_t t = 0; t < times; ++t) {
    const std::uint64_t t0 = now_ns();
    auto b = topic.subscriber(spin_sub("g", shmbus::GroupMode::Partitioned));
    shmbus::Sample s;
    if (const auto st = b->receive(s, kTimeout); st != shmbus::Status::Ok) die("joiner", st);
    out.push_back(now_ns() - t0);
  }  // each joiner leaves at the end of its turn: its partitions go back
  sh->go.store(2, std::memory_order_release);
  reap(feeder_and_a);
  ::munmap(sh, sizeof(Shared));
  shmbus::Topic::remove(name);
  return out;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

std::uint64_t arg(int argc, char** argv, const char* name, std::uint64_t def) {
  for (int i = 1; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], name) == 0) return std::strtoull(argv[i + 1], nullptr, 10);
  return def;
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i)
    if (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0) {
      std::printf(
          "usage: shmbus-partition-bench [--rounds N (5)] [--messages N (2000000)] "
          "[--iters N (100000)] [--rebalances N (50)]\n");
      return 0;
    }
  const auto rounds = static_cast<std::uint32_t>(arg(argc, argv, "--rounds", 5));
  const std::uint64_t messages = arg(argc, argv, "--messages", 2'000'000);
  const std::uint64_t iters = arg(argc, argv, "--iters", 100'000);
  const auto rebalances = static_cast<std::uint32_t>(arg(argc, argv, "--rebalances", 50));
  if (rounds == 0 || messages == 0 || iters < 10 || rebalances == 0) {
    std::fprintf(stderr,
                 "shmbus-partition-bench: rounds, messages, rebalances >= 1, iters >= 10\n");
    return 2;
  }

  std::printf("## 64 B throughput, interleaved pairs (%u rounds of %llu messages)\n\n", rounds,
              static_cast<unsigned long long>(messages));
  std::printf(
      "| round | 1 partition x 1024 slots (Mmsg/s) | 16 x 1024 keyed (Mmsg/s) | ratio | "
      "16 x 64 keyed (Mmsg/s) | ratio |\n|---|---|---|---|---|---|\n");
  std::vector<double> tratio, sratio;
  for (std::uint32_t r = 0; r < rounds; ++r) {
    const double one = throughput(1, Load::Plain, messages);
    const double keyed = throughput(16, Load::Keyed, messages);
    const double same_memory = throughput(16, Load::Keyed, messages, 64);
    tratio.push_back(one / keyed);
    sratio.push_back(one / same_memory);
    std::printf("| %u | %.2f | %.2f | %.2fx | %.2f | %.2fx |\n", r + 1, one / 1e6, keyed / 1e6,
                one / keyed, same_memory / 1e6, one / same_memory);
  }
  std::printf(
      "\nmedian 1-partition / 16-partition-keyed throughput: %.2fx (1024 slots per partition), "
      "%.2fx (64 per partition, the same memory)\n\n",
      median(tratio), median(sratio));

  std::printf(
      "## 64 B throughput with two properties (a tag and a trace id), 1 partition, interleaved "
      "pairs\n\n| round | plain (Mmsg/s) | with properties (Mmsg/s) | ratio "
      "|\n|---|---|---|---|\n");
  std::vector<double> pratio;
  for (std::uint32_t r = 0; r < rounds; ++r) {
    const double plain = throughput(1, Load::Plain, messages);
    const double with = throughput(1, Load::Properties, messages);
    pratio.push_back(plain / with);
    std::printf("| %u | %.2f | %.2f | %.2fx |\n", r + 1, plain / 1e6, with / 1e6, plain / with);
  }
  std::printf("\nmedian plain / with-properties throughput: %.2fx\n\n", median(pratio));

  std::printf(
      "## 64 B one-way p50 (ping-pong / 2), interleaved (%u rounds of %llu round trips)\n\n",
      rounds, static_cast<unsigned long long>(iters));
  std::printf(
      "| round | 1 lane (ns) | 8 lanes, top lane (ns) | 8 lanes, bottom lane (ns) "
      "|\n|---|---|---|---|\n");
  std::vector<double> top, bottom;
  for (std::uint32_t r = 0; r < rounds; ++r) {
    const double one = latency_p50(0, 0, iters);
    const double hi = latency_p50(8, 7, iters);
    const double lo = latency_p50(8, 0, iters);
    top.push_back(hi / one);
    bottom.push_back(lo / one);
    std::printf("| %u | %.0f | %.0f | %.0f |\n", r + 1, one, hi, lo);
  }
  std::printf("\nmedian 8-lane / 1-lane p50: top lane %.2fx, bottom lane %.2fx\n\n", median(top),
              median(bottom));

  // Issue 17: a named group, at most once against at least once (an ack
  // record written before each claim, cleared at each release).
  shmbus::SubscriberOptions amo = spin_sub("g"), alo = spin_sub("g");
  alo.delivery = shmbus::Delivery::AtLeastOnce;
  std::printf(
      "## a named group: at-most-once against at-least-once, 64 B, interleaved pairs\n\n"
      "| round | at-most-once (Mmsg/s) | at-least-once (Mmsg/s) | ratio | at-most-once p50 (ns) "
      "| at-least-once p50 (ns) |\n|---|---|---|---|---|---|\n");
  std::vector<double> aratio, alat;
  for (std::uint32_t r = 0; r < rounds; ++r) {
    const double m = throughput(1, Load::Plain, messages, 1024, amo);
    const double l = throughput(1, Load::Plain, messages, 1024, alo);
    const double mp = latency_p50(0, 0, iters, amo);
    const double lp = latency_p50(0, 0, iters, alo);
    aratio.push_back(m / l);
    alat.push_back(lp / mp);
    std::printf("| %u | %.2f | %.2f | %.2fx | %.0f | %.0f |\n", r + 1, m / 1e6, l / 1e6, m / l, mp,
                lp);
  }
  std::printf(
      "\nmedian at-most-once / at-least-once throughput: %.2fx; at-least-once / at-most-once "
      "p50: %.2fx\n\n",
      median(aratio), median(alat));

  std::vector<std::uint64_t> rb = rebalance(rebalances);
  std::sort(rb.begin(), rb.end());
  std::printf("## rebalance: a member joins a 16-partition group of one busy member (%u times)\n\n",
              rebalances);
  std::printf("join to first message: p50 %.1f us, p90 %.1f us, max %.1f us\n",
              static_cast<double>(rb[rb.size() / 2]) / 1e3,
              static_cast<double>(rb[rb.size() * 9 / 10]) / 1e3,
              static_cast<double>(rb.back()) / 1e3);
  return 0;
}
