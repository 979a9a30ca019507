// The bridge's two directions and its connection (docs/bridge.md).
//
// Threads: per [[out]], one thread owns the at-least-once Subscriber; it
// publishes to JetStream asynchronously and takes the outcome of each publish
// from a synchronous subscription of its own, which nats.c's reader fills. Per [[in]], a fetch
// thread pulls batches from the durable consumer into a moodycamel queue, and a publish thread
// publishes them into the local topic and acknowledges them. The main thread prints the status.
#include "bridge.hpp"

#include <nats/nats.h>
#include <spdlog/spdlog.h>
#include <time.h>

#include <concurrentqueue/blockingconcurrentqueue.h>
#include <charconv>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include "shmbus/detail/layout.hpp"  // kNameMax: report names follow topic names
#include "shmbus/error.hpp"
#include "shmbus/publisher.hpp"
#include "shmbus/subscriber.hpp"
#include "shmbus/topic.hpp"

namespace shmbus::bridge {

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

std::string text_of(natsStatus s) {
  std::string t = natsStatus_GetText(s);
  const char* last = nats_GetLastError(nullptr);
  if (last != nullptr && *last != '\0') t += std::string(" (") + last + ")";
  return t;
}

// Sleeps up to `d`, in slices, returning early once `stop` is set.
void nap(const std::atomic<bool>& stop, std::chrono::milliseconds d) {
  const auto end = Clock::now() + d;
  // Relaxed: a flag polled; nothing is published through it.
  while (!stop.load(std::memory_order_relaxed) && Clock::now() < end)
    std::this_thread::sleep_for(std::min<Clock::duration>(end - Clock::now(), 20ms));
}

// Exponential back-off from 50 ms to 2 s.
std::chrono::milliseconds backoff(int attempt) {
  return std::chrono::milliseconds(std::min<std::int64_t>(2000, 50LL << std::min(attempt, 6)));
}

// Wall-clock ns minus CLOCK_MONOTONIC ns now: turns a message's monotonic
// publish stamp into a time another host can read.
std::int64_t wall_minus_mono() {
  timespec w{}, m{};
  ::clock_gettime(CLOCK_REALTIME, &w);
  ::clock_gettime(CLOCK_MONOTONIC, &m);
  return (std::int64_t{w.tv_sec} - m.tv_sec) * 1'000'000'000 + (w.tv_nsec - m.tv_nsec);
}

std::uint64_t wall_now_ns() {
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                        std::chrono::system_clock::now().time_since_epoch())
                                        .count());
}

// Creates the stream for `subject` unless it exists. False (with `why`)
// while JetStream cannot answer; callers retry.
bool ensure_stream(jsCtx* js, const std::string& name, const std::string& subject, int replicas,
                   std::chrono::seconds window, std::string& why) {
  jsStreamInfo* si = nullptr;
  jsErrCode e = static_cast<jsErrCode>(0);
  natsStatus s = js_GetStreamInfo(&si, js, name.c_str(), nullptr, &e);
  if (s == NATS_OK) {
    jsStreamInfo_Destroy(si);
    return true;
  }
  if (s != NATS_NOT_FOUND && e != JSStreamNotFoundErr) {
    why = "stream info of " + name + ": " + text_of(s);
    return false;
  }
  jsStreamConfig sc;
  jsStreamConfig_Init(&sc);
  const char* subjects[] = {subject.c_str()};
  sc.Name = name.c_str();
  sc.Subjects = subjects;
  sc.SubjectsLen = 1;
  sc.Storage = js_FileStorage;
  sc.Replicas = replicas;
  sc.Duplicates = std::chrono::duration_cast<std::chrono::nanoseconds>(window).count();
  e = static_cast<jsErrCode>(0);
  s = js_AddStream(&si, js, &sc, nullptr, &e);
  if (s == NATS_OK) {
    jsStreamInfo_Destroy(si);
    spdlog::info(
        "created JetStream stream {} (subject {}, file storage, {} replica(s), "
        "duplicate window {} s)",
        name, subject, replicas, window.count());
    return true;
  }
  if (e == JSStreamNameExistErr) return true;  // made meanwhile (another bridge)
  why = "creating stream " + name + " for " + subject + ": " + text_of(s);
  return false;
}

// A natsMsg that destroys itself.
struct MsgPtr {
  natsMsg* m = nullptr;
  MsgPtr() = default;
  explicit MsgPtr(natsMsg* p) : m(p) {}
  MsgPtr(MsgPtr&& o) noexcept : m(std::exchange(o.m, nullptr)) {}
  MsgPtr& operator=(MsgPtr&& o) noexcept {
    std::swap(m, o.m);
    return *this;
  }
  ~MsgPtr() { natsMsg_Destroy(m); }
};

const char* header(natsMsg* m, const char* name) {
  const char* v = nullptr;
  return natsMsgHeader_Get(m, name, &v) == NATS_OK ? v : nullptr;
}

bool number(const char* text, std::uint64_t& out) {
  if (text == nullptr) return false;
  const std::string_view t(text);
  const auto r = std::from_chars(t.data(), t.data() + t.size(), out);
  return r.ec == std::errc{} && r.ptr == t.data() + t.size() && !t.empty();
}

}  // namespace

// ---- shared state ---------------------------------------------------------------------

struct OutWorker;
struct InWorker;

// One route's counters, as the status line and `shmbus stat` show them.
std::vector<ReportCounter> route_counters(const RouteCounters& c, bool out) {
  // Relaxed loads: statistics.
  const auto v = [](const auto& a) { return a.load(std::memory_order_relaxed); };
  return {{"forwarded", v(c.forwarded)},
          {"acked", v(c.acked)},
          {"redelivered", v(c.redelivered)},
          {"in_flight", static_cast<std::uint64_t>(std::max<std::int64_t>(0, v(c.in_flight)))},
          {"duplicates", v(c.duplicates)},
          out ? ReportCounter{"resent", v(c.resent)} : ReportCounter{"refused", v(c.refused)}};
}

