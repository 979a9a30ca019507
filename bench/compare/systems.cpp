// The systems that need no package: the machine's limits and shmbus.

#include <linux/futex.h>

#include <cinttypes>
#include <memory>
#include <string>

#include "system.hpp"

namespace shmbus_bench {
namespace {

class BareLine : public System {
 public:
  BareLine() {
    key = "bare-line";
    name = "bare cache line, pause spin (the limit)";
    baseline = true;
  }
  bool has_throughput() const override { return false; }
  void ping(Side& side, const Scenario& sc) override {
    bare_pinger(side, sc.plan, 0, nullptr, nullptr);
  }
  void pong(Side& side, const Scenario&) override { bare_ponger(side, 0, nullptr, nullptr); }
};

class BareMemcpy : public System {
 public:
  BareMemcpy() {
    key = "bare-memcpy";
    name = "bare memcpy into shm + read in place (the limit for a copy)";
    baseline = true;
  }
  bool has_throughput() const override { return false; }
  void prepare(PairRunner&, const Scenario& sc) override {
    a_ = std::make_unique<SharedBuffer>(sc.size);
    b_ = std::make_unique<SharedBuffer>(sc.size);
  }
  void cleanup() override {
    a_.reset();
    b_.reset();
  }
  void ping(Side& side, const Scenario& sc) override {
    bare_pinger(side, sc.plan, sc.size, a_->data, b_->data);
  }
  void pong(Side& side, const Scenario& sc) override {
    bare_ponger(side, sc.size, a_->data, b_->data);
  }

 private:
  std::unique_ptr<SharedBuffer> a_, b_;
};

// The streaming limit. Fair to shmbus: the same slot count as the shmbus ring
// of the row and the same bytes per slot (shmbus's slot header + payload,
// rounded to a line), so both rings are equally (not) cache-resident; and
// cached indices, as a good SPSC queue has (bench/README.md, "bare ring").
class BareRingSystem : public System {
 public:
  explicit BareRingSystem(std::uint64_t every) : every_(every) {
    key = every == 1 ? "bare-ring" : "bare-ring-16";
    name = every == 1 ? "bare SPSC ring in shm, index per message (the limit)"
                      : "bare SPSC ring in shm, index every 16 messages";
    baseline = true;
  }
  bool has_latency() const override { return false; }
  void prepare(PairRunner&, const Scenario& sc) override {
    stride_ = shmbus_slot_stride(sc.size);
    mem_ = std::make_unique<SharedBuffer>(sc.slots * stride_);
  }
  void cleanup() override { mem_.reset(); }
  void produce(Side& side, const Scenario& sc) override {
    ring_producer(side, ring(sc), sc.count, sc.size);
  }
  void consume(Side& side, const Scenario& sc) override {
    ring_consumer(side, ring(sc), sc.count, sc.size, sc.read_payload);
  }

 private:
  BareRing ring(const Scenario& sc) const {
    return BareRing{mem_->data, stride_, sc.slots, every_};
  }
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
  void prepare(PairRunner&, const Scenario& sc) override {
    stride_ = (sc.size + 63) / 64 * 64;
    msgs_ = std::make_unique<SharedBuffer>(kRing * stride_);
  }
  void cleanup() override { msgs_.reset(); }
  void ping(Side& side, const Scenario& sc) override { futex_pinger(side, sc.plan); }
  void pong(Side& side, const Scenario&) override { futex_ponger(side); }

  // The sender writes message i into a small ring in shared memory, stores
  // i + 1 in the word and wakes; the receiver sleeps on the word between
  // messages (a receiver that was descheduled for a while catches up through
  // the ring).
  void spaced_send(Side& side, const Scenario& sc) override {
    std::atomic<std::uint32_t>& w = side.ctl().futex_word.v;
    auto src = make_payload(sc.size);
    send_spaced(side, sc, [&](std::uint64_t i) {
      stamp_spaced(src.data(), i);
      std::memcpy(slot(i), src.data(), sc.size);
      // Release: pairs with the receiver's acquire load; the message is written.
      w.store(static_cast<std::uint32_t>(i + 1), std::memory_order_release);
      futex(w, FUTEX_WAKE, 1, nullptr);
    });
  }
  void spaced_recv(Side& side, const Scenario& sc) override {
    std::atomic<std::uint32_t>& w = side.ctl().futex_word.v;
    SpacedRecorder rec(sc.count);
    side.handshake();
    for (std::uint64_t i = 0; i < sc.count; ++i) {
      const auto want = static_cast<std::uint32_t>(i + 1);
      const std::uint64_t deadline = now_ns() + kTimeoutNs;
      for (;;) {
        // Acquire: pairs with the sender's release store.
        const std::uint32_t v = w.load(std::memory_order_acquire);
        if (v >= want) break;
        const timespec ts{1, 0};
        futex(w, FUTEX_WAIT, v, &ts);  // EAGAIN and ETIMEDOUT loop: the load decides
        if (now_ns() > deadline)
          side.fail("raw futex: no message %" PRIu64 " within %d s", i, kTimeoutSeconds);
      }
      rec.add(slot(i));
      if (get_seq(slot(i)) != i) side.fail("raw futex: expected message %" PRIu64, i);
      side.heartbeat(i);
    }
    rec.finish(side);
  }

