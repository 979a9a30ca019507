#include "scenarios.hpp"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cinttypes>
#include <span>

#include "report.hpp"
#include "shmbus/detail/layout.hpp"

namespace shmbus_bench {

// ---- payloads ---------------------------------------------------------------------

void fill_pattern(std::byte* p, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i)
    p[i] = static_cast<std::byte>((i * 131 + 7) & 0xff);
}

std::vector<std::byte> make_payload(std::size_t n) {
  std::vector<std::byte> v(n);
  fill_pattern(v.data(), n);
  return v;
}

std::uint64_t pattern_sum(std::size_t size) {
  return line_sum(make_payload(size).data(), size);
}

void check_message(const Side& side, const char* who, const std::byte* p, std::size_t got,
                   std::size_t size, std::uint64_t want, std::uint64_t expect_sum) {
  if (got != size || get_seq(p) != want)
    side.fail("%s: expected message %" PRIu64 " of %zu B, got seq %" PRIu64 " of %zu B", who, want,
              size, got >= 8 ? get_seq(p) : kStop, got);
  if (line_sum(p, size) != expect_sum)
    side.fail("%s: message %" PRIu64 ": payload differs from what was sent", who, want);
}

// ---- bare line and bare memcpy ----------------------------------------------------

void bare_pinger(const Side& side, const LatencyPlan& plan, std::size_t size, std::byte* ping_buf,
                 const std::byte* pong_buf) {
  std::atomic<std::uint64_t>& line = side.ctl().line.v;
  auto src = make_payload(size);
  const std::uint64_t expect_sum = size ? line_sum(src.data(), size) : 0;
  side.handshake();
  pinger_loop(side, plan, [&](std::uint64_t i) {
    if (size) {
      put_seq(src.data(), i);
      std::memcpy(ping_buf, src.data(), size);
    }
    // Release: pairs with B's acquire load; the payload copy is visible to B.
    line.store(2 * i + 1, std::memory_order_release);
    side.spin_until([&] { return line.load(std::memory_order_acquire) == 2 * i + 2; },
                    "pong of round", i);
    if (size) {
      if (get_seq(pong_buf) != i || line_sum(pong_buf, size) != expect_sum)
        side.fail("bare memcpy: pong %" PRIu64 " carries seq %" PRIu64 " or a wrong payload", i,
                  get_seq(pong_buf));
    }
  });
  line.store(kStop, std::memory_order_release);  // release: pairs with B's acquire
}

void bare_ponger(const Side& side, std::size_t size, const std::byte* ping_buf,
                 std::byte* pong_buf) {
  std::atomic<std::uint64_t>& line = side.ctl().line.v;
  auto src = make_payload(size);
  const std::uint64_t expect_sum = size ? line_sum(src.data(), size) : 0;
  side.handshake();
  for (std::uint64_t i = 0;; ++i) {
    std::uint64_t v = 0;
    // Acquire: pairs with A's release store.
    side.spin_until(
        [&] {
          v = line.load(std::memory_order_acquire);
          return v == 2 * i + 1 || v == kStop;
        },
        "ping of round", i);
    if (v == kStop) return;
    if (size) {
      if (get_seq(ping_buf) != i || line_sum(ping_buf, size) != expect_sum)
        side.fail("bare memcpy: ping %" PRIu64 " carries seq %" PRIu64 " or a wrong payload", i,
                  get_seq(ping_buf));
      put_seq(src.data(), i);
      std::memcpy(pong_buf, src.data(), size);
    }
    line.store(2 * i + 2, std::memory_order_release);  // release: pairs with A's acquire
    side.heartbeat(i);
  }
}

// ---- raw futex --------------------------------------------------------------------

long futex(std::atomic<std::uint32_t>& w, int op, std::uint32_t val, const timespec* ts) {
  return ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&w), op, val, ts, nullptr, 0);
}

namespace {

// Waits on the shared futex word until it holds `want` (or kStop32).
std::uint32_t futex_wait_for(const Side& side, std::atomic<std::uint32_t>& w, std::uint32_t want,
                             std::uint64_t i) {
  std::uint64_t deadline = 0;
  for (;;) {
    // Acquire: pairs with the peer's release store before its wake.
    const std::uint32_t v = w.load(std::memory_order_acquire);
    if (v == want || v == kStop32) return v;
    timespec ts{1, 0};
    // EAGAIN (the word moved) and ETIMEDOUT just loop: the load above decides.
    futex(w, FUTEX_WAIT, v, &ts);  // shared (not private): the word is in MAP_SHARED memory
    const std::uint64_t t = now_ns();
    if (deadline == 0)
      deadline = t + kTimeoutNs;
    else if (t > deadline)
      side.fail("raw futex: no answer within %d s in round %" PRIu64, kTimeoutSeconds, i);
  }
}

}  // namespace

