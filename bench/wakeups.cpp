// Issue 18: how long a sleeping consumer takes to wake, by the way it waits,
// all in one run, in interleaved rounds (the host's state moves between them):
//
//   receive   Subscriber::receive, spin then futex (the default options)
//   selector  Selector::wait over the subscriber and 3 idle topics
//   epoll     epoll_wait on Subscriber::fd(), then try_receive until empty
//   listener  a Listener's handler (1 worker): receive -> queue -> worker
//
// A producer process publishes 64 B messages paced --interval apart (well
// past the 50 us spin), so every one finds the consumer asleep. Latency is
// the moment the consumer holds the message minus its publish timestamp
// (both CLOCK_MONOTONIC). Also: two-process 64 B throughput of the plain
// receive loop, the figure bindings/python/bench.py sets Python's batch
// calls against (--throughput N prints it alone).
//
//   build/release/bench/shmbus-wakeup-bench [--rounds 5] [--samples 400]
//       [--interval-us 1000] [--throughput 20000000]
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <thread>
#include <vector>

#include "shmbus/shmbus.hpp"

namespace {

using namespace std::chrono_literals;

std::uint64_t now_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000ULL +
         static_cast<std::uint64_t>(ts.tv_nsec);
}

[[noreturn]] void die(const char* what, shmbus::Status st) {
  std::fprintf(stderr, "wakeup-bench: %s: %s\n", what, shmbus::to_string(st));
  std::exit(1);
}

struct Shared {
  std::atomic<std::uint64_t> stop{0};
  std::atomic<std::uint64_t> ready{0};
  std::atomic<std::uint64_t> elapsed{0};
};

Shared* shared_block() {
  void* p =
      ::mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) std::exit(1);
  return new (p) Shared{};
}

std::string topic_name(const char* what) {
  return std::string("wakeup-") + what + "-" + std::to_string(::getpid());
}

void reap(pid_t pid) {
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::fprintf(stderr, "wakeup-bench: a child failed\n");
    std::exit(1);
  }
}

enum class Mode { Receive, Selector, Epoll, Listener };
const char* name_of(Mode m) {
  switch (m) {
    case Mode::Receive:
      return "receive";
    case Mode::Selector:
      return "selector";
    case Mode::Epoll:
      return "epoll";
    case Mode::Listener:
      return "listener";
  }
  return "?";
}

