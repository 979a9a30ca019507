// Boost.Interprocess message_queue (header-only; Debian's libboost-dev).
//
// Two modes, both documented: blocking send()/receive() (a process-shared
// mutex and condition variable: the receiver sleeps), and polling
// try_send()/try_receive() in a spin loop, its fastest mode on spare cores.
// A message is copied into the queue and out of it (the API has no loans).

#include <boost/interprocess/ipc/message_queue.hpp>
#include <boost/version.hpp>

#include <cinttypes>
#include <memory>
#include <vector>

#include "system.hpp"

namespace shmbus_bench {
namespace {

namespace bip = boost::interprocess;

class BoostMq : public System {
 public:
  explicit BoostMq(bool polling) : polling_(polling) {
    key = polling ? "boost-mq-poll" : "boost-mq";
    name = polling ? "Boost.Interprocess message_queue, try_send/try_receive polling"
                   : "Boost.Interprocess message_queue, blocking";
    blocking = slow = !polling;
  }

  bool has_spaced() const override { return !polling_; }

  void prepare(PairRunner& runner, const Scenario& sc) override {
    const std::string base =
        strprintf("shmbus-cmp-%d-%d-%s", static_cast<int>(::getpid()), sc.run_id, key.c_str());
    ab_ = base + "-ab";
    ba_ = base + "-ba";
    const std::size_t depth = sc.mode == Mode::Throughput ? sc.slots : 4;
    for (const std::string* n : {&ab_, &ba_}) {
      bip::message_queue::remove(n->c_str());
      runner.unlink_on_interrupt("/" + *n);
      // Created here, opened by each side after the fork; the handle is dropped
      // at once (the queue lives until remove()).
      bip::message_queue q(bip::create_only, n->c_str(), depth, sc.size);
    }
  }

  void cleanup() override {
    for (const std::string* n : {&ab_, &ba_})
      if (!n->empty()) bip::message_queue::remove(n->c_str());
    ab_.clear();
    ba_.clear();
  }

  void ping(Side& side, const Scenario& sc) override {
    bip::message_queue out(bip::open_only, ab_.c_str()), in(bip::open_only, ba_.c_str());
    auto buf = make_payload(sc.size);
    std::vector<std::byte> rbuf(sc.size);
    side.handshake();
    pinger_loop(side, sc.plan, [&](std::uint64_t i) {
      put_seq(buf.data(), i);
      send(side, out, buf.data(), sc.size, i);
      const std::size_t got = receive(side, in, rbuf.data(), sc.size, i);
      if (got != sc.size || get_seq(rbuf.data()) != i)
        side.fail("%s: expected pong %" PRIu64 ", got %" PRIu64 " of %zu B", key.c_str(), i,
                  get_seq(rbuf.data()), got);
    });
    put_seq(buf.data(), kStop);
    send(side, out, buf.data(), sc.size, kStop);
  }

  void pong(Side& side, const Scenario& sc) override {
    bip::message_queue in(bip::open_only, ab_.c_str()), out(bip::open_only, ba_.c_str());
    auto buf = make_payload(sc.size);
    std::vector<std::byte> rbuf(sc.size);
    side.handshake();
    for (std::uint64_t i = 0;; ++i) {
      const std::size_t got = receive(side, in, rbuf.data(), sc.size, i);
      if (got == sc.size && get_seq(rbuf.data()) == kStop) return;
      if (got != sc.size || get_seq(rbuf.data()) != i)
        side.fail("%s: expected ping %" PRIu64 ", got %" PRIu64 " of %zu B", key.c_str(), i,
                  get_seq(rbuf.data()), got);
      put_seq(buf.data(), i);
      send(side, out, buf.data(), sc.size, i);
      side.heartbeat(i);
    }
  }

  void produce(Side& side, const Scenario& sc) override {
    bip::message_queue out(bip::open_only, ab_.c_str());
    auto buf = make_payload(sc.size);
    side.handshake();
    side.ctl().t_start_ns = now_ns();
    for (std::uint64_t i = 0; i < sc.count; ++i) {
      put_seq(buf.data(), i);
      send(side, out, buf.data(), sc.size, i);
      side.heartbeat(i);
    }
  }

  void consume(Side& side, const Scenario& sc) override {
    bip::message_queue in(bip::open_only, ab_.c_str());
    const std::uint64_t expect_sum = pattern_sum(sc.size);
    std::vector<std::byte> rbuf(sc.size);
    side.handshake();
    for (std::uint64_t i = 0; i < sc.count; ++i) {
      const std::size_t got = receive(side, in, rbuf.data(), sc.size, i);
      check_message(side, key.c_str(), rbuf.data(), got, sc.size, i, expect_sum);
      side.heartbeat(i);
    }
    side.ctl().t_end_ns = now_ns();
    side.ctl().received = sc.count;
  }

  void spaced_send(Side& side, const Scenario& sc) override {
    bip::message_queue out(bip::open_only, ab_.c_str());
    auto buf = make_payload(sc.size);
    send_spaced(side, sc, [&](std::uint64_t i) {
      stamp_spaced(buf.data(), i);
      send(side, out, buf.data(), sc.size, i);
    });
  }

  void spaced_recv(Side& side, const Scenario& sc) override {
    bip::message_queue in(bip::open_only, ab_.c_str());
    std::vector<std::byte> rbuf(sc.size);
    SpacedRecorder rec(sc.count);
    side.handshake();
    for (std::uint64_t i = 0; i < sc.count; ++i) {
      receive(side, in, rbuf.data(), sc.size, i);
      rec.add(rbuf.data());
      if (get_seq(rbuf.data()) != i) side.fail("%s: expected message %" PRIu64, key.c_str(), i);
      side.heartbeat(i);
    }
    rec.finish(side);
  }

 private:
  // Blocking calls have no timeout here (a timed call would read the clock for
  // every message): a side that hangs is killed by the harness's watchdog.
  void send(const Side& side, bip::message_queue& q, const std::byte* p, std::size_t n,
            std::uint64_t seq) {
    if (!polling_) {
      q.send(p, n, 0);
      return;
    }
    side.spin_until([&] { return q.try_send(p, n, 0); }, "room in the queue for message", seq);
  }

  std::size_t receive(const Side& side, bip::message_queue& q, std::byte* p, std::size_t cap,
                      std::uint64_t seq) {
    bip::message_queue::size_type got = 0;
    unsigned int prio = 0;
    if (!polling_) {
      q.receive(p, cap, got, prio);
      return got;
    }
    side.spin_until([&] { return q.try_receive(p, cap, got, prio); }, "message", seq);
    return got;
  }

  bool polling_;
  std::string ab_, ba_;
};

}  // namespace

std::unique_ptr<System> make_boost_mq(bool polling) {
  return std::make_unique<BoostMq>(polling);
}

std::string boost_version_string() {
  return strprintf("%d.%d.%d", BOOST_VERSION / 100000, BOOST_VERSION / 100 % 1000,
                   BOOST_VERSION % 100);
}

}  // namespace shmbus_bench
