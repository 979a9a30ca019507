// ZeroMQ PAIR over ipc:// (libzmq, Debian's libzmq3-dev).
//
// Its fastest documented mode for one-to-one messaging: a PAIR socket over
// the ipc transport (an abstract-namespace Unix socket here, so no file is
// left behind), zmq_msg_recv() (the message is read in place, no copy out),
// and for messages above 1 KiB a zero-copy send (zmq_msg_init_data over the
// sender's buffer, handed back through the free callback). Small messages go
// with zmq_send(), which copies them, as ZeroMQ's guide advises.
//
// ZeroMQ can drop the tail of a stream when the sender closes right after its
// last send, so every run ends with an acknowledgement from the receiver, and
// neither side closes before its peer has seen the end (the control block's
// `done` flag).

#include <zmq.h>

#include <atomic>
#include <cinttypes>
#include <memory>
#include <thread>
#include <vector>

#include "system.hpp"

namespace shmbus_bench {
namespace {

constexpr std::size_t kZeroCopyFrom = 1024;  // larger messages are sent without a copy

// A sender's buffer lent to ZeroMQ until its free callback runs (on ZeroMQ's
// I/O thread, once the bytes are written to the socket).
struct Lent {
  std::vector<std::byte> data;
  std::atomic<bool> busy{false};
};

void give_back(void*, void* hint) {
  // Release: pairs with the acquire in Sender::send; ZeroMQ is done with the bytes.
  static_cast<std::atomic<bool>*>(hint)->store(false, std::memory_order_release);
}

class Socket {
 public:
  Socket(const Side& side, const std::string& endpoint, bool bind) : side_(side) {
    ctx_ = zmq_ctx_new();
    if (!ctx_) side_.fail("zmq_ctx_new: %s", zmq_strerror(zmq_errno()));
    s_ = zmq_socket(ctx_, ZMQ_PAIR);
    if (!s_) side_.fail("zmq_socket: %s", zmq_strerror(zmq_errno()));
    const int timeout_ms = kTimeoutSeconds * 1000;
    const int linger_ms = 2000;
    zmq_setsockopt(s_, ZMQ_RCVTIMEO, &timeout_ms, sizeof timeout_ms);
    zmq_setsockopt(s_, ZMQ_SNDTIMEO, &timeout_ms, sizeof timeout_ms);
    zmq_setsockopt(s_, ZMQ_LINGER, &linger_ms, sizeof linger_ms);
    const int rc = bind ? zmq_bind(s_, endpoint.c_str()) : zmq_connect(s_, endpoint.c_str());
    if (rc != 0)
      side_.fail("zmq_%s(%s): %s", bind ? "bind" : "connect", endpoint.c_str(),
                 zmq_strerror(zmq_errno()));
  }
  ~Socket() {
    zmq_close(s_);
    zmq_ctx_term(ctx_);
  }
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;

  void* get() const { return s_; }

 private:
  const Side& side_;
  void* ctx_ = nullptr;
  void* s_ = nullptr;
};

// Sends payloads of one size; above kZeroCopyFrom from a pool of lent buffers.
class Sender {
 public:
  Sender(const Side& side, void* s, std::size_t size, std::size_t pool)
      : side_(side), s_(s), size_(size) {
    const std::size_t n = size_ >= kZeroCopyFrom ? pool : 1;
    for (std::size_t i = 0; i < n; ++i) {
      auto l = std::make_unique<Lent>();
      l->data = make_payload(size_);
      pool_.push_back(std::move(l));
    }
  }
  ~Sender() {
    // ZeroMQ may still hold a buffer until the socket is closed: leak the pool
    // rather than free memory that its I/O thread may still read (the process
    // ends right after).
    for (auto& l : pool_)
      (void)l.release();
  }

  void send(std::uint64_t seq, std::uint64_t send_time = 0) {
    Lent& l = *pool_[seq % pool_.size()];
    if (size_ < kZeroCopyFrom) {
      put_seq(l.data.data(), seq);
      if (send_time) put_time(l.data.data(), send_time);
      if (zmq_send(s_, l.data.data(), size_, 0) != static_cast<int>(size_))
        side_.fail("zmq: send of message %" PRIu64 ": %s", seq, zmq_strerror(zmq_errno()));
      return;
    }
    // Acquire: pairs with give_back's release.
    if (l.busy.load(std::memory_order_acquire)) {
      side_.spin_until([&] { return !l.busy.load(std::memory_order_acquire); },
                       "ZeroMQ to give back the buffer of message", seq);
    }
    put_seq(l.data.data(), seq);
    if (send_time) put_time(l.data.data(), send_time);
    // Relaxed: nothing else touches the flag until zmq_msg_send hands the
    // buffer to ZeroMQ, which orders this store before its free callback.
    l.busy.store(true, std::memory_order_relaxed);
    zmq_msg_t m;
    if (zmq_msg_init_data(&m, l.data.data(), size_, give_back, &l.busy) != 0)
      side_.fail("zmq_msg_init_data: %s", zmq_strerror(zmq_errno()));
    if (zmq_msg_send(&m, s_, 0) != static_cast<int>(size_)) {
      const int e = zmq_errno();
      zmq_msg_close(&m);
      side_.fail("zmq: send of message %" PRIu64 ": %s", seq, zmq_strerror(e));
    }
  }

