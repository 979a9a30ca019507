// shmbus-bridge end to end (issue 19): two buses on this machine stand for two
// hosts, each with its own shmbusd; a real nats-server (or three) between
// them; the bridges are real processes, SIGKILLed for real. Every wait polls a
// condition with a deadline.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <nats/nats.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <fstream>
#include <map>
#include <sstream>

#include "daemon_util.hpp"
#include "nats_server.hpp"
#include "shmbus/shmbus.hpp"
#include "test_util.hpp"

namespace shmbus::test {
namespace {

using namespace std::chrono_literals;

// A payload that proves its own integrity and its place in its key's order.
struct Payload {
  std::uint64_t seq;      // global, 0..n-1
  std::uint64_t key;      // key index
  std::uint64_t per_key;  // 0, 1, 2 ... within the key
  std::uint64_t check;
};
std::uint64_t check_of(const Payload& p) {
  return (p.seq * 0x9E3779B97F4A7C15ULL) ^ (p.key << 32) ^ (p.per_key * 0xC2B2AE3D27D4EB4FULL);
}

constexpr std::uint32_t kKeys = 64;

// One shmbusd and its bus: a "host".
struct Host {
  BusFixture f;
  DaemonProcess d{f.bus, f.socket};
  std::optional<Bus> bus;
  bool start() {
    if (!d.start()) return false;
    bus.emplace(Bus::connect(f.options()));
    return true;
  }
};

// A shmbus-bridge process with its own configuration file and log.
class BridgeProcess {
 public:
  BridgeProcess(const Host& h, std::string config) : host_(h), config_(std::move(config)) {
    path_ = dir_.path + "/bridge.toml";
    log_ = dir_.path + "/bridge.log";
    std::ofstream(path_) << config_;
  }
  ~BridgeProcess() { kill9(); }

  void start() {
    pid_ = ::fork();
    if (pid_ == 0) {
      const int fd = ::open(log_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      ::execl(SHMBUS_BRIDGE_PATH, SHMBUS_BRIDGE_PATH, "--config", path_.c_str(), "--bus",
              host_.f.bus.c_str(), "--socket", host_.f.socket.c_str(), "--status-interval", "1",
              static_cast<char*>(nullptr));
      ::_exit(127);
    }
  }
  void kill9() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  // SIGTERM, then its exit code (-1: it did not stop in time).
  int stop() {
    if (pid_ <= 0) return -1;
    ::kill(pid_, SIGTERM);
    const int rc = wait_child(pid_, 30s);
    pid_ = -1;
    return rc;
  }
  [[nodiscard]] pid_t pid() const noexcept { return pid_; }
  [[nodiscard]] std::string log() const {
    std::ifstream f(log_);
    std::stringstream s;
    s << f.rdbuf();
    return s.str();
  }

 private:
  const Host& host_;
  std::string config_;
  TempDir dir_;
  std::string path_, log_;
  pid_t pid_ = -1;
};

std::string servers_toml(const std::vector<std::string>& urls) {
  std::string s = "nats = [";
  for (std::size_t i = 0; i < urls.size(); ++i)
    s += (i ? ", \"" : "\"") + urls[i] + "\"";
  return s + "]\nstatus_interval = 1\n";
}

std::string out_toml(const std::vector<std::string>& urls, int replicas = 1) {
  return servers_toml(urls) + "[[out]]\ntopic = \"orders\"\nsubject = \"hostA.orders\"\n" +
         "replicas = " + std::to_string(replicas) + "\n";
}
std::string in_toml(const std::vector<std::string>& urls, int replicas = 1,
                    std::uint32_t batch = 256) {
  return servers_toml(urls) +
         "[[in]]\nsubject = \"hostA.orders\"\ntopic = \"orders\"\ndurable = \"bridge-in-b\"\n" +
         "replicas = " + std::to_string(replicas) + "\nbatch = " + std::to_string(batch) + "\n";
}

TopicOptions orders_options(std::uint32_t slots = 1024) {
  TopicOptions o;
  o.slot_count = slots;
  o.slot_size = 128;
  o.partitions = 4;
  return o;
}

// True once process `pid` is a member of the topic's group `name`.
bool has_member(Bus& bus, const std::string& topic, const std::string& name, pid_t pid) {
  for (const GroupStatus& g : bus.open_topic(topic).status().groups)
    if (g.name == name)
      for (const MemberStatus& m : g.member_seats)
        if (m.pid == static_cast<std::uint32_t>(pid)) return true;
  return false;
}

// Publishes messages [from, to) of the keyed sequence; per_key counts kept.
class Producer {
 public:
  explicit Producer(Bus& bus) : pub_(bus.publisher("orders", options())) {}
  void publish(std::uint64_t from, std::uint64_t to) {
    for (std::uint64_t i = from; i < to; ++i) {
      Payload p{i, i % kKeys, next_[i % kKeys]++, 0};
      p.check = check_of(p);
      const std::string key = "k" + std::to_string(p.key);
      const std::string v = "v" + std::to_string(i % 7);
      const Property props[] = {{"p", v}};
      Route r = Route::with_key(key);
      r.properties = props;
      ASSERT_EQ(pub_.publish(r, std::as_bytes(std::span(&p, 1))), Status::Ok) << "message " << i;
    }
  }