struct Bridge::Impl {
  Config cfg;
  BusOptions bus_opts;
  std::atomic<bool> stopping{false};
  std::atomic<bool> closing{false};  // our own close: not a disconnection to log
  std::optional<Bus> bus;
  natsConnection* nc = nullptr;
  std::atomic<std::uint64_t> reconnects{0};
  std::atomic<std::uint64_t> disconnects{0};
  std::vector<std::unique_ptr<OutWorker>> outs;
  std::vector<std::unique_ptr<InWorker>> ins;

  // The name each route's counters go under in `shmbus stat` (its local
  // topic, made unique), outs first; empty past what a connection may hold.
  std::vector<std::string> report_names;
  bool report_failed = false;  // logged once

  int open_bus(std::string& why);
  int connect_nats(std::string& why);
  void name_reports();
  void report();
};

// ---- out: local topic -> JetStream -------------------------------------------------------

struct OutWorker {
  // One publish's outcome, read off its ack.
  struct Ack {
    std::uint32_t partition = 0;
    std::uint64_t offset = 0;
    bool ok = false;
    bool duplicate = false;
    natsStatus err = NATS_OK;
    int code = 0;
  };
  // A batch taken from the group and sent; released once every message of
  // it was acknowledged. state: 0 sent, 1 acknowledged, 2 failed.
  struct Held {
    Batch batch;
    Clock::time_point sent;
    std::uint32_t partition = 0;
    std::uint64_t first = 0;
    std::uint32_t count = 0;
    std::uint32_t resolved = 0;
    std::uint32_t failed = 0;
    std::vector<std::uint8_t> state;
  };

  Bridge::Impl& br;
  const OutRoute& r;
  RouteCounters c;
  std::string name;  // for logs: topic->subject
  jsCtx* js = nullptr;
  std::unique_ptr<Subscriber> sub;
  std::uint64_t generation = 0;
  bool priorities = false;
  std::uint32_t lanes = 1;  // partitions, or priority lanes
  std::deque<Held> held;
  std::int64_t in_flight = 0;
  bool recovering = false;
  std::thread th;
  // The acks. Each message goes out with the reply subject
  // "<inbox>.<partition>.<offset>", and JetStream answers there; one wildcard
  // subscription takes every answer. The reply names the message, so nats.c
  // keeps nothing per message (its async publish keeps the message, an inbox
  // and a map entry until the ack, and builds a JSON tree for each ack: a
  // third of the bridge's CPU). The subscription is synchronous and this
  // thread reads it between batches: no thread of nats.c's to wake for each
  // ack. An ack that does not come within kAckWait counts as a failure, as
  // with nats.c's MaxWait.
  static constexpr auto kAckWait = 5s;
  natsSubscription* ack_sub = nullptr;
  std::string inbox;      // "_INBOX.<nuid>."
  std::string id_prefix;  // message_id_prefix(bus, topic, generation)
  std::string reply_buf, id_buf;
  Clock::time_point next_expiry{};

  OutWorker(Bridge::Impl& b, const OutRoute& route)
      : br(b), r(route), name(route.topic + "->" + route.subject) {}

  ~OutWorker() {
    close_acks();
    if (js != nullptr) jsCtx_Destroy(js);
  }

  // Reads one ack. The subject is the server's echo of our reply subject,
  // the payload the server's JSON: both are checked (parse_*); an answer
  // that names no message of ours is dropped.
  bool read_ack(natsMsg* msg, Ack& a) const {
    const char* subject = natsMsg_GetSubject(msg);
    const std::string_view subj = subject != nullptr ? subject : "";
    if (subj.size() <= inbox.size() || !subj.starts_with(inbox) ||
        !parse_ack_token(subj.substr(inbox.size()), a.partition, a.offset))
      return false;
    if (natsMsg_IsNoResponders(msg)) {
      a.err = NATS_NO_RESPONDERS;  // no stream takes the subject (yet): failed
      return true;
    }
    const int n = natsMsg_GetDataLength(msg);
    const char* d = natsMsg_GetData(msg);
    const PubAck pa = parse_pub_ack(
        d != nullptr && n > 0 ? std::string_view(d, static_cast<std::size_t>(n)) : "");
    a.ok = pa.ok;
    a.duplicate = pa.duplicate;
    a.code = pa.err_code;
    if (!pa.ok) a.err = NATS_ERR;
    return true;
  }

  void close_acks() {
    if (ack_sub == nullptr) return;
    natsSubscription_Unsubscribe(ack_sub);  // fails only once the connection is closed
    natsSubscription_Destroy(ack_sub);
    ack_sub = nullptr;
  }

