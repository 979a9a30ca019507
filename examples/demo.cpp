// The main job's demo: connects to the bus (starting shmbusd if none runs),
// creates a topic, and runs one producer process and two consumer groups in
// separate processes (group "audit" with one member, group "workers" with two
// competing members). Prints messages/s and end-to-end latency percentiles.
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <shmbus/shmbus.hpp>
#include <string>
#include <vector>

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

struct Report {  // in an anonymous shared mapping, one per consumer process
  std::atomic<std::uint64_t> received;
  std::uint64_t checksum_errors;
  double seconds;
  std::uint64_t p50, p99, p999, max;
};

// Reaps `pid`; true when it exited with status 0.
bool exited_cleanly(pid_t pid) {
  int status = 0;
  pid_t r;
  do
    r = waitpid(pid, &status, 0);
  while (r < 0 && errno == EINTR);
  return r == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

void usage() {
  std::printf(
      "usage: shmbus-demo [--messages N] [--size BYTES]\n"
      "  Runs a producer and two consumer groups in separate processes over one\n"
      "  topic and prints throughput and publish-to-receive latency percentiles.\n"
      "  --messages N   messages to publish (default 2000000)\n"
      "  --size BYTES   payload size, 16..65536 (default 64)\n");
}

std::uint64_t now_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return std::uint64_t(ts.tv_sec) * 1'000'000'000ULL + std::uint64_t(ts.tv_nsec);
}