 private:
  static PublisherOptions options() {
    PublisherOptions o;
    o.timeout = 60s;  // the bridge may be down meanwhile: the ring holds, we wait
    return o;
  }
  Publisher pub_;
  std::array<std::uint64_t, kKeys> next_{};
};

// Takes messages on bus B and checks each: intact, key and property as sent,
// in its key's order, never twice.
class Checker {
 public:
  explicit Checker(Bus& bus) {
    SubscriberOptions so;
    so.group = "check";
    so.durable = true;
    so.start = StartFrom::Earliest;
    sub_ = bus.subscriber("orders", so);
  }
  // Takes until `n` distinct messages came (or `timeout` passed).
  void take_until(std::uint64_t n, std::chrono::seconds timeout) {
    const auto until = std::chrono::steady_clock::now() + timeout;
    while (distinct_ < n && std::chrono::steady_clock::now() < until) {
      Sample s;
      if (sub_->receive(s, 100ms) != Status::Ok) continue;
      take(s);
    }
  }
  // Whatever else arrives within `quiet` (duplicates would).
  void take_rest(std::chrono::milliseconds quiet) {
    Sample s;
    while (sub_->receive(s, quiet) == Status::Ok)
      take(s);
  }
  std::uint64_t distinct_ = 0, duplicates = 0, bad = 0, out_of_order = 0;