  // Sets up the subscriber and the JetStream context; throws Error.
  void open() {
    Topic t = br.bus->open_topic(r.topic);
    const TopicStatus st = t.status();
    generation = st.generation;
    priorities = st.options.priorities > 1;
    lanes = st.options.rings();
    SubscriberOptions so;
    so.group = r.group;
    so.durable = true;  // the group holds messages back while the bridge is down
    so.delivery = Delivery::AtLeastOnce;
    // A bridge that crashes redelivers what it held: it must not dead-letter
    // messages because it crashed a few times.
    so.max_deliveries = 1000;
    so.start = StartFrom::Earliest;
    // The network is milliseconds away: spinning for a message on an empty
    // ring would only take the core from nats.c and the server. Sleep at once.
    so.spin = std::chrono::nanoseconds(0);
    sub = t.subscriber(so);
    id_prefix = message_id_prefix(br.bus_opts.bus, r.topic, generation);
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = 5000;
    if (const natsStatus s = natsConnection_JetStream(&js, br.nc, &jo); s != NATS_OK)
      throw Error(ErrorCode::SystemError, "JetStream context: " + text_of(s));
    natsInbox* ib = nullptr;
    if (const natsStatus s = natsInbox_Create(&ib); s != NATS_OK)
      throw Error(ErrorCode::SystemError, "an inbox: " + text_of(s));
    inbox = std::string(ib) + ".";
    natsInbox_Destroy(ib);
    natsStatus s = natsConnection_SubscribeSync(&ack_sub, br.nc, (inbox + "*.*").c_str());
    // More acks than messages in flight can be pending only if late ones
    // pile up; beyond this nats.c drops them and the messages time out.
    if (s == NATS_OK)
      s = natsSubscription_SetPendingLimits(
          ack_sub, std::max(65536, 4 * static_cast<int>(r.max_in_flight)), 64 << 20);
    if (s != NATS_OK) throw Error(ErrorCode::SystemError, "the ack subscription: " + text_of(s));
  }

  // One message for JetStream; with_reply: for the async path (acks to our
  // inbox), else for js_PublishMsg (which sets its own).
  natsMsg* build(const Batch& b, std::size_t i, std::int64_t clock_shift, bool with_reply) {
    const MessageInfo info = b.info(i);
    const std::span<const std::byte> data = b.data(i);
    // Both strings are reused: no allocation once they are long enough.
    if (with_reply) {
      reply_buf.assign(inbox);
      append_position(reply_buf, info.partition, '.', info.sequence);
    }
    id_buf.assign(id_prefix);
    append_position(id_buf, info.partition, '/', info.sequence);
    natsMsg* m = nullptr;
    if (natsMsg_Create(&m, r.subject.c_str(), with_reply ? reply_buf.c_str() : nullptr,
                       reinterpret_cast<const char*>(data.data()),
                       static_cast<int>(data.size())) != NATS_OK)
      return nullptr;
    natsStatus s = natsMsgHeader_Set(m, "Nats-Msg-Id", id_buf.c_str());
    const std::span<const std::byte> key = b.key(i);
    if (s == NATS_OK && !key.empty())
      s = natsMsgHeader_Set(m, kHeaderKey, percent_encode(key).c_str());
    // Each header costs nats.c an allocation and the server bytes to parse
    // and store: one-ring topics leave the partition out (it is always 0).
    if (s == NATS_OK && lanes > 1)
      s = natsMsgHeader_Set(m, priorities ? kHeaderPriority : kHeaderPartition,
                            std::to_string(info.partition).c_str());
    if (s == NATS_OK)
      s = natsMsgHeader_Set(
          m, kHeaderTimestamp,
          std::to_string(static_cast<std::int64_t>(info.timestamp_ns) + clock_shift).c_str());
    if (s == NATS_OK)
      s = natsMsgHeader_Set(m, kHeaderProducer, std::to_string(info.producer_id).c_str());
    if (s == NATS_OK && info.deliver_at_ns != 0)
      s = natsMsgHeader_Set(m, kHeaderDue, std::to_string(info.deliver_at_ns).c_str());
    const Properties props = b.properties(i);
    if (s == NATS_OK && props.begin() != props.end())
      s = natsMsgHeader_Set(m, kHeaderProperties, encode_properties(props).c_str());
    if (s != NATS_OK) {
      natsMsg_Destroy(m);
      return nullptr;
    }
    return m;
  }

  void send(Batch&& b) {
    Held h;
    h.count = static_cast<std::uint32_t>(b.size());
    h.partition = b.partition();
    h.first = b.first_sequence();
    h.state.assign(h.count, 0);
    h.sent = Clock::now();
    const std::int64_t shift = wall_minus_mono();
    for (std::uint32_t i = 0; i < h.count; ++i) {
      if (recovering) {
        // After a failure nothing more goes out asynchronously: the rest
        // waits for resend_failed(), in order.
        h.state[i] = 2;
        ++h.resolved;
        ++h.failed;
        continue;
      }
      natsMsg* m = build(b, i, shift, true);
      // Buffered by nats.c (also while it reconnects, up to its reconnect
      // buffer); the ack comes to ack_sub.
      const natsStatus s = m == nullptr ? NATS_NO_MEMORY : natsConnection_PublishMsg(br.nc, m);
      natsMsg_Destroy(m);
      if (s != NATS_OK) {
        h.state[i] = 2;
        ++h.resolved;
        ++h.failed;
        fail(s, 0);
      } else {
        ++in_flight;
      }
    }
    c.forwarded.fetch_add(h.count, std::memory_order_relaxed);  // relaxed: a statistic
    if (b.redelivered()) c.redelivered.fetch_add(h.count, std::memory_order_relaxed);
    h.batch = std::move(b);
    held.push_back(std::move(h));
    settle_front();
  }

  void fail(natsStatus s, int code) {
    if (!recovering)
      spdlog::warn("out {}: a publish failed ({}{}): pausing; what failed is sent again in order",
                   name, text_of(s), code != 0 ? ", JetStream error " + std::to_string(code) : "");
    recovering = true;
  }

  void resolve(const Ack& a) {
    for (Held& h : held) {
      if (h.partition != a.partition || a.offset < h.first || a.offset >= h.first + h.count)
        continue;
      std::uint8_t& st = h.state[a.offset - h.first];
      if (st != 0) return;  // resolved already (a late ack after a time-out)
      --in_flight;
      ++h.resolved;
      if (a.ok) {
        st = 1;
        c.acked.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
        if (a.duplicate) c.duplicates.fetch_add(1, std::memory_order_relaxed);
      } else {
        st = 2;
        ++h.failed;
        fail(a.err, a.code);
      }
      return;
    }
  }

