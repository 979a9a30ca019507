#include "demo_run.hpp"

#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <vector>

namespace demo {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// In an anonymous MAP_SHARED mapping, followed by one bitmap of `messages`
// bits per group. Children write their own MemberResult and exit; the parent
// reads it after waitpid, which orders the child's writes before the read.
struct Shared {
  std::atomic<std::uint64_t> joined;
  std::atomic<std::uint64_t> group_count[kGroups];
  std::atomic<std::uint64_t> start_ns;
  std::atomic<bool> abort;
  MemberResult member[kConsumers];
};
static_assert(std::atomic<std::uint64_t>::is_always_lock_free &&
                  std::atomic<bool>::is_always_lock_free,
              "atomics shared between processes must be lock-free");

std::size_t bitmap_words(std::uint64_t messages) {
  return (messages + 63) / 64;
}

std::atomic<std::uint64_t>* bitmap(Shared* sh, int group, std::uint64_t messages) {
  auto* base = reinterpret_cast<std::atomic<std::uint64_t>*>(sh + 1);
  return base + static_cast<std::size_t>(group) * bitmap_words(messages);
}

// Waits for `pid` until `deadline`, then kills it; true when it exited 0.
bool reap(pid_t pid, Clock::time_point deadline) {
  // glibc 2.36 declares pidfd_open without C linkage: call it directly.
  const int fd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  if (fd >= 0) {
    for (;;) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      pollfd p{fd, POLLIN, 0};
      const int n =
          poll(&p, 1, static_cast<int>(std::clamp<std::int64_t>(left.count(), 0, 1 << 30)));
      if (n > 0) break;
      if (n == 0) {
        (void)kill(pid, SIGKILL);  // out of time: the status below says it failed
        break;
      }
      if (errno != EINTR) break;
    }
    (void)close(fd);
  } else if (Clock::now() > deadline) {
    (void)kill(pid, SIGKILL);
  }
  int status = 0;
  pid_t r;
  do
    r = waitpid(pid, &status, 0);
  while (r < 0 && errno == EINTR);
  return r == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

std::uint64_t percentile(const std::vector<std::uint32_t>& sorted, double q) {
  if (sorted.empty()) return 0;
  const auto i = static_cast<std::size_t>(q * static_cast<double>(sorted.size()));
  return sorted[std::min(sorted.size() - 1, i)];
}

int consume(const RunConfig& cfg, int c, Shared* sh, Clock::time_point deadline) {
  // A Bus does not survive fork: each process connects on its own.
  shmbus::Bus bus = shmbus::Bus::connect(cfg.bus);
  shmbus::SubscriberOptions so;
  so.group = kGroupName[kGroupOf[c]];
  so.start = shmbus::StartFrom::Earliest;
  auto sub = bus.subscriber(cfg.topic, so);
  // Pairs with the parent's acquire load: the seat exists before the producer starts.
  sh->joined.fetch_add(1, std::memory_order_release);

  MemberResult& r = sh->member[c];
  std::atomic<std::uint64_t>& count = sh->group_count[kGroupOf[c]];
  std::atomic<std::uint64_t>* seen = bitmap(sh, kGroupOf[c], cfg.messages);
  std::vector<std::uint32_t> latency;
  latency.reserve(cfg.messages);
  shmbus::Sample s;
  // Relaxed: a stop condition only; the exact counts are read after waitpid.
  while (count.load(std::memory_order_relaxed) < cfg.messages &&
         !sh->abort.load(std::memory_order_relaxed) && Clock::now() < deadline) {
    if (sub->receive(s, 20ms) != shmbus::Status::Ok) continue;
    const std::uint64_t t = now_ns();
    std::uint64_t seq = 0;
    std::memcpy(&seq, s.data().data(), sizeof seq);
    if (seq != s.sequence() || seq >= cfg.messages) {
      ++r.bad_payload;
    } else {
      // Relaxed: only the bit's own history matters (who set it first).
      const std::uint64_t bit = 1ULL << (seq % 64);
      if ((seen[seq / 64].fetch_or(bit, std::memory_order_relaxed) & bit) == 0)
        count.fetch_add(1, std::memory_order_relaxed);
    }
    const std::uint64_t stamp = s.timestamp_ns();
    latency.push_back(
        static_cast<std::uint32_t>(std::min<std::uint64_t>(t > stamp ? t - stamp : 0, UINT32_MAX)));
    s.release();
    ++r.received;
    r.last_ns = t;
  }
  std::sort(latency.begin(), latency.end());
  r.p50 = percentile(latency, 0.50);
  r.p99 = percentile(latency, 0.99);
  r.max = latency.empty() ? 0 : latency.back();
  return count.load(std::memory_order_relaxed) >= cfg.messages ? 0 : 1;
}

// Waits until `due` (CLOCK_MONOTONIC ns): pacing to a per-message deadline.
bool wait_until(std::uint64_t due) {
  const timespec ts{static_cast<time_t>(due / 1'000'000'000ULL),
                    static_cast<long>(due % 1'000'000'000ULL)};
  int e;
  do
    e = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr);
  while (e == EINTR);
  return e == 0;
}

int produce(const RunConfig& cfg, Shared* sh) {
  shmbus::Bus bus = shmbus::Bus::connect(cfg.bus);
  shmbus::Publisher pub = bus.publisher(cfg.topic);
  const std::uint64_t t0 = now_ns();
  sh->start_ns.store(t0, std::memory_order_relaxed);  // read by the parent after waitpid
  const double period = cfg.rate > 0 ? 1e9 / cfg.rate : 0;
  for (std::uint64_t i = 0; i < cfg.messages; ++i) {
    if (period > 0) {
      const auto due = t0 + static_cast<std::uint64_t>(period * static_cast<double>(i));
      if (now_ns() < due && !wait_until(due)) return 5;
    }
    shmbus::Loan l = pub.loan(cfg.size);
    if (!l) return 3;
    std::memcpy(l.data().data(), &i, sizeof i);
    if (l.publish() != shmbus::Status::Ok) return 4;  // Block policy: at most 10 s
  }
  return 0;
}

template <class F>
int child_main(F&& f) {
  try {
    return f();
  } catch (const shmbus::Error& e) {
    std::fprintf(stderr, "shmbus-demo (pid %d): %s\n", static_cast<int>(getpid()), e.what());
    return 1;
  }
}

}  // namespace

std::uint64_t now_ns() {
  timespec ts{};
  (void)clock_gettime(CLOCK_MONOTONIC, &ts);  // cannot fail for CLOCK_MONOTONIC
  return std::uint64_t(ts.tv_sec) * 1'000'000'000ULL + std::uint64_t(ts.tv_nsec);
}

RunResult run(const RunConfig& cfg) {
  RunResult out;
  shmbus::TopicOptions o;
  o.slot_count = 4096;
  o.slot_size = cfg.size;
  o.single_producer = true;
  shmbus::Bus::connect(cfg.bus).create_topic(cfg.topic, o);

  const std::size_t bytes = sizeof(Shared) + kGroups * bitmap_words(cfg.messages) * 8;
  void* map = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (map == MAP_FAILED) {
    out.error = std::string("mmap: ") + std::strerror(errno);
    shmbus::Bus::connect(cfg.bus).delete_topic(cfg.topic);
    return out;
  }
  auto* sh = new (map) Shared{};  // zero pages: the bitmaps start empty

  // Time the run may take: publishing at the rate (or flat out) plus slack.
  const auto budget =
      (cfg.rate > 0 ? std::chrono::duration_cast<Clock::duration>(
                          std::chrono::duration<double>(double(cfg.messages) / cfg.rate))
                    : Clock::duration(0)) +
      (cfg.rate > 0 ? 30s : 120s);
  const auto deadline = Clock::now() + 10s + budget;

  std::vector<pid_t> children;
  const auto spawn = [&](auto&& body) {
    const pid_t pid = fork();
    if (pid == 0) _exit(child_main(body));
    if (pid < 0)
      out.error = std::string("fork: ") + std::strerror(errno);
    else
      children.push_back(pid);
    return pid > 0;
  };
  // Consumers join first (from the earliest message) so both groups gate the producer.
  for (int c = 0; c < kConsumers && out.error.empty(); ++c)
    spawn([&, c] { return consume(cfg, c, sh, deadline); });
  const auto join_deadline = Clock::now() + 10s;
  // Acquire pairs with each consumer's release increment after it subscribed.
  while (out.error.empty() && sh->joined.load(std::memory_order_acquire) < kConsumers) {
    if (Clock::now() > join_deadline) out.error = "consumers did not join within 10 s";
    sched_yield();
  }
  bool ok = out.error.empty() && spawn([&] { return produce(cfg, sh); });
  // A failed producer cannot finish the run: tell the consumers to stop now.
  if (ok && !reap(children.back(), deadline)) {
    out.error = "the producer failed or ran out of time";
    ok = false;
  }
  if (!ok) sh->abort.store(true, std::memory_order_relaxed);  // a stop signal only
  for (std::size_t i = 0; i < children.size() && i < kConsumers; ++i)
    if (!reap(children[i], deadline + 2s) && out.error.empty())
      out.error = std::string("a consumer in group '") + kGroupName[kGroupOf[i]] +
                  "' failed or did not receive everything in time";

  out.start_ns = sh->start_ns.load(std::memory_order_relaxed);
  for (int c = 0; c < kConsumers; ++c)
    out.member[c] = sh->member[c];
  for (int g = 0; g < kGroups; ++g) {
    const std::atomic<std::uint64_t>* seen = bitmap(sh, g, cfg.messages);
    for (std::size_t w = 0; w < bitmap_words(cfg.messages); ++w)
      out.group[g].distinct +=
          static_cast<std::uint64_t>(__builtin_popcountll(seen[w].load(std::memory_order_relaxed)));
    std::uint64_t received = 0;
    for (int c = 0; c < kConsumers; ++c)
      if (kGroupOf[c] == g) received += out.member[c].received - out.member[c].bad_payload;
    out.group[g].duplicates = received - out.group[g].distinct;
  }
  if (munmap(map, bytes) != 0 && out.error.empty())
    out.error = std::string("munmap: ") + std::strerror(errno);
  shmbus::Bus::connect(cfg.bus).delete_topic(cfg.topic);
  return out;
}

}  // namespace demo
