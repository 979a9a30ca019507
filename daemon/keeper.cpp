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
#include "shmbus/error.hpp"

namespace shmbus::daemon {

namespace {

constexpr int kMaxFds = 2;
// How often an idle keeper checks that its socket file is still its own.
constexpr int kPathCheckMs = 1000;
// How long either side waits for the other's next record during a hand-over.
constexpr int kHandoverMs = 5000;
// How long a record, once begun, may take to arrive whole.
constexpr int kFrameMs = 1000;
constexpr int kBacklog = 64;

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
  detail::Received r = detail::recv_frame(sock, std::chrono::milliseconds(kFrameMs));
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

// Connects to the keeper at `path`, non-blocking: a keeper that accepts
// nothing (stopped, with a full backlog) is EAGAIN, never a wait. -1 and
// errno when none answers (ENOENT, ECONNREFUSED: none listens there).
int connect_keeper(const std::string& path) {
  return detail::connect_unix(path, SOCK_NONBLOCK);
}

// Why a daemon does not start: a keeper answers at `path` (so it holds the
// bus's topics) but will not hand them over.
[[noreturn]] void refuse_start(const std::string& path, const std::string& why) {
  throw Error(ErrorCode::SystemError,
              "the keeper at " + path + " holds this bus's topics but " + why +
                  "; is it stopped (kill -CONT it)? Killing it loses every topic no process "
                  "maps; then start shmbusd again");
}

// ---- the keeper process ---------------------------------------------------

struct Held {
  std::uint64_t ino;
  int data, control;
};

using Clock = std::chrono::steady_clock;

// A peer that has not said yet what it wants (Take or Dismiss).
struct Pending {
  int fd;
  Clock::time_point deadline;
};
// Peers that may wait to be heard at once: each is of our uid, so this
// bounds only what a confused process of ours can tie up.
constexpr std::size_t kMaxPending = 16;

class Keeper {
 public:
  Keeper(std::string path, std::uint64_t path_ino, int listen_fd, int channel)
      : path_(std::move(path)), path_ino_(path_ino), listen_(listen_fd), channel_(channel) {}
  ~Keeper() {
    for (const Held& h : held_) {
      ::close(h.data);
      ::close(h.control);
    }
    for (const Pending& p : pending_)
      ::close(p.fd);
    if (channel_ >= 0) ::close(channel_);
    // The socket file goes with us, unless another keeper's replaced it.
    if (still_mine()) ::unlink(path_.c_str());
    ::close(listen_);
  }

  int run() {
    for (;;) {
      if (!still_mine()) return 0;  // nobody can reach us again
      // Nothing to keep, nobody to keep it for.
      if (channel_ < 0 && held_.empty() && pending_.empty()) return 0;
      std::vector<pollfd> p = {{listen_, POLLIN, 0}, {channel_, POLLIN, 0}};  // -1: ignored
      int timeout_ms = kPathCheckMs;
      const auto now = Clock::now();
      for (const Pending& q : pending_) {
        p.push_back({q.fd, POLLIN, 0});
        const auto left =
            std::chrono::duration_cast<std::chrono::milliseconds>(q.deadline - now).count();
        timeout_ms = std::clamp(static_cast<int>(left) + 1, 0, timeout_ms);
      }
      const int n = ::poll(p.data(), p.size(), timeout_ms);
      if (n < 0 && errno != EINTR) return 1;
      if (channel_ >= 0 && p[1].revents != 0 && !serve_daemon()) {
        ::close(channel_);
        channel_ = -1;
      }
      if (dismissed_) return 0;
      hear_pending(std::span<const pollfd>(p).subspan(2));
      if (dismissed_) return 0;
      if ((p[0].revents & POLLIN) != 0) accept_one();
    }
  }

 private:
  bool still_mine() const {
    struct stat st {};
    return ::lstat(path_.c_str(), &st) == 0 && S_ISSOCK(st.st_mode) && st.st_ino == path_ino_;
  }