  // Releases every batch whose messages were all acknowledged.
  void settle_front() {
    std::erase_if(held, [](Held& h) {
      if (h.resolved != h.count || h.failed != 0) return false;
      h.batch.release();  // acknowledged by JetStream: the group may forget it
      return true;
    });
    c.in_flight.store(in_flight, std::memory_order_relaxed);  // relaxed: a statistic
  }

  // Takes the acks that came, waiting up to `wait` for the first.
  void drain_acks(std::chrono::milliseconds wait) {
    auto timeout = static_cast<std::int64_t>(wait.count());
    for (;;) {
      natsMsg* raw = nullptr;
      const natsStatus s = natsSubscription_NextMsg(&raw, ack_sub, timeout);
      timeout = 0;                            // the rest only if there already
      if (s == NATS_SLOW_CONSUMER) continue;  // acks dropped: those messages time out
      if (s != NATS_OK) break;                // none (or closing)
      MsgPtr m(raw);
      Ack a;
      if (read_ack(m.m, a)) resolve(a);
    }
    expire();
    settle_front();
  }

  // Messages sent kAckWait ago without an answer failed (the ack was lost,
  // say, in a reconnect): they are sent again, in order. A late ack for one
  // finds it resolved and is ignored. Looked at every 100 ms.
  void expire() {
    const auto now = Clock::now();
    if (now < next_expiry) return;
    next_expiry = now + 100ms;
    for (Held& h : held) {
      if (now - h.sent < kAckWait) break;  // held is in the order sent
      if (h.resolved == h.count) continue;
      for (std::uint8_t& st : h.state) {
        if (st != 0) continue;
        st = 2;
        ++h.resolved;
        ++h.failed;
        --in_flight;
      }
      fail(NATS_TIMEOUT, 0);
    }
  }

  // After a failure, once nothing is in flight: every failed message again,
  // in the order taken, each synchronously, so none overtakes another.
  void resend_failed() {
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = 5000;
    const std::int64_t shift = wall_minus_mono();
    for (Held& h : held) {
      for (std::uint32_t i = 0; i < h.count; ++i) {
        if (h.state[i] != 2) continue;
        for (int attempt = 0;; ++attempt) {
          // Relaxed: a flag polled.
          if (br.stopping.load(std::memory_order_relaxed)) return;
          MsgPtr m(build(h.batch, i, shift, false));
          jsPubAck* pa = nullptr;
          jsErrCode e = static_cast<jsErrCode>(0);
          const natsStatus s =
              m.m == nullptr ? NATS_NO_MEMORY : js_PublishMsg(&pa, js, m.m, &po, &e);
          if (s == NATS_OK) {
            if (pa->Duplicate) c.duplicates.fetch_add(1, std::memory_order_relaxed);
            jsPubAck_Destroy(pa);
            h.state[i] = 1;
            --h.failed;
            c.acked.fetch_add(1, std::memory_order_relaxed);  // relaxed: statistics
            c.resent.fetch_add(1, std::memory_order_relaxed);
            break;
          }
          if (attempt == 0 || attempt % 20 == 0)
            spdlog::warn("out {}: sending again failed ({}); retrying", name, text_of(s));
          nap(br.stopping, backoff(attempt));
        }
      }
    }
    settle_front();
    recovering = false;
    spdlog::info("out {}: resumed", name);
  }

  void run() {
    std::string why;
    for (int attempt = 0;; ++attempt) {
      if (br.stopping.load(std::memory_order_relaxed)) return;  // relaxed: a flag polled
      if (ensure_stream(js, r.stream, r.subject, r.replicas, r.duplicate_window, why)) break;
      if (attempt % 20 == 0) spdlog::warn("out {}: {}; retrying", name, why);
      nap(br.stopping, backoff(attempt));
    }
    spdlog::info("out {}: forwarding (group {}, stream {})", name, r.group, r.stream);
    const std::size_t max_held = Subscriber::kMaxHeld - 2;
    while (!br.stopping.load(std::memory_order_relaxed)) {  // relaxed: a flag polled
      if (recovering) {
        if (in_flight > 0)
          drain_acks(50ms);
        else
          resend_failed();
        continue;
      }
      if (in_flight >= static_cast<std::int64_t>(r.max_in_flight) || held.size() >= max_held) {
        drain_acks(50ms);
        continue;
      }
      drain_acks(0ms);
      Batch b;
      const std::size_t room = std::min<std::size_t>(
          256, static_cast<std::size_t>(static_cast<std::int64_t>(r.max_in_flight) - in_flight));
      const Status st = sub->receive_batch(b, room, in_flight > 0 ? 1ms : 50ms);
      if (st == Status::Ok) {
        send(std::move(b));
      } else if (st == Status::TopicDeleted) {
        spdlog::error("out {}: the local topic was deleted; this route stops", name);
        break;
      } else if (st != Status::Timeout && st != Status::WouldBlock) {
        spdlog::warn("out {}: receive: {}", name, to_string(st));
      }
    }
    finish();
  }

  // Stopping: waits a little for acks, then keeps what was not acknowledged
  // held, so the group delivers it again to the next bridge.
  void finish() {
    const auto until = Clock::now() + 5s;
    while (in_flight > 0 && Clock::now() < until)
      drain_acks(50ms);
    settle_front();
    std::size_t kept = 0;
    // Never released (nor destroyed, which would release them): destroying
    // the subscriber leaves them as an orphan's unacknowledged records,
    // delivered again (docs/acknowledgements.md). Reachable, so no leak report.
    static auto* never_released = new std::vector<Batch>();
    static std::mutex never_released_mu;  // one worker thread per route
    std::lock_guard lk(never_released_mu);
    for (Held& h : held) {
      kept += h.count;
      never_released->push_back(std::move(h.batch));
    }
    held.clear();
    if (kept != 0)
      spdlog::info("out {}: {} message(s) not acknowledged by JetStream go back to group {}", name,
                   kept, r.group);
    sub.reset();
    close_acks();
  }
};