int consume(const std::string& topic_name, const std::string& group, std::uint64_t expected_total,
            std::atomic<std::uint64_t>& group_count, std::atomic<std::uint64_t>& joined,
            Report& r) {
  // A Bus does not survive fork: each process connects on its own.
  shmbus::Bus bus = shmbus::Bus::connect();
  shmbus::SubscriberOptions so;
  so.group = group;
  so.start = shmbus::StartFrom::Earliest;
  auto sub = bus.subscriber(topic_name, so);
  joined.fetch_add(1, std::memory_order_release);
  std::vector<std::uint32_t> latency;
  latency.reserve(expected_total);
  shmbus::Sample s;
  Clock::time_point first{};
  const auto deadline = Clock::now() + 120s;
  while (group_count.load(std::memory_order_relaxed) < expected_total && Clock::now() < deadline) {
    if (sub->receive(s, 20ms) != shmbus::Status::Ok) continue;
    if (r.received.load(std::memory_order_relaxed) == 0) first = Clock::now();
    std::uint64_t seq = 0;
    std::memcpy(&seq, s.data().data(), 8);
    if (seq != s.sequence()) ++r.checksum_errors;
    latency.push_back(static_cast<std::uint32_t>(
        std::min<std::uint64_t>(now_ns() - s.timestamp_ns(), UINT32_MAX)));
    s.release();
    r.received.fetch_add(1, std::memory_order_relaxed);
    group_count.fetch_add(1, std::memory_order_relaxed);
  }
  r.seconds = std::chrono::duration<double>(Clock::now() - first).count();
  std::sort(latency.begin(), latency.end());
  const auto pct = [&](double q) {
    return latency.empty()
               ? 0
               : latency[std::min(
                     latency.size() - 1,
                     static_cast<std::size_t>(q * static_cast<double>(latency.size())))];
  };
  r.p50 = pct(0.50);
  r.p99 = pct(0.99);
  r.p999 = pct(0.999);
  r.max = latency.empty() ? 0 : latency.back();
  return group_count.load() >= expected_total ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::uint64_t messages = 2'000'000;
  std::uint32_t size = 64;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      usage();
      return 0;
    }
    if ((a == "--messages" || a == "--size") && i + 1 < argc) {
      char* end = nullptr;
      const unsigned long long v = std::strtoull(argv[++i], &end, 10);
      if (*end != '\0' || v == 0) {
        std::fprintf(stderr, "shmbus-demo: %s needs a positive number\n", a.c_str());
        return 2;
      }
      if (a == "--messages")
        messages = v;
      else
        size = static_cast<std::uint32_t>(v);
      continue;
    }
    std::fprintf(stderr, "shmbus-demo: unknown argument '%s' (try --help)\n", a.c_str());
    return 2;
  }
  if (size < 16 || size > 65536) {
    std::fprintf(stderr, "shmbus-demo: --size must be between 16 and 65536\n");
    return 2;
  }

  const std::string name = "demo-" + std::to_string(getpid());
  shmbus::TopicOptions o;
  o.slot_count = 4096;
  o.slot_size = size;
  o.single_producer = true;
  std::string daemon_note;
  try {
    shmbus::Bus bus = shmbus::Bus::connect();  // starts shmbusd when none answers
    bus.create_topic(name, o);
    daemon_note = "shmbusd pid " + std::to_string(bus.daemon_pid()) + " on " + bus.socket_path();
  } catch (const shmbus::Error& e) {
    std::fprintf(stderr, "shmbus-demo: %s\n", e.what());
    return 1;
  }

  // Shared: per-process reports and per-group counts (competing members stop
  // when their group as a whole has everything).
  constexpr int kConsumers = 3;
  auto* reports =
      static_cast<Report*>(mmap(nullptr, sizeof(Report) * kConsumers + 64, PROT_READ | PROT_WRITE,
                                MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  auto* group_counts = reinterpret_cast<std::atomic<std::uint64_t>*>(reports + kConsumers);
  const char* groups[kConsumers] = {"audit", "workers", "workers"};
  const int group_of[kConsumers] = {0, 1, 1};

  // Consumers join first (start at the earliest message) so nothing is missed.
  std::vector<pid_t> children;
  for (int c = 0; c < kConsumers; ++c) {
    const pid_t pid = fork();
    if (pid < 0) {
      std::fprintf(stderr, "shmbus-demo: fork: %s\n", std::strerror(errno));
      for (pid_t p : children)
        kill(p, SIGKILL);
      for (pid_t p : children)
        (void)exited_cleanly(p);
      shmbus::Bus::connect().delete_topic(name);
      return 1;
    }
    if (pid == 0)
      _exit(consume(name, groups[c], messages, group_counts[group_of[c]], group_counts[2],
                    reports[c]));
    children.push_back(pid);
  }
  // Wait (bounded) until every consumer has joined, so both groups gate the producer.
  const auto join_deadline = Clock::now() + 10s;
  while (group_counts[2].load(std::memory_order_acquire) < kConsumers) {
    if (Clock::now() > join_deadline) {
      std::fprintf(stderr, "shmbus-demo: consumers did not join within 10 s\n");
      for (pid_t p : children)
        kill(p, SIGKILL);
      shmbus::Bus::connect().delete_topic(name);
      return 1;
    }
    sched_yield();
  }

  const pid_t producer = fork();
  if (producer == 0) {
    shmbus::Bus bus = shmbus::Bus::connect();
    shmbus::Publisher pub = bus.publisher(name);
    for (std::uint64_t i = 0; i < messages; ++i) {
      shmbus::Loan l = pub.loan(size);
      if (!l) _exit(3);
      std::memcpy(l.data().data(), &i, 8);
      if (l.publish() != shmbus::Status::Ok) _exit(4);
    }
    _exit(0);
  }
  int rc = 0;
  if (producer < 0) {
    std::fprintf(stderr, "shmbus-demo: fork: %s\n", std::strerror(errno));
    for (pid_t p : children)
      kill(p, SIGKILL);
    rc = 1;
  } else if (!exited_cleanly(producer)) {
    rc = 1;
  }
  for (pid_t p : children)
    if (!exited_cleanly(p)) rc = 1;
  shmbus::Bus::connect().delete_topic(name);

  std::printf(
      "shmbus demo: %llu messages of %u B, 1 producer process, groups 'audit' (1 member) "
      "and 'workers' (2 competing members)\n%s\n\n",
      static_cast<unsigned long long>(messages), size, daemon_note.c_str());
  std::printf("| consumer | group | received | msgs/s | latency p50 | p99 | p99.9 | max |\n");
  std::printf("|---|---|---:|---:|---:|---:|---:|---:|\n");
  for (int c = 0; c < kConsumers; ++c) {
    const Report& r = reports[c];
    std::printf("| %d | %s | %llu | %.2f M | %llu ns | %llu ns | %llu ns | %llu ns |\n", c,
                groups[c], static_cast<unsigned long long>(r.received.load()),
                r.seconds > 0 ? double(r.received.load()) / r.seconds / 1e6 : 0.0,
                static_cast<unsigned long long>(r.p50), static_cast<unsigned long long>(r.p99),
                static_cast<unsigned long long>(r.p999), static_cast<unsigned long long>(r.max));
    if (r.checksum_errors != 0) rc = 1;
  }
  const std::uint64_t workers = reports[1].received.load() + reports[2].received.load();
  std::printf("\naudit received %llu of %llu; workers received %llu of %llu between them; %s\n",
              static_cast<unsigned long long>(reports[0].received.load()),
              static_cast<unsigned long long>(messages), static_cast<unsigned long long>(workers),
              static_cast<unsigned long long>(messages),
              rc == 0 && workers == messages && reports[0].received.load() == messages
                  ? "nothing lost, nothing duplicated"
                  : "MISMATCH");
  return rc == 0 && workers == messages ? 0 : 1;
}