void futex_pinger(const Side& side, const LatencyPlan& plan) {
  std::atomic<std::uint32_t>& w = side.ctl().futex_word.v;
  side.handshake();
  pinger_loop(side, plan, [&](std::uint64_t i) {
    const auto k = static_cast<std::uint32_t>(i % 0x7fff'0000u);
    w.store(2 * k + 1, std::memory_order_release);  // release: pairs with futex_wait_for's acquire
    futex(w, FUTEX_WAKE, 1, nullptr);
    futex_wait_for(side, w, 2 * k + 2, i);
  });
  w.store(kStop32, std::memory_order_release);  // release: pairs with futex_wait_for's acquire
  futex(w, FUTEX_WAKE, 1, nullptr);
}

void futex_ponger(const Side& side) {
  std::atomic<std::uint32_t>& w = side.ctl().futex_word.v;
  side.handshake();
  for (std::uint64_t i = 0;; ++i) {
    const auto k = static_cast<std::uint32_t>(i % 0x7fff'0000u);
    if (futex_wait_for(side, w, 2 * k + 1, i) == kStop32) return;
    w.store(2 * k + 2, std::memory_order_release);  // release: pairs with futex_wait_for's acquire
    futex(w, FUTEX_WAKE, 1, nullptr);
    side.heartbeat(i);
  }
}

// ---- shmbus -----------------------------------------------------------------------

namespace {
// Sets the wait strategy and spin budget of either side's options from `w`.
template <class Options>
Options with_wait(const Side& side, Options o, const ShmbusWait& w) {
  o.wait = w.wait;
  if (w.spin_ns >= 0)
    o.spin = std::chrono::nanoseconds(w.spin_ns);
  else if (side.yield_spin())
    o.spin = std::chrono::nanoseconds(0);
  return o;
}
}  // namespace

shmbus::PublisherOptions publisher_options(const Side& side, const ShmbusWait& w) {
  shmbus::PublisherOptions po = with_wait(side, shmbus::PublisherOptions{}, w);
  po.timeout = kTimeout;
  return po;
}

shmbus::SubscriberOptions subscriber_options(const Side& side, const ShmbusWait& w) {
  return with_wait(side, shmbus::SubscriberOptions{}, w);
}

std::size_t shmbus_slot_stride(std::size_t size) {
  constexpr std::size_t kLineBytes = shmbus::detail::kCacheLine;
  return (shmbus::detail::kSlotHeaderSize + size + kLineBytes - 1) / kLineBytes * kLineBytes;
}

ScopedTopic::ScopedTopic(PairRunner& runner, const std::string& role,
                         const shmbus::TopicOptions& o) {
  name_ =
      strprintf("ipcbench-%d-%d-%s", static_cast<int>(::getpid()), runner.next_id(), role.c_str());
  // Both segments of the region (data, and "<data>@control").
  runner.unlink_on_interrupt("/" + shmbus::region_name("default", name_));
  runner.unlink_on_interrupt("/" + shmbus::region_name("default", name_) + "@control");
  topic_.emplace_back(shmbus::Topic::create(name_, o));
}

ScopedTopic::~ScopedTopic() {
  topic_.clear();
  (void)shmbus::Topic::remove(name_);  // false only if it is already gone
}

namespace {
// The ping-pong's hot path: inlined into the loops, as it was written there,
// so that the figures do not carry a call the bare line does not make.
[[gnu::always_inline]] inline void publish_loaned(const Side& side, shmbus::Publisher& pub,
                                                  std::size_t size, std::uint64_t seq,
                                                  const char* what, bool stamp) {
  shmbus::Loan loan = pub.loan(size);
  if (!loan)
    side.fail("shmbus: loan(%zu) for %s %" PRIu64 ": %s", size, what, seq,
              shmbus::to_string(loan.status()));
  put_seq(loan.data().data(), seq);
  if (stamp) put_time(loan.data().data(), now_ns());
  if (const auto st = loan.publish(); st != shmbus::Status::Ok)
    side.fail("shmbus: publish of %s %" PRIu64 ": %s", what, seq, shmbus::to_string(st));
}

// Receives message `want` of a ping-pong and checks its size and sequence
// number in place; false if it is the stop message and `stop_ok`.
[[gnu::always_inline]] inline bool receive_seq(const Side& side, shmbus::Subscriber& sub,
                                               std::size_t size, std::uint64_t want,
                                               const char* what, bool stop_ok) {
  shmbus::Sample s;
  if (const auto st = sub.receive(s, kTimeout); st != shmbus::Status::Ok)
    side.fail("shmbus: receive of %s %" PRIu64 ": %s", what, want, shmbus::to_string(st));
  const auto d = s.data();
  if (stop_ok && d.size() == size && get_seq(d.data()) == kStop) return false;
  if (d.size() != size || get_seq(d.data()) != want)
    side.fail("shmbus: expected %s %" PRIu64 " of %zu B, got seq %" PRIu64
              " of %zu B (ring sequence %" PRIu64 ")",
              what, want, size, d.size() >= 8 ? get_seq(d.data()) : kStop, d.size(), s.sequence());
  return true;  // released here
}
}  // namespace

void publish_seq(const Side& side, shmbus::Publisher& pub, std::size_t size, std::uint64_t seq,
                 const char* what, bool stamp) {
  publish_loaned(side, pub, size, seq, what, stamp);
}

void shmbus_pinger(const Side& side, const LatencyPlan& plan, std::size_t size,
                   const std::string& ping_name, const std::string& pong_name, ShmbusWait w) {
  shmbus::Topic ping = shmbus::Topic::open(ping_name);
  shmbus::Topic pong = shmbus::Topic::open(pong_name);
  shmbus::Publisher pub = ping.publisher(publisher_options(side, w));
  // Attached before the handshake: no pong can be missed.
  auto sub = pong.subscriber(subscriber_options(side, w));
  side.handshake();
  pinger_loop(side, plan, [&](std::uint64_t i) {
    publish_loaned(side, pub, size, i, "ping", false);
    receive_seq(side, *sub, size, i, "pong", false);
  });
  publish_loaned(side, pub, size, kStop, "the stop message", false);
}

void shmbus_ponger(const Side& side, std::size_t size, const std::string& ping_name,
                   const std::string& pong_name, ShmbusWait w) {
  shmbus::Topic ping = shmbus::Topic::open(ping_name);
  shmbus::Topic pong = shmbus::Topic::open(pong_name);
  shmbus::Publisher pub = pong.publisher(publisher_options(side, w));
  auto sub = ping.subscriber(subscriber_options(side, w));
  side.handshake();
  for (std::uint64_t i = 0;; ++i) {
    if (!receive_seq(side, *sub, size, i, "ping", true)) return;
    publish_loaned(side, pub, size, i, "pong", false);
    side.heartbeat(i);
  }
}

void shmbus_producer(const Side& side, const std::string& name, std::uint64_t count,
                     std::size_t size, ShmbusWait w, bool loan) {
  shmbus::Topic topic = shmbus::Topic::open(name);
  shmbus::Publisher pub = topic.publisher(publisher_options(side, w));
  auto src = make_payload(size);
  const std::span<const std::byte> msg(src.data(), size);
  side.handshake();  // the consumer's subscriber is attached: it gates us from here on
  side.ctl().t_start_ns = now_ns();
  for (std::uint64_t i = 0; i < count; ++i) {
    put_seq(src.data(), i);
    if (loan) {
      shmbus::Loan l = pub.loan(size);
      if (!l)
        side.fail("shmbus: loan(%zu) for message %" PRIu64 ": %s", size, i,
                  shmbus::to_string(l.status()));
      std::memcpy(l.data().data(), src.data(), size);
      if (const auto st = l.publish(); st != shmbus::Status::Ok)
        side.fail("shmbus: publish of message %" PRIu64 ": %s", i, shmbus::to_string(st));
    } else if (const auto st = pub.publish(msg); st != shmbus::Status::Ok) {
      side.fail("shmbus: publish of message %" PRIu64 ": %s", i, shmbus::to_string(st));
    }
    side.heartbeat(i);
  }
}

void shmbus_consumer(const Side& side, const std::string& name, std::uint64_t count,
                     std::size_t size, ShmbusWait w, std::size_t batch, bool read_payload) {
  shmbus::Topic topic = shmbus::Topic::open(name);
  auto sub = topic.subscriber(subscriber_options(side, w));
  const std::uint64_t expect_sum = pattern_sum(size);
  side.handshake();
  const auto ok = [&](std::uint64_t want, std::span<const std::byte> d) {
    return d.size() == size && get_seq(d.data()) == want &&
           (!read_payload || line_sum(d.data(), size) == expect_sum);
  };
  const auto bad = [&](std::uint64_t want, std::span<const std::byte> d, std::uint64_t ring_seq) {
    side.fail("shmbus: expected message %" PRIu64 " of %zu B, got seq %" PRIu64
              " of %zu B (ring sequence %" PRIu64 ")%s",
              want, size, d.size() >= 8 ? get_seq(d.data()) : kStop, d.size(), ring_seq,
              d.size() == size && get_seq(d.data()) == want ? ": payload differs from what was sent"
                                                            : "");
  };
  std::uint64_t i = 0;
  if (batch <= 1) {
    shmbus::Sample s;
    for (; i < count; ++i) {
      if (const auto st = sub->receive(s, kTimeout); st != shmbus::Status::Ok)
        side.fail("shmbus: receive of message %" PRIu64 ": %s", i, shmbus::to_string(st));
      if (!ok(i, s.data())) bad(i, s.data(), s.sequence());
      s.release();
      side.heartbeat(i);
    }
  } else {
    shmbus::Batch b;
    std::uint64_t batches = 0;
    while (i < count) {
      ++batches;
      if (const auto st = sub->receive_batch(b, batch, kTimeout); st != shmbus::Status::Ok)
        side.fail("shmbus: receive_batch at message %" PRIu64 ": %s", i, shmbus::to_string(st));
      for (std::size_t j = 0; j < b.size(); ++j, ++i)
        if (!ok(i, b.data(j))) bad(i, b.data(j), b.first_sequence() + j);
      b.release();
      side.heartbeat(i);
    }
    if (i != count)
      side.fail("shmbus: received %" PRIu64 " messages, %" PRIu64 " expected", i, count);
    side.ctl().fetches = batches;
  }
  side.ctl().t_end_ns = now_ns();
  side.ctl().received = i;
}

// ---- the bare SPSC ring -----------------------------------------------------------
//
// The producer owns tail (the next index it writes), the consumer owns head
// (the next index it reads). Each keeps a private copy of the other's index
// and reloads it only when that copy says the ring is full (producer) or
// empty (consumer), so that in steady state neither touches the other's line.

void ring_producer(const Side& side, const BareRing& r, std::uint64_t count, std::size_t size) {
  std::atomic<std::uint64_t>& tail = side.ctl().ring_tail.v;
  std::atomic<std::uint64_t>& head = side.ctl().ring_head.v;
  auto src = make_payload(size);
  side.handshake();
  side.ctl().t_start_ns = now_ns();
  std::uint64_t head_cache = 0;  // the consumer's head as last loaded
  for (std::uint64_t t = 0; t < count; ++t) {
    if (t - head_cache == r.capacity) {
      // Release: pairs with the consumer's acquire load of tail. Publishing
      // before waiting keeps the consumer from waiting on messages we wrote
      // but had not yet published (publish_every > 1).
      tail.store(t, std::memory_order_release);
      side.spin_until(
          [&] {
            // Acquire: pairs with the consumer's release store of head; its
            // reads of the slots below head are done before we overwrite one.
            head_cache = head.load(std::memory_order_acquire);
            return t - head_cache < r.capacity;
          },
          "room for message", t);
    }
    put_seq(src.data(), t);
    std::memcpy(r.slot(t), src.data(), size);
    // Release: pairs with the consumer's acquire load of tail; the slot's
    // bytes are visible before the index that covers them.
    if ((t + 1) % r.publish_every == 0) tail.store(t + 1, std::memory_order_release);
    side.heartbeat(t);
  }
  tail.store(count, std::memory_order_release);  // release: as above, for the last messages
}

void ring_consumer(const Side& side, const BareRing& r, std::uint64_t count, std::size_t size,
                   bool read_payload) {
  const std::uint64_t expect_sum = pattern_sum(size);
  std::atomic<std::uint64_t>& tail = side.ctl().ring_tail.v;
  std::atomic<std::uint64_t>& head = side.ctl().ring_head.v;
  side.handshake();
  std::uint64_t tail_cache = 0;  // the producer's tail as last loaded
  std::uint64_t fetches = 0;
  for (std::uint64_t h = 0; h < count; ++h) {
    if (h == tail_cache) {
      ++fetches;
      // Release: pairs with the producer's acquire load of head; frees what
      // we read before we wait, so that a full ring cannot stall both sides.
      head.store(h, std::memory_order_release);
      side.spin_until(
          [&] {
            // Acquire: pairs with the producer's release store of tail; the
            // slots below it are written.
            tail_cache = tail.load(std::memory_order_acquire);
            return tail_cache != h;
          },
          "message", h);
    }
    const std::byte* p = r.slot(h);
    if (get_seq(p) != h || (read_payload && line_sum(p, size) != expect_sum))
      side.fail("bare ring: expected seq %" PRIu64 ", got %" PRIu64 " (or a wrong payload)", h,
                get_seq(p));
    // Release: pairs with the producer's acquire load of head; our reads of
    // the slot are done before the producer may reuse it.
    if ((h + 1) % r.publish_every == 0) head.store(h + 1, std::memory_order_release);
    side.heartbeat(h);
  }
  side.ctl().t_end_ns = now_ns();
  side.ctl().received = count;
  side.ctl().fetches = fetches;
}

}  // namespace shmbus_bench