// ---- in: JetStream -> local topic ---------------------------------------------------------

struct InWorker {
  Bridge::Impl& br;
  const InRoute& r;
  RouteCounters c;
  std::string name;
  jsCtx* js = nullptr;
  natsSubscription* nsub = nullptr;
  std::optional<Publisher> pub;
  bool priorities = false;
  std::uint32_t lanes = 1;
  bool delays = false;
  moodycamel::BlockingConcurrentQueue<natsMsg*> queue;
  std::mutex mu;
  std::condition_variable room;
  std::int64_t queued = 0;         // under mu
  std::set<std::uint64_t> marked;  // last_marked() at start
  std::thread fetcher, publisher;
  // JetStream holds at most this many of our deliveries unacknowledged; so a
  // dead bridge published at most this many that come again.
  [[nodiscard]] std::uint64_t max_ack_pending() const { return 4 * std::uint64_t{r.batch} + 1024; }
  static constexpr std::size_t kRecent = 65536;

  InWorker(Bridge::Impl& b, const InRoute& route)
      : br(b), r(route), name(route.subject + "->" + route.topic) {}

  ~InWorker() {
    natsMsg* m = nullptr;
    while (queue.try_dequeue(m))
      natsMsg_Destroy(m);
    if (nsub != nullptr) natsSubscription_Destroy(nsub);
    if (js != nullptr) jsCtx_Destroy(js);
  }

  void open() {
    Topic t = br.bus->open_topic(r.topic);
    const TopicOptions o = t.status().options;
    priorities = o.priorities > 1;
    lanes = o.priorities;
    delays = o.delay_slots > 0;
    pub.emplace(t.publisher());
    marked = last_marked(t);
    if (!marked.empty())
      spdlog::info(
          "in {}: the topic holds {} recent message(s) of stream {} (up to sequence {}); "
          "those JetStream delivers again are skipped",
          name, marked.size(), r.stream, *marked.rbegin());
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = 5000;
    if (const natsStatus s = natsConnection_JetStream(&js, br.nc, &jo); s != NATS_OK)
      throw Error(ErrorCode::SystemError, "JetStream context: " + text_of(s));
  }

  // The stream sequences marked in the last max_ack_pending() messages of
  // each partition (as far as the ring still holds them). A restarted bridge
  // skips them when JetStream delivers them again: the previous one
  // published them but died before its acks reached the server. Those are
  // its last publishes, and there are at most max_ack_pending() of them.
  std::set<std::uint64_t> last_marked(const Topic& t) const {
    const TopicStatus st = t.status();
    const std::uint64_t scan = max_ack_pending();
    auto look = t.subscriber();  // a private group of its own, gone with it
    for (std::uint32_t p = 0; p < st.partitions.size(); ++p)
      look->seek(p, st.partitions[p].tail > scan ? st.partitions[p].tail - scan : 0);
    const std::string prefix = r.stream + "/";
    std::set<std::uint64_t> found;
    Sample s;
    for (std::size_t n = 0; n < scan * st.partitions.size() + 16; ++n) {
      if (look->try_receive(s) != Status::Ok) break;
      const auto v = s.properties().get(kMarkProperty);
      std::uint64_t seq = 0;
      if (v && v->substr(0, prefix.size()) == prefix &&
          std::from_chars(v->data() + prefix.size(), v->data() + v->size(), seq).ec == std::errc{})
        found.insert(seq);
      s.release();
    }
    return found;
  }

  bool subscribe(std::string& why) {
    if (!ensure_stream(js, r.stream, r.subject, r.replicas, std::chrono::seconds(120), why))
      return false;
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = r.stream.c_str();
    so.Config.Durable = r.durable.c_str();
    so.Config.AckPolicy = js_AckExplicit;  // see publish_loop
    // What a dead bridge held comes again after this; a live one waiting
    // for room says "in progress" every 3 s.
    so.Config.AckWait = std::chrono::nanoseconds(10s).count();
    so.Config.DeliverPolicy = js_DeliverAll;
    so.Config.MaxAckPending = static_cast<std::int64_t>(max_ack_pending());
    jsErrCode e = static_cast<jsErrCode>(0);
    const natsStatus s =
        js_PullSubscribe(&nsub, js, r.subject.c_str(), r.durable.c_str(), nullptr, &so, &e);
    if (s != NATS_OK) {
      nsub = nullptr;
      why = "pull consumer " + r.durable + " on " + r.stream + ": " + text_of(s);
      return false;
    }
    return true;
  }

