// Issue 19: what shmbus-bridge moves through NATS JetStream, beside what the
// bare C client publishes to the same server in the same run, so the bridge's
// cost is a ratio. In interleaved rounds (the host's state moves between them):
//
//   bare     nats.c js_PublishAsync of N messages to a stream, async acks,
//            until js_PublishAsyncComplete
//   ids      the same, each message with what the bridge adds to it: a
//            Nats-Msg-Id (JetStream's duplicate window looks each one up), a
//            timestamp and a producer header
//   e2e      the same, and a durable pull consumer takes them meanwhile as the
//            in bridge does (explicit acks, pulls of 256), until it had all N:
//            the bare client doing the two bridges' work
//   out      N messages published to bus A's topic, the out bridge alone, until it had
//            every one acknowledged by JetStream (the stream holds N more)
//   a->b     N messages published to bus A, until bus B's subscriber has them
//            all: out bridge, JetStream, in bridge
//   latency  paced messages (--interval-us apart) A -> NATS -> B, publish
//            timestamp to receipt on B (one host: one CLOCK_MONOTONIC)
//
// nats-server (-js, a temporary store, a free port) and the two shmbusd are
// started here; the bridges run in this process (the bridge library), each on
// its own threads, as shmbus-bridge runs them.
//
// Each phase prints msg/s and CPU microseconds a message: this process (every
// thread) and the nats-server together. On two shared cores the rate moves
// with the neighbours; the CPU a message much less.
//
//   build/release/bench/shmbus-bridge-bench [--rounds 3] [--messages 50000]
//       [--sizes 64,4096] [--latency-samples 2000] [--interval-us 500] [--no-ab]
#include <nats/nats.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <sys/resource.h>
#include <unistd.h>

#include "bridge.hpp"
#include "nats_server.hpp"
#include "shmbus/shmbus.hpp"

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

std::uint64_t now_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000ULL +
         static_cast<std::uint64_t>(ts.tv_nsec);
}

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "bridge-bench: %s\n", what.c_str());
  std::exit(1);
}

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// CPU time used by this process (every thread: publishers, bridges, nats.c)
// and by the nats-server, in seconds. On two shared cores wall-clock rates
// move with the neighbours; CPU time per message moves much less.
pid_t g_server_pid = -1;
double cpu_seconds() {
  rusage ru{};
  ::getrusage(RUSAGE_SELF, &ru);
  double t = static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
             static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
  std::ifstream f("/proc/" + std::to_string(g_server_pid) + "/stat");
  std::string line;
  std::getline(f, line);
  // Fields after the command's closing parenthesis; utime and stime are the
  // 14th and 15th of the line (12th and 13th after it).
  const std::size_t close = line.rfind(')');
  if (close != std::string::npos) {
    std::istringstream rest(line.substr(close + 2));
    std::string field;
    unsigned long long ut = 0, st = 0;
    for (int i = 1; i <= 13 && rest >> field; ++i) {
      if (i == 12) ut = std::stoull(field);
      if (i == 13) st = std::stoull(field);
    }
    t += static_cast<double>(ut + st) / static_cast<double>(::sysconf(_SC_CLK_TCK));
  }
  return t;
}

// One timed phase: messages a second, and CPU microseconds a message.
struct Result {
  double rate = 0;
  double cpu_us = 0;
};
struct Meter {
  Clock::time_point t0 = Clock::now();
  double c0 = cpu_seconds();
  [[nodiscard]] Result done(std::uint64_t n) const {
    const double wall = seconds_since(t0);
    return {static_cast<double>(n) / wall, (cpu_seconds() - c0) * 1e6 / static_cast<double>(n)};
  }
};

std::uint64_t stream_messages(jsCtx* js, const std::string& stream) {
  jsStreamInfo* si = nullptr;
  std::uint64_t n = 0;
  if (js_GetStreamInfo(&si, js, stream.c_str(), nullptr, nullptr) == NATS_OK) {
    n = si->State.Msgs;
    jsStreamInfo_Destroy(si);
  }
  return n;
}

// Waits (up to 60 s) until every async publish of `js` has its ack.
void wait_acks(jsCtx* js) {
  jsPubOptions done;
  jsPubOptions_Init(&done);
  done.MaxWait = 60'000;
  if (const natsStatus s = js_PublishAsyncComplete(js, &done); s != NATS_OK)
    die(std::string("js_PublishAsyncComplete: ") + natsStatus_GetText(s));
}

