// moodycamel::ConcurrentQueue (Debian's libconcurrentqueue-dev) between two
// threads of one process, pinned to the two cores: the in-process reference.
// Its maintainer says it is not for shared memory, so it is measured where it
// belongs, and compared as such.
//
// Its fastest documented mode: explicit producer and consumer tokens, and
// try_dequeue_bulk() on the streaming consumer. Messages of 64 bytes travel by
// value; larger ones as an index into a pool of buffers that the consumer
// hands back through a second queue (what an in-process design would do; the
// producer still writes every byte of the payload into the buffer). For
// throughput the queue is bounded like the others: it is preallocated for
// `slots` messages and the producer uses try_enqueue(), which never allocates.

#include <concurrentqueue/concurrentqueue.h>

#include <atomic>
#include <cinttypes>
#include <memory>
#include <thread>
#include <vector>

#include "system.hpp"

namespace shmbus_bench {
namespace {

struct Msg {
  std::byte bytes[64];  // the payload (64 B), or the sequence number and a pool index
};
static_assert(sizeof(Msg) == 64);

using Queue = moodycamel::ConcurrentQueue<Msg>;
using IndexQueue = moodycamel::ConcurrentQueue<std::uint32_t>;

// The two threads' own handshake (the harness's is between processes).
class Gate {
 public:
  void arrive_and_wait(const Side& side) {
    // acq_rel: what each thread set up before is visible to the other after.
    n_.fetch_add(1, std::memory_order_acq_rel);
    side.spin_until([&] { return n_.load(std::memory_order_acquire) >= 2; }, "the other thread", 0);
  }

 private:
  std::atomic<int> n_{0};
};

// Runs `second` on a thread pinned to cpu_b while this thread (pinned to
// cpu_a by the harness) runs `first`; a failure in either ends the process.
template <class F1, class F2>
void two_threads(const Side& side, const Scenario& sc, F1&& first, F2&& second) {
  std::thread t([&] {
    side.pin_to(sc.cpu_b);
    second();
  });
  first();
  t.join();
}

std::uint32_t get_index(const std::byte* p) {
  std::uint32_t v;
  std::memcpy(&v, p + 8, 4);
  return v;
}

class Moodycamel : public System {
 public:
  Moodycamel() {
    key = "moodycamel";
    name = "moodycamel ConcurrentQueue, two threads of one process";
    in_process = true;
  }

  // Side A runs both threads; side B has nothing to do.
  void pong(Side&, const Scenario&) override {}
  void consume(Side&, const Scenario&) override {}

  void ping(Side& side, const Scenario& sc) override {
    Queue ab(64), ba(64);
    // Messages above 64 B: one buffer per direction (one message in flight),
    // the sender writes the sequence number in place, as with a loan.
    std::vector<std::byte> buf_ab = make_payload(sc.size), buf_ba = make_payload(sc.size);
    const bool by_value = sc.size <= sizeof(Msg);
    Gate gate;
    const auto make = [&](std::uint64_t seq, std::vector<std::byte>& buf) {
      Msg m{};
      put_seq(m.bytes, seq);
      if (!by_value) put_seq(buf.data(), seq);
      return m;
    };
    const auto seq_of = [&](const Msg& m, const std::vector<std::byte>& buf) {
      return by_value ? get_seq(m.bytes) : get_seq(buf.data());
    };
    two_threads(
        side, sc,
        [&] {
          moodycamel::ProducerToken ptok(ab);
          moodycamel::ConsumerToken ctok(ba);
          gate.arrive_and_wait(side);
          pinger_loop(side, sc.plan, [&](std::uint64_t i) {
            if (!ab.enqueue(ptok, make(i, buf_ab))) side.fail("moodycamel: enqueue failed");
            Msg m;
            side.spin_until([&] { return ba.try_dequeue(ctok, m); }, "pong", i);
            if (seq_of(m, buf_ba) != i) side.fail("moodycamel: expected pong %" PRIu64, i);
          });
          if (!ab.enqueue(ptok, make(kStop, buf_ab))) side.fail("moodycamel: enqueue failed");
        },
        [&] {
          moodycamel::ProducerToken ptok(ba);
          moodycamel::ConsumerToken ctok(ab);
          gate.arrive_and_wait(side);
          for (std::uint64_t i = 0;; ++i) {
            Msg m;
            side.spin_until([&] { return ab.try_dequeue(ctok, m); }, "ping", i);
            const std::uint64_t seq = seq_of(m, buf_ab);
            if (seq == kStop) break;
            if (seq != i) side.fail("moodycamel: expected ping %" PRIu64 ", got %" PRIu64, i, seq);
            if (!ba.enqueue(ptok, make(i, buf_ba))) side.fail("moodycamel: enqueue failed");
          }
        });
  }

