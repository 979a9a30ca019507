// Eclipse iceoryx 2.0 (Debian's iceoryx, libiceoryx-posh-dev): the untyped
// zero-copy API, loan()/publish() and take()/release(), polled in a busy loop
// (its fastest documented mode; iceperf measures it the same way). Throughput
// is lossless: the publisher waits for the consumer (WAIT_FOR_CONSUMER with a
// BLOCK_PRODUCER queue).
//
// The benchmark starts its own RouDi (iox-roudi, with a mempool configuration
// sized for the payloads of the run) and stops it at the end. iceoryx clients
// end with exit(), not _exit(): the runtime deregisters from RouDi in its
// static destructor, and a client that vanishes can make RouDi abort at
// shutdown (BASELINES.md, lesson 7).

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <thread>
#include <vector>

#include "iceoryx_hoofs/log/logmanager.hpp"
#include "iceoryx_posh/popo/untyped_publisher.hpp"
#include "iceoryx_posh/popo/untyped_subscriber.hpp"
#include "iceoryx_posh/runtime/posh_runtime.hpp"
#include "iceoryx_versions.hpp"
#include "system.hpp"

namespace shmbus_bench {
namespace {

iox::capro::IdString_t id(const std::string& s) {
  return iox::capro::IdString_t(iox::cxx::TruncateToCapacity, s.c_str(), s.size());
}

// Registers this process with RouDi (once per process) under a unique name.
void init_runtime(Side& side, const char* role) {
  side.exit_normally();  // from here on, end with exit(): the runtime deregisters
  iox::log::LogManager::GetLogManager().SetDefaultLogLevel(iox::log::LogLevel::kWarn,
                                                           iox::log::LogLevelOutput::kHideLogLevel);
  const std::string name = strprintf("shmbus-cmp-%s-%d", role, static_cast<int>(::getpid()));
  iox::runtime::PoshRuntime::initRuntime(
      iox::RuntimeName_t(iox::cxx::TruncateToCapacity, name.c_str(), name.size()));
}

// Waits (sleeping: RouDi connects ports in its discovery loop, every 100 ms)
// until `ready()`.
template <class Ready>
void wait_connected(const Side& side, Ready&& ready, const char* what) {
  const std::uint64_t deadline = now_ns() + kTimeoutNs;
  while (!ready()) {
    if (now_ns() > deadline)
      side.fail("iceoryx: %s not connected within %d s", what, kTimeoutSeconds);
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

const char* to_string(iox::popo::AllocationError e) {
  switch (e) {
    case iox::popo::AllocationError::NO_MEMPOOLS_AVAILABLE:
      return "no mempools available";
    case iox::popo::AllocationError::RUNNING_OUT_OF_CHUNKS:
      return "running out of chunks";
    case iox::popo::AllocationError::TOO_MANY_CHUNKS_ALLOCATED_IN_PARALLEL:
      return "too many chunks allocated in parallel";
    case iox::popo::AllocationError::INVALID_PARAMETER_FOR_USER_PAYLOAD_OR_USER_HEADER:
      return "invalid payload parameters";
    default:
      return "allocation error";
  }
}

class Iceoryx : public System {
 public:
  Iceoryx() {
    key = "iceoryx";
    name = "iceoryx 2.0 loan/publish + busy take (zero copy)";
  }

  void prepare(PairRunner&, const Scenario& sc) override {
    instance_ = strprintf("run-%d-%d", static_cast<int>(::getpid()), sc.run_id);
  }

  void ping(Side& side, const Scenario& sc) override {
    init_runtime(side, "ping");
    {
      iox::popo::UntypedPublisher pub({"ShmbusCmp", id(instance_), "ab"}, latency_pub());
      iox::popo::UntypedSubscriber sub({"ShmbusCmp", id(instance_), "ba"}, latency_sub());
      wait_connected(
          side, [&] { return pub.hasSubscribers() && subscribed(sub); }, "ping/pong");
      side.handshake();
      pinger_loop(side, sc.plan, [&](std::uint64_t i) {
        send_seq(side, pub, sc.size, i);
        const void* p = take(side, sub, i);
        if (get_seq(static_cast<const std::byte*>(p)) != i)
          side.fail("iceoryx: expected pong %" PRIu64 ", got %" PRIu64, i,
                    get_seq(static_cast<const std::byte*>(p)));
        sub.release(p);
      });
      send_seq(side, pub, sc.size, kStop);
      // The pinger must not leave (taking its publisher's chunks with it)
      // before the ponger has taken the stop message. Acquire: pairs with the
      // ponger's release store of `done`.
      const std::uint64_t deadline = now_ns() + kTimeoutNs;
      while (side.ctl().done.v.load(std::memory_order_acquire) == 0 && now_ns() < deadline)
        std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  }

  void pong(Side& side, const Scenario& sc) override {
    init_runtime(side, "pong");
    {
      iox::popo::UntypedPublisher pub({"ShmbusCmp", id(instance_), "ba"}, latency_pub());
      iox::popo::UntypedSubscriber sub({"ShmbusCmp", id(instance_), "ab"}, latency_sub());
      wait_connected(
          side, [&] { return pub.hasSubscribers() && subscribed(sub); }, "pong/ping");
      side.handshake();
      for (std::uint64_t i = 0;; ++i) {
        const void* p = take(side, sub, i);
        const std::uint64_t seq = get_seq(static_cast<const std::byte*>(p));
        sub.release(p);
        if (seq == kStop) break;
        if (seq != i) side.fail("iceoryx: expected ping %" PRIu64 ", got %" PRIu64, i, seq);
        send_seq(side, pub, sc.size, i);
        side.heartbeat(i);
      }
      // Release: pairs with the pinger's acquire load; the stop message is taken.
      side.ctl().done.v.store(1, std::memory_order_release);
    }
  }

  void produce(Side& side, const Scenario& sc) override {
    init_runtime(side, "producer");
    {
      iox::popo::PublisherOptions po;
      po.subscriberTooSlowPolicy = iox::popo::ConsumerTooSlowPolicy::WAIT_FOR_CONSUMER;
      iox::popo::UntypedPublisher pub({"ShmbusCmp", id(instance_), "stream"}, po);
      wait_connected(
          side, [&] { return pub.hasSubscribers(); }, "the producer");
      auto src = make_payload(sc.size);
      side.handshake();
      side.ctl().t_start_ns = now_ns();
      for (std::uint64_t i = 0; i < sc.count; ++i) {
        void* chunk = loan(side, pub, sc.size, i);
        put_seq(src.data(), i);
        std::memcpy(chunk, src.data(), sc.size);
        pub.publish(chunk);
        side.heartbeat(i);
      }
      wait_done(side);
    }
  }

  void consume(Side& side, const Scenario& sc) override {
    init_runtime(side, "consumer");
    {
      iox::popo::SubscriberOptions so;
      so.queueCapacity = std::min<std::uint64_t>(sc.slots, iox::MAX_SUBSCRIBER_QUEUE_CAPACITY);
      so.queueFullPolicy = iox::popo::QueueFullPolicy::BLOCK_PRODUCER;
      iox::popo::UntypedSubscriber sub({"ShmbusCmp", id(instance_), "stream"}, so);
      wait_connected(
          side, [&] { return subscribed(sub); }, "the consumer");
      const std::uint64_t expect_sum = pattern_sum(sc.size);
      side.handshake();
      for (std::uint64_t i = 0; i < sc.count; ++i) {
        const void* p = take(side, sub, i);
        check_message(side, "iceoryx", static_cast<const std::byte*>(p), sc.size, sc.size, i,
                      expect_sum);
        sub.release(p);
        side.heartbeat(i);
      }
      side.ctl().t_end_ns = now_ns();
      side.ctl().received = sc.count;
      // Release: pairs with the producer's acquire in wait_done(); every message is taken.
      side.ctl().done.v.store(1, std::memory_order_release);
    }
  }

 private:
  static iox::popo::PublisherOptions latency_pub() { return iox::popo::PublisherOptions{}; }
  static iox::popo::SubscriberOptions latency_sub() {
    iox::popo::SubscriberOptions so;
    so.queueCapacity = 16;
    return so;
  }
  static bool subscribed(const iox::popo::UntypedSubscriber& sub) {
    return sub.getSubscriptionState() == iox::SubscribeState::SUBSCRIBED;
  }

  // The producer keeps its publisher (and RouDi its chunks) until the consumer
  // has taken everything: a publisher that goes away takes its undelivered
  // chunks with it.
  static void wait_done(const Side& side) {
    const std::uint64_t deadline = now_ns() + kTimeoutNs;
    // Acquire: pairs with the consumer's release store of `done`.
    while (side.ctl().done.v.load(std::memory_order_acquire) == 0) {
      if (now_ns() > deadline)
        side.fail("iceoryx: the consumer did not finish within %d s", kTimeoutSeconds);
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  }

  static void* loan(const Side& side, iox::popo::UntypedPublisher& pub, std::size_t size,
                    std::uint64_t seq) {
    auto r = pub.loan(static_cast<std::uint32_t>(size));
    if (!r.has_error()) return r.value();
    // Out of chunks only while the consumer holds them all: wait for one.
    void* chunk = nullptr;
    side.spin_until(
        [&] {
          auto again = pub.loan(static_cast<std::uint32_t>(size));
          if (!again.has_error()) {
            chunk = again.value();
            return true;
          }
          if (again.get_error() != iox::popo::AllocationError::RUNNING_OUT_OF_CHUNKS)
            side.fail("iceoryx: loan(%zu) for message %" PRIu64 ": %s", size, seq,
                      to_string(again.get_error()));
          return false;
        },
        "a free chunk for message", seq);
    return chunk;
  }

  static void send_seq(const Side& side, iox::popo::UntypedPublisher& pub, std::size_t size,
                       std::uint64_t seq) {
    void* chunk = loan(side, pub, size, seq);
    put_seq(static_cast<std::byte*>(chunk), seq);
    pub.publish(chunk);
  }

  static const void* take(const Side& side, iox::popo::UntypedSubscriber& sub, std::uint64_t seq) {
    const void* p = nullptr;
    side.spin_until(
        [&] {
          auto r = sub.take();
          if (r.has_error()) {
            if (r.get_error() != iox::popo::ChunkReceiveResult::NO_CHUNK_AVAILABLE)
              side.fail("iceoryx: take of message %" PRIu64 ": too many chunks held", seq);
            return false;
          }
          p = r.value();
          return true;
        },
        "message", seq);
    return p;
  }

  std::string instance_;
};

// ---- RouDi --------------------------------------------------------------------

bool file_contains(const std::string& path, const char* needle) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str().find(needle) != std::string::npos;
}

std::string tail_of(const std::string& path, std::size_t n) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  std::string s = ss.str();
  if (s.size() > n) s = "..." + s.substr(s.size() - n);
  for (char& c : s)
    if (c == '\n') c = ' ';
  return s;
}

}  // namespace

std::unique_ptr<System> make_iceoryx() {
  return std::make_unique<Iceoryx>();
}

std::string iceoryx_version() {
  return ICEORYX_LATEST_RELEASE_VERSION;
}

// The mempools: one per payload size of the run, with room for a full
// subscriber queue (256), the publisher's loans and the latency runs.
static std::string roudi_config(const std::vector<std::size_t>& sizes) {
  std::string c = "[general]\nversion = 1\n\n[[segment]]\n";
  std::vector<std::size_t> chunk_sizes;
  for (std::size_t s : sizes)
    chunk_sizes.push_back((s + 128 + 63) / 64 * 64);  // + chunk header
  std::sort(chunk_sizes.begin(), chunk_sizes.end());
  chunk_sizes.erase(std::unique(chunk_sizes.begin(), chunk_sizes.end()), chunk_sizes.end());
  for (std::size_t cs : chunk_sizes) {
    const std::size_t count = cs > (256u << 10) ? 160 : 400;
    c += strprintf("\n[[segment.mempool]]\nsize = %zu\ncount = %zu\n", cs, count);
  }
  return c;
}

bool iceoryx_start_roudi(PairRunner& runner, const std::string& roudi, const std::string& work_dir,
                         const std::vector<std::size_t>& sizes, const std::string& pid_file,
                         std::string& error) {
  error.clear();
  if (::access(roudi.c_str(), X_OK) != 0) {
    error = roudi + " is not there (apt-get install iceoryx)";
    return false;
  }
  const std::string config = work_dir + "/roudi.toml";
  const std::string log = work_dir + "/roudi.log";
  {
    std::ofstream f(config);
    f << roudi_config(sizes);
    if (!f) {
      error = "cannot write " + config;
      return false;
    }
  }
  const pid_t pid = ::fork();
  if (pid < 0) {
    error = strprintf("fork: %s", std::strerror(errno));
    return false;
  }
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);  // if the benchmark dies, RouDi goes too
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      ::close(fd);
    }
    ::execl(roudi.c_str(), "iox-roudi", "-c", config.c_str(), "-l", "info",
            static_cast<char*>(nullptr));
    std::fprintf(stderr, "exec %s: %s\n", roudi.c_str(), std::strerror(errno));
    ::_exit(127);
  }
  runner.set_daemon(pid, pid_file);
  const std::uint64_t deadline = now_ns() + kTimeoutNs;
  for (;;) {
    if (file_contains(log, "RouDi is ready for clients")) return true;
    int st = 0;
    if (::waitpid(pid, &st, WNOHANG) == pid) {
      runner.set_daemon(0, "");  // reaped above
      error = "iox-roudi exited at start (another RouDi running?): " + tail_of(log, 300);
      return false;
    }
    if (now_ns() > deadline) {
      iceoryx_stop_roudi(runner);
      error = strprintf("iox-roudi not ready within %d s: ", kTimeoutSeconds) + tail_of(log, 300);
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

void iceoryx_stop_roudi(PairRunner& runner) {
  runner.stop_daemon();  // SIGTERM, up to 3 s, then SIGKILL; reaps it
}

}  // namespace shmbus_bench
