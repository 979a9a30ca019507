// The keeper process and the daemon's link to it (keeper.hpp).
#include "keeper.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <span>

#include "os.hpp"

namespace shmbus::daemon {

namespace {

constexpr int kMaxFds = 2;
// How often an idle keeper checks that its socket file is still its own.
constexpr int kPathCheckMs = 1000;
// How long either side waits for the other's next record during a hand-over.
constexpr int kHandoverMs = 5000;

// Whether sock has something to read within timeout_ms (0: now).
bool readable(int sock, int timeout_ms) {
  pollfd p{sock, POLLIN, 0};
  int ready = 0;
  while ((ready = ::poll(&p, 1, timeout_ms)) < 0 && errno == EINTR) {
  }
  return ready > 0;
}

// Sends one record, as a frame of the control protocol's framing (os.hpp),
// with up to two descriptors (copies). With may_wait false a full socket is
// an error: a peer that does not read is a broken peer.
bool send_record(int sock, KeeperOp op, std::uint64_t ino, int fd_a = -1, int fd_b = -1,
                 bool may_wait = true) {
  KeeperRecord rec{};
  rec.op = op;
  rec.ino = ino;
  const std::uint32_t len = sizeof rec;
  std::array<std::byte, 4 + sizeof rec> frame{};
  std::memcpy(frame.data(), &len, 4);
  std::memcpy(frame.data() + 4, &rec, sizeof rec);
  const int fds[kMaxFds] = {fd_a, fd_b};
  const std::size_t n = fd_a < 0 ? 0 : fd_b < 0 ? 1 : 2;
  return detail::send_frame(sock, frame, std::span<const int>(fds, n), may_wait);
}

// Receives one record and the descriptors that came with it (owned by the
// caller). 1: a record; 0: the peer is gone (or stopped mid-record); -1:
// nothing within timeout_ms (0: do not wait), or a malformed record (its
// descriptors closed).
int recv_record(int sock, KeeperRecord& rec, detail::Descriptors& fds, int timeout_ms) {
  if (!readable(sock, timeout_ms)) return -1;
  detail::Received r = detail::recv_frame(sock, std::chrono::milliseconds(kHandoverMs));
  if (!r.error.empty()) return 0;
  if (r.body.size() != sizeof rec) return -1;  // r.fds closed with r
  std::memcpy(&rec, r.body.data(), sizeof rec);
  fds = std::move(r.fds);
  return 1;
}

bool peer_is_me(int sock) {
  ucred cred{};
  socklen_t len = sizeof cred;
  return ::getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 && cred.uid == ::geteuid();
}

std::uint64_t inode_of(int fd) {
  struct stat st {};
  return ::fstat(fd, &st) == 0 ? static_cast<std::uint64_t>(st.st_ino) : 0;
}

sockaddr_un address_of(const std::string& path) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path.c_str());
  return a;
}

// Connects to the keeper at `path`; -1 when none listens there.
int connect_keeper(const std::string& path) {
  const int s = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0) return -1;
  const sockaddr_un a = address_of(path);
  if (::connect(s, reinterpret_cast<const sockaddr*>(&a), sizeof a) != 0) {
    ::close(s);
    return -1;
  }
  return s;
}

// ---- the keeper process ---------------------------------------------------

struct Held {
  std::uint64_t ino;
  int data, control;
};

class Keeper {
 public:
  Keeper(std::string path, int listen_fd, int channel)
      : path_(std::move(path)), listen_(listen_fd), channel_(channel) {
    struct stat st {};
    if (::lstat(path_.c_str(), &st) == 0) path_ino_ = st.st_ino;
  }
  ~Keeper() {
    for (const Held& h : held_) {
      ::close(h.data);
      ::close(h.control);
    }
    if (channel_ >= 0) ::close(channel_);
    // The socket file goes with us, unless another keeper's replaced it.
    if (still_mine()) ::unlink(path_.c_str());
    ::close(listen_);
  }

  int run() {
    for (;;) {
      if (!still_mine()) return 0;                  // nobody can reach us again
      if (channel_ < 0 && held_.empty()) return 0;  // nothing to keep, nobody to keep it for
      pollfd p[2] = {{listen_, POLLIN, 0}, {channel_, POLLIN, 0}};
      const int n = ::poll(p, channel_ >= 0 ? 2 : 1, kPathCheckMs);
      if (n < 0 && errno != EINTR) return 1;
      if (n <= 0) continue;
      if (channel_ >= 0 && p[1].revents != 0 && !serve_daemon(0)) {
        ::close(channel_);
        channel_ = -1;
      }
      if (dismissed_) return 0;
      if ((p[0].revents & POLLIN) != 0) accept_one();
      if (dismissed_) return 0;
    }
  }

