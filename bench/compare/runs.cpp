// The systems of a run, and one run of a latency, spaced or throughput row.

#include <algorithm>
#include <cinttypes>

#include "compare.hpp"

namespace shmbus_bench {
namespace {
constexpr std::size_t kLarge = 256 * 1024;
}  // namespace

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
  add(make_bare_line());
  add(make_bare_memcpy());
  add(make_bare_ring(1));
  add(make_bare_ring(16));
  add(make_raw_futex());
  std::vector<std::unique_ptr<System>> rest;
  if (opt_.plan == Plan::Limits)
    add_limits_systems(rest);
  else
    add_compare_systems(rest, skip);
  for (auto& s : rest)
    if (wanted(*s)) add(std::move(s));
}

// shmbus against the limits alone, as shmbus-ipc-bench measured it: zero-copy
// ping-pong over topics of 64 slots (multi-producer, the library's default),
// and streaming with publish() copies in three API variants.
void Compare::add_limits_systems(std::vector<std::unique_ptr<System>>& rest) const {
  const ShmbusVariant ping_pong{false, true, 1, true, false};
  if (!opt_.same_core)  // on one core a busy spinner burns whole time slices
    rest.push_back(make_shmbus("shmbus-busy-spin", "shmbus zero-copy, busy-spin",
                               ShmbusWait{shmbus::WaitStrategy::BusySpin, -1}, ping_pong));
  rest.push_back(make_shmbus("shmbus-spin-futex", "shmbus zero-copy, spin-futex",
                             ShmbusWait{shmbus::WaitStrategy::SpinFutex, -1}, ping_pong));
  const ShmbusWait stream{
      opt_.same_core ? shmbus::WaitStrategy::SpinYield : shmbus::WaitStrategy::BusySpin, -1};
  const std::string copy =
      std::string("shmbus publish() copy, ") + (opt_.same_core ? "spin-yield" : "busy-spin");
  rest.push_back(make_shmbus("shmbus-single-producer", copy + ", single_producer topic, receive()",
                             stream, ShmbusVariant{true, false, 1, false, true}));
  rest.push_back(make_shmbus("shmbus-multi-producer", copy + ", multi-producer topic, receive()",
                             stream, ShmbusVariant{false, false, 1, false, true}));
  rest.push_back(make_shmbus("shmbus-single-producer-batch16",
                             copy + ", single_producer topic, receive_batch(16)", stream,
                             ShmbusVariant{true, false, 16, false, true}));
}

