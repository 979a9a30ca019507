// shmbus-compare: the systems it measures, behind one interface.
//
// A System is driven by the harness (bench/harness): the parent calls
// prepare() before it forks the two sides (pinned to their cores), side A and
// side B run one of the role functions below in their own process, each with
// its Side, and the parent calls cleanup() once both have ended, whatever
// happened. Each comparator lives in its own translation unit (cmp_*.cpp),
// compiled only when its package was found; the factories below are then
// defined.
#pragma once

#include <time.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "harness/process.hpp"
#include "harness/report.hpp"
#include "harness/scenarios.hpp"
#include "harness/stats.hpp"

namespace shmbus_bench {

enum class Mode { Latency, Throughput, Spaced };

// What one run of a pair needs to know.
struct Scenario {
  Mode mode = Mode::Latency;
  std::size_t size = 64;       // payload bytes (>= 16: sequence number and send time)
  std::uint64_t count = 0;     // throughput and spaced runs: messages to send
  std::uint64_t slots = 1024;  // throughput: queue depth, where the system has one
  std::uint64_t gap_ns = 0;    // spaced runs: time between two messages
  LatencyPlan plan;            // latency runs
  int run_id = 0;              // unique within this process: names of queues, services
  int cpu_a = 0, cpu_b = 1;    // where the sides run (an in-process system pins its threads)
  bool read_payload = true;   // throughput: the consumer reads the payload (the comparators always)
  bool shared_topic = false;  // shmbus: a topic other uids may use (Options::shared_topic)
};

class System {
 public:
  virtual ~System() = default;

  std::string key;          // stable id for JSON and the plot, e.g. "uds"
  std::string name;         // for the tables
  bool baseline = false;    // a physical limit, not a product
  bool blocking = false;    // its receiver sleeps in the kernel while it waits
  bool slow = false;        // microseconds per message: fewer latency rounds
  bool in_process = false;  // two threads of side A's process; side B idles

  virtual bool has_latency() const { return true; }
  virtual bool has_throughput() const { return true; }
  virtual bool has_spaced() const { return false; }

  // In the parent, before the fork. May throw (the row then fails, others run).
  virtual void prepare(PairRunner&, const Scenario&) {}
  // In the parent, after both sides ended.
  virtual void cleanup() {}

  // Ping-pong. ping() sends ping i and waits for pong i inside pinger_loop()
  // (which records the round trips), then tells pong() to end; every message
  // carries its sequence number in its first 8 bytes, checked at the other end.
  virtual void ping(Side&, const Scenario&) {}
  virtual void pong(Side&, const Scenario&) {}
  // Streaming: `count` messages, the consumer checks each one's sequence
  // number and reads the payload (one word per cache line, compared with the
  // pattern). The producer stores t_start_ns after the handshake; the consumer
  // stores t_end_ns and received after the last message.
  virtual void produce(Side&, const Scenario&) {}
  virtual void consume(Side&, const Scenario&) {}
  // Spaced one-way: side A sends `count` messages gap_ns apart, each with its
  // send time (CLOCK_MONOTONIC) at offset 8; side B records arrival - send time
  // and stores the statistics (scale 1) itself.
  virtual void spaced_send(Side&, const Scenario&) {}
  virtual void spaced_recv(Side&, const Scenario&) {}
};

// A comparator: either a system or the reason it is not there.
struct Comparator {
  std::unique_ptr<System> system;
  std::string key, name;
  std::string skipped;  // non-empty: why it is not measured
};

// ---- helpers for the comparators ----------------------------------------------

// Side B of a spaced run: the samples, then the statistics into the control block.
struct SpacedRecorder {
  explicit SpacedRecorder(std::uint64_t count) { samples.reserve(count); }
  void add(const std::byte* msg) {
    const std::uint64_t now = now_ns();
    const std::uint64_t sent = get_time(msg);
    samples.push_back(now > sent ? now - sent : 0);
  }
  void finish(const Side& side) { side.ctl().lat = one_way_stats(samples, 1.0, &side.ctl().hist); }
  std::vector<std::uint64_t> samples;
};

// Sleeps until `t` (CLOCK_MONOTONIC ns): the sender of a spaced run is idle
// between messages, as the receiver is.
inline void sleep_until_ns(std::uint64_t t) {
  timespec ts{static_cast<time_t>(t / 1'000'000'000ULL), static_cast<long>(t % 1'000'000'000ULL)};
  while (::clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
  }
}

// Side A of a spaced run, once set up: the handshake, then message i every
// gap_ns; send(i) writes message i (its send time, put_time(now_ns()), last)
// and sends it.
template <class Send>
void send_spaced(const Side& side, const Scenario& sc, Send&& send) {
  side.handshake();
  std::uint64_t next = now_ns();
  for (std::uint64_t i = 0; i < sc.count; ++i) {
    next += sc.gap_ns;
    sleep_until_ns(next);
    send(i);
    side.heartbeat(i);
  }
}

// The sequence number and, last, the send time of a spaced message.
inline void stamp_spaced(std::byte* p, std::uint64_t seq) noexcept {
  put_seq(p, seq);
  put_time(p, now_ns());
}

// ---- the systems --------------------------------------------------------------

// Always built (systems.cpp): the machine's limits and shmbus.
std::unique_ptr<System> make_bare_line();
std::unique_ptr<System> make_bare_memcpy();
std::unique_ptr<System> make_bare_ring(std::uint64_t publish_every);
std::unique_ptr<System> make_raw_futex();
struct ShmbusVariant {
  bool single_producer = true;  // its fastest documented mode
  bool loan = true;             // streaming: loan + write in place; false: publish() copies
  std::size_t batch = 1;        // streaming: receive_batch(batch) when > 1
  bool latency = true;          // has ping-pong rows
  bool throughput = true;       // has streaming rows
};
std::unique_ptr<System> make_shmbus(std::string key, std::string name, ShmbusWait wait,
                                    ShmbusVariant variant = {});

// Always built (cmp_posix.cpp): Unix-domain socket and pipe (blocking).
std::unique_ptr<System> make_uds();
std::unique_ptr<System> make_pipe();
// Optional (each defined only when its package was found at build time).
std::unique_ptr<System> make_boost_mq(bool polling);
std::unique_ptr<System> make_zmq();
std::unique_ptr<System> make_iceoryx();
std::unique_ptr<System> make_moodycamel();

// iceoryx's daemon, started and stopped by the benchmark (cmp_iceoryx.cpp):
// `roudi` is the iox-roudi binary; its configuration (mempools for `sizes`)
// and log go to work_dir. The runner keeps its pid, so that an interrupted
// run stops it too, and the pid file is removed with it.
bool iceoryx_start_roudi(PairRunner& runner, const std::string& roudi, const std::string& work_dir,
                         const std::vector<std::size_t>& sizes, const std::string& pid_file,
                         std::string& error);
void iceoryx_stop_roudi(PairRunner& runner);
std::string iceoryx_version();

std::string zmq_version_string();
std::string boost_version_string();

}  // namespace shmbus_bench