 private:
  bool still_mine() const {
    struct stat st {};
    return ::lstat(path_.c_str(), &st) == 0 && S_ISSOCK(st.st_mode) && st.st_ino == path_ino_;
  }

  // Handles the daemon's records; false once it is gone (or sent garbage).
  bool serve_daemon(int timeout_ms) {
    for (;;) {
      KeeperRecord rec{};
      detail::Descriptors fds;
      const int got = recv_record(channel_, rec, fds, timeout_ms);
      if (got < 0) return true;  // nothing more for now
      if (got == 0) return false;
      switch (rec.op) {
        case KeeperOp::Put:
          if (fds.size() == 2) put(fds);
          break;
        case KeeperOp::Drop:
          drop(rec.ino);
          break;
        case KeeperOp::Dismiss:
          dismissed_ = true;
          return true;
        default:
          break;  // ignored: not for the keeper
      }
      timeout_ms = 0;
    }
  }

  void put(detail::Descriptors& fds) {
    const std::uint64_t ino = inode_of(fds[0]);
    if (ino == 0) return;
    if (std::any_of(held_.begin(), held_.end(), [&](const Held& h) { return h.ino == ino; }))
      return;  // a copy of one held already (a deposit-all after a hand-over)
    held_.push_back(Held{ino, fds.release(0), fds.release(1)});
  }

  void drop(std::uint64_t ino) {
    for (auto it = held_.begin(); it != held_.end(); ++it)
      if (it->ino == ino) {
        ::close(it->data);
        ::close(it->control);
        held_.erase(it);
        return;
      }
  }

  // A new peer: a daemon taking over (Take), or a Dismiss.
  void accept_one() {
    const int s = ::accept4(listen_, nullptr, nullptr, SOCK_CLOEXEC);
    if (s < 0) return;
    KeeperRecord rec{};
    detail::Descriptors fds;
    if (!peer_is_me(s) || recv_record(s, rec, fds, kHandoverMs) != 1) {
      ::close(s);
      return;
    }
    if (rec.op == KeeperOp::Dismiss) {
      dismissed_ = true;
      ::close(s);
      return;
    }
    if (rec.op != KeeperOp::Take) {
      ::close(s);
      return;
    }
    // Only one daemon serves a bus (its bus lock): the new one replaces the
    // old, which is dead or dying. Whatever the old one sent first counts.
    if (channel_ >= 0) {
      (void)serve_daemon(0);
      ::close(channel_);
    }
    channel_ = s;
    for (const Held& h : held_)
      if (!send_record(channel_, KeeperOp::Entry, h.ino, h.data, h.control)) break;
    (void)send_record(channel_, KeeperOp::End, 0);
  }

  std::string path_;
  std::uint64_t path_ino_ = 0;
  int listen_;
  int channel_;
  std::vector<Held> held_;
  bool dismissed_ = false;
};

// Moves fd to `target` without the close-on-exec flag, for the exec'd keeper.
void place(int fd, int target) {
  if (fd == target)
    (void)::fcntl(fd, F_SETFD, 0);
  else
    (void)::dup2(fd, target);  // dup2 leaves FD_CLOEXEC clear on target
}

}  // namespace

int run_keeper(const std::string& path, int listen_fd, int channel) {
  ::signal(SIGPIPE, SIG_IGN);
  // Two descriptors per topic: as many as the hard limit allows.
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    (void)::setrlimit(RLIMIT_NOFILE, &lim);
  }
  if (::listen(listen_fd, 8) != 0) return 1;
  Keeper k(path, listen_fd, channel);
  return k.run();
}

bool dismiss_keeper(const std::string& path) {
  const int s = connect_keeper(path);
  if (s < 0) return false;
  const bool sent = send_record(s, KeeperOp::Dismiss, 0);
  ::close(s);
  return sent;
}

KeeperLink::~KeeperLink() {
  // The keeper stays: it holds the topics for the next daemon.
  close_channel();
}

void KeeperLink::close_channel() noexcept {
  if (channel_ >= 0) ::close(channel_);
  channel_ = -1;
  reap();
}

void KeeperLink::reap() noexcept {
  // A keeper still running is left to run (it holds the topics).
  std::erase_if(children_, [](pid_t pid) { return ::waitpid(pid, nullptr, WNOHANG) != 0; });
}

