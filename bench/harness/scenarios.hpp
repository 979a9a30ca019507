// The scenarios every system is measured with, and the machine's limits:
//   ping-pong latency  side A sends ping i and waits for pong i; one clock
//                      read per round trip, warm-up excluded (pinger_loop)
//   streaming          a fixed count of messages, each checked by sequence
//                      number and payload on the other side
//   bare line          two processes ping-ponging one cache line (the limit)
//   bare memcpy        the same plus a copy of the payload through shared memory
//   raw futex          FUTEX_WAIT/FUTEX_WAKE ping-pong (the floor of sleeping)
//   bare SPSC ring     the streaming limit, sized like the shmbus ring it is
//                      compared with, with cached indices (bench/README.md)
// and shmbus itself through its public API. All of them run inside a Side.
#pragma once

#include <time.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "process.hpp"
#include "shmbus/shmbus.hpp"

namespace shmbus_bench {

class PairRunner;

// ---- payloads ---------------------------------------------------------------------

// A payload: the sequence number in the first 8 bytes, a fixed pattern after.
void fill_pattern(std::byte* p, std::size_t n);
inline void put_seq(std::byte* p, std::uint64_t seq) noexcept {
  std::memcpy(p, &seq, 8);
}
inline std::uint64_t get_seq(const std::byte* p) noexcept {
  std::uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}
// Reads one 8-byte word per cache line after the first: reading a payload in
// place costs one line transfer per 64 bytes, whatever is done with the words.
inline std::uint64_t line_sum(const std::byte* p, std::size_t n) noexcept {
  std::uint64_t s = 0;
  for (std::size_t off = 64; off + 8 <= n; off += 64) {
    std::uint64_t w;
    std::memcpy(&w, p + off, 8);
    s += w;
  }
  return s;
}
// A spaced message (one-way latency across clocks) also carries its send
// time (CLOCK_MONOTONIC ns) at offset 8.
inline void put_time(std::byte* p, std::uint64_t t) noexcept {
  std::memcpy(p + 8, &t, 8);
}
inline std::uint64_t get_time(const std::byte* p) noexcept {
  std::uint64_t v;
  std::memcpy(&v, p + 8, 8);
  return v;
}
std::vector<std::byte> make_payload(std::size_t n);
std::uint64_t pattern_sum(std::size_t size);

// Checks a received message of a stream: its sequence number and, read in
// place, one word per cache line of its payload. Fails the side otherwise.
void check_message(const Side& side, const char* who, const std::byte* p, std::size_t got,
                   std::size_t size, std::uint64_t want, std::uint64_t expect_sum);

// ---- latency ----------------------------------------------------------------------

struct LatencyPlan {
  std::uint64_t warmup = 0;
  std::uint64_t iters = 0;
  std::uint64_t duration_ns = 0;  // > 0: measure for this long instead (bracket)
  // Caps for slow transports (0: none). Warm-up ends after warmup_max_ns even
  // if fewer than `warmup` rounds ran; measuring ends after max_ns even if
  // fewer than `iters` rounds ran (the row reports how many it got).
  std::uint64_t warmup_max_ns = 0;
  std::uint64_t max_ns = 0;
};

// Side A's loop skeleton: one clock read per round trip, warm-up excluded.
// round_trip(i) sends ping i and waits for its pong. The stats and the
// histogram go to the control block.
template <class RoundTrip>
void pinger_loop(const Side& side, const LatencyPlan& plan, RoundTrip&& round_trip) {
  const std::uint64_t cap = plan.duration_ns ? 1'000'000 : plan.iters;
  std::vector<std::uint64_t> rt(cap);  // touched here, not while measuring
  std::uint64_t n = 0;
  const std::uint64_t t0 = now_ns();
  std::uint64_t t_prev = t0;
  std::uint64_t t_end = 0;
  bool warm = plan.warmup == 0;
  for (std::uint64_t i = 0;; ++i) {
    round_trip(i);
    const std::uint64_t t = now_ns();
    if (!warm &&
        (i + 1 >= plan.warmup || (plan.warmup_max_ns != 0 && t - t0 >= plan.warmup_max_ns))) {
      warm = true;  // this round was the last of the warm-up
    } else if (warm) {
      if (n == 0) t_end = t + (plan.duration_ns ? plan.duration_ns : plan.max_ns);
      rt[n++] = t - t_prev;
      if (n == cap || ((plan.duration_ns != 0 || plan.max_ns != 0) && t >= t_end)) break;
    }
    t_prev = t;
    side.heartbeat(i);
  }
  rt.resize(n);
  side.ctl().lat = one_way_stats(rt, 0.5, &side.ctl().hist);
}

// Bare line (size 0) and bare memcpy (size > 0) ping-pong over one shared line.
// A writes 2i+1, B answers 2i+2. With a payload, the sender copies it into the
// shared buffer before its flag store and the receiver reads it in place.
void bare_pinger(const Side& side, const LatencyPlan& plan, std::size_t size, std::byte* ping_buf,
                 const std::byte* pong_buf);
void bare_ponger(const Side& side, std::size_t size, const std::byte* ping_buf,
                 std::byte* pong_buf);

// The raw futex: FUTEX_WAIT/FUTEX_WAKE on a word of shared (not private) memory.
constexpr std::uint32_t kStop32 = ~std::uint32_t{0};
long futex(std::atomic<std::uint32_t>& w, int op, std::uint32_t val, const timespec* ts);
void futex_pinger(const Side& side, const LatencyPlan& plan);
void futex_ponger(const Side& side);

// ---- shmbus -----------------------------------------------------------------------

// How a shmbus side waits: the strategy, and the spin budget of SpinFutex and
// SpinYield (negative: the library's default, or 0 when both sides share a core,
// where spinning only delays the peer).
struct ShmbusWait {
  shmbus::WaitStrategy wait = shmbus::WaitStrategy::SpinFutex;
  std::int64_t spin_ns = -1;
};
shmbus::PublisherOptions publisher_options(const Side& side, const ShmbusWait& w);
shmbus::SubscriberOptions subscriber_options(const Side& side, const ShmbusWait& w);

// The bytes one slot of a shmbus ring takes for a payload of `size`: its
// header and the payload, rounded up to a cache line (the region's stride).
std::size_t shmbus_slot_stride(std::size_t size);

// A topic owned by the parent for one scenario: created before fork, its name
// removed afterwards (and on an interrupt).
class ScopedTopic {
 public:
  ScopedTopic(PairRunner& runner, const std::string& role, const shmbus::TopicOptions& o);
  ~ScopedTopic();
  ScopedTopic(const ScopedTopic&) = delete;
  ScopedTopic& operator=(const ScopedTopic&) = delete;
  [[nodiscard]] const std::string& name() const noexcept { return name_; }

