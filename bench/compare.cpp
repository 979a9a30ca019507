// shmbus-compare: shmbus against the IPC systems packaged for this machine and
// against its physical limits, in one run (issue 4).
//
//   latency     ping-pong between two processes pinned to separate cores,
//               one way = round trip / 2, p50/p99/p99.9/max, warm-up excluded;
//               the samples also go into a log-bucketed (HDR-style) histogram
//   throughput  one producer process, one consumer process, a fixed count of
//               messages; messages/s and bytes/s (median of the runs)
//   blocking    the sleeping modes: ping-pong with the receiver asleep on
//               both placements (cores split, one core), and a one-way stream
//               of messages spaced wider than shmbus's spin budget
//
// Every message carries its sequence number, written by the sender and checked
// by the receiver, for every system. Every wait has a timeout; a side that
// fails or hangs fails its row (its peer is killed) and the run goes on.
// Writes compare.md, compare.json and, through bench/plot.py, compare.png.

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cinttypes>
#include <csignal>
#include <cstdarg>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "compare.hpp"

#ifndef SHMBUS_BENCH_VERSION
#define SHMBUS_BENCH_VERSION "unknown"
#endif
#ifndef SHMBUS_BENCH_BUILD
#define SHMBUS_BENCH_BUILD "unknown"
#endif
#ifndef SHMBUS_BENCH_RESULTS_DIR
#define SHMBUS_BENCH_RESULTS_DIR "bench/results"
#endif
#ifndef SHMBUS_BENCH_PLOT_SCRIPT
#define SHMBUS_BENCH_PLOT_SCRIPT "bench/plot.py"
#endif
#ifndef SHMBUS_IOX_ROUDI
#define SHMBUS_IOX_ROUDI "/usr/bin/iox-roudi"
#endif

namespace shmbus_bench {
namespace {

// ---- the systems that need no package -----------------------------------------

class BareLine : public System {
 public:
  BareLine() {
    key = "bare-line";
    name = "bare cache line, pause spin (the limit)";
    baseline = true;
  }
  bool has_throughput() const override { return false; }
  void ping(const Scenario& sc) override { bare_pinger(sc.plan, 0, nullptr, nullptr); }
  void pong(const Scenario&) override { bare_ponger(0, nullptr, nullptr); }
};

class BareMemcpy : public System {
 public:
  BareMemcpy() {
    key = "bare-memcpy";
    name = "bare memcpy into shm + read in place (the limit for a copy)";
    baseline = true;
  }
  bool has_throughput() const override { return false; }
  void prepare(const Scenario& sc) override {
    a_ = std::make_unique<SharedBuffer>(sc.size);
    b_ = std::make_unique<SharedBuffer>(sc.size);
  }
  void cleanup() override {
    a_.reset();
    b_.reset();
  }
  void ping(const Scenario& sc) override { bare_pinger(sc.plan, sc.size, a_->data, b_->data); }
  void pong(const Scenario& sc) override { bare_ponger(sc.size, a_->data, b_->data); }

 private:
  std::unique_ptr<SharedBuffer> a_, b_;
};

class BareRingSystem : public System {
 public:
  explicit BareRingSystem(std::uint64_t every) : every_(every) {
    key = every == 1 ? "bare-ring" : "bare-ring-16";
    name = every == 1 ? "bare SPSC ring in shm, index per message (the limit)"
                      : "bare SPSC ring in shm, index every 16 messages";
    baseline = true;
  }
  bool has_latency() const override { return false; }
  void prepare(const Scenario& sc) override {
    stride_ = (sc.size + 63) / 64 * 64;
    mem_ = std::make_unique<SharedBuffer>(sc.slots * stride_);
  }
  void cleanup() override { mem_.reset(); }
  void produce(const Scenario& sc) override {
    ring_producer(BareRing{mem_->data, stride_, sc.slots, every_}, sc.count, sc.size);
  }
  void consume(const Scenario& sc) override {
    ring_consumer(BareRing{mem_->data, stride_, sc.slots, every_}, sc.count, sc.size);
  }

 private:
  std::uint64_t every_;
  std::size_t stride_ = 64;
  std::unique_ptr<SharedBuffer> mem_;
};

class RawFutex : public System {
 public:
  RawFutex() {
    key = "raw-futex";
    name = "raw futex wait/wake (the floor for a sleeping receiver)";
    baseline = true;
    blocking = slow = true;
  }
  bool has_throughput() const override { return false; }
  bool has_spaced() const override { return true; }
  void prepare(const Scenario& sc) override {
    stride_ = (sc.size + 63) / 64 * 64;
    msgs_ = std::make_unique<SharedBuffer>(kRing * stride_);
  }
  void cleanup() override { msgs_.reset(); }
  void ping(const Scenario& sc) override { futex_pinger(sc.plan); }
  void pong(const Scenario&) override { futex_ponger(); }

  // The sender writes message i into a small ring in shared memory, stores
  // i + 1 in the word and wakes; the receiver sleeps on the word between
  // messages (a receiver that was descheduled for a while catches up through
  // the ring).
  void spaced_send(const Scenario& sc) override {
    std::atomic<std::uint32_t>& w = g_ctl->futex_word.v;
    auto src = make_payload(sc.size);
    handshake();
    std::uint64_t next = now_ns();
    for (std::uint64_t i = 0; i < sc.count; ++i) {
      next += sc.gap_ns;
      sleep_until_ns(next);
      put_seq(src.data(), i);
      put_time(src.data(), now_ns());
      std::memcpy(slot(i), src.data(), sc.size);
      // Release: pairs with the receiver's acquire load; the message is written.
      w.store(static_cast<std::uint32_t>(i + 1), std::memory_order_release);
      futex(w, FUTEX_WAKE, 1, nullptr);
      heartbeat(i);
    }
  }
  void spaced_recv(const Scenario& sc) override {
    std::atomic<std::uint32_t>& w = g_ctl->futex_word.v;
    SpacedRecorder rec(sc.count);
    handshake();
    for (std::uint64_t i = 0; i < sc.count; ++i) {
      const auto want = static_cast<std::uint32_t>(i + 1);
      const std::uint64_t deadline = now_ns() + kTimeoutNs;
      for (;;) {
        // Acquire: pairs with the sender's release store.
        const std::uint32_t v = w.load(std::memory_order_acquire);
        if (v >= want) break;
        const timespec ts{1, 0};
        futex(w, FUTEX_WAIT, v, &ts);
        if (now_ns() > deadline)
          fail("raw futex: no message %" PRIu64 " within %d s", i, kTimeoutSeconds);
      }
      rec.add(slot(i));
      if (get_seq(slot(i)) != i) fail("raw futex: expected message %" PRIu64, i);
      heartbeat(i);
    }
    rec.finish();
  }

 private:
  static constexpr std::uint64_t kRing = 64;
  std::byte* slot(std::uint64_t i) const { return msgs_->data + (i % kRing) * stride_; }
  std::size_t stride_ = 64;
  std::unique_ptr<SharedBuffer> msgs_;
};

// shmbus through its public API: zero-copy loan/publish and receive of a
// Sample viewed in place; one publisher per topic (single_producer, its
// fastest documented mode), policy block.
class Shmbus : public System {
 public:
  Shmbus(std::string k, std::string n, ShmbusWait w) : wait_(w) {
    key = std::move(k);
    name = std::move(n);
    blocking = w.wait != shmbus::WaitStrategy::BusySpin;
    slow = w.spin_ns == 0;  // sleeps on every wait
  }
  bool has_spaced() const override { return true; }

  void prepare(const Scenario& sc) override {
    shmbus::TopicOptions to;
    to.slot_size = static_cast<std::uint32_t>(sc.size);
    to.slot_count = sc.mode == Mode::Throughput ? static_cast<std::uint32_t>(sc.slots) : 64;
    to.policy = shmbus::Policy::Block;
    to.single_producer = true;
    a_ = std::make_unique<ScopedTopic>("cmp-ab", to);
    if (sc.mode == Mode::Latency) b_ = std::make_unique<ScopedTopic>("cmp-ba", to);
  }
  void cleanup() override {
    a_.reset();
    b_.reset();
  }