  void fetch_loop() {
    std::string why;
    for (int attempt = 0; !subscribe(why); ++attempt) {
      if (br.stopping.load(std::memory_order_relaxed)) return;  // relaxed: a flag polled
      if (attempt % 20 == 0) spdlog::warn("in {}: {}; retrying", name, why);
      nap(br.stopping, backoff(attempt));
    }
    spdlog::info("in {}: consuming (durable {}, stream {})", name, r.durable, r.stream);
    const std::int64_t limit = 2 * static_cast<std::int64_t>(r.batch);
    int failures = 0;
    while (!br.stopping.load(std::memory_order_relaxed)) {  // relaxed: a flag polled
      {
        // Flow control: no pull while the local side has a batch and more
        // waiting, so a full local topic (block) slows the pull.
        std::unique_lock lk(mu);
        if (!room.wait_for(lk, 100ms, [&] { return queued < limit; })) continue;
      }
      natsMsgList list{};
      jsErrCode fe = static_cast<jsErrCode>(0);
      const natsStatus s = natsSubscription_Fetch(&list, nsub, static_cast<int>(r.batch), 500, &fe);
      if (s == NATS_OK) {
        failures = 0;
        {
          std::lock_guard lk(mu);
          queued += list.Count;
        }
        for (int i = 0; i < list.Count; ++i) {
          if (queue.enqueue(list.Msgs[i])) list.Msgs[i] = nullptr;  // ours now; else dropped,
        }  // unacknowledged: JetStream delivers it again after AckWait
        natsMsgList_Destroy(&list);
      } else if (s != NATS_TIMEOUT) {
        if (failures++ % 20 == 0)
          spdlog::warn("in {}: pull failed ({}); retrying", name, text_of(s));
        nap(br.stopping, backoff(failures));
      }
    }
  }

  // Publishes one message locally, waiting while the topic is full. False:
  // refused for good (logged), or stopping.
  bool publish_local(natsMsg* m, std::uint64_t seq) {
    std::string key;
    if (const char* k = header(m, kHeaderKey)) {
      auto d = percent_decode(k);
      if (!d) return refuse(m, "its Shmbus-Key header is not percent-encoded");
      key = std::move(*d);
    }
    std::vector<std::pair<std::string, std::string>> props;
    if (const char* p = header(m, kHeaderProperties)) {
      auto d = decode_properties(p);
      if (!d) return refuse(m, "its Shmbus-Properties header is malformed or over the limits");
      props = std::move(*d);
    }
    // The marker (kMarkProperty, "stream/sequence") goes with the message, so
    // a restarted bridge finds where it was (last_marked). An incoming one
    // (bridged twice) is replaced; a message with every property in use goes
    // without it.
    std::erase_if(props, [](const auto& p) { return p.first == kMarkProperty; });
    std::vector<Property> views;
    views.reserve(props.size() + 1);
    std::size_t encoded = 0;
    for (const auto& [n, v] : props) {
      views.push_back({n, v});
      encoded += 4 + n.size() + v.size();
    }
    const std::string mark = r.stream + "/" + std::to_string(seq);
    if (views.size() < kMaxProperties &&
        encoded + 4 + std::strlen(kMarkProperty) + mark.size() <= kMaxPropertyBytes)
      views.push_back({kMarkProperty, mark});
    Route route;
    route.key = std::as_bytes(std::span(key.data(), key.size()));
    route.properties = views;
    std::uint64_t prio = 0;
    if (priorities && number(header(m, kHeaderPriority), prio))
      route.priority = static_cast<std::uint32_t>(std::min<std::uint64_t>(prio, lanes - 1));
    std::uint64_t due = 0;
    const bool later = delays && number(header(m, kHeaderDue), due) && due > wall_now_ns();
    const auto data = std::as_bytes(
        std::span(natsMsg_GetData(m), static_cast<std::size_t>(natsMsg_GetDataLength(m))));
    auto last_progress = Clock::now();
    for (;;) {
      const Status st =
          later
              ? pub->publish_at(route,
                                std::chrono::system_clock::time_point(
                                    std::chrono::duration_cast<std::chrono::system_clock::duration>(
                                        std::chrono::nanoseconds(due))),
                                data, 100ms)
              : pub->publish(route, data, 100ms);
      if (st == Status::Ok) return true;
      if (st != Status::Timeout && st != Status::WouldBlock)
        return refuse(m, std::string("the local topic refused it: ") + std::string(to_string(st)));
      if (br.stopping.load(std::memory_order_relaxed)) return false;  // relaxed: a flag polled
      if (Clock::now() - last_progress > 3s) {
        // Still full: tell JetStream we are working on it (resets AckWait).
        natsMsg_InProgress(m, nullptr);
        last_progress = Clock::now();
      }
    }
  }

  bool refuse(natsMsg* m, const std::string& why) {
    jsMsgMetaData* meta = nullptr;
    std::uint64_t seq = 0;
    if (natsMsg_GetMetaData(&meta, m) == NATS_OK) {
      seq = meta->Sequence.Stream;
      jsMsgMetaData_Destroy(meta);
    }
    spdlog::error(
        "in {}: stream message {} cannot be published locally: {}; terminated "
        "(JetStream will not deliver it again)",
        name, seq, why);
    natsMsg_Term(m, nullptr);
    c.refused.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
    return false;
  }

  void publish_loop() {
    // Stream sequences published lately (here, or found marked in the topic
    // at start): a message delivered again is skipped if it is one of them.
    // Copies come after their original in the queue, so the original is
    // always in here first.
    std::set<std::uint64_t> recent = std::move(marked);
    while (!br.stopping.load(std::memory_order_relaxed)) {  // relaxed: a flag polled
      natsMsg* raw = nullptr;
      if (!queue.wait_dequeue_timed(raw, 50ms)) continue;
      MsgPtr m(raw);
      {
        std::lock_guard lk(mu);
        --queued;
        c.in_flight.store(queued, std::memory_order_relaxed);  // relaxed: a statistic
      }
      room.notify_one();
      jsMsgMetaData* meta = nullptr;
      std::uint64_t seq = 0, delivered = 1;
      if (natsMsg_GetMetaData(&meta, m.m) == NATS_OK) {
        seq = meta->Sequence.Stream;
        delivered = meta->NumDelivered;
        jsMsgMetaData_Destroy(meta);
      }
      if (delivered > 1) c.redelivered.fetch_add(1, std::memory_order_relaxed);
      if (seq != 0 && recent.count(seq) != 0) {
        // Published already: delivered again after AckWait, or the bridge
        // before us died between its publish and its ack.
        c.duplicates.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
      } else {
        if (!publish_local(m.m, seq)) {
          if (br.stopping.load(std::memory_order_relaxed)) break;  // unpublished: not acked
          continue;                                                // refused and terminated
        }
        recent.insert(seq);
        if (recent.size() > kRecent) recent.erase(recent.begin());
        c.forwarded.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
      }
      // Explicit, per message, and not waited for (a publish to the server,
      // batched by nats.c's flusher). AckPolicy all would be fewer acks, but
      // it would also ack a dead bridge's unacknowledged messages, which
      // JetStream delivers again only after AckWait, behind newer ones.
      if (natsMsg_Ack(m.m, nullptr) == NATS_OK)
        c.acked.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
    }
  }
};