 private:
  std::string name_;
  std::vector<shmbus::Topic> topic_;  // 0 or 1 (Topic has no default constructor)
};

// Loans a slot of `size` bytes, writes `seq` in its first 8 bytes (with
// `stamp`, the send time after it, read last) and publishes it; fails the
// side otherwise. `what` names the message in the failure ("ping").
void publish_seq(const Side& side, shmbus::Publisher& pub, std::size_t size, std::uint64_t seq,
                 const char* what, bool stamp = false);

// Zero-copy ping-pong: loan, write the sequence number in the first 8 bytes
// (the rest of the payload is not touched, as in iceoryx zero-copy), publish;
// the peer receives a Sample, checks the number in place, releases. The
// pinger ends with a message whose sequence number is kStop.
void shmbus_pinger(const Side& side, const LatencyPlan& plan, std::size_t size,
                   const std::string& ping_name, const std::string& pong_name, ShmbusWait w);
void shmbus_ponger(const Side& side, std::size_t size, const std::string& ping_name,
                   const std::string& pong_name, ShmbusWait w);

// Streaming. publish() copies the payload into the slot; with `loan`, the
// producer loans the slot and writes the whole payload in place (the same
// bytes are written either way). The consumer takes `batch` messages at a
// time with receive_batch() when batch > 1, checks every sequence number
// and, with `read_payload`, reads one word per cache line of every payload.
void shmbus_producer(const Side& side, const std::string& name, std::uint64_t count,
                     std::size_t size, ShmbusWait w, bool loan);
void shmbus_consumer(const Side& side, const std::string& name, std::uint64_t count,
                     std::size_t size, ShmbusWait w, std::size_t batch, bool read_payload);

// ---- the bare SPSC ring -----------------------------------------------------------

// The yardstick for streaming, as a good SPSC queue is built: tail (the
// producer's) and head (the consumer's) on separate 128-byte lines of the
// control block; the producer caches head and the consumer caches tail,
// reloading them only when the ring looks full or empty; each side publishes
// its index after every `publish_every` messages (1: per message), and always
// before it waits. The caller sizes it like the shmbus ring it is compared
// with: the same slot count and shmbus_slot_stride() bytes per slot.
struct BareRing {
  std::byte* slots;
  std::size_t stride;      // bytes per slot: shmbus_slot_stride() of the payload
  std::uint64_t capacity;  // power of two, > publish_every
  std::uint64_t publish_every;
  [[nodiscard]] std::byte* slot(std::uint64_t i) const {
    return slots + (i & (capacity - 1)) * stride;
  }
};
void ring_producer(const Side& side, const BareRing& r, std::uint64_t count, std::size_t size);
void ring_consumer(const Side& side, const BareRing& r, std::uint64_t count, std::size_t size,
                   bool read_payload);

}  // namespace shmbus_bench