  void ping(const Scenario& sc) override {
    shmbus_pinger(sc.plan, sc.size, a_->name, b_->name, wait_);
  }
  void pong(const Scenario& sc) override { shmbus_ponger(sc.size, a_->name, b_->name, wait_); }
  void produce(const Scenario& sc) override {
    shmbus_producer(a_->name, sc.count, sc.size, wait_, /*loan=*/true);
  }
  void consume(const Scenario& sc) override {
    shmbus_consumer(a_->name, sc.count, sc.size, wait_, 1);
  }

  void spaced_send(const Scenario& sc) override {
    shmbus::Topic topic = shmbus::Topic::open(a_->name);
    shmbus::Publisher pub = topic.publisher(publisher_options(wait_));
    handshake();
    std::uint64_t next = now_ns();
    for (std::uint64_t i = 0; i < sc.count; ++i) {
      next += sc.gap_ns;
      sleep_until_ns(next);
      shmbus::Loan loan = pub.loan(sc.size);
      if (!loan)
        fail("shmbus: loan for message %" PRIu64 ": %s", i, shmbus::to_string(loan.status()));
      put_seq(loan.data().data(), i);
      put_time(loan.data().data(), now_ns());
      if (const auto st = loan.publish(); st != shmbus::Status::Ok)
        fail("shmbus: publish of message %" PRIu64 ": %s", i, shmbus::to_string(st));
      heartbeat(i);
    }
  }
  void spaced_recv(const Scenario& sc) override {
    shmbus::Topic topic = shmbus::Topic::open(a_->name);
    auto sub = topic.subscriber(subscriber_options(wait_));
    SpacedRecorder rec(sc.count);
    handshake();
    for (std::uint64_t i = 0; i < sc.count; ++i) {
      shmbus::Sample s;
      if (const auto st = sub->receive(s, kTimeout); st != shmbus::Status::Ok)
        fail("shmbus: receive of message %" PRIu64 ": %s", i, shmbus::to_string(st));
      rec.add(s.data().data());
      if (get_seq(s.data().data()) != i) fail("shmbus: expected message %" PRIu64, i);
      heartbeat(i);
    }
    rec.finish();
  }

