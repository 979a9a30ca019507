// shmbus-ipc-bench: cross-process latency and throughput of shmbus, measured
// beside the physical limits of the same machine in the same run.
//
// Every figure comes from two real processes (fork), pinned to separate cores
// unless --same-core. Latency is a ping-pong: one steady_clock read per round
// trip, warm-up excluded, one way = round trip / 2, percentiles (never means).
// Throughput is one producer process and one consumer process streaming a fixed
// count of messages, each row repeated round-robin (median and range reported:
// an SPSC stream is bimodal, see "msgs per consumer fetch"). Every message
// carries a sequence number that the receiver checks; a mismatch, a lost
// message or a hang (no answer within 10 s) fails the scenario with a message,
// the other scenarios still run, and the run exits with status 1.
//
// Baselines, in the same run (ratios taken across runs are not comparable):
//   bare line    two processes ping-ponging one cache line (the limit)
//   bare memcpy  the same, plus a memcpy of the payload into shared memory by
//                the sender and a read of it in place by the receiver
//   raw futex    futex wait/wake ping-pong (the floor of any blocking design)
//   bare ring    an SPSC ring in shared memory, index published per message
//                (and, as an upper bound, once per 16 messages)
// and a ~20 ms bare-line "bracket" at the start and end that tags the run
// "near" (< 200 ns round trip) or "far": the host moves the two vCPUs, and
// every figure moves with it, so compare only runs in the same state.

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "bench_common.hpp"

#ifndef SHMBUS_BENCH_VERSION
#define SHMBUS_BENCH_VERSION "unknown"
#endif
#ifndef SHMBUS_BENCH_BUILD
#define SHMBUS_BENCH_BUILD "unknown"
#endif

namespace {

using namespace shmbus_bench;

// ---- options ------------------------------------------------------------------

struct Options {
  std::vector<std::size_t> sizes{64, 4096, 1u << 20};
  std::uint64_t iters = 100'000;
  std::uint64_t warmup = 10'000;
  std::uint64_t count = 10'000'000;
  std::uint64_t repeat = 3;
  bool same_core = false;
  bool read_payload = false;
  bool latency = true;
  bool throughput = true;
  bool ratio = false;
  std::uint64_t pairs = 15;
  std::string json;
  int cpu_a = -1, cpu_b = -1;
};

constexpr std::size_t kLargeSize = 256 * 1024;     // fewer round trips from here on
constexpr std::uint64_t kByteBudget = 2ULL << 30;  // throughput bytes per scenario
constexpr std::uint64_t kRingBytes = 64ULL << 20;  // throughput ring size cap
// Repetitions after the first round of a size block run only while the block
// has taken less than this: a loaded machine keeps the run well under 2 minutes.
constexpr std::uint64_t kRepeatBudgetNs = 20'000'000'000ULL;

void usage(FILE* f) {
  std::fprintf(f,
               "Usage: shmbus-ipc-bench [options]\n"
               "\n"
               "Cross-process latency (ping-pong) and throughput of shmbus, beside the\n"
               "physical limits measured in the same run: a bare cache line, a bare memcpy\n"
               "through shared memory, a raw futex ping-pong and a bare SPSC ring. Two real\n"
               "processes (fork), pinned to two cores. Prints Markdown tables.\n"
               "\n"
               "Options:\n"
               "  --sizes LIST     payload sizes, e.g. 64,4KiB,1MiB (default); suffixes\n"
               "                   B, K/KiB, M/MiB; at least 8 bytes (the sequence number)\n"
               "  --iters N        measured round trips per latency row (default 100000;\n"
               "                   sizes >= 256 KiB and the raw futex row use fewer)\n"
               "  --warmup N       round trips before measuring (default 10000; scaled likewise)\n"
               "  --count N        throughput messages of 64 B or less (default 10000000);\n"
               "                   larger sizes send at most 2 GiB per row\n"
               "  --repeat N       runs of each throughput row, round-robin; the median is\n"
               "                   reported with the range (default 3: the rate is bimodal);\n"
               "                   rounds after the first stop once a size block took 20 s\n"
               "  --read-payload   throughput consumers read one word per cache line of every\n"
               "                   message and check it (default: the sequence number only)\n"
               "  --sections LIST  latency,throughput,ratio (default latency,throughput);\n"
               "                   ratio alternates short bare-line and shmbus busy-spin\n"
               "                   ping-pongs and reports the ratio of each adjacent pair\n"
               "  --pairs N        bare line / shmbus pairs of the ratio section (default 15)\n"
               "  --cores A,B      the two CPUs (default 0,1, else the first two allowed)\n"
               "  --same-core      put both processes on CPU A (spinners yield the core;\n"
               "                   busy-spin rows are skipped: they would burn whole time slices)\n"
               "  --quick          a short smoke run: --iters 10000 --warmup 1000 --count 1000000\n"
               "                   --repeat 1\n"
               "  --json FILE      also write the figures as JSON to FILE\n"
               "  -h, --help       this text\n"
               "\n"
               "Every wait times out after %d s: the scenario then fails with a message, the\n"
               "other scenarios still run, and the exit status is 1. Exit status 2: bad usage.\n",
               kTimeoutSeconds);
}

Options parse_args(int argc, char** argv) {
  Options o;
  bool iters_set = false, warm_set = false, count_set = false, repeat_set = false, quick = false;
  for (int i = 1; i < argc; ++i) {
    Arg arg(argc, argv, i);
    const std::string& a = arg.name;
    const auto value = [&] { return arg.value(); };
    if (a == "-h" || a == "--help") {
      usage(stdout);
      std::exit(0);
    } else if (a == "--sizes") {
      o.sizes.clear();
      for (const auto& t : split(value(), ','))
        o.sizes.push_back(parse_size(t));
    } else if (a == "--iters") {
      o.iters = parse_count(a, value());
      iters_set = true;
    } else if (a == "--warmup") {
      const std::string v = value();
      o.warmup = v == "0" ? 0 : parse_count(a, v);
      warm_set = true;
    } else if (a == "--count") {
      o.count = parse_count(a, value());
      count_set = true;
    } else if (a == "--repeat") {
      o.repeat = parse_count(a, value());
      repeat_set = true;
    } else if (a == "--pairs") {
      o.pairs = parse_count(a, value());
    } else if (a == "--same-core") {
      o.same_core = true;
    } else if (a == "--read-payload") {
      o.read_payload = true;
    } else if (a == "--quick") {
      quick = true;
    } else if (a == "--json") {
      o.json = value();
    } else if (a == "--cores") {
      const auto parts = split(value(), ',');
      if (parts.size() != 2) usage_error("--cores wants two CPU numbers, e.g. 0,1");
      o.cpu_a = parse_cpu(parts[0]);
      o.cpu_b = parse_cpu(parts[1]);
    } else if (a == "--sections") {
      parse_sections(value(),
                     {{"latency", &o.latency}, {"throughput", &o.throughput}, {"ratio", &o.ratio}});
    } else {
      usage_error("unknown option '" + a + "'");
    }
  }
  if (quick) {
    if (!iters_set) o.iters = 10'000;
    if (!warm_set) o.warmup = 1'000;
    if (!count_set) o.count = 1'000'000;
    if (!repeat_set) o.repeat = 1;
  }
  return o;
}

// ---- results and report -------------------------------------------------------

struct LatRow {
  std::string system;  // e.g. "shmbus loan/publish, busy-spin"
  std::string key;     // short stable id for JSON, e.g. "shmbus-busy-spin"
  std::size_t size = 0;
  bool baseline = false;
  bool ok = false;
  std::string error;
  LatencyStats st;
};

struct TputRun {
  double seconds = 0;
  std::uint64_t fetches = 0;  // 0: not known for this consumer
};

struct TputRow {
  std::string system, key;
  std::size_t size = 0;
  bool baseline = false;
  bool ok = true;  // false once a repetition failed
  std::string error;
  std::uint64_t count = 0;
  std::vector<TputRun> runs;
  std::function<PairResult()> run;  // one repetition

