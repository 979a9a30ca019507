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
//   file        file topics (issue 17), through a real shmbusd with a fresh
//               data directory (mkdtemp in /tmp, removed at the end): a
//               memory topic against file topics with flush none and with
//               flush interval:100ms, as interleaved triples in a rotating
//               order: 64 B and 4 KiB throughput, 64 B one-way p50/p99, and
//               the time of a Publisher::flush() after 1,000 messages
//
//   shmbus-partition-bench [--rounds N] [--messages N] [--iters N]
//       [--rebalances N] [--sections LIST] [--file-messages N]
//       [--file-iters N] [--flushes N]
//
// --sections: a comma-separated subset of throughput, properties, lanes,
// delivery, rebalance, file (default: all of them).
//
// Run it on an otherwise idle machine: two spinning processes own both cores.
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <shmbus/shmbus.hpp>
#include <string>
#include <thread>
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

// The pinger's last step: the median round trip, for the parent.
void store_median(Shared* sh, std::vector<std::uint64_t>& rtt) {
  std::nth_element(rtt.begin(), rtt.begin() + static_cast<std::ptrdiff_t>(rtt.size() / 2),
                   rtt.end());
  // Release: the parent reads it after reaping the pinger (acquire of the load below).
  sh->result[0].store(rtt[rtt.size() / 2], std::memory_order_release);
}

void reap(pid_t pid);

// The parent's: waits for both, then half the median round trip (one way); the block goes.
double one_way_p50(pid_t pinger, pid_t ponger, Shared* sh) {
  reap(pinger);
  reap(ponger);
  const double p50 = static_cast<double>(sh->result[0].load(std::memory_order_acquire)) / 2.0;
  ::munmap(sh, sizeof(Shared));
  return p50;
}

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
    store_median(sh, rtt);
  });
  const double p50 = one_way_p50(pinger, ponger, sh);
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

// ---- file topics (issue 17) -------------------------------------------------------

// A shmbusd of this run's own: its socket and its data directory in a fresh
// mkdtemp directory, removed (files and all) at the end. Killed by an exit
// on failure too (atexit).
pid_t g_daemon = -1;

