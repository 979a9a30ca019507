// Real processes (fork) over real shared memory: several producer processes,
// several groups, one with competing members; every group gets every message
// exactly once with its checksum intact and each producer's order kept. And a
// deliberately slow reader under Policy::Overwrite: nothing torn, losses exact.
#include <sys/mman.h>

#include <cstdlib>
#include <vector>

#include "test_util.hpp"

namespace shmbus::test {
namespace {

using namespace std::chrono_literals;

std::uint64_t stress_messages() {
  // Sanitizer builds run the same test at a smaller scale (they are 5-20x slower).
  if (const char* v = std::getenv("SHMBUS_STRESS_MESSAGES")) return std::strtoull(v, nullptr, 10);
  return 1'000'000;
}

std::uint64_t fnv1a(const std::byte* p, std::size_t n) {
  std::uint64_t h = 1469598103934665603ULL;
  for (std::size_t i = 0; i < n; ++i)
    h = (h ^ static_cast<std::uint8_t>(p[i])) * 1099511628211ULL;
  return h;
}

// Message: producer u32 | index u32 | body (8..120 bytes, derived) | fnv1a of all before.
std::size_t encode(std::span<std::byte> out, std::uint32_t producer, std::uint32_t index) {
  const std::size_t body = 8 + (index * 7 + producer) % 113;
  std::memcpy(out.data(), &producer, 4);
  std::memcpy(out.data() + 4, &index, 4);
  for (std::size_t i = 0; i < body; ++i)
    out[8 + i] = static_cast<std::byte>((index + i * producer + 17) & 0xff);
  const std::uint64_t h = fnv1a(out.data(), 8 + body);
  std::memcpy(out.data() + 8 + body, &h, 8);
  return 16 + body;
}

bool decode(std::span<const std::byte> in, std::uint32_t& producer, std::uint32_t& index) {
  if (in.size() < 24) return false;
  std::uint64_t h = 0;
  std::memcpy(&h, in.data() + in.size() - 8, 8);
  if (fnv1a(in.data(), in.size() - 8) != h) return false;
  std::memcpy(&producer, in.data(), 4);
  std::memcpy(&index, in.data() + 4, 4);
  return true;
}

constexpr int kGroups = 3;

struct Mapping {
  void* p;
  std::size_t n;
  explicit Mapping(std::size_t bytes) : n(bytes) {
    p = ::mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::runtime_error("mmap");
  }
  ~Mapping() { ::munmap(p, n); }
};

TEST(MultiProcess, ProducersGroupsAndCompetingMembersExactlyOnce) {
  constexpr std::uint32_t kProducers = 3;
  const std::uint64_t total = stress_messages();
  const std::uint32_t per_producer = static_cast<std::uint32_t>(total / kProducers);
  const std::uint64_t n = std::uint64_t{per_producer} * kProducers;
  TopicOptions o;
  o.slot_count = 1024;
  o.slot_size = 160;
  ScopedTopic t("mp", o);

  const std::size_t words = (n + 63) / 64;
  Mapping map(sizeof(std::atomic<std::uint64_t>) * (16 + kGroups * words));
  auto* counters = static_cast<std::atomic<std::uint64_t>*>(map.p);
  std::atomic<std::uint64_t>* delivered = counters;       // [3]
  std::atomic<std::uint64_t>* duplicates = counters + 3;  // [3]
  std::atomic<std::uint64_t>* bad = counters + 6;         // [3]
  std::atomic<std::uint64_t>* ready = counters + 9;
  std::atomic<std::uint64_t>* bitmap = counters + 16;  // [3][words]

  // Consumers: group "solo" (1 member), group "trio" (3 competing members),
  // and a private group. Each checks checksums and per-producer order (within
  // a member, a producer's messages must come in the order it sent them).
  struct Member {
    int group;
    std::string name;
  };
  const std::vector<Member> members = {{0, "solo"}, {1, "trio"}, {1, "trio"}, {1, "trio"}, {2, ""}};
  std::vector<pid_t> pids;
  for (const Member& m : members) {
    pids.push_back(spawn([&, m]() -> int {
      Topic topic = Topic::open(t.name);
      SubscriberOptions so;
      so.group = m.name;
      so.start = StartFrom::Earliest;
      auto sub = topic.subscriber(so);
      ready->fetch_add(1, std::memory_order_release);
      std::vector<std::int64_t> last(kProducers, -1);
      Sample s;
      const auto deadline = std::chrono::steady_clock::now() + 240s;
      while (delivered[m.group].load(std::memory_order_relaxed) < n) {
        if (std::chrono::steady_clock::now() > deadline) return 3;
        const Status st = sub->receive(s, 20ms);
        if (st == Status::Timeout) continue;
        if (st != Status::Ok) return 4;
        std::uint32_t p = 0, i = 0;
        if (!decode(s.data(), p, i) || p >= kProducers || i >= per_producer ||
            static_cast<std::int64_t>(i) <= last[p]) {
          bad[m.group].fetch_add(1, std::memory_order_relaxed);
        } else {
          last[p] = i;
          const std::uint64_t id = std::uint64_t{p} * per_producer + i;
          const std::uint64_t bit = 1ULL << (id % 64);
          if (bitmap[m.group * words + id / 64].fetch_or(bit, std::memory_order_relaxed) & bit)
            duplicates[m.group].fetch_add(1, std::memory_order_relaxed);
        }
        s.release();
        delivered[m.group].fetch_add(1, std::memory_order_relaxed);
      }
      return sub->lost() == 0 ? 0 : 5;
    }));
  }
  ASSERT_TRUE(wait_until([&] { return ready->load() == members.size(); }, 30s));
  for (std::uint32_t p = 0; p < kProducers; ++p) {
    pids.push_back(spawn([&, p]() -> int {
      Topic topic = Topic::open(t.name);
      PublisherOptions po;
      po.timeout = 60s;
      Publisher pub = topic.publisher(po);
      std::byte buf[160];
      for (std::uint32_t i = 0; i < per_producer; ++i) {
        const std::size_t len = encode(buf, p, i);
        if (i % 2 == 0) {
          if (pub.publish(std::span(buf, len)) != Status::Ok) return 6;
        } else {  // half through zero-copy loans
          Loan l = pub.loan(len);
          if (!l) return 7;
          std::memcpy(l.data().data(), buf, len);
          if (l.publish() != Status::Ok) return 8;
        }
      }
      return 0;
    }));
  }
  for (pid_t pid : pids)
    EXPECT_EQ(wait_child(pid, 300s), 0) << "child " << pid;
  for (int g = 0; g < kGroups; ++g) {
    EXPECT_EQ(delivered[g].load(), n) << "group " << g;
    EXPECT_EQ(duplicates[g].load(), 0u) << "group " << g;
    EXPECT_EQ(bad[g].load(), 0u) << "group " << g;
    std::uint64_t set = 0;
    for (std::size_t w = 0; w < words; ++w)
      set += __builtin_popcountll(bitmap[g * words + w]);
    EXPECT_EQ(set, n) << "group " << g << ": every message exactly once";
  }
}

// One producer process runs flat out on a small overwrite ring; a slow reader
// process copies messages out and checks each; received + lost == published.
// The reader is slow by construction, not by luck: before each read it waits
// until the producer is more than two whole rings ahead of it (or done), so
// every read while the producer runs is of a lapped position, whatever the
// relative speed of the two processes.
TEST(MultiProcess, OverwriteSlowReaderSeesNoTornMessageAndExactLosses) {
  constexpr std::uint32_t kSlots = 16;
  TopicOptions o;
  o.slot_count = kSlots;
  o.slot_size = 1024;
  o.policy = Policy::Overwrite;
  ScopedTopic t("mp-ow", o);
  const std::uint64_t n = std::max<std::uint64_t>(stress_messages() / 5, 10000);
  Mapping map(64);
  auto* c = static_cast<std::atomic<std::uint64_t>*>(map.p);  // [0] ready, [1] done
  const pid_t reader = spawn([&]() -> int {
    Topic topic = Topic::open(t.name);
    SubscriberOptions so;
    so.start = StartFrom::Earliest;
    auto sub = topic.subscriber(so);
    c[0].store(1, std::memory_order_release);
    std::vector<std::byte> buf(1024);
    MessageInfo info;
    std::uint64_t received = 0, zero_copy_torn_seen = 0;
    const auto deadline = std::chrono::steady_clock::now() + 240s;
    for (std::uint64_t k = 0;; ++k) {
      if (std::chrono::steady_clock::now() > deadline) return 3;
      // Two rings, not one: the slot of our position has then been claimed
      // again and its new message committed (the producer commits each
      // message before it claims the next), so take() finds it lapped.
      // Acquire on c[1]: pairs with the release store after the writer exits.
      if (!wait_until(
              [&] { return sub->lag() > 2 * kSlots || c[1].load(std::memory_order_acquire) != 0; },
              120s))
        return 9;
      Status st;
      if (k % 2 == 0) {
        st = sub->receive_copy(buf, info, 5ms);
        if (st == Status::Ok) {
          std::uint32_t p = 0, i = 0;
          if (!decode(std::span(buf).first(info.size), p, i) || i != info.sequence) return 4;
        }
      } else {  // zero copy: read in place, then ask whether it was intact
        Sample s;
        st = sub->receive(s, 5ms);
        if (st == Status::Ok) {
          std::uint32_t p = 0, i = 0;
          const bool ok = decode(s.data(), p, i) && i == s.sequence();
          if (!s.intact()) {
            ++zero_copy_torn_seen;  // detected: not counted as received, counted as lost
            continue;
          }
          if (!ok) return 5;  // intact but wrong: a real bug
        }
      }
      if (st == Status::Ok) {
        ++received;
        continue;
      }
      if (st != Status::Timeout) return 6;
      if (c[1].load(std::memory_order_acquire) != 0 && sub->lag() == 0) break;
    }
    const std::uint64_t accounted = received + sub->lost() + zero_copy_torn_seen;
    if (accounted != n) {
      std::fprintf(stderr, "received %llu + lost %llu + torn %llu != %llu\n",
                   (unsigned long long)received, (unsigned long long)sub->lost(),
                   (unsigned long long)zero_copy_torn_seen, (unsigned long long)n);
      return 7;
    }
    return sub->lost() > 0 ? 0 : 8;  // the wait above lapped the reader: never 8
  });
  ASSERT_TRUE(wait_until([&] { return c[0].load() == 1; }, 30s));
  const pid_t writer = spawn([&]() -> int {
    Topic topic = Topic::open(t.name);
    Publisher pub = topic.publisher();
    std::byte buf[1024];
    for (std::uint32_t i = 0; i < n; ++i) {
      const std::size_t len = encode(buf, 0, i);
      if (pub.try_publish(std::span(buf, len)) != Status::Ok) return 2;  // never waits
    }
    return 0;
  });
  EXPECT_EQ(wait_child(writer, 300s), 0);
  c[1].store(1, std::memory_order_release);
  EXPECT_EQ(wait_child(reader, 300s), 0);
}

}  // namespace
}  // namespace shmbus::test