  [[nodiscard]] double rate(const TputRun& r) const {
    return r.seconds > 0 ? static_cast<double>(count) / r.seconds : 0;
  }
  // The median repetition by rate (the lower middle one for an even count).
  [[nodiscard]] const TputRun& median() const {
    std::vector<const TputRun*> v;
    for (const auto& r : runs)
      v.push_back(&r);
    std::sort(v.begin(), v.end(), [&](auto* a, auto* b) { return rate(*a) < rate(*b); });
    return *v[(v.size() - 1) / 2];
  }
  [[nodiscard]] double msgs_per_s() const { return runs.empty() ? 0 : rate(median()); }
  [[nodiscard]] double bytes_per_s() const { return msgs_per_s() * static_cast<double>(size); }
  [[nodiscard]] double min_rate() const {
    double m = 0;
    for (const auto& r : runs)
      m = (m == 0 || rate(r) < m) ? rate(r) : m;
    return m;
  }
  [[nodiscard]] double max_rate() const {
    double m = 0;
    for (const auto& r : runs)
      m = std::max(m, rate(r));
    return m;
  }
};

struct Bracket {
  bool ok = false;
  double rt_ns = 0;  // bare-line round trip, p50
  std::string error;
};

class Bench {
 public:
  explicit Bench(Options o) : opt_(std::move(o)) {}
  int run();

 private:
  Bracket bracket();
  void latency_section();
  void ratio_section();
  void throughput_section();
  // One bare-line ping-pong, or one shmbus zero-copy ping-pong of `size` bytes
  // over two fresh topics; the statistics are in g_ctl->lat when ok.
  PairResult run_bare_line(const LatencyPlan& plan, const std::string& what);
  PairResult run_shmbus_pingpong(std::size_t size, const LatencyPlan& plan,
                                 shmbus::WaitStrategy wait, const std::string& what);
  void print_latency_table(std::size_t size);
  void print_throughput_table(std::size_t size);
  void write_json(const MachineInfo& m);