struct Daemon {
  std::string dir, data, bus, socket;
  pid_t pid = -1;
  Daemon() {
    std::string tmpl = "/tmp/shmbus-partition-bench-XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) {
      std::perror("mkdtemp");
      std::exit(1);
    }
    dir = tmpl;
    data = dir + "/data";  // shmbusd makes it, mode 0700
    bus = "pbench" + std::to_string(::getpid());
    socket = dir + "/bus.sock";
    pid = ::fork();
    if (pid == 0) {
      ::execl(SHMBUSD_PATH, SHMBUSD_PATH, "--bus", bus.c_str(), "--socket", socket.c_str(),
              "--data-dir", data.c_str(), "--log-level", "warn", static_cast<char*>(nullptr));
      ::_exit(127);
    }
    g_daemon = pid;
    std::atexit([] {
      if (g_daemon > 0) ::kill(g_daemon, SIGTERM);
    });
  }
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;
  ~Daemon() {
    g_daemon = -1;
    ::kill(pid, SIGTERM);
    ::waitpid(pid, nullptr, 0);
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
  [[nodiscard]] shmbus::Bus connect() const {
    shmbus::BusOptions o;
    o.bus = bus;
    o.socket_path = socket;
    o.autospawn = false;
    for (int i = 0;; ++i) {
      try {
        return shmbus::Bus::connect(o);
      } catch (const shmbus::Error&) {
        if (i > 1000) throw;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
    }
  }
};

// The file system a path is on, by statfs's magic number.
std::string fs_name(const std::string& path) {
  struct statfs s {};
  if (::statfs(path.c_str(), &s) != 0) return "unknown (statfs failed)";
  const auto magic = static_cast<unsigned long>(s.f_type);
  const char* name = magic == 0xEF53UL       ? "ext2/3/4"
                     : magic == 0x01021994UL ? "tmpfs (memory, not a disk)"
                     : magic == 0x58465342UL ? "xfs"
                     : magic == 0x9123683EUL ? "btrfs"
                     : magic == 0x794C7630UL ? "overlayfs"
                     : magic == 0x2FC12FC1UL ? "zfs"
                     : magic == 0xF2F52010UL ? "f2fs"
                                             : "other";
  char buf[96];
  std::snprintf(buf, sizeof buf, "%s (statfs magic 0x%lx)", name, magic);
  return buf;
}

// The three topics of the comparison.
// The three topics of the comparison, and (4 KiB throughput only) a memory
// topic whose consumer reads every word of each payload, as a file topic's
// consumer does to check the message's CRC32C.
enum class Kind : std::uint8_t { Memory, FileNone, FileInterval, MemoryRead };
constexpr std::array<Kind, 4> kKinds{Kind::Memory, Kind::FileNone, Kind::FileInterval,
                                     Kind::MemoryRead};
constexpr std::array<const char*, 4> kKindNames{"memory", "file/none", "file/interval:100ms",
                                                "memory, payload read"};
constexpr std::array<char, 4> kKindLetters{'M', 'N', 'I', 'R'};

shmbus::TopicOptions kind_options(Kind k, std::uint32_t slots, std::uint32_t size) {
  shmbus::TopicOptions o;
  o.slot_count = slots;
  o.slot_size = size;
  const bool file = k == Kind::FileNone || k == Kind::FileInterval;
  o.storage = file ? shmbus::Storage::File : shmbus::Storage::Memory;
  o.flush_interval = std::chrono::milliseconds(k == Kind::FileInterval ? 100 : 0);
  return o;
}

// Round r runs the first n kinds in this order: it rotates, so that a drift
// of the host within a round lands on a different kind each time.
std::vector<Kind> order_of(std::uint32_t r, std::size_t n = 3) {
  std::vector<Kind> v;
  for (std::size_t i = 0; i < n; ++i)
    v.push_back(kKinds[(r + i) % n]);
  return v;
}

std::string order_name(std::uint32_t r, std::size_t n = 3) {
  std::string s;
  for (const Kind k : order_of(r, n))
    s += kKindLetters[static_cast<std::size_t>(k)];
  return s;
}

std::uint32_t g_topic_seq = 0;
std::string kind_topic(const char* what, Kind k) {
  return std::string(what) + "-" + kKindLetters[static_cast<std::size_t>(k)] + "-" +
         std::to_string(++g_topic_seq);
}

// Complains when a file topic's region is not a file of the data directory,
// or when an interval topic that ran for `secs` was never flushed.
void check_topic(shmbus::Bus& bus, const Daemon& d, const std::string& name, Kind k, double secs) {
  const shmbus::TopicStatus st = bus.describe(name);
  if (k == Kind::Memory || k == Kind::MemoryRead) return;
  if (st.path.rfind(d.data + "/", 0) != 0) {
    std::fprintf(stderr, "shmbus-partition-bench: topic %s is at '%s', not in %s\n", name.c_str(),
                 st.path.c_str(), d.data.c_str());
    std::exit(1);
  }
  if (k == Kind::FileInterval && secs > 0.3 && st.flushed_ns == 0)
    std::fprintf(stderr, "shmbus-partition-bench: warning: %s ran %.2f s and was never flushed\n",
                 name.c_str(), secs);
}

struct Run {
  double rate = 0, secs = 0;
};

// n messages of `size` bytes through a topic of kind k made by the daemon,
// producer and consumer each a process of its own with its own Bus; the
// consumer checks each message's sequence number (and under MemoryRead
// reads every 8-byte word of the payload).
Run bus_throughput(const Daemon& d, Kind k, std::uint32_t size, std::uint64_t n) {
  shmbus::Bus bus = d.connect();
  const std::string name = kind_topic(size > 64 ? "tp4k" : "tp64", k);
  (void)bus.create_topic(name, kind_options(k, 1024, size));
  Shared* sh = shared_block();
  const pid_t consumer = child(1, [&] {
    shmbus::Bus own = d.connect();
    auto sub = own.subscriber(name, spin_sub());  // before the producer: it sees everything
    shmbus::Sample s;
    const bool read_all = k == Kind::MemoryRead;
    std::uint64_t sum = 0;
    sh->ready.store(1, std::memory_order_release);
    const std::uint64_t start = now_ns();
    for (std::uint64_t i = 0; i < n; ++i) {
      if (const auto st = sub->receive(s, kTimeout); st != shmbus::Status::Ok) die("receive", st);
      std::uint64_t seq = 0;
      std::memcpy(&seq, s.data().data(), sizeof seq);
      if (seq != i) die("receive: out of sequence", shmbus::Status::Corrupt);
      if (read_all)
        for (std::size_t at = 0; at + 8 <= s.data().size(); at += 8) {
          std::uint64_t w = 0;
          std::memcpy(&w, s.data().data() + at, sizeof w);
          sum ^= w;
        }
    }
    sh->result[0].store(now_ns() - start, std::memory_order_release);
    sh->result[1].store(sum, std::memory_order_relaxed);  // keeps the reads
  });
  const pid_t producer = child(0, [&] {
    shmbus::Bus own = d.connect();
    shmbus::Publisher pub = own.publisher(name, spin_pub());
    std::vector<std::byte> payload(size);
    if (!wait_flag(sh->ready, 1)) die("consumer start", shmbus::Status::Timeout);
    for (std::uint64_t i = 0; i < n; ++i) {
      std::memcpy(payload.data(), &i, sizeof i);
      if (const auto st = pub.publish(payload); st != shmbus::Status::Ok) die("publish", st);
    }
  });
  reap(producer);
  reap(consumer);
  Run out;
  out.secs = static_cast<double>(sh->result[0].load()) / 1e9;
  out.rate = static_cast<double>(n) / out.secs;
  ::munmap(sh, sizeof(Shared));
  check_topic(bus, d, name, k, out.secs);
  bus.delete_topic(name);
  return out;
}

struct Latency {
  double p50 = 0, p99 = 0, p999 = 0, max = 0, secs = 0;
};

// One-way latency (round trip / 2) of 64 B messages between two processes,
// over two topics of kind k (64 slots, single producer), as latency_p50.
Latency bus_latency(const Daemon& d, Kind k, std::uint64_t iters) {
  shmbus::Bus bus = d.connect();
  const std::string ab = kind_topic("ab", k), ba = kind_topic("ba", k);
  shmbus::TopicOptions o = kind_options(k, 64, 64);
  o.single_producer = true;
  (void)bus.create_topic(ab, o);
  (void)bus.create_topic(ba, o);
  Shared* sh = shared_block();
  const std::uint64_t warm = iters / 10;
  const pid_t ponger = child(1, [&] {
    shmbus::Bus own = d.connect();
    auto sub = own.subscriber(ab, spin_sub());
    shmbus::Publisher pub = own.publisher(ba, spin_pub());
    sh->ready.store(1, std::memory_order_release);
    shmbus::Sample s;
    for (std::uint64_t i = 0; i < warm + iters; ++i) {
      if (const auto st = sub->receive(s, kTimeout); st != shmbus::Status::Ok) die("pong", st);
      if (const auto st = pub.publish(s.data()); st != shmbus::Status::Ok) die("pong", st);
    }
  });
  const pid_t pinger = child(0, [&] {
    shmbus::Bus own = d.connect();
    auto sub = own.subscriber(ba, spin_sub());
    shmbus::Publisher pub = own.publisher(ab, spin_pub());
    if (!wait_flag(sh->ready, 1)) die("ponger start", shmbus::Status::Timeout);
    std::vector<std::uint64_t> rtt;
    rtt.reserve(iters);
    std::byte payload[64] = {};
    shmbus::Sample s;
    const std::uint64_t start = now_ns();
    for (std::uint64_t i = 0; i < warm + iters; ++i) {
      std::memcpy(payload, &i, sizeof i);
      const std::uint64_t t0 = now_ns();
      if (const auto st = pub.publish(payload); st != shmbus::Status::Ok) die("ping", st);
      if (const auto st = sub->receive(s, kTimeout); st != shmbus::Status::Ok) die("ping", st);
      const std::uint64_t t1 = now_ns();
      std::uint64_t seq = 0;
      std::memcpy(&seq, s.data().data(), sizeof seq);
      if (seq != i) die("ping: out of sequence", shmbus::Status::Corrupt);
      s.release();
      if (i >= warm) rtt.push_back(t1 - t0);
    }
    sh->result[2].store(now_ns() - start, std::memory_order_release);
    const auto at = [&](double p) {
      const auto idx =
          std::min(rtt.size() - 1, static_cast<std::size_t>(p * static_cast<double>(rtt.size())));
      std::nth_element(rtt.begin(), rtt.begin() + static_cast<std::ptrdiff_t>(idx), rtt.end());
      return rtt[idx];
    };
    sh->result[0].store(at(0.50), std::memory_order_release);
    sh->result[1].store(at(0.99), std::memory_order_release);
    sh->result[3].store(at(0.999), std::memory_order_release);
    sh->result[4].store(*std::max_element(rtt.begin(), rtt.end()), std::memory_order_release);
  });
  reap(pinger);
  reap(ponger);
  Latency out;
  out.p50 = static_cast<double>(sh->result[0].load()) / 2.0;
  out.p99 = static_cast<double>(sh->result[1].load()) / 2.0;
  out.p999 = static_cast<double>(sh->result[3].load()) / 2.0;
  out.max = static_cast<double>(sh->result[4].load()) / 2.0;
  out.secs = static_cast<double>(sh->result[2].load()) / 1e9;
  ::munmap(sh, sizeof(Shared));
  check_topic(bus, d, ab, k, out.secs);
  bus.delete_topic(ab);
  bus.delete_topic(ba);
  return out;
}

// The bare line (the machine's limit, BASELINES.md): two processes ping-pong
// one cache line, `pause` in the spin; one-way p50 in ns. Tags a round near
// (~60 ns) or far (~175-225 ns).
double bare_line_p50(std::uint64_t iters) {
  Shared* sh = shared_block();
  std::atomic<std::uint64_t>& line = sh->result[512];  // 4 KiB away from the results
  const pid_t ponger = child(1, [&] {
    sh->ready.store(1, std::memory_order_release);
    for (std::uint64_t i = 0; i < iters; ++i) {
      while (line.load(std::memory_order_acquire) != 2 * i + 1)
        __builtin_ia32_pause();
      line.store(2 * i + 2, std::memory_order_release);
    }
  });
  const pid_t pinger = child(0, [&] {
    if (!wait_flag(sh->ready, 1)) die("bare line start", shmbus::Status::Timeout);
    std::vector<std::uint64_t> rtt;
    rtt.reserve(iters);
    for (std::uint64_t i = 0; i < iters; ++i) {
      const std::uint64_t t0 = now_ns();
      line.store(2 * i + 1, std::memory_order_release);
      while (line.load(std::memory_order_acquire) != 2 * i + 2)
        __builtin_ia32_pause();
      rtt.push_back(now_ns() - t0);
    }
    store_median(sh, rtt);
  });
  const double p50 = one_way_p50(pinger, ponger, sh);
  return p50;
}

struct FlushCost {
  std::vector<double> after_batch, clean;  // us
};

// The time of Publisher::flush() after `batch` 64 B publishes, `times` times
// (after 3 unmeasured), and of a second flush() right after it (nothing new
// to write), on a topic of kind k (1024 slots of 64 B, no subscriber: the
// publisher is never held back). One process, pinned to core 0.
FlushCost flush_cost(const Daemon& d, Kind k, std::uint32_t batch, std::uint32_t times) {
  FlushCost out;
  Shared* sh = shared_block();
  const pid_t kid = child(0, [&] {
    shmbus::Bus bus = d.connect();
    const std::string name = kind_topic("flush", k);
    (void)bus.create_topic(name, kind_options(k, 1024, 64));
    {
      shmbus::Publisher pub = bus.publisher(name, spin_pub());
      std::byte payload[64] = {};
      std::uint64_t seq = 0;
      for (std::uint32_t t = 0; t < times + 3; ++t) {
        for (std::uint32_t i = 0; i < batch; ++i, ++seq) {
          std::memcpy(payload, &seq, sizeof seq);
          if (const auto st = pub.publish(payload); st != shmbus::Status::Ok) die("publish", st);
        }
        const std::uint64_t t0 = now_ns();
        pub.flush();
        const std::uint64_t t1 = now_ns();
        pub.flush();
        const std::uint64_t t2 = now_ns();
        if (t >= 3) {
          sh->result[2 * (t - 3)].store(t1 - t0, std::memory_order_relaxed);
          sh->result[2 * (t - 3) + 1].store(t2 - t1, std::memory_order_relaxed);
        }
      }
    }
    check_topic(bus, d, name, k, 0);
    bus.delete_topic(name);
  });
  reap(kid);
  for (std::uint32_t t = 0; t < times; ++t) {
    out.after_batch.push_back(static_cast<double>(sh->result[2 * t].load()) / 1e3);
    out.clean.push_back(static_cast<double>(sh->result[2 * t + 1].load()) / 1e3);
  }
  ::munmap(sh, sizeof(Shared));
  return out;
}

// The yardstick of a flush: msync(MS_SYNC) of a 128 KiB shared mapping of a
// file in `dir` (fallocated, as a file topic's), with all 32 pages dirty,
// with one, and clean; `times` of each, in us.
struct RawSync {
  std::vector<double> all, one, clean;
};

RawSync raw_msync(const std::string& dir, std::uint32_t times) {
  RawSync out;
  std::string path = dir + "/msync-XXXXXX";
  const int fd = ::mkstemp(path.data());
  constexpr std::size_t kSize = 128 * 1024;
  if (fd < 0 || ::posix_fallocate(fd, 0, kSize) != 0) {
    std::perror("raw msync file");
    std::exit(1);
  }
  void* m = ::mmap(nullptr, kSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (m == MAP_FAILED) {
    std::perror("mmap");
    std::exit(1);
  }
  auto* p = static_cast<unsigned char*>(m);
  const auto sync = [&] {
    const std::uint64_t t0 = now_ns();
    if (::msync(m, kSize, MS_SYNC) != 0) {
      std::perror("msync");
      std::exit(1);
    }
    return static_cast<double>(now_ns() - t0) / 1e3;
  };
  std::memset(p, 1, kSize);
  (void)sync();
  for (std::uint32_t t = 0; t < times; ++t) {
    std::memset(p, static_cast<int>(t & 0xff), kSize);
    out.all.push_back(sync());
    out.clean.push_back(sync());
    p[0] = static_cast<unsigned char>(t);
    out.one.push_back(sync());
  }
  ::munmap(m, kSize);
  ::close(fd);
  ::unlink(path.c_str());
  return out;
}

// Microseconds as a table cell: "1234.5", or "0.012" below one.
std::string us(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, v < 1.0 ? "%.3f" : "%.1f", v);
  return buf;
}

double pct(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<std::size_t>(p * static_cast<double>(v.size())))];
}