void Compare::add_compare_systems(std::vector<std::unique_ptr<System>>& rest,
                                  [[maybe_unused]] const SkipFn& skip) const {
  rest.push_back(make_shmbus("shmbus-busy-spin", "shmbus loan/receive, busy-spin (zero copy)",
                             ShmbusWait{shmbus::WaitStrategy::BusySpin, -1}));
  rest.push_back(make_shmbus("shmbus-spin-futex",
                             "shmbus loan/receive, spin-futex (default: spin 50 us, then sleep)",
                             ShmbusWait{shmbus::WaitStrategy::SpinFutex, -1}));
  rest.push_back(make_shmbus("shmbus-sleep", "shmbus loan/receive, spin-futex with spin = 0",
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
}

// The limits plan's round trips, warm-up and messages before the rules by
// system and size.
std::uint64_t Compare::limits_iters() const {
  return opt_.iters ? opt_.iters : opt_.quick ? 10'000 : 100'000;
}
std::uint64_t Compare::limits_warmup() const {
  return opt_.warmup_set ? opt_.warmup : opt_.quick ? 1'000 : 10'000;
}
std::uint64_t Compare::limits_count() const {
  return opt_.count ? opt_.count : opt_.quick ? 1'000'000 : 10'000'000;
}

LatencyPlan Compare::latency_plan(const System& s, std::size_t size) const {
  LatencyPlan p;
  if (opt_.plan == Plan::Limits) {
    // No time caps. The raw futex (~60 us a round trip across cores) gets
    // fewer rounds; from 256 KiB a tenth (the bare line, a size-free
    // reference, always the full count).
    const std::uint64_t iters = limits_iters();
    const std::uint64_t warmup = limits_warmup();
    p.iters = iters;
    p.warmup = warmup;
    if (s.slow) {
      p.iters = std::min<std::uint64_t>(iters, 20'000);
      p.warmup = std::min<std::uint64_t>(warmup, 1'000);
    } else if (size >= kLarge && s.key != "bare-line") {
      p.iters = std::max<std::uint64_t>(iters / 10, 100);
      p.warmup = warmup / 10;
    }
    return p;
  }
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
  if (opt_.iters) p.iters = opt_.iters;
  if (opt_.warmup_set) p.warmup = opt_.warmup;
  return p;
}

// Queue depth for throughput: 1024 slots, fewer for large messages (at most
// 64 MiB of ring), at least 64. Every system with a depth gets the same.
std::uint64_t Compare::slots_for(std::size_t size) const {
  if (opt_.slots) return opt_.slots;
  const std::uint64_t stride = shmbus_slot_stride(size);
  std::uint64_t slots = 1024;
  while (slots > 64 && slots * stride > (64ULL << 20))
    slots /= 2;
  return slots;
}

// Every row moves at most a byte budget. The comparison caps small messages
// by count, higher for the shared-memory and in-process systems that move
// tens of millions a second than for the ones that make system calls (or,
// iceoryx, run at about a million a second), so that every row takes about a
// second here; from 4 KiB up, every system sends the same count. The limits
// send 10 M messages (1 M quick), at most 2 GiB per row.
std::uint64_t Compare::count_for(const System& s, std::size_t size) const {
  if (opt_.messages) return std::max<std::uint64_t>(opt_.messages, 100);
  std::uint64_t count = 0, bytes = 0;
  if (opt_.plan == Plan::Limits) {
    count = limits_count();
    bytes = 2ULL << 30;
  } else {
    const bool fast = s.baseline || s.key.rfind("shmbus", 0) == 0 || s.in_process;
    count = fast ? 5'000'000 : 250'000;
    bytes = 1ULL << 30;
    if (opt_.quick) {
      count /= 10;
      bytes /= 10;
    }
  }
  if (opt_.count) count = opt_.count;  // (limits_count() has it already)
  return std::max<std::uint64_t>(std::min<std::uint64_t>(count, bytes / size), 100);
}

// Repetitions after the first round of a size block run only while the block
// has taken less than this: a loaded machine keeps the run short.
std::uint64_t Compare::repeat_budget_ns() const {
  if (opt_.plan == Plan::Limits) return 20'000'000'000ULL;
  return opt_.quick ? 10'000'000'000ULL : 45'000'000'000ULL;
}

PairResult Compare::run_system(System& s, const Scenario& sc, const std::string& label, Role a,
                               Role b, PairOptions po) {
  PairResult r;
  try {
    s.prepare(runner_, sc);
    r = runner_.run(
        label, [&](Side& side) { (s.*a)(side, sc); }, [&](Side& side) { (s.*b)(side, sc); },
        sc.cpu_a, sc.cpu_b, po);
  } catch (const std::exception& e) {
    r = PairResult{false, std::string("set-up: ") + e.what()};
  }
  s.cleanup();
  return r;
}

LatRow Compare::lat_row(const System& s, const std::string& section, std::size_t size) const {
  LatRow row;
  row.section = section;
  row.key = s.key;
  row.system = s.name;
  row.size = size;
  row.baseline = s.baseline;
  row.blocking = s.blocking;
  return row;
}

LatRow Compare::run_latency(System& s, const std::string& section, std::size_t size,
                            bool same_core) {
  LatRow row = lat_row(s, section, size);
  Scenario sc = scenario(Mode::Latency, size);
  sc.plan = latency_plan(s, size);
  same_core = same_core || opt_.same_core;
  if (same_core) sc.cpu_b = sc.cpu_a;
  const PairResult r =
      run_system(s, sc,
                 strprintf("%s: %s %s%s", section.c_str(), s.key.c_str(), size_label(size).c_str(),
                           same_core ? " (one core)" : ""),
                 &System::ping, &System::pong, PairOptions{same_core});
  row.ok = r.ok;
  row.error = r.error;
  if (r.ok) {
    row.st = runner_.ctl().lat;
    row.hist = runner_.ctl().hist.buckets();
  } else {
    failures_.push_back(strprintf("%s %s %s: %s", section.c_str(), s.key.c_str(),
                                  size_label(size).c_str(), r.error.c_str()));
  }
  return row;
}

LatRow Compare::run_spaced(System& s, std::size_t size) {
  LatRow row = lat_row(s, "spaced", size);
  Scenario sc = scenario(Mode::Spaced, size);
  sc.count = opt_.quick ? 300 : 2000;
  sc.gap_ns = kSpacedGapNs;
  const PairResult r =
      run_system(s, sc,
                 strprintf("spaced: %s %s, %s apart", s.key.c_str(), size_label(size).c_str(),
                           ns_label(static_cast<double>(kSpacedGapNs)).c_str()),
                 &System::spaced_send, &System::spaced_recv, PairOptions{});
  row.ok = r.ok;
  row.error = r.error;
  if (r.ok)
    row.st = runner_.ctl().lat;
  else
    failures_.push_back("spaced " + s.key + ": " + r.error);
  return row;
}

bool Compare::run_throughput_once(TputRow& row) {
  System& s = *row.sys;
  Scenario sc = scenario(Mode::Throughput, row.size);
  sc.count = row.count;
  sc.slots = slots_for(row.size);
  PairResult r =
      run_system(s, sc, strprintf("throughput: %s %s", s.key.c_str(), size_label(row.size).c_str()),
                 &System::produce, &System::consume, PairOptions{opt_.same_core});
  if (r.ok && runner_.ctl().received != row.count) {
    r.ok = false;
    r.error = strprintf("the consumer reported %" PRIu64 " messages, %" PRIu64 " were sent",
                        runner_.ctl().received, row.count);
  }
  if (!r.ok) {
    row.ok = false;
    row.error = r.error;
    failures_.push_back(strprintf("throughput %s %s: %s", s.key.c_str(),
                                  size_label(row.size).c_str(), r.error.c_str()));
    return false;
  }
  row.seconds.push_back(static_cast<double>(runner_.ctl().t_end_ns - runner_.ctl().t_start_ns) /
                        1e9);
  row.fetches.push_back(runner_.ctl().fetches);
  return true;
}

bool Compare::wanted(const System& s) const {
  if (opt_.only.empty()) return true;
  return std::find(opt_.only.begin(), opt_.only.end(), s.key) != opt_.only.end();
}

System* Compare::sys(const std::string& key) const {
  for (const auto& c : comparators_)
    if (c.system && c.key == key) return c.system.get();
  return nullptr;
}

Scenario Compare::scenario(Mode mode, std::size_t size) {
  Scenario sc;
  sc.mode = mode;
  sc.size = size;
  sc.run_id = next_run_id_++;
  sc.cpu_a = opt_.cpu_a;
  sc.cpu_b = opt_.same_core ? opt_.cpu_a : opt_.cpu_b;
  sc.read_payload = opt_.read_payload;
  sc.shared_topic = opt_.shared_topic;
  return sc;
}

const LatRow* Compare::find_lat(const std::string& section, const std::string& key,
                                std::size_t size) const {
  for (const auto& r : lat_)
    if (r.section == section && r.key == key && r.size == size && r.ok) return &r;
  return nullptr;
}

const TputRow* Compare::find_tput(const std::string& key, std::size_t size) const {
  for (const auto& r : tput_)
    if (r.key == key && r.size == size && r.ok && !r.seconds.empty()) return &r;
  return nullptr;
}

// The bare line for 20 ms: the host's placement of the two vCPUs (near/far),
// always on CPUs A and B (even with --same-core) when there are two.
double Compare::bracket_round_trip() {
  LatencyPlan plan;
  plan.warmup = 2000;
  plan.duration_ns = 20'000'000;
  const auto r = runner_.run(
      "bracket: bare line, 20 ms",
      [&](Side& side) { bare_pinger(side, plan, 0, nullptr, nullptr); },
      [&](Side& side) { bare_ponger(side, 0, nullptr, nullptr); }, opt_.cpu_a, opt_.cpu_b,
      PairOptions{opt_.cpu_a == opt_.cpu_b});
  return r.ok ? 2 * runner_.ctl().lat.p50 : 0;
}

}  // namespace shmbus_bench