  std::uint64_t iters_for(std::size_t size) const {
    return size >= kLargeSize ? std::max<std::uint64_t>(opt_.iters / 10, 100) : opt_.iters;
  }
  std::uint64_t warmup_for(std::size_t size) const {
    return size >= kLargeSize ? opt_.warmup / 10 : opt_.warmup;
  }
  std::uint64_t count_for(std::size_t size) const {
    return std::max<std::uint64_t>(std::min<std::uint64_t>(opt_.count, kByteBudget / size), 100);
  }
  int cpu_b() const { return opt_.same_core ? opt_.cpu_a : opt_.cpu_b; }
  const LatRow* find_lat(const std::string& key, std::size_t size) const {
    for (const auto& r : lat_)
      if (r.key == key && r.size == size && r.ok) return &r;
    return nullptr;
  }

  Options opt_;
  std::vector<LatRow> lat_;
  std::vector<TputRow> tput_;
  struct RatioPair {
    std::size_t size = 0;
    double line_p50 = 0, shmbus_p50 = 0;
  };
  std::vector<RatioPair> pairs_;
  Bracket start_, end_;
  double load_start_ = -1, load_end_ = -1;
  std::vector<std::string> failures_;
};

Bracket Bench::bracket() {
  // Always on two separate CPUs when there are two: it measures the host's
  // placement of the vCPUs, not the run's.
  LatencyPlan plan;
  plan.warmup = 2000;
  plan.duration_ns = 20'000'000;
  g_yield_spin = opt_.cpu_a == opt_.cpu_b;
  const auto r = run_pair(
      "bracket: bare line, 20 ms", [&] { bare_pinger(plan, 0, nullptr, nullptr); },
      [&] { bare_ponger(0, nullptr, nullptr); }, opt_.cpu_a, opt_.cpu_b);
  g_yield_spin = opt_.same_core;
  Bracket b;
  b.ok = r.ok;
  b.error = r.error;
  if (r.ok)
    b.rt_ns = 2 * g_ctl->lat.p50;
  else
    failures_.push_back("bracket: " + r.error);
  return b;
}

void Bench::latency_section() {
  const int ca = opt_.cpu_a, cb = cpu_b();
  const auto record = [&](LatRow row, const PairResult& r) {
    row.ok = r.ok;
    row.error = r.error;
    if (r.ok)
      row.st = g_ctl->lat;
    else
      failures_.push_back(row.system + " " + size_label(row.size) + ": " + r.error);
    lat_.push_back(row);
  };

  // The raw futex row is size-independent and run once.
  {
    // ~60 us a round trip across cores here: fewer rounds keep the run short.
    LatencyPlan plan{std::min<std::uint64_t>(opt_.warmup, 1000),
                     std::min<std::uint64_t>(opt_.iters, 20'000), 0};
    LatRow row;
    row.system = "raw futex wait/wake";
    row.key = "raw-futex";
    row.baseline = true;
    record(row,
           run_pair(
               "latency: raw futex", [&] { futex_pinger(plan); }, [&] { futex_ponger(); }, ca, cb));
  }

  for (const std::size_t size : opt_.sizes) {
    const LatencyPlan plan{warmup_for(size), iters_for(size), 0};
    {
      // Re-measured for every size, right before the rows it is compared with:
      // the host can move the vCPUs (near/far) between blocks.
      const LatencyPlan line_plan{opt_.warmup, opt_.iters, 0};
      LatRow row;
      row.system = opt_.same_core ? "bare line (yield spin)" : "bare line (pause spin)";
      row.key = "bare-line";
      row.size = size;
      row.baseline = true;
      record(row, run_bare_line(line_plan, "latency: " + row.system + ", before the " +
                                               size_label(size) + " rows"));
    }
    {
      SharedBuffer ping(size), pong(size);
      LatRow row;
      row.system = "bare memcpy into shm + read in place";
      row.key = "bare-memcpy";
      row.size = size;
      row.baseline = true;
      record(row, run_pair(
                      "latency: bare memcpy " + size_label(size),
                      [&] { bare_pinger(plan, size, ping.data, pong.data); },
                      [&] { bare_ponger(size, ping.data, pong.data); }, ca, cb));
    }
    struct Mode {
      shmbus::WaitStrategy wait;
      const char* label;
      const char* key;
    };
    std::vector<Mode> modes;
    if (!opt_.same_core)
      modes.push_back({shmbus::WaitStrategy::BusySpin, "busy-spin", "shmbus-busy-spin"});
    modes.push_back({shmbus::WaitStrategy::SpinFutex, "spin-futex", "shmbus-spin-futex"});
    for (const Mode& m : modes) {
      LatRow row;
      row.system = std::string("shmbus zero-copy, ") + m.label;
      row.key = m.key;
      row.size = size;
      record(row, run_shmbus_pingpong(size, plan, m.wait,
                                      "latency: " + row.system + " " + size_label(size)));
    }
    print_latency_table(size);
  }
}

PairResult Bench::run_bare_line(const LatencyPlan& plan, const std::string& what) {
  return run_pair(
      what, [&] { bare_pinger(plan, 0, nullptr, nullptr); },
      [&] { bare_ponger(0, nullptr, nullptr); }, opt_.cpu_a, cpu_b());
}

PairResult Bench::run_shmbus_pingpong(std::size_t size, const LatencyPlan& plan,
                                      shmbus::WaitStrategy wait, const std::string& what) {
  shmbus::TopicOptions to;
  to.slot_count = 64;
  to.slot_size = static_cast<std::uint32_t>(size);
  to.policy = shmbus::Policy::Block;
  try {
    ScopedTopic ping("ping", to), pong("pong", to);
    return run_pair(
        what, [&] { shmbus_pinger(plan, size, ping.name, pong.name, {wait}); },
        [&] { shmbus_ponger(size, ping.name, pong.name, {wait}); }, opt_.cpu_a, cpu_b());
  } catch (const std::exception& e) {
    return PairResult{false, std::string("set-up: ") + e.what()};
  }
}

// The host moves the vCPUs, and shmbus's p50 itself steps by 5-10 ns from one
// process pair to the next, so a ratio of two rows measured seconds apart says
// little about a 1.5x target. This section alternates short runs of the two
// and takes the ratio of each adjacent pair; the order within a pair
// alternates too, so a drift during the section favours neither side.
void Bench::ratio_section() {
  if (opt_.same_core) {
    std::printf("\nSkipped: busy-spin ping-pong needs two CPUs (--same-core was given).\n");
    return;
  }
  for (const std::size_t size : opt_.sizes) {
    const LatencyPlan plan{warmup_for(size), iters_for(size), 0};
    std::printf("\n### Bare line vs shmbus zero-copy busy-spin, %s, %" PRIu64 " pairs\n\n",
                size_label(size).c_str(), opt_.pairs);
    std::printf("| pair | bare line p50 (ns) | shmbus p50 (ns) | ratio |\n|---:|---:|---:|---:|\n");
    std::vector<double> ratios, lines;
    for (std::uint64_t k = 0; k < opt_.pairs; ++k) {
      RatioPair p;
      p.size = size;
      std::string error;
      for (int half = 0; half < 2 && error.empty(); ++half) {
        const bool line_turn = (half == 0) == (k % 2 == 0);
        const std::string what =
            strprintf("ratio pair %" PRIu64 ": %s %s", k + 1,
                      line_turn ? "bare line" : "shmbus busy-spin", size_label(size).c_str());
        const PairResult r =
            line_turn ? run_bare_line(plan, what)
                      : run_shmbus_pingpong(size, plan, shmbus::WaitStrategy::BusySpin, what);
        if (!r.ok) {
          error = r.error;
          failures_.push_back(what + ": " + r.error);
        } else {
          (line_turn ? p.line_p50 : p.shmbus_p50) = g_ctl->lat.p50;
        }
      }
      if (!error.empty()) {
        std::printf("| %" PRIu64 " | FAILED: %s | | |\n", k + 1, error.c_str());
        continue;
      }
      pairs_.push_back(p);
      ratios.push_back(p.shmbus_p50 / p.line_p50);
      lines.push_back(p.line_p50);
      std::printf("| %" PRIu64 " | %s | %s | %s |\n", k + 1, group_digits(p.line_p50).c_str(),
                  group_digits(p.shmbus_p50).c_str(), ratio_label(ratios.back()).c_str());
      std::fflush(stdout);
    }
    if (ratios.empty()) continue;
    const auto within =
        std::count_if(ratios.begin(), ratios.end(), [](double r) { return r <= 1.5; });
    std::sort(ratios.begin(), ratios.end());
    std::sort(lines.begin(), lines.end());
    const auto at = [](const std::vector<double>& v, double q) {
      return v[static_cast<std::size_t>(q * static_cast<double>(v.size() - 1) + 0.5)];
    };
    std::printf(
        "\nshmbus / bare line, p50 of %s: median %s (quartiles %s and %s, range %s-%s); %zu of "
        "%zu pairs within 1.5x. Bare line p50 over the pairs: %s-%s ns (median %s).\n",
        size_label(size).c_str(), ratio_label(at(ratios, 0.5)).c_str(),
        ratio_label(at(ratios, 0.25)).c_str(), ratio_label(at(ratios, 0.75)).c_str(),
        ratio_label(ratios.front()).c_str(), ratio_label(ratios.back()).c_str(),
        static_cast<std::size_t>(within), ratios.size(), group_digits(lines.front()).c_str(),
        group_digits(lines.back()).c_str(), group_digits(at(lines, 0.5)).c_str());
  }
}

void Bench::throughput_section() {
  const int ca = opt_.cpu_a, cb = cpu_b();
  // On one core a busy spinner holds the core for its whole time slice.
  const auto wait =
      opt_.same_core ? shmbus::WaitStrategy::SpinYield : shmbus::WaitStrategy::BusySpin;
  const char* wait_label = opt_.same_core ? "spin-yield" : "busy-spin";
  for (const std::size_t size : opt_.sizes) {
    const std::uint64_t count = count_for(size);
    const std::size_t stride = (size + 63) / 64 * 64;
    std::uint64_t slots = 1024;
    while (slots > 64 && slots * (stride + 64) > kRingBytes)
      slots /= 2;
    const std::size_t first = tput_.size();

    for (const std::uint64_t every : {1, 16}) {
      TputRow row;
      row.system =
          every == 1
              ? strprintf("bare SPSC ring (%" PRIu64 " slots, index per message)", slots)
              : strprintf("bare SPSC ring (%" PRIu64 " slots, index every %" PRIu64 " messages)",
                          slots, every);
      row.key = every == 1 ? "bare-ring" : "bare-ring-every16";
      row.size = size;
      row.baseline = true;
      row.run = [=, label = row.system] {
        SharedBuffer mem(slots * stride);
        const BareRing ring{mem.data, stride, slots, every};
        return run_pair(
            "throughput: " + label + " " + size_label(size),
            [&] { ring_producer(ring, count, size); }, [&] { ring_consumer(ring, count, size); },
            ca, cb);
      };
      tput_.push_back(std::move(row));
    }
    struct Variant {
      bool single_producer;
      std::size_t batch;
      const char* label;
      const char* key;
    };
    const Variant variants[] = {
        {true, 1, "single_producer topic, receive()", "shmbus-single-producer"},
        {false, 1, "multi-producer topic, receive()", "shmbus-multi-producer"},
        {true, 16, "single_producer topic, receive_batch(16)", "shmbus-single-producer-batch16"},
    };
    for (const Variant& v : variants) {
      shmbus::TopicOptions to;
      to.slot_count = static_cast<std::uint32_t>(slots);
      to.slot_size = static_cast<std::uint32_t>(size);
      to.policy = shmbus::Policy::Block;
      to.single_producer = v.single_producer;
      TputRow row;
      row.system = strprintf("shmbus publish() copy, %s, %s", wait_label, v.label);
      row.key = v.key;
      row.size = size;
      row.run = [=]() -> PairResult {
        try {
          ScopedTopic topic("tput", to);  // a fresh topic for every repetition
          return run_pair(
              "throughput: shmbus " + std::string(v.label) + " " + size_label(size),
              [&] { shmbus_producer(topic.name, count, size, {wait}); },
              [&] { shmbus_consumer(topic.name, count, size, {wait}, v.batch); }, ca, cb);
        } catch (const std::exception& e) {
          return PairResult{false, std::string("set-up: ") + e.what()};
        }
      };
      tput_.push_back(std::move(row));
    }

    // Round-robin repetitions: every row sees the same drift of the machine.
    const std::uint64_t block_start = now_ns();
    for (std::uint64_t rep = 0; rep < opt_.repeat; ++rep) {
      if (rep > 0 && now_ns() - block_start > kRepeatBudgetNs) {
        std::fprintf(stderr, "  (time budget: %s rows get %" PRIu64 " of %" PRIu64 " runs)\n",
                     size_label(size).c_str(), rep, opt_.repeat);
        break;
      }
      for (std::size_t k = first; k < tput_.size(); ++k) {
        TputRow& row = tput_[k];
        row.count = count;
        if (!row.ok) continue;
        const PairResult r = row.run();
        if (r.ok && g_ctl->received != count) {
          row.ok = false;
          row.error = strprintf("consumer reported %" PRIu64 " messages, %" PRIu64 " sent",
                                g_ctl->received, count);
        } else if (!r.ok) {
          row.ok = false;
          row.error = r.error;
        } else {
          row.runs.push_back(
              {static_cast<double>(g_ctl->t_end_ns - g_ctl->t_start_ns) / 1e9, g_ctl->fetches});
        }
        if (!row.ok) failures_.push_back(row.system + " " + size_label(size) + ": " + row.error);
      }
    }
    print_throughput_table(size);
  }
}

void Bench::print_latency_table(std::size_t size) {
  const LatRow* line = find_lat("bare-line", size);
  const LatRow* copy = find_lat("bare-memcpy", size);
  std::printf(
      "\n### One-way latency, %s (ns; round trip / 2)%s\n\n", size_label(size).c_str(),
      line ? strprintf(", bare line of this block: %s", state_of(2 * line->st.p50)).c_str() : "");
  std::printf(
      "| system | rounds | p50 | p99 | p99.9 | max | p50 vs bare line | p50 vs bare memcpy |\n");
  std::printf("|---|---:|---:|---:|---:|---:|---:|---:|\n");
  std::vector<const LatRow*> rows;  // baselines first, the limit on top
  for (const char* key : {"bare-line", "bare-memcpy", "raw-futex"})
    for (const auto& r : lat_)
      if (r.key == key && (r.size == size || r.key == std::string("raw-futex"))) rows.push_back(&r);
  for (const auto& r : lat_)
    if (r.size == size && !r.baseline) rows.push_back(&r);
  for (const LatRow* r : rows) {
    std::string name =
        r->system + (r->size && r->key != "bare-line" ? " " + size_label(r->size) : "");
    if (r->baseline) name = "*" + name + "*";
    if (!r->ok) {
      std::printf("| %s | FAILED: %s | | | | | | |\n", name.c_str(), r->error.c_str());
      continue;
    }
    std::printf("| %s | %s | %s | %s | %s | %s | %s | %s |\n", name.c_str(),
                group_digits(static_cast<double>(r->st.rounds)).c_str(),
                group_digits(r->st.p50).c_str(), group_digits(r->st.p99).c_str(),
                group_digits(r->st.p999).c_str(), group_digits(r->st.max).c_str(),
                line ? ratio_label(r->st.p50 / line->st.p50).c_str() : "-",
                copy ? ratio_label(r->st.p50 / copy->st.p50).c_str() : "-");
  }
  std::printf("\n");
  for (const LatRow* r : rows) {
    if (r->baseline || !r->ok || !line) continue;
    std::printf("- %s %s p50 = %s bare line (%s ns)", r->system.c_str(), size_label(size).c_str(),
                ratio_label(r->st.p50 / line->st.p50).c_str(), group_digits(line->st.p50).c_str());
    if (copy)
      std::printf(", %s bare memcpy (%s ns)", ratio_label(r->st.p50 / copy->st.p50).c_str(),
                  group_digits(copy->st.p50).c_str());
    std::printf("; p99 = %s bare line p99", ratio_label(r->st.p99 / line->st.p99).c_str());
    // A blocking mode is judged against the raw futex in the same placement.
    if (const LatRow* fx = find_lat("raw-futex", 0); fx && r->key == "shmbus-spin-futex")
      std::printf("; p50 = %s raw futex (%s ns)", ratio_label(r->st.p50 / fx->st.p50).c_str(),
                  group_digits(fx->st.p50).c_str());
    std::printf("\n");
  }
  std::fflush(stdout);
}

void Bench::print_throughput_table(std::size_t size) {
  const TputRow* ring = nullptr;
  for (const auto& r : tput_)
    if (r.size == size && r.key == "bare-ring" && r.ok) ring = &r;
  std::printf("\n### Throughput, %s, one producer process, one consumer process\n\n",
              size_label(size).c_str());
  std::printf(
      "| system | messages | median messages/s | range (runs) | median bytes/s | msgs per "
      "consumer fetch | vs bare ring (index per message) |\n");
  std::printf("|---|---:|---:|---:|---:|---:|---:|\n");
  for (const auto& r : tput_) {
    if (r.size != size) continue;
    const std::string name = r.baseline ? "*" + r.system + "*" : r.system;
    if (!r.ok) {
      std::printf("| %s | FAILED: %s | | | | | |\n", name.c_str(), r.error.c_str());
      continue;
    }
    const TputRun& med = r.median();
    const std::string per_fetch =
        med.fetches
            ? strprintf("%.1f", static_cast<double>(r.count) / static_cast<double>(med.fetches))
            : std::string("-");
    std::printf("| %s | %s | %s | %s - %s (%zu) | %s | %s | %s |\n", name.c_str(),
                group_digits(static_cast<double>(r.count)).c_str(),
                rate_label(r.msgs_per_s(), "msg/s").c_str(), rate_label(r.min_rate(), "").c_str(),
                rate_label(r.max_rate(), "").c_str(), r.runs.size(),
                rate_label(r.bytes_per_s(), "B/s").c_str(), per_fetch.c_str(),
                ring ? ratio_label(r.msgs_per_s() / ring->msgs_per_s()).c_str() : "-");
  }
  std::printf("\n");
  if (ring)
    for (const auto& r : tput_)
      if (r.size == size && r.key != "bare-ring" && r.ok)
        std::printf("- %s %s = %s bare ring (%s)\n", r.system.c_str(), size_label(size).c_str(),
                    ratio_label(r.msgs_per_s() / ring->msgs_per_s()).c_str(),
                    rate_label(ring->msgs_per_s(), "msg/s").c_str());
  std::fflush(stdout);
}

void Bench::write_json(const MachineInfo& m) {
  std::string j = "{\n";
  j += strprintf("  \"tool\": \"shmbus-ipc-bench\",\n  \"shmbus_version\": \"%s\",\n",
                 SHMBUS_BENCH_VERSION);
  j += "  \"machine\": {";
  j += "\"nproc\": " + std::to_string(m.nproc);
  j += ", \"cpu_model\": \"" + json_escape(m.cpu_model) + "\"";
  j += ", \"cpu_family\": \"" + json_escape(m.cpu_family) + "\"";
  j += ", \"hypervisor\": " + std::string(m.hypervisor ? "true" : "false");
  j += ", \"kernel\": \"" + json_escape(m.kernel) + "\"";
  j += ", \"compiler\": \"" + json_escape(m.compiler) + "\"";
  j += ", \"build\": \"" + json_escape(SHMBUS_BENCH_BUILD) + "\"";
  j += ", \"date\": \"" + json_escape(m.date) + "\"},\n";
  j += strprintf("  \"placement\": {\"same_core\": %s, \"cpu_a\": %d, \"cpu_b\": %d},\n",
                 opt_.same_core ? "true" : "false", opt_.cpu_a, cpu_b());
  j += strprintf("  \"throughput_consumer_reads_payload\": %s,\n",
                 opt_.read_payload ? "true" : "false");
  const auto br = [&](const Bracket& b) {
    if (!b.ok) return std::string("null");
    return strprintf("{\"round_trip_ns\": %.1f, \"state\": \"%s\"}", b.rt_ns, state_of(b.rt_ns));
  };
  std::string state = "unknown";
  if (start_.ok && end_.ok)
    state = std::string(state_of(start_.rt_ns)) == state_of(end_.rt_ns) ? state_of(start_.rt_ns)
                                                                        : "mixed";
  j += "  \"bracket\": {\"start\": " + br(start_) + ", \"end\": " + br(end_) + ", \"state\": \"" +
       state + "\"},\n";
  j += strprintf("  \"load_average_1min\": {\"start\": %.2f, \"end\": %.2f},\n", load_start_,
                 load_end_);
  // The fields every row has, latency or throughput.
  const auto row_head = [](const auto& r) {
    return "{\"system\": \"" + json_escape(r.system) + "\", \"key\": \"" + r.key +
           "\", \"size\": " + std::to_string(r.size) +
           ", \"baseline\": " + (r.baseline ? "true" : "false") +
           ", \"ok\": " + (r.ok ? "true" : "false");
  };
  j += "  \"latency\": [";
  for (std::size_t i = 0; i < lat_.size(); ++i) {
    const auto& r = lat_[i];
    j += i ? ",\n    " : "\n    ";
    j += row_head(r);
    if (r.ok)
      j += strprintf(", \"rounds\": %" PRIu64
                     ", \"one_way_ns\": {\"min\": %.1f, \"p50\": %.1f, "
                     "\"p99\": %.1f, \"p99_9\": %.1f, \"max\": %.1f}",
                     r.st.rounds, r.st.min, r.st.p50, r.st.p99, r.st.p999, r.st.max);
    else
      j += ", \"error\": \"" + json_escape(r.error) + "\"";
    j += "}";
  }
  j += "\n  ],\n  \"throughput\": [";
  for (std::size_t i = 0; i < tput_.size(); ++i) {
    const auto& r = tput_[i];
    j += i ? ",\n    " : "\n    ";
    j += row_head(r);
    j += ", \"messages\": " + std::to_string(r.count);
    if (r.ok) {
      j += strprintf(", \"median_messages_per_s\": %.1f, \"median_bytes_per_s\": %.1f",
                     r.msgs_per_s(), r.bytes_per_s());
      j += ", \"runs\": [";
      for (std::size_t k = 0; k < r.runs.size(); ++k)
        j += strprintf(
            "%s{\"seconds\": %.6f, \"messages_per_s\": %.1f, \"consumer_fetches\": %" PRIu64 "}",
            k ? ", " : "", r.runs[k].seconds, r.rate(r.runs[k]), r.runs[k].fetches);
      j += "]";
    } else {
      j += ", \"error\": \"" + json_escape(r.error) + "\"";
    }
    j += "}";
  }
  j += "\n  ],\n  \"latency_ratio_pairs\": [";
  for (std::size_t i = 0; i < pairs_.size(); ++i)
    j += strprintf(
        "%s{\"size\": %zu, \"bare_line_p50_ns\": %.1f, \"shmbus_busy_spin_p50_ns\": %.1f}",
        i ? ",\n    " : "\n    ", pairs_[i].size, pairs_[i].line_p50, pairs_[i].shmbus_p50);
  j += "\n  ],\n  \"failures\": [";
  for (std::size_t i = 0; i < failures_.size(); ++i)
    j += (i ? ", \"" : "\"") + json_escape(failures_[i]) + "\"";
  j += "]\n}\n";
  std::ofstream f(opt_.json);
  f << j;
  f.close();
  if (!f) {
    std::fprintf(stderr, "shmbus-ipc-bench: cannot write %s: %s\n", opt_.json.c_str(),
                 std::strerror(errno));
    failures_.push_back("cannot write " + opt_.json);
  }
}

int Bench::run() {
  // CPUs: the requested pair, or 0 and 1 if allowed, else the first two allowed.
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  if (::sched_getaffinity(0, sizeof allowed, &allowed) != 0)
    fail("sched_getaffinity: %s", std::strerror(errno));
  std::vector<int> cpus;
  for (int c = 0; c < CPU_SETSIZE; ++c)
    if (CPU_ISSET(c, &allowed)) cpus.push_back(c);
  if (opt_.cpu_a < 0) {
    if (cpus.size() >= 2 && CPU_ISSET(0, &allowed) && CPU_ISSET(1, &allowed)) {
      opt_.cpu_a = 0;
      opt_.cpu_b = 1;
    } else if (cpus.size() >= 2) {
      opt_.cpu_a = cpus[0];
      opt_.cpu_b = cpus[1];
    } else {
      std::fprintf(stderr, "shmbus-ipc-bench: only one CPU is allowed; running on one core\n");
      opt_.cpu_a = opt_.cpu_b = cpus.empty() ? 0 : cpus[0];
      opt_.same_core = true;
    }
  } else {
    for (int c : {opt_.cpu_a, opt_.cpu_b})
      if (c >= CPU_SETSIZE || !CPU_ISSET(c, &allowed))
        usage_error("CPU " + std::to_string(c) + " is not available to this process");
  }
  g_yield_spin = opt_.same_core;
  g_read_payload = opt_.read_payload;

  const MachineInfo m = machine_info();
  std::printf("# shmbus-ipc-bench\n\n");
  std::printf("| machine | |\n|---|---|\n");
  std::printf("| CPU | %s (%s)%s |\n", m.cpu_model.c_str(), m.cpu_family.c_str(),
              m.hypervisor ? ", virtual machine" : "");
  std::printf("| online CPUs (nproc) | %ld |\n", m.nproc);
  std::printf("| kernel | %s |\n", m.kernel.c_str());
  std::printf("| compiler | %s, %s |\n", m.compiler.c_str(), SHMBUS_BENCH_BUILD);
  std::printf("| shmbus | %s |\n", SHMBUS_BENCH_VERSION);
  std::printf(
      "| placement | %s |\n",
      opt_.same_core
          ? strprintf("both processes on CPU %d (spinners yield)", opt_.cpu_a).c_str()
          : strprintf("side A on CPU %d, side B on CPU %d", opt_.cpu_a, opt_.cpu_b).c_str());
  std::printf("| date | %s |\n", m.date.c_str());
  std::printf("| plan | latency: %" PRIu64 " round trips after %" PRIu64
              " warm-up (/10 from %s); throughput: %" PRIu64
              " messages (at most %s per row), %" PRIu64 " runs per row |\n",
              opt_.iters, opt_.warmup, size_label(kLargeSize).c_str(), opt_.count,
              size_label(kByteBudget >> 20 << 20).c_str(), opt_.repeat);
  std::fflush(stdout);

  const auto t0 = now_ns();
  load_start_ = load_average();
  start_ = bracket();
  if (start_.ok)
    std::printf("\nBracket at start: bare-line round trip p50 = %.0f ns -> **%s**\n", start_.rt_ns,
                state_of(start_.rt_ns));

  if (opt_.latency) {
    std::printf("\n## Latency (ping-pong; one steady_clock read per round trip)\n");
    std::printf(
        "\nshmbus rows: topics of 64 slots, slot size = payload, policy block; the sender\n"
        "loans a slot and writes only the 8-byte sequence number; the receiver checks it\n"
        "in place. Baselines in *italics*. Raw futex is size-independent (%s rounds).\n"
        "Spin-futex spins for the library's spin budget (50 us) before it sleeps, so with\n"
        "a peer on another core it seldom sleeps here; compare it with raw futex in\n"
        "--same-core runs.\n",
        group_digits(static_cast<double>(std::min<std::uint64_t>(opt_.iters, 20'000))).c_str());
    latency_section();
  }
  if (opt_.ratio) {
    std::printf("\n## Latency ratio, interleaved (bare line / shmbus pairs)\n");
    std::printf(
        "\nEach pair runs the bare line and shmbus zero-copy busy-spin (as in the latency\n"
        "rows) back to back in fresh process pairs, alternating which goes first. One\n"
        "ratio per pair: the run-to-run states of the host and of each process pair\n"
        "then show as spread, not as bias.\n");
    ratio_section();
  }
  if (opt_.throughput) {
    std::printf("\n## Throughput (producer process -> consumer process; %s)\n",
                opt_.same_core ? "one CPU" : "cores split");
    std::printf(
        "\nshmbus rows: publish() copies the payload; policy block; the consumer checks the\n"
        "sequence number of every message. Bare ring: same slot count, memcpy per message.\n"
        "Msgs per consumer fetch: ~1 when the consumer keeps up (each message is its own\n"
        "cache-line hand-off), large when the producer runs ahead and the consumer streams.\n");
    if (opt_.read_payload)
      std::printf(
          "The consumer reads one word per cache line of every message (--read-payload):\n"
          "bytes/s is payload delivered to the other core.\n");
    else
      std::printf(
          "The consumer reads only the first 8 bytes of a message: above 64 B, bytes/s is\n"
          "the rate the producer copies into shared memory (see --read-payload).\n");
    throughput_section();
  }

  end_ = bracket();
  load_end_ = load_average();
  std::printf("\n## Run state\n\n");
  std::printf("| bracket | bare-line round trip p50 | state |\n|---|---:|---|\n");
  for (const auto* b : {&start_, &end_}) {
    if (b->ok)
      std::printf("| %s | %.0f ns | %s |\n", b == &start_ ? "start" : "end", b->rt_ns,
                  state_of(b->rt_ns));
    else
      std::printf("| %s | FAILED: %s | |\n", b == &start_ ? "start" : "end", b->error.c_str());
  }
  if (start_.ok && end_.ok) {
    const bool same = std::string(state_of(start_.rt_ns)) == state_of(end_.rt_ns);
    std::printf(
        "\nRun tagged **%s**%s. Total time %.1f s.\n", same ? state_of(start_.rt_ns) : "mixed",
        same ? "" : " (the host moved the vCPUs during the run: do not compare its figures)",
        static_cast<double>(now_ns() - t0) / 1e9);
  }
  std::printf("\nLoad average (1 min) at start %.2f, at end %.2f%s\n", load_start_, load_end_,
              std::max(load_start_, load_end_) > 0.5
                  ? ": other processes competed for the cores; expect lower, noisier figures"
                  : "");
  if (!opt_.json.empty()) write_json(m);
  if (!failures_.empty()) {
    std::printf("\n## FAILURES (%zu)\n\n", failures_.size());
    for (const auto& f : failures_)
      std::printf("- %s\n", f.c_str());
    std::fflush(stdout);
    return 1;
  }
  std::fflush(stdout);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  g_tool = "shmbus-ipc-bench";
  Options opt = parse_args(argc, argv);
  g_ctl = static_cast<Control*>(map_shared(sizeof(Control)));
  new (g_ctl) Control{};
  struct sigaction sa {};
  sa.sa_handler = on_interrupt;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
  try {
    Bench bench(std::move(opt));
    return bench.run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "shmbus-ipc-bench: %s\n", e.what());
    return 1;
  }
}
