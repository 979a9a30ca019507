// Blocking helpers for the control socket: whole-frame send with an optional
// descriptor (SCM_RIGHTS), and receive of one frame with a timeout.
#pragma once

#include <chrono>
#include <cstddef>
#include <span>
#include <string>
#include <vector>

namespace shmbus::detail {

// Where a bus's daemon listens: SHMBUS_SOCKET, else $XDG_RUNTIME_DIR/shmbus/<bus>.sock,
// else /tmp/shmbus-<uid>/<bus>.sock.
std::string default_socket_path(const std::string& bus);

// Sends all of `frame`, with `fd` attached when >= 0. False on error (errno
// set). With may_wait false a full socket buffer is an error (a peer that
// does not read); otherwise it waits up to 1 s for room.
bool send_frame(int sock, std::span<const std::byte> frame, int fd = -1,
                bool may_wait = true) noexcept;

struct Received {
  std::vector<std::byte> body;
  int fd = -1;          // a descriptor that came with the frame, owned by the caller
  std::string error;    // non-empty on failure
  bool closed = false;  // the peer closed the connection
};
// Reads one whole frame (length prefix + body) within `timeout`.
Received recv_frame(int sock, std::chrono::milliseconds timeout);

}  // namespace shmbus::detail
