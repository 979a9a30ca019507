#include "shmbus/detail/socket_io.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "shmbus/detail/protocol.hpp"

namespace shmbus::detail {

std::string default_socket_path(const std::string& bus) {
  if (const char* s = std::getenv("SHMBUS_SOCKET"); s != nullptr && *s != '\0') return s;
  if (const char* x = std::getenv("XDG_RUNTIME_DIR"); x != nullptr && *x != '\0')
    return std::string(x) + "/shmbus/" + bus + ".sock";
  return "/tmp/shmbus-" + std::to_string(::getuid()) + "/" + bus + ".sock";
}

bool send_frame(int sock, std::span<const std::byte> frame, int fd, bool may_wait) noexcept {
  std::size_t sent = 0;
  bool fd_pending = fd >= 0;
  while (sent < frame.size()) {
    iovec iov{const_cast<std::byte*>(frame.data() + sent), frame.size() - sent};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))]{};
    if (fd_pending) {
      msg.msg_control = control;
      msg.msg_controllen = sizeof control;
      cmsghdr* c = CMSG_FIRSTHDR(&msg);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int));
      std::memcpy(CMSG_DATA(c), &fd, sizeof(int));
    }
    const ssize_t n = ::sendmsg(sock, &msg, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if ((errno == EAGAIN || errno == EWOULDBLOCK) && may_wait) {
        pollfd p{sock, POLLOUT, 0};
        if (::poll(&p, 1, 1000) <= 0) return false;  // a peer that reads nothing for 1 s
        continue;
      }
      return false;
    }
    fd_pending = false;
    sent += static_cast<std::size_t>(n);
  }
  return true;
}

Received recv_frame(int sock, std::chrono::milliseconds timeout) {
  Received r;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::vector<std::byte> buf;
  std::size_t want = 4;
  while (buf.size() < want) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      r.error = "no reply from shmbusd within " + std::to_string(timeout.count()) + " ms";
      break;
    }
    pollfd p{sock, POLLIN, 0};
    const int pr = ::poll(&p, 1, static_cast<int>(left.count()));
    if (pr < 0 && errno == EINTR) continue;
    if (pr <= 0) continue;
    std::byte chunk[4096];
    const std::size_t room = std::min(sizeof chunk, want - buf.size());
    iovec iov{chunk, room};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 4)]{};
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    const ssize_t n = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      r.error = std::string("reading from shmbusd failed: ") + std::strerror(errno);
      r.closed = true;
      break;
    }
    if (n == 0) {
      r.error = "shmbusd closed the connection";
      r.closed = true;
      break;
    }
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      const std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (std::size_t i = 0; i < count; ++i) {
        int fd = -1;
        std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        if (r.fd < 0)
          r.fd = fd;
        else
          ::close(fd);  // one descriptor per frame at most
      }
    }
    buf.insert(buf.end(), chunk, chunk + n);
    if (want == 4 && buf.size() == 4) {
      std::uint32_t len = 0;
      std::memcpy(&len, buf.data(), 4);
      if (len > proto::kMaxReply) {
        r.error = "shmbusd sent a frame of " + std::to_string(len) + " bytes, over the limit";
        r.closed = true;
        break;
      }
      want = 4 + len;
    }
  }
  if (!r.error.empty()) {
    if (r.fd >= 0) ::close(r.fd);
    r.fd = -1;
    return r;
  }
  r.body.assign(buf.begin() + 4, buf.end());
  return r;
}

}  // namespace shmbus::detail