// The bare C client: N async publishes with acks, as fast as it goes.
Result bare_rate(jsCtx* js, const std::string& subject, std::size_t size, std::uint64_t n) {
  std::vector<char> payload(size, 'x');
  jsPubOptions po;
  jsPubOptions_Init(&po);
  const Meter meter;
  for (std::uint64_t i = 0; i < n; ++i) {
    std::memcpy(payload.data(), &i, sizeof i);
    natsStatus s;
    while ((s = js_PublishAsync(js, subject.c_str(), payload.data(), static_cast<int>(size),
                                &po)) == NATS_TIMEOUT) {
      // MaxPending reached and StallWait passed: wait and go on.
    }
    if (s != NATS_OK) die(std::string("js_PublishAsync: ") + natsStatus_GetText(s));
  }
  wait_acks(js);
  return meter.done(n);
}

// The bare C client sending what the bridge sends for a one-partition topic:
// the same payload with a Nats-Msg-Id (as long as the bridge's), a
// timestamp and a producer header. The Msg-Id is what costs: JetStream looks
// every one up in its duplicate window.
//
// With `consume`, a durable pull consumer takes them meanwhile as the in
// bridge does (explicit acks, pulls of 256), and the time runs until it had
// all N: the bare client doing what the two bridges do.
Result bare_ids_rate(jsCtx* js, const std::string& stream, const std::string& subject,
                     std::size_t size, std::uint64_t n, bool consume = false) {
  static int serial = 0;
  std::atomic<std::uint64_t> taken{0};
  std::thread consumer;
  natsSubscription* pull = nullptr;
  if (consume) {
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = stream.c_str();
    so.Config.AckPolicy = js_AckExplicit;
    so.Config.DeliverPolicy = js_DeliverNew;
    so.Config.MaxAckPending = 4 * 256 + 1024;
    const std::string durable = "bare-e2e-" + std::to_string(serial);
    jsErrCode e = static_cast<jsErrCode>(0);
    if (js_PullSubscribe(&pull, js, subject.c_str(), durable.c_str(), nullptr, &so, &e) != NATS_OK)
      die("js_PullSubscribe");
    consumer = std::thread([&] {
      const auto until = Clock::now() + 300s;
      while (taken.load(std::memory_order_relaxed) < n && Clock::now() < until) {
        natsMsgList list{};
        jsErrCode fe = static_cast<jsErrCode>(0);
        if (natsSubscription_Fetch(&list, pull, 256, 500, &fe) != NATS_OK) continue;
        for (int i = 0; i < list.Count; ++i)
          natsMsg_Ack(list.Msgs[i], nullptr);
        // Relaxed: a count read by the publisher's thread only to end the wait.
        taken.fetch_add(static_cast<std::uint64_t>(list.Count), std::memory_order_relaxed);
        natsMsgList_Destroy(&list);
      }
    });
  }
  const std::string prefix = "bridge-bench-a-" + std::to_string(::getpid()) + "/orders/" +
                             std::to_string(++serial) + "/0/";
  std::vector<char> payload(size, 'x');
  jsPubOptions po;
  jsPubOptions_Init(&po);
  const Meter meter;
  for (std::uint64_t i = 0; i < n; ++i) {
    std::memcpy(payload.data(), &i, sizeof i);
    natsMsg* m = nullptr;
    if (natsMsg_Create(&m, subject.c_str(), nullptr, payload.data(), static_cast<int>(size)) !=
        NATS_OK)
      die("natsMsg_Create");
    const std::string id = prefix + std::to_string(i);
    if (natsMsgHeader_Set(m, "Nats-Msg-Id", id.c_str()) != NATS_OK ||
        natsMsgHeader_Set(m, shmbus::bridge::kHeaderTimestamp, std::to_string(now_ns()).c_str()) !=
            NATS_OK ||
        natsMsgHeader_Set(m, shmbus::bridge::kHeaderProducer, "1") != NATS_OK)
      die("natsMsgHeader_Set");
    natsStatus s;
    while ((s = js_PublishMsgAsync(js, &m, &po)) == NATS_TIMEOUT) {
      // MaxPending reached and StallWait passed: wait and go on.
    }
    natsMsg_Destroy(m);  // nullptr once nats.c took it
    if (s != NATS_OK) die(std::string("js_PublishMsgAsync: ") + natsStatus_GetText(s));
  }
  wait_acks(js);
  if (consume) {
    consumer.join();
    if (taken.load(std::memory_order_relaxed) < n) die("the bare consumer did not get them all");
  }
  const Result r = meter.done(n);
  if (pull != nullptr) {
    natsSubscription_Unsubscribe(pull);  // deletes the durable (made by this subscribe)
    natsSubscription_Destroy(pull);
  }
  return r;
}

