// shmbus-delay-bench: how late delayed messages arrive (issue 16). A real
// shmbusd (the mover) on a bus of its own; for each count N, one producer
// schedules N 64-byte messages due over the next `spread` (uniformly, all
// published before the first is due), and a busy-spinning subscriber in
// another process reports, per message, its receive time minus its due time
// (both CLOCK_REALTIME): what a consumer sees, mover and wake-up included.
//
//   shmbus-delay-bench [--counts 1000,10000,100000] [--spread-ms 2000] [--rounds 3]
//
// Then request-reply (Bus::request / Sample::reply) against a plain
// ping-pong over two topics, as interleaved pairs: the round trip p50/p99 of
// each, a busy-spinning responder (or echoer) in another process.
//
// Run it on an otherwise idle machine: the subscriber spins on one core, the
// mover needs the other.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <random>
#include <shmbus/shmbus.hpp>
#include <string>
#include <thread>
#include <vector>

namespace {

using WallClock = std::chrono::system_clock;

std::uint64_t wall_ns() {
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(WallClock::now().time_since_epoch())
          .count());
}

pid_t g_daemon = -1;  // killed by an exit on failure too (atexit)

struct Daemon {
  std::string dir, bus, socket;
  pid_t pid = -1;
  Daemon() {
    char tmpl[] = "/tmp/shmbus-delay-bench-XXXXXX";
    dir = ::mkdtemp(tmpl);
    bus = "delaybench" + std::to_string(::getpid());
    socket = dir + "/bus.sock";
    pid = ::fork();
    if (pid == 0) {
      ::execl(SHMBUSD_PATH, SHMBUSD_PATH, "--bus", bus.c_str(), "--socket", socket.c_str(),
              "--log-level", "warn", static_cast<char*>(nullptr));
      ::_exit(127);
    }
    g_daemon = pid;
    std::atexit([] {
      if (g_daemon > 0) ::kill(g_daemon, SIGTERM);
    });
  }
  ~Daemon() {
    g_daemon = -1;
    ::kill(pid, SIGTERM);
    ::waitpid(pid, nullptr, 0);
    std::system(("rm -rf '" + dir + "'").c_str());
  }
  shmbus::BusOptions options() const {
    shmbus::BusOptions o;
    o.bus = bus;
    o.socket_path = socket;
    o.autospawn = false;
    return o;
  }
  shmbus::Bus connect() const {
    for (int i = 0;; ++i) {
      try {
        return shmbus::Bus::connect(options());
      } catch (const shmbus::Error&) {
        if (i > 1000) throw;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
    }
  }
};

double pct(const std::vector<double>& v, double p) {
  return v[std::min(v.size() - 1, static_cast<std::size_t>(p * static_cast<double>(v.size())))];
}

// One round of N messages; the lateness of each, in microseconds.
std::vector<double> round_of(const Daemon& d, std::uint32_t n, std::uint64_t spread_ns,
                             std::uint32_t seed) {
  shmbus::Bus bus = d.connect();
  const std::string name = "d" + std::to_string(n) + "-" + std::to_string(seed);
  shmbus::TopicOptions o;
  o.slot_size = 128;  // 64 B of payload and the 8-byte due time
  o.slot_count = 1024;
  while (o.slot_count < n)
    o.slot_count *= 2;  // the ring never blocks the mover
  o.delay_slots = n;
  shmbus::Topic t = bus.create_topic(name, o);
  int pipefd[2];
  if (::pipe(pipefd) != 0) std::exit(1);
  const pid_t kid = ::fork();
  if (kid == 0) {
    ::close(pipefd[0]);
    shmbus::Bus own = d.connect();
    shmbus::SubscriberOptions so;
    so.group = "g";
    so.start = shmbus::StartFrom::Earliest;  // the ring holds all n: nothing is missed
    so.wait = shmbus::WaitStrategy::BusySpin;
    auto sub = own.subscriber(name, so);
    std::vector<double> late;
    late.reserve(n);
    shmbus::Sample s;
    for (std::uint32_t i = 0; i < n; ++i) {
      if (sub->receive(s, std::chrono::seconds(30)) != shmbus::Status::Ok) ::_exit(2);
      const std::uint64_t seen = wall_ns();
      const std::uint64_t due = s.deliver_at_ns();
      late.push_back(static_cast<double>(static_cast<std::int64_t>(seen - due)) / 1e3);
      s.release();
    }
    const auto bytes = late.size() * sizeof(double);
    if (::write(pipefd[1], late.data(), bytes) != static_cast<ssize_t>(bytes)) ::_exit(3);
    ::_exit(0);
  }
  ::close(pipefd[1]);
  shmbus::Publisher p = t.publisher();
  std::mt19937_64 rng(seed);
  // Due from 300 ms from now (every publish is done by then), over `spread`.
  const std::uint64_t base = wall_ns() + 300'000'000;
  std::uint64_t payload[8] = {};
  for (std::uint32_t i = 0; i < n; ++i) {
    const std::uint64_t due = base + rng() % spread_ns;
    payload[0] = i;
    const auto when = WallClock::time_point(
        std::chrono::duration_cast<WallClock::duration>(std::chrono::nanoseconds(due)));
    if (p.publish_at(when, std::as_bytes(std::span(payload))) != shmbus::Status::Ok) {
      std::fprintf(stderr, "publish_at failed\n");
      std::exit(1);
    }
  }
  const bool on_time = wall_ns() < base;
  std::vector<double> late(n);
  std::size_t got = 0;
  auto* out = reinterpret_cast<char*>(late.data());
  while (got < n * sizeof(double)) {
    const ssize_t r = ::read(pipefd[0], out + got, n * sizeof(double) - got);
    if (r <= 0) break;
    got += static_cast<std::size_t>(r);
  }
  ::close(pipefd[0]);
  int st = 0;
  ::waitpid(kid, &st, 0);
  if (got != n * sizeof(double) || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
    std::fprintf(stderr, "the subscriber failed (status %d)\n", st);
    std::exit(1);
  }
  if (!on_time) std::fprintf(stderr, "  (publishing took longer than 300 ms: some were late)\n");
  bus.delete_topic(name);
  return late;
}

struct RoundTrips {
  double p50, p99;
};

RoundTrips summary(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return {pct(v, 0.5), pct(v, 0.99)};
}

std::uint64_t mono_ns() {
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                        std::chrono::steady_clock::now().time_since_epoch())
                                        .count());
}