// The time of one CRC32C over n bytes in cache (what a file topic's publisher
// computes for each message, and its reader again), in ns.
double crc_ns(std::size_t n) {
  std::vector<unsigned char> buf(n, 7);
  std::uint32_t acc = 0;
  const int reps = n > 1024 ? 20'000 : 500'000;
  const std::uint64_t t0 = now_ns();
  for (int i = 0; i < reps; ++i) {
    buf[0] = static_cast<unsigned char>(i);
    acc = shmbus::detail::crc32c(acc, buf.data(), n);
  }
  const std::uint64_t t1 = now_ns();
  if (acc == 0x12345678) std::printf(" ");  // keeps the loop
  return static_cast<double>(t1 - t0) / reps;
}

// Issue 17: memory against file topics (flush none, and every 100 ms by the
// daemon), through a real shmbusd, as interleaved triples in one run.
void durable_section(std::uint32_t rounds, std::uint64_t messages, std::uint64_t iters,
                     std::uint32_t flushes) {
  const Daemon d;
  {
    shmbus::Bus bus = d.connect();  // up before the first round
  }
  const std::uint64_t messages_4k = std::max<std::uint64_t>(1, messages / 8);
  std::printf(
      "## file topics (issue 17): memory against file/none and file/interval:100ms, "
      "interleaved\n\n"
      "Through a real shmbusd (every topic made by Bus::create_topic; each side a process "
      "with its own Bus, pinned to cores 0 and 1, busy-spin). Data directory %s, on %s. "
      "Round r runs the kinds in a rotating order (M memory, N file/none, I "
      "file/interval:100ms; R memory with a consumer that reads every word of the payload, "
      "4 KiB only). Ratios are file / memory within the round. The bare line (two processes "
      "ping-ponging one cache line) runs at the start of each round: ~60 ns one way is the "
      "host's near state, ~120 ns and more far.\n\n",
      d.data.c_str(), fs_name(d.dir).c_str());
  std::printf(
      "shmbus::detail::crc32c in cache, one core: 96 B (a 64 B message's header fields "
      "and payload) %.1f ns, 4 KiB + 32 B %.0f ns\n\n",
      crc_ns(96), crc_ns(4096 + 32));
  std::fflush(stdout);

  using Row = std::array<double, 4>;
  std::vector<Row> tp64(rounds), tp4k(rounds), secs64(rounds), secs4k(rounds), p50(rounds),
      p99(rounds), p999(rounds), lmax(rounds), lsecs(rounds);
  std::vector<double> bare(rounds);
  for (std::uint32_t r = 0; r < rounds; ++r) {
    std::fprintf(stderr, "file topics: round %u of %u (%s, 4 KiB %s)\n", r + 1, rounds,
                 order_name(r).c_str(), order_name(r, 4).c_str());
    bare[r] = bare_line_p50(20'000);
    for (const Kind k : order_of(r)) {
      const Run run = bus_throughput(d, k, 64, messages);
      tp64[r][static_cast<std::size_t>(k)] = run.rate;
      secs64[r][static_cast<std::size_t>(k)] = run.secs;
    }
    for (const Kind k : order_of(r, 4)) {
      const Run run = bus_throughput(d, k, 4096, messages_4k);
      tp4k[r][static_cast<std::size_t>(k)] = run.rate;
      secs4k[r][static_cast<std::size_t>(k)] = run.secs;
    }
    for (const Kind k : order_of(r)) {
      const Latency l = bus_latency(d, k, iters);
      p50[r][static_cast<std::size_t>(k)] = l.p50;
      p99[r][static_cast<std::size_t>(k)] = l.p99;
      p999[r][static_cast<std::size_t>(k)] = l.p999;
      lmax[r][static_cast<std::size_t>(k)] = l.max;
      lsecs[r][static_cast<std::size_t>(k)] = l.secs;
    }
  }
  const auto col = [&](const std::vector<Row>& v, std::size_t k) {
    std::vector<double> c;
    for (const Row& t : v)
      c.push_back(t[k]);
    return median(c);
  };
  const auto ratio_col = [&](const std::vector<Row>& v, std::size_t k, std::size_t base = 0) {
    std::vector<double> c;
    for (const Row& t : v)
      c.push_back(t[k] / t[base]);
    return median(c);
  };

  std::printf(
      "### 64 B throughput, producer process to consumer process (%u rounds of %llu messages, "
      "1024 slots)\n\n"
      "| round | order | memory (Mmsg/s) | file/none (Mmsg/s) | file/interval:100ms (Mmsg/s) | "
      "none / memory | interval / memory | interval / none | run time M / N / I (s) |\n"
      "|---:|---|---:|---:|---:|---:|---:|---:|---|\n",
      rounds, static_cast<unsigned long long>(messages));
  for (std::uint32_t r = 0; r < rounds; ++r)
    std::printf("| %u | %s | %.2f | %.2f | %.2f | %.3f | %.3f | %.3f | %.2f / %.2f / %.2f |\n",
                r + 1, order_name(r).c_str(), tp64[r][0] / 1e6, tp64[r][1] / 1e6, tp64[r][2] / 1e6,
                tp64[r][1] / tp64[r][0], tp64[r][2] / tp64[r][0], tp64[r][2] / tp64[r][1],
                secs64[r][0], secs64[r][1], secs64[r][2]);
  std::printf("| median | | %.2f | %.2f | %.2f | %.3f | %.3f | %.3f | |\n\n", col(tp64, 0) / 1e6,
              col(tp64, 1) / 1e6, col(tp64, 2) / 1e6, ratio_col(tp64, 1), ratio_col(tp64, 2),
              ratio_col(tp64, 2, 1));

  std::printf(
      "### 4 KiB throughput, producer process to consumer process (%u rounds of %llu messages, "
      "1024 slots)\n\n"
      "| round | order | memory (Mmsg/s) | file/none (Mmsg/s) | file/interval:100ms (Mmsg/s) | "
      "memory, payload read (Mmsg/s) | none / memory | interval / memory | "
      "interval / none | none / memory-read | run time M / N / I / R (s) |\n"
      "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
      rounds, static_cast<unsigned long long>(messages_4k));
  for (std::uint32_t r = 0; r < rounds; ++r)
    std::printf(
        "| %u | %s | %.2f | %.2f | %.2f | %.2f | %.3f | %.3f | %.3f | %.3f | %.2f / %.2f / %.2f / "
        "%.2f |\n",
        r + 1, order_name(r, 4).c_str(), tp4k[r][0] / 1e6, tp4k[r][1] / 1e6, tp4k[r][2] / 1e6,
        tp4k[r][3] / 1e6, tp4k[r][1] / tp4k[r][0], tp4k[r][2] / tp4k[r][0], tp4k[r][2] / tp4k[r][1],
        tp4k[r][1] / tp4k[r][3], secs4k[r][0], secs4k[r][1], secs4k[r][2], secs4k[r][3]);
  std::printf("| median | | %.2f | %.2f | %.2f | %.2f | %.3f | %.3f | %.3f | %.3f | |\n\n",
              col(tp4k, 0) / 1e6, col(tp4k, 1) / 1e6, col(tp4k, 2) / 1e6, col(tp4k, 3) / 1e6,
              ratio_col(tp4k, 1), ratio_col(tp4k, 2), ratio_col(tp4k, 2, 1), ratio_col(tp4k, 1, 3));

  std::printf(
      "### 64 B one-way latency, ping-pong / 2 over two topics of 64 slots (%u rounds of %llu "
      "round trips after %llu)\n\n"
      "| round | order | bare line p50 (ns) | memory p50 / p99 (ns) | file/none p50 / p99 (ns) | "
      "file/interval:100ms p50 / p99 (ns) | none / memory p50 | interval / memory p50 | "
      "none / memory p99 | interval / memory p99 | run time M / N / I (s) |\n"
      "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
      rounds, static_cast<unsigned long long>(iters), static_cast<unsigned long long>(iters / 10));
  for (std::uint32_t r = 0; r < rounds; ++r)
    std::printf(
        "| %u | %s | %.0f | %.0f / %.0f | %.0f / %.0f | %.0f / %.0f | %.3f | %.3f | %.3f | %.3f | "
        "%.2f / %.2f / %.2f |\n",
        r + 1, order_name(r).c_str(), bare[r], p50[r][0], p99[r][0], p50[r][1], p99[r][1],
        p50[r][2], p99[r][2], p50[r][1] / p50[r][0], p50[r][2] / p50[r][0], p99[r][1] / p99[r][0],
        p99[r][2] / p99[r][0], lsecs[r][0], lsecs[r][1], lsecs[r][2]);
  std::printf(
      "| median | | %.0f | %.0f / %.0f | %.0f / %.0f | %.0f / %.0f | %.3f | %.3f | %.3f | %.3f | "
      "|\n\n",
      median(bare), col(p50, 0), col(p99, 0), col(p50, 1), col(p99, 1), col(p50, 2), col(p99, 2),
      ratio_col(p50, 1), ratio_col(p50, 2), ratio_col(p99, 1), ratio_col(p99, 2));
  std::printf(
      "The same runs' tails (a flusher's msync every 100 ms touches few of the samples): "
      "p99.9 / max one way (us)\n\n"
      "| round | memory | file/none | file/interval:100ms | interval / none p50 |\n"
      "|---:|---:|---:|---:|---:|\n");
  for (std::uint32_t r = 0; r < rounds; ++r)
    std::printf("| %u | %.2f / %.1f | %.2f / %.1f | %.2f / %.1f | %.3f |\n", r + 1,
                p999[r][0] / 1e3, lmax[r][0] / 1e3, p999[r][1] / 1e3, lmax[r][1] / 1e3,
                p999[r][2] / 1e3, lmax[r][2] / 1e3, p50[r][2] / p50[r][1]);
  std::printf("| median | %.2f / %.1f | %.2f / %.1f | %.2f / %.1f | %.3f |\n\n", col(p999, 0) / 1e3,
              col(lmax, 0) / 1e3, col(p999, 1) / 1e3, col(lmax, 1) / 1e3, col(p999, 2) / 1e3,
              col(lmax, 2) / 1e3, ratio_col(p50, 2, 1));
  std::fflush(stdout);

  std::fprintf(stderr, "file topics: flush()\n");
  constexpr std::uint32_t kBatch = 1000;
  std::printf(
      "### Publisher::flush(), %u times, each after %u publishes of 64 B (one process, no "
      "subscriber, 1024 slots of 64 B)\n\n"
      "| topic | flush() after %u messages: p50 / p90 / max (us) | a second flush() right "
      "after, nothing new: p50 / p90 / max (us) |\n|---|---:|---:|\n",
      flushes, kBatch, kBatch);
  const auto cells = [](const std::vector<double>& v) {
    return us(pct(v, 0.5)) + " / " + us(pct(v, 0.9)) + " / " + us(pct(v, 1.0));
  };
  for (const Kind k : {Kind::Memory, Kind::FileNone}) {
    const FlushCost f = flush_cost(d, k, kBatch, flushes);
    std::printf("| %s | %s | %s |\n", kKindNames[static_cast<std::size_t>(k)],
                cells(f.after_batch).c_str(), cells(f.clean).c_str());
  }
  const RawSync raw = raw_msync(d.dir, flushes);
  std::printf(
      "\nThe yardstick, same directory: msync(MS_SYNC) of a 128 KiB shared mapping of a file "
      "(no shmbus), p50 / p90 / max (us): 32 pages dirty %s; one page dirty %s; clean %s. "
      "A flush() is two msyncs, the topic's data file and its control file.\n\n",
      cells(raw.all).c_str(), cells(raw.one).c_str(), cells(raw.clean).c_str());
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i)
    if (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0) {
      std::printf(
          "usage: shmbus-partition-bench [--rounds N (5)] [--messages N (2000000)] "
          "[--iters N (100000)] [--rebalances N (50)]\n"
          "    [--sections LIST (throughput,properties,lanes,delivery,rebalance,file)]\n"
          "    [--file-messages N (20000000; 4 KiB: N/8)] [--file-iters N (2000000)] "
          "[--flushes N (50)]\n");
      return 0;
    }
  const auto rounds = static_cast<std::uint32_t>(arg(argc, argv, "--rounds", 5));
  const std::uint64_t messages = arg(argc, argv, "--messages", 2'000'000);
  const std::uint64_t iters = arg(argc, argv, "--iters", 100'000);
  const auto rebalances = static_cast<std::uint32_t>(arg(argc, argv, "--rebalances", 50));
  // The file topics' runs last a second or more each, so that the 100 ms
  // flusher runs several times within each.
  const std::uint64_t file_messages = arg(argc, argv, "--file-messages", 20'000'000);
  const std::uint64_t file_iters = arg(argc, argv, "--file-iters", 2'000'000);
  const auto flushes = static_cast<std::uint32_t>(arg(argc, argv, "--flushes", 50));
  if (rounds == 0 || messages == 0 || iters < 10 || rebalances == 0 || file_messages == 0 ||
      file_iters < 10 || flushes == 0 || flushes > 30'000) {
    std::fprintf(stderr,
                 "shmbus-partition-bench: rounds, messages, rebalances, file-messages >= 1, "
                 "iters, file-iters >= 10, flushes 1 to 30000\n");
    return 2;
  }
  std::string sections = "throughput,properties,lanes,delivery,rebalance,file";
  for (int i = 1; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], "--sections") == 0) sections = argv[i + 1];
  std::vector<std::string> wanted;
  for (std::size_t at = 0; at <= sections.size();) {
    const std::size_t comma = std::min(sections.find(',', at), sections.size());
    wanted.push_back(sections.substr(at, comma - at));
    at = comma + 1;
  }
  for (const std::string& w : wanted)
    if (w != "throughput" && w != "properties" && w != "lanes" && w != "delivery" &&
        w != "rebalance" && w != "file") {
      std::fprintf(stderr, "shmbus-partition-bench: no section '%s'\n", w.c_str());
      return 2;
    }
  const auto want = [&](const char* name) {
    return std::find(wanted.begin(), wanted.end(), name) != wanted.end();
  };

  if (want("throughput")) {
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
  }
  if (want("properties")) {
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
  }
  if (want("lanes")) {
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
  }
  if (want("delivery")) {
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
      std::printf("| %u | %.2f | %.2f | %.2fx | %.0f | %.0f |\n", r + 1, m / 1e6, l / 1e6, m / l,
                  mp, lp);
    }
    std::printf(
        "\nmedian at-most-once / at-least-once throughput: %.2fx; at-least-once / at-most-once "
        "p50: %.2fx\n\n",
        median(aratio), median(alat));
  }
  if (want("file")) {
    // Caught here, so that the daemon and its temporary directory go too.
    try {
      durable_section(rounds, file_messages, file_iters, flushes);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "shmbus-partition-bench: file topics: %s\n", e.what());
      return 1;
    }
  }

  if (want("rebalance")) {
    std::vector<std::uint64_t> rb = rebalance(rebalances);
    std::sort(rb.begin(), rb.end());
    std::printf(
        "## rebalance: a member joins a 16-partition group of one busy member (%u times)\n\n",
        rebalances);
    std::printf("join to first message: p50 %.1f us, p90 %.1f us, max %.1f us\n",
                static_cast<double>(rb[rb.size() / 2]) / 1e3,
                static_cast<double>(rb[rb.size() * 9 / 10]) / 1e3,
                static_cast<double>(rb.back()) / 1e3);
  }
  return 0;
}