// Two buses with an "orders" topic each, and a durable subscriber on B's.
struct Buses {
  shmbus::Bus a, b;
  std::unique_ptr<shmbus::Subscriber> sub;
  Buses(const shmbus::BusOptions& oa, const shmbus::BusOptions& ob, std::uint32_t slots,
        std::uint32_t slot_size)
      : a(shmbus::Bus::connect(oa)), b(shmbus::Bus::connect(ob)) {
    shmbus::TopicOptions to;
    to.slot_count = slots;
    to.slot_size = slot_size;
    a.create_topic("orders", to);
    b.create_topic("orders", to);
    shmbus::SubscriberOptions so;
    so.group = "bench";
    so.durable = true;
    so.start = shmbus::StartFrom::Earliest;
    sub = b.subscriber("orders", so);
  }
};

struct Bridges {
  shmbus::BusOptions a, b;
  std::unique_ptr<shmbus::bridge::Bridge> out, in;
  std::thread out_thread, in_thread;
  void start(const std::string& url, const std::string& subject, bool with_in = true) {
    shmbus::bridge::Config co;
    co.servers = {url};
    co.status_interval = 0ms;
    shmbus::bridge::OutRoute o;
    o.topic = "orders";
    o.subject = subject;
    o.stream = shmbus::bridge::stream_name_for(subject);
    co.outs.push_back(o);
    shmbus::bridge::Config ci = co;
    ci.outs.clear();
    shmbus::bridge::InRoute in_route;
    in_route.subject = subject;
    in_route.topic = "orders";
    in_route.durable = "bench-in";
    in_route.stream = o.stream;
    ci.ins.push_back(in_route);
    out = std::make_unique<shmbus::bridge::Bridge>(co, a);
    out_thread = std::thread([this] {
      if (out->run() != 0) die("the out bridge failed to start");
    });
    if (!with_in) return;
    in = std::make_unique<shmbus::bridge::Bridge>(ci, b);
    in_thread = std::thread([this] {
      if (in->run() != 0) die("the in bridge failed to start");
    });
  }
  void stop() {
    out->stop();
    if (in) in->stop();
    out_thread.join();
    if (in_thread.joinable()) in_thread.join();
    out.reset();
    in.reset();
  }
};

// One round through the bridges: N messages published to bus A, timed until
// the stream holds them all (out only: no in bridge runs meanwhile) or until
// bus B's subscriber has them all (a->b). A fresh pair of buses and a stream
// of its own each time.
Result bridge_round(const std::string& url, jsCtx* js, std::size_t size, std::uint64_t n,
                    bool with_in, const std::string& tag) {
  static int serial = 0;
  const std::string id = std::to_string(::getpid()) + "-" + std::to_string(serial++);
  shmbus::BusOptions a, b;
  a.bus = "bridge-bench-a-" + id;
  b.bus = "bridge-bench-b-" + id;
  a.daemon_path = b.daemon_path = SHMBUSD_PATH;
  Buses buses(a, b, 4096, static_cast<std::uint32_t>(std::max<std::size_t>(size, 64) + 256));
  shmbus::Bus& bus_a = buses.a;
  auto& sub = buses.sub;
  const std::string subject = std::string("bench.") + (with_in ? "ab." : "out.") + tag;
  const std::string stream = shmbus::bridge::stream_name_for(subject);
  Bridges br{a, b, {}, {}, {}, {}};
  br.start(url, subject, with_in);
  // The out bridge has joined once its group has a member.
  const auto joined = [&] {
    for (const auto& g : bus_a.open_topic("orders").status().groups)
      if (g.name == "bridge-out" && g.members > 0) return true;
    return false;
  };
  const auto until = Clock::now() + 30s;
  while (!joined())
    if (Clock::now() > until) die("the out bridge did not join");
  shmbus::PublisherOptions po;
  po.timeout = 60s;
  shmbus::Publisher pub = bus_a.publisher("orders", po);
  std::vector<std::byte> payload(size, std::byte{'x'});
  const Meter meter;
  std::uint64_t got = 0;
  shmbus::Sample s;
  const auto take = [&] {
    while (with_in && sub->try_receive(s) == shmbus::Status::Ok) {
      ++got;
      s.release();
    }
  };
  for (std::uint64_t i = 0; i < n; ++i) {
    std::memcpy(payload.data(), &i, sizeof i);
    if (pub.publish(payload) != shmbus::Status::Ok) die("local publish");
    if ((i & 255) == 0) take();
  }
  for (;;) {
    if (with_in) {
      if (sub->receive(s, 100ms) == shmbus::Status::Ok) {
        ++got;
        s.release();
        take();
      }
      if (got >= n) break;
    } else {
      if (stream_messages(js, stream) >= n) break;
      std::this_thread::sleep_for(2ms);  // a JetStream API request per look: not too often
    }
    if (seconds_since(meter.t0) > 300) die("a bridge round did not finish in 300 s");
  }
  const Result r = meter.done(n);
  br.stop();
  return r;
}