// ---- the bridge -------------------------------------------------------------------------

void Bridge::Impl::name_reports() {
  std::set<std::string> used;
  const auto unique = [&](const std::string& topic) {
    std::string n = topic;
    for (int i = 2; !used.insert(n).second; ++i) {
      const std::string suffix = "-" + std::to_string(i);
      n.assign(topic, 0, detail::kNameMax - suffix.size());
      n.append(suffix);
    }
    return n;
  };
  for (const auto& w : outs)
    report_names.push_back(report_names.size() < kMaxReportsPerConnection ? unique(w->r.topic)
                                                                          : std::string());
  for (const auto& w : ins)
    report_names.push_back(report_names.size() < kMaxReportsPerConnection ? unique(w->r.topic)
                                                                          : std::string());
  if (report_names.size() > kMaxReportsPerConnection)
    spdlog::warn("shmbus stat shows the counters of the first {} routes only (all are in the log)",
                 kMaxReportsPerConnection);
}

// Sends every route's counters to shmbusd for `shmbus stat` (kind
// bridge-out or bridge-in). They go from there when this process does.
void Bridge::Impl::report() {
  const std::uint64_t rc = reconnects.load(std::memory_order_relaxed);  // relaxed: a statistic
  try {
    std::size_t i = 0;
    const auto send = [&](const RouteCounters& c, bool out) {
      const std::string& name = report_names[i++];
      if (name.empty()) return;
      auto counters = route_counters(c, out);
      counters.push_back({"reconnects", rc});
      bus->report(name, out ? "bridge-out" : "bridge-in", counters);
    };
    for (const auto& w : outs)
      send(w->c, true);
    for (const auto& w : ins)
      send(w->c, false);
  } catch (const Error& e) {
    if (!report_failed)
      spdlog::warn("counters not shown in shmbus stat: {} (they stay in this log)", e.what());
    report_failed = true;
  }
}

int Bridge::Impl::open_bus(std::string& why) {
  try {
    bus.emplace(Bus::connect(bus_opts));
    for (const OutRoute& r : cfg.outs)
      (void)bus->open_topic(r.topic);
    for (const InRoute& r : cfg.ins)
      (void)bus->open_topic(r.topic);
  } catch (const Error& e) {
    why = std::string("bus ") + bus_opts.bus + ": " + e.what();
    if (e.code() == ErrorCode::NotFound)
      why += " (create it first, e.g. shmbus topic create NAME, or fix the configuration)";
    return kExitLocalBus;
  }
  return kExitOk;
}

namespace {
void on_disconnected(natsConnection*, void* closure) {
  auto* br = static_cast<Bridge::Impl*>(closure);
  if (br->closing.load(std::memory_order_relaxed)) return;  // relaxed: set before the close
  br->disconnects.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
  spdlog::warn("NATS: disconnected; reconnecting to any listed server");
}
void on_reconnected(natsConnection* nc, void* closure) {
  auto* br = static_cast<Bridge::Impl*>(closure);
  br->reconnects.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
  char url[256] = "";
  natsConnection_GetConnectedUrl(nc, url, sizeof url);
  spdlog::info("NATS: reconnected to {}", url);
}
int64_t reconnect_delay(natsConnection*, int attempts, void*) {
  return backoff(attempts).count();
}
}  // namespace

int Bridge::Impl::connect_nats(std::string& why) {
  natsOptions* o = nullptr;
  if (natsOptions_Create(&o) != NATS_OK) {
    why = "no memory for NATS options";
    return kExitFailed;
  }
  std::vector<const char*> urls;
  for (const std::string& s : cfg.servers)
    urls.push_back(s.c_str());
  natsStatus s = natsOptions_SetServers(o, urls.data(), static_cast<int>(urls.size()));
  if (s == NATS_OK) s = natsOptions_SetName(o, "shmbus-bridge");
  // In the order listed: the first server is the preferred one, the others
  // are where it fails over to.
  if (s == NATS_OK) s = natsOptions_SetNoRandomize(o, true);
  if (s == NATS_OK) s = natsOptions_SetMaxReconnect(o, -1);  // forever, with back-off
  if (s == NATS_OK) s = natsOptions_SetCustomReconnectDelay(o, reconnect_delay, nullptr);
  if (s == NATS_OK) s = natsOptions_SetTimeout(o, 2000);
  if (s == NATS_OK) s = natsOptions_SetPingInterval(o, 2000);  // a dead server is seen in ~4 s
  if (s == NATS_OK) s = natsOptions_SetMaxPingsOut(o, 2);
  if (s == NATS_OK) s = natsOptions_SetReconnectBufSize(o, 64 * 1024 * 1024);
  if (s == NATS_OK) s = natsOptions_SetDisconnectedCB(o, on_disconnected, this);
  if (s == NATS_OK) s = natsOptions_SetReconnectedCB(o, on_reconnected, this);
  if (s != NATS_OK) {
    natsOptions_Destroy(o);
    why = "NATS options: " + text_of(s);
    return kExitConfig;
  }
  const auto deadline = Clock::now() + cfg.connect_timeout;
  for (int attempt = 0;; ++attempt) {
    s = natsConnection_Connect(&nc, o);
    if (s == NATS_OK) break;
    nc = nullptr;
    if (Clock::now() + backoff(attempt) >= deadline || stopping.load(std::memory_order_relaxed)) {
      std::string list;
      for (const std::string& u : cfg.servers)
        list += (list.empty() ? "" : ", ") + u;
      why = "no NATS server answered at " + list + " within " +
            std::to_string(cfg.connect_timeout.count()) + " ms (" + text_of(s) +
            "); start one (nats-server -js) or fix nats = [...]";
      natsOptions_Destroy(o);
      return kExitNats;
    }
    nap(stopping, backoff(attempt));
  }
  natsOptions_Destroy(o);
  char url[256] = "";
  natsConnection_GetConnectedUrl(nc, url, sizeof url);
  spdlog::info("NATS: connected to {}", url);
  return kExitOk;
}