  void produce(Side& side, const Scenario& sc) override {
    const bool by_value = sc.size <= sizeof(Msg);
    const std::uint64_t slots = sc.slots;
    Queue q(by_value ? slots : slots + 64);
    IndexQueue free_list(slots + 64);
    std::vector<std::byte> pool(by_value ? 0 : slots * sc.size);
    for (std::uint32_t k = 0; !by_value && k < slots; ++k) {
      std::vector<std::byte> p = make_payload(sc.size);
      std::memcpy(pool.data() + k * sc.size, p.data(), sc.size);
      if (!free_list.enqueue(k)) side.fail("moodycamel: enqueue failed");
    }
    const std::uint64_t expect_sum = pattern_sum(sc.size);
    Gate gate;
    two_threads(
        side, sc,
        [&] {  // the producer
          moodycamel::ProducerToken ptok(q);
          moodycamel::ConsumerToken free_tok(free_list);
          auto src = make_payload(sc.size);
          gate.arrive_and_wait(side);
          side.ctl().t_start_ns = now_ns();
          for (std::uint64_t i = 0; i < sc.count; ++i) {
            Msg m{};
            put_seq(src.data(), i);
            if (by_value) {
              std::memcpy(m.bytes, src.data(), sc.size);
            } else {
              std::uint32_t k = 0;
              side.spin_until([&] { return free_list.try_dequeue(free_tok, k); },
                              "a free buffer for message", i);
              std::memcpy(pool.data() + k * sc.size, src.data(), sc.size);
              put_seq(m.bytes, i);
              std::memcpy(m.bytes + 8, &k, 4);
            }
            if (!q.try_enqueue(ptok, m))
              side.spin_until([&] { return q.try_enqueue(ptok, m); }, "room for message", i);
            side.heartbeat(i);
          }
        },
        [&] {  // the consumer
          moodycamel::ConsumerToken ctok(q);
          moodycamel::ProducerToken free_ptok(free_list);
          Msg got[64];
          gate.arrive_and_wait(side);
          std::uint64_t i = 0, fetches = 0;
          while (i < sc.count) {
            std::size_t n = q.try_dequeue_bulk(ctok, got, 64);
            if (n == 0) {
              side.spin_until([&] { return (n = q.try_dequeue_bulk(ctok, got, 64)) != 0; },
                              "message", i);
            }
            ++fetches;
            for (std::size_t j = 0; j < n; ++j, ++i) {
              if (by_value) {
                check_message(side, "moodycamel", got[j].bytes, sc.size, sc.size, i, expect_sum);
              } else {
                const std::uint32_t k = get_index(got[j].bytes);
                check_message(side, "moodycamel", pool.data() + k * sc.size, sc.size, sc.size, i,
                              expect_sum);
                if (!free_list.enqueue(free_ptok, k)) side.fail("moodycamel: enqueue failed");
              }
            }
            side.heartbeat(i);
          }
          side.ctl().t_end_ns = now_ns();
          side.ctl().received = i;
          side.ctl().fetches = fetches;
        });
  }
};

}  // namespace

std::unique_ptr<System> make_moodycamel() {
  return std::make_unique<Moodycamel>();
}

}  // namespace shmbus_bench