struct Args {
  int rounds = 3;
  std::uint64_t messages = 50'000;
  std::vector<std::size_t> sizes{64, 4096};
  int latency_samples = 2000;
  int interval_us = 500;
  bool ab = true;  // --no-ab: leave out the a->b rounds (profiling the out path)
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    const auto next = [&]() -> std::string {
      if (i + 1 >= argc) die("missing value after " + k);
      return argv[++i];
    };
    if (k == "--rounds") {
      a.rounds = std::stoi(next());
    } else if (k == "--messages") {
      a.messages = std::stoull(next());
    } else if (k == "--sizes") {
      a.sizes.clear();
      std::string v = next();
      for (std::size_t p = 0; p < v.size();) {
        const std::size_t c = v.find(',', p);
        a.sizes.push_back(std::stoul(v.substr(p, c - p)));
        p = c == std::string::npos ? v.size() : c + 1;
      }
    } else if (k == "--latency-samples") {
      a.latency_samples = std::stoi(next());
    } else if (k == "--interval-us") {
      a.interval_us = std::stoi(next());
    } else if (k == "--no-ab") {
      a.ab = false;
    } else {
      die("unknown argument " + k +
          " (--rounds N --messages N --sizes 64,4096 --latency-samples N --interval-us N --no-ab)");
    }
  }
  return a;
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[static_cast<std::size_t>(p * static_cast<double>(v.size() - 1))];
}

}  // namespace