// A child that answers `n` messages of `in`: by Sample::reply (request) or
// by publishing to `out` (plain).
pid_t responder(const Daemon& d, const std::string& in, const std::string& out, int n) {
  const pid_t kid = ::fork();
  if (kid != 0) return kid;
  shmbus::Bus bus = d.connect();
  shmbus::SubscriberOptions so;
  so.group = "svc";
  so.start = shmbus::StartFrom::Earliest;
  so.wait = shmbus::WaitStrategy::BusySpin;
  auto sub = bus.subscriber(in, so);
  std::optional<shmbus::Publisher> pub;
  if (!out.empty()) pub.emplace(bus.publisher(out));
  shmbus::Sample s;
  for (int i = 0; i < n; ++i) {
    if (sub->receive(s, std::chrono::seconds(30)) != shmbus::Status::Ok) ::_exit(2);
    const shmbus::Status st = pub ? pub->publish(s.data()) : s.reply(s.data());
    if (st != shmbus::Status::Ok) ::_exit(3);
    s.release();
  }
  ::_exit(0);
}

RoundTrips plain_round(const Daemon& d, int n) {
  shmbus::Bus bus = d.connect();
  const pid_t kid = responder(d, "ping", "pong", n);
  shmbus::SubscriberOptions so;
  so.group = "me";
  so.start = shmbus::StartFrom::Earliest;
  auto back = bus.subscriber("pong", so);
  shmbus::Publisher p = bus.publisher("ping");
  std::vector<double> rt;
  std::uint64_t payload[8] = {};
  shmbus::Sample s;
  for (int i = 0; i < n; ++i) {
    const std::uint64_t t0 = mono_ns();
    if (p.publish(std::as_bytes(std::span(payload))) != shmbus::Status::Ok) std::exit(1);
    if (back->receive(s, std::chrono::seconds(30)) != shmbus::Status::Ok) std::exit(1);
    s.release();
    rt.push_back(static_cast<double>(mono_ns() - t0) / 1e3);
  }
  ::waitpid(kid, nullptr, 0);
  return summary(std::move(rt));
}