 private:
  const Side& side_;
  void* s_;
  std::size_t size_;
  std::vector<std::unique_ptr<Lent>> pool_;
};

// Receives one message, viewed in place until the next receive.
class Receiver {
 public:
  Receiver(const Side& side, void* s) : side_(side), s_(s) { zmq_msg_init(&m_); }
  ~Receiver() { zmq_msg_close(&m_); }
  Receiver(const Receiver&) = delete;
  Receiver& operator=(const Receiver&) = delete;

  const std::byte* receive(std::size_t& size, std::uint64_t seq) {
    const int n = zmq_msg_recv(&m_, s_, 0);
    if (n < 0)
      side_.fail("zmq: receive of message %" PRIu64 ": %s", seq, zmq_strerror(zmq_errno()));
    size = static_cast<std::size_t>(n);
    return static_cast<const std::byte*>(zmq_msg_data(&m_));
  }

 private:
  const Side& side_;
  void* s_;
  zmq_msg_t m_;
};

// Waits (sleeping) until the peer has set the control block's `done` flag.
void wait_done(const Side& side, const char* what) {
  const std::uint64_t deadline = now_ns() + kTimeoutNs;
  // Acquire: pairs with the peer's release store in set_done.
  while (side.ctl().done.v.load(std::memory_order_acquire) == 0) {
    if (now_ns() > deadline)
      side.fail("zmq: the peer did not confirm %s within %d s", what, kTimeoutSeconds);
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
}
void set_done(const Side& side) {
  // Release: pairs with the acquire in the peer's wait_done; all we received is done.
  side.ctl().done.v.store(1, std::memory_order_release);
}

class Zmq : public System {
 public:
  Zmq() {
    key = "zmq";
    name = "ZeroMQ PAIR over ipc://";
    blocking = slow = true;
  }

  void prepare(PairRunner&, const Scenario& sc) override {
    endpoint_ = strprintf("ipc://@shmbus-cmp-%d-%d", static_cast<int>(::getpid()), sc.run_id);
  }

  void ping(Side& side, const Scenario& sc) override {
    Socket sock(side, endpoint_, true);
    Sender out(side, sock.get(), sc.size, 4);
    Receiver in(side, sock.get());
    side.handshake();
    pinger_loop(side, sc.plan, [&](std::uint64_t i) {
      out.send(i);
      std::size_t n = 0;
      const std::byte* p = in.receive(n, i);
      if (n != sc.size || get_seq(p) != i)
        side.fail("zmq: expected pong %" PRIu64 ", got %" PRIu64 " of %zu B", i,
                  n >= 8 ? get_seq(p) : kStop, n);
    });
    out.send(kStop);
    std::size_t n = 0;
    const std::byte* p = in.receive(n, kStop);  // the ponger's acknowledgement
    if (n < 8 || get_seq(p) != kStop) side.fail("zmq: expected the end acknowledgement");
    set_done(side);
  }

  void pong(Side& side, const Scenario& sc) override {
    Socket sock(side, endpoint_, false);
    Sender out(side, sock.get(), sc.size, 4);
    Receiver in(side, sock.get());
    side.handshake();
    for (std::uint64_t i = 0;; ++i) {
      std::size_t n = 0;
      const std::byte* p = in.receive(n, i);
      if (n == sc.size && get_seq(p) == kStop) break;
      if (n != sc.size || get_seq(p) != i)
        side.fail("zmq: expected ping %" PRIu64 ", got %" PRIu64 " of %zu B", i,
                  n >= 8 ? get_seq(p) : kStop, n);
      out.send(i);
      side.heartbeat(i);
    }
    out.send(kStop);
    wait_done(side, "the end");
  }

  void produce(Side& side, const Scenario& sc) override {
    Socket sock(side, endpoint_, true);
    Sender out(side, sock.get(), sc.size, std::min<std::uint64_t>(sc.slots, 256));
    Receiver in(side, sock.get());
    side.handshake();
    side.ctl().t_start_ns = now_ns();
    for (std::uint64_t i = 0; i < sc.count; ++i) {
      out.send(i);
      side.heartbeat(i);
    }
    std::size_t n = 0;
    const std::byte* p = in.receive(n, kStop);  // the consumer has everything
    if (n < 8 || get_seq(p) != kStop) side.fail("zmq: expected the end acknowledgement");
    set_done(side);
  }

  void consume(Side& side, const Scenario& sc) override {
    Socket sock(side, endpoint_, false);
    Receiver in(side, sock.get());
    const std::uint64_t expect_sum = pattern_sum(sc.size);
    side.handshake();
    for (std::uint64_t i = 0; i < sc.count; ++i) {
      std::size_t n = 0;
      const std::byte* p = in.receive(n, i);
      check_message(side, "zmq", p, n, sc.size, i, expect_sum);
      side.heartbeat(i);
    }
    side.ctl().t_end_ns = now_ns();
    side.ctl().received = sc.count;
    std::uint64_t ack = kStop;
    if (zmq_send(sock.get(), &ack, sizeof ack, 0) != sizeof ack)
      side.fail("zmq: send of the end acknowledgement: %s", zmq_strerror(zmq_errno()));
    wait_done(side, "the end");
  }

 private:
  std::string endpoint_;
};

}  // namespace

std::unique_ptr<System> make_zmq() {
  return std::make_unique<Zmq>();
}

std::string zmq_version_string() {
  int a = 0, b = 0, c = 0;
  zmq_version(&a, &b, &c);
  return strprintf("%d.%d.%d", a, b, c);
}

}  // namespace shmbus_bench