int main(int argc, char** argv) {
  const Args args = parse(argc, argv);
  spdlog::set_level(spdlog::level::warn);
  shmbus::test::NatsServer server;
  if (!server.start()) die("nats-server did not start:\n" + server.log());
  g_server_pid = server.pid();
  natsConnection* nc = nullptr;
  if (natsConnection_ConnectTo(&nc, server.url().c_str()) != NATS_OK) die("cannot connect");
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.PublishAsync.MaxPending = 4096;  // as the bridge's default max_in_flight
  jsCtx* js = nullptr;
  if (natsConnection_JetStream(&js, nc, &jo) != NATS_OK) die("no JetStream context");

  std::printf("# shmbus-bridge against the bare nats.c client, one nats-server -js (file store)\n");
  std::printf("# %llu messages a round, %d rounds, interleaved\n",
              static_cast<unsigned long long>(args.messages), args.rounds);
  std::printf("# msg/s, then CPU us a message (this process and the nats-server together)\n");
  std::printf("%-5s %-3s %8s %8s %8s %8s %8s %5s %5s %5s %5s %5s %8s %8s %9s %9s\n", "size", "rnd",
              "bare", "ids", "e2e", "out", "a->b", "bare", "ids", "e2e", "out", "a->b", "out/bare",
              "out/ids", "a->b/bare", "a->b/e2e");
  for (const std::size_t size : args.sizes) {
    std::vector<double> ratio_out, ratio_ids, ratio_ab, ratio_e2e, cpu_out;
    for (int r = 0; r < args.rounds; ++r) {
      const std::string tag = std::to_string(size) + "_" + std::to_string(r);
      // Bare: its own stream, the same storage and window the bridge uses.
      const std::string bare_subject = "bench.bare." + tag;
      {
        jsStreamConfig sc;
        jsStreamConfig_Init(&sc);
        const std::string name = "BARE_" + tag;
        const char* subj[] = {bare_subject.c_str()};
        sc.Name = name.c_str();
        sc.Subjects = subj;
        sc.SubjectsLen = 1;
        sc.Storage = js_FileStorage;
        sc.Duplicates = std::chrono::nanoseconds(120s).count();
        jsStreamInfo* si = nullptr;
        if (js_AddStream(&si, js, &sc, nullptr, nullptr) != NATS_OK) die("add stream");
        jsStreamInfo_Destroy(si);
      }
      const Result bare = bare_rate(js, bare_subject, size, args.messages);
      const std::string bare_stream = "BARE_" + tag;
      const Result ids = bare_ids_rate(js, bare_stream, bare_subject, size, args.messages);
      const Result e2e =
          args.ab ? bare_ids_rate(js, bare_stream, bare_subject, size, args.messages, true)
                  : Result{0, 0};
      const Result out = bridge_round(server.url(), js, size, args.messages, false, tag);
      const Result ab =
          args.ab ? bridge_round(server.url(), js, size, args.messages, true, tag) : Result{0, 0};
      const double ab_e2e = e2e.rate > 0 ? ab.rate / e2e.rate : 0;
      std::printf(
          "%-5zu %-3d %8.0f %8.0f %8.0f %8.0f %8.0f %5.1f %5.1f %5.1f %5.1f %5.1f %8.2f %8.2f "
          "%9.2f "
          "%9.2f\n",
          size, r, bare.rate, ids.rate, e2e.rate, out.rate, ab.rate, bare.cpu_us, ids.cpu_us,
          e2e.cpu_us, out.cpu_us, ab.cpu_us, out.rate / bare.rate, out.rate / ids.rate,
          ab.rate / bare.rate, ab_e2e);
      std::fflush(stdout);
      ratio_out.push_back(out.rate / bare.rate);
      ratio_ids.push_back(out.rate / ids.rate);
      ratio_ab.push_back(ab.rate / bare.rate);
      ratio_e2e.push_back(ab_e2e);
      cpu_out.push_back(out.cpu_us / ids.cpu_us);
    }
    std::printf(
        "%-5zu median: out/bare %.2f, out/ids %.2f, a->b/bare %.2f, a->b/e2e %.2f; CPU a message "
        "out/ids %.2f\n",
        size, percentile(ratio_out, 0.5), percentile(ratio_ids, 0.5), percentile(ratio_ab, 0.5),
        percentile(ratio_e2e, 0.5), percentile(cpu_out, 0.5));
  }

  // Latency: paced messages through the whole path.
  {
    shmbus::BusOptions a, b;
    a.bus = "bridge-bench-a-" + std::to_string(::getpid()) + "-lat";
    b.bus = "bridge-bench-b-" + std::to_string(::getpid()) + "-lat";
    a.daemon_path = b.daemon_path = SHMBUSD_PATH;
    Buses buses(a, b, 1024, 256);
    shmbus::Bus& bus_a = buses.a;
    auto& sub = buses.sub;
    Bridges br{a, b, {}, {}, {}, {}};
    br.start(server.url(), "bench.latency");
    shmbus::Publisher pub = bus_a.publisher("orders");
    std::vector<double> us;
    // Warm up (the stream and the consumer are made by the first messages).
    for (int i = 0; i < args.latency_samples + 200; ++i) {
      const std::uint64_t t = now_ns();
      if (pub.publish(std::as_bytes(std::span(&t, 1))) != shmbus::Status::Ok) die("publish");
      shmbus::Sample s;
      if (sub->receive(s, 10s) != shmbus::Status::Ok) die("latency: a message did not arrive");
      std::uint64_t sent = 0;
      std::memcpy(&sent, s.data().data(), sizeof sent);
      if (i >= 200) us.push_back(static_cast<double>(now_ns() - sent) / 1000.0);
      std::this_thread::sleep_for(std::chrono::microseconds(args.interval_us));
    }
    br.stop();
    std::printf(
        "latency A -> NATS -> B, 8 B, one at a time: p50 %.0f us, p99 %.0f us, max %.0f us "
        "(%zu samples)\n",
        percentile(us, 0.5), percentile(us, 0.99), percentile(us, 1.0), us.size());
  }
  jsCtx_Destroy(js);
  natsConnection_Destroy(nc);
  nats_Close();
  return 0;
}