RoundTrips request_round(const Daemon& d, int n) {
  shmbus::Bus bus = d.connect();
  const pid_t kid = responder(d, "rr", "", n);
  std::vector<double> rt;
  std::uint64_t payload[8] = {};
  for (int i = 0; i < n; ++i) {
    const std::uint64_t t0 = mono_ns();
    (void)bus.request("rr", std::as_bytes(std::span(payload)), std::chrono::seconds(30));
    rt.push_back(static_cast<double>(mono_ns() - t0) / 1e3);
  }
  ::waitpid(kid, nullptr, 0);
  return summary(std::move(rt));
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::uint32_t> counts{1000, 10000, 100000};
  std::uint64_t spread_ms = 2000;
  int rounds = 3;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--counts") {
      counts.clear();
      for (char* tok = std::strtok(argv[i + 1], ","); tok; tok = std::strtok(nullptr, ","))
        counts.push_back(static_cast<std::uint32_t>(std::strtoul(tok, nullptr, 10)));
    } else if (a == "--spread-ms") {
      spread_ms = std::strtoull(argv[i + 1], nullptr, 10);
    } else if (a == "--rounds") {
      rounds = std::atoi(argv[i + 1]);
    } else {
      std::fprintf(stderr, "usage: %s [--counts N,N,...] [--spread-ms MS] [--rounds R]\n", argv[0]);
      return 2;
    }
  }
  Daemon d;
  std::printf(
      "lateness of delayed messages (receive - due, CLOCK_REALTIME), 64 B, due over %llu ms,"
      " real shmbusd as the mover, busy-spinning subscriber\n",
      static_cast<unsigned long long>(spread_ms));
  std::printf("%10s %6s %10s %10s %10s %10s %10s\n", "scheduled", "round", "p50 us", "p99 us",
              "p99.9 us", "max us", "min us");
  for (const std::uint32_t n : counts)
    for (int r = 0; r < rounds; ++r) {
      std::vector<double> late =
          round_of(d, n, spread_ms * 1'000'000, static_cast<std::uint32_t>(r + 1));
      std::sort(late.begin(), late.end());
      std::printf("%10u %6d %10.1f %10.1f %10.1f %10.1f %10.1f\n", n, r + 1, pct(late, 0.5),
                  pct(late, 0.99), pct(late, 0.999), late.back(), late.front());
      std::fflush(stdout);
    }

  // Request-reply against a plain ping-pong, interleaved.
  {
    shmbus::Bus bus = d.connect();
    shmbus::TopicOptions o;
    o.slot_size = 256;
    for (const char* t : {"ping", "pong", "rr"})
      (void)bus.create_topic(t, o);
  }
  constexpr int kTrips = 20000;
  std::printf(
      "\nround trip, 64 B, %d per round (us): plain ping-pong over two topics against "
      "Bus::request + Sample::reply\n",
      kTrips);
  std::printf("%6s %12s %12s %12s %12s %10s\n", "round", "plain p50", "plain p99", "request p50",
              "request p99", "p50 ratio");
  for (int r = 0; r < rounds; ++r) {
    const RoundTrips a = plain_round(d, kTrips);
    const RoundTrips b = request_round(d, kTrips);
    std::printf("%6d %12.2f %12.2f %12.2f %12.2f %9.2fx\n", r + 1, a.p50, a.p99, b.p50, b.p99,
                b.p50 / a.p50);
    std::fflush(stdout);
  }
  return 0;
}
