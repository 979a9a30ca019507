// The operating-system helpers every layer uses (library, daemon, CLI), each
// written once with one rule: process liveness, Unix-socket connect,
// `mkdir -p`, and whole frames over the control socket with descriptor
// passing (SCM_RIGHTS). Internal: not installed.
#pragma once

#include <sys/types.h>

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "shmbus/options.hpp"

namespace shmbus::detail {

// strerror(err), thread-safe.
[[nodiscard]] std::string errno_text(int err);

// ---- processes ---------------------------------------------------------------

// The process's start time (field 22 of /proc/pid/stat, clock ticks since boot),
// or 0 when it is unknown (no such process, no /proc).
[[nodiscard]] std::uint64_t process_start_time(pid_t pid) noexcept;

// True while `pid` exists and can still act. The one rule, everywhere:
// - no such process (kill(pid, 0) says ESRCH): dead;
// - a zombie (state Z or X) whose only thread has exited: dead, it will never
//   touch a region again (a zombie leader with other live threads is alive);
// - `start_time` given (non-zero) and the process's start time differs: the
//   pid was reused by another process, so the one we knew is dead;
// - kill() says EPERM (another user's process): alive.
// Without /proc the answer is kill()'s.
[[nodiscard]] bool process_alive(pid_t pid, std::uint64_t start_time = 0) noexcept;

// "_reply.<pid>.<suffix>", the reply topic Bus::request makes for a
// requester: the pid; 0 for any other name.
inline constexpr std::string_view kReplyTopicPrefix = "_reply.";
[[nodiscard]] pid_t reply_topic_pid(std::string_view name) noexcept;
// The one geometry of reply topics (shmbusd gives every one this, whatever
// the request asked): 64 slots of 16 KiB, policy reject (a responder never
// waits), 64 producer seats (responders keep one each).
[[nodiscard]] inline TopicOptions reply_topic_options() noexcept {
  TopicOptions o;
  o.slot_count = 64;
  o.slot_size = 16384;
  o.policy = Policy::Reject;
  o.max_producers = 64;
  o.max_groups = 4;
  o.max_members = 1;
  return o;
}

// ---- files ---------------------------------------------------------------------

// mkdir -p: creates `dir` and its missing parents with `mode`. A component that
// exists must be a directory. Throws Error(SystemError) naming the path and errno.
void make_dirs(const std::string& dir, mode_t mode);

// An exclusive flock(2) of fd, waiting up to 1 s for it. A daemon that just
// died may have left a copy of its lock descriptors in a keeper it was
// forking (between the fork and the keeper's close of everything it
// inherited), so a lock can stay taken a few ms after its holder is gone; a
// daemon that really runs holds it for life, and a second start then fails
// a second later. False (errno set) when it stays held or flock fails.
[[nodiscard]] bool flock_soon(int fd) noexcept;

// ---- file topics (docs/durability.md) ------------------------------------------
// A hash of the kernel's boot id (/proc/sys/kernel/random/boot_id): changes
// with every boot. 0 when it cannot be read.
[[nodiscard]] std::uint64_t boot_id_hash() noexcept;
// A bus's default data directory: $XDG_STATE_HOME/shmbus/<bus>, else
// ~/.local/state/shmbus/<bus> (HOME, else the passwd entry).
[[nodiscard]] std::string default_data_dir(const std::string& bus);
// Creates `dir` (mkdir -p, 0700) if missing and opens it: it must be a real
// directory (not a symlink, checked on the opened directory) owned by this
// user that nobody else may enter (no group or other bits), so nobody else
// can plant or swap a topic's files. The descriptor (O_CLOEXEC), or -1 with
// `why` saying what is wrong and what to do.
[[nodiscard]] int open_data_dir(const std::string& dir, std::string& why);

// ---- the control socket ---------------------------------------------------------

// Whether a bus's socket directory (which also holds the daemon's log and
// lock) can be trusted, as OpenSSH's agent and tmux decide: a real directory
// (not a symlink: checked on the opened directory), owned by this user or by
// root, that nobody else may write to (no group or other write bit) — or, as
// /tmp, owned by root and sticky, where nobody can replace what we create
// (the daemon's credentials are then what tells a squatter apart, see
// peer_uid). "" when trusted; otherwise what is wrong and what to do.
[[nodiscard]] std::string untrusted_dir(const std::string& dir);
// Opens `path` (created with `mode` if missing; O_CLOEXEC added) as a file
// that must be a regular file of this user, never through a symbolic link
// (O_NOFOLLOW): /dev/shm and shared directories let others plant one. The
// descriptor, or -1 with `why` set to what is wrong and what to do, and errno
// ELOOP (a link), EPERM (another user's, or not a regular file) or the open's.
[[nodiscard]] int open_own_file(const std::string& path, int flags, mode_t mode, std::string& why);
// The directory part of a socket path ("." when it has none).
[[nodiscard]] std::string dir_of(const std::string& path);
// The uid of the process at the other end of a connected Unix socket
// (SO_PEERCRED), or -1 with errno set.
[[nodiscard]] long peer_uid(int sock) noexcept;

// Where a bus's daemon listens: SHMBUS_SOCKET, else $XDG_RUNTIME_DIR/shmbus/<bus>.sock,
// else /tmp/shmbus-<uid>/<bus>.sock.
[[nodiscard]] std::string default_socket_path(const std::string& bus);

// A connected SOCK_STREAM|SOCK_CLOEXEC Unix socket to `path`, or -1 with errno
// set (ENAMETOOLONG for a path longer than sun_path holds).
// `type_flags` are added to the socket's type (SOCK_NONBLOCK: a listener
// that accepts nothing and has a full backlog is EAGAIN, not a wait).
[[nodiscard]] int connect_unix(const std::string& path, int type_flags = 0) noexcept;

// True when something accepts connections on the socket at `path`.
[[nodiscard]] bool socket_answers(const std::string& path) noexcept;

// The descriptors that travel with one frame (a topic's two segments), owned:
// closed when dropped. More than kMaxFds are closed on arrival.
class Descriptors {
 public:
  static constexpr std::size_t kMaxFds = 2;
  Descriptors() = default;
  Descriptors(const Descriptors&) = delete;
  Descriptors& operator=(const Descriptors&) = delete;
  Descriptors(Descriptors&& o) noexcept : fds_(o.fds_), n_(o.n_) { o.n_ = 0; }
  Descriptors& operator=(Descriptors&& o) noexcept;
  ~Descriptors() { reset(); }
  // Takes `fd` (closes it when there is no room, or when it is < 0: ignored).
  void add(int fd) noexcept;
  void reset() noexcept;
  // Gives up descriptor i (the caller owns it now); -1 if there is none. The
  // slot stays counted by size(), holding -1 (which reset() skips).
  [[nodiscard]] int release(std::size_t i) noexcept;
  [[nodiscard]] std::size_t size() const noexcept { return n_; }
  [[nodiscard]] int operator[](std::size_t i) const noexcept { return i < n_ ? fds_[i] : -1; }
  [[nodiscard]] std::span<const int> view() const noexcept { return {fds_.data(), n_}; }

 private:
  std::array<int, kMaxFds> fds_{-1, -1};
  std::size_t n_ = 0;
};

// Sends all of `frame`, with `fds` attached to its first byte. False on error
// (errno set). With may_wait false a full socket buffer is an error (a peer
// that does not read); otherwise it waits up to 1 s for room.
[[nodiscard]] bool send_frame(int sock, std::span<const std::byte> frame,
                              std::span<const int> fds = {}, bool may_wait = true) noexcept;

struct Received {
  std::vector<std::byte> body;
  Descriptors fds;      // the descriptors that came with the frame
  std::string error;    // non-empty on failure
  bool closed = false;  // the peer closed the connection
};
// Reads one whole frame (length prefix + body) within `timeout`.
[[nodiscard]] Received recv_frame(int sock, std::chrono::milliseconds timeout);

}  // namespace shmbus::detail
