// Comparators that need nothing but the kernel: a Unix-domain socket
// (SOCK_STREAM, socketpair) and a pair of pipes, both blocking.
//
// Their fastest documented mode for this job: blocking read/write, one write
// per message; socket buffers of 2 MiB (SO_SNDBUF/SO_RCVBUF) and pipes of
// 1 MiB (F_SETPIPE_SZ), so that a large message goes in one piece; a streaming
// consumer reads as much as is there (up to 256 KiB, or two messages) per
// read() and splits it into messages, as any framing reader would.

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstring>
#include <vector>

#include "system.hpp"

namespace shmbus_bench {
namespace {

void write_full(const Side& side, int fd, const std::byte* p, std::size_t n, const char* who,
                std::uint64_t seq) {
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK)
        side.fail("%s: no room to send message %" PRIu64 " within %d s", who, seq, kTimeoutSeconds);
      side.fail("%s: write of message %" PRIu64 ": %s", who, seq, std::strerror(errno));
    }
    p += w;
    n -= static_cast<std::size_t>(w);
  }
}

// Reads up to `cap` bytes, at least one. Fails on end of stream or timeout.
std::size_t read_some(const Side& side, int fd, std::byte* p, std::size_t cap, const char* who,
                      std::uint64_t seq) {
  for (;;) {
    const ssize_t r = ::read(fd, p, cap);
    if (r > 0) return static_cast<std::size_t>(r);
    if (r == 0) side.fail("%s: the peer closed the stream before message %" PRIu64, who, seq);
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK)
      side.fail("%s: no message %" PRIu64 " within %d s", who, seq, kTimeoutSeconds);
    side.fail("%s: read of message %" PRIu64 ": %s", who, seq, std::strerror(errno));
  }
}

void read_full(const Side& side, int fd, std::byte* p, std::size_t n, const char* who,
               std::uint64_t seq) {
  while (n > 0) {
    const std::size_t r = read_some(side, fd, p, n, who, seq);
    p += r;
    n -= r;
  }
}

// A byte-stream transport: side A writes a_wr and reads a_rd, side B the
// other two. Each side closes the descriptors it does not use.
class FdSystem : public System {
 public:
  bool has_spaced() const override { return true; }

  void cleanup() override {
    for (int* fd : {&a_rd_, &a_wr_, &b_rd_, &b_wr_}) {
      if (*fd >= 0) ::close(*fd);
    }
    a_rd_ = a_wr_ = b_rd_ = b_wr_ = -1;
  }

  void ping(Side& side, const Scenario& sc) override {
    keep(kA);
    auto buf = make_payload(sc.size);
    std::vector<std::byte> in(sc.size);
    side.handshake();
    pinger_loop(side, sc.plan, [&](std::uint64_t i) {
      put_seq(buf.data(), i);
      write_full(side, a_wr_, buf.data(), sc.size, who(), i);
      read_full(side, a_rd_, in.data(), sc.size, who(), i);
      if (get_seq(in.data()) != i)
        side.fail("%s: expected pong %" PRIu64 ", got %" PRIu64, who(), i, get_seq(in.data()));
    });
    put_seq(buf.data(), kStop);
    write_full(side, a_wr_, buf.data(), sc.size, who(), kStop);
  }

  void pong(Side& side, const Scenario& sc) override {
    keep(kB);
    auto buf = make_payload(sc.size);
    std::vector<std::byte> in(sc.size);
    side.handshake();
    for (std::uint64_t i = 0;; ++i) {
      read_full(side, b_rd_, in.data(), sc.size, who(), i);
      if (get_seq(in.data()) == kStop) return;
      if (get_seq(in.data()) != i)
        side.fail("%s: expected ping %" PRIu64 ", got %" PRIu64, who(), i, get_seq(in.data()));
      put_seq(buf.data(), i);
      write_full(side, b_wr_, buf.data(), sc.size, who(), i);
      side.heartbeat(i);
    }
  }

  void produce(Side& side, const Scenario& sc) override {
    keep(kA);
    auto buf = make_payload(sc.size);
    side.handshake();
    side.ctl().t_start_ns = now_ns();
    for (std::uint64_t i = 0; i < sc.count; ++i) {
      put_seq(buf.data(), i);
      write_full(side, a_wr_, buf.data(), sc.size, who(), i);
      side.heartbeat(i);
    }
  }