 private:
  void take(const Sample& s) {
    Payload p{};
    if (s.data().size() != sizeof p) {
      ++bad;
      return;
    }
    std::memcpy(&p, s.data().data(), sizeof p);
    const std::string key(reinterpret_cast<const char*>(s.key().data()), s.key().size());
    const auto prop = s.properties().get("p");
    if (p.check != check_of(p) || p.key >= kKeys || key != "k" + std::to_string(p.key) || !prop ||
        *prop != "v" + std::to_string(p.seq % 7)) {
      ++bad;
      return;
    }
    if (!seen_.insert(p.seq).second) {
      ++duplicates;
      return;
    }
    ++distinct_;
    auto [it, fresh] = last_.try_emplace(p.key, p.per_key);
    if (!fresh) {
      if (p.per_key <= it->second) ++out_of_order;
      it->second = std::max(it->second, p.per_key);
    }
  }
  std::unique_ptr<Subscriber> sub_;
  std::set<std::uint64_t> seen_;
  std::map<std::uint64_t, std::uint64_t> last_;
};

// What `ask` reads through a JetStream context on a connection of its own
// (0 when the server cannot say).
template <class Ask>
std::uint64_t ask_jetstream(const std::string& url, Ask&& ask) {
  natsConnection* nc = nullptr;
  if (natsConnection_ConnectTo(&nc, url.c_str()) != NATS_OK) return 0;
  jsCtx* js = nullptr;
  std::uint64_t n = 0;
  if (natsConnection_JetStream(&js, nc, nullptr) == NATS_OK) {
    n = ask(js);
    jsCtx_Destroy(js);
  }
  natsConnection_Destroy(nc);
  return n;
}

// Messages the stream holds.
std::uint64_t stream_messages(const std::string& url, const std::string& stream) {
  return ask_jetstream(url, [&](jsCtx* js) -> std::uint64_t {
    jsStreamInfo* si = nullptr;
    if (js_GetStreamInfo(&si, js, stream.c_str(), nullptr, nullptr) != NATS_OK) return 0;
    const std::uint64_t n = si->State.Msgs;
    jsStreamInfo_Destroy(si);
    return n;
  });
}

// What `field` reads off the pull consumer's info (0 when the server cannot say).
template <class Field>
std::uint64_t consumer_info(const std::string& url, const std::string& stream,
                            const std::string& durable, Field&& field) {
  return ask_jetstream(url, [&](jsCtx* js) -> std::uint64_t {
    jsConsumerInfo* ci = nullptr;
    if (js_GetConsumerInfo(&ci, js, stream.c_str(), durable.c_str(), nullptr, nullptr) != NATS_OK)
      return 0;
    const std::uint64_t n = field(*ci);
    jsConsumerInfo_Destroy(ci);
    return n;
  });
}

// The pull consumer's delivered stream sequence.
std::uint64_t consumer_delivered(const std::string& url, const std::string& stream,
                                 const std::string& durable) {
  return consumer_info(url, stream, durable,
                       [](const jsConsumerInfo& ci) { return ci.Delivered.Stream; });
}

// Deliveries of the in bridge's consumer not acknowledged yet.
std::uint64_t consumer_ack_pending(const std::string& url) {
  return consumer_info(url, "hostA_orders", "bridge-in-b", [](const jsConsumerInfo& ci) {
    return static_cast<std::uint64_t>(ci.NumAckPending);
  });
}

// True once the in bridge's consumer delivered everything and every delivery
// was acknowledged (no re-delivery can come any more).
bool consumer_settled(const std::string& url) {
  return consumer_info(url, "hostA_orders", "bridge-in-b", [](const jsConsumerInfo& ci) {
           return static_cast<std::uint64_t>(ci.NumAckPending == 0 && ci.NumPending == 0);
         }) == 1;
}

// The last value of `counter` in a bridge's log ("status: ... name=N ..."),
// or -1 when none.
std::int64_t last_counter(const std::string& log, const std::string& counter) {
  const std::size_t at = log.rfind(" " + counter + "=");
  if (at == std::string::npos) return -1;
  return std::stoll(log.substr(at + counter.size() + 2));
}

// True when process `pid` reports `counter` = `value` for topic "orders"
// (a route of kind `kind`) to the bus's daemon.
bool reported(Bus& bus, const std::string& kind, pid_t pid, const std::string& counter,
              std::uint64_t value) {
  for (const ComponentReport& r : bus.reports())
    if (r.name == "orders" && r.kind == kind && r.pid == static_cast<std::uint32_t>(pid))
      for (const ReportCounter& c : r.counters)
        if (c.name == counter && c.value == value) return true;
  return false;
}

// Two hosts, their topics, a checker on B, the out bridge on A (joined) and
// the in bridge on B.
struct TwoHosts {
  Host a, b;
  std::unique_ptr<BridgeProcess> out, in;
  std::unique_ptr<Checker> checker;
  std::unique_ptr<Producer> producer;
  bool start(const std::vector<std::string>& urls, int replicas = 1, std::uint32_t b_slots = 1024,
             std::uint32_t batch = 256) {
    if (!a.start() || !b.start()) return false;
    a.bus->create_topic("orders", orders_options());
    b.bus->create_topic("orders", orders_options(b_slots));
    checker = std::make_unique<Checker>(*b.bus);
    out = std::make_unique<BridgeProcess>(a, out_toml(urls, replicas));
    in = std::make_unique<BridgeProcess>(b, in_toml(urls, replicas, batch));
    out->start();
    in->start();
    producer = std::make_unique<Producer>(*a.bus);
    return wait_out_joined();
  }
  bool wait_out_joined() {
    return wait_until([&] { return has_member(*a.bus, "orders", "bridge-out", out->pid()); }, 60s);
  }
  std::string logs() const { return "out bridge:\n" + out->log() + "\nin bridge:\n" + in->log(); }
  // Takes whatever else arrives on B within `quiet` (copies would), then
  // expects each of the n messages there exactly once, intact.
  void expect_each_once(std::uint64_t n, std::chrono::milliseconds quiet = 500ms,
                        const std::string& more_logs = "") {
    checker->take_rest(quiet);
    EXPECT_EQ(checker->distinct_, n) << logs() << more_logs;
    EXPECT_EQ(checker->duplicates, 0u) << logs();
    EXPECT_EQ(checker->bad, 0u);
  }
};

TEST(Bridge, HundredThousandKeyedMessagesArriveOnceInKeyOrder) {
  NatsServer nats;
  ASSERT_TRUE(nats.start()) << nats.log();
  TwoHosts h;
  ASSERT_TRUE(h.start({nats.url()})) << h.logs();
  constexpr std::uint64_t kN = 100'000;
  h.producer->publish(0, kN);
  h.checker->take_until(kN, 240s);
  h.expect_each_once(kN, 300ms);
  EXPECT_EQ(h.checker->out_of_order, 0u);
  EXPECT_EQ(stream_messages(nats.url(), "hostA_orders"), kN);
  // Both bridges' counters reach `shmbus stat` through their daemons (the
  // bridges report once a second).
  EXPECT_TRUE(
      wait_until([&] { return reported(*h.a.bus, "bridge-out", h.out->pid(), "acked", kN); }, 30s));
  EXPECT_TRUE(wait_until(
      [&] { return reported(*h.b.bus, "bridge-in", h.in->pid(), "forwarded", kN); }, 30s));
  EXPECT_EQ(h.out->stop(), 0) << h.logs();
  EXPECT_EQ(h.in->stop(), 0) << h.logs();
  EXPECT_NE(h.out->log().find("acked=100000"), std::string::npos) << h.out->log();
  // Gone with the process.
  EXPECT_TRUE(wait_until([&] { return h.a.bus->reports().empty(); }, 30s));
}

TEST(Bridge, TheOutBridgeSigkilledFiveTimesLosesAndDuplicatesNothing) {
  NatsServer nats;
  ASSERT_TRUE(nats.start()) << nats.log();
  TwoHosts h;
  ASSERT_TRUE(h.start({nats.url()})) << h.logs();
  constexpr std::uint64_t kChunk = 4000, kKills = 5;
  for (std::uint64_t k = 0; k < kKills; ++k) {
    const std::uint64_t before = stream_messages(nats.url(), "hostA_orders");
    h.producer->publish(k * kChunk, (k + 1) * kChunk);
    // Mid-stream: once the bridge forwarded part of this chunk.
    ASSERT_TRUE(
        wait_until([&] { return stream_messages(nats.url(), "hostA_orders") > before; }, 60s))
        << h.logs();
    h.out->kill9();
    h.out->start();
    ASSERT_TRUE(h.wait_out_joined()) << h.logs();
  }
  h.producer->publish(kKills * kChunk, (kKills + 1) * kChunk);
  constexpr std::uint64_t kN = (kKills + 1) * kChunk;
  h.checker->take_until(kN, 240s);
  h.expect_each_once(kN);
  EXPECT_EQ(stream_messages(nats.url(), "hostA_orders"), kN);  // the window dropped re-sends
}

// The in bridge dies between local publishes and their acks: JetStream
// delivers those again (after AckWait) to the next bridge, which finds them
// marked in the topic (nats.seq) and skips them.
TEST(Bridge, TheInBridgeSigkilledFiveTimesLosesAndDuplicatesNothing) {
  NatsServer nats;
  ASSERT_TRUE(nats.start()) << nats.log();
  TwoHosts h;
  ASSERT_TRUE(h.start({nats.url()})) << h.logs();
  constexpr std::uint64_t kChunk = 4000, kKills = 5;
  for (std::uint64_t k = 0; k < kKills; ++k) {
    const std::uint64_t before = consumer_delivered(nats.url(), "hostA_orders", "bridge-in-b");
    h.producer->publish(k * kChunk, (k + 1) * kChunk);
    // Mid-stream: once this bridge pulled part of this chunk.
    ASSERT_TRUE(wait_until(
        [&] { return consumer_delivered(nats.url(), "hostA_orders", "bridge-in-b") > before; },
        60s))
        << h.logs();
    h.in->kill9();
    h.in->start();
  }
  h.producer->publish(kKills * kChunk, (kKills + 1) * kChunk);
  constexpr std::uint64_t kN = (kKills + 1) * kChunk;
  h.checker->take_until(kN, 240s);
  // Every re-delivery made (they come AckWait after a kill) and acknowledged:
  // anything published twice is on B by now.
  ASSERT_TRUE(wait_until([&] { return consumer_settled(nats.url()); }, 120s)) << h.logs();
  h.expect_each_once(kN);
}

// Forces what the marker is for: the in bridge published messages locally
// but JetStream never saw their acks, and the bridge died. Bus B is full
// and the bridge's queue holds a pull's worth; the server is stopped
// (SIGSTOP), the checker makes room, the bridge publishes what it queued
// (acks to a server that reads nothing); then the server and the bridge are
// SIGKILLed (the acks die in the server's socket) and both restarted.
// JetStream delivers those messages again after AckWait: the new bridge
// must find them marked in the topic and skip every one.
TEST(Bridge, TheInBridgeDeadBeforeJetStreamSawItsAcksPublishesNothingTwice) {
  NatsServer nats;
  ASSERT_TRUE(nats.start()) << nats.log();
  TwoHosts h;
  ASSERT_TRUE(h.start({nats.url()})) << h.logs();
  constexpr std::uint64_t kN = 8000;  // bus B holds 4 x 1024
  h.producer->publish(0, kN);
  // B full and the bridge's queue full: 2 x batch waiting (and one blocked).
  ASSERT_TRUE(wait_until([&] { return consumer_ack_pending(nats.url()) >= 512; }, 120s))
      << h.logs();
  ASSERT_EQ(::kill(nats.pid(), SIGSTOP), 0);
  const std::uint64_t tail_at_stop = h.b.bus->describe("orders").tail;
  h.checker->take_until(2000, 60s);  // room for what the bridge queued
  ASSERT_TRUE(
      wait_until([&] { return h.b.bus->describe("orders").tail >= tail_at_stop + 400; }, 60s))
      << h.logs();
  const std::uint64_t published_unacked = h.b.bus->describe("orders").tail - tail_at_stop;
  h.in->kill9();
  nats.kill9();  // SIGKILL ends a stopped process too
  ASSERT_TRUE(nats.start()) << nats.log();
  h.in->start();
  h.checker->take_until(kN, 240s);
  ASSERT_TRUE(wait_until([&] { return consumer_settled(nats.url()); }, 120s)) << h.logs();
  h.expect_each_once(kN);
  // The skipping happened, and for all of them (the status line at stop).
  ASSERT_EQ(h.in->stop(), 0) << h.logs();
  EXPECT_GE(last_counter(h.in->log(), "duplicates"), static_cast<std::int64_t>(published_unacked))
      << h.in->log();
}

TEST(Bridge, NatsServerSigkilledAndRestartedLosesNothing) {
  NatsServer nats;
  ASSERT_TRUE(nats.start()) << nats.log();
  TwoHosts h;
  ASSERT_TRUE(h.start({nats.url()})) << h.logs();
  constexpr std::uint64_t kN = 20'000;
  h.producer->publish(0, kN / 2);
  ASSERT_TRUE(wait_until([&] { return stream_messages(nats.url(), "hostA_orders") > 0; }, 60s))
      << h.logs();
  nats.kill9();
  ASSERT_TRUE(nats.restart()) << nats.log();
  h.producer->publish(kN / 2, kN);
  h.checker->take_until(kN, 240s);
  h.expect_each_once(kN, 500ms, nats.log());
}

TEST(Bridge, AClusterNodeSigkilledTheBridgesFailOver) {
  NatsCluster cluster(3);
  ASSERT_TRUE(cluster.start()) << cluster.node(0).log();
  TwoHosts h;
  // Node 0 first: the bridges connect there (nats.c tries the list in order
  // when told not to randomise; see the bridge's options) and lose it below.
  ASSERT_TRUE(h.start(cluster.url_list(), 3)) << h.logs();
  constexpr std::uint64_t kN = 20'000;
  h.producer->publish(0, kN / 2);
  const std::string url1 = cluster.node(1).url();
  ASSERT_TRUE(wait_until([&] { return stream_messages(url1, "hostA_orders") > 0; }, 60s))
      << h.logs();
  cluster.node(0).kill9();
  h.producer->publish(kN / 2, kN);
  h.checker->take_until(kN, 240s);
  h.expect_each_once(kN);
}

TEST(Bridge, AFullLocalTopicSlowsThePullAndDropsNothing) {
  NatsServer nats;
  ASSERT_TRUE(nats.start()) << nats.log();
  TwoHosts h;
  constexpr std::uint32_t kSlots = 16, kBatch = 32;
  ASSERT_TRUE(h.start({nats.url()}, 1, kSlots, kBatch)) << h.logs();
  constexpr std::uint64_t kN = 3000;
  h.producer->publish(0, kN);
  // Everything is in the stream, and bus B's topic is full (the checker has
  // taken nothing): its four partitions hold at most 4 x 16.
  ASSERT_TRUE(wait_until([&] { return stream_messages(nats.url(), "hostA_orders") == kN; }, 120s))
      << h.logs();
  const auto b_tail = [&] { return h.b.bus->open_topic("orders").status().tail; };
  // The in bridge pulled what fills the topic, its queue and one pull more.
  // (And one pull's worth that a pull which timed out may still bring.)
  const std::uint64_t bound = 4 * kSlots + 2 * kBatch + 2 * kBatch + 1;
  ASSERT_TRUE(wait_until(
      [&] { return consumer_delivered(nats.url(), "hostA_orders", "bridge-in-b") >= kSlots; }, 60s))
      << h.logs();
  ASSERT_TRUE(wait_until([&] { return b_tail() >= kSlots; }, 60s)) << h.logs();
  const std::uint64_t delivered = consumer_delivered(nats.url(), "hostA_orders", "bridge-in-b");
  EXPECT_LE(delivered, bound) << "the pull did not slow for a full topic";
  EXPECT_LE(b_tail(), 4u * kSlots);
  // Now consume: everything arrives, once, in key order.
  h.checker->take_until(kN, 240s);
  h.checker->take_rest(300ms);
  EXPECT_EQ(h.checker->distinct_, kN) << h.logs();
  EXPECT_EQ(h.checker->duplicates, 0u);
  EXPECT_EQ(h.checker->out_of_order, 0u);
}

// ---- bad configuration ------------------------------------------------------------------

struct BridgeRun {
  int rc;
  std::string err;
};
BridgeRun run_bridge(const Host& h, const std::string& config,
                     std::vector<std::string> extra = {}) {
  TempDir dir;
  const std::string path = dir.path + "/c.toml", err = dir.path + "/err";
  std::ofstream(path) << config;
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int fd = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    std::vector<const char*> argv = {SHMBUS_BRIDGE_PATH, "--config", path.c_str(),      "--bus",
                                     h.f.bus.c_str(),    "--socket", h.f.socket.c_str()};
    for (const std::string& e : extra)
      argv.push_back(e.c_str());
    argv.push_back(nullptr);
    ::execv(SHMBUS_BRIDGE_PATH, const_cast<char* const*>(argv.data()));
    ::_exit(127);
  }
  BridgeRun r{wait_child(pid, 60s), {}};
  std::ifstream f(err);
  std::stringstream s;
  s << f.rdbuf();
  r.err = s.str();
  return r;
}

TEST(Bridge, BadConfigurationFailsClearlyAndNeverHangs) {
  NatsServer nats;
  ASSERT_TRUE(nats.start()) << nats.log();
  Host h;
  ASSERT_TRUE(h.start());
  h.bus->create_topic("orders", orders_options());
  const std::string good = out_toml({nats.url()});

  BridgeRun r = run_bridge(h, good, {"--check"});
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.err.find("ok:"), std::string::npos) << r.err;