 private:
  ShmbusWait wait_;
  std::unique_ptr<ScopedTopic> a_, b_;
};

// ---- output -------------------------------------------------------------------

// Markdown goes to stdout and into compare.md.
std::string g_md;
void out(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void out(const char* fmt, ...) {
  char buf[4096];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  std::fputs(buf, stdout);
  g_md += buf;
}

std::string ns_label(double ns) {
  if (ns >= 10'000'000) return strprintf("%.0f ms", ns / 1e6);
  if (ns >= 1'000'000) return strprintf("%.2f ms", ns / 1e6);
  if (ns >= 10'000) return strprintf("%.1f us", ns / 1e3);
  if (ns >= 1'000) return strprintf("%.2f us", ns / 1e3);
  return strprintf("%.0f ns", ns);
}

// ---- options ------------------------------------------------------------------

struct Options {
  std::vector<std::size_t> sizes{64, 1024, 4096, 64 * 1024, 1024 * 1024};
  std::vector<std::string> only;  // system keys; empty: all
  bool latency = true, throughput = true, blocking = true;
  bool quick = false;
  bool plot = true;
  std::uint64_t repeat = 3;
  std::uint64_t slots = 0;     // throughput queue depth; 0: by size (1024, at most 64 MiB)
  std::uint64_t messages = 0;  // throughput messages per row; 0: by system and size
  std::string out_dir = SHMBUS_BENCH_RESULTS_DIR;
  std::string python = "/usr/bin/python3";
  int cpu_a = -1, cpu_b = -1;
  std::string command;
};

void usage(FILE* f) {
  std::fprintf(f,
               "Usage: shmbus-compare [options]\n"
               "\n"
               "shmbus against the IPC systems packaged here (Unix-domain socket, pipe,\n"
               "Boost.Interprocess message_queue, ZeroMQ, iceoryx, moodycamel ConcurrentQueue)\n"
               "and the machine's limits (bare cache line, bare memcpy, raw futex, bare SPSC\n"
               "ring), in one run: latency, throughput and the sleeping (blocking) modes.\n"
               "Writes compare.md, compare.json and compare.png (via bench/plot.py) to the\n"
               "output directory; prints the Markdown on stdout and progress on stderr.\n"
               "\n"
               "Options:\n"
               "  --sizes LIST      payload sizes (default 64,1KiB,4KiB,64KiB,1MiB; >= 16 B)\n"
               "  --systems LIST    only these systems (keys as in the JSON, e.g.\n"
               "                    shmbus-busy-spin,iceoryx,uds); the limits always run\n"
               "  --sections LIST   latency,throughput,blocking (default all)\n"
               "  --repeat N        runs of each throughput row, round-robin (default 3)\n"
               "  --slots N         throughput queue depth for every system (default 1024,\n"
               "                    fewer above 64 KiB: at most 64 MiB of slots)\n"
               "  --messages N      throughput messages per row for every system (default 5 M\n"
               "                    for shared memory and threads, 250 k for the others, at\n"
               "                    most 1 GiB per row)\n"
               "  --quick           a short smoke run (fewer rounds and messages, 1 run per row)\n"
               "  --cores A,B       the two CPUs (default 0,1)\n"
               "  --out-dir DIR     where the results go (default %s)\n"
               "  --python PATH     the interpreter for plot.py (default /usr/bin/python3:\n"
               "                    Debian's, which has python3-matplotlib)\n"
               "  --no-plot         do not draw compare.png\n"
               "  -h, --help        this text\n"
               "\n"
               "Every wait times out (%d s); a failed row is reported and the others run.\n"
               "Exit status: 0 all rows ran, 1 some row failed, 2 bad usage.\n",
               SHMBUS_BENCH_RESULTS_DIR, kTimeoutSeconds);
}

Options parse_args(int argc, char** argv) {
  Options o;
  bool repeat_set = false;
  o.command = "shmbus-compare";
  for (int i = 1; i < argc; ++i)
    o.command += std::string(" ") + argv[i];
  for (int i = 1; i < argc; ++i) {
    Arg arg(argc, argv, i);
    const std::string& a = arg.name;
    const auto value = [&] { return arg.value(); };
    if (a == "-h" || a == "--help") {
      usage(stdout);
      std::exit(0);
    } else if (a == "--sizes") {
      o.sizes.clear();
      for (const auto& t : split(value(), ',')) {
        const std::size_t s = parse_size(t);
        if (s < 16) usage_error("sizes must be at least 16 B (sequence number and send time)");
        o.sizes.push_back(s);
      }
    } else if (a == "--systems") {
      o.only = split(value(), ',');
    } else if (a == "--sections") {
      parse_sections(
          value(),
          {{"latency", &o.latency}, {"throughput", &o.throughput}, {"blocking", &o.blocking}});
    } else if (a == "--repeat") {
      o.repeat = parse_count(a, value());
      repeat_set = true;
    } else if (a == "--slots") {
      o.slots = parse_count(a, value());
      if (o.slots < 2 || (o.slots & (o.slots - 1)) != 0)
        usage_error("--slots wants a power of two >= 2");
    } else if (a == "--messages") {
      o.messages = parse_count(a, value());
    } else if (a == "--quick") {
      o.quick = true;
    } else if (a == "--cores") {
      const auto parts = split(value(), ',');
      if (parts.size() != 2) usage_error("--cores wants two CPU numbers, e.g. 0,1");
      o.cpu_a = parse_cpu(parts[0]);
      o.cpu_b = parse_cpu(parts[1]);
    } else if (a == "--out-dir") {
      o.out_dir = value();
    } else if (a == "--python") {
      o.python = value();
    } else if (a == "--no-plot") {
      o.plot = false;
    } else {
      usage_error("unknown option '" + a + "'");
    }
  }
  if (o.quick && !repeat_set) o.repeat = 1;
  return o;
}

// ---- results ------------------------------------------------------------------

struct LatRow {
  std::string section;  // "latency", "blocking-split", "blocking-same-core", "spaced"
  std::string key, system;
  std::size_t size = 0;
  bool baseline = false, blocking = false;
  bool ok = false;
  std::string error;
  std::string state;  // near/far of its latency block (the block's bare line)
  LatencyStats st;
  std::vector<std::array<double, 3>> hist;  // [lower ns, upper ns, count], non-empty buckets
};

struct TputRow {
  std::string key, system;
  std::size_t size = 0;
  bool baseline = false;
  bool ok = true;
  std::string error;
  std::uint64_t count = 0;
  std::vector<double> seconds;  // one per run
  System* sys = nullptr;

  double rate(double s) const { return s > 0 ? static_cast<double>(count) / s : 0; }
  double median_rate() const {
    if (seconds.empty()) return 0;
    std::vector<double> r;
    for (double s : seconds)
      r.push_back(rate(s));
    std::sort(r.begin(), r.end());
    return r[(r.size() - 1) / 2];
  }
  double min_rate() const {
    double m = 0;
    for (double s : seconds)
      m = (m == 0 || rate(s) < m) ? rate(s) : m;
    return m;
  }
  double max_rate() const {
    double m = 0;
    for (double s : seconds)
      m = std::max(m, rate(s));
    return m;
  }
};

struct Target {
  std::string what;
  std::string rule;  // e.g. "<= 1.5x"
  bool available = false;
  double value = 0;
  bool pass = false;
  std::string detail;
};

// ---- the benchmark ------------------------------------------------------------

constexpr std::uint64_t kSpacedGapNs = 500'000;  // 10x shmbus's default spin budget (50 us)
constexpr std::size_t kLarge = 256 * 1024;

class Compare {
 public:
  explicit Compare(Options o) : opt_(std::move(o)) {}
  int run();

 private:
  void build_systems();
  bool wanted(const std::string& key) const {
    if (opt_.only.empty()) return true;
    return std::find(opt_.only.begin(), opt_.only.end(), key) != opt_.only.end();
  }
  System* sys(const std::string& key) const {
    for (const auto& c : comparators_)
      if (c.system && c.key == key) return c.system.get();
    return nullptr;
  }

  Scenario scenario(Mode mode, std::size_t size) {
    Scenario sc;
    sc.mode = mode;
    sc.size = size;
    sc.run_id = next_run_id_++;
    sc.cpu_a = opt_.cpu_a;
    sc.cpu_b = opt_.cpu_b;
    return sc;
  }
  LatencyPlan latency_plan(const System& s, std::size_t size) const;
  std::uint64_t slots_for(std::size_t size) const;
  std::uint64_t count_for(const System& s, std::size_t size) const;

  LatRow run_latency(System& s, const std::string& section, std::size_t size, bool same_core);
  LatRow run_spaced(System& s, std::size_t size);
  bool run_throughput_once(TputRow& row);

  void latency_section();
  void target_block();
  void throughput_section();
  void blocking_section();
  void print_latency_block(std::size_t size);
  void print_throughput_block(std::size_t size);
  void print_summary();
  void evaluate_targets();
  void write_json(const MachineInfo& m);
  void draw_plot();

  const LatRow* find_lat(const std::string& section, const std::string& key,
                         std::size_t size) const {
    for (const auto& r : lat_)
      if (r.section == section && r.key == key && r.size == size && r.ok) return &r;
    return nullptr;
  }
  const TputRow* find_tput(const std::string& key, std::size_t size) const {
    for (const auto& r : tput_)
      if (r.key == key && r.size == size && r.ok && !r.seconds.empty()) return &r;
    return nullptr;
  }

  Options opt_;
  std::vector<Comparator> comparators_;
  std::vector<LatRow> lat_;
  std::vector<TputRow> tput_;
  std::vector<Target> targets_;
  std::vector<std::string> failures_;
  std::map<std::string, std::string> packages_;
  double bracket_start_ = 0, bracket_end_ = 0;
  double load_start_ = -1, load_end_ = -1;
  std::string work_dir_;
  bool roudi_up_ = false;
  int next_run_id_ = 0;
  double total_s_ = 0;
};

void Compare::build_systems() {
  const auto add = [&](std::unique_ptr<System> s) {
    Comparator c;
    c.key = s->key;
    c.name = s->name;
    c.system = std::move(s);
    comparators_.push_back(std::move(c));
  };
  [[maybe_unused]] const auto skip = [&](const std::string& key, const std::string& name,
                                         const std::string& why) {
    Comparator c;
    c.key = key;
    c.name = name;
    c.skipped = why;
    comparators_.push_back(std::move(c));
  };
  // The limits always run: every ratio needs them.
  add(std::make_unique<BareLine>());
  add(std::make_unique<BareMemcpy>());
  add(std::make_unique<BareRingSystem>(1));
  add(std::make_unique<BareRingSystem>(16));
  add(std::make_unique<RawFutex>());
  std::vector<std::unique_ptr<System>> rest;
  rest.push_back(std::make_unique<Shmbus>("shmbus-busy-spin",
                                          "shmbus loan/receive, busy-spin (zero copy)",
                                          ShmbusWait{shmbus::WaitStrategy::BusySpin, -1}));
  rest.push_back(std::make_unique<Shmbus>(
      "shmbus-spin-futex", "shmbus loan/receive, spin-futex (default: spin 50 us, then sleep)",
      ShmbusWait{shmbus::WaitStrategy::SpinFutex, -1}));
  rest.push_back(std::make_unique<Shmbus>("shmbus-sleep",
                                          "shmbus loan/receive, spin-futex with spin = 0",
                                          ShmbusWait{shmbus::WaitStrategy::SpinFutex, 0}));
#ifdef SHMBUS_CMP_ICEORYX
  rest.push_back(make_iceoryx());
#else
  skip("iceoryx", "iceoryx 2.0",
       "not built: iceoryx_posh not found by CMake (apt-get install iceoryx libiceoryx-posh-dev "
       "libiceoryx-hoofs-dev)");
#endif
#ifdef SHMBUS_CMP_MOODYCAMEL
  rest.push_back(make_moodycamel());
#else
  skip("moodycamel", "moodycamel ConcurrentQueue",
       "not built: concurrentqueue/concurrentqueue.h not found (apt-get install "
       "libconcurrentqueue-dev)");
#endif
#ifdef SHMBUS_CMP_BOOST
  rest.push_back(make_boost_mq(true));
  rest.push_back(make_boost_mq(false));
#else
  skip("boost-mq", "Boost.Interprocess message_queue",
       "not built: Boost headers not found (apt-get install libboost-dev)");
#endif
  rest.push_back(make_uds());
  rest.push_back(make_pipe());
#ifdef SHMBUS_CMP_ZMQ
  rest.push_back(make_zmq());
#else
  skip("zmq", "ZeroMQ PAIR over ipc://",
       "not built: pkg-config libzmq not found (apt-get install libzmq3-dev)");
#endif
  for (auto& s : rest) {
    if (wanted(s->key)) add(std::move(s));
  }
}

LatencyPlan Compare::latency_plan(const System& s, std::size_t size) const {
  LatencyPlan p;
  const std::uint64_t q = opt_.quick ? 10 : 1;
  if (s.slow) {
    p.iters = 20'000 / q;
    p.warmup = 1'000 / q;
    p.max_ns = opt_.quick ? 300'000'000 : 1'500'000'000;
  } else {
    p.iters = (size >= kLarge ? 20'000 : 100'000) / q;
    p.warmup = (size >= kLarge ? 2'000 : 10'000) / q;
    p.max_ns = opt_.quick ? 300'000'000 : 1'000'000'000;
  }
  p.warmup_max_ns = opt_.quick ? 50'000'000 : 300'000'000;
  return p;
}

// Queue depth for throughput: 1024 slots, fewer for large messages (at most
// 64 MiB of ring), at least 64. Every system with a depth gets the same.
std::uint64_t Compare::slots_for(std::size_t size) const {
  if (opt_.slots) return opt_.slots;
  const std::uint64_t stride = (size + 63) / 64 * 64;
  std::uint64_t slots = 1024;
  while (slots > 64 && slots * (stride + 64) > (64ULL << 20))
    slots /= 2;
  return slots;
}

// Every row moves at most 1 GiB; small messages are capped by count, higher
// for the shared-memory and in-process systems that move tens of millions a
// second than for the ones that make system calls (or, iceoryx, run at about
// a million a second), so that every row takes about a second here. From
// 4 KiB up, every system sends the same count.
std::uint64_t Compare::count_for(const System& s, std::size_t size) const {
  const bool fast = s.baseline || s.key.rfind("shmbus", 0) == 0 || s.in_process;
  std::uint64_t count = opt_.messages ? opt_.messages : fast ? 5'000'000 : 250'000;
  std::uint64_t bytes = 1ULL << 30;
  if (opt_.messages) {
    bytes = ~0ULL;
  } else if (opt_.quick) {
    count /= 10;
    bytes /= 10;
  }
  return std::max<std::uint64_t>(std::min<std::uint64_t>(count, bytes / size), 100);
}

LatRow Compare::run_latency(System& s, const std::string& section, std::size_t size,
                            bool same_core) {
  LatRow row;
  row.section = section;
  row.key = s.key;
  row.system = s.name;
  row.size = size;
  row.baseline = s.baseline;
  row.blocking = s.blocking;
  Scenario sc = scenario(Mode::Latency, size);
  sc.plan = latency_plan(s, size);
  if (same_core) sc.cpu_b = sc.cpu_a;
  const bool old_yield = g_yield_spin;
  g_yield_spin = same_core;
  PairResult r;
  try {
    s.prepare(sc);
    r = run_pair(
        strprintf("%s: %s %s%s", section.c_str(), s.key.c_str(), size_label(size).c_str(),
                  same_core ? " (one core)" : ""),
        [&] { s.ping(sc); }, [&] { s.pong(sc); }, sc.cpu_a, sc.cpu_b);
  } catch (const std::exception& e) {
    r = PairResult{false, std::string("set-up: ") + e.what()};
  }
  s.cleanup();
  g_yield_spin = old_yield;
  row.ok = r.ok;
  row.error = r.error;
  if (r.ok) {
    row.st = g_ctl->lat;
    const LogHistogram& h = g_ctl->hist;
    for (std::size_t i = 0; i < LogHistogram::kBuckets; ++i)
      if (h.counts[i])
        row.hist.push_back(
            {static_cast<double>(LogHistogram::lower(i)) * h.scale,
             static_cast<double>(LogHistogram::lower(i) + LogHistogram::width(i)) * h.scale,
             static_cast<double>(h.counts[i])});
  } else {
    failures_.push_back(strprintf("%s %s %s: %s", section.c_str(), s.key.c_str(),
                                  size_label(size).c_str(), r.error.c_str()));
  }
  return row;
}

LatRow Compare::run_spaced(System& s, std::size_t size) {
  LatRow row;
  row.section = "spaced";
  row.key = s.key;
  row.system = s.name;
  row.size = size;
  row.baseline = s.baseline;
  row.blocking = s.blocking;
  Scenario sc = scenario(Mode::Spaced, size);
  sc.count = opt_.quick ? 300 : 2000;
  sc.gap_ns = kSpacedGapNs;
  PairResult r;
  try {
    s.prepare(sc);
    r = run_pair(
        strprintf("spaced: %s %s, %s apart", s.key.c_str(), size_label(size).c_str(),
                  ns_label(static_cast<double>(kSpacedGapNs)).c_str()),
        [&] { s.spaced_send(sc); }, [&] { s.spaced_recv(sc); }, sc.cpu_a, sc.cpu_b);
  } catch (const std::exception& e) {
    r = PairResult{false, std::string("set-up: ") + e.what()};
  }
  s.cleanup();
  row.ok = r.ok;
  row.error = r.error;
  if (r.ok)
    row.st = g_ctl->lat;
  else
    failures_.push_back("spaced " + s.key + ": " + r.error);
  return row;
}

bool Compare::run_throughput_once(TputRow& row) {
  System& s = *row.sys;
  Scenario sc = scenario(Mode::Throughput, row.size);
  sc.count = row.count;
  sc.slots = slots_for(row.size);
  PairResult r;
  try {
    s.prepare(sc);
    r = run_pair(
        strprintf("throughput: %s %s", s.key.c_str(), size_label(row.size).c_str()),
        [&] { s.produce(sc); }, [&] { s.consume(sc); }, sc.cpu_a, sc.cpu_b);
  } catch (const std::exception& e) {
    r = PairResult{false, std::string("set-up: ") + e.what()};
  }
  s.cleanup();
  if (r.ok && g_ctl->received != row.count) {
    r.ok = false;
    r.error = strprintf("the consumer reported %" PRIu64 " messages, %" PRIu64 " were sent",
                        g_ctl->received, row.count);
  }
  if (!r.ok) {
    row.ok = false;
    row.error = r.error;
    failures_.push_back(strprintf("throughput %s %s: %s", s.key.c_str(),
                                  size_label(row.size).c_str(), r.error.c_str()));
    return false;
  }
  row.seconds.push_back(static_cast<double>(g_ctl->t_end_ns - g_ctl->t_start_ns) / 1e9);
  return true;
}

// ---- sections -----------------------------------------------------------------

const char* kLatencyOrder[] = {"bare-line",
                               "bare-memcpy",
                               "shmbus-busy-spin",
                               "shmbus-spin-futex",
                               "iceoryx",
                               "moodycamel",
                               "boost-mq-poll",
                               "boost-mq",
                               "uds",
                               "pipe",
                               "zmq"};
const char* kThroughputOrder[] = {"bare-ring",
                                  "bare-ring-16",
                                  "shmbus-busy-spin",
                                  "shmbus-spin-futex",
                                  "iceoryx",
                                  "moodycamel",
                                  "boost-mq-poll",
                                  "boost-mq",
                                  "uds",
                                  "pipe",
                                  "zmq"};

void Compare::latency_section() {
  out("\n## Latency: ping-pong, one way = round trip / 2, cores split\n\n");
  out("Two processes pinned to CPUs %d and %d (moodycamel: two threads of one process).\n"
      "Zero-copy systems (shmbus, iceoryx) loan a buffer and write the 8-byte sequence\n"
      "number in place; the others send the whole payload. The receiver checks the\n"
      "sequence number of every message. Rows capped at 1 s (blocking: 1.5 s) of round\n"
      "trips after a warm-up; `rounds` says how many were measured. The bare line runs\n"
      "first in every block: it tags the block near or far (BASELINES.md, lesson 1).\n",
      opt_.cpu_a, opt_.cpu_b);
  for (const std::size_t size : opt_.sizes) {
    std::string state;
    for (const char* key : kLatencyOrder) {
      System* s = sys(key);
      if (!s || !s->has_latency()) continue;
      lat_.push_back(run_latency(*s, "latency", size, false));
      if (lat_.back().key == "bare-line" && lat_.back().ok)
        state = state_of(2 * lat_.back().st.p50);
      lat_.back().state = state;
    }
    print_latency_block(size);
  }
}

// The latency targets compare shmbus at 64 B with the bare line, with iceoryx
// and with itself at 1 MiB. The size blocks above are a minute apart, and the
// host may have moved the vCPUs (near/far) in between, so the rows the targets
// use are measured again here, back to back, between two bare-line checks.
void Compare::target_block() {
  struct Item {
    const char* key;
    std::size_t size;
  };
  const Item items[] = {{"bare-line", 64}, {"shmbus-busy-spin", 64}, {"shmbus-busy-spin", 1 << 20},
                        {"iceoryx", 64},   {"iceoryx", 1 << 20},     {"bare-line", 64}};
  std::vector<LatRow> rows;
  for (const Item& it : items) {
    System* s = sys(it.key);
    if (!s) continue;
    rows.push_back(run_latency(*s, "targets", it.size, false));
  }
  // The block's state: that of both bare-line checks, or "mixed".
  std::string state;
  for (const auto& r : rows) {
    if (r.key != "bare-line" || !r.ok) continue;
    const std::string st = state_of(2 * r.st.p50);
    state = state.empty() ? st : (state == st ? state : "mixed");
  }
  out("\n### Target block: the rows of the latency targets, back to back (%s)\n\n",
      state.empty() ? "state unknown" : state.c_str());
  out("| system | size | rounds | p50 | p99 | p99.9 | max "
      "|\n|---|---:|---:|---:|---:|---:|---:|\n");
  bool first_line = true;
  for (auto& r : rows) {
    r.state = state;
    std::string name = r.baseline ? "*" + r.system + "*" : r.system;
    if (r.key == "bare-line") {
      name += first_line ? " (before)" : " (after)";
      first_line = false;
    }
    if (!r.ok)
      out("| %s | %s | FAILED: %s | | | | |\n", name.c_str(), size_label(r.size).c_str(),
          r.error.c_str());
    else
      out("| %s | %s | %s | %s | %s | %s | %s |\n", name.c_str(), size_label(r.size).c_str(),
          group_digits(static_cast<double>(r.st.rounds)).c_str(), ns_label(r.st.p50).c_str(),
          ns_label(r.st.p99).c_str(), ns_label(r.st.p999).c_str(), ns_label(r.st.max).c_str());
    lat_.push_back(std::move(r));
  }
  std::fflush(stdout);
}

void Compare::throughput_section() {
  out("\n## Throughput: one producer process, one consumer process, cores split\n\n");
  out("A fixed count of messages per row: at most 1 GiB, and at most 5 M messages for\n"
      "shmbus, the limits and moodycamel, 250 k for the others. The producer writes the\n"
      "whole payload of every message (zero-copy systems into their loan); the consumer\n"
      "checks its sequence number and reads one word per cache line of the payload.\n"
      "Queue depth where a system has one: 1024 messages (fewer above 64 KiB: at most\n"
      "64 MiB). Median of %" PRIu64 " runs, round-robin; range in the detailed tables.\n",
      opt_.repeat);
  for (const std::size_t size : opt_.sizes) {
    const std::size_t first = tput_.size();
    for (const char* key : kThroughputOrder) {
      System* s = sys(key);
      if (!s || !s->has_throughput()) continue;
      TputRow row;
      row.key = s->key;
      row.system = s->name;
      row.size = size;
      row.baseline = s->baseline;
      row.count = count_for(*s, size);
      row.sys = s;
      tput_.push_back(row);
    }
    const std::uint64_t block_start = now_ns();
    const std::uint64_t budget = opt_.quick ? 10'000'000'000ULL : 45'000'000'000ULL;
    for (std::uint64_t rep = 0; rep < opt_.repeat; ++rep) {
      if (rep > 0 && now_ns() - block_start > budget) {
        std::fprintf(stderr, "  (time budget: %s rows get %" PRIu64 " of %" PRIu64 " runs)\n",
                     size_label(size).c_str(), rep, opt_.repeat);
        break;
      }
      for (std::size_t k = first; k < tput_.size(); ++k)
        if (tput_[k].ok) run_throughput_once(tput_[k]);
    }
    print_throughput_block(size);
  }
}

void Compare::blocking_section() {
  const std::size_t size = opt_.sizes.empty() ? 64 : std::min<std::size_t>(64, opt_.sizes.front());
  const std::size_t bsize = std::max<std::size_t>(size, 16);
  out("\n## Blocking: the receiver sleeps (%s)\n\n", size_label(bsize).c_str());
  out("A sleeping receiver costs a wake-up through the host (~30 us one way here), so a\n"
      "blocking mode is judged against a raw futex ping-pong in the same placement\n"
      "(BASELINES.md, lesson 2). shmbus with spin = 0 sleeps at once on every wait.\n"
      "Spaced: side A sends one message every %s (10x shmbus's default spin budget,\n"
      "so its default mode spins, gives up and sleeps before each message); one way =\n"
      "arrival time - send time (CLOCK_MONOTONIC, read on both cores).\n",
      ns_label(static_cast<double>(kSpacedGapNs)).c_str());
  const char* pingpong[] = {"raw-futex", "shmbus-sleep", "uds", "pipe", "boost-mq"};
  const char* same_core[] = {"raw-futex", "shmbus-sleep", "shmbus-spin-futex",
                             "uds",       "pipe",         "boost-mq"};
  const char* spaced[] = {"raw-futex", "shmbus-spin-futex", "shmbus-sleep", "uds",
                          "pipe",      "boost-mq"};
  for (const char* key : pingpong)
    if (System* s = sys(key)) lat_.push_back(run_latency(*s, "blocking-split", bsize, false));
  for (const char* key : same_core)
    if (System* s = sys(key)) lat_.push_back(run_latency(*s, "blocking-same-core", bsize, true));
  for (const char* key : spaced)
    if (System* s = sys(key); s && s->has_spaced()) lat_.push_back(run_spaced(*s, bsize));

  const LatRow* fx_split = find_lat("blocking-split", "raw-futex", bsize);
  const LatRow* fx_same = find_lat("blocking-same-core", "raw-futex", bsize);
  const LatRow* fx_spaced = find_lat("spaced", "raw-futex", bsize);
  struct Block {
    const char* section;
    const char* title;
    const LatRow* futex;
  };
  const Block blocks[] = {
      {"blocking-split", "Ping-pong, cores split", fx_split},
      {"blocking-same-core", "Ping-pong, both processes on one core", fx_same},
      {"spaced", "One way, messages spaced, cores split", fx_spaced},
  };
  for (const Block& b : blocks) {
    out("\n### %s\n\n", b.title);
    out("| system | rounds | p50 | p99 | p99.9 | max | p50 vs raw futex |\n");
    out("|---|---:|---:|---:|---:|---:|---:|\n");
    for (const auto& r : lat_) {
      if (r.section != b.section) continue;
      const std::string name = r.baseline ? "*" + r.system + "*" : r.system;
      if (!r.ok) {
        out("| %s | FAILED: %s | | | | | |\n", name.c_str(), r.error.c_str());
        continue;
      }
      out("| %s | %s | %s | %s | %s | %s | %s |\n", name.c_str(),
          group_digits(static_cast<double>(r.st.rounds)).c_str(), ns_label(r.st.p50).c_str(),
          ns_label(r.st.p99).c_str(), ns_label(r.st.p999).c_str(), ns_label(r.st.max).c_str(),
          b.futex ? ratio_label(r.st.p50 / b.futex->st.p50).c_str() : "-");
    }
  }
  std::fflush(stdout);
}

void Compare::print_latency_block(std::size_t size) {
  const LatRow* line = find_lat("latency", "bare-line", size);
  const LatRow* copy = find_lat("latency", "bare-memcpy", size);
  out("\n### %s%s\n\n", size_label(size).c_str(),
      line ? strprintf(" (bare line %s round trip: %s)", ns_label(2 * line->st.p50).c_str(),
                       state_of(2 * line->st.p50))
                 .c_str()
           : "");
  out("| system | rounds | p50 | p99 | p99.9 | max | p50 vs bare line | p50 vs bare memcpy |\n");
  out("|---|---:|---:|---:|---:|---:|---:|---:|\n");
  for (const auto& r : lat_) {
    if (r.section != "latency" || r.size != size) continue;
    const std::string name = r.baseline ? "*" + r.system + "*" : r.system;
    if (!r.ok) {
      out("| %s | FAILED: %s | | | | | | |\n", name.c_str(), r.error.c_str());
      continue;
    }
    out("| %s | %s | %s | %s | %s | %s | %s | %s |\n", name.c_str(),
        group_digits(static_cast<double>(r.st.rounds)).c_str(), ns_label(r.st.p50).c_str(),
        ns_label(r.st.p99).c_str(), ns_label(r.st.p999).c_str(), ns_label(r.st.max).c_str(),
        line ? ratio_label(r.st.p50 / line->st.p50).c_str() : "-",
        copy ? ratio_label(r.st.p50 / copy->st.p50).c_str() : "-");
  }
  std::fflush(stdout);
}

void Compare::print_throughput_block(std::size_t size) {
  const TputRow* ring = find_tput("bare-ring", size);
  out("\n### %s\n\n", size_label(size).c_str());
  out("| system | messages | messages/s (median) | range (runs) | bytes/s | vs bare ring |\n");
  out("|---|---:|---:|---:|---:|---:|\n");
  for (const auto& r : tput_) {
    if (r.size != size) continue;
    const std::string name = r.baseline ? "*" + r.system + "*" : r.system;
    if (!r.ok || r.seconds.empty()) {
      out("| %s | FAILED: %s | | | | |\n", name.c_str(), r.error.c_str());
      continue;
    }
    out("| %s | %s | %s | %s - %s (%zu) | %s | %s |\n", name.c_str(),
        group_digits(static_cast<double>(r.count)).c_str(),
        rate_label(r.median_rate(), "msg/s").c_str(), rate_label(r.min_rate(), "").c_str(),
        rate_label(r.max_rate(), "").c_str(), r.seconds.size(),
        rate_label(r.median_rate() * static_cast<double>(r.size), "B/s").c_str(),
        ring ? ratio_label(r.median_rate() / ring->median_rate()).c_str() : "-");
  }
  std::fflush(stdout);
}

// The one table to read first: p50 / p99 one way for every system and size,
// then messages/s.
void Compare::print_summary() {
  out("\n## Summary\n\n");
  if (opt_.latency) {
    out("One-way latency, p50 / p99 (ping-pong, cores split):\n\n| system |");
    for (std::size_t s : opt_.sizes)
      out(" %s |", size_label(s).c_str());
    out("\n|---|");
    for (std::size_t i = 0; i < opt_.sizes.size(); ++i)
      out("---:|");
    out("\n");
    for (const char* key : kLatencyOrder) {
      const System* s = sys(key);
      if (!s || !s->has_latency()) continue;
      out("| %s |", s->baseline ? ("*" + s->name + "*").c_str() : s->name.c_str());
      for (std::size_t size : opt_.sizes) {
        const LatRow* r = find_lat("latency", key, size);
        if (r)
          out(" %s / %s |", ns_label(r->st.p50).c_str(), ns_label(r->st.p99).c_str());
        else
          out(" failed |");
      }
      out("\n");
    }
  }
  if (opt_.throughput) {
    out("\nThroughput, messages/s (median; one producer process, one consumer process):\n\n| "
        "system |");
    for (std::size_t s : opt_.sizes)
      out(" %s |", size_label(s).c_str());
    out("\n|---|");
    for (std::size_t i = 0; i < opt_.sizes.size(); ++i)
      out("---:|");
    out("\n");
    for (const char* key : kThroughputOrder) {
      const System* s = sys(key);
      if (!s || !s->has_throughput()) continue;
      out("| %s |", s->baseline ? ("*" + s->name + "*").c_str() : s->name.c_str());
      for (std::size_t size : opt_.sizes) {
        const TputRow* r = find_tput(key, size);
        if (r)
          out(" %s (%s) |", rate_label(r->median_rate(), "").c_str(),
              rate_label(r->median_rate() * static_cast<double>(size), "B/s").c_str());
        else
          out(" failed |");
      }
      out("\n");
    }
  }
}

void Compare::evaluate_targets() {
  // From the target block when it ran (its first bare line is the reference),
  // else from the size blocks.
  const auto lat = [&](const char* key, std::size_t size) {
    const LatRow* r = find_lat("targets", key, size);
    return r ? r : find_lat("latency", key, size);
  };
  // Two latency figures compare only when their blocks were in the same
  // near/far state; otherwise the line says so, with the ratio of the two
  // figures each taken relative to its own block's bare line.
  const auto states = [&](const LatRow* a, const LatRow* b) -> std::string {
    if (!a || !b) return "";
    if (a->state == "mixed" || b->state == "mixed")
      return " [the host moved the vCPUs during the block (bare line before and after differ): "
             "re-run]";
    if (a->state == b->state) return "";
    const LatRow* la = lat("bare-line", a->size);
    const LatRow* lb = lat("bare-line", b->size);
    std::string s = " [NOT COMPARABLE: blocks in different states, " + a->state + " vs " + b->state;
    if (la && lb)
      s += "; relative to each block's bare line: " +
           ratio_label((a->st.p50 / la->st.p50) / (b->st.p50 / lb->st.p50));
    return s + "]";
  };
  const auto add = [&](std::string what, std::string rule, std::optional<double> v, bool le,
                       double bound, std::string detail) {
    Target t;
    t.what = std::move(what);
    t.rule = std::move(rule);
    t.detail = std::move(detail);
    if (v) {
      t.available = true;
      t.value = *v;
      t.pass = le ? *v <= bound : *v >= bound;
    }
    targets_.push_back(t);
  };
  // A latency ratio (p50 of a over p50 of b) and a throughput ratio (median
  // rates); `le`: the ratio must be at most `bound`, else at least.
  const auto lat_target = [&](std::string what, std::string rule, const LatRow* a, const LatRow* b,
                              bool le, double bound, bool with_states) {
    add(std::move(what), std::move(rule),
        a && b ? std::optional<double>(a->st.p50 / b->st.p50) : std::nullopt, le, bound,
        a && b ? strprintf("%s vs %s", ns_label(a->st.p50).c_str(), ns_label(b->st.p50).c_str()) +
                     (with_states ? states(a, b) : "")
               : "not measured");
  };
  const auto tput_target = [&](std::string what, std::string rule, const TputRow* a,
                               const TputRow* b, bool le, double bound) {
    add(std::move(what), std::move(rule),
        a && b ? std::optional<double>(a->median_rate() / b->median_rate()) : std::nullopt, le,
        bound,
        a && b
            ? rate_label(a->median_rate(), "msg/s") + " vs " + rate_label(b->median_rate(), "msg/s")
            : "not measured");
  };
  const std::size_t kSmall = 64, kBig = 1 << 20;
  // The bare line of the same block is the reference: always the same state.
  lat_target("64 B latency p50: shmbus busy-spin vs bare line", "<= 1.5x",
             lat("shmbus-busy-spin", kSmall), lat("bare-line", kSmall), true, 1.5, false);
  lat_target("64 B latency p50: shmbus busy-spin vs iceoryx", "<= 1/10x",
             lat("shmbus-busy-spin", kSmall), lat("iceoryx", kSmall), true, 0.1, true);
  lat_target("1 MiB latency p50: shmbus busy-spin vs its own 64 B", "<= 2x",
             lat("shmbus-busy-spin", kBig), lat("shmbus-busy-spin", kSmall), true, 2.0, true);
  lat_target("1 MiB latency p50: shmbus busy-spin vs iceoryx 1 MiB", "<= 1/10x",
             lat("shmbus-busy-spin", kBig), lat("iceoryx", kBig), true, 0.1, true);
  tput_target("64 B throughput: shmbus busy-spin vs bare SPSC ring (index per message)", ">= 0.5x",
              find_tput("shmbus-busy-spin", kSmall), find_tput("bare-ring", kSmall), false, 0.5);
  tput_target("64 B throughput: shmbus busy-spin vs iceoryx", ">= 5x",
              find_tput("shmbus-busy-spin", kSmall), find_tput("iceoryx", kSmall), false, 5.0);
  lat_target(
      "wake-up p50 (receiver asleep): shmbus spin-futex, spin 0 vs UDS blocking ping-pong, cores "
      "split",
      "<= 1x", find_lat("blocking-split", "shmbus-sleep", kSmall),
      find_lat("blocking-split", "uds", kSmall), true, 1.0, false);
  tput_target(
      "64 B streaming: shmbus busy-spin vs spin-futex throughput (spin-futex may be at most 2x "
      "slower)",
      "<= 2x", find_tput("shmbus-busy-spin", kSmall), find_tput("shmbus-spin-futex", kSmall), true,
      2.0);

  out("\n## Targets (issue 4)\n\n");
  for (const auto& t : targets_) {
    if (!t.available) {
      out("- n/a  %s (target %s): %s\n", t.what.c_str(), t.rule.c_str(), t.detail.c_str());
      continue;
    }
    const std::string v = t.value < 0.5 ? strprintf("%.3fx (1/%.1f)", t.value, 1 / t.value)
                                        : strprintf("%.2fx", t.value);
    out("- %s %s = %s (target %s): %s\n", t.pass ? "PASS" : "MISS", t.what.c_str(), v.c_str(),
        t.rule.c_str(), t.detail.c_str());
  }
  // Context for the wake-up target: the other placements.
  const LatRow* same_a = find_lat("blocking-same-core", "shmbus-sleep", kSmall);
  const LatRow* same_b = find_lat("blocking-same-core", "uds", kSmall);
  const LatRow* sp_a = find_lat("spaced", "shmbus-spin-futex", kSmall);
  const LatRow* sp_b = find_lat("spaced", "uds", kSmall);
  if (same_a && same_b)
    out("- (context) same core: shmbus spin 0 %s vs UDS %s = %s\n",
        ns_label(same_a->st.p50).c_str(), ns_label(same_b->st.p50).c_str(),
        ratio_label(same_a->st.p50 / same_b->st.p50).c_str());
  if (sp_a && sp_b)
    out("- (context) spaced one way: shmbus default spin-futex %s vs UDS %s = %s\n",
        ns_label(sp_a->st.p50).c_str(), ns_label(sp_b->st.p50).c_str(),
        ratio_label(sp_a->st.p50 / sp_b->st.p50).c_str());
}

// ---- JSON and plot ------------------------------------------------------------

std::string run_command(const std::string& cmd) {
  std::string outp;
  if (FILE* p = ::popen(cmd.c_str(), "r")) {
    char buf[256];
    while (std::fgets(buf, sizeof buf, p))
      outp += buf;
    ::pclose(p);
  }
  while (!outp.empty() && (outp.back() == '\n' || outp.back() == ' '))
    outp.pop_back();
  return outp;
}

void Compare::write_json(const MachineInfo& m) {
  std::string j = "{\n";
  j += strprintf("  \"tool\": \"shmbus-compare\",\n  \"shmbus_version\": \"%s\",\n",
                 SHMBUS_BENCH_VERSION);
  j += "  \"command\": \"" + json_escape(opt_.command) + "\",\n";
  j += "  \"machine\": {";
  j += "\"nproc\": " + std::to_string(m.nproc);
  j += ", \"cpu_model\": \"" + json_escape(m.cpu_model) + "\"";
  j += ", \"hypervisor\": " + std::string(m.hypervisor ? "true" : "false");
  j += ", \"kernel\": \"" + json_escape(m.kernel) + "\"";
  j += ", \"compiler\": \"" + json_escape(m.compiler) + "\"";
  j += ", \"build\": \"" + json_escape(SHMBUS_BENCH_BUILD) + "\"";
  j += ", \"date\": \"" + json_escape(m.date) + "\"},\n";
  j += "  \"packages\": {";
  bool first = true;
  for (const auto& [k, v] : packages_) {
    j +=
        (first ? "" : ", ") + std::string("\"") + json_escape(k) + "\": \"" + json_escape(v) + "\"";
    first = false;
  }
  j += "},\n";
  j += strprintf("  \"placement\": {\"cpu_a\": %d, \"cpu_b\": %d},\n", opt_.cpu_a, opt_.cpu_b);
  const auto state = [](double rt) { return rt > 0 ? state_of(rt) : "unknown"; };
  j += strprintf(
      "  \"bracket\": {\"start_round_trip_ns\": %.1f, \"end_round_trip_ns\": %.1f, "
      "\"start\": \"%s\", \"end\": \"%s\"},\n",
      bracket_start_, bracket_end_, state(bracket_start_), state(bracket_end_));
  j += strprintf("  \"load_average_1min\": {\"start\": %.2f, \"end\": %.2f},\n", load_start_,
                 load_end_);
  j += strprintf("  \"total_seconds\": %.1f,\n", total_s_);
  j += "  \"sizes\": [";
  for (std::size_t i = 0; i < opt_.sizes.size(); ++i)
    j += (i ? ", " : "") + std::to_string(opt_.sizes[i]);
  j += "],\n  \"latency_blocks\": [";
  first = true;
  for (std::size_t size : opt_.sizes) {
    const LatRow* line = find_lat("latency", "bare-line", size);
    if (!line) continue;
    j += strprintf("%s{\"size\": %zu, \"bare_line_round_trip_ns\": %.1f, \"state\": \"%s\"}",
                   first ? "" : ", ", size, 2 * line->st.p50, state_of(2 * line->st.p50));
    first = false;
  }
  j += "],\n  \"systems\": [";
  first = true;
  for (const auto& c : comparators_) {
    j += first ? "\n    " : ",\n    ";
    first = false;
    j += "{\"key\": \"" + json_escape(c.key) + "\", \"name\": \"" + json_escape(c.name) + "\"";
    if (c.system)
      j += strprintf(", \"baseline\": %s, \"blocking\": %s, \"in_process\": %s",
                     c.system->baseline ? "true" : "false", c.system->blocking ? "true" : "false",
                     c.system->in_process ? "true" : "false");
    j += ", \"skipped\": " +
         (c.skipped.empty() ? std::string("null") : "\"" + json_escape(c.skipped) + "\"");
    j += "}";
  }
  j += "\n  ],\n  \"latency\": [";
  for (std::size_t i = 0; i < lat_.size(); ++i) {
    const auto& r = lat_[i];
    j += i ? ",\n    " : "\n    ";
    j += "{\"section\": \"" + r.section + "\", \"key\": \"" + r.key + "\", \"system\": \"" +
         json_escape(r.system) + "\"";
    j += ", \"size\": " + std::to_string(r.size);
    j += ", \"baseline\": " + std::string(r.baseline ? "true" : "false");
    j += ", \"blocking\": " + std::string(r.blocking ? "true" : "false");
    j += ", \"ok\": " + std::string(r.ok ? "true" : "false");
    if (!r.state.empty()) j += ", \"state\": \"" + r.state + "\"";
    if (r.ok) {
      j += strprintf(", \"rounds\": %" PRIu64
                     ", \"one_way_ns\": {\"min\": %.1f, \"p50\": %.1f, "
                     "\"p99\": %.1f, \"p99_9\": %.1f, \"max\": %.1f}",
                     r.st.rounds, r.st.min, r.st.p50, r.st.p99, r.st.p999, r.st.max);
      j += ", \"histogram_one_way_ns\": [";
      for (std::size_t k = 0; k < r.hist.size(); ++k)
        j += strprintf("%s[%.1f, %.1f, %.0f]", k ? ", " : "", r.hist[k][0], r.hist[k][1],
                       r.hist[k][2]);
      j += "]";
    } else {
      j += ", \"error\": \"" + json_escape(r.error) + "\"";
    }
    j += "}";
  }
  j += "\n  ],\n  \"throughput\": [";
  for (std::size_t i = 0; i < tput_.size(); ++i) {
    const auto& r = tput_[i];
    j += i ? ",\n    " : "\n    ";
    j += "{\"key\": \"" + r.key + "\", \"system\": \"" + json_escape(r.system) + "\"";
    j += ", \"size\": " + std::to_string(r.size);
    j += ", \"baseline\": " + std::string(r.baseline ? "true" : "false");
    const bool ok = r.ok && !r.seconds.empty();
    j += ", \"ok\": " + std::string(ok ? "true" : "false");
    j += ", \"messages\": " + std::to_string(r.count);
    if (ok) {
      j += strprintf(", \"messages_per_s\": %.1f, \"bytes_per_s\": %.1f, \"runs_seconds\": [",
                     r.median_rate(), r.median_rate() * static_cast<double>(r.size));
      for (std::size_t k = 0; k < r.seconds.size(); ++k)
        j += strprintf("%s%.6f", k ? ", " : "", r.seconds[k]);
      j += "]";
    } else {
      j += ", \"error\": \"" + json_escape(r.error) + "\"";
    }
    j += "}";
  }
  j += "\n  ],\n  \"targets\": [";
  for (std::size_t i = 0; i < targets_.size(); ++i) {
    const auto& t = targets_[i];
    j += i ? ",\n    " : "\n    ";
    j += "{\"what\": \"" + json_escape(t.what) + "\", \"target\": \"" + json_escape(t.rule) + "\"";
    if (t.available)
      j += strprintf(", \"ratio\": %.4f, \"result\": \"%s\"", t.value, t.pass ? "PASS" : "MISS");
    else
      j += ", \"ratio\": null, \"result\": \"n/a\"";
    j += ", \"detail\": \"" + json_escape(t.detail) + "\"}";
  }
  j += "\n  ],\n  \"failures\": [";
  for (std::size_t i = 0; i < failures_.size(); ++i)
    j += (i ? ", \"" : "\"") + json_escape(failures_[i]) + "\"";
  j += "]\n}\n";
  const std::string path = opt_.out_dir + "/compare.json";
  std::ofstream f(path);
  f << j;
  f.close();
  if (!f) {
    std::fprintf(stderr, "shmbus-compare: cannot write %s: %s\n", path.c_str(),
                 std::strerror(errno));
    failures_.push_back("cannot write " + path);
  }
}

// Runs plot.py with Debian's python (matplotlib), at most 120 s.
void Compare::draw_plot() {
  const std::string json = opt_.out_dir + "/compare.json";
  const std::string png = opt_.out_dir + "/compare.png";
  const pid_t pid = ::fork();
  if (pid < 0) {
    failures_.push_back(strprintf("plot: fork: %s", std::strerror(errno)));
    return;
  }
  if (pid == 0) {
    ::dup2(2, 1);  // the plot's chatter goes to stderr, not into the Markdown
    ::execl(opt_.python.c_str(), opt_.python.c_str(), SHMBUS_BENCH_PLOT_SCRIPT, json.c_str(),
            png.c_str(), static_cast<char*>(nullptr));
    std::fprintf(stderr, "shmbus-compare: exec %s: %s\n", opt_.python.c_str(),
                 std::strerror(errno));
    ::_exit(127);
  }
  const std::uint64_t deadline = now_ns() + 120'000'000'000ULL;
  int st = 0;
  for (;;) {
    if (::waitpid(pid, &st, WNOHANG) == pid) break;
    if (now_ns() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &st, 0);
      failures_.push_back("plot: plot.py did not finish within 120 s");
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
    out("\nPlot: %s\n", png.c_str());
  } else {
    out("\nPlot: not drawn (%s %s failed; is python3-matplotlib installed?)\n", opt_.python.c_str(),
        SHMBUS_BENCH_PLOT_SCRIPT);
    failures_.push_back("plot: plot.py failed");
  }
}

double bracket_round_trip(int cpu_a, int cpu_b) {
  LatencyPlan plan;
  plan.warmup = 2000;
  plan.duration_ns = 20'000'000;
  const auto r = run_pair(
      "bracket: bare line, 20 ms", [&] { bare_pinger(plan, 0, nullptr, nullptr); },
      [&] { bare_ponger(0, nullptr, nullptr); }, cpu_a, cpu_b);
  return r.ok ? 2 * g_ctl->lat.p50 : 0;
}

int Compare::run() {
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  if (::sched_getaffinity(0, sizeof allowed, &allowed) != 0)
    fail("sched_getaffinity: %s", std::strerror(errno));
  if (opt_.cpu_a < 0) {
    std::vector<int> cpus;
    for (int c = 0; c < CPU_SETSIZE; ++c)
      if (CPU_ISSET(c, &allowed)) cpus.push_back(c);
    if (cpus.size() < 2) usage_error("shmbus-compare needs two CPUs (one for each side)");
    opt_.cpu_a = cpus[0];
    opt_.cpu_b = cpus[1];
  }
  if (opt_.cpu_a == opt_.cpu_b) usage_error("--cores wants two different CPUs");
  for (int c : {opt_.cpu_a, opt_.cpu_b})
    if (!CPU_ISSET(c, &allowed))
      usage_error("CPU " + std::to_string(c) + " is not available to this process");
  g_read_payload = true;  // every throughput consumer reads the payload
  ::mkdir(opt_.out_dir.c_str(), 0755);
  char tmpl[] = "/tmp/shmbus-compare-XXXXXX";
  if (!::mkdtemp(tmpl)) fail("mkdtemp: %s", std::strerror(errno));
  work_dir_ = tmpl;
  std::snprintf(g_scratch_dir, sizeof g_scratch_dir, "%s", work_dir_.c_str());
  std::snprintf(g_scratch_files[0], sizeof g_scratch_files[0], "%s/roudi.toml", work_dir_.c_str());
  std::snprintf(g_scratch_files[1], sizeof g_scratch_files[1], "%s/roudi.log", work_dir_.c_str());

  build_systems();
  for (const char* pkg : {"libboost-dev", "libzmq3-dev", "iceoryx", "libiceoryx-posh-dev",
                          "libconcurrentqueue-dev", "python3-matplotlib"}) {
    const std::string v =
        run_command(std::string("dpkg-query -W -f='${Version}' ") + pkg + " 2>/dev/null");
    packages_[pkg] = v.empty() ? "not installed" : v;
  }
#ifdef SHMBUS_CMP_ZMQ
  packages_["libzmq (runtime)"] = zmq_version_string();
#endif
#ifdef SHMBUS_CMP_BOOST
  packages_["Boost (headers)"] = boost_version_string();
#endif
#ifdef SHMBUS_CMP_ICEORYX
  packages_["iceoryx (headers)"] = iceoryx_version();
#endif

  const MachineInfo m = machine_info();
  out("# shmbus-compare\n\n");
  out("| | |\n|---|---|\n");
  out("| machine | %s (%s)%s, %ld online CPUs |\n", m.cpu_model.c_str(), m.cpu_family.c_str(),
      m.hypervisor ? ", virtual machine" : "", m.nproc);
  out("| kernel | %s |\n", m.kernel.c_str());
  out("| compiler | %s, %s |\n", m.compiler.c_str(), SHMBUS_BENCH_BUILD);
  out("| shmbus | %s |\n", SHMBUS_BENCH_VERSION);
  std::string pk;
  for (const auto& [k, v] : packages_)
    pk += (pk.empty() ? "" : ", ") + k + " " + v;
  out("| packages | %s |\n", pk.c_str());
  out("| placement | side A on CPU %d, side B on CPU %d |\n", opt_.cpu_a, opt_.cpu_b);
  out("| command | `%s` |\n", opt_.command.c_str());
  out("| date | %s |\n", m.date.c_str());
  for (const auto& c : comparators_)
    if (!c.skipped.empty())
      out("\nSkipped: %s (%s): %s\n", c.name.c_str(), c.key.c_str(), c.skipped.c_str());
  std::fflush(stdout);

  const std::uint64_t t0 = now_ns();
  load_start_ = load_average();
  bracket_start_ = bracket_round_trip(opt_.cpu_a, opt_.cpu_b);

#ifdef SHMBUS_CMP_ICEORYX
  if (sys("iceoryx") && (opt_.latency || opt_.throughput)) {
    std::string err;
    std::snprintf(g_daemon_pid_file, sizeof g_daemon_pid_file, "%s/.roudi.pid",
                  opt_.out_dir.c_str());
    std::fprintf(stderr, "  starting iox-roudi\n");
    std::vector<std::size_t> pools = opt_.sizes;
    pools.push_back(64);  // the target block's sizes
    pools.push_back(1 << 20);
    roudi_up_ = iceoryx_start_roudi(SHMBUS_IOX_ROUDI, work_dir_, pools, err);
    if (roudi_up_) {
      std::ofstream(g_daemon_pid_file) << static_cast<int>(g_daemon_pid) << "\n";
    } else {
      out("\nSkipped: iceoryx: RouDi did not start: %s\n", err.c_str());
      failures_.push_back("iceoryx: RouDi did not start: " + err);
      for (auto& c : comparators_)
        if (c.key == "iceoryx") {
          c.system.reset();
          c.skipped = "RouDi did not start: " + err;
        }
    }
  }
#endif

  if (opt_.latency) {
    latency_section();
    target_block();
  }
  if (opt_.throughput) throughput_section();
#ifdef SHMBUS_CMP_ICEORYX
  if (roudi_up_) {
    std::fprintf(stderr, "  stopping iox-roudi\n");
    iceoryx_stop_roudi();
  }
#endif
  if (opt_.blocking) blocking_section();

  bracket_end_ = bracket_round_trip(opt_.cpu_a, opt_.cpu_b);
  load_end_ = load_average();
  total_s_ = static_cast<double>(now_ns() - t0) / 1e9;

  print_summary();
  evaluate_targets();

  out("\n## Run state\n\n");
  out("Bare-line round trip at start %s (%s), at end %s (%s). Load average (1 min) at\n"
      "start %.2f, at end %.2f%s. Total %.0f s.\n",
      ns_label(bracket_start_).c_str(), bracket_start_ > 0 ? state_of(bracket_start_) : "failed",
      ns_label(bracket_end_).c_str(), bracket_end_ > 0 ? state_of(bracket_end_) : "failed",
      load_start_, load_end_,
      std::max(load_start_, load_end_) > 0.5 ? " (other processes competed for the two cores)" : "",
      total_s_);
  if (!failures_.empty()) {
    out("\n## Failures (%zu)\n\n", failures_.size());
    for (const auto& f : failures_)
      out("- %s\n", f.c_str());
  }

  write_json(m);
  if (opt_.plot) draw_plot();
  {
    const std::string path = opt_.out_dir + "/compare.md";
    std::ofstream f(path);
    f << g_md;
    if (!f) std::fprintf(stderr, "shmbus-compare: cannot write %s\n", path.c_str());
  }
  std::fflush(stdout);
  ::unlink((work_dir_ + "/roudi.toml").c_str());
  ::unlink((work_dir_ + "/roudi.log").c_str());
  ::rmdir(work_dir_.c_str());
  return failures_.empty() ? 0 : 1;
}

}  // namespace
}  // namespace shmbus_bench

int main(int argc, char** argv) {
  using namespace shmbus_bench;
  g_tool = "shmbus-compare";
  Options opt = parse_args(argc, argv);
  g_ctl = static_cast<Control*>(map_shared(sizeof(Control)));
  new (g_ctl) Control{};
  struct sigaction sa {};
  sa.sa_handler = on_interrupt;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
  ::sigaction(SIGHUP, &sa, nullptr);
  int rc = 1;
  try {
    Compare c(std::move(opt));
    rc = c.run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "shmbus-compare: %s\n", e.what());
  }
  stop_daemon_from_signal();  // never leave RouDi behind
  return rc;
}