 private:
  static constexpr std::uint64_t kRing = 64;
  std::byte* slot(std::uint64_t i) const { return msgs_->data + (i % kRing) * stride_; }
  std::size_t stride_ = 64;
  std::unique_ptr<SharedBuffer> msgs_;
};

// shmbus through its public API: zero-copy loan/publish and receive of a
// Sample viewed in place; by default one publisher per topic (single_producer,
// its fastest documented mode), policy block.
class Shmbus : public System {
 public:
  Shmbus(std::string k, std::string n, ShmbusWait w, ShmbusVariant v) : wait_(w), v_(v) {
    key = std::move(k);
    name = std::move(n);
    blocking = w.wait != shmbus::WaitStrategy::BusySpin;
    slow = w.spin_ns == 0;  // sleeps on every wait
  }
  bool has_latency() const override { return v_.latency; }
  bool has_throughput() const override { return v_.throughput; }
  bool has_spaced() const override { return true; }

  void prepare(PairRunner& runner, const Scenario& sc) override {
    shmbus::TopicOptions to;
    to.slot_size = static_cast<std::uint32_t>(sc.size);
    to.slot_count = sc.mode == Mode::Throughput ? static_cast<std::uint32_t>(sc.slots) : 64;
    to.policy = shmbus::Policy::Block;
    to.single_producer = v_.single_producer;
    if (sc.shared_topic) to.mode = 0660;  // shared_control: P0 on every claim
    a_ = std::make_unique<ScopedTopic>(runner, "cmp-ab", to);
    if (sc.mode == Mode::Latency) b_ = std::make_unique<ScopedTopic>(runner, "cmp-ba", to);
  }
  void cleanup() override {
    a_.reset();
    b_.reset();
  }

  void ping(Side& side, const Scenario& sc) override {
    shmbus_pinger(side, sc.plan, sc.size, a_->name(), b_->name(), wait_);
  }
  void pong(Side& side, const Scenario& sc) override {
    shmbus_ponger(side, sc.size, a_->name(), b_->name(), wait_);
  }
  void produce(Side& side, const Scenario& sc) override {
    shmbus_producer(side, a_->name(), sc.count, sc.size, wait_, v_.loan);
  }
  void consume(Side& side, const Scenario& sc) override {
    shmbus_consumer(side, a_->name(), sc.count, sc.size, wait_, v_.batch, sc.read_payload);
  }

  void spaced_send(Side& side, const Scenario& sc) override {
    shmbus::Topic topic = shmbus::Topic::open(a_->name());
    shmbus::Publisher pub = topic.publisher(publisher_options(side, wait_));
    send_spaced(side, sc,
                [&](std::uint64_t i) { publish_seq(side, pub, sc.size, i, "message", true); });
  }
  void spaced_recv(Side& side, const Scenario& sc) override {
    shmbus::Topic topic = shmbus::Topic::open(a_->name());
    auto sub = topic.subscriber(subscriber_options(side, wait_));
    SpacedRecorder rec(sc.count);
    side.handshake();
    for (std::uint64_t i = 0; i < sc.count; ++i) {
      shmbus::Sample s;
      if (const auto st = sub->receive(s, kTimeout); st != shmbus::Status::Ok)
        side.fail("shmbus: receive of message %" PRIu64 ": %s", i, shmbus::to_string(st));
      rec.add(s.data().data());
      if (get_seq(s.data().data()) != i) side.fail("shmbus: expected message %" PRIu64, i);
      side.heartbeat(i);
    }
    rec.finish(side);
  }

 private:
  ShmbusWait wait_;
  ShmbusVariant v_;
  std::unique_ptr<ScopedTopic> a_, b_;
};

}  // namespace

std::unique_ptr<System> make_bare_line() {
  return std::make_unique<BareLine>();
}
std::unique_ptr<System> make_bare_memcpy() {
  return std::make_unique<BareMemcpy>();
}
std::unique_ptr<System> make_bare_ring(std::uint64_t publish_every) {
  return std::make_unique<BareRingSystem>(publish_every);
}
std::unique_ptr<System> make_raw_futex() {
  return std::make_unique<RawFutex>();
}
std::unique_ptr<System> make_shmbus(std::string key, std::string name, ShmbusWait wait,
                                    ShmbusVariant variant) {
  return std::make_unique<Shmbus>(std::move(key), std::move(name), wait, variant);
}

}  // namespace shmbus_bench