Bridge::Bridge(Config config, BusOptions bus) : impl_(std::make_unique<Impl>()) {
  impl_->cfg = std::move(config);
  impl_->bus_opts = std::move(bus);
}

Bridge::~Bridge() {
  stop();
  for (auto& w : impl_->outs)
    if (w->th.joinable()) w->th.join();
  for (auto& w : impl_->ins) {
    if (w->fetcher.joinable()) w->fetcher.join();
    if (w->publisher.joinable()) w->publisher.join();
  }
  // Subscriptions first (they need the connection), then the connection
  // (after which no ack callback runs), then the workers.
  for (auto& w : impl_->outs)
    w->close_acks();  // done in finish() unless run() never started the worker
  for (auto& w : impl_->ins)
    if (w->nsub != nullptr) {
      natsSubscription_Destroy(w->nsub);
      w->nsub = nullptr;
    }
  if (impl_->nc != nullptr) {
    impl_->closing.store(true, std::memory_order_relaxed);  // relaxed: read by the callback
    natsConnection_Close(impl_->nc);
    natsConnection_Destroy(impl_->nc);
  }
  impl_->outs.clear();
  impl_->ins.clear();
}

void Bridge::stop() noexcept {
  // Relaxed: polled by every loop; nothing else is handed over through it.
  impl_->stopping.store(true, std::memory_order_relaxed);
}

int Bridge::check(std::string& why) {
  if (const int rc = impl_->open_bus(why); rc != kExitOk) return rc;
  if (const int rc = impl_->connect_nats(why); rc != kExitOk) return rc;
  why = "ok: " + std::to_string(impl_->cfg.outs.size()) + " out, " +
        std::to_string(impl_->cfg.ins.size()) + " in route(s); the topics exist and NATS answers";
  return kExitOk;
}

int Bridge::run() {
  Impl& b = *impl_;
  std::string why;
  if (const int rc = b.open_bus(why); rc != kExitOk) {
    spdlog::error("{}", why);
    return rc;
  }
  if (const int rc = b.connect_nats(why); rc != kExitOk) {
    spdlog::error("{}", why);
    return rc;
  }
  try {
    for (const OutRoute& r : b.cfg.outs) {
      b.outs.push_back(std::make_unique<OutWorker>(b, r));
      b.outs.back()->open();
    }
    for (const InRoute& r : b.cfg.ins) {
      b.ins.push_back(std::make_unique<InWorker>(b, r));
      b.ins.back()->open();
    }
  } catch (const Error& e) {
    spdlog::error("starting: {}", e.what());
    return e.code() == ErrorCode::NotFound || e.code() == ErrorCode::DaemonUnavailable
               ? kExitLocalBus
               : kExitFailed;
  }
  for (auto& w : b.outs)
    w->th = std::thread([p = w.get()] { p->run(); });
  for (auto& w : b.ins) {
    w->fetcher = std::thread([p = w.get()] { p->fetch_loop(); });
    w->publisher = std::thread([p = w.get()] { p->publish_loop(); });
  }
  b.name_reports();
  auto next = Clock::now() + b.cfg.status_interval;
  auto next_report = Clock::now();
  while (!b.stopping.load(std::memory_order_relaxed)) {  // relaxed: a flag polled
    if (Clock::now() >= next_report) {
      b.report();  // once a second: `shmbus stat` samples about that often
      next_report = Clock::now() + 1s;
    }
    nap(b.stopping, 100ms);
    if (b.cfg.status_interval.count() > 0 && Clock::now() >= next) {
      spdlog::info("status: {}", status());
      next = Clock::now() + b.cfg.status_interval;
    }
  }
  for (auto& w : b.outs)
    w->th.join();
  for (auto& w : b.ins) {
    w->fetcher.join();
    w->publisher.join();
  }
  spdlog::info("stopped: {}", status());
  return kExitOk;
}

std::string Bridge::status() const {
  const Impl& b = *impl_;
  std::ostringstream s;
  s << "reconnects=" << b.reconnects.load(std::memory_order_relaxed);  // relaxed: a statistic
  const auto route = [&](const char* dir, const std::string& name, const RouteCounters& c,
                         bool out) {
    s << " | " << dir << " " << name;
    for (const ReportCounter& k : route_counters(c, out))
      s << " " << k.name << "=" << k.value;
  };
  for (const auto& w : b.outs)
    route("out", w->name, w->c, true);
  for (const auto& w : b.ins)
    route("in", w->name, w->c, false);
  return s.str();
}

}  // namespace shmbus::bridge