// `n` latencies (ns) of one mode.
std::vector<std::uint64_t> one_round(shmbus::Subscriber& sub,
                                     std::vector<shmbus::Subscriber*>& idle, Mode mode,
                                     std::size_t n) {
  std::vector<std::uint64_t> lat;
  lat.reserve(n);
  shmbus::Sample s;
  // Drops what came before this round (the producer never stops).
  while (sub.try_receive(s) == shmbus::Status::Ok) {
  }
  s.release();
  switch (mode) {
    case Mode::Receive:
      while (lat.size() < n) {
        if (const auto st = sub.receive(s, 10s); st != shmbus::Status::Ok) die("receive", st);
        lat.push_back(now_ns() - s.timestamp_ns());
      }
      break;
    case Mode::Selector: {
      shmbus::Selector sel;
      for (shmbus::Subscriber* i : idle)
        sel.add(*i);
      sel.add(sub);
      std::vector<shmbus::Subscriber*> ready;
      while (lat.size() < n) {
        if (const auto st = sel.wait(ready, 10s); st != shmbus::Status::Ok) die("select", st);
        while (lat.size() < n && sub.try_receive(s) == shmbus::Status::Ok)
          lat.push_back(now_ns() - s.timestamp_ns());
      }
      break;
    }
    case Mode::Epoll: {
      const int ep = ::epoll_create1(EPOLL_CLOEXEC);
      epoll_event e{};
      e.events = EPOLLIN;
      if (::epoll_ctl(ep, EPOLL_CTL_ADD, sub.fd(), &e) != 0)
        die("epoll_ctl", shmbus::Status::Invalid);
      while (lat.size() < n) {
        epoll_event out[1];
        if (::epoll_wait(ep, out, 1, 10'000) != 1) die("epoll_wait", shmbus::Status::Timeout);
        while (sub.try_receive(s) == shmbus::Status::Ok)
          if (lat.size() < n) lat.push_back(now_ns() - s.timestamp_ns());
      }
      ::close(ep);
      break;
    }
    case Mode::Listener: {
      std::vector<std::uint64_t> got(n);
      std::atomic<std::size_t> count{0};
      shmbus::ListenOptions o;
      o.threads = 1;
      shmbus::Listener l = sub.listen(
          [&](const shmbus::Sample& m) {
            const std::uint64_t t = now_ns() - m.timestamp_ns();
            const std::size_t i = count.load(std::memory_order_relaxed);
            if (i < n) got[i] = t;
            count.store(i + 1, std::memory_order_release);  // one worker: no race
          },
          o);
      const auto until = std::chrono::steady_clock::now() + 60s;
      while (count.load(std::memory_order_acquire) < n && std::chrono::steady_clock::now() < until)
        std::this_thread::sleep_for(1ms);
      l.stop();
      if (count.load() < n) die("listener", shmbus::Status::Timeout);
      lat = got;
      break;
    }
  }
  s.release();
  return lat;
}

double pct(std::vector<std::uint64_t> v, double q) {
  std::sort(v.begin(), v.end());
  return static_cast<double>(
      v[std::min(v.size() - 1, static_cast<std::size_t>(q * static_cast<double>(v.size())))]);
}

double throughput(std::uint64_t n) {
  shmbus::TopicOptions o;
  o.slot_count = 4096;
  o.slot_size = 64;
  const std::string name = topic_name("tp");
  shmbus::Topic::remove(name);
  shmbus::Topic topic = shmbus::Topic::create(name, o);
  Shared* sh = shared_block();
  auto sub = topic.subscriber({});
  const pid_t consumer = ::fork();
  if (consumer == 0) {
    shmbus::Sample s;
    sh->ready.store(1);
    if (sub->receive(s, 30s) != shmbus::Status::Ok) ::_exit(1);
    const std::uint64_t start = now_ns();
    for (std::uint64_t i = 1; i < n; ++i)
      if (sub->receive(s, 30s) != shmbus::Status::Ok) ::_exit(1);
    sh->elapsed.store(now_ns() - start);
    ::_exit(0);
  }
  const pid_t producer = ::fork();
  if (producer == 0) {
    shmbus::Publisher pub = topic.publisher();
    std::byte payload[64] = {};
    while (sh->ready.load() == 0)
      std::this_thread::yield();
    for (std::uint64_t i = 0; i < n; ++i) {
      std::memcpy(payload, &i, sizeof i);
      if (pub.publish(payload, 30s) != shmbus::Status::Ok) ::_exit(1);
    }
    ::_exit(0);
  }
  reap(producer);
  reap(consumer);
  sub.reset();
  const double r = static_cast<double>(n - 1) / (static_cast<double>(sh->elapsed.load()) / 1e9);
  shmbus::Topic::remove(name);
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  int rounds = 5;
  std::size_t samples = 400;
  long interval_us = 1000;
  std::uint64_t tput = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--rounds")
      rounds = std::atoi(argv[i + 1]);
    else if (a == "--samples")
      samples = std::strtoul(argv[i + 1], nullptr, 10);
    else if (a == "--interval-us")
      interval_us = std::atol(argv[i + 1]);
    else if (a == "--throughput")
      tput = std::strtoull(argv[i + 1], nullptr, 10);
    else {
      std::fprintf(stderr,
                   "usage: %s [--rounds N] [--samples N] [--interval-us N] [--throughput N]\n",
                   argv[0]);
      return 64;
    }
  }
  if (tput != 0) {
    std::printf("C++ throughput 64 B, 2 processes, receive loop: %.2f M msg/s\n",
                throughput(tput) / 1e6);
    return 0;
  }
  shmbus::TopicOptions o;
  o.slot_count = 64;
  o.slot_size = 64;
  const std::string name = topic_name("lat");
  shmbus::Topic::remove(name);
  shmbus::Topic topic = shmbus::Topic::create(name, o);
  std::vector<shmbus::Topic> idle_topics;
  std::vector<std::unique_ptr<shmbus::Subscriber>> idle_subs;
  std::vector<shmbus::Subscriber*> idle;
  for (int t = 0; t < 3; ++t) {
    const std::string n = topic_name(("idle" + std::to_string(t)).c_str());
    shmbus::Topic::remove(n);
    idle_topics.push_back(shmbus::Topic::create(n, o));
    idle_subs.push_back(idle_topics.back().subscriber({}));
    idle.push_back(idle_subs.back().get());
  }
  Shared* sh = shared_block();
  const pid_t producer = ::fork();
  if (producer == 0) {
    shmbus::Publisher pub = topic.publisher();
    std::byte payload[64] = {};
    auto next = std::chrono::steady_clock::now();
    while (sh->stop.load() == 0) {
      next += std::chrono::microseconds(interval_us);
      std::this_thread::sleep_until(next);
      (void)pub.try_publish(payload);  // a full ring between rounds drops: fine
    }
    ::_exit(0);
  }
  auto sub = topic.subscriber({});
  const Mode modes[] = {Mode::Receive, Mode::Selector, Mode::Epoll, Mode::Listener};
  std::vector<std::uint64_t> all[4];
  std::vector<double> ratio_p50[4];
  for (int r = 0; r < rounds; ++r) {
    double base = 0;
    for (int m = 0; m < 4; ++m) {
      // Rotated order per round: no mode always runs first.
      const int k = (m + r) % 4;
      auto lat = one_round(*sub, idle, modes[k], samples);
      const double p50 = pct(lat, 0.5);
      if (k == 0) base = p50;
      all[k].insert(all[k].end(), lat.begin(), lat.end());
      ratio_p50[k].push_back(p50);
    }
    for (int k = 0; k < 4; ++k)
      ratio_p50[k].back() /= base;
  }
  sh->stop.store(1);
  reap(producer);
  std::printf("wake-up latency of a sleeping consumer, 64 B, paced %ld us, %d rounds x %zu:\n",
              interval_us, rounds, samples);
  for (int k = 0; k < 4; ++k) {
    std::vector<double> rs = ratio_p50[k];
    std::sort(rs.begin(), rs.end());
    std::printf(
        "  %-9s p50 %7.1f us  p90 %7.1f  p99 %7.1f   p50 / receive's (median of rounds) %.2fx\n",
        name_of(modes[k]), pct(all[k], 0.5) / 1e3, pct(all[k], 0.9) / 1e3, pct(all[k], 0.99) / 1e3,
        rs[rs.size() / 2]);
  }
  sub.reset();
  idle.clear();
  idle_subs.clear();
  shmbus::Topic::remove(name);
  for (int t = 0; t < 3; ++t)
    shmbus::Topic::remove(topic_name(("idle" + std::to_string(t)).c_str()));
  return 0;
}