std::vector<std::pair<int, int>> KeeperLink::start() {
  std::vector<std::pair<int, int>> regions;
  if (program_.empty()) return regions;
  const int s = connect_keeper(path_);
  if (s < 0) {
    spawn();
    return regions;
  }
  if (!peer_is_me(s) || !send_record(s, KeeperOp::Take, 0)) {
    spdlog::warn("the keeper at {} is not this user's, or does not answer; starting another",
                 path_);
    ::close(s);
    spawn();
    return regions;
  }
  for (;;) {
    KeeperRecord rec{};
    detail::Descriptors fds;
    const int got = recv_record(s, rec, fds, kHandoverMs);
    if (got == 1 && rec.op == KeeperOp::End) break;
    if (got == 1 && rec.op == KeeperOp::Entry && fds.size() == 2) {
      regions.emplace_back(fds.release(0), fds.release(1));
      continue;
    }
    if (got == 1) continue;  // a record with the wrong descriptors: skipped
    spdlog::warn("the keeper at {} stopped answering after {} topics; starting another", path_,
                 regions.size());
    ::close(s);
    spawn();
    return regions;  // deposited again by the caller, once adopted
  }
  channel_ = s;
  spdlog::info("took {} topics back from the keeper at {}", regions.size(), path_);
  return regions;
}

void KeeperLink::spawn() {
  // A stale socket of a keeper that died.
  if (::unlink(path_.c_str()) != 0 && errno != ENOENT) {
    spdlog::warn("cannot remove the stale keeper socket {}: {}; running without a keeper", path_,
                 detail::errno_text(errno));
    return;
  }
  const int listen_fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int pair[2] = {-1, -1};
  if (listen_fd < 0 || ::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) {
    spdlog::warn("cannot make the keeper's sockets: {}; running without a keeper",
                 detail::errno_text(errno));
    if (listen_fd >= 0) ::close(listen_fd);
    return;
  }
  const sockaddr_un a = address_of(path_);
  // Only this uid may connect (a mode set by bind, under a umask set for it:
  // the daemon is single-threaded here).
  const mode_t old_mask = ::umask(0177);
  // Bound here, listened on by the keeper: SO_PEERCRED of a connection
  // names whoever called listen(), and that should be the keeper.
  const bool bound = ::bind(listen_fd, reinterpret_cast<const sockaddr*>(&a), sizeof a) == 0;
  const int err = errno;
  ::umask(old_mask);
  if (!bound) {
    spdlog::warn("cannot listen on {}: {}; running without a keeper", path_,
                 detail::errno_text(err));
    ::close(listen_fd);
    ::close(pair[0]);
    ::close(pair[1]);
    return;
  }
  const pid_t pid = ::fork();
  if (pid == 0) {
    // The child: its own session (a Ctrl-C meant for the daemon's terminal
    // does not reach it), the two sockets as descriptors 3 and 4, and
    // nothing of the daemon's stdio (a test harness waiting for a pipe to
    // close must not wait for the keeper).
    (void)::setsid();
    const int channel = ::fcntl(pair[1], F_DUPFD_CLOEXEC, 10);
    const int listener = ::fcntl(listen_fd, F_DUPFD_CLOEXEC, 10);
    if (channel < 0 || listener < 0) ::_exit(126);
    place(channel, 3);
    place(listener, 4);
    const int null = ::open("/dev/null", O_RDWR);
    if (null >= 0)
      for (int i = 0; i < 3; ++i)
        (void)::dup2(null, i);
    // Nothing else the daemon inherited without FD_CLOEXEC (a harness's
    // pipe, say) stays open for the keeper's life.
    (void)::close_range(5, ~0U, 0);
    ::execl(program_.c_str(), program_.c_str(), "--keeper", path_.c_str(),
            static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(listen_fd);
  ::close(pair[1]);
  if (pid < 0) {
    spdlog::warn("cannot start the keeper: fork: {}; running without a keeper",
                 detail::errno_text(errno));
    ::close(pair[0]);
    ::unlink(path_.c_str());
    return;
  }
  channel_ = pair[0];
  children_.push_back(pid);
  spdlog::info("started the keeper (pid {}) on {}", pid, path_);
}

void KeeperLink::put(int data_fd, int control_fd) {
  if (channel_ >= 0 && !send_record(channel_, KeeperOp::Put, inode_of(data_fd), data_fd, control_fd,
                                    /*may_wait=*/false)) {
    spdlog::warn("the keeper does not take a topic ({}); replacing it", detail::errno_text(errno));
    close_channel();  // restart() follows from the daemon's loop (fd() is gone)
  }
}

void KeeperLink::drop(int data_fd) {
  if (channel_ >= 0 &&
      !send_record(channel_, KeeperOp::Drop, inode_of(data_fd), -1, -1, /*may_wait=*/false)) {
    spdlog::warn("the keeper does not take a deletion ({}); replacing it",
                 detail::errno_text(errno));
    close_channel();
  }
}

void KeeperLink::restart(const std::vector<std::pair<int, int>>& all) {
  if (program_.empty()) return;
  close_channel();
  spawn();
  for (const auto& [data, control] : all)
    put(data, control);
  if (channel_ >= 0) spdlog::info("the new keeper holds {} topics", all.size());
}

}  // namespace shmbus::daemon