  // Handles the daemon's records; false once it is gone (or sent garbage).
  bool serve_daemon() {
    for (;;) {
      KeeperRecord rec{};
      detail::Descriptors fds;
      const int got = recv_record(channel_, rec, fds, 0);
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

  // A new peer waits to be heard alongside the others (one that says
  // nothing cannot hold up a daemon's hand-over), until its deadline.
  void accept_one() {
    const int s = ::accept4(listen_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (s < 0) return;
    if (!peer_is_me(s) || pending_.size() >= kMaxPending) {
      ::close(s);
      return;
    }
    pending_.push_back(Pending{s, Clock::now() + std::chrono::milliseconds(kHandoverMs)});
  }

  // The pending peers that spoke (revents, in pending_'s order) or ran out of time.
  void hear_pending(std::span<const pollfd> events) {
    std::vector<Pending> still;
    const auto now = Clock::now();
    for (std::size_t i = 0; i < pending_.size(); ++i) {
      const Pending q = pending_[i];
      if (i < events.size() && events[i].revents != 0) {
        hear(q.fd);
      } else if (now >= q.deadline) {
        ::close(q.fd);
      } else {
        still.push_back(q);
      }
    }
    pending_ = std::move(still);
  }

  // A peer's first record: a daemon taking over (Take), or a Dismiss.
  void hear(int s) {
    KeeperRecord rec{};
    detail::Descriptors fds;
    if (recv_record(s, rec, fds, 0) != 1 || rec.op != KeeperOp::Take) {
      if (rec.op == KeeperOp::Dismiss) dismissed_ = true;
      ::close(s);
      return;
    }
    // Only one daemon serves a bus (its bus lock): the new one replaces the
    // old, which is dead or dying. Whatever the old one sent first counts.
    if (channel_ >= 0) {
      (void)serve_daemon();
      ::close(channel_);
    }
    channel_ = s;
    // Non-blocking, with at most 1 s for room each (send_frame): a daemon
    // that does not read is dropped, not waited for.
    bool sent = true;
    for (const Held& h : held_)
      if (!(sent = send_record(channel_, KeeperOp::Entry, h.ino, h.data, h.control))) break;
    if (!sent || !send_record(channel_, KeeperOp::End, 0)) {
      ::close(channel_);
      channel_ = -1;
    }
  }

  std::string path_;
  std::uint64_t path_ino_;
  int listen_;
  int channel_;
  std::vector<Held> held_;
  std::vector<Pending> pending_;
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

int run_keeper(const std::string& path, std::uint64_t path_ino, int listen_fd, int channel) {
  ::signal(SIGPIPE, SIG_IGN);
  // Two descriptors per topic: as many as the hard limit allows.
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    (void)::setrlimit(RLIMIT_NOFILE, &lim);
  }
  // Listening already (the daemon did): again, so that SO_PEERCRED of the
  // connections from now on names this process.
  if (::listen(listen_fd, kBacklog) != 0) return 1;
  Keeper k(path, path_ino, listen_fd, channel);
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
  if (s < 0 && errno == EAGAIN) refuse_start(path_, "accepts no connection");
  if (s < 0) {
    // None listens: the path is free, or a dead keeper's stale socket.
    spawn();
    return regions;
  }
  // A keeper answered, so it holds this bus's topics: replacing it would
  // lose every one nobody else maps. Whatever goes wrong from here is an
  // error that stops the start, never a new keeper.
  const auto refuse = [&](const std::string& why) {
    for (const auto& [data, control] : regions) {
      ::close(data);
      ::close(control);
    }
    ::close(s);
    refuse_start(path_, why);
  };
  if (!peer_is_me(s)) refuse("is another user's");
  if (!send_record(s, KeeperOp::Take, 0))
    refuse("does not take a request (" + detail::errno_text(errno) + ")");
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
    refuse("stopped answering within " + std::to_string(kHandoverMs) + " ms after " +
           std::to_string(regions.size()) + " topics");
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
  // Non-blocking both ways: neither end ever waits for the other without a
  // bound (send_frame gives a full socket 1 s, or none with may_wait false).
  if (listen_fd < 0 ||
      ::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, pair) != 0) {
    spdlog::warn("cannot make the keeper's sockets: {}; running without a keeper",
                 detail::errno_text(errno));
    if (listen_fd >= 0) ::close(listen_fd);
    return;
  }
  // The path fits: Daemon::start refuses a socket path whose keeper path
  // would not.
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path_.c_str());
  // Only this uid may connect (a mode set by bind, under a umask set for it:
  // the daemon is single-threaded here).
  const mode_t old_mask = ::umask(0177);
  // Listening from here on, so a daemon that comes after a crash of this
  // one always finds it (the keeper listens again once started, so that
  // SO_PEERCRED names it rather than this daemon).
  const bool bound = ::bind(listen_fd, reinterpret_cast<const sockaddr*>(&a), sizeof a) == 0 &&
                     ::listen(listen_fd, kBacklog) == 0;
  const int err = errno;
  ::umask(old_mask);
  // The socket file's inode, which the keeper checks is still at the path.
  struct stat st {};
  if (bound && ::lstat(path_.c_str(), &st) != 0) st.st_ino = 0;
  const std::string ino = std::to_string(st.st_ino);
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
    (void)::chdir("/");  // holds no directory of the daemon's
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
    if (::close_range(5, ~0U, 0) != 0)
      for (int fd = 5; fd < 65536; ++fd)
        (void)::close(fd);  // a kernel before 5.9
    ::execl(program_.c_str(), program_.c_str(), "--keeper", path_.c_str(), ino.c_str(),
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

void KeeperLink::put(int data_fd, int control_fd, bool may_wait) {
  if (channel_ >= 0 &&
      !send_record(channel_, KeeperOp::Put, inode_of(data_fd), data_fd, control_fd, may_wait)) {
    spdlog::warn("the keeper does not take a topic ({}); replacing it", detail::errno_text(errno));
    close_channel();  // restart() follows from the daemon's loop (fd() is gone)
  }
}

void KeeperLink::drop(int data_fd) {
  drop_inode(inode_of(data_fd));
}

void KeeperLink::drop_inode(std::uint64_t ino) {
  if (channel_ >= 0 && !send_record(channel_, KeeperOp::Drop, ino, -1, -1, /*may_wait=*/false)) {
    spdlog::warn("the keeper does not take a deletion ({}); replacing it",
                 detail::errno_text(errno));
    close_channel();
  }
}

void KeeperLink::restart(const std::vector<std::pair<int, int>>& all) {
  if (program_.empty()) return;
  close_channel();
  spawn();
  // A keeper just started reads once it has been exec'd: each deposit may
  // wait up to 1 s for room (send_frame), so a burst of many topics goes
  // in, and a keeper that reads nothing is given up within a second.
  for (const auto& [data, control] : all)
    put(data, control, /*may_wait=*/true);
  if (channel_ >= 0) spdlog::info("the new keeper holds {} topics", all.size());
}

}  // namespace shmbus::daemon