  void consume(Side& side, const Scenario& sc) override {
    keep(kB);
    const std::uint64_t expect_sum = pattern_sum(sc.size);
    const std::size_t cap = std::max<std::size_t>(256 * 1024, 2 * sc.size);
    std::vector<std::byte> buf(cap);
    side.handshake();
    std::size_t have = 0;
    std::uint64_t i = 0;
    std::uint64_t reads = 0;
    while (i < sc.count) {
      have += read_some(side, b_rd_, buf.data() + have, cap - have, who(), i);
      ++reads;
      std::size_t off = 0;
      for (; have - off >= sc.size && i < sc.count; off += sc.size, ++i) {
        check_message(side, who(), buf.data() + off, sc.size, sc.size, i, expect_sum);
        side.heartbeat(i);
      }
      if (off != 0) {
        std::memmove(buf.data(), buf.data() + off, have - off);
        have -= off;
      }
    }
    side.ctl().t_end_ns = now_ns();
    side.ctl().received = i;
    side.ctl().fetches = reads;
  }

  void spaced_send(Side& side, const Scenario& sc) override {
    keep(kA);
    auto buf = make_payload(sc.size);
    send_spaced(side, sc, [&](std::uint64_t i) {
      stamp_spaced(buf.data(), i);
      write_full(side, a_wr_, buf.data(), sc.size, who(), i);
    });
  }

  void spaced_recv(Side& side, const Scenario& sc) override {
    keep(kB);
    std::vector<std::byte> in(sc.size);
    SpacedRecorder rec(sc.count);
    side.handshake();
    for (std::uint64_t i = 0; i < sc.count; ++i) {
      read_full(side, b_rd_, in.data(), sc.size, who(), i);
      rec.add(in.data());
      if (get_seq(in.data()) != i)
        side.fail("%s: expected message %" PRIu64 ", got %" PRIu64, who(), i, get_seq(in.data()));
      side.heartbeat(i);
    }
    rec.finish(side);
  }

 protected:
  const char* who() const { return key.c_str(); }

  // In a child: closes the other side's descriptors.
  void keep(int role) {
    const int mine[2] = {role == kA ? a_rd_ : b_rd_, role == kA ? a_wr_ : b_wr_};
    for (int fd : {a_rd_, a_wr_, b_rd_, b_wr_})
      if (fd >= 0 && fd != mine[0] && fd != mine[1]) ::close(fd);
  }

  int a_rd_ = -1, a_wr_ = -1, b_rd_ = -1, b_wr_ = -1;
};

class Uds : public FdSystem {
 public:
  Uds() {
    key = "uds";
    name = "Unix-domain socket (SOCK_STREAM, blocking)";
    blocking = slow = true;
  }

  void prepare(PairRunner&, const Scenario&) override {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
      throw std::runtime_error(strprintf("socketpair: %s", std::strerror(errno)));
    for (int fd : sv) {
      const int buf = 2 << 20;
      // A larger buffer than the system allows is clamped, not refused.
      if (::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf) != 0 ||
          ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf) != 0)
        throw std::runtime_error(
            strprintf("setsockopt(SO_SNDBUF/SO_RCVBUF): %s", std::strerror(errno)));
      const timeval tv{kTimeoutSeconds, 0};  // every blocking call ends within the timeout
      if (::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0 ||
          ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) != 0)
        throw std::runtime_error(strprintf("setsockopt(SO_RCVTIMEO): %s", std::strerror(errno)));
    }
    a_rd_ = a_wr_ = sv[0];
    b_rd_ = b_wr_ = sv[1];
  }

  void cleanup() override {
    // a_rd_ == a_wr_: close each socket once.
    if (a_rd_ >= 0) ::close(a_rd_);
    if (b_rd_ >= 0) ::close(b_rd_);
    a_rd_ = a_wr_ = b_rd_ = b_wr_ = -1;
  }
};

class Pipe : public FdSystem {
 public:
  Pipe() {
    key = "pipe";
    name = "pipe (blocking)";
    blocking = slow = true;
  }

  // A pipe read has no timeout of its own: a side that hangs is killed by the
  // harness's watchdog, and a side that fails gets its peer killed.
  void prepare(PairRunner&, const Scenario&) override {
    int ab[2], ba[2];
    if (::pipe2(ab, O_CLOEXEC) != 0)
      throw std::runtime_error(strprintf("pipe: %s", std::strerror(errno)));
    if (::pipe2(ba, O_CLOEXEC) != 0) {
      ::close(ab[0]);
      ::close(ab[1]);
      throw std::runtime_error(strprintf("pipe: %s", std::strerror(errno)));
    }
    for (int fd : {ab[1], ba[1]})
      (void)::fcntl(fd, F_SETPIPE_SZ, 1 << 20);  // best effort
    a_wr_ = ab[1];
    b_rd_ = ab[0];
    b_wr_ = ba[1];
    a_rd_ = ba[0];
  }
};

}  // namespace

std::unique_ptr<System> make_uds() {
  return std::make_unique<Uds>();
}
std::unique_ptr<System> make_pipe() {
  return std::make_unique<Pipe>();
}

}  // namespace shmbus_bench