  r = run_bridge(h, "nats = [\"nats://127.0.0.1:4222\"\n[[out]]\n");
  EXPECT_EQ(r.rc, 2) << r.err;
  EXPECT_NE(r.err.find("malformed TOML at line"), std::string::npos) << r.err;

  r = run_bridge(h, good + "colour = \"red\"\n");
  EXPECT_EQ(r.rc, 2) << r.err;
  EXPECT_NE(r.err.find("colour is not a known key"), std::string::npos) << r.err;

  r = run_bridge(h,
                 servers_toml({nats.url()}) + "[[out]]\ntopic = \"orders\"\nsubject = \"a.*\"\n");
  EXPECT_EQ(r.rc, 2) << r.err;
  EXPECT_NE(r.err.find("wildcard"), std::string::npos) << r.err;

  r = run_bridge(h, servers_toml({nats.url()}) + "[[in]]\nsubject = \"x\"\ntopic = \"orders\"\n");
  EXPECT_EQ(r.rc, 2) << r.err;
  EXPECT_NE(r.err.find("durable is missing"), std::string::npos) << r.err;

  // An unknown topic, with --check and without.
  const std::string unknown =
      servers_toml({nats.url()}) + "[[out]]\ntopic = \"nosuch\"\nsubject = \"hostA.nosuch\"\n";
  for (const bool check : {true, false}) {
    r = run_bridge(h, unknown,
                   check ? std::vector<std::string>{"--check"} : std::vector<std::string>{});
    EXPECT_EQ(r.rc, 4) << r.err;
    EXPECT_NE(r.err.find("nosuch"), std::string::npos) << r.err;
  }

  // Nothing listens on this port: a clear error after connect_timeout.
  const int dead = free_port();
  r = run_bridge(h,
                 "connect_timeout = 1\n" + out_toml({"nats://127.0.0.1:" + std::to_string(dead)}));
  EXPECT_EQ(r.rc, 3) << r.err;
  EXPECT_NE(r.err.find("no NATS server answered"), std::string::npos) << r.err;

  // No --config: usage error.
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int fd = ::open("/dev/null", O_WRONLY);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    ::execl(SHMBUS_BRIDGE_PATH, SHMBUS_BRIDGE_PATH, static_cast<char*>(nullptr));
    ::_exit(127);
  }
  EXPECT_EQ(wait_child(pid, 30s), 2);
}

}  // namespace
}  // namespace shmbus::test
